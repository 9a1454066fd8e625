"""``servesim validate-scenario``: every check ``run`` makes, without simulating."""

from __future__ import annotations

import argparse
from typing import Any

from sim.commands.args import add_scenario_arguments, scenario_overrides


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    check = subparsers.add_parser("validate-scenario", help="check a scenario file without running it")
    add_scenario_arguments(check, seed=False, replications=False)
    check.set_defaults(handler=run)
    return check


def run(args) -> int:
    from sim import catalog
    from sim.config import load_scenario
    from sim.diffusion.cost import diffusion_memory_budget
    from sim.fleet.pools import pool_kv_budget
    from sim.run import preflight

    scenario, base_dir = load_scenario(args.scenario, scenario_overrides(args))
    preflight(scenario, base_dir, read_traces=True)  # what run checks before (and while) drawing requests
    for pool in scenario.pools:
        if pool.is_diffusion:
            budget = diffusion_memory_budget(
                catalog.get_diffusion_model(pool.model),
                catalog.get_gpu(pool.gpu),
                pool.diffusion.gpu_memory_utilization,
                pool.diffusion.dtype,
            )
            print(
                f"pool {pool.name}: {pool.replicas} x {pool.model} on {pool.gpu}, {budget / 2**30:.1f} GiB for latents and activations per replica"
            )
            continue
        budget = pool_kv_budget(pool)
        print(
            f"pool {pool.name}: {pool.replicas} x {pool.model} on {pool.gpu} (TP {pool.tensor_parallel_size}), "
            f"{budget.num_gpu_blocks} KV blocks = {budget.capacity_tokens} tokens per replica"
        )
    print(f"{args.scenario}: ok ({len(scenario.pools)} pool(s), {len(scenario.classes)} class(es))")
    return 0

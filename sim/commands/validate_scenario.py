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
    from sim.fleet.autoscale import cold_start_s
    from sim.fleet.sharing import shared_gpu, shares

    gpu_shares = shares(scenario.pools)
    for pool in scenario.pools:
        share = gpu_shares.get(pool.name)
        extra = ""
        if share is not None:
            extra += f"; shares its GPUs with {share.partner} ({share.mode}, {share.memory:.0%} of the memory)"
        if pool.autoscaling is not None:
            a = pool.autoscaling
            extra += f"; autoscaled {a.min_replicas}-{a.max_replicas}, cold start {cold_start_s(pool):.0f} s"
        if pool.is_diffusion:
            budget = diffusion_memory_budget(
                catalog.get_diffusion_model(pool.model),
                shared_gpu(catalog.get_gpu(pool.gpu), share),
                pool.diffusion.gpu_memory_utilization,
                pool.diffusion.dtype,
            )
            print(
                f"pool {pool.name}: {pool.replicas} x {pool.model} on {pool.gpu}, {budget / 2**30:.1f} GiB for latents "
                f"and activations per replica{extra}"
            )
            continue
        budget = pool_kv_budget(pool, share)
        print(
            f"pool {pool.name}: {pool.replicas} x {pool.model} on {pool.gpu} (TP {pool.tensor_parallel_size}), "
            f"{budget.num_gpu_blocks} KV blocks = {budget.capacity_tokens} tokens per replica{extra}"
        )
    print(f"{args.scenario}: ok ({len(scenario.pools)} pool(s), {len(scenario.classes)} class(es))")
    return 0

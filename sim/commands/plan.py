"""``servesim plan``: search for the cheapest fleet that meets every SLO, print it; ``-o`` writes the files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sim.commands.args import add_scenario_arguments, positive_int, scenario_overrides
from sim.console import stdout_console
from sim.errors import ConfigError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``servesim plan`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "plan",
        help="find the cheapest fleet (GPU type, TP, replicas, knobs per pool) that meets every SLO",
        description="Search the scenario's plan block (GPU types, TP, models, knob variants, pool layouts) for the "
        "cheapest fleet meeting every class's SLO: analytic bounds prune, simulation with common random numbers and "
        "CI-decided percentiles sizes each pool.",
    )
    add_scenario_arguments(p, replications=False)
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="directory for plan.json, fleet.yaml, evaluations.jsonl (an interrupted plan resumes from it)",
    )
    p.add_argument("--workers", type=positive_int, help="parallel candidate searches (default: all usable cores)")
    p.add_argument(
        "--backend", choices=["local", "ray"], default="local", help="local processes (default) or Ray tasks"
    )
    p.add_argument("--address", help="Ray cluster address (with --backend ray)")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sim.config import load_scenario
    from sim.console import Ticker, show, term
    from sim.plan import EVALUATIONS_FILE, plan_blocks, plan_fleet, plan_json, write_plan
    from sim.run import check_output_dir

    if args.address is not None and args.backend != "ray":
        raise ConfigError("--address needs --backend ray")
    scenario, base_dir = load_scenario(args.scenario, scenario_overrides(args))
    if scenario.plan is None:
        raise ConfigError(
            f"{args.scenario}: no 'plan' block; add one to say what the plan may choose (docs/how-to/plan-a-fleet.md)"
        )
    if args.output is not None:
        check_output_dir(args.output)
    err = Console(stderr=True)
    ticker = None if err.is_terminal else Ticker("plan")
    if ticker is not None:
        ticker(f"searching for the cheapest fleet of {term(scenario.name)}")
    try:
        result = plan_fleet(
            scenario,
            base_dir,
            out_dir=args.output,
            workers=args.workers,
            backend=args.backend,
            address=args.address,
            progress=(lambda line: err.print(f"[dim]{line}[/dim]", highlight=False)) if err.is_terminal else ticker,
        )
    except KeyboardInterrupt:
        if args.output is None:
            sys.stderr.write(
                "servesim: interrupted (nothing was kept: without -o a plan does not save its evaluations)\n"
            )
        else:
            journal = args.output / EVALUATIONS_FILE
            kept = sum(1 for _ in journal.open()) if journal.is_file() else 0
            sys.stderr.write(
                f"servesim: interrupted: {kept} simulated replication(s) are saved in {journal}; "
                "run the same command again to resume\n"
            )
        return 130
    if ticker is not None:
        ticker.done(f"{result.simulated} replications simulated")
    show(plan_blocks(plan_json(result, str(args.scenario))), stdout_console())
    if args.output is not None:
        paths = write_plan(result, args.output, str(args.scenario))
        names = [p.name for p in paths] + [EVALUATIONS_FILE] * (args.output / EVALUATIONS_FILE).is_file()
        stdout_console().print(f"wrote {', '.join(names)} to {args.output}", highlight=False)
    return 0 if result.answer["feasible"] else 1

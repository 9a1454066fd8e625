"""``servesim price``: simulate, price, print the tables; ``-o`` writes the files."""

from __future__ import annotations

import argparse
import contextlib
import math
from pathlib import Path
from typing import Any

from sim.commands.args import add_scenario_arguments, scenario_overrides
from sim.console import stdout_console
from sim.errors import ConfigError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``servesim price`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "price",
        help="cost per request by class, margin at a price list, break-even utilisation",
        description="Simulate a scenario and price it: attributed and fully loaded cost per request by class, "
        "$ per 1M tokens / image / video second, revenue and margin at a price list, break-even utilisation. "
        "The accounting rules are printed under the tables.",
    )
    add_scenario_arguments(p)
    p.add_argument(
        "--prices",
        type=Path,
        metavar="FILE",
        help="price list YAML (default: an illustrative list derived from the catalog)",
    )
    p.add_argument(
        "--loads", metavar="X1,X2,...", help="also re-run with every arrival rate x each factor; report margin vs load"
    )
    p.add_argument(
        "--steps",
        metavar="S1,S2,...",
        help="also re-run with every image class at each step count; report cost and margin vs steps",
    )
    p.add_argument("-o", "--output", type=Path, help="directory for price.json and CSVs")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """``servesim price``: run, price, print tables; ``-o`` writes files."""

    from rich.console import Console

    from sim.config import load_scenario
    from sim.console import Ticker, show, term
    from sim.price import (
        check_price_list,
        load_price_list,
        price_scenario,
        price_sensitivity,
        report_blocks,
        write_price_outputs,
    )
    from sim.run import check_output_dir, run_scenario

    loads = _numbers(args.loads, "--loads")
    steps = _numbers(args.steps, "--steps", integer=True)
    prices = load_price_list(args.prices) if args.prices is not None else None
    scenario, base_dir = load_scenario(args.scenario, scenario_overrides(args))
    if prices is not None:
        check_price_list(prices, scenario)  # before simulating
    if args.output is not None:
        check_output_dir(args.output)
    err = Console(stderr=True)
    with contextlib.ExitStack() as stack:
        if err.is_terminal:
            status = stack.enter_context(err.status(f"simulating {term(scenario.name)}"))
            progress = status.update
        else:
            progress = Ticker("price")
        progress(f"simulating {term(scenario.name)}")
        report = price_scenario(run_scenario(scenario, base_dir), prices)
        if loads or steps:
            report.sensitivity, notes = price_sensitivity(scenario, base_dir, report.prices, loads, steps, progress)
            report.notes += notes
    if not err.is_terminal:
        progress.done()
    show(report_blocks(report), stdout_console())
    if args.output is not None:
        paths = write_price_outputs(report, args.output)
        stdout_console().print(f"wrote {len(paths)} files to {args.output}")
    return 0


def _numbers(text: str | None, flag: str, integer: bool = False) -> tuple:
    if not text:
        return ()
    try:
        values = tuple((int if integer else float)(x) for x in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(v > 0 and math.isfinite(v) for v in values):
        kind = "positive integers" if integer else "positive numbers"
        raise ConfigError(f"{flag}: expected comma-separated {kind}, got {text!r}")
    return values

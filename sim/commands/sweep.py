"""``servesim sweep``: run (or resume) a grid of scenario variants with a progress bar, print a table."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from sim.commands.args import add_scenario_arguments, positive_int, scenario_overrides
from sim.console import stdout_console
from sim.errors import ConfigError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``servesim sweep`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "sweep",
        help="run a grid of scenario variants in parallel; a re-run resumes",
        description="Run every point of a grid of --set overrides over a scenario. Each finished point is appended "
        "to OUTPUT/results.jsonl as it completes; running the same command again skips finished points.",
    )
    add_scenario_arguments(p, set_help="change the base scenario (applied before the grid)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY.PATH=V1,V2,...",
        help="a key and its values (repeatable; the points are the product)",
    )
    p.add_argument("--grid-file", type=Path, metavar="FILE", help="a YAML mapping KEY.PATH: [V1, V2, ...]")
    p.add_argument("-o", "--output", type=Path, required=True, help="directory for sweep.json and results.jsonl")
    p.add_argument(
        "--backend", choices=["local", "ray"], default="local", help="local processes (default) or Ray tasks"
    )
    p.add_argument("--address", help="Ray cluster address (with --backend ray; default: start Ray on this machine)")
    p.add_argument(
        "--workers",
        type=positive_int,
        help="points run at once (default: every core; with Ray, every CPU of the cluster)",
    )
    p.add_argument(
        "--extend",
        action="store_true",
        help="OUTPUT holds a sweep over another grid: run this grid there too, reusing finished points",
    )
    p.add_argument("--quiet", action="store_true", help="no progress (a bar in a terminal, else lines on stderr)")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """``servesim sweep``: run (or resume) the sweep with a progress bar, print a table."""
    from rich.console import Console

    from sim.console import Ticker, plain_number, show, yaml_text
    from sim.sweep import RESULTS_FILE, parse_grid, run_sweep, sweep_table

    if args.address is not None and args.backend != "ray":
        raise ConfigError("--address needs --backend ray")
    grid = parse_grid(args.grid, args.grid_file)
    overrides = scenario_overrides(args)
    err = Console(stderr=True)
    state = {"resumed": 0, "done": 0, "total": 0}
    t0 = time.perf_counter()

    ticker = None if args.quiet or err.is_terminal else Ticker("sweep")

    def note(done: int, total: int, record: dict | None) -> None:
        if record is None:
            state["resumed"] = done
        state["done"], state["total"] = done, total
        if ticker is not None:
            ticker(
                f"{done}/{total} points" + (" (from before)" if record is None and done else ""), force=done == total
            )

    kwargs = {
        "overrides": overrides,
        "backend": args.backend,
        "workers": args.workers,
        "address": args.address,
        "extend": args.extend,
    }
    try:
        if args.quiet or not err.is_terminal:
            df = run_sweep(args.scenario, grid, args.output, progress=note, **kwargs)
        else:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns = (
                TextColumn("sweep"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("points"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[last]}"),
            )
            # Started at the first report, after every point validated: a bad grid prints its
            # one line and nothing else.
            bar = Progress(*columns, console=err, transient=True)
            task = None

            def progress(done: int, total: int, record: dict | None) -> None:
                nonlocal task
                note(done, total, record)
                if task is None:
                    bar.start()
                    task = bar.add_task("sweep", total=total, completed=done, last="")
                else:
                    last = " ".join(f"{k}={yaml_text(v)}" for k, v in record["point"].items())
                    bar.update(task, completed=done, last=f"[dim]{last}[/dim]")

            try:
                df = run_sweep(args.scenario, grid, args.output, progress=progress, **kwargs)
            finally:
                if task is not None:
                    bar.stop()
    except KeyboardInterrupt:
        saved = f": {state['done']} of {state['total']} points are saved in {args.output / RESULTS_FILE}; run the same command again to resume"
        sys.stderr.write(f"servesim: interrupted{saved if state['total'] else ''}\n")
        return 130
    from sim.config import load_scenario

    base, _ = load_scenario(args.scenario, overrides)
    out = stdout_console()
    show([sweep_table(df, base, list(grid))], out)
    if "error" in df.columns:
        failed = df[df["error"].notna()]
        first = failed.iloc[0]
        label = " ".join(f"{k}={yaml_text(plain_number(first[k]))}" for k in grid)
        out.print(
            f"{len(failed)} point(s) failed on their input; the first, {label}: {first['error']}", highlight=False
        )
    ran = state["done"] - state["resumed"]
    out.print(
        f"{len(df)} points ({ran} run now, {state['resumed']} from before) in {time.perf_counter() - t0:.1f} s; "
        f"results in {args.output / RESULTS_FILE}",
        highlight=False,
    )
    return 0

"""``servesim run``: simulate a scenario, print its summary, write its files (``-o``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sim.commands.args import add_scenario_arguments, scenario_overrides
from sim.console import stdout_console


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("run", help="simulate a scenario and summarise it")
    add_scenario_arguments(p)
    p.add_argument("-o", "--output", type=Path, help="directory for parquet, summary.json and plots")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)
    return p


def run(args) -> int:
    from rich.console import Console

    from sim.config import load_scenario
    from sim.console import show
    from sim.run import check_output_dir, expected_arrivals, run_scenario, summary_blocks, write_outputs

    scenario, base_dir = load_scenario(args.scenario, scenario_overrides(args))
    if args.output is not None:
        check_output_dir(args.output)  # before simulating: a bad -o must not cost the run
    console = Console(stderr=True)
    total = expected_arrivals(scenario)
    if args.quiet:
        result = run_scenario(scenario, base_dir)
    else:
        progress = _RunProgress(console, total)
        try:
            result = run_scenario(scenario, base_dir, on_arrival=progress.tick)
        finally:
            progress.stop()
    show(summary_blocks(result.summary, result.scenario), stdout_console())
    if args.output is not None:
        paths = write_outputs(result, args.output, plots=not args.no_plots)
        stdout_console().print(f"wrote {len(paths)} files to {args.output}")
    return 0


class _RunProgress:
    """Progress of a run that lasts: after 2 s a bar on stderr in a terminal, else a line on
    stderr every 5 s (``Ticker``); a short run shows nothing."""

    def __init__(self, console, total: int | None):
        import time

        self.console, self.total, self.count = console, total, 0
        self.t0, self.clock = time.perf_counter(), time.perf_counter
        self.bar = self.task = self.ticker = None

    def tick(self) -> None:
        self.count += 1
        if self.count % 2000:
            return
        if self.clock() - self.t0 < 2.0 and self.bar is None and self.ticker is None:
            return
        of = f" of ~{self.total:,}" if self.total else ""
        if not self.console.is_terminal:
            if self.ticker is None:
                from sim.console import Ticker

                self.ticker = Ticker("run", start=self.t0)
            self.ticker(f"{self.count:,}{of} arrivals")
            return
        if self.bar is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("simulating"),
                BarColumn(),
                TextColumn("{task.completed:,}" + ("/{task.total:,}" if self.total else "") + " arrivals"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("run", total=self.total)
        self.bar.update(self.task, completed=min(self.count, self.total) if self.total else self.count)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.ticker is not None:
            self.ticker.done(f"{self.count:,} arrivals simulated")

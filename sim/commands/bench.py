"""``servesim bench``: simulator speed, simulated requests per wall-second."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from sim.commands.args import positive_int
from sim.console import stdout_console

BENCH_MAX_REQUESTS = 10_000_000
"""Most requests a bench case may simulate (about 10 GB of per-request state; a 1e12 run
would fail minutes in, out of memory)."""


def _bench_requests(text: str) -> int:
    value = positive_int(text)
    if value > BENCH_MAX_REQUESTS:
        raise argparse.ArgumentTypeError(
            f"at most {BENCH_MAX_REQUESTS:,} requests per case (this machine's memory), got {text!r}"
        )
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    bench = subparsers.add_parser("bench", help="simulator speed: simulated requests per wall-second")
    bench.add_argument(
        "--requests",
        type=_bench_requests,
        action="append",
        help=f"request counts (default 20000 and 200000; at most {BENCH_MAX_REQUESTS:,})",
    )
    bench.add_argument("--skip-trace", action="store_true", help="skip the Azure conv trace case")
    bench.add_argument("--repeat", type=positive_int, default=3, help="runs per case (median and range are shown)")
    bench.set_defaults(handler=run)
    return bench


def run(args: argparse.Namespace) -> int:
    """Run each case ``--repeat`` times (fresh processes); print medians and ranges."""
    import sys

    from rich.console import Console

    from sim.bench import PEER_NOTE, bench_row, bench_table, cases, run_case
    from sim.console import Ticker, show

    table = bench_table(args.repeat)
    console = stdout_console()
    err = Console(stderr=True)
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(err.status("bench")).update if err.is_terminal else Ticker("bench", every_s=0.0)
        for case, n in cases(args.requests, args.skip_trace):
            runs = []
            for i in range(args.repeat):
                progress(f"case {case} ({n:,} requests), run {i + 1} of {args.repeat}")
                try:
                    runs.append(run_case(case, n))
                except RuntimeError as exc:
                    sys.stderr.write(f"servesim: error: {exc}\n")
                    return 1
            table.add_row(*bench_row(case, runs))
    show([table], console)
    console.print(PEER_NOTE)
    return 0

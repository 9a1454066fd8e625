"""``servesim report``: one self-contained HTML page for a run, price, sweep or plan output directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``servesim report`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "report",
        help="one self-contained HTML page for a run, price, sweep or plan output directory",
        description="Write a self-contained HTML page (tables, plots embedded as PNG, no network needed) for the "
        "output directory of servesim run, price, sweep or plan. Nothing in the directory is changed but the page.",
    )
    p.add_argument(
        "results_dir", type=Path, metavar="RESULTS_DIR", help="an output directory of run, price, sweep or plan (-o)"
    )
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="page path (default: RESULTS_DIR/report.html)")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """``servesim report``: write the page, print its path."""
    from sim.report.html import write_report

    print(write_report(args.results_dir, args.output))
    return 0

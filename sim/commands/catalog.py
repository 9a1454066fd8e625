"""``servesim catalog``: the LLMs, diffusion pipelines, GPUs, links and weight stores servesim
knows."""

from __future__ import annotations

import argparse
from typing import Any

from sim.console import stdout_console


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    cat = subparsers.add_parser(
        "catalog", help="list the LLMs, diffusion pipelines, GPUs, links and storage servesim knows"
    )
    cat.add_argument(
        "what",
        nargs="?",
        choices=["models", "diffusion", "gpus", "links", "storage"],
        default=None,
        help="one table (default: all five)",
    )
    cat.set_defaults(handler=run)
    return cat


def run(args) -> int:
    from sim import catalog
    from sim.catalog.tables import catalog_tables
    from sim.console import to_rich

    console = stdout_console()
    for table in catalog_tables(
        args.what, catalog.models(), catalog.diffusion_models(), catalog.gpus(), catalog.links(), catalog.storage()
    ):
        console.print(to_rich(table))
    return 0

"""``servesim profile show``: a calibration profile's fits, and its measured vs fitted vs roofline plot."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sim.commands.args import Parser
from sim.console import stdout_console


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    prof = subparsers.add_parser("profile", help="inspect a calibration profile")
    prof_sub = prof.add_subparsers(dest="profile_command", required=True, parser_class=Parser)
    show = prof_sub.add_parser("show", help="print the fit table and plot measured vs fitted vs roofline")
    show.add_argument("file", type=Path, help="profile YAML file")
    show.add_argument("-o", "--output", type=Path, help="plot path (default: next to the profile, <stem>.png)")
    show.set_defaults(handler=run)
    return prof


def run(args) -> int:

    from sim.costs.profile import load_profile
    from sim.errors import ConfigError

    load_profile(args.file)  # validates: a bad file is a one-line error, as for a scenario
    try:
        from calibration.report import load, plot
    except ImportError as exc:
        raise ConfigError(f"profile show needs {exc.name}") from None
    print_profile(args.file, stdout_console())
    profile, raw = load(args.file)
    if raw is None:
        print("no raw timings beside the profile: nothing to plot")
        return 0
    out = plot(profile, raw, args.output or args.file.with_suffix(".png"))
    print(f"wrote {out}")
    return 0


def print_profile(path: Path, console) -> None:
    from rich.table import Table

    from calibration.report import fit_table_rows, header_lines, load

    profile, _ = load(path)
    for line in header_lines(profile):
        console.print(line, highlight=False)
    rows = fit_table_rows(profile)
    table = Table(
        title="fits (relative error on held-out points; roofline efficiency = floor / measured, median)",
        title_justify="left",
    )
    for col in rows[0]:
        text = col in ("op", "form", "source")
        table.add_column(col, justify="left" if text else "right", no_wrap=text, min_width=12 if col == "op" else None)
    for r in rows:
        table.add_row(*(str(v) for v in r.values()))
    console.print(table)

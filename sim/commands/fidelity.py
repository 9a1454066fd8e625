"""``servesim fidelity``: the simulator against published real measurements."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sim.console import stdout_console


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    fid = subparsers.add_parser(
        "fidelity", help="the simulator against published real measurements (fidelity/points.yaml)"
    )
    fid.add_argument("--points", type=Path, help="points file (default: the shipped fidelity/points.yaml)")
    fid.add_argument(
        "--split", choices=["calibrate", "held_out", "all"], default="all", help="which points to run (default all)"
    )
    fid.add_argument(
        "-o", "--output", type=Path, default=Path("results/fidelity"), help="folder for fidelity.csv and summary.csv"
    )
    fid.set_defaults(handler=run)
    return fid


def run(args) -> int:
    """servesim fidelity: every published point as a scenario, the signed error of each."""
    import time

    from rich.console import Console
    from rich.table import Table

    from sim.fidelity import DEFAULT_POINTS, load_points, run_points, summarise

    points = load_points(args.points or DEFAULT_POINTS)
    if args.split != "all":
        points = [p for p in points if p["split"] == args.split]
    err = Console(stderr=True)
    t0 = time.perf_counter()

    def progress(i: int, n: int, pid: str) -> None:
        if pid and (i % 10 == 0 or err.is_terminal):
            err.print(f"[dim]{time.perf_counter() - t0:5.0f} s[/dim] {i + 1}/{n} {pid}", highlight=False)

    table = run_points(points, progress)
    summary = summarise(table)
    args.output.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.output / "fidelity.csv", index=False)
    summary.to_csv(args.output / "summary.csv", index=False)
    out = stdout_console()
    out.print("servesim against published measurements (error = (predicted - measured) / measured)", highlight=False)
    t = Table()
    for col in ("id", "split", "model", "gpu", "tp", "precision", "metric", "measured", "predicted", "error"):
        t.add_column(col, justify="right" if col in ("tp", "measured", "predicted", "error") else "left", no_wrap=True)
    for r in table[table["status"] == "ok"].itertuples():
        t.add_row(
            r.id,
            r.split,
            str(r.model),
            str(r.gpu),
            str(r.tp),
            r.precision,
            r.metric,
            f"{r.measured:.4g}",
            f"{r.predicted:.4g}",
            f"{r.error:+.1%}",
        )
    out.print(t)
    out.print("summary (|error| of the scored points)", highlight=False)
    s = Table()
    for col in ("split", "points", "n", "median |error|", "worst |error|", "median signed", "worst point"):
        s.add_column(col, no_wrap=True)
    for r in summary.itertuples():
        s.add_row(
            r.split,
            r.points,
            str(r.n),
            f"{r.median_abs_error:.1%}",
            f"{r.worst_abs_error:.1%}",
            f"{r.median_error:+.1%}",
            r.worst_id,
        )
    out.print(s)
    other = table[table["status"] != "ok"]
    for r in other.itertuples():
        out.print(f"{r.status}: {r.id}: {r.why}", highlight=False)
    out.print(
        f"{int((table['status'] == 'ok').sum())} of {len(table)} points scored; table in {args.output} ({time.perf_counter() - t0:.0f} s)"
    )
    return 1 if (table["status"] == "failed").any() else 0

"""``servesim calibrate``: time a model's kernels on this machine, fit and write a profile."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sim.commands.args import add_device_arguments, positive_int
from sim.commands.profile import print_profile
from sim.console import Ticker, stdout_console


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    cal = subparsers.add_parser("calibrate", help="time a model's kernels on this machine and write a profile")
    cal.add_argument("--model", default="llama-tiny", help="catalog model (default llama-tiny, a CPU-sized LLM)")
    add_device_arguments(cal)
    cal.add_argument("--quick", action="store_true", help="a coarse grid (minutes on a CPU)")
    cal.add_argument("--threads", type=positive_int, default=1, help="CPU threads to time with (default 1)")
    cal.add_argument(
        "-o", "--output", type=Path, default=Path("profiles"), help="profile .yaml path or folder (default profiles/)"
    )
    cal.add_argument(
        "--raw-dir",
        type=Path,
        help="where raw timings go (default: <output folder>/raw/<model>-<device>); a re-run resumes there",
    )
    cal.add_argument(
        "--from-raw",
        type=Path,
        metavar="DIR",
        help="skip measuring: fit the raw timings in DIR (e.g. brought back from a GPU machine)",
    )
    cal.set_defaults(handler=run)
    return cal


def run(args) -> int:
    """Measure (unless --from-raw) and fit. The calibration package needs torch, which the
    simulator does not: it is imported here, lazily, and its absence is a one-line error."""
    import time

    from rich.console import Console

    from sim.errors import ConfigError

    console = Console(stderr=True)
    try:
        from calibration.fit import build_profile, write_profile
        from calibration.measure import load_raw, measure
    except ImportError as exc:
        raise ConfigError(
            f"calibration needs {exc.name}: pip install -e '.[calibration]' (torch is pinned there)"
        ) from None
    t0 = time.perf_counter()
    if args.from_raw is not None:
        raw_dir = args.from_raw
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        out_dir = args.output if args.output.suffix not in (".yaml", ".yml") else args.output.parent
        raw_dir = (
            args.raw_dir
            or out_dir / "raw" / f"{args.model}-{args.device.replace(':', '')}{'-quick' if args.quick else ''}"
        )
        with Progress(
            TextColumn("{task.description:<13}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            tasks: dict[str, int] = {}

            ticker = None if console.is_terminal else Ticker("calibrate", start=t0)

            def progress(label: str, done: int, total: int) -> None:
                if label not in tasks:
                    tasks[label] = bar.add_task(label, total=total)
                bar.update(tasks[label], completed=done)
                if ticker is not None:
                    ticker(f"{label} {done}/{total}", force=done == total)

            try:
                measure(
                    args.model,
                    args.device,
                    raw_dir,
                    quick=args.quick,
                    dtype=args.dtype,
                    threads=args.threads,
                    progress=progress,
                )
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
    try:
        raw, meta = load_raw(raw_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    path = write_profile(build_profile(raw, meta, None), raw, args.output)
    console.print(f"measured and fitted in {time.perf_counter() - t0:.0f} s; raw timings in {raw_dir}")
    print_profile(path, stdout_console())
    print(f"wrote {path} and {path.with_suffix('.csv')}")
    return 0

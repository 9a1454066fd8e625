"""``servesim validate``: a real serving loop on this device against the simulator's frozen prediction."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sim.commands.args import add_device_arguments, positive_int, seed_int
from sim.console import stdout_console


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    val = subparsers.add_parser("validate", help="run a real serving loop here, simulate the same workload, compare")
    val.add_argument("--model", default="llama-tiny", help="catalog model (default llama-tiny)")
    add_device_arguments(val)
    val.add_argument("--quick", action="store_true", help="two load levels, short runs, CPU-sized lengths")
    val.add_argument("--profile", type=Path, help="profile to validate (default: calibrate one now, quick grid)")
    val.add_argument(
        "--loads", help="comma-separated fractions of measured capacity (default 0.4,0.8 quick; 0.3,0.6,0.8 otherwise)"
    )
    val.add_argument(
        "--repeats", type=positive_int, default=3, help="real runs per load: their spread is the noise floor"
    )
    val.add_argument(
        "--requests",
        type=positive_int,
        help="requests per run (LLM: default 40 quick, 200 otherwise; diffusion: 24 quick, 120 otherwise)",
    )
    val.add_argument(
        "--grid-composition",
        action="store_true",
        help="LLM: keep the calibration grid's step composition (default: refit it on the calibration bursts' real steps, before any scored run)",
    )
    val.add_argument(
        "--seed", type=seed_int, default=0, help="chooses the workload (arrival times and lengths; default 0)"
    )
    val.add_argument("-o", "--output", type=Path, default=Path("results/validation"), help="report folder")
    val.set_defaults(handler=run)
    return val


def run(args) -> int:
    """servesim validate: the real loop on this device against the simulator (calibration/validate.py)."""
    import time

    from rich.console import Console
    from rich.table import Table

    from sim.errors import ConfigError

    try:
        from calibration.measure import model_kind
        from calibration.telemetry import Telemetry
        from calibration.validate import (
            QUICK_REQUESTS,
            DiffusionSettings,
            LLMSettings,
            validate_diffusion,
            validate_llm,
        )
    except ImportError as exc:
        raise ConfigError(
            f"validate needs {exc.name}: pip install -e '.[calibration]' (torch is pinned there)"
        ) from None
    if args.profile is not None:
        from sim.costs.profile import load_profile

        load_profile(args.profile)  # a bad file is a one-line error before any real run
    try:
        loads = tuple(float(x) for x in (args.loads or ("0.4,0.8" if args.quick else "0.3,0.6,0.8")).split(","))
    except ValueError:
        raise ConfigError(f"--loads: expected comma-separated numbers in (0, 1], got {args.loads!r}") from None
    if not all(0 < x <= 1 for x in loads):
        raise ConfigError(f"--loads: fractions of capacity must be in (0, 1], got {args.loads!r}")
    console = Console(stderr=True)
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        console.print(f"[dim]{time.perf_counter() - t0:6.0f} s[/dim] {msg}", highlight=False)

    try:
        if model_kind(args.model) == "llm":
            settings = LLMSettings(
                model=args.model,
                device=args.device,
                dtype=args.dtype,
                loads=loads,
                repeats=args.repeats,
                requests=args.requests or (QUICK_REQUESTS if args.quick else 200),
                quick=args.quick,
                in_loop=not args.grid_composition,
                seed=args.seed,
            )
            with Telemetry(args.output / "telemetry.csv", args.device):
                result = validate_llm(settings, args.output, args.profile, progress=progress)
        else:
            settings = DiffusionSettings(
                model=args.model,
                device=args.device,
                dtype=args.dtype,
                loads=loads,
                repeats=args.repeats,
                requests=args.requests or (24 if args.quick else 120),
                seed=args.seed,
            )
            with Telemetry(args.output / "telemetry.csv", args.device):
                result = validate_diffusion(settings, args.output, args.profile, progress=progress)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    from calibration.validate import case_columns, run_errors

    table = Table(
        title=f"{args.model} on {args.device}: predicted by the frozen profile vs measured (calibrate -> freeze -> predict)",
        title_justify="left",
    )
    frame = result["table"]
    cases = case_columns(frame)
    for col in (*cases, "metric", "measured", "predicted", "error", "worst run", "every run", "noise floor"):
        table.add_column(col, justify="left" if col in ("metric", "every run") else "right")
    for r, each in zip(frame.itertuples(), run_errors(frame, result["per_run"])):
        case = [f"{r.load:.0%}"] + ([f"{r.max_wait_s:g} s"] if "max_wait_s" in cases else [])
        table.add_row(
            *case, r.metric, f"{r.measured:.4g}", f"{r.predicted:.4g}", f"{r.error:+.1%}", f"{r.worst:+.1%}",
            " ".join(f"{e:+.1%}" for e in each), noise_text(r.noise_floor),
        )  # fmt: skip
    out = stdout_console()
    out.print(table)
    out.print(
        "error: the median over the real runs of (predicted - measured) / measured; noise floor: the real runs' (max - min) / median"
    )
    for family, h in result["headline"].items():
        out.print(
            f"{family}: median error up to {h['max_abs_median_error']:.1%}, worst run {h['max_abs_run_error']:.1%}, noise floor {'up to ' if h['max_noise_floor'] == h['max_noise_floor'] else ''}{noise_text(h['max_noise_floor'])}"
        )
    sr = result["step_replay"]
    out.print(
        f"replay of {sr['steps']} real {sr['what']}: median |error| {sr['median_abs_rel_error']:.1%}, p90 {sr['p90_abs_rel_error']:.1%}, bias {sr['bias']:+.1%}, total time {sr.get('total_time_bias', float('nan')):+.1%}"
    )
    diag = result.get("diagnostics")
    if diag is not None:
        speeds = [r["speed"] for r in diag["run_speed"]]
        given = diag["given_run_speed"]["headline"].get("e2e_s", {})
        out.print(
            f"diagnostic (reads the scored runs, not a prediction): the runs' own steps went at {min(speeds):.2f}-{max(speeds):.2f} "
            f"of the frozen profile; re-simulated at that speed, E2E median error up to {given.get('max_abs_median_error', float('nan')):.1%}"
        )
    out.print(f"report in {args.output} ({time.perf_counter() - t0:.0f} s)")
    return 0


def noise_text(floor: float) -> str:
    """The real runs' spread as a percentage; with one run per case (``--repeats 1``) there is
    no spread to show, so 'n/a', never a noise floor of 0 %."""
    return "n/a (one run)" if floor != floor else f"{floor:.1%}"

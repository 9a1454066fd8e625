"""The ``servesim`` command.

    servesim run SCENARIO [-o DIR] [--set key.path=value ...] [--seed N] [--replications K]
    servesim validate-scenario SCENARIO [--set ...]
    servesim catalog [models|gpus]
    servesim bench [--requests N ...]
    servesim calibrate [--model NAME] [--device cpu|cuda] [--quick] [-o PATH] [--from-raw DIR]
    servesim profile show FILE [-o PNG]
    servesim sweep SCENARIO --grid KEY.PATH=V1,V2,... [--grid-file FILE] -o DIR [--backend local|ray] [--address ADDR] [--workers N] [--set ...] [--extend]
    servesim price SCENARIO [--prices FILE] [--loads X1,X2,...] [--steps S1,S2,...] [-o DIR] [--set ...] [--seed N] [--replications K]
    servesim plan SCENARIO [-o DIR] [--set ...] [--seed N] [--workers N] [--backend local|ray] [--address ADDR]
    servesim report RESULTS_DIR [-o FILE]
    servesim validate [--model NAME] [--device cpu|cuda] [--quick] [--profile FILE] [--seed N] [-o DIR]
    servesim fidelity [--points FILE] [--split calibrate|held_out|all] [-o DIR]

Bad input (scenario fields, traces, flags) prints one line naming the problem and exits with
code 2; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sim.cliargs import EXIT_USAGE, positive_int, seed_int
from sim.cliargs import Parser as _Parser
from sim.console import fmt_estimate
from sim.errors import ServesimError

BENCH_MAX_REQUESTS = 10_000_000
"""Most requests a bench case may simulate (about 10 GB of per-request state; a 1e12 run
would fail minutes in, out of memory)."""


def _bench_requests(text: str) -> int:
    value = positive_int(text)
    if value > BENCH_MAX_REQUESTS:
        raise argparse.ArgumentTypeError(f"at most {BENCH_MAX_REQUESTS:,} requests per case (this machine's memory), got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="servesim", description="Simulate generative-AI inference serving.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="simulate a scenario and summarise it")
    run.add_argument("scenario", type=Path)
    run.add_argument("-o", "--output", type=Path, help="directory for parquet, summary.json and plots")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    run.add_argument("--seed", type=seed_int)
    run.add_argument("--replications", type=positive_int)
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    check = sub.add_parser("validate-scenario", help="check a scenario file without running it")
    check.add_argument("scenario", type=Path)
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")

    cat = sub.add_parser("catalog", help="list the LLMs, diffusion pipelines and GPUs servesim knows")
    cat.add_argument("what", nargs="?", choices=["models", "diffusion", "gpus"], default=None)

    bench = sub.add_parser("bench", help="simulator speed: simulated requests per wall-second")
    bench.add_argument("--requests", type=_bench_requests, action="append", help=f"request counts (default 20000 and 200000; at most {BENCH_MAX_REQUESTS:,})")
    bench.add_argument("--skip-trace", action="store_true", help="skip the Azure conv trace case")
    bench.add_argument("--repeat", type=positive_int, default=3, help="runs per case (median and range are shown)")

    cal = sub.add_parser("calibrate", help="time a model's kernels on this machine and write a profile")
    cal.add_argument("--model", default="llama-tiny", help="catalog model (default llama-tiny, a CPU-sized LLM)")
    cal.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    cal.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: bfloat16 on cuda, float32 on cpu")
    cal.add_argument("--quick", action="store_true", help="a coarse grid (minutes on a CPU)")
    cal.add_argument("--threads", type=positive_int, default=1, help="CPU threads to time with (default 1)")
    cal.add_argument("-o", "--output", type=Path, default=Path("profiles"), help="profile .yaml path or folder (default profiles/)")
    cal.add_argument("--raw-dir", type=Path, help="where raw timings go (default: <output folder>/raw/<model>-<device>); a re-run resumes there")
    cal.add_argument("--from-raw", type=Path, metavar="DIR", help="skip measuring: fit the raw timings in DIR (e.g. brought back from a GPU machine)")

    val = sub.add_parser("validate", help="run a real serving loop here, simulate the same workload, compare")
    val.add_argument("--model", default="llama-tiny", help="catalog model (default llama-tiny)")
    val.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    val.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    val.add_argument("--quick", action="store_true", help="two load levels, short runs, CPU-sized lengths")
    val.add_argument("--profile", type=Path, help="profile to validate (default: calibrate one now, quick grid)")
    val.add_argument("--loads", help="comma-separated fractions of measured capacity (default 0.4,0.8 quick; 0.3,0.6,0.8 otherwise)")
    val.add_argument("--repeats", type=positive_int, default=3, help="real runs per load: their spread is the noise floor")
    val.add_argument("--requests", type=positive_int, help="requests per run (LLM: default 40 quick, 200 otherwise; diffusion: 24 quick, 120 otherwise)")
    val.add_argument(
        "--grid-composition",
        action="store_true",
        help="LLM: keep the calibration grid's step composition (default: refit it on the calibration bursts' real steps, before any scored run)",
    )
    val.add_argument("--seed", type=seed_int, default=0, help="chooses the workload (arrival times and lengths; default 0)")
    val.add_argument("-o", "--output", type=Path, default=Path("results/validation"), help="report folder")

    fid = sub.add_parser("fidelity", help="the simulator against published real measurements (fidelity/points.yaml)")
    fid.add_argument("--points", type=Path, help="points file (default: the shipped fidelity/points.yaml)")
    fid.add_argument("--split", choices=["calibrate", "held_out", "all"], default="all", help="which points to run (default all)")
    fid.add_argument("-o", "--output", type=Path, default=Path("results/fidelity"), help="folder for fidelity.csv and summary.csv")

    prof = sub.add_parser("profile", help="inspect a calibration profile")
    prof_sub = prof.add_subparsers(dest="profile_command", required=True, parser_class=_Parser)
    show = prof_sub.add_parser("show", help="print the fit table and plot measured vs fitted vs roofline")
    show.add_argument("file", type=Path)
    show.add_argument("-o", "--output", type=Path, help="plot path (default: next to the profile, <stem>.png)")

    from sim.plan import add_plan_parser
    from sim.price import add_price_parser
    from sim.report.html import add_report_parser
    from sim.sweep import add_sweep_parser

    add_sweep_parser(sub)
    add_price_parser(sub)
    add_plan_parser(sub)
    add_report_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "validate-scenario":
            return _cmd_validate(args)
        if args.command == "catalog":
            return _cmd_catalog(args)
        if args.command == "bench":
            from sim.bench import main as bench_main

            return bench_main(args.requests, skip_trace=args.skip_trace, repeat=args.repeat)
        if args.command == "calibrate":
            return _cmd_calibrate(args)
        if args.command == "profile":
            return _cmd_profile_show(args)
        if args.command == "validate":
            return _cmd_validate_real(args)
        if args.command == "fidelity":
            return _cmd_fidelity(args)
        if args.command == "sweep":
            from sim.sweep import cmd_sweep

            return cmd_sweep(args)
        if args.command == "price":
            from sim.price import cmd_price

            return cmd_price(args)
        if args.command == "plan":
            from sim.plan import cmd_plan

            return cmd_plan(args)
        if args.command == "report":
            from sim.report.html import cmd_report

            return cmd_report(args)
    except ServesimError as exc:
        sys.stderr.write(f"servesim: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("servesim: interrupted\n")
        return 130
    except BrokenPipeError:
        # the reader went away (`| head -1`): stop quietly, as a Unix tool does, and keep the
        # interpreter's final flush from raising again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0


def _overrides(args) -> list[str]:
    extra = list(args.overrides)
    if getattr(args, "seed", None) is not None:
        extra.append(f"seed={args.seed}")
    if getattr(args, "replications", None) is not None:
        extra.append(f"replications={args.replications}")
    return extra


def _cmd_validate(args) -> int:
    from sim import catalog
    from sim.config import load_scenario
    from sim.diffusion.cost import diffusion_memory_budget
    from sim.fleet.cluster import pool_kv_budget
    from sim.run import preflight

    scenario, base_dir = load_scenario(args.scenario, _overrides(args))
    preflight(scenario, base_dir, read_traces=True)  # what run checks before (and while) drawing requests
    for pool in scenario.pools:
        if pool.is_diffusion:
            budget = diffusion_memory_budget(catalog.get_diffusion_model(pool.model), catalog.get_gpu(pool.gpu), pool.diffusion.gpu_memory_utilization)
            print(f"pool {pool.name}: {pool.replicas} x {pool.model} on {pool.gpu}, {budget / 2**30:.1f} GiB for latents and activations per replica")
            continue
        budget = pool_kv_budget(pool)
        print(
            f"pool {pool.name}: {pool.replicas} x {pool.model} on {pool.gpu} (TP {pool.tensor_parallel_size}), "
            f"{budget.num_gpu_blocks} KV blocks = {budget.capacity_tokens} tokens per replica"
        )
    print(f"{args.scenario}: ok ({len(scenario.pools)} pool(s), {len(scenario.classes)} class(es))")
    return 0


def _cmd_run(args) -> int:
    from rich.console import Console

    from sim.config import load_scenario
    from sim.run import check_output_dir, expected_arrivals, run_scenario, write_outputs

    scenario, base_dir = load_scenario(args.scenario, _overrides(args))
    if args.output is not None:
        check_output_dir(args.output)  # before simulating: a bad -o must not cost the run
    console = Console(stderr=True)
    total = expected_arrivals(scenario)
    if args.quiet or total is None or total < 100_000:  # ~5 s and up get a bar
        result = run_scenario(scenario, base_dir)
    else:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("simulating"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} arrivals"), TimeRemainingColumn(), console=console, transient=True) as bar:
            task = bar.add_task("run", total=total)
            counter = [0]

            def tick() -> None:
                counter[0] += 1
                if counter[0] % 2000 == 0:
                    bar.update(task, completed=min(counter[0], total))

            result = run_scenario(scenario, base_dir, on_arrival=tick)
    print_summary(result, Console())
    if args.output is not None:
        paths = write_outputs(result, args.output, plots=not args.no_plots)
        Console().print(f"wrote {len(paths)} files to {args.output}")
    return 0


def _cmd_calibrate(args) -> int:
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
        raise ConfigError(f"calibration needs {exc.name}: pip install -e '.[calibration]' (torch is pinned there)") from None
    t0 = time.perf_counter()
    if args.from_raw is not None:
        raw_dir = args.from_raw
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        out_dir = args.output if args.output.suffix not in (".yaml", ".yml") else args.output.parent
        raw_dir = args.raw_dir or out_dir / "raw" / f"{args.model}-{args.device.replace(':', '')}{'-quick' if args.quick else ''}"
        with Progress(TextColumn("{task.description:<13}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
            tasks: dict[str, int] = {}

            def progress(label: str, done: int, total: int) -> None:
                if label not in tasks:
                    tasks[label] = bar.add_task(label, total=total)
                bar.update(tasks[label], completed=done)

            try:
                measure(args.model, args.device, raw_dir, quick=args.quick, dtype=args.dtype, threads=args.threads, progress=progress)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
    try:
        raw, meta = load_raw(raw_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    path = write_profile(build_profile(raw, meta, None), raw, args.output)
    console.print(f"measured and fitted in {time.perf_counter() - t0:.0f} s; raw timings in {raw_dir}")
    _print_profile(path, Console())
    print(f"wrote {path} and {path.with_suffix('.csv')}")
    return 0


def _print_profile(path: Path, console) -> None:
    from rich.table import Table

    from calibration.report import fit_table_rows, header_lines, load

    profile, _ = load(path)
    for line in header_lines(profile):
        console.print(line, highlight=False)
    rows = fit_table_rows(profile)
    table = Table(title="fits (relative error on held-out points; roofline efficiency = floor / measured, median)", title_justify="left")
    for col in rows[0]:
        text = col in ("op", "form", "source")
        table.add_column(col, justify="left" if text else "right", no_wrap=text, min_width=12 if col == "op" else None)
    for r in rows:
        table.add_row(*(str(v) for v in r.values()))
    console.print(table)


def _cmd_validate_real(args) -> int:
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
        raise ConfigError(f"validate needs {exc.name}: pip install -e '.[calibration]' (torch is pinned there)") from None
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
            " ".join(f"{e:+.1%}" for e in each), f"{r.noise_floor:.1%}",
        )  # fmt: skip
    out = Console(width=None if sys.stdout.isatty() else 200)
    out.print(table)
    out.print("error: the median over the real runs of (predicted - measured) / measured; noise floor: the real runs' (max - min) / median")
    for family, h in result["headline"].items():
        out.print(f"{family}: median error up to {h['max_abs_median_error']:.1%}, worst run {h['max_abs_run_error']:.1%}, noise floor up to {h['max_noise_floor']:.1%}")
    sr = result["step_replay"]
    out.print(f"replay of {sr['steps']} real {sr['what']}: median |error| {sr['median_abs_rel_error']:.1%}, p90 {sr['p90_abs_rel_error']:.1%}, bias {sr['bias']:+.1%}, total time {sr.get('total_time_bias', float('nan')):+.1%}")
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


def _cmd_fidelity(args) -> int:
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
    out = Console(width=None if sys.stdout.isatty() else 400)
    out.print("servesim against published measurements (error = (predicted - measured) / measured)", highlight=False)
    t = Table()
    for col in ("id", "split", "model", "gpu", "tp", "precision", "metric", "measured", "predicted", "error"):
        t.add_column(col, justify="right" if col in ("tp", "measured", "predicted", "error") else "left", no_wrap=True)
    for r in table[table["status"] == "ok"].itertuples():
        t.add_row(r.id, r.split, str(r.model), str(r.gpu), str(r.tp), r.precision, r.metric, f"{r.measured:.4g}", f"{r.predicted:.4g}", f"{r.error:+.1%}")
    out.print(t)
    out.print("summary (|error| of the scored points)", highlight=False)
    s = Table()
    for col in ("split", "points", "n", "median |error|", "worst |error|", "median signed", "worst point"):
        s.add_column(col, no_wrap=True)
    for r in summary.itertuples():
        s.add_row(r.split, r.points, str(r.n), f"{r.median_abs_error:.1%}", f"{r.worst_abs_error:.1%}", f"{r.median_error:+.1%}", r.worst_id)
    out.print(s)
    other = table[table["status"] != "ok"]
    for r in other.itertuples():
        out.print(f"{r.status}: {r.id}: {r.why}", highlight=False)
    out.print(f"{int((table['status'] == 'ok').sum())} of {len(table)} points scored; table in {args.output} ({time.perf_counter() - t0:.0f} s)")
    return 1 if (table["status"] == "failed").any() else 0


def _cmd_profile_show(args) -> int:
    from rich.console import Console

    from sim.costs.profile import load_profile
    from sim.errors import ConfigError

    load_profile(args.file)  # validates: a bad file is a one-line error, as for a scenario
    try:
        from calibration.report import load, plot
    except ImportError as exc:
        raise ConfigError(f"profile show needs {exc.name}") from None
    _print_profile(args.file, Console())
    profile, raw = load(args.file)
    if raw is None:
        print("no raw timings beside the profile: nothing to plot")
        return 0
    out = plot(profile, raw, args.output or args.file.with_suffix(".png"))
    print(f"wrote {out}")
    return 0


def _cmd_catalog(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from sim import catalog

    console = Console()
    if args.what in (None, "models"):
        t = Table(title="LLMs")
        for col in ("name", "params (B)", "layers", "hidden", "heads/kv", "KV KiB/token", "max len"):
            t.add_column(col)
        for m in catalog.models().values():
            t.add_row(m.name, f"{m.num_parameters / 1e9:.2f}", str(m.num_layers), str(m.hidden_size), f"{m.num_attention_heads}/{m.num_key_value_heads}", f"{m.kv_bytes_per_token(2) / 1024:g}", str(m.max_position_embeddings))
        console.print(t)
    if args.what in (None, "diffusion"):
        t = Table(title="Diffusion pipelines")
        for col in ("name", "kind", "denoiser", "params (B)", "default size", "steps", "CFG", "eager counts"):
            t.add_column(col)
        for d in catalog.diffusion_models().values():
            size = f"{d.default_width}x{d.default_height}" + (f"x{d.default_frames}" if d.default_frames > 1 else "")
            t.add_row(d.name, d.kind, d.architecture, f"{d.params_total / 1e9:.2f}", size, str(d.default_steps), "yes" if d.cfg else "no", "yes" if d.eager else "-")
        console.print(t)
    if args.what in (None, "gpus"):
        t = Table(title="GPUs")
        for col in ("name", "BF16 TFLOP/s", "FP8", "memory GiB", "TB/s", "link GB/s", "TDP W", "$/GPU-h", "price date"):
            t.add_column(col)
        for g in catalog.gpus().values():
            t.add_row(g.name, f"{g.bf16_tflops:g}", f"{g.fp8_tflops:g}" if g.fp8_tflops else "-", f"{g.memory_gib:g}", f"{g.hbm_tb_s:g}", f"{g.interconnect_gb_s:g}", f"{g.tdp_w:g}", f"{g.price.usd_per_gpu_hour:.2f}", g.price.date)
        console.print(t)
    return 0


def _pool_line(name: str, pool: dict) -> str:
    from sim.console import term

    head = f"  pool {term(name)}: {pool['replicas']} x {pool['model']} on {pool['gpu']} TP{pool['tensor_parallel_size']} "
    tail = f"busy {pool['busy_fraction']:.0%}, mean batch {pool['mean_batch']:.1f}, "
    if "batching" in pool:
        from sim import catalog

        unit = "videos" if catalog.get_diffusion_model(pool["model"]).kind == "video" else "images"
        return (
            head + f"({pool['batching']} batches of <= {pool['max_batch_size']} {unit}), "
            f"{pool['memory_budget_gib']:.0f} GiB for latents/replica, " + tail
            + f"mean memory use {pool['mean_memory_util']:.0%}, ${pool['price_per_gpu_hour']:.2f}/GPU-h"
        )
    return (
        head + f"({pool['scheduler']}), {pool['kv_capacity_tokens']:,} KV tokens/replica, " + tail
        + f"mean KV use {pool['mean_kv_util']:.0%}, ${pool['price_per_gpu_hour']:.2f}/GPU-h"
    )


ROWS = {
    "text": (("ttft_s", "TTFT (ms)", 1e3), ("tpot_s", "TPOT (ms)", 1e3), ("max_itl_s", "max ITL (ms)", 1e3), ("e2e_s", "E2E (s)", 1.0), ("queue_s", "queue (ms)", 1e3)),
    "image": (("e2e_s", "E2E (s)", 1.0), ("queue_s", "queue + forming (s)", 1.0), ("forming_s", "batch forming (s)", 1.0), ("preview_s", "first preview (s)", 1.0)),
    "pipeline": (("e2e_s", "E2E (s)", 1.0), ("queue_s", "first-stage queue (s)", 1.0)),
    "mixed": (("e2e_s", "E2E (s)", 1.0), ("queue_s", "queue (s)", 1.0)),
}


def _growth_text(growth: float | None) -> str:
    if growth is None or growth != growth or growth == float("inf"):
        return "requests were still queued when the run stopped"
    return f"the queue wait grows {growth:.2g} s per second, arrivals ~{growth:.0%} above what it serves"


def print_summary(result, console) -> None:
    from rich.table import Table

    from sim.console import WIDE, term, thin_percentiles, wide_note

    s = result.summary
    wide = False

    def show(*parts) -> None:
        nonlocal wide
        console.print(*parts)
        wide = wide or any(WIDE in (p if isinstance(p, str) else "".join(str(c) for col in p.columns for c in col.cells)) for p in parts)

    kinds = {c.name: c.kind for c in result.scenario.classes}
    uniform = set(kinds.values())
    kinds["all"] = uniform.pop() if len(uniform) == 1 else "mixed"
    console.print(f"[bold]{term(s['scenario'])}[/bold]: {s['replications']} replication(s), seed {s['seed']}, warm-up {s['warmup_s']:g} s")
    for name, pool in s["pools"].items():
        console.print(_pool_line(name, pool))
    from sim.catalog import assumed_efficiency_note

    for gpu in dict.fromkeys(pool["gpu"] for pool in s["pools"].values() if pool.get("efficiency_assumed")):
        console.print(f"  [yellow]note:[/yellow] {assumed_efficiency_note(gpu)}", highlight=False)
    # a diffusion class on a video model makes videos: say so in its labels
    from sim import catalog

    videos = set()
    for c in result.scenario.classes:
        pool = result.scenario.pool(c.pool) if c.pool else None
        if c.kind == "image" and pool is not None and catalog.get_diffusion_model(pool.model).kind == "video":
            videos.add(c.name)
    for cls, st in s["classes"].items():
        kind = kinds[cls]
        unit = "video" if cls in videos else "image"
        table = Table(title=f"class {term(cls)} ({'video' if cls in videos else kind})" + (f"  [red](overloaded: {_growth_text(st['queue_growth']['mean'])})[/red]" if st["overloaded"] else ""), title_justify="left")
        table.add_column("metric")
        for p in ("p50", "p90", "p99", "p99.9", "mean"):
            table.add_column(p, justify="right")
        for metric, label, scale in ROWS.get(kind, ROWS["text"]):
            if f"{metric}_p50" in st:
                table.add_row(label, *(fmt_estimate(st[f"{metric}_{p}"], scale) for p in ("p50", "p90", "p99", "p99.9", "mean")))
        show(table)
        per_rep = st["finished"]["mean"]
        thin = thin_percentiles(per_rep) if per_rep == per_rep else []
        if thin:
            console.print(
                f"  [yellow]note:[/yellow] {', '.join(thin)} rest{'s' if len(thin) == 1 else ''} on fewer than 10 requests per replication "
                f"beyond {'it' if len(thin) == 1 else 'them'} ({per_rep:,.0f} finished per replication): lengthen duration_s for the tail",
                highlight=False,
            )
        slo = s["slo_met"].get(cls)
        if kind == "image":
            rate = f"{fmt_estimate(st['images_per_s'])} {unit}s/s" + (f", {fmt_estimate(st['video_seconds_per_s'])} video-s/s" if "video_seconds_per_s" in st else "")
        elif kind == "text":
            rate = f"{fmt_estimate(st['output_tokens_per_s'])} output tok/s"
        else:
            rate = "all kinds" if kind == "mixed" else "pipelines"
        show(
            f"  throughput {fmt_estimate(st['throughput_rps'])} req/s, {rate}; "
            + (
                f"goodput {fmt_estimate(st['goodput_rps'])} req/s (SLO attainment {fmt_estimate(st['slo_attainment'], fraction=True)})"
                if slo is not None
                else f"completed {fmt_estimate(st['slo_attainment'], fraction=True)} of arrivals"
            )
            + (f", rejected {fmt_estimate(st['rejected_fraction'], 100, fraction=True)} %" if st["rejected_fraction"]["mean"] else "")
            + (f", failed {fmt_estimate(st['failed_fraction'], 100, fraction=True)} %" if st["failed_fraction"]["mean"] else "")
            + (f", retries/request {fmt_estimate(st['retries_per_request'])}" if st["retries_per_request"]["mean"] else "")
            + ("" if slo is None else f"; SLO {'met' if slo else '[red]missed[/red]'}")
        )
        if kind == "text":
            show(
                f"  cost ${fmt_estimate(st['cost_per_1m_output_tokens_usd'])} per 1M output tokens (fleet GPU-hours x price); "
                f"${fmt_estimate(st['request_cost_usd_mean'], 1e3)} per 1k requests attributed; "
                f"preemptions/request {fmt_estimate(st['preemptions_per_request'])}; prefix-cache hit {fmt_estimate(st['prefix_hit_rate'], fraction=True)}"
            )
        elif kind == "image":
            show(
                f"  cost ${fmt_estimate(st['cost_per_image_usd'], 1e3)} per 1k {unit}s (fleet GPU-hours x price)"
                + (f", ${fmt_estimate(st['cost_per_video_second_usd'])} per video second" if "cost_per_video_second_usd" in st else "")
                + f"; ${fmt_estimate(st['request_cost_usd_mean'], 1e3)} per 1k requests attributed; "
                f"denoising steps computed per {unit} {fmt_estimate(st['steps_computed_per_image'])}"
            )
        elif kind == "pipeline":
            stages = [k.removeprefix("stage_").removesuffix("_latency_share") for k in st if k.endswith("_latency_share")]
            shares = ", ".join(
                f"{term(name)} {fmt_estimate(st[f'stage_{name}_e2e_s_mean'])} s ({fmt_estimate(st[f'stage_{name}_latency_share'], 100, 2, fraction=True)} % of time, "
                f"{fmt_estimate(st[f'stage_{name}_cost_share'], 100, 2, fraction=True)} % of cost)"
                for name in stages
            )
            show(f"  ${fmt_estimate(st['request_cost_usd_mean'], 1e3)} per 1k pipelines attributed; stages: {shares}")
    c = s["conservation"]
    sim = s["simulation"]
    console.print(
        f"  requests: {c['arrived']:,} arrived = {c['finished']:,} finished + {c['rejected']:,} rejected + {c['failed']:,} failed + {c['in_flight']:,} in flight; "
        f"simulated {sim['simulated_s']:,.0f} s in {sim['wall_s']:.2f} s wall ({sim['requests'] / max(sim['wall_s'], 1e-9):,.0f} req/s)"
    )
    if wide:
        console.print(f"  [yellow]{wide_note(s['replications'])}[/yellow]", highlight=False)


if __name__ == "__main__":
    raise SystemExit(main())

"""``servesim validate``: run a real serving loop, simulate the same workload, compare.

The protocol is **calibrate -> freeze -> predict**: nothing measured during or after a scored
run enters its prediction. For an LLM (``validate_llm``; ``validate_diffusion`` does the same
for static image batches, with E2E and queue wait as its metrics):

1. **Calibrate.** The given profile, or one calibrated now on this device (quick grid, synthetic
   shapes). Then, on the real engine, a capacity burst (requests all at once: completed requests
   per second at saturation, which sets the loads) and a short staircase burst of other
   requests; the profile's whole-step composition is refitted on their steps
   (``refit_in_loop``; ``in_loop=False`` keeps the grid's).
2. **Freeze.** That profile is written (``frozen-profile.yaml``) and hashed.
3. **Predict.** For each load, Poisson arrivals at ``load x capacity`` with prompt and output
   lengths drawn from the Azure LLM 2023 conversation trace (scaled down for CPU-sized models
   when ``quick``; ``seed`` chooses them), simulated with the frozen profile, the same engine
   knobs and KV capacity; the predictions are written before any scored run starts.
4. **Scored runs.** The real engine serves each load's workload ``repeats`` times, the loads
   taking turns; the spread between repeats is the real system's own noise floor.
5. **Report.** For p50/p90/p99 of TTFT, TPOT and E2E, and throughput: every run's error, their
   median and the worst run, beside the noise floor; the step replay (each logged step
   predicted from its shape by the frozen profile). Diagnostics, labelled as such because they
   read the scored runs: how fast each run's own steps went against the profile, and each run
   re-simulated at that speed second by second (``simulate_llm_at``), which separates the
   model's error from the machine's drift.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

Progress = Callable[[str], None]
METRICS = ("ttft_s", "tpot_s", "e2e_s")
PERCENTILES = (50, 90, 99)


QUICK_REQUESTS = 40
"""Requests per real run of the quick LLM validation (``servesim validate --quick``): with three
runs per load at 40 % and 80 % of capacity and a fresh quick calibration, about 4 minutes on a
2-core CPU."""


@dataclass(frozen=True)
class LLMSettings:
    model: str = "llama-tiny"
    device: str = "cpu"
    dtype: str | None = None
    loads: tuple[float, ...] = (0.4, 0.8)
    repeats: int = 3
    requests: int = QUICK_REQUESTS
    capacity_requests: int | None = None
    """Requests of the capacity burst (default: ``requests``, so that its length mix, and with
    it the capacity in requests per second, is the runs' own)."""
    calibration_requests: int | None = None
    """Requests of the staircase calibration burst the step composition is refitted on, run
    before the first scored run (default ``requests // 4``, at least 8; 0: none)."""
    seed: int = 0
    """Chooses the workload (arrival times, lengths) and the calibration bursts' requests."""
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 512
    num_kv_blocks: int = 512
    quick: bool = True
    in_loop: bool = True
    """Refit the profile's whole-step composition on the real steps of the capacity burst and the
    calibration burst (``refit_in_loop``), both run before any scored run, and freeze it; the
    grid profile's figures are reported beside."""


def trace_lengths(n: int, rng: np.random.Generator, quick: bool) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output lengths drawn from the shipped Azure LLM 2023 conversation sample.

    ``quick`` divides prompts by 8 and outputs by 2 and caps them at 128 and 48 tokens, so a
    CPU-sized model serves them in seconds; the shape of the distribution is the trace's. (Short
    prompts keep the CPU loop's work mostly batched decode, as on a GPU: CPU prefill is pure
    compute with no batching gain, which makes a loaded CPU engine a processor-sharing queue.)"""
    from sim.workload.traces import sample_path

    trace = pd.read_csv(sample_path("azure_conv_2023.csv"))
    idx = rng.integers(0, len(trace), n)
    prompt = trace["ContextTokens"].to_numpy()[idx]
    output = trace["GeneratedTokens"].to_numpy()[idx]
    if quick:
        prompt = np.clip(prompt // 8, 8, 128)
        output = np.clip(output // 2, 2, 48)
    return prompt.astype(int), np.maximum(output, 1).astype(int)


def _workload(n: int, rate: float | None, rng: np.random.Generator, quick: bool, staircase: bool = False):
    """``n`` requests with trace lengths, Poisson arrivals at ``rate`` (None: all at once).

    ``staircase`` (calibration bursts): output lengths evenly spaced from 2 tokens to the
    trace's 90th percentile instead of drawn, so that as the burst drains the engine runs every
    batch size from full down to one for about as many steps each. With drawn lengths a burst
    spends nearly all its steps in full batches and a handful at one or two sequences, and a
    composition fitted on it misses the small batches a lightly loaded engine runs most."""
    from calibration.engine.llm import WorkItem

    prompt, output = trace_lengths(n, rng, quick)
    if staircase:
        _, sample = trace_lengths(1000, np.random.default_rng(0), quick)
        output = np.linspace(2, max(2.0, np.percentile(sample, 90)), n).round().astype(int)
        output = rng.permutation(output)
    arrivals = np.zeros(n) if rate is None else np.cumsum(rng.exponential(1.0 / rate, n))
    return [WorkItem(i, float(t), int(p), int(o)) for i, (t, p, o) in enumerate(zip(arrivals, prompt, output))]


def percentiles(frame: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
    out = {}
    for m in metrics:
        values = frame[m].dropna().to_numpy(float)
        for p in PERCENTILES:
            out[f"{m}_p{p}"] = float(np.percentile(values, p)) if len(values) else float("nan")
    return out


def _throughput(frame: pd.DataFrame) -> float:
    done = frame.dropna(subset=["finish_s"])
    span = done["finish_s"].max() - frame["arrival_s"].min()
    return len(done) / span if span > 0 else float("nan")


def simulate_llm(workload, s: LLMSettings, profile: Path, folder: Path) -> pd.DataFrame:
    """The simulator's requests for the same workload, knobs and KV capacity."""
    from sim.config import parse_scenario
    from sim.run import run_scenario

    trace = folder / "workload.csv"
    pd.DataFrame(
        {
            "arrived_at": [w.arrival_s for w in workload],
            "num_prefill_tokens": [w.prompt_tokens for w in workload],
            "num_decode_tokens": [w.output_tokens for w in workload],
        }
    ).to_csv(trace, index=False)
    scenario = {
        "name": f"validate-{s.model}",
        "seed": s.seed,
        "replications": 1,
        "warmup_s": 0,
        "pools": [
            {
                "name": "llm",
                "model": s.model,
                "gpu": "l4",  # sets only memory and price here: KV capacity is num_gpu_blocks
                "engine": {
                    "max_num_seqs": s.max_num_seqs,
                    "max_num_batched_tokens": s.max_num_batched_tokens,
                    "block_size": 16,
                    "enable_chunked_prefill": True,
                    "enable_prefix_caching": False,
                    "num_gpu_blocks": s.num_kv_blocks,
                },
                "cost_model": {"kind": "profile", "path": str(profile.resolve())},
            }
        ],
        "classes": [{"name": "load", "pool": "llm", "trace": {"path": str(trace.resolve()), "format": "vidur"}}],
    }
    result = run_scenario(parse_scenario(scenario))
    sim = result.requests.sort_values("request_id").reset_index(drop=True)
    sim = on_workload_clock(sim, min(w.arrival_s for w in workload))
    sim["arrival_s"] = [w.arrival_s for w in workload]
    return sim


ABSOLUTE_TIME_COLUMNS = ("arrival_s", "finish_s", "first_scheduled_s", "first_token_s", "first_preview_s")


def on_workload_clock(sim: pd.DataFrame, first_arrival_s: float) -> pd.DataFrame:
    """A trace-driven simulation's requests with their times put back on the workload's clock:
    the trace reader starts time at the first arrival, so every time of day (not the
    durations) moves by the workload's first arrival (-1, "never", stays)."""
    sim = sim.copy()
    for col in ABSOLUTE_TIME_COLUMNS:
        if col in sim:
            sim[col] = sim[col].where(sim[col] < 0, sim[col] + first_arrival_s)
    return sim


def step_replay(steps: pd.DataFrame, profile: Path) -> pd.DataFrame:
    """Each logged real step's measured time against the profile's prediction for its shape."""
    from sim.costs.base import StepShape
    from sim.costs.profile import ProfileCostModel, load_profile

    cost = ProfileCostModel(load_profile(profile))
    pred = []
    for r in steps.itertuples():
        shape = StepShape(
            num_seqs=int(r.num_seqs),
            num_tokens=int(r.num_tokens),
            num_decode=int(r.num_decode),
            decode_ctx_sum=int(r.decode_ctx_sum),
            num_prefill_tokens=int(r.num_prefill_tokens),
            prefill_ctx_sum=int(r.prefill_ctx_sum),
            prefill_attn_pairs=float(r.prefill_attn_pairs),
        )
        pred.append(cost.step_s(shape))
    out = steps.copy()
    out["measured_s"] = out["end_s"] - out["start_s"]
    out["predicted_s"] = pred
    out["rel_error"] = (out["predicted_s"] - out["measured_s"]) / out["measured_s"]
    return out


def refit_in_loop(profile: Path, steps: pd.DataFrame, out: Path, what: str = "the capacity burst") -> tuple[Path, dict]:
    """The profile with its whole-step composition, ``alpha*sum(ops) + h0 + h1*seqs``, refitted
    on steps the real engine logged (the capacity burst, a workload the validation runs do not
    reuse): how the ops compose inside a running loop — shapes changing every step, the KV of
    many sequences in memory, the loop's own work between steps — rather than in the grid's
    repeats of one shape. The per-op fits are untouched. Returns the new profile's path (``out``)
    and the composition before and after."""
    import yaml

    from calibration.fit import STEP_FEATURES, fit_linear, ops_sum

    data = yaml.safe_load(Path(profile).read_text())
    ops = data["ops"]
    steps = steps[steps["num_tokens"] > 0].reset_index(drop=True)
    steps = steps.assign(ops_sum=ops_sum(ops, data["layers"], steps))
    measured = (steps["end_s"] - steps["start_s"]).to_numpy(float)
    grid = ops["step"]
    fitted = fit_linear(steps, measured, STEP_FEATURES)
    # The relative-error fit tracks a typical step, but latency adds steps up: real steps
    # scatter with a right tail (the OS, the allocator, caches), so their mean sits above their
    # median. Scale the fit so that its steps add up to the measured total time.
    A = np.column_stack([np.ones(len(steps)) if f == "const" else steps[f].to_numpy(float) for f in STEP_FEATURES])
    scale = float(measured.sum() / (A @ np.asarray(fitted["coef"])).sum())
    fitted["coef"] = [c * scale for c in fitted["coef"]]
    fitted["time_scale"] = round(scale, 4)
    fitted["fitted_on"] = f"{len(steps)} real engine steps of {what} (in-loop), scaled to their total time"
    # Shapes inside either fit are inside the profile's range.
    for feature, (lo, hi) in grid.get("range", {}).items():
        a, b = fitted["range"].get(feature, (lo, hi))
        fitted["range"][feature] = [min(a, lo), max(b, hi)]
    fitted["grid_fit"] = {"coef": grid["coef"], "fit_error": grid.get("fit_error")}
    ops["step"] = fitted
    data["source"]["notes"] = [
        *data["source"].get("notes", []),
        f"step composition refitted in-loop on {len(steps)} real steps of {what} (servesim validate): coef "
        f"{[round(c, 6) for c in fitted['coef']]} (grid: {[round(c, 6) for c in grid['coef']]})",
    ]
    _write_profile(data, profile, out)
    return out, {"grid": {"coef": grid["coef"]}, "in_loop": {"coef": fitted["coef"], "fit_error": fitted["fit_error"]}}


def _write_profile(data: dict, source: Path, out: Path) -> None:
    """Write a profile derived from ``source`` to ``out``, its raw-data path made relative to
    the new file."""
    import yaml

    raw = data["source"].get("raw")
    if raw:
        data["source"]["raw"] = os.path.relpath((Path(source).parent / raw).resolve(), out.parent.resolve())
    out.write_text(yaml.safe_dump(data, sort_keys=False, width=120))


def machine_speed(steps: pd.DataFrame, profile: Path) -> float:
    """How slow the machine ran ``steps`` against ``profile``: their measured total time over
    the predicted (1.0: as the profile says; 1.2: 20 % slower)."""
    replay = step_replay(steps[steps["num_tokens"] > 0], profile)
    return float(replay["measured_s"].sum() / replay["predicted_s"].sum())


SPEED_WINDOW_S = 1.0
"""The window of ``run_speed_series`` in the report's given-the-runs'-speed diagnostic."""


def _speed_per_window(
    at_s: np.ndarray, replay: pd.DataFrame, n: int, window_s: float, min_predicted_s: float
) -> np.ndarray:
    """Measured over predicted time of the steps in each window (by ``at_s``); a window whose
    steps are predicted at less than ``min_predicted_s`` takes its neighbours' value."""
    idx = np.minimum((np.asarray(at_s) // window_s).astype(int), n - 1)
    measured = np.bincount(idx, replay["measured_s"].to_numpy(), n)
    predicted = np.bincount(idx, replay["predicted_s"].to_numpy(), n)
    ok = predicted > min_predicted_s
    speed = np.full(n, np.nan)
    speed[ok] = measured[ok] / predicted[ok]
    return pd.Series(speed).ffill().bfill().fillna(1.0).to_numpy()


def run_speed_series(
    steps: pd.DataFrame, profile: Path, window_s: float = SPEED_WINDOW_S
) -> tuple[np.ndarray, np.ndarray]:
    """How fast the machine ran a real run, window by window: (edges, speed), the measured over
    the predicted time of the run's own steps in each ``window_s`` window, 1.0 being what
    ``profile`` says. A window with less than a fifth of its time in steps takes its
    neighbours' value. This reads the run itself: a diagnostic, never the prediction."""
    st = steps[steps["num_tokens"] > 0]
    replay = step_replay(st, profile)
    n = int(np.ceil(st["end_s"].max() / window_s)) + 1
    mid = ((st["start_s"] + st["end_s"]) / 2).to_numpy()
    return np.arange(n + 1) * window_s, _speed_per_window(mid, replay, n, window_s, 0.2 * window_s)


def simulate_llm_at(
    workload, s: LLMSettings, profile: Path, folder: Path, edges: np.ndarray, speed: np.ndarray
) -> pd.DataFrame:
    """``simulate_llm`` on a machine whose speed changes over time: ``speed[i]`` times the
    profile's step times between ``edges[i]`` and ``edges[i + 1]`` (the last value on after).

    A time warp: work done at speed S(t) takes S(t) times as long, so in work time
    w(t) = integral of dt / S(t) every step takes the profile's time. The arrivals are mapped
    to work time, simulated there, and every event is mapped back (arrival, queue wait, first
    token, finish, and TTFT, TPOT, E2E from them). Exact for an engine whose choices depend on
    the order of events, not on the clock."""
    from calibration.engine.llm import WorkItem

    edges = np.append(edges, edges[-1] + 1e7)
    speed = np.append(speed, speed[-1])
    work = np.concatenate([[0.0], np.cumsum(np.diff(edges) / speed)])

    def to_work(t):
        return np.interp(t, edges, work)

    def to_real(w):
        return np.interp(w, work, edges)

    arrivals = np.array([w.arrival_s for w in workload])
    w_arrival = to_work(arrivals)
    warped = [WorkItem(w.request_id, float(a), w.prompt_tokens, w.output_tokens) for w, a in zip(workload, w_arrival)]
    (folder / "warped").mkdir(exist_ok=True)
    sim = simulate_llm(warped, s, profile, folder / "warped")
    w_first, w_finish = w_arrival + sim["ttft_s"].to_numpy(), w_arrival + sim["e2e_s"].to_numpy()
    first, finish = to_real(w_first), to_real(w_finish)
    sim["arrival_s"] = arrivals
    sim["queue_s"] = to_real(w_arrival + sim["queue_s"].to_numpy()) - arrivals
    sim["ttft_s"] = first - arrivals
    sim["e2e_s"] = finish - arrivals
    with np.errstate(invalid="ignore", divide="ignore"):
        sim["tpot_s"] = sim["tpot_s"].to_numpy() * (finish - first) / (w_finish - w_first)
    sim["first_token_s"], sim["finish_s"] = first, finish
    return sim


def _profile_for(model: str, device: str, dtype: str, out: Path, profile: Path | None, progress: Progress) -> Path:
    """The given profile, or one calibrated now on this device (quick grid) under ``out``."""
    if profile is not None:
        return profile
    from calibration.fit import build_profile, write_profile
    from calibration.measure import load_raw, measure

    progress(f"calibrating {model} on {device} (quick grid)")
    raw_dir = measure(model, device, out / "calibration" / "raw", quick=True, dtype=dtype, progress=lambda *a: None)
    raw, meta = load_raw(raw_dir)
    return write_profile(build_profile(raw, meta, None), raw, out / "calibration")


def compare_runs(
    case: dict, runs: list[pd.DataFrame], sims: list[pd.DataFrame], metrics: tuple[str, ...]
) -> tuple[list[dict], list[dict]]:
    """Error rows of one case (its load, and what else sets it apart: ``case``), each percentile of each metric and throughput: a summary row per
    figure and one per real run. ``sims`` holds the one prediction all runs are scored against,
    or one simulation per run (a diagnostic). A run's error is (simulated - measured) /
    measured; the summary gives their median (``error``), the run furthest off (``worst``,
    signed), the medians of the real and simulated figures (``measured``, ``predicted``) and the
    real runs' spread, (max - min) / median (``noise_floor``)."""
    if len(sims) == 1:
        sims = sims * len(runs)
    real_p = pd.DataFrame([percentiles(r, metrics) for r in runs])
    sim_p = pd.DataFrame([percentiles(r, metrics) for r in sims])
    real_p["throughput_req_s"] = [_throughput(r) for r in runs]
    sim_p["throughput_req_s"] = [_throughput(r) for r in sims]
    rows, per_run = [], []
    for metric in real_p.columns:
        vals, predicted = real_p[metric].to_numpy(), sim_p[metric].to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            errors = np.where(vals > 0, (predicted - vals) / vals, np.nan)
        med = float(np.median(vals))
        worst = float(errors[np.nanargmax(np.abs(errors))]) if np.isfinite(errors).any() else float("nan")
        rows.append(
            {
                **case,
                "metric": metric,
                "measured": med,
                "predicted": float(np.median(predicted)),
                "error": float(np.median(errors)),
                "worst": worst,
                # one run has no spread to show (not a spread of zero)
                "noise_floor": float((vals.max() - vals.min()) / med) if med and len(vals) > 1 else float("nan"),
            }
        )
        per_run += [
            {**case, "metric": metric, "run": k, "measured": float(v), "predicted": float(p), "error": float(e)}
            for k, (v, p, e) in enumerate(zip(vals, predicted, errors))
        ]
    return rows, per_run


def report_summary(s, dtype: str, profile: Path, capacity: float, replay: pd.DataFrame, what: str) -> dict:
    """What a report says about its run: settings, capacity and the replay error of ``what``
    (real steps or batches predicted from their logged shapes)."""
    err = replay["rel_error"]
    total = float(replay["predicted_s"].sum() / replay["measured_s"].sum() - 1)
    return {
        "model": s.model,
        "device": s.device,
        "dtype": dtype,
        "profile": str(profile),
        "capacity_req_s": capacity,
        "settings": dict(s.__dict__),
        "step_replay": {
            "what": what,
            "steps": int(len(replay)),
            "median_abs_rel_error": float(err.abs().median()),
            "p90_abs_rel_error": float(err.abs().quantile(0.9)),
            "bias": float(err.median()),
            "total_time_bias": total,
        },
    }


def _headline(table: pd.DataFrame) -> dict:
    """The figures a reader looks at first: per metric family, the largest |median error| and
    the largest |error| of any single run, over every load and percentile."""
    out = {}
    for family in sorted({m.rsplit("_p", 1)[0] for m in table["metric"]}):
        rows = table[table["metric"].str.rsplit("_p", n=1).str[0] == family]
        out[family] = {
            "max_abs_median_error": float(rows["error"].abs().max()),
            "max_abs_run_error": float(rows["worst"].abs().max()),
            "max_noise_floor": float(rows["noise_floor"].max()),
        }
    return out


def finish_report(
    out: Path, rows: list[dict], per_run: list[dict], summary: dict, cdfs: dict, metrics: tuple[str, ...]
) -> dict:
    # Paths relative to the report, so a report moved or committed names no machine's folders.
    summary["profile"] = os.path.relpath(Path(summary["profile"]).resolve(), out.resolve())
    table = pd.DataFrame(rows)
    table.to_csv(out / "errors.csv", index=False)
    pd.DataFrame(per_run).to_csv(out / "errors_per_run.csv", index=False)
    summary["headline"] = _headline(table)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _plot_cdfs(cdfs, out / "cdfs.png", metrics)
    _write_markdown(table, pd.DataFrame(per_run), summary, out / "report.md")
    return {"table": table, "per_run": pd.DataFrame(per_run), **summary}


def sha256_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def validate_llm(s: LLMSettings, out: Path, profile: Path | None = None, progress: Progress = print) -> dict:
    """Run the whole LLM validation (calibrate, freeze, predict, then the scored runs); write the
    report under ``out``; return its summary."""
    import shutil

    from calibration.engine.llm import EngineConfig, load_replica, run_llm_engine
    from calibration.measure import default_dtype

    out.mkdir(parents=True, exist_ok=True)
    dtype = s.dtype or default_dtype(s.device)
    profile = _profile_for(s.model, s.device, dtype, out, profile, progress)
    cfg = EngineConfig(
        max_num_seqs=s.max_num_seqs, max_num_batched_tokens=s.max_num_batched_tokens, num_kv_blocks=s.num_kv_blocks
    )
    # the calibration bursts' requests and the scored workload from separate streams of one seed
    cal_rng, work_rng = (np.random.default_rng(x) for x in np.random.SeedSequence(s.seed).spawn(2))
    n_cal = s.calibration_requests if s.calibration_requests is not None else max(8, s.requests // 4)

    # one model for the whole session, as a server loads it once: every burst and run serves on
    # it (building and warming it up would cost each of them ~3 s on a CPU core)
    replica = load_replica(s.model, cfg, device=s.device, dtype=dtype, seed=s.seed)

    def real(workload, seed):
        return run_llm_engine(s.model, workload, cfg, device=s.device, dtype=dtype, seed=seed, replica=replica)

    # 1. Calibrate: everything measured on the engine before the first scored run.
    n_burst = s.capacity_requests or s.requests
    progress(f"calibrate: capacity burst of {n_burst} requests at once")
    burst, burst_steps = real(_workload(n_burst, None, cal_rng, s.quick), s.seed)
    capacity = _throughput(burst)
    progress(f"capacity {capacity:.3f} req/s")
    cal_steps = [burst_steps.assign(burst=0)]
    if s.in_loop and n_cal > 0:
        progress(f"calibrate: staircase burst of {n_cal} requests")
        _, steps = real(_workload(n_cal, None, cal_rng, s.quick, staircase=True), s.seed + 1)
        cal_steps.append(steps.assign(burst=1))
    cal = pd.concat(cal_steps, ignore_index=True)
    cal.to_csv(out / "calibration_steps.csv", index=False)

    # 2. Freeze: the profile every prediction below uses, hashed before any scored run.
    frozen = out / "frozen-profile.yaml"
    composition = None
    if s.in_loop:
        what = (
            "the capacity burst"
            + (" and a staircase calibration burst" if n_cal > 0 else "")
            + ", before any scored run"
        )
        _, composition = refit_in_loop(profile, cal, frozen, what)
        fe = composition["in_loop"]["fit_error"]
        progress(
            f"step composition refitted on {fe['points']} calibration steps: held-out median |error| {fe['median_rel']:.1%}"
        )
    else:
        import yaml

        _write_profile(yaml.safe_load(Path(profile).read_text()), profile, frozen)
    frozen_sha = sha256_of(frozen)

    # 3. Predict every load's workload with the frozen profile, and write it, before running it.
    plan = []
    for load in s.loads:
        folder = out / f"load-{load:.2f}"
        folder.mkdir(exist_ok=True)
        workload = _workload(s.requests, load * capacity, work_rng, s.quick)
        predicted = simulate_llm(workload, s, frozen, folder)
        predicted.to_csv(folder / "predicted_requests.csv", index=False)
        plan.append((load, workload, folder, predicted, []))
    progress(f"predictions written for {len(plan)} loads (frozen profile sha256 {frozen_sha[:12]})")

    # 4. The scored runs, the loads taking turns so that a slow spell of the machine does not
    # land on one load alone. Nothing they measure reaches the predictions above.
    run_steps = {}
    for k in range(s.repeats):
        for load, workload, folder, _, runs in plan:
            progress(f"load {load:.0%} ({load * capacity:.3f} req/s): scored run {k + 1}/{s.repeats}")
            reqs, steps = real(workload, s.seed + 100 + k)
            reqs.to_csv(folder / f"real_requests_{k}.csv", index=False)
            steps.to_csv(folder / f"real_steps_{k}.csv", index=False)
            runs.append(reqs)
            run_steps[load, k] = steps
    if sha256_of(frozen) != frozen_sha:
        raise RuntimeError("the frozen profile changed during the scored runs")

    # 5. Compare, and the diagnostics (each labelled: they read the scored runs).
    rows, per_run, cdfs, replays = [], [], {}, []
    given_rows, grid_rows, speeds = [], [], []
    for load, workload, folder, predicted, runs in plan:
        cdfs[_case_label({"load": load})] = (runs, [predicted])
        got, each = compare_runs({"load": load}, runs, [predicted], METRICS)
        rows += got
        per_run += each
        given = []
        for k in range(len(runs)):
            steps = run_steps[load, k]
            replays.append(step_replay(steps, frozen).assign(load=load, repeat=k))
            speeds.append({"load": load, "repeat": k, "speed": machine_speed(steps, frozen)})
            given.append(simulate_llm_at(workload, s, frozen, folder, *run_speed_series(steps, frozen)))
        given_rows += compare_runs({"load": load}, runs, given, METRICS)[0]
        if s.in_loop:
            grid_rows += compare_runs({"load": load}, runs, [simulate_llm(workload, s, profile, folder)], METRICS)[0]
    replay = pd.concat(replays, ignore_index=True)
    replay.to_csv(out / "step_replay.csv", index=False)
    summary = report_summary(s, dtype, profile, capacity, replay, "steps")
    summary["protocol"] = {
        "frozen_profile": frozen.name,
        "frozen_profile_sha256": frozen_sha,
        "calibration": f"capacity burst of {n_burst} requests"
        + (f" and a staircase burst of {n_cal} requests" if s.in_loop and n_cal > 0 else "")
        + ", before the first scored run",
        "predictions": "load-*/predicted_requests.csv, written before the first scored run",
        "workload_seed": s.seed,
    }
    given_table = pd.DataFrame(given_rows)
    given_table.to_csv(out / "errors_given_run_speed.csv", index=False)
    summary["diagnostics"] = {
        "run_speed": speeds,
        "given_run_speed": {"window_s": SPEED_WINDOW_S, "headline": _headline(given_table)},
    }
    if s.in_loop:
        summary["grid_profile"] = {
            "profile": os.path.relpath(Path(profile).resolve(), out.resolve()),
            "composition": composition,
        }
        grid_table = pd.DataFrame(grid_rows)
        grid_table.to_csv(out / "errors_grid_profile.csv", index=False)
        summary["grid_profile"]["headline"] = _headline(grid_table)
    for *_, folder, _, _ in plan:
        shutil.rmtree(folder / "warped", ignore_errors=True)  # the given-speed diagnostic's scratch
    return finish_report(out, rows, per_run, summary, cdfs, METRICS)


@dataclass(frozen=True)
class DiffusionSettings:
    model: str = "sd-tiny"
    device: str = "cpu"
    dtype: str | None = None
    loads: tuple[float, ...] = (0.4, 0.8)
    repeats: int = 3
    requests: int = 24
    capacity_requests: int = 16
    seed: int = 0
    """Chooses the workload (arrival times and each request's shape)."""
    shapes: tuple[tuple[int, int], ...] = ((256, 256), (192, 320))
    """Image sizes (width, height): a Poisson stream of ``requests / len(shapes)`` requests each,
    sharing the load's rate; batches hold one shape."""
    steps: int = 10
    max_batch_size: int = 4
    max_waits: tuple[float, ...] = (0.0, 0.5)
    """``max_wait_s`` settings, each run at every load: 0 dispatches whatever is waiting, more
    holds a batch that is not full until its oldest request has waited that long."""


IMAGE_METRICS = ("e2e_s", "queue_s")


def simulate_diffusion(s: DiffusionSettings, rate: float, max_wait_s: float, profile: Path, seed: int) -> pd.DataFrame:
    """The simulator's run of a Poisson image workload, one class per shape sharing ``rate``;
    its arrival times and shapes are then served by the real loop, so both see the same
    schedule."""
    from sim.config import parse_scenario
    from sim.run import run_scenario

    share = rate / len(s.shapes)
    scenario = {
        "name": f"validate-{s.model}",
        "seed": seed,
        "replications": 1,
        "warmup_s": 0,
        "num_requests": -(-s.requests // len(s.shapes)),  # per class
        "pools": [
            {
                "name": "images",
                "model": s.model,
                "gpu": "l4",  # sets only memory and price here
                "batching": {
                    "policy": "static",
                    "max_batch_size": s.max_batch_size,
                    "max_wait_s": max_wait_s,
                    "shapes": "bucket",
                },
                "cost_model": {"kind": "profile", "path": str(profile.resolve())},
            }
        ],
        "classes": [
            {
                "name": f"{w}x{h}",
                "pool": "images",
                "arrival": {"process": "poisson", "rate": share},
                "image": {"width": w, "height": h, "steps": s.steps},
            }
            for w, h in s.shapes
        ],
    }
    result = run_scenario(parse_scenario(scenario))
    return result.requests.sort_values("arrival_s", kind="stable").reset_index(drop=True)


def batch_replay(batches: pd.DataFrame, profile: Path, text_prompts_per_image: int) -> pd.DataFrame:
    """Each real batch's stage times against the profile's prediction for its shape."""
    from sim.costs.profile import DiffusionProfileCost, load_profile

    cost = DiffusionProfileCost(load_profile(profile))
    out = batches.copy()
    out["measured_s"] = out["end_s"] - out["start_s"]
    out["predicted_s"] = [
        cost.text_encode_s(text_prompts_per_image * int(b.images))
        + int(b.steps) * cost.denoise_step_s(int(b.rows), int(b.tokens))
        + cost.vae_decode_s(int(b.images), int(b.width), int(b.height), int(b.frames))
        for b in out.itertuples()
    ]
    out["rel_error"] = (out["predicted_s"] - out["measured_s"]) / out["measured_s"]
    return out


def validate_diffusion(
    s: DiffusionSettings, out: Path, profile: Path | None = None, progress: Progress = print
) -> dict:
    """The diffusion validation: static batches of a real pipeline against the simulator, at
    every load and ``max_wait_s`` setting, on a mix of image shapes."""
    from calibration.diffusion_configs import diffusion_config
    from calibration.engine.diffusion import DiffusionEngineConfig, ImageWorkItem, run_diffusion_engine
    from calibration.measure import default_dtype

    out.mkdir(parents=True, exist_ok=True)
    dtype = s.dtype or default_dtype(s.device)
    profile = _profile_for(s.model, s.device, dtype, out, profile, progress)
    prompts_per_image = 2 if diffusion_config(s.model).cfg else 1  # negative prompts are encoded too
    frozen_sha = sha256_of(profile)

    def real(frame: pd.DataFrame, max_wait_s: float, seed: int):
        cfg = DiffusionEngineConfig(max_batch_size=s.max_batch_size, max_wait_s=max_wait_s)
        work = [
            ImageWorkItem(i, float(r.arrival_s), int(r.width), int(r.height), s.steps)
            for i, r in enumerate(frame.itertuples())
        ]
        return run_diffusion_engine(s.model, work, cfg, device=s.device, dtype=dtype, seed=seed)

    # Calibrate: the capacity burst, on the shape mix of the runs, before any scored run.
    shape_rng = np.random.default_rng(np.random.SeedSequence(s.seed).spawn(1)[0])
    sizes = [s.shapes[i] for i in shape_rng.integers(0, len(s.shapes), s.capacity_requests)]
    burst = pd.DataFrame({"arrival_s": 0.0, "width": [w for w, _ in sizes], "height": [h for _, h in sizes]})
    progress(f"calibrate: capacity burst of {s.capacity_requests} requests at once")
    done, _ = real(burst, 0.0, s.seed)
    capacity = _throughput(done)
    progress(f"capacity {capacity:.3f} req/s")

    # Predict every case with the frozen profile first and write it; the real runs then serve
    # the very arrival times and shapes the simulator drew, the cases taking turns.
    plan = []
    for wait in s.max_waits:
        for load in s.loads:
            folder = out / f"load-{load:.2f}-wait-{wait:g}"
            folder.mkdir(exist_ok=True)
            sim = simulate_diffusion(s, load * capacity, wait, profile, s.seed)
            sim.to_csv(folder / "predicted_requests.csv", index=False)
            plan.append(({"load": load, "max_wait_s": wait}, folder, sim, []))
    replays = []
    for k in range(s.repeats):
        for case, folder, sim, runs in plan:
            progress(f"load {case['load']:.0%}, max_wait_s {case['max_wait_s']:g}: scored run {k + 1}/{s.repeats}")
            reqs, batches = real(sim, case["max_wait_s"], s.seed + 100 + k)
            reqs.to_csv(folder / f"real_requests_{k}.csv", index=False)
            batches.to_csv(folder / f"real_batches_{k}.csv", index=False)
            runs.append(reqs)
            replays.append(batch_replay(batches, profile, prompts_per_image).assign(**case, repeat=k))
    if sha256_of(profile) != frozen_sha:
        raise RuntimeError("the profile changed during the scored runs")
    rows, per_run, cdfs = [], [], {}
    for case, _, sim, runs in plan:
        cdfs[_case_label(case)] = (runs, [sim])
        got, each = compare_runs(case, runs, [sim], IMAGE_METRICS)
        rows += got
        per_run += each
    replay = pd.concat(replays, ignore_index=True)
    replay.to_csv(out / "batch_replay.csv", index=False)
    summary = report_summary(s, dtype, profile, capacity, replay, "batches")
    summary["protocol"] = {
        "frozen_profile": os.path.relpath(Path(profile).resolve(), out.resolve()),
        "frozen_profile_sha256": frozen_sha,
        "calibration": f"the profile and a capacity burst of {s.capacity_requests} requests",
        "predictions": "*/predicted_requests.csv, written before the first scored run",
        "workload_seed": s.seed,
    }
    return finish_report(out, rows, per_run, summary, cdfs, IMAGE_METRICS)


def run_errors(table: pd.DataFrame, per_run: pd.DataFrame) -> list[list[float]]:
    """For each row of ``table``, its runs' errors in run order (from ``per_run``)."""
    keys = [*case_columns(table), "metric"]
    groups = {k: g.sort_values("run")["error"].tolist() for k, g in per_run.groupby(keys, sort=False)}
    return [groups[tuple(getattr(r, c) for c in keys)] for r in table.itertuples()]


def _case_label(case: dict) -> str:
    label = f"{case['load']:.0%} load"
    return label + (f", max_wait_s {case['max_wait_s']:g}" if "max_wait_s" in case else "")


def case_columns(table: pd.DataFrame) -> list[str]:
    """The columns of an error table that name its cases (``load``, and ``max_wait_s`` for diffusion)."""
    return [c for c in ("load", "max_wait_s") if c in table.columns]


def _plot_cdfs(cdfs: dict, path: Path, metrics: tuple[str, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(cdfs), len(metrics), figsize=(4.2 * len(metrics), 3.2 * len(cdfs)), squeeze=False)
    for row, (label, (runs, sims)) in zip(axes, cdfs.items()):
        for ax, m in zip(row, metrics):
            for k, r in enumerate(runs):
                v = np.sort(r[m].dropna().to_numpy())
                ax.plot(v, np.linspace(0, 1, len(v)), color="tab:blue", alpha=0.5, label="measured" if k == 0 else None)
            for k, sim in enumerate(sims):
                v = np.sort(sim[m].dropna().to_numpy())
                lw, alpha = (2, 1.0) if len(sims) == 1 else (1.2, 0.7)
                ax.plot(
                    v,
                    np.linspace(0, 1, len(v)),
                    color="tab:orange",
                    lw=lw,
                    alpha=alpha,
                    label="simulated" if k == 0 else None,
                )
            ax.set_title(f"{m.removesuffix('_s').upper()} at {label}", fontsize=9)
            ax.set_xlabel("s")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_markdown(table: pd.DataFrame, per_run: pd.DataFrame, summary: dict, path: Path) -> None:
    sr = summary["step_replay"]
    lines = [
        f"# Validation: {summary['model']} on {summary['device']} ({summary['dtype']})",
        "",
        f"Profile: `{summary['profile']}`. Capacity (burst): {summary['capacity_req_s']:.3f} req/s.",
    ]
    protocol = summary.get("protocol")
    if protocol is not None:
        lines += [
            "",
            f"**Calibrate, freeze, predict.** Calibration: the profile and the {protocol['calibration']}. The frozen "
            f"profile (`{protocol['frozen_profile']}`, sha256 `{protocol['frozen_profile_sha256'][:16]}`) predicted every "
            f"load ({protocol['predictions']}); nothing measured in a scored run enters a prediction. Workload seed "
            f"{protocol['workload_seed']}.",
        ]
    lines += [
        "",
        "`measured`: the median over the real runs; `predicted`: the prediction's figure; `error`: the median over the "
        "runs of (predicted - measured) / measured; `worst`: the run furthest off; `noise floor`: the real runs' "
        "(max - min) / median. Every run's error is in `errors_per_run.csv`.",
        "",
        "| case | metric | measured | predicted | error | worst run | runs | noise floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r, each in zip(table.itertuples(), run_errors(table, per_run)):
        case = _case_label({c: getattr(r, c) for c in case_columns(table)})
        lines.append(
            f"| {case} | {r.metric} | {r.measured:.4g} | {r.predicted:.4g} | {r.error:+.1%} | {r.worst:+.1%} | "
            + " ".join(f"{e:+.1%}" for e in each)
            + (f" | {r.noise_floor:.1%} |" if np.isfinite(r.noise_floor) else " | – (one run) |")
        )
    lines += ["", "Largest errors over every load and percentile:", ""]
    for family, h in summary["headline"].items():
        floor = (
            f"noise floor up to {h['max_noise_floor']:.1%}"
            if np.isfinite(h["max_noise_floor"])
            else "one run per load: no noise floor"
        )
        lines.append(
            f"- {family}: median over runs {h['max_abs_median_error']:.1%}, worst single run {h['max_abs_run_error']:.1%} ({floor})"
        )
    lines += [
        "",
        f"Replay of {sr['steps']} real {sr['what']} (each predicted from its logged shape by the same profile: the cost "
        f"model alone, without queueing): median |error| {sr['median_abs_rel_error']:.1%}, p90 {sr['p90_abs_rel_error']:.1%}, "
        f"median signed {sr['bias']:+.1%}; total time {sr['total_time_bias']:+.1%}.",
    ]
    diag = summary.get("diagnostics")
    if diag is not None:
        speeds = [r["speed"] for r in diag["run_speed"]]
        given = diag["given_run_speed"]["headline"].get("e2e_s", {})
        lines += [
            "",
            "## Diagnostics (they read the scored runs: never the prediction)",
            "",
            "- How fast each scored run's own steps went against the frozen profile: "
            + ", ".join(f"{r['load']:.0%}/{r['repeat']} {r['speed']:.3f}" for r in diag["run_speed"])
            + f" (spread {min(speeds):.3f}-{max(speeds):.3f}; 1.0 = as calibrated). On a shared CPU this drift, not the "
            "model, is most of the error above.",
            f"- Each run re-simulated at the speed its own steps went, {diag['given_run_speed']['window_s']:g} s at a "
            f"time (`errors_given_run_speed.csv`): E2E median error up to {given.get('max_abs_median_error', float('nan')):.1%}, "
            f"worst run {given.get('max_abs_run_error', float('nan')):.1%}. What is left is the model's own "
            "(scheduling, batching, step composition).",
        ]
    grid = summary.get("grid_profile")
    if grid is not None:
        c = grid["composition"]
        e2e = grid["headline"].get("e2e_s", {})
        lines += [
            f"- The grid profile alone (`{grid['profile']}`, no in-loop composition; also frozen): E2E median error up to "
            f"{e2e.get('max_abs_median_error', float('nan')):.1%}, worst run {e2e.get('max_abs_run_error', float('nan')):.1%} "
            f"(`errors_grid_profile.csv`). Composition (alpha, h0, h1): in-loop {[round(x, 6) for x in c['in_loop']['coef']]}, "
            f"grid {[round(x, 6) for x in c['grid']['coef']]}.",
        ]
    lines += ["", "![measured vs simulated CDFs](cdfs.png)", ""]
    path.write_text("\n".join(lines))

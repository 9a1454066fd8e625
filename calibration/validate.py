"""``servesim validate``: run a real serving loop, simulate the same workload, compare.

For an LLM (``validate_llm``; ``validate_diffusion`` does the same for static image batches,
with E2E and queue wait as its metrics and each real batch replayed against the profile):

1. **Profile.** Use the given profile, or calibrate one now on this device (quick grid). The
   calibration grid is synthetic; the validation workload below is not, so the two are
   disjoint (calibration notes, "Validating the simulator honestly").
2. **Capacity.** A burst of requests, all arriving at once, through the real engine: completed
   requests per second at saturation. Load levels are fractions of it.
3. **Real runs.** At each load, Poisson arrivals at ``load x capacity`` with prompt and output
   lengths sampled from the Azure LLM 2023 conversation trace (scaled down for CPU-sized
   models when ``quick``), run ``repeats`` times on the same schedule, the loads taking turns:
   the spread between repeats is the real system's own noise floor, reported beside each error.
4. **Simulation.** The same arrival times and lengths (a Vidur-format trace), the same engine
   knobs and KV capacity (``num_gpu_blocks``), the profile as cost model — with its whole-step
   composition refitted in-loop (``refit_in_loop``) on the real steps of the capacity burst and
   of short calibration bursts of other requests run before every real run and after the last
   (never on the validation runs themselves). Each run is simulated at the machine's speed in
   the bursts on either side of it (``machine_speed``, ``at_speed``): a shared machine's speed
   wanders by tens of percent between minutes, and near capacity a queue turns a 10 % slower
   machine into a far longer wait. The bursts judge that only roughly, so by default a speed
   meter runs inside every run too (``SpeedReference``: reference steps of the shapes the run
   is expected to take, interleaved and cut out of its clock), and each run is simulated on the
   speed it metered second by second (``reference_speed_series``, ``simulate_llm_at``); on a
   dedicated GPU the factors sit near 1.
5. **Report.** Per-step replay error (each logged step predicted from its logged batch shape);
   end-to-end errors at p50/p90/p99 of TTFT, TPOT and E2E; throughput; CDF plots of measured
   vs predicted. Written as CSV, Markdown and PNG under the output folder.
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
"""Requests per real run of the quick LLM validation (``servesim validate --quick``, and the CI
test at its settings): on this 2-core VM three runs of 40 per load kept E2E p50 and p90
within 15 % in the runs docs/validation.md lists, where 60 took up to 9.5 min with a fresh
calibration in a slow hour."""


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
    bracket_requests: int | None = None
    """Requests of each calibration burst, run before every real run and after the last
    (default ``requests // 4``, at least 8; 0: none): the in-loop composition is fitted on their
    steps and the capacity burst's, and each run is simulated at the speed of the two bursts
    beside it."""
    seed: int = 0
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 512
    num_kv_blocks: int = 512
    quick: bool = True
    in_loop: bool = True
    """Refit the profile's whole-step composition on the real steps of the capacity burst and the
    calibration bursts (``refit_in_loop``) before simulating; the grid profile's figures are
    reported beside."""
    speed_reference: bool = True
    """Meter the machine's speed inside every real run: reference steps of the shapes each load's
    run is expected to take (``reference_shapes``), interleaved with it and cut out of its clock,
    and with the calibration bursts; simulate each run at the speed they metered, one window at
    a time (``reference_speed_series``). The errors at the bursts' speed alone are reported
    beside. Needs the calibration bursts (``in_loop`` and ``bracket_requests`` > 0)."""


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


def _percentiles(frame: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
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
    # The trace reader starts time at the first arrival; put it back on the workload's clock.
    sim["arrival_s"] = [w.arrival_s for w in workload]
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


def at_speed(profile: Path, speed: float, out: Path, why: str) -> Path:
    """``profile`` with every step ``speed`` times as long (its whole-step composition scaled)."""
    import yaml

    data = yaml.safe_load(Path(profile).read_text())
    step = data["ops"]["step"]
    speed = float(speed)
    step["coef"] = [c * speed for c in step["coef"]]
    step["machine_speed"] = round(speed, 4)
    data["source"]["notes"] = [*data["source"].get("notes", []), f"steps scaled by {speed:.4f}: {why}"]
    _write_profile(data, profile, out)
    return out


SPEED_WINDOW_S = 1.0
"""The window of ``run_speed_series`` in the report's given-the-runs'-speed diagnostic."""
REFERENCE_EVERY_S = 0.2
"""How often, on a run's clock, the speed meter runs a reference step."""
REFERENCE_SHAPES = 8
"""Reference shapes per load."""


def expected_steps(workload, cfg, profile: Path) -> list[tuple]:
    """The steps a real run of ``workload`` is expected to take, as (shape, predicted seconds):
    the engine's scheduler on a clock advanced by the profile's step times."""
    from calibration.engine.llm import schedule_only
    from sim.costs.base import StepShape
    from sim.costs.profile import ProfileCostModel, load_profile

    cost = ProfileCostModel(load_profile(profile))

    def step_s(b) -> float:
        fields = ("num_seqs", "num_tokens", "num_decode", "decode_ctx_sum", "num_prefill_tokens", "prefill_ctx_sum", "prefill_attn_pairs")
        return cost.step_s(StepShape(**{f: getattr(b, f) for f in fields}))

    return [(out.shape, step_s(out.shape)) for out in schedule_only(workload, cfg, step_s)]


def _batch_rows(b) -> tuple[tuple[int, int], ...]:
    """A step's aggregate shape as one (new tokens, cached tokens) row per sequence: the decode
    rows share its decode context, the prefill rows its prefill tokens and context."""

    def split(total: int, n: int) -> list[int]:
        return [total // n + (i < total % n) for i in range(n)]

    rows = [(1, c) for c in split(b.decode_ctx_sum, b.num_decode)] if b.num_decode else []
    if b.num_prefill_seqs:
        rows += list(zip(split(b.num_prefill_tokens, b.num_prefill_seqs), split(b.prefill_ctx_sum, b.num_prefill_seqs)))
    return tuple(rows)


def reference_shapes(steps: list[tuple], m: int = REFERENCE_SHAPES) -> tuple[tuple[tuple[int, int], ...], ...]:
    """``m`` step shapes that stand for where an expected run spends its time: the steps at the
    midpoints of ``m`` equal shares of its predicted time, cheapest first. On a shared CPU the
    kinds of step slow down independently (weight-streaming small batches, compute-heavy large
    ones: docs/validation.md), so the meter has to be made of the steps the run will take."""
    times = np.array([t for _, t in steps])
    order = np.argsort(times, kind="stable")
    cum = np.cumsum(times[order]) / times.sum()
    picks = np.searchsorted(cum, (np.arange(m) + 0.5) / m)
    return tuple(_batch_rows(steps[order[min(j, len(order) - 1)]][0]) for j in picks)


def _window_of(at_s: np.ndarray, window_s: float, n: int) -> np.ndarray:
    """The window (of ``n``, ``window_s`` long, from 0) each time falls in; the last runs on."""
    return np.minimum((np.asarray(at_s) // window_s).astype(int), n - 1)


def _speed_per_window(at_s: np.ndarray, replay: pd.DataFrame, n: int, window_s: float, min_predicted_s: float) -> np.ndarray:
    """Measured over predicted time of the steps in each window (by ``at_s``); a window whose
    steps are predicted at less than ``min_predicted_s`` takes its neighbours' value."""
    idx = _window_of(at_s, window_s, n)
    measured = np.bincount(idx, replay["measured_s"].to_numpy(), n)
    predicted = np.bincount(idx, replay["predicted_s"].to_numpy(), n)
    ok = predicted > min_predicted_s
    speed = np.full(n, np.nan)
    speed[ok] = measured[ok] / predicted[ok]
    return pd.Series(speed).ffill().bfill().fillna(1.0).to_numpy()


def run_speed_series(steps: pd.DataFrame, profile: Path, window_s: float = SPEED_WINDOW_S) -> tuple[np.ndarray, np.ndarray]:
    """How fast the machine ran a real run, window by window: (edges, speed), the measured over
    the predicted time of the run's own steps in each ``window_s`` window, 1.0 being what
    ``profile`` says. A window with less than a fifth of its time in steps takes its
    neighbours' value. This reads the run itself: a diagnostic, never the prediction."""
    st = steps[steps["num_tokens"] > 0]
    replay = step_replay(st, profile)
    n = int(np.ceil(st["end_s"].max() / window_s)) + 1
    mid = ((st["start_s"] + st["end_s"]) / 2).to_numpy()
    return np.arange(n + 1) * window_s, _speed_per_window(mid, replay, n, window_s, 0.2 * window_s)


def reference_speed_series(
    refs: pd.DataFrame, around: pd.DataFrame, profile: Path, edges: np.ndarray, base: float
) -> np.ndarray:
    """How fast the machine ran during a real run, window by window (on ``edges``, the run's
    windows), as metered by the reference steps interleaved with it: their measured over
    predicted time in each window, over the same for the reference steps of the same shapes in
    the calibration bursts beside the run (``around``), times ``base`` (the bursts' own steps'
    speed against ``profile``). Totals, not typical steps, throughout: latency adds steps up,
    stalls included. The same shapes in the same turn on both sides, so the profile only weighs
    them against each other, and the run's own shapes are still predicted by the profile alone.
    A window without a reference step takes its neighbours' value."""
    from calibration.engine.llm import SHAPE_COLUMNS

    window_s = float(edges[1] - edges[0])
    then = step_replay(around.merge(refs[SHAPE_COLUMNS].drop_duplicates(), on=SHAPE_COLUMNS), profile)
    now = step_replay(refs, profile)
    scale = base / (then["measured_s"].sum() / then["predicted_s"].sum())
    return scale * _speed_per_window(now["start_s"].to_numpy(), now, len(edges) - 1, window_s, 0.0)


def simulate_llm_at(workload, s: LLMSettings, profile: Path, folder: Path, edges: np.ndarray, speed: np.ndarray) -> pd.DataFrame:
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


def _compare(load: float, runs: list[pd.DataFrame], sims: list[pd.DataFrame], metrics: tuple[str, ...]) -> list[dict]:
    """Error rows of one load: each percentile of each metric, and throughput. ``sims`` holds
    one simulation per real run (each at the machine speed measured beside its run) or one for
    them all. ``error`` is the median over the runs of (simulated - measured) / measured, each
    run against its own simulation; ``measured`` and ``predicted`` are the medians of the real
    and simulated figures; ``noise_floor`` is the real runs' (max - min) / median."""
    if len(sims) == 1:
        sims = sims * len(runs)

    def row(metric: str, vals: np.ndarray, predicted: np.ndarray) -> dict:
        med = float(np.median(vals))
        return {
            "load": load,
            "metric": metric,
            "measured": med,
            "predicted": float(np.median(predicted)),
            "error": float(np.median((predicted - vals) / vals)) if (vals > 0).all() else float("nan"),
            "noise_floor": float((vals.max() - vals.min()) / med) if med else float("nan"),
        }

    real_p = pd.DataFrame([_percentiles(r, metrics) for r in runs])
    sim_p = pd.DataFrame([_percentiles(r, metrics) for r in sims])
    rows = [row(key, real_p[key].to_numpy(), sim_p[key].to_numpy()) for key in real_p.columns]
    tput = [np.array([_throughput(r) for r in frames]) for frames in (runs, sims)]
    rows.append(row("throughput_req_s", *tput))
    return rows


def _summary(s, dtype: str, profile: Path, capacity: float, replay: pd.DataFrame, what: str) -> dict:
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


def _finish(out: Path, rows: list[dict], summary: dict, cdfs: dict, metrics: tuple[str, ...]) -> dict:
    # Paths relative to the report, so a report moved or committed names no machine's folders.
    summary["profile"] = os.path.relpath(Path(summary["profile"]).resolve(), out.resolve())
    table = pd.DataFrame(rows)
    table.to_csv(out / "errors.csv", index=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _plot_cdfs(cdfs, out / "cdfs.png", metrics)
    _write_markdown(table, summary, out / "report.md")
    return {"table": table, **summary}


def validate_llm(s: LLMSettings, out: Path, profile: Path | None = None, progress: Progress = print) -> dict:
    """Run the whole LLM validation; write the report under ``out``; return its summary."""
    from calibration.engine.llm import EngineConfig, load_replica, run_llm_engine
    from calibration.measure import default_dtype

    out.mkdir(parents=True, exist_ok=True)
    dtype = s.dtype or default_dtype(s.device)
    profile = _profile_for(s.model, s.device, dtype, out, profile, progress)
    cfg = EngineConfig(
        max_num_seqs=s.max_num_seqs, max_num_batched_tokens=s.max_num_batched_tokens, num_kv_blocks=s.num_kv_blocks
    )
    rng = np.random.default_rng(s.seed)
    n_bracket = s.bracket_requests if s.bracket_requests is not None else max(8, s.requests // 4)
    bracketed = s.in_loop and n_bracket > 0
    metering = s.speed_reference and bracketed

    # one model for the whole session, as a server loads it once: every run and burst serves on
    # it (building and warming it up would cost each of them ~3 s on a CPU core)
    replica = load_replica(s.model, cfg, device=s.device, dtype=dtype, seed=s.seed)

    def real(workload, seed, reference=None):
        got = run_llm_engine(s.model, workload, cfg, device=s.device, dtype=dtype, seed=seed, reference=reference, replica=replica)
        return got if reference is not None else (*got, None)

    n_burst = s.capacity_requests or s.requests
    progress(f"capacity: {n_burst} requests at once")
    burst, burst_steps, _ = real(_workload(n_burst, None, rng, s.quick), s.seed)
    capacity = _throughput(burst)
    progress(f"capacity {capacity:.3f} req/s")
    burst_steps.to_csv(out / "burst_steps.csv", index=False)

    # The loads take turns (40 %, 80 %, 40 %, 80 %, ...), and a short calibration burst of other
    # requests runs before every real run and once after the last: the machine's speed drifts
    # over a session (by 10-30 % between minutes on a shared VM, docs/validation.md), so the
    # steps the composition is fitted on are taken across the whole session, and each run has a
    # burst on either side of it to tell how fast the machine was then — never from the run.
    plan = []
    for load in s.loads:
        rate = load * capacity
        folder = out / f"load-{load:.2f}"
        folder.mkdir(exist_ok=True)
        plan.append((load, _workload(s.requests, rate, rng, s.quick), folder, []))
    # The speed meter (with the bursts): for each load, reference steps of the shapes its run is
    # expected to take (the scheduler on the profile's clock), chosen before any run; the bursts
    # run every load's, so that each shape's time beside a run is known.
    run_reference, reference = {}, None
    if metering:
        from calibration.engine.llm import SpeedReference

        for load, workload, *_ in plan:
            shapes = reference_shapes(expected_steps(workload, cfg, profile))
            run_reference[load] = SpeedReference(shapes=shapes, every_s=REFERENCE_EVERY_S)
        union = tuple(dict.fromkeys(b for r in run_reference.values() for b in r.shapes))
        reference = SpeedReference(shapes=union, every_s=REFERENCE_EVERY_S)
    cal_steps, cal_refs = [burst_steps], [None]

    def calibration_burst() -> None:
        _, steps, refs = real(_workload(n_bracket, None, rng, s.quick, staircase=True), s.seed + 1000 + len(cal_steps), reference)
        cal_steps.append(steps)
        cal_refs.append(refs)

    # (load, repeat) in the order they ran; run i sits between bursts i + 1 and i + 2
    order, run_steps, run_refs = [], {}, {}
    for k in range(s.repeats):
        for load, workload, folder, runs in plan:
            if bracketed:
                calibration_burst()
            progress(f"load {load:.0%} ({load * capacity:.3f} req/s): real run {k + 1}/{s.repeats}")
            reqs, steps, refs = real(workload, s.seed + k, run_reference.get(load))
            reqs.to_csv(folder / f"real_requests_{k}.csv", index=False)
            steps.to_csv(folder / f"real_steps_{k}.csv", index=False)
            if refs is not None:
                refs.to_csv(folder / f"reference_steps_{k}.csv", index=False)
                run_refs[load, k] = refs
            runs.append(reqs)
            order.append((load, k))
            run_steps[load, k] = steps
    if bracketed:
        calibration_burst()

    used = profile
    composition = None
    if s.in_loop:
        cal = pd.concat([c.assign(burst=b) for b, c in enumerate(cal_steps)], ignore_index=True)
        cal.to_csv(out / "calibration_steps.csv", index=False)
        if reference is not None:
            refs = pd.concat([r.assign(burst=b) for b, r in enumerate(cal_refs) if r is not None], ignore_index=True)
            refs.to_csv(out / "calibration_reference_steps.csv", index=False)
        what = f"the capacity burst and {len(cal_steps) - 1} calibration bursts of {n_bracket} requests taken beside the runs"
        used, composition = refit_in_loop(profile, cal, out / "profile-in-loop.yaml", what)
        fe = composition["in_loop"]["fit_error"]
        progress(f"step composition refitted on {fe['points']} steps of {what}: held-out median |error| {fe['median_rel']:.1%}")

    # Each run's profile: the session's composition at the speed the bursts on either side of
    # the run measured. With the speed meter, each run is then simulated at that speed times how
    # much slower or faster its reference steps ran, second by second, than the same shapes in
    # those bursts. (How fast the run's own steps went is reported beside, never used.)
    speeds, run_profile, metered = [], {}, {}
    for i, (load, k) in enumerate(order):
        if not bracketed:
            run_profile[load, k] = used
            continue
        folder = out / f"load-{load:.2f}"
        around = machine_speed(pd.concat(cal_steps[i + 1 : i + 3]), used)
        why = f"the machine's speed in the calibration bursts before and after real run {k} at load {load:g}"
        run_profile[load, k] = at_speed(used, around, folder / f"profile-run-{k}.yaml", why)
        row = {"load": load, "repeat": k, "bursts": around, "run": machine_speed(run_steps[load, k], used)}
        if reference is not None:
            edges, own = run_speed_series(run_steps[load, k], used)
            series = reference_speed_series(run_refs[load, k], pd.concat(cal_refs[i + 1 : i + 3]), used, edges, around)
            metered[load, k] = (edges, series)
            pd.DataFrame({"start_s": edges[:-1], "reference": series, "own_steps": own}).to_csv(
                folder / f"speed-run-{k}.csv", index=False
            )
            row["reference"] = float(series.mean())
        speeds.append(row)

    rows, session_rows, grid_rows, given_rows, bursts_rows = [], [], [], [], []
    cdfs, replays, grid_replays = {}, [], []
    for load, workload, folder, runs in plan:
        for k in range(len(runs)):
            steps = run_steps[load, k]
            if (load, k) in metered:
                # each step at the speed the run is simulated at: the metered one of its window
                replay = step_replay(steps, used)
                edges, series = metered[load, k]
                mid = ((replay["start_s"] + replay["end_s"]) / 2).to_numpy()
                replay["predicted_s"] *= series[_window_of(mid, edges[1] - edges[0], len(series))]
                replay["rel_error"] = (replay["predicted_s"] - replay["measured_s"]) / replay["measured_s"]
            else:
                replay = step_replay(steps, run_profile[load, k])
            replays.append(replay.assign(load=load, repeat=k))
            if s.in_loop:
                grid_replays.append(step_replay(steps, profile))
        progress(f"load {load:.0%}: simulating")
        sims, at_bursts = [], []
        for k in range(len(runs) if bracketed else 1):
            sim = simulate_llm(workload, s, run_profile[load, k], folder)
            if reference is not None:
                at_bursts.append(sim)
                sim = simulate_llm_at(workload, s, used, folder, *metered[load, k])
            sim.to_csv(folder / f"sim_requests_{k}.csv", index=False)
            sims.append(sim)
        cdfs[load] = (runs, sims)
        rows += _compare(load, runs, sims, METRICS)
        if reference is not None:
            bursts_rows += _compare(load, runs, at_bursts, METRICS)
        # Diagnostic: each run simulated at the speed its own steps went, second by second.
        given = [simulate_llm_at(workload, s, used, folder, *run_speed_series(run_steps[load, k], used)) for k in range(len(runs))]
        given_rows += _compare(load, runs, given, METRICS)
        if bracketed:
            session_rows += _compare(load, runs, [simulate_llm(workload, s, used, folder)], METRICS)
        if s.in_loop:
            grid_rows += _compare(load, runs, [simulate_llm(workload, s, profile, folder)], METRICS)
    replay = pd.concat(replays, ignore_index=True)
    replay.to_csv(out / "step_replay.csv", index=False)
    summary = _summary(s, dtype, profile, capacity, replay, "steps")
    given_table = pd.DataFrame(given_rows)
    given_table.to_csv(out / "errors_given_run_speed.csv", index=False)
    summary["given_run_speed"] = {"window_s": SPEED_WINDOW_S, "e2e_errors": _e2e_errors(given_table)}
    if bracketed:
        session = pd.DataFrame(session_rows)
        session.to_csv(out / "errors_session_speed.csv", index=False)
        summary["machine_speed"] = {
            "runs": speeds,
            "e2e_errors_at_session_speed": _e2e_errors(session),
        }
        if reference is not None:
            at_bursts = pd.DataFrame(bursts_rows)
            at_bursts.to_csv(out / "errors_bursts_speed.csv", index=False)
            summary["machine_speed"]["reference"] = {
                "shapes": {f"{load:g}": [list(map(list, b)) for b in r.shapes] for load, r in run_reference.items()},
                "every_s": reference.every_s,
                "window_s": SPEED_WINDOW_S,
                "reference_steps": int(sum(len(r) for r in run_refs.values())),
            }
            summary["machine_speed"]["e2e_errors_at_bursts_speed"] = _e2e_errors(at_bursts)
    if s.in_loop:
        # The same runs against the grid profile alone: what the in-loop refit changed.
        summary["in_loop_profile"] = "profile-in-loop.yaml"
        grid_table = pd.DataFrame(grid_rows)
        grid_table.to_csv(out / "errors_grid_profile.csv", index=False)
        gr = pd.concat(grid_replays, ignore_index=True)
        err = gr["rel_error"]
        summary["grid_profile"] = {
            "profile": os.path.relpath(Path(profile).resolve(), out.resolve()),
            "composition": composition,
            "step_replay": {
                "median_abs_rel_error": float(err.abs().median()),
                "bias": float(err.median()),
                "total_time_bias": float(gr["predicted_s"].sum() / gr["measured_s"].sum() - 1),
            },
            "e2e_errors": _e2e_errors(grid_table),
        }
    return _finish(out, rows, summary, cdfs, METRICS)


def _e2e_errors(table: pd.DataFrame) -> dict[str, float]:
    return {f"{r.load:g}/{r.metric}": float(r.error) for r in table.itertuples() if r.metric.startswith("e2e_s")}


@dataclass(frozen=True)
class DiffusionSettings:
    model: str = "sd-tiny"
    device: str = "cpu"
    dtype: str | None = None
    loads: tuple[float, ...] = (0.4, 0.8)
    repeats: int = 3
    requests: int = 40
    capacity_requests: int = 16
    seed: int = 0
    width: int = 256
    height: int = 256
    steps: int = 10
    max_batch_size: int = 4
    max_wait_s: float = 0.5


IMAGE_METRICS = ("e2e_s", "queue_s")


def simulate_diffusion(s: DiffusionSettings, rate: float, profile: Path, seed: int) -> pd.DataFrame:
    """The simulator's run of a Poisson image workload; its arrival times are then served by
    the real loop, so both see the same schedule."""
    from sim.config import parse_scenario
    from sim.run import run_scenario

    scenario = {
        "name": f"validate-{s.model}",
        "seed": seed,
        "replications": 1,
        "warmup_s": 0,
        "num_requests": s.requests,
        "pools": [
            {
                "name": "images",
                "model": s.model,
                "gpu": "l4",  # sets only memory and price here
                "batching": {"policy": "static", "max_batch_size": s.max_batch_size, "max_wait_s": s.max_wait_s, "shapes": "bucket"},
                "cost_model": {"kind": "profile", "path": str(profile.resolve())},
            }
        ],
        "classes": [
            {
                "name": "load",
                "pool": "images",
                "arrival": {"process": "poisson", "rate": rate},
                "image": {"width": s.width, "height": s.height, "steps": s.steps},
            }
        ],
    }
    result = run_scenario(parse_scenario(scenario))
    return result.requests.sort_values("arrival_s").reset_index(drop=True)


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


def validate_diffusion(s: DiffusionSettings, out: Path, profile: Path | None = None, progress: Progress = print) -> dict:
    """The diffusion validation: static batches of a real pipeline against the simulator."""
    from calibration.diffusion_configs import diffusion_config
    from calibration.engine.diffusion import DiffusionEngineConfig, ImageWorkItem, run_diffusion_engine
    from calibration.measure import default_dtype

    out.mkdir(parents=True, exist_ok=True)
    dtype = s.dtype or default_dtype(s.device)
    profile = _profile_for(s.model, s.device, dtype, out, profile, progress)
    cfg = DiffusionEngineConfig(max_batch_size=s.max_batch_size, max_wait_s=s.max_wait_s)
    prompts_per_image = 2 if diffusion_config(s.model).cfg else 1  # negative prompts are encoded too

    def real(arrivals, seed):
        work = [ImageWorkItem(i, float(t), s.width, s.height, s.steps) for i, t in enumerate(arrivals)]
        return run_diffusion_engine(s.model, work, cfg, device=s.device, dtype=dtype, seed=seed)

    progress(f"capacity: {s.capacity_requests} requests at once")
    burst, _ = real(np.zeros(s.capacity_requests), s.seed)
    capacity = _throughput(burst)
    progress(f"capacity {capacity:.3f} req/s")
    rows, cdfs, replays = [], {}, []
    for load in s.loads:
        rate = load * capacity
        folder = out / f"load-{load:.2f}"
        folder.mkdir(exist_ok=True)
        sim = simulate_diffusion(s, rate, profile, s.seed)
        sim.to_csv(folder / "sim_requests.csv", index=False)
        runs = []
        for k in range(s.repeats):
            progress(f"load {load:.0%} ({rate:.3f} req/s): real run {k + 1}/{s.repeats}")
            reqs, batches = real(sim["arrival_s"].to_numpy(), s.seed + k)
            reqs.to_csv(folder / f"real_requests_{k}.csv", index=False)
            batches.to_csv(folder / f"real_batches_{k}.csv", index=False)
            runs.append(reqs)
            replays.append(batch_replay(batches, profile, prompts_per_image).assign(load=load, repeat=k))
        cdfs[load] = (runs, [sim])
        rows += _compare(load, runs, [sim], IMAGE_METRICS)
    replay = pd.concat(replays, ignore_index=True)
    replay.to_csv(out / "batch_replay.csv", index=False)
    summary = _summary(s, dtype, profile, capacity, replay, "batches")
    return _finish(out, rows, summary, cdfs, IMAGE_METRICS)


def _plot_cdfs(cdfs: dict, path: Path, metrics: tuple[str, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(cdfs), len(metrics), figsize=(4.2 * len(metrics), 3.2 * len(cdfs)), squeeze=False)
    for row, (load, (runs, sims)) in zip(axes, cdfs.items()):
        for ax, m in zip(row, metrics):
            for k, r in enumerate(runs):
                v = np.sort(r[m].dropna().to_numpy())
                ax.plot(v, np.linspace(0, 1, len(v)), color="tab:blue", alpha=0.5, label="measured" if k == 0 else None)
            for k, sim in enumerate(sims):
                v = np.sort(sim[m].dropna().to_numpy())
                lw, alpha = (2, 1.0) if len(sims) == 1 else (1.2, 0.7)
                ax.plot(v, np.linspace(0, 1, len(v)), color="tab:orange", lw=lw, alpha=alpha, label="simulated" if k == 0 else None)
            ax.set_title(f"{m.removesuffix('_s').upper()} at {load:.0%} load", fontsize=9)
            ax.set_xlabel("s")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _errors_text(errors: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:+.1%}" for k, v in errors.items())


def _write_markdown(table: pd.DataFrame, summary: dict, path: Path) -> None:
    sr = summary["step_replay"]
    lines = [
        f"# Validation: {summary['model']} on {summary['device']} ({summary['dtype']})",
        "",
        f"Profile: `{summary['profile']}`. Capacity (burst): {summary['capacity_req_s']:.3f} req/s.",
        f"Replay of {sr['steps']} real {sr['what']}: median |error| {sr['median_abs_rel_error']:.1%}, "
        f"p90 {sr['p90_abs_rel_error']:.1%}, median signed {sr['bias']:+.1%}; all steps' predicted total time "
        f"{sr['total_time_bias']:+.1%} off the measured.",
        "",
        "`measured`: the median over the real runs; `predicted`: the median over the simulations; `error`: the median "
        "over the runs of (simulated - measured) / measured, each run against its own simulation; `noise floor`: the "
        "real runs' (max - min) / median.",
        "",
        "| load | metric | measured | predicted | error | noise floor |",
        "|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(f"| {r.load:.0%} | {r.metric} | {r.measured:.4g} | {r.predicted:.4g} | {r.error:+.1%} | {r.noise_floor:.1%} |")
    grid = summary.get("grid_profile")
    if grid is not None:
        c = grid["composition"]
        lines += [
            "",
            f"The step composition (alpha, h0, h1) was refitted on the real steps of the capacity burst and the calibration bursts "
            f"({[round(x, 6) for x in c['in_loop']['coef']]}) against the grid's {[round(x, 6) for x in c['grid']['coef']]}. "
            f"With the grid profile alone (`{grid['profile']}`): replay median |error| "
            f"{grid['step_replay']['median_abs_rel_error']:.1%}, median signed {grid['step_replay']['bias']:+.1%}, total time "
            f"{grid['step_replay']['total_time_bias']:+.1%}; E2E errors "
            + _errors_text(grid["e2e_errors"])
            + ".",
        ]
    speed = summary.get("machine_speed")
    if speed is not None:
        bursts = [r["bursts"] for r in speed["runs"]]
        own = [r["run"] for r in speed["runs"]]
        ref = speed.get("reference")
        if ref is None:
            lines += [
                "",
                f"Each run was simulated at the machine's speed measured in the calibration bursts on either side of it: "
                f"{min(bursts):.3f}-{max(bursts):.3f} times the session's composition (the runs' own steps, not used: "
                f"{min(own):.3f}-{max(own):.3f}; each run in summary.json), and `predicted` is the median of those "
                "simulations.",
            ]
        else:
            metered = [r["reference"] for r in speed["runs"]]
            lines += [
                "",
                f"Each run was simulated at the machine's speed metered during it, {ref['window_s']:g} s at a time: "
                f"{ref['reference_steps']} reference steps interleaved with the runs (every {ref['every_s']:g} s of the "
                "run's clock, which they did not move), of shapes fixed before the runs (the steps each load was expected "
                "to take; in summary.json), their speed against the profile per window over the same shapes' in the "
                "calibration bursts beside the run, times the bursts' own speed (`load-*/speed-run-*.csv`): on average "
                f"{min(metered):.3f}-{max(metered):.3f} times the session's composition, against "
                f"{min(bursts):.3f}-{max(bursts):.3f} in the bursts beside the runs and {min(own):.3f}-{max(own):.3f} "
                "in the runs' own steps (not used). `predicted` is the median of those simulations. At the bursts' "
                "speed alone (`errors_bursts_speed.csv`), E2E errors "
                + _errors_text(speed["e2e_errors_at_bursts_speed"])
                + ".",
            ]
        lines[-1] += " At the session's speed for every run, E2E errors " + _errors_text(speed["e2e_errors_at_session_speed"]) + "."
    given = summary.get("given_run_speed")
    if given is not None:
        lines += [
            "",
            f"Diagnostic, not a prediction: each run simulated at the speed its own steps went, "
            f"{given['window_s']:g} s at a time (`errors_given_run_speed.csv`), what remains when the machine's "
            "speed is known: E2E errors " + _errors_text(given["e2e_errors"]) + ".",
        ]
    lines += ["", "![measured vs simulated CDFs](cdfs.png)", ""]
    path.write_text("\n".join(lines))

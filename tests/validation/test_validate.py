"""servesim validate end to end on the CPU: the real loop runs, metered by reference steps, the
simulator replays the same workload, and the report holds every figure the method promises.
Issue 5's target is asserted on it: simulated E2E p50 and p90 within 15 % of the real runs at
about 40 % and 80 % of measured capacity. Given the runs' own speed second by second the
simulation must match them far closer (the model's own error)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from calibration.validate import QUICK_REQUESTS, DiffusionSettings, LLMSettings, validate_diffusion, validate_llm  # noqa: E402
from sim.cli import main  # noqa: E402

PROFILES = Path(__file__).resolve().parents[2] / "profiles" / "cpu"


def _check_table(table: pd.DataFrame, metrics: tuple[str, ...], loads: tuple[float, ...]) -> None:
    expected = {f"{m}_p{p}" for m in metrics for p in (50, 90, 99)} | {"throughput_req_s"}
    for load in loads:
        got = table[table["load"] == load]
        assert set(got["metric"]) == expected
        assert (got["measured"] > 0).all() and (got["predicted"] > 0).all()
        assert (got["noise_floor"] >= 0).all()


def _check_errors(table: pd.DataFrame, out: Path, metric: str, loads: tuple[float, ...], repeats: int, paired: bool) -> None:
    """Each error, recomputed from the CSVs the report wrote: the median over the real runs of
    (simulated - measured) / measured, each run against its own simulation (``paired``) or all
    against the one simulation."""
    from calibration.validate import _percentiles

    for load in loads:
        folder = out / f"load-{load:.2f}"
        real = [_percentiles(pd.read_csv(folder / f"real_requests_{k}.csv"), (metric,)) for k in range(repeats)]
        names = [f"sim_requests_{k}.csv" for k in range(repeats)] if paired else ["sim_requests.csv"] * repeats
        sims = [_percentiles(pd.read_csv(folder / name), (metric,)) for name in names]
        got = table[table["load"] == load].set_index("metric")
        for key in real[0]:
            want = np.median([(s[key] - r[key]) / r[key] for r, s in zip(real, sims)])
            assert got.loc[key, "error"] == pytest.approx(want)
            assert got.loc[key, "measured"] == pytest.approx(np.median([r[key] for r in real]))


@pytest.fixture(scope="module")
def llm_validation(tmp_path_factory):
    """``servesim validate --quick``'s settings (llama-tiny, its committed grid profile with the
    step composition refitted on this machine's capacity burst and calibration bursts, Poisson
    arrivals with Azure conversation lengths, about 40 % and 80 % of measured capacity, three
    real runs of 40 requests each, metered by reference steps): about 3.5 min here.
    ``SERVESIM_VALIDATION_REQUESTS`` sets the requests per run."""
    requests = int(os.environ.get("SERVESIM_VALIDATION_REQUESTS", QUICK_REQUESTS))
    s = LLMSettings(requests=requests, loads=(0.4, 0.8), repeats=3)
    out = tmp_path_factory.mktemp("llm")
    result = validate_llm(s, out, PROFILES / "llama-tiny-float32-tp1.yaml", progress=lambda msg: None)
    return s, out, result


def test_llm_validation_report(llm_validation):
    s, out, result = llm_validation
    _check_table(result["table"], ("ttft_s", "tpot_s", "e2e_s"), s.loads)
    _check_errors(result["table"], out, "e2e_s", s.loads, s.repeats, paired=True)
    assert result["capacity_req_s"] > 0
    replay = pd.read_csv(out / "step_replay.csv")
    assert len(replay) == result["step_replay"]["steps"] > 0
    assert (replay["predicted_s"] > 0).all() and (replay["num_seqs"] <= s.max_num_seqs).all()
    load = out / f"load-{s.loads[-1]:.2f}"
    real = [pd.read_csv(load / f"real_requests_{k}.csv") for k in range(s.repeats)]
    # one simulation per real run, each of the very workload the real loop served: same
    # arrivals and lengths
    sims = [pd.read_csv(load / f"sim_requests_{k}.csv") for k in range(s.repeats)]
    for r, sim in zip(real, sims):
        assert np.allclose(r["arrival_s"], sim["arrival_s"]) and (r["output_tokens"] == sim["output_tokens"]).all()
    summary = json.loads((out / "summary.json").read_text())
    assert not Path(summary["profile"]).is_absolute()
    assert (out / "cdfs.png").stat().st_size > 10_000 and f"| {s.loads[-1]:.0%} | e2e_s_p50 |" in (out / "report.md").read_text()


def test_in_loop_composition_adds_up_to_the_calibration_bursts_time(llm_validation):
    """The refitted step composition predicts the calibration steps (the capacity burst and one
    burst before each real run, none of the runs' own) with their measured total time, and the
    grid profile's own figures are reported beside the in-loop ones."""
    from calibration.validate import step_replay

    s, out, result = llm_validation
    cal = pd.read_csv(out / "calibration_steps.csv")
    burst = pd.read_csv(out / "burst_steps.csv")
    assert len(cal) > len(burst)  # the calibration bursts are there beside the capacity burst
    replay = step_replay(cal[cal["num_tokens"] > 0], out / "profile-in-loop.yaml")
    assert replay["predicted_s"].sum() == pytest.approx(replay["measured_s"].sum(), rel=1e-6)
    grid = result["grid_profile"]
    assert set(grid["e2e_errors"]) == {f"{load:g}/e2e_s_p{p}" for load in s.loads for p in (50, 90, 99)}
    assert (out / "errors_grid_profile.csv").is_file()


def test_each_run_is_simulated_at_the_speed_of_the_bursts_beside_it(llm_validation):
    """Run i ran between calibration bursts i + 1 and i + 2 (burst 0 is the capacity burst);
    its profile is the session's composition scaled by how slow those two bursts ran against
    it, and the predicted percentiles are the median over the runs' simulations."""
    import yaml

    from calibration.validate import _percentiles, machine_speed

    s, out, result = llm_validation
    cal = pd.read_csv(out / "calibration_steps.csv")
    assert sorted(cal["burst"].unique()) == list(range(s.repeats * len(s.loads) + 2))
    # the bursts' output lengths are a staircase: every batch size from full down to one
    full = min(s.max_num_seqs, max(8, s.requests // 4))
    assert set(range(1, full + 1)) <= set(cal.loc[cal["burst"] > 0, "num_seqs"])
    session = out / "profile-in-loop.yaml"
    base = yaml.safe_load(session.read_text())["ops"]["step"]["coef"]
    speeds = result["machine_speed"]["runs"]
    assert [(r["load"], r["repeat"]) for r in speeds] == [(load, k) for k in range(s.repeats) for load in s.loads]
    for i, r in enumerate(speeds):
        around = cal[cal["burst"].isin([i + 1, i + 2])]
        assert r["bursts"] == pytest.approx(machine_speed(around, session), rel=1e-9)
        profile = out / f"load-{r['load']:.2f}" / f"profile-run-{r['repeat']}.yaml"
        step = yaml.safe_load(profile.read_text())["ops"]["step"]
        assert step["coef"] == pytest.approx([c * r["bursts"] for c in base])
    load = out / f"load-{s.loads[0]:.2f}"
    sims = [pd.read_csv(load / f"sim_requests_{k}.csv") for k in range(s.repeats)]
    table = result["table"][result["table"]["load"] == s.loads[0]].set_index("metric")
    p50 = np.median([_percentiles(sim)["e2e_s_p50"] for sim in sims])
    assert table.loc["e2e_s_p50", "predicted"] == pytest.approx(p50)
    assert len(result["machine_speed"]["e2e_errors_at_session_speed"]) == 3 * len(s.loads)


def test_llm_e2e_p50_and_p90_within_15_percent(llm_validation):
    """Issue 5's CPU target: simulated E2E p50 and p90 within 15 % of the real runs at about 40 %
    and 80 % of measured capacity, the error being the median over three runs of each run
    against its own simulation, each run simulated from the profile at the machine's speed
    metered during it by reference steps (docs/validation.md: all ten runs at this size within
    11.6 %, eight within 9.1 %; in this shared 2-core VM's worst minutes, steps
    stalled 10-20 times their length, an earlier meter missed)."""
    s, out, result = llm_validation
    table = result["table"]
    e2e = table[table["metric"].isin(["e2e_s_p50", "e2e_s_p90"])]
    print("\n" + e2e.to_string(index=False))
    assert len(e2e) == 2 * len(s.loads)
    assert (e2e["error"].abs() <= 0.15).all(), e2e.to_string(index=False)


def test_diffusion_validation_report(tmp_path):
    s = DiffusionSettings(requests=6, capacity_requests=4, loads=(0.5,), repeats=1, width=128, height=128, steps=3, max_wait_s=0.2)
    out = tmp_path / "sd"
    result = validate_diffusion(s, out, PROFILES / "sd-tiny-float32-tp1.yaml", progress=lambda msg: None)
    _check_table(result["table"], ("e2e_s", "queue_s"), s.loads)
    _check_errors(result["table"], out, "e2e_s", s.loads, s.repeats, paired=False)
    replay = pd.read_csv(out / "batch_replay.csv")
    assert len(replay) >= 1 and (replay["images"] <= s.max_batch_size).all()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["validate", "--loads", "0.4,1.5"], "--loads"),
        (["validate", "--loads", "half"], "--loads"),
        (["validate", "--model", "gpt-5"], "unknown model 'gpt-5'"),
    ],
)
def test_bad_validate_input_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--profile", str(PROFILES / "llama-tiny-float32-tp1.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def _tiny_workload():
    from calibration.engine.llm import WorkItem

    return [WorkItem(i, 0.7 * i, 40 + 8 * i, 6 + i) for i in range(8)]


def test_a_time_warp_at_one_speed_is_the_profile_at_that_speed(tmp_path):
    """At a constant speed the warped simulation is the plain one with every step that much
    slower; where the speed changes, a request served wholly in the slow part takes that
    factor longer."""
    from calibration.validate import at_speed, simulate_llm, simulate_llm_at

    s = LLMSettings(max_num_seqs=4, num_kv_blocks=128)
    profile = PROFILES / "llama-tiny-float32-tp1.yaml"
    work = _tiny_workload()
    plain = simulate_llm(work, s, at_speed(profile, 1.3, tmp_path / "p.yaml", "test"), tmp_path)
    warped = simulate_llm_at(work, s, profile, tmp_path, np.array([0.0, 1.0]), np.array([1.3]))
    for col in ("e2e_s", "ttft_s", "tpot_s", "queue_s"):
        assert np.allclose(warped[col], plain[col], rtol=1e-9, atol=1e-12), col
    # Speed 1 until t = 100 s, then 2: a request alone long after the switch takes twice as
    # long, one served before it as long as at speed 1.
    two = [type(work[0])(0, 0.0, 64, 10), type(work[0])(1, 150.0, 64, 10)]
    base = simulate_llm(two, s, profile, tmp_path)
    slow = simulate_llm_at(two, s, profile, tmp_path, np.array([0.0, 100.0, 101.0]), np.array([1.0, 2.0]))
    assert slow["e2e_s"].iloc[0] == pytest.approx(base["e2e_s"].iloc[0], rel=1e-9)
    assert slow["e2e_s"].iloc[1] == pytest.approx(2 * base["e2e_s"].iloc[1], rel=1e-9)
    assert slow["arrival_s"].tolist() == [0.0, 150.0]


def test_given_the_runs_own_speed_the_simulation_is_reported_as_a_diagnostic(llm_validation):
    """The diagnostic that separates the model from the machine: each run re-simulated at the
    speed its own steps went, second by second. Reported beside the prediction, never in it."""
    s, out, result = llm_validation
    given = pd.read_csv(out / "errors_given_run_speed.csv")
    _check_table(given, ("ttft_s", "tpot_s", "e2e_s"), s.loads)
    e2e = given[given["metric"].isin(["e2e_s_p50", "e2e_s_p90"])]
    print("\n" + e2e.to_string(index=False))
    assert set(result["given_run_speed"]["e2e_errors"]) == {f"{load:g}/e2e_s_p{p}" for load in s.loads for p in (50, 90, 99)}
    assert "Diagnostic, not a prediction" in (out / "report.md").read_text()
    # Given the machine's speed, what is left is the model's own dynamics (scheduling, batching,
    # step composition): within 2.0 % in every run at this size in docs/validation.md. A simulator that scheduled,
    # batched or chunked differently from the engine would be off by far more.
    assert (e2e["error"].abs() <= 0.08).all(), e2e.to_string(index=False)


def test_the_reference_speed_is_the_runs_reference_steps_against_the_bursts():
    """Two shapes that ran at 1.2 times the profile in the bursts; in the run's first second at
    1.32 times, in its third at 1.68 times, none in its second: the series is 1.1 and 1.4 (the
    gap from a neighbour) times the bursts' own speed. A shape the run did not meter is left out
    of the bursts' side."""
    from calibration.engine.llm import STEP_COLUMNS
    from calibration.validate import reference_speed_series, step_replay

    profile = PROFILES / "llama-tiny-float32-tp1.yaml"

    def frame(rows):
        """Steps of the given shapes, starting when given, that ran ``factor`` times the profile."""
        f = pd.DataFrame([{c: 0 for c in STEP_COLUMNS} | shape | {"start_s": t} for shape, t, _ in rows], columns=STEP_COLUMNS)
        predicted = step_replay(f.assign(end_s=f["start_s"] + 1), profile)["predicted_s"].to_numpy()
        f["end_s"] = f["start_s"] + np.array([factor for *_, factor in rows]) * predicted
        return f

    one = {"num_seqs": 1, "num_tokens": 1, "num_decode": 1, "decode_ctx_sum": 64}
    four = {"num_seqs": 4, "num_tokens": 4, "num_decode": 4, "decode_ctx_sum": 256}
    eight = {"num_seqs": 8, "num_tokens": 8, "num_decode": 8, "decode_ctx_sum": 512}
    around = frame([(one, t, 1.2) for t in (0, 1, 2)] + [(four, t, 1.2) for t in (0.5, 1.5)] + [(eight, 3.0, 5.0)])
    refs = frame([(one, 0.1, 1.32), (four, 0.6, 1.32), (one, 2.2, 1.68), (four, 2.7, 1.68)])
    series = reference_speed_series(refs, around, profile, np.arange(4.0), base=0.9)
    assert series == pytest.approx([0.99, 0.99, 1.26])


def test_reference_shapes_stand_for_where_a_run_spends_its_time():
    """The meter's shapes are the steps a run of the workload is expected to take (the engine's
    scheduler on the profile's clock), picked at equal shares of their predicted time: a light
    load's are mostly small decodes, a heavy load's larger batches."""
    from calibration.engine.llm import EngineConfig, WorkItem
    from calibration.validate import expected_steps, reference_shapes

    profile = PROFILES / "llama-tiny-float32-tp1.yaml"
    cfg = EngineConfig(max_num_seqs=16, max_num_batched_tokens=512, num_kv_blocks=512)
    rng = np.random.default_rng(3)

    def shapes(rate):
        arrivals = np.cumsum(rng.exponential(1 / rate, 40))
        work = [WorkItem(i, float(t), int(rng.integers(16, 128)), int(rng.integers(8, 48))) for i, t in enumerate(arrivals)]
        steps = expected_steps(work, cfg, profile)
        assert sum(b.num_tokens for b, _ in steps) == sum(w.prompt_tokens + w.output_tokens - 1 for w in work)
        return reference_shapes(steps, m=8)

    light, heavy = shapes(0.5), shapes(8.0)
    assert len(light) == len(heavy) == 8 and all(light) and all(heavy)
    for batch in light + heavy:
        assert all(n >= 1 and c >= 0 for n, c in batch) and len(batch) <= cfg.max_num_seqs
    assert np.mean([len(b) for b in light]) < np.mean([len(b) for b in heavy])


def test_each_run_is_simulated_at_the_speed_its_reference_steps_metered(llm_validation, tmp_path):
    """The main prediction: each run simulated on the speed curve its interleaved reference
    steps metered (written beside it), scaled by how the calibration bursts' steps ran against
    their reference steps; the errors at the bursts' speed alone are reported beside."""
    from calibration.validate import reference_speed_series, run_speed_series, simulate_llm_at, step_replay

    s, out, result = llm_validation
    ms = result["machine_speed"]
    assert ms["reference"]["reference_steps"] > 0 and len(ms["e2e_errors_at_bursts_speed"]) == 3 * len(s.loads)
    assert (out / "errors_bursts_speed.csv").is_file() and "reference steps interleaved" in (out / "report.md").read_text()
    session = out / "profile-in-loop.yaml"
    cal_refs = pd.read_csv(out / "calibration_reference_steps.csv")
    load, k = ms["runs"][1]["load"], ms["runs"][1]["repeat"]  # the second run: bursts 2 and 3 beside it
    folder = out / f"load-{load:.2f}"
    refs = pd.read_csv(folder / f"reference_steps_{k}.csv")
    # the run's meter is made of its load's shapes, and the bursts ran every load's
    shapes = ms["reference"]["shapes"][f"{load:g}"]
    assert len(refs) > 0 and refs["num_seqs"].isin([len(b) for b in shapes]).all()
    assert cal_refs.groupby("burst").size().min() > 0
    edges, _ = run_speed_series(pd.read_csv(folder / f"real_steps_{k}.csv"), session)
    around = cal_refs[cal_refs["burst"].isin([2, 3])]
    series = reference_speed_series(refs, around, session, edges, ms["runs"][1]["bursts"])
    assert pd.read_csv(folder / f"speed-run-{k}.csv")["reference"].to_numpy() == pytest.approx(series)
    from calibration.engine.llm import WorkItem

    real = pd.read_csv(folder / f"real_requests_{k}.csv")
    work = [WorkItem(r.request_id, r.arrival_s, r.prompt_tokens, r.output_tokens) for r in real.itertuples()]
    again = simulate_llm_at(work, s, session, tmp_path, edges, series)
    sim = pd.read_csv(folder / f"sim_requests_{k}.csv")
    assert np.allclose(again["e2e_s"], sim["e2e_s"], rtol=1e-9, equal_nan=True)
    # and the step replay predicts each of its steps at that speed
    replay = pd.read_csv(out / "step_replay.csv")
    mine = replay[(replay["load"] == load) & (replay["repeat"] == k)]
    plain = step_replay(pd.read_csv(folder / f"real_steps_{k}.csv"), session)
    window = (((plain["start_s"] + plain["end_s"]) / 2) // (edges[1] - edges[0])).astype(int).clip(upper=len(series) - 1)
    assert mine["predicted_s"].to_numpy() == pytest.approx(plain["predicted_s"].to_numpy() * series[window.to_numpy()])


@pytest.mark.parametrize("flags, metered, in_loop", [([], True, True), (["--no-speed-reference"], False, True), (["--grid-composition"], True, False)])
def test_the_cli_flags_reach_the_validation_settings(flags, metered, in_loop, monkeypatch, tmp_path):
    import calibration.validate as validate

    seen = {}

    def stop(settings, *args, **kwargs):
        seen["settings"] = settings
        raise ValueError("stopped before running")

    monkeypatch.setattr(validate, "validate_llm", stop)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--quick", *flags, "--profile", str(PROFILES / "llama-tiny-float32-tp1.yaml")]) == 2
    assert (seen["settings"].speed_reference, seen["settings"].in_loop) == (metered, in_loop)

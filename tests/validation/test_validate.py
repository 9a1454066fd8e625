"""servesim validate end to end on the CPU, checked for what a CPU can prove: the pipeline runs,
the report holds every figure the method promises (every run's error, the median, the worst,
the noise floor), each figure is recomputed from the files it came from, and the prediction is
a function of the calibration alone (calibrate -> freeze -> predict). Accuracy on this shared
2-core machine is a report (docs/explanation/validation.md), never an assertion here: its speed drifts by
10-30 % within a minute."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from calibration.validate import DiffusionSettings, LLMSettings, validate_diffusion, validate_llm  # noqa: E402
from sim.cli import main  # noqa: E402

PROFILES = Path(__file__).resolve().parents[2] / "profiles" / "cpu"
PERCENTILES = (50, 90, 99)


def _check_table(
    table: pd.DataFrame, per_run: pd.DataFrame, metrics: tuple[str, ...], loads: tuple[float, ...], repeats: int
) -> None:
    """Every figure at every load, and each summary row is its runs' rows: ``error`` their
    median, ``worst`` the one furthest off, signed."""
    expected = {f"{m}_p{p}" for m in metrics for p in PERCENTILES} | {"throughput_req_s"}
    for load in loads:
        got = table[table["load"] == load]
        assert set(got["metric"]) == expected
        assert (got["measured"] >= 0).all() and (got["predicted"] >= 0).all()  # a queue wait may be 0
        busy = got[~got["metric"].str.startswith("queue")]
        assert (busy["measured"] > 0).all() and (busy["predicted"] > 0).all()
        assert (got["noise_floor"] >= 0).all()
        for r in got.itertuples():
            runs = per_run[(per_run["load"] == load) & (per_run["metric"] == r.metric)]
            assert sorted(runs["run"]) == list(range(repeats))
            errors = runs["error"].to_numpy()
            assert r.error == pytest.approx(np.median(errors))
            assert r.worst == pytest.approx(errors[np.argmax(np.abs(errors))])
            assert r.measured == pytest.approx(np.median(runs["measured"]))


def _check_errors(per_run: pd.DataFrame, out: Path, metric: str, loads: tuple[float, ...], repeats: int) -> None:
    """Each run's error, recomputed from the CSVs the report wrote: (predicted - measured) /
    measured against the one prediction of its load."""
    from calibration.validate import percentiles

    for load in loads:
        folder = out / f"load-{load:.2f}"
        predicted = percentiles(pd.read_csv(folder / "predicted_requests.csv"), (metric,))
        for k in range(repeats):
            real = percentiles(pd.read_csv(folder / f"real_requests_{k}.csv"), (metric,))
            rows = per_run[(per_run["load"] == load) & (per_run["run"] == k)].set_index("metric")
            for key in real:
                assert rows.loc[key, "error"] == pytest.approx((predicted[key] - real[key]) / real[key])


@pytest.fixture(scope="module")
def llm_validation(tmp_path_factory):
    """``servesim validate --quick``'s method at CI size (llama-tiny, its committed grid profile
    with the step composition refitted on this machine's calibration bursts, Poisson arrivals
    with Azure conversation lengths at about 40 % and 80 % of measured capacity, two scored runs
    of 12 requests each): under a minute here."""
    s = LLMSettings(requests=12, loads=(0.4, 0.8), repeats=2, seed=7)
    out = tmp_path_factory.mktemp("llm")
    result = validate_llm(s, out, PROFILES / "llama-tiny-float32-tp1.yaml", progress=lambda msg: None)
    return s, out, result


def test_llm_validation_report(llm_validation):
    s, out, result = llm_validation
    _check_table(result["table"], result["per_run"], ("ttft_s", "tpot_s", "e2e_s"), s.loads, s.repeats)
    per_run = pd.read_csv(out / "errors_per_run.csv")
    for metric in ("ttft_s", "tpot_s", "e2e_s"):
        _check_errors(per_run, out, metric, s.loads, s.repeats)
    assert result["capacity_req_s"] > 0
    for family in ("ttft_s", "tpot_s", "e2e_s"):
        h = result["headline"][family]
        rows = result["table"][result["table"]["metric"].str.startswith(family)]
        assert h["max_abs_run_error"] == pytest.approx(rows["worst"].abs().max())
        assert h["max_abs_run_error"] >= h["max_abs_median_error"]
    replay = pd.read_csv(out / "step_replay.csv")
    assert len(replay) == result["step_replay"]["steps"] > 0
    assert (replay["predicted_s"] > 0).all() and (replay["num_seqs"] <= s.max_num_seqs).all()
    load = out / f"load-{s.loads[-1]:.2f}"
    predicted = pd.read_csv(load / "predicted_requests.csv")
    for k in range(s.repeats):
        # every scored run served the very workload that was predicted: same arrivals and lengths
        r = pd.read_csv(load / f"real_requests_{k}.csv")
        assert (
            np.allclose(r["arrival_s"], predicted["arrival_s"])
            and (r["output_tokens"] == predicted["output_tokens"]).all()
        )
    summary = json.loads((out / "summary.json").read_text())
    assert not Path(summary["profile"]).is_absolute()
    report = (out / "report.md").read_text()
    assert (out / "cdfs.png").stat().st_size > 10_000 and f"| {s.loads[-1]:.0%} load | tpot_s_p50 |" in report
    assert "Calibrate, freeze, predict" in report and "worst single run" in report
    assert "## Diagnostics (they read the scored runs: never the prediction)" in report


def test_the_prediction_is_a_function_of_the_calibration_alone(llm_validation, tmp_path):
    """Calibrate -> freeze -> predict: the frozen profile is the grid profile refitted on the
    calibration steps alone (the capacity burst and the staircase burst, none of a scored
    run's), its hash is the one recorded, the predictions are that profile's simulation of each
    load's workload, and they were written before the first scored run."""
    from calibration.engine.llm import WorkItem
    from calibration.validate import refit_in_loop, simulate_llm

    s, out, result = llm_validation
    frozen = out / "frozen-profile.yaml"
    assert result["protocol"]["frozen_profile_sha256"] == hashlib.sha256(frozen.read_bytes()).hexdigest()
    cal = pd.read_csv(out / "calibration_steps.csv")
    assert sorted(cal["burst"].unique()) == [0, 1]
    # the staircase burst runs every batch size from full down to one
    assert set(range(1, min(s.max_num_seqs, 8) + 1)) <= set(cal.loc[cal["burst"] == 1, "num_seqs"])
    again, _ = refit_in_loop(PROFILES / "llama-tiny-float32-tp1.yaml", cal, tmp_path / "again.yaml", "test")
    import yaml

    assert (
        yaml.safe_load(again.read_text())["ops"]["step"]["coef"]
        == yaml.safe_load(frozen.read_text())["ops"]["step"]["coef"]
    )
    scored = [out / f"load-{load:.2f}" / f"real_requests_{k}.csv" for load in s.loads for k in range(s.repeats)]
    first_scored = min(p.stat().st_mtime_ns for p in scored)
    for load in s.loads:
        folder = out / f"load-{load:.2f}"
        assert (folder / "predicted_requests.csv").stat().st_mtime_ns < first_scored
        real = pd.read_csv(folder / "real_requests_0.csv")
        work = [WorkItem(r.request_id, r.arrival_s, r.prompt_tokens, r.output_tokens) for r in real.itertuples()]
        sim = simulate_llm(work, s, frozen, tmp_path)
        assert np.allclose(
            sim["e2e_s"], pd.read_csv(folder / "predicted_requests.csv")["e2e_s"], rtol=1e-12, equal_nan=True
        )


def test_the_diagnostics_are_reported_beside_never_in_the_prediction(llm_validation):
    """How fast each run's own steps went, and each run re-simulated at that speed second by
    second: reported with their own tables, labelled, never in ``errors.csv``."""
    from calibration.validate import machine_speed

    s, out, result = llm_validation
    diag = result["diagnostics"]
    assert [(r["load"], r["repeat"]) for r in diag["run_speed"]] == [
        (load, k) for load in s.loads for k in range(s.repeats)
    ]
    for r in diag["run_speed"]:
        steps = pd.read_csv(out / f"load-{r['load']:.2f}" / f"real_steps_{r['repeat']}.csv")
        assert r["speed"] == pytest.approx(machine_speed(steps, out / "frozen-profile.yaml"))
    given = pd.read_csv(out / "errors_given_run_speed.csv")
    assert set(given["metric"]) == set(result["table"]["metric"])
    assert set(diag["given_run_speed"]["headline"]) == {"ttft_s", "tpot_s", "e2e_s", "throughput_req_s"}
    assert (out / "errors_grid_profile.csv").is_file() and set(result["grid_profile"]["headline"]) >= {"e2e_s"}
    assert not any((out / f"load-{load:.2f}" / "warped").exists() for load in s.loads)


def test_diffusion_validation_report(tmp_path):
    """Every load at every max_wait_s, on a mix of two shapes, the cases taking turns; each
    run's error recomputed from the files; batches hold one shape and respect the knobs."""
    s = DiffusionSettings(
        requests=6, capacity_requests=4, loads=(0.7,), max_waits=(0.0, 0.2), repeats=2,
        shapes=((128, 128), (64, 128)), steps=3,
    )  # fmt: skip
    out = tmp_path / "sd"
    result = validate_diffusion(s, out, PROFILES / "sd-tiny-float32-tp1.yaml", progress=lambda msg: None)
    table, per_run = result["table"], result["per_run"]
    for wait in s.max_waits:
        cases = table[table["max_wait_s"] == wait]
        _check_table(cases, per_run[per_run["max_wait_s"] == wait], ("e2e_s", "queue_s"), s.loads, s.repeats)
    from calibration.validate import percentiles

    folders = [out / f"load-{load:.2f}-wait-{wait:g}" for wait in s.max_waits for load in s.loads]
    for folder in folders:
        predicted = pd.read_csv(folder / "predicted_requests.csv")
        assert len(predicted) == s.requests and set(zip(predicted["width"], predicted["height"])) <= set(s.shapes)
        for k in range(s.repeats):
            real = pd.read_csv(folder / f"real_requests_{k}.csv")
            assert (
                np.allclose(real["arrival_s"], predicted["arrival_s"]) and (real["width"] == predicted["width"]).all()
            )
            load, wait = float(folder.name.split("-")[1]), float(folder.name.split("-")[3])
            row = per_run[
                (per_run["load"] == load) & (per_run["max_wait_s"] == wait) & (per_run["run"] == k)
            ].set_index("metric")
            want, got = percentiles(predicted, ("e2e_s",)), percentiles(real, ("e2e_s",))
            assert row.loc["e2e_s_p50", "error"] == pytest.approx(
                (want["e2e_s_p50"] - got["e2e_s_p50"]) / got["e2e_s_p50"]
            )
    replay = pd.read_csv(out / "batch_replay.csv")
    assert len(replay) >= 1 and (replay["images"] <= s.max_batch_size).all()
    # the cases took turns: every case's first run came before any case's second
    firsts = [(f / "real_requests_0.csv").stat().st_mtime_ns for f in folders]
    seconds = [(f / "real_requests_1.csv").stat().st_mtime_ns for f in folders]
    assert max(firsts) < min(seconds)
    assert "max_wait_s 0.2" in (out / "report.md").read_text()


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
    import yaml

    from calibration.validate import simulate_llm, simulate_llm_at

    s = LLMSettings(max_num_seqs=4, num_kv_blocks=128)
    profile = PROFILES / "llama-tiny-float32-tp1.yaml"
    work = _tiny_workload()
    slower = yaml.safe_load(profile.read_text())
    slower["ops"]["step"]["coef"] = [1.3 * c for c in slower["ops"]["step"]["coef"]]
    slower["source"].pop("raw", None)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(slower, sort_keys=False))
    plain = simulate_llm(work, s, tmp_path / "p.yaml", tmp_path)
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


@pytest.mark.parametrize(
    "flags, in_loop, seed", [([], True, 0), (["--grid-composition"], False, 0), (["--seed", "11"], True, 11)]
)
def test_the_cli_flags_reach_the_validation_settings(flags, in_loop, seed, monkeypatch, tmp_path):
    import calibration.validate as validate

    seen = {}

    def stop(settings, *args, **kwargs):
        seen["settings"] = settings
        raise ValueError("stopped before running")

    monkeypatch.setattr(validate, "validate_llm", stop)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--quick", *flags, "--profile", str(PROFILES / "llama-tiny-float32-tp1.yaml")]) == 2
    assert (seen["settings"].in_loop, seen["settings"].seed) == (in_loop, seed)

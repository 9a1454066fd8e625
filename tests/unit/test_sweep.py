"""Sweeps (sim/sweep.py): grid parsing, the local and Ray backends, and resuming after a kill.

Every run uses the quickstart scenario shortened to 20 simulated seconds and one replication
(a tenth of a second per point); the kill test lengthens its points to about a second each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from argparse import Namespace
from pathlib import Path

import pytest

from sim.errors import ConfigError
from sim.sweep import (
    RESULTS_FILE,
    SWEEP_FILE,
    _locked,
    expand_grid,
    parse_grid,
    point_id,
    read_results,
    run_sweep,
)

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "scenarios" / "quickstart.yaml"
SHORT = ["duration_s=20", "replications=1", "warmup_s=5"]


def _lines(out: Path) -> list[bytes]:
    return (out / RESULTS_FILE).read_bytes().splitlines(keepends=True)


# --------------------------------------------------------------------------- grid


def test_grid_is_the_product_of_yaml_values(tmp_path):
    grid = parse_grid(
        [
            "pools.chat.replicas=1, 2",
            "classes.chat.arrival={process: poisson, rate: 5},{process: gamma, rate: 5, cv: 2}",
        ]
    )
    assert grid["pools.chat.replicas"] == [1, 2]
    assert grid["classes.chat.arrival"][1] == {"process": "gamma", "rate": 5, "cv": 2}
    points = expand_grid(grid)
    assert len(points) == 4
    assert [p["pools.chat.replicas"] for p in points] == [1, 1, 2, 2]  # the last key varies fastest
    # An id does not depend on the order of the keys; a value's type is part of it.
    assert point_id({"a": 1, "b": "x"}) == point_id({"b": "x", "a": 1})
    assert point_id({"a": 1}) != point_id({"a": 1.0})

    gfile = tmp_path / "grid.yaml"
    gfile.write_text("pools.chat.replicas: [1, 2, 4]\nseed: 7\n")
    both = parse_grid(["classes.chat.arrival.rate=5,10"], gfile)
    assert both == {"pools.chat.replicas": [1, 2, 4], "seed": [7], "classes.chat.arrival.rate": [5, 10]}
    assert len(expand_grid(both)) == 6


@pytest.mark.parametrize(
    "specs, message",
    [
        (["pools.chat.replicas"], "--grid 'pools.chat.replicas': expected KEY.PATH=V1,V2,..."),
        (["pools.chat.replicas="], "--grid pools.chat.replicas: no values"),
        (["pools.chat.replicas=1,2,1"], "--grid pools.chat.replicas: value 1 is given twice"),
        (["seed=1", "seed=2"], "--grid seed: the key is given twice"),
        (["pools..replicas=1"], "--grid pools..replicas: a key path is names or indices"),
        (["seed=[1"], "--grid seed: values are not valid YAML"),
    ],
)
def test_bad_grid_options_are_one_line_errors(specs, message):
    with pytest.raises(ConfigError) as exc:
        parse_grid(specs)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_a_bad_point_is_named_before_anything_runs(tmp_path):
    out = tmp_path / "sweep"
    cases = {  # the second point of "2,0" is the bad one
        "pools.nochat.replicas=1,2": "grid point pools.nochat.replicas=1: pools.nochat.replicas: no item 'nochat' in list pools",
        "pools.chat.replicas=2,0": "grid point pools.chat.replicas=0: ",
        "pools.chat.replicaz=2": "grid point pools.chat.replicaz=2: ",
        "pools.chat.model=llama-3-70b": "grid point pools.chat.model=llama-3-70b: ",
    }
    named = {
        "pools.chat.replicas=2,0": "pools.0.replicas",
        "pools.chat.replicaz=2": "pools.0.replicaz: unknown field",
        "pools.chat.model=llama-3-70b": "does not fit h100-sxm",
    }
    for spec, start in cases.items():
        with pytest.raises(ConfigError) as exc:
            run_sweep(QUICK, parse_grid([spec]), out, overrides=SHORT)
        msg = str(exc.value)
        assert msg.startswith(start) and named.get(spec, "") in msg and "\n" not in msg, msg
    with pytest.raises(ConfigError, match=r"a sweep needs a grid"):
        run_sweep(QUICK, {}, out)
    assert not out.exists()  # validated before anything was written


# --------------------------------------------------------------------------- local backend


def test_local_sweep_writes_one_line_per_point_and_moves_the_right_way(tmp_path):
    out = tmp_path / "sweep"
    grid = parse_grid(["pools.chat.replicas=1,2", "classes.chat.arrival.rate=10,20"])
    calls = []
    df = run_sweep(QUICK, grid, out, overrides=SHORT, workers=2, progress=lambda *a: calls.append(a))
    assert len(_lines(out)) == 4 and len(df) == 4
    assert calls[0] == (0, 4, None) and [c[0] for c in calls] == [0, 1, 2, 3, 4]
    manifest = json.loads((out / SWEEP_FILE).read_text())
    assert manifest["grid"] == grid and manifest["overrides"] == SHORT and manifest["points"] == 4
    records = read_results(out)
    assert {r["id"] for r in records} == set(df["id"])
    assert all(r["wall_s"] > 0 and r["metrics"]["chat.e2e_s_p99"] > 0 for r in records)

    rows = df.set_index(["pools.chat.replicas", "classes.chat.arrival.rate"])
    for rate in (10, 20):  # more replicas at a fixed rate: shorter tail, twice the GPUs and $/hour
        one, two = rows.loc[(1, rate)], rows.loc[(2, rate)]
        assert two["chat.e2e_s_p99"] < one["chat.e2e_s_p99"]
        assert two["fleet.num_gpus"] == 2 * one["fleet.num_gpus"] == 2
        assert two["fleet.usd_per_hour"] == pytest.approx(2 * one["fleet.usd_per_hour"])
        assert two["pool.chat.busy_fraction"] < one["pool.chat.busy_fraction"] + 1e-9
    for replicas in (1, 2):  # a higher rate: more requests through
        assert rows.loc[(replicas, 20)]["chat.throughput_rps"] > rows.loc[(replicas, 10)]["chat.throughput_rps"]
    assert set(df["chat.slo_met"]) <= {True, False}

    # The same sweep again runs nothing and returns the same table.
    calls.clear()
    again = run_sweep(
        QUICK, parse_grid(["classes.chat.arrival.rate=20,10", "pools.chat.replicas=2,1"]), out, overrides=SHORT
    )
    assert calls == [] and len(_lines(out)) == 4
    assert sorted(again["id"]) == sorted(df["id"])

    # Another base scenario, or another grid, in the same directory is refused; --extend adds.
    with pytest.raises(ConfigError, match="holds a sweep of a different base scenario"):
        run_sweep(QUICK, grid, out, overrides=[*SHORT, "seed=7"])
    bigger = parse_grid(["pools.chat.replicas=1,2,3", "classes.chat.arrival.rate=10,20"])
    with pytest.raises(
        ConfigError, match=r"another grid \(pools.chat.replicas: 1,2 there, 1,2,3 here\); pass --extend"
    ):
        run_sweep(QUICK, bigger, out, overrides=SHORT)
    extended = run_sweep(QUICK, bigger, out, overrides=SHORT, extend=True, progress=lambda *a: calls.append(a))
    assert len(extended) == 6 and len(_lines(out)) == 6 and calls[0] == (4, 6, None)


def test_a_point_that_fails_on_its_input_is_recorded_once(tmp_path):
    # num_requests=3 ends the arrivals before warmup_s: the run itself raises ConfigError.
    out = tmp_path / "sweep"
    grid = parse_grid(["num_requests=3,400"])
    df = run_sweep(QUICK, grid, out, overrides=SHORT, workers=1)
    bad, good = df.set_index("num_requests").loc[3], df.set_index("num_requests").loc[400]
    assert "warmup_s" in bad["error"] and bad["chat.e2e_s_p99"] != bad["chat.e2e_s_p99"]  # NaN
    assert good["error"] != good["error"] and good["chat.e2e_s_p99"] > 0  # NaN: no error
    calls = []
    run_sweep(QUICK, grid, out, overrides=SHORT, progress=lambda *a: calls.append(a))
    assert calls == [(2, 2, None)]  # deterministic: not run again


def test_one_driver_per_directory(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    with _locked(out), pytest.raises(ConfigError, match="another sweep is running"):
        run_sweep(QUICK, parse_grid(["seed=1"]), out, overrides=SHORT)


def test_read_results_skips_a_truncated_line(tmp_path):
    good = {"id": "a", "point": {"seed": 1}, "metrics": {"x": 1.0}}
    (tmp_path / RESULTS_FILE).write_text(json.dumps(good) + "\n" + '{"id": "b", "point": {"se')
    assert read_results(tmp_path) == [good]


# --------------------------------------------------------------------------- resume after a kill

_DRIVER = """
import sys
from sim.sweep import parse_grid, run_sweep
run_sweep(sys.argv[1], parse_grid(["classes.chat.arrival.rate=10,11,12,13,14,15"]), sys.argv[2],
          overrides=["duration_s=120", "replications=4", "warmup_s=5"], workers=1)
"""


def test_a_killed_sweep_resumes_without_rerunning_or_losing_points(tmp_path):
    out = tmp_path / "sweep"
    grid = parse_grid(["classes.chat.arrival.rate=10,11,12,13,14,15"])
    overrides = ["duration_s=120", "replications=4", "warmup_s=5"]  # about a second per point
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_DRIVER), str(QUICK), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill takes its workers too
    )
    results = out / RESULTS_FILE
    try:
        deadline = time.monotonic() + 60
        while not (results.exists() and results.read_bytes().count(b"\n") >= 1):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no point finished within 60 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    before = results.read_bytes()
    finished = [json.loads(line) for line in before.splitlines()]
    assert 1 <= len(finished) < 6
    # A kill in the middle of a write leaves a partial last line: it must not cost a point.
    with results.open("ab") as f:
        f.write(b'{"id": "' + point_id({"classes.chat.arrival.rate": 15}).encode() + b'", "point": {"cla')

    ran = []
    df = run_sweep(QUICK, grid, out, overrides=overrides, progress=lambda d, t, r: ran.append(r))
    assert ran[0] is None
    ran_now = {r["id"] for r in ran[1:]}
    assert ran_now.isdisjoint(r["id"] for r in finished)  # nothing finished was run again
    assert len(ran_now) == 6 - len(finished)
    after = results.read_bytes()
    assert after.startswith(before)  # finished lines untouched, the partial one cut off
    lines = [json.loads(line) for line in after.splitlines()]  # every line is whole JSON
    assert sorted(r["id"] for r in lines) == sorted(point_id(p) for p in expand_grid(grid))  # each once
    assert len(df) == 6 and df["chat.e2e_s_p99"].notna().all()


# --------------------------------------------------------------------------- ray backend


def test_ray_backend_gives_the_local_numbers(tmp_path):
    ray = pytest.importorskip("ray")
    grid = parse_grid(["pools.chat.replicas=1,2", "classes.chat.arrival.rate=15"])
    local = run_sweep(QUICK, grid, tmp_path / "local", overrides=SHORT, workers=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_sweep(QUICK, grid, tmp_path / "ray", overrides=SHORT, backend="ray")
    finally:
        ray.shutdown()
    assert len(_lines(tmp_path / "ray")) == 2
    by_id = {r["id"]: r for r in read_results(tmp_path / "local")}
    for r in read_results(tmp_path / "ray"):
        assert r["metrics"] == by_id[r["id"]]["metrics"]  # deterministic: exactly equal
    assert local.drop(columns="wall_s").equals(remote.drop(columns="wall_s"))


def test_an_unreachable_ray_address_is_one_line(tmp_path):
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match=r"--address 127.0.0.1:1: cannot connect"):
        run_sweep(QUICK, parse_grid(["seed=1"]), tmp_path / "s", overrides=SHORT, backend="ray", address="127.0.0.1:1")


def test_ray_backend_without_ray_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'servesim\[sweep\]'"):
        run_sweep(QUICK, parse_grid(["seed=1"]), tmp_path / "s", overrides=SHORT, backend="ray")


# --------------------------------------------------------------------------- the command


def _parse(argv: list[str]) -> Namespace:
    from sim.cli import build_parser

    return build_parser().parse_args(argv)


def cmd_sweep(args: Namespace) -> int:
    from sim.commands import sweep

    return sweep.run(args)


def test_sweep_command_prints_a_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich: no wrapped headers
    out = tmp_path / "sweep"
    argv = ["sweep", str(QUICK), "--grid", "pools.chat.replicas=1,2", "-o", str(out), "--workers", "2"]
    argv += [f"--set={o}" for o in SHORT[:2]] + ["--set", SHORT[2], "--seed", "3"]
    with monkeypatch.context() as m:
        m.setenv("FORCE_COLOR", "1")  # rich: a terminal, so the progress bar runs (on stderr)
        m.setenv("NO_COLOR", "1")
        assert cmd_sweep(_parse(argv)) == 0
    captured = capsys.readouterr()
    assert "/2 points" in captured.err  # the bar was drawn
    text = captured.out
    assert "sweep of quickstart: 2 points over pools.chat.replicas" in text
    assert "chat.replicas" in text and "TTFT p99 ms" in text and "$/hour" in text
    assert "2 points (2 run now, 0 from before)" in text
    assert json.loads((out / SWEEP_FILE).read_text())["overrides"][-1] == "seed=3"
    assert cmd_sweep(_parse([*argv, "--quiet"])) == 0
    assert "2 points (0 run now, 2 from before)" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--address needs --backend ray"):
        cmd_sweep(_parse([*argv, "--address", "localhost:6379"]))
    with pytest.raises(SystemExit):  # -o is required; argparse prints one line
        _parse(["sweep", str(QUICK), "--grid", "seed=1"])

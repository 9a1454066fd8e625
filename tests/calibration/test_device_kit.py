"""The device kit runs where the GPU machine's packages are all there is, and home turns its
files into profiles and a report.

The kit runs in a fresh interpreter without ``site`` whose only third-party packages are torch,
numpy, pandas and pyyaml (and what they need), linked from this environment: what the GPU
machine has. It runs the tiny target with a 60-second budget; the test checks the budget, the
files that would come back (at most 8, each at most 16 MiB, no deeper than the tool allows),
and that ``calibration.home`` fits both profiles and compares every scored run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = ("torch", "numpy", "pandas", "pyyaml")
BUDGET_S = 60.0


def _closure(names: tuple[str, ...]) -> set[str]:
    """The allowed distributions and everything they require (no extras)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = re.split(r"[\s<>=!~;\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional or platform-only requirement
        seen.add(name)
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(req)
    return seen


def _farm(dest: Path) -> list[str]:
    """A folder of links to the top-level modules (and metadata) of the allowed closure."""
    dest.mkdir()
    dists = sorted(_closure(ALLOWED))
    for name in dists:
        dist = metadata.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        for top in tops:
            src = Path(dist.locate_file(top))
            if top.startswith("..") or not src.exists() or (dest / top).exists() or top == "__pycache__":
                continue
            (dest / top).symlink_to(src)
    return dists


@pytest.fixture(scope="module")
def kit_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("kit")
    dists = _farm(base / "site")
    assert {"torch", "numpy", "pandas", "pyyaml"} <= set(dists)
    assert not {"scipy", "pydantic", "simpy", "matplotlib", "rich"} & set(dists)
    out = base / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(base / "site")
    # -S: no site-packages, no .pth files; the repository root is the working directory, as on
    # the GPU machine (so ``sim`` is there, but nothing it needs beyond the four is)
    probe = "import importlib.util as u; print(all(u.find_spec(m) is None for m in ('scipy', 'pydantic', 'simpy')))"
    got = subprocess.run([sys.executable, "-S", "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert got.stdout.strip() == "True", got.stderr
    t0 = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-S", "-m", "calibration.device", "--target", "tiny", "--budget-s", str(BUDGET_S), "--out", str(out), "--work", str(base / "work")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3 * BUDGET_S,
    )  # fmt: skip
    return out, run, time.perf_counter() - t0, base


def test_kit_runs_with_only_the_four_packages_within_its_budget(kit_run):
    out, run, elapsed, _ = kit_run
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((out / "device.json").read_text())
    assert {p: s["status"] for p, s in summary["phases"].items()} == dict.fromkeys(
        ("llm-grid", "llm-serve", "diffusion-grid", "diffusion-serve"), "done"
    ), summary["phases"]
    assert summary["elapsed_s"] <= 1.1 * BUDGET_S
    assert elapsed <= 1.1 * BUDGET_S + 15  # interpreter start and imports on top
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in files)
    assert all(p.parent == out and re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in files)
    assert not [p for p in files if p.name.startswith(".")]  # no half-written archive left
    assert (out / "telemetry.csv").read_text().count("\n") >= 2


def test_home_fits_profiles_and_compares_every_run(kit_run, tmp_path):
    from calibration.home import analyse

    out, run, _, _ = kit_run
    assert run.returncode == 0
    result = analyse(out, tmp_path / "report", tmp_path / "profiles")
    for shape, model in (("llm", "llama-tiny"), ("diffusion", "sd-tiny")):
        assert (tmp_path / "profiles" / f"{model}-float32-tp1.yaml").is_file()
        s = result[shape]
        assert s is not None and s["model"] == model
        assert len(s["runs"]) == 3
        table = s["table"]
        assert set(table["load"]) == {0.4, 0.7, 0.9}
        # every run that served requests has a finite error (a run with none served is NaN)
        assert table["error"].notna().any()
    llm = result["llm"]
    assert llm["protocol"]["frozen_profile_sha256"]
    assert all(h["steps"] > 0 and h["host_s_median"] > 0 for h in llm["host_time"])
    report = (tmp_path / "report" / "report.md").read_text()
    assert "llama-tiny" in report and "sd-tiny" in report


def test_workloads_are_the_shipped_files():
    """The kit reads the arrival times and lengths from files made at home with their own seed."""
    from calibration.device import TARGETS
    from calibration.home import WORKLOAD_SEED, make_workloads

    for t in TARGETS.values():
        for shape in ("llm", "diffusion"):
            assert t.workload(shape).is_file()
    assert WORKLOAD_SEED not in (0, 20261123, 20261206)  # seeds used in development
    # the shipped files are what the generator writes (nobody edited them by hand)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for path in make_workloads(folder=Path(d)):
            assert path.read_bytes() == (ROOT / "calibration" / "workloads" / path.name).read_bytes(), path.name

"""Every shipped scenario validates, runs from the CLI (shortened), and writes per-class
metrics, parquet and plots. The Alibaba-trace scenario needs the project's shared data
folder (the trace has no licence and is not shipped): it is skipped when the file is absent."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenario_runs_from_the_cli(path, tmp_path, skip_without_traces):
    skip_without_traces(path)
    cmd = [
        sys.executable,
        "-m",
        "sim",
        "run",
        str(path),
        "-o",
        str(tmp_path),
        "--replications",
        "1",
        "--set",
        "duration_s=120",
        "--set",
        "warmup_s=20",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    raw = yaml.safe_load(path.read_text())
    for cls in raw["classes"]:
        st = summary["classes"][cls["name"]]
        assert st["arrivals"]["mean"] > 0 and st["e2e_s_p50"]["mean"] > 0
    requests = pd.read_parquet(tmp_path / "requests.parquet")
    assert len(requests) == summary["conservation"]["arrived"]
    for png in ("latency_cdf.png", "replica_state.png"):
        assert (tmp_path / png).stat().st_size > 10_000


@pytest.mark.parametrize(
    "path", [p for p in SCENARIOS if "pools" in (yaml.safe_load(p.read_text()) or {})], ids=lambda p: p.stem
)
def test_a_scenario_written_out_parses_back_as_it_was(path):
    """scenario.json says what ran; it must also run again. A diffusion pool was written with the
    `engine` block it may not take (and an LLM pool with `batching: null`), so the file of any
    diffusion run failed to parse back, and so did a plan block's unset per-pool lists."""
    from sim.config import load_scenario, parse_scenario

    scenario, _ = load_scenario(path)
    assert parse_scenario(json.loads(scenario.model_dump_json())) == scenario
    assert parse_scenario(scenario.model_dump()) == scenario

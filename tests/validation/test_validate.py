"""servesim validate end to end on tiny settings: the real loop runs, the simulator replays the
same workload, and the report holds every figure the method promises. (Accuracy at useful load
levels is measured by `servesim validate --device cpu --quick`; docs/validation.md has it.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from calibration.validate import DiffusionSettings, LLMSettings, validate_diffusion, validate_llm  # noqa: E402
from sim.cli import main  # noqa: E402

PROFILES = Path(__file__).resolve().parents[2] / "profiles" / "cpu"


def _check_table(table: pd.DataFrame, metrics: tuple[str, ...], loads: tuple[float, ...]) -> None:
    expected = {f"{m}_p{p}" for m in metrics for p in (50, 90, 99)} | {"throughput_req_s"}
    for load in loads:
        got = table[table["load"] == load]
        assert set(got["metric"]) == expected
        assert (got["measured"] > 0).all() and (got["predicted"] > 0).all()
        assert np.allclose(got["error"], (got["predicted"] - got["measured"]) / got["measured"])
        assert (got["noise_floor"] >= 0).all()


def test_llm_validation_report(tmp_path):
    s = LLMSettings(requests=8, capacity_requests=6, loads=(0.5,), repeats=2, max_num_seqs=4, num_kv_blocks=128)
    out = tmp_path / "llm"
    result = validate_llm(s, out, PROFILES / "llama-tiny-float32-tp1.yaml", progress=lambda msg: None)
    _check_table(result["table"], ("ttft_s", "tpot_s", "e2e_s"), s.loads)
    assert result["capacity_req_s"] > 0
    replay = pd.read_csv(out / "step_replay.csv")
    assert len(replay) == result["step_replay"]["steps"] > 0
    assert (replay["predicted_s"] > 0).all() and (replay["num_seqs"] <= s.max_num_seqs).all()
    load = out / "load-0.50"
    real = [pd.read_csv(load / f"real_requests_{k}.csv") for k in range(2)]
    sim = pd.read_csv(load / "sim_requests.csv")
    # the simulator served the very workload the real loop did: same arrivals and lengths
    for r in real:
        assert np.allclose(r["arrival_s"], sim["arrival_s"]) and (r["output_tokens"] == sim["output_tokens"]).all()
    summary = json.loads((out / "summary.json").read_text())
    assert not Path(summary["profile"]).is_absolute()
    assert (out / "cdfs.png").stat().st_size > 10_000 and "| 50% | e2e_s_p50 |" in (out / "report.md").read_text()


def test_diffusion_validation_report(tmp_path):
    s = DiffusionSettings(requests=6, capacity_requests=4, loads=(0.5,), repeats=1, width=128, height=128, steps=3, max_wait_s=0.2)
    out = tmp_path / "sd"
    result = validate_diffusion(s, out, PROFILES / "sd-tiny-float32-tp1.yaml", progress=lambda msg: None)
    _check_table(result["table"], ("e2e_s", "queue_s"), s.loads)
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

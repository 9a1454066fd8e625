"""Small CLI edges (issue 19, item 11): a closed pipe ends quietly, and bench refuses a
request count no machine could simulate before it starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sim.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """``servesim validate-scenario ... | head -1``: stdout's reader is gone before the output is
    written; the command stops without a BrokenPipeError traceback."""
    code = (
        "import os, sys\n"
        "r, w = os.pipe(); os.close(r); os.dup2(w, 1)\n"
        "from sim.cli import main\n"
        "sys.exit(main(['validate-scenario', 'scenarios/quickstart.yaml']))\n"
    )
    got = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in got.stderr and "BrokenPipe" not in got.stderr, got.stderr
    assert got.returncode == 0


def test_bench_refuses_an_impossible_request_count(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--requests", "1000000000000"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "--requests" in err and "10,000,000" in err


def test_catalog_lists_the_diffusion_pipelines(capsys, monkeypatch):
    from sim import catalog

    assert main(["catalog", "diffusion"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in catalog.diffusion_models())
    assert main(["catalog"]) == 0
    assert "Diffusion pipelines" in capsys.readouterr().out


def test_a_video_class_is_labelled_and_priced_as_video(capsys, monkeypatch):
    import yaml

    monkeypatch.setenv("COLUMNS", "250")
    raw = yaml.safe_load((ROOT / "scenarios" / "video_service.yaml").read_text())
    raw["duration_s"], raw["warmup_s"], raw["replications"] = 400, 0, 1
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "v.yaml"
        path.write_text(yaml.safe_dump(raw))
        assert main(["run", str(path)]) in (0, None)
    out = capsys.readouterr().out
    assert "(video)" in out and "per 1k videos" in out and "videos/s" in out and "batches of <= 2 videos" in out
    assert "images" not in out


def test_no_window_with_warmup_zero_does_not_ask_to_lower_warmup(tmp_path, capsys):
    import yaml

    (tmp_path / "t.csv").write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n")
    raw = yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text())
    raw["warmup_s"], raw["replications"] = 0, 1
    raw.pop("duration_s", None)
    cls = raw["classes"][0]
    for key in ("arrival", "prompt_tokens", "output_tokens"):
        cls.pop(key, None)
    cls["trace"] = {"path": "t.csv", "format": "vidur"}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "arrived at time 0" in err and "lower warmup_s" not in err


def test_a_plan_variant_with_a_typo_is_an_input_error_not_an_infeasible_plan(capsys):
    argv = [
        "plan",
        str(ROOT / "scenarios" / "plan_chat_azure.yaml"),
        "--set",
        "plan.pools.chat.variants=[{engine.max_seqs: 8}]",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "plan.pools.chat.variants.0" in err and "engine.max_seqs" in err and "max_num_seqs" in err


def test_an_unknown_key_under_plan_pools_lists_the_allowed_ones(capsys):
    argv = [
        "validate-scenario",
        str(ROOT / "scenarios" / "plan_chat_azure.yaml"),
        "--set",
        "plan.pools.chat.gpuz=[h100-sxm]",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "plan.pools.chat.gpuz: unknown field; allowed: gpus, tensor_parallel_size" in err


def test_an_interrupted_plan_says_what_it_kept_and_that_it_resumes(tmp_path, capsys, monkeypatch):
    import sim.plan as plan

    def interrupted(*args, out_dir=None, **kwargs):
        out_dir.mkdir(parents=True, exist_ok=True)
        from sim import journal

        journal.append(out_dir / plan.EVALUATIONS_FILE, {"key": "k", "x": 1})
        raise KeyboardInterrupt

    monkeypatch.setattr(plan, "plan_fleet", interrupted)
    code = main(["plan", str(ROOT / "scenarios" / "plan_chat_azure.yaml"), "-o", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 130
    assert "1 simulated replication(s) are saved" in err and "run the same command again to resume" in err


def test_a_single_real_run_has_no_noise_floor():
    """`validate --repeats 1` printed "noise floor 0.0 %" (and the table "nan%")."""
    from sim.commands.validate import noise_text

    assert noise_text(float("nan")) == "n/a (one run)"
    assert noise_text(0.031) == "3.1%"

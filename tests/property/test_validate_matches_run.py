"""Hypothesis: for random scenarios, ``validate-scenario`` accepts exactly what ``run`` accepts,
and when both refuse, they say the same line (issue 19, item 6).

Scenarios are the shipped quickstart (an LLM pool) or the SDXL service (a diffusion pool) with
random edits drawn from values that are valid, borderline or invalid: lengths against the
model's context, engine knobs, image sizes and frames, fault times on replicas that may not
exist, constant cost models with huge step times, warm-ups against the run's length. Runs are
kept short (a few simulated seconds, one replication) so each example takes well under a second.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.cli import main

ROOT = Path(__file__).resolve().parents[2]

LLM_EDITS = st.fixed_dictionaries(
    {},
    optional={
        "classes.chat.output_tokens": st.sampled_from(
            [{"dist": "fixed", "value": v} for v in (1, 50, 8000, 8192, 9000)]
        ),
        "classes.chat.prompt_tokens": st.sampled_from(
            [{"dist": "uniform", "low": lo, "high": hi} for lo, hi in ((1, 10), (100, 50), (8190, 8200))]
        ),
        "pools.chat.engine.max_num_seqs": st.sampled_from([1, 64, 0, 300]),
        "pools.chat.engine.max_num_batched_tokens": st.sampled_from([8, 512, 8192]),
        "pools.chat.engine.max_model_len": st.sampled_from([100, 4096, 8192]),
        "pools.chat.replicas": st.sampled_from([1, 2]),
        "pools.chat.faults": st.sampled_from([{"at_s": [[0, 1.0]]}, {"at_s": [[3, 1.0]]}, {"mtbf_s": 5.0}]),
        "pools.chat.cost_model": st.sampled_from([{"kind": "constant", "step_s": v} for v in (0.01, 3600, 1e308)]),
        "warmup_s": st.sampled_from([0, 1, 5, 50]),
        "pools.chat.tensor_parallel_size": st.sampled_from([1, 3, 8]),
    },
)
IMAGE_EDITS = st.fixed_dictionaries(
    {},
    optional={
        "classes.hd.image.frames": st.sampled_from([1, 5]),
        "classes.hd.image.width": st.sampled_from([1024, 1000, 64]),
        "classes.hd.image.steps": st.sampled_from([1, 30]),
        "pools.sdxl.batching.max_batch_size": st.sampled_from([1, 8, 0]),
        "pools.sdxl.replicas": st.sampled_from([1, 3]),
        "pools.sdxl.faults": st.sampled_from([{"at_s": [[5, 1.0]]}, {"at_s": [[0, 2.0]]}]),
        "warmup_s": st.sampled_from([0, 2]),
    },
)


def _outcome(argv: list[str], capsys) -> tuple[bool, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    return code in (0, None, 1), err  # 1: ran, with an SLO missed or a plan infeasible


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["llm", "image"]), llm=LLM_EDITS, image=IMAGE_EDITS)
def test_validate_scenario_accepts_exactly_what_run_accepts(which, llm, image, tmp_path_factory, capsys):
    name, edits = ("quickstart.yaml", llm) if which == "llm" else ("sdxl_image_service.yaml", image)
    raw = yaml.safe_load((ROOT / "scenarios" / name).read_text())
    raw["duration_s"], raw["replications"] = 6, 1
    raw.setdefault("warmup_s", 0)
    path = tmp_path_factory.mktemp("s") / name
    path.write_text(yaml.safe_dump(raw))
    sets = [x for k, v in edits.items() for x in ("--set", f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}")]
    ok_validate, err_validate = _outcome(["validate-scenario", str(path), *sets], capsys)
    ok_run, err_run = _outcome(["run", str(path), "--quiet", *sets], capsys)
    assert ok_validate == ok_run, (edits, err_validate, err_run)
    if not ok_run:
        assert err_validate == err_run, (edits, err_validate, err_run)

"""``validate-scenario`` rejects what ``run`` rejects, with the same one line (issue 19, item 6):
each case goes through both commands and must end in exit 2 with identical messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sim.cli import main

ROOT = Path(__file__).resolve().parents[2]
SC = ROOT / "scenarios"

CASES = {
    "never-served-class": (
        "quickstart.yaml",
        ["classes.chat.output_tokens={dist: fixed, value: 9000}"],
        "none could be served",
    ),
    "frames-on-an-image-model": (
        "sdxl_image_service.yaml",
        ["classes.hd.image.frames=5"],
        "generates images, not video",
    ),
    "video-frames-not-4k+1": ("video_service.yaml", ["classes.clips.image.frames=50"], "4k+1"),
    "trace-with-wrong-columns": (
        "quickstart.yaml",
        [
            "classes.chat.trace={path: bad.csv, format: vidur}",
            "classes.chat.prompt_tokens=null",
            "classes.chat.output_tokens=null",
        ],
        "missing column(s)",
    ),
    "fault-on-a-missing-replica": ("faults_retry.yaml", ["pools.chat.faults={at_s: [[5, 10.0]]}"], "replica index 5"),
    "constant-step-1e308": (
        "quickstart.yaml",
        ["pools.chat.cost_model={kind: constant, step_s: 1e308}"],
        "less than or equal to 3600",
    ),
    "time-scale-1e308": (
        "quickstart.yaml",
        [
            "classes.chat.trace={path: builtin:azure_conv_2023.csv, format: azure, time_scale: 1e308}",
            "classes.chat.prompt_tokens=null",
            "classes.chat.output_tokens=null",
            "classes.chat.arrival=null",
        ],
        "time_scale",
    ),
    "plan-duration-1e9": ("plan_chat_azure.yaml", ["plan.duration_s=1e9"], "plan.duration_s"),
}


def _err(argv, capsys) -> tuple[object, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("case", list(CASES))
def test_validate_rejects_what_run_rejects_with_the_same_line(case, tmp_path, capsys, monkeypatch):
    name, sets, needle = CASES[case]
    shutil.copy(SC / name, tmp_path / name)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    monkeypatch.chdir(tmp_path)
    args = [x for s in sets for x in ("--set", s)]
    code_v, err_v = _err(["validate-scenario", name, *args], capsys)
    code_r, err_r = _err(["run", name, "--replications", "1", *args], capsys)
    assert code_v == 2 and code_r == 2, (err_v, err_r)
    assert needle in err_v, err_v
    assert err_v == err_r

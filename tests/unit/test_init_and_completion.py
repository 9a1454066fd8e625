"""``servesim init`` writes a starter scenario that loads and runs; ``servesim completion``
prints scripts that complete every sub-command and flag of the parser."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from sim.cli import build_parser, main
from sim.commands.completion import spec
from sim.config import load_scenario


@pytest.mark.parametrize("model,gpu", [("llama-3-70b", "h100-sxm"), ("llama-3.2-1b", "l40s"), ("sdxl", "l40s")])
def test_init_writes_a_scenario_that_loads(tmp_path, model, gpu, capsys):
    out = tmp_path / "s.yaml"
    assert main(["init", "--model", model, "--gpu", gpu, "--rate", "2.5", "-o", str(out)]) == 0
    scenario, _ = load_scenario(out)
    pool = scenario.pools[0]
    assert (pool.model, pool.gpu, scenario.classes[0].arrival.rate) == (model, gpu, 2.5)
    assert "# " in out.read_text()  # commented
    if not pool.is_diffusion:
        from sim.fleet.pools import pool_kv_budget

        assert pool_kv_budget(pool).capacity_tokens > 0
    assert "next: servesim run" in capsys.readouterr().out


def test_init_refuses_to_overwrite_and_names_bad_choices(tmp_path, capsys):
    out = tmp_path / "s.yaml"
    out.write_text("mine")
    assert main(["init", "--model", "llama-3-8b", "--gpu", "h100-sxm", "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "mine"
    assert main(["init", "--model", "llama-3-8b", "--gpu", "h100-sxm", "-o", str(out), "--force"]) == 0
    assert main(["init", "--model", "gpt-9", "--gpu", "h100-sxm", "-o", str(tmp_path / "x.yaml")]) == 2
    assert "--model: unknown model 'gpt-9'; allowed:" in capsys.readouterr().err


def test_init_to_stdout(capsys):
    assert main(["init", "--model", "llama-3-8b", "--gpu", "h100-sxm", "-o", "-"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["pools"][0]["model"] == "llama-3-8b"


def test_completion_covers_the_parser(capsys):
    parser = build_parser()
    s = spec(parser)
    assert "run" in s and "--replications" in s["run"] and s["completion"]["<positional>"] == ["bash", "zsh", "fish"]
    for shell in ("bash", "zsh", "fish"):
        assert main(["completion", shell]) == 0
        text = capsys.readouterr().out
        for command in s:
            if command:
                assert command in text
        assert "replications" in text


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_completes_commands_flags_and_choices(capsys):
    main(["completion", "bash"])
    script = capsys.readouterr().out

    def complete(*words: str) -> list[str]:
        line = " ".join(["servesim", *words])
        probe = (
            f"{script}\nCOMP_WORDS=(servesim {' '.join(words)}); COMP_CWORD={len(words)};"
            f" COMP_LINE='{line}'; _servesim; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        )
        res = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
        return res.stdout.split()

    assert complete("ru") == ["run"]
    assert "--replications" in complete("run", "--rep")
    assert complete("fidelity", "--split", "") == ["calibrate", "held_out", "all"]
    assert complete("completion", "") == ["bash", "zsh", "fish"]

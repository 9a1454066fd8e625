"""The catalogs: every entry consistent with itself and sourced."""

import re

import pytest

from sim import catalog
from sim.errors import ConfigError

REQUIRED_MODELS = {
    "llama-2-7b",
    "llama-3-8b",
    "llama-3-70b",
    "mistral-7b",
    "qwen2.5-7b",
    "qwen2.5-0.5b",
    "llama-3.2-1b",
}
REQUIRED_GPUS = {"a100-80gb", "h100-sxm", "h200", "b200", "l40s", "l4", "mi300x"}


def test_required_entries_exist():
    assert REQUIRED_MODELS <= set(catalog.models())
    assert REQUIRED_GPUS <= set(catalog.gpus())


@pytest.mark.parametrize("name", sorted(REQUIRED_MODELS))
def test_parameter_count_matches_shapes(name):
    m = catalog.get_model(name)
    assert m.params_total == pytest.approx(m.num_parameters, rel=1e-3)
    assert m.num_attention_heads % m.num_key_value_heads == 0
    assert m.source


@pytest.mark.parametrize("name", sorted(REQUIRED_GPUS))
def test_gpu_entries_are_dated_and_sourced(name):
    g = catalog.get_gpu(name)
    assert re.fullmatch(r"\d{4}-\d{2}", g.price.date) and g.price.source and g.source
    assert g.fp8_tflops is None or g.fp8_tflops >= g.bf16_tflops
    # dense INT8 is twice dense bf16 on every tensor-core generation in the catalog (A100 to B200, Ada, CDNA3)
    assert g.int8_tops == pytest.approx(2 * g.bf16_tflops, rel=0.03)


def test_unknown_names_list_the_allowed_ones():
    with pytest.raises(ConfigError, match="allowed: .*llama-3-8b"):
        catalog.get_model("gpt-9")
    with pytest.raises(ConfigError, match="allowed: .*h100-sxm"):
        catalog.get_gpu("tpu")


def test_gpus_say_whether_their_efficiencies_are_fitted_and_runs_say_so():
    from pathlib import Path

    from sim.config import parse_scenario
    from sim.run import run_scenario

    assert catalog.assumed_efficiency_note("h100-sxm") is None and catalog.assumed_efficiency_note("a100-80gb") is None
    for gpu in ("h200", "b200", "l40s", "l4", "mi300x"):
        note = catalog.assumed_efficiency_note(gpu)
        assert note.startswith(f"{gpu}'s roofline efficiencies are assumed")
    raw = dict(
        name="t", num_requests=5,
        pools=[dict(name="a", model="llama-3.2-1b", gpu="mi300x"), dict(name="b", model="llama-3.2-1b", gpu="h100-sxm")],
        classes=[dict(name="c", pool="a", arrival=dict(process="poisson", rate=1), prompt_tokens=dict(dist="fixed", value=10),
                      output_tokens=dict(dist="fixed", value=5))],
    )  # fmt: skip
    pools = run_scenario(parse_scenario(raw), Path(".")).summary["pools"]
    assert pools["a"]["efficiency_assumed"] and not pools["b"]["efficiency_assumed"]


def test_run_prints_the_note_for_an_assumed_gpu(capsys):
    from pathlib import Path

    from sim.cli import main

    quickstart = str(Path(__file__).resolve().parents[2] / "scenarios" / "quickstart.yaml")
    assert main(["run", quickstart, "--set", "pools.chat.gpu=mi300x", "--replications", "1", "--no-plots", "--quiet",
                 "--set", "duration_s=40", "--set", "warmup_s=5"]) == 0  # fmt: skip
    assert "mi300x's roofline efficiencies are assumed" in capsys.readouterr().out.replace("\n", " ")

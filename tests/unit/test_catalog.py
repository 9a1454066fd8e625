"""The catalogs: every entry consistent with itself and sourced."""

import re

import pytest

from sim import catalog
from sim.errors import ConfigError

REQUIRED_MODELS = {"llama-2-7b", "llama-3-8b", "llama-3-70b", "mistral-7b", "qwen2.5-7b", "qwen2.5-0.5b", "llama-3.2-1b"}
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


def test_unknown_names_list_the_allowed_ones():
    with pytest.raises(ConfigError, match="allowed: .*llama-3-8b"):
        catalog.get_model("gpt-9")
    with pytest.raises(ConfigError, match="allowed: .*h100-sxm"):
        catalog.get_gpu("tpu")

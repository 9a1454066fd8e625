"""Model and GPU catalogs: data files in ``sim/catalog/data`` loaded into frozen specs.

The catalog is data, not code: adding a model or a GPU means adding a YAML entry. Each entry
is validated on load (unknown keys, wrong types and out-of-range values are errors).
"""

from __future__ import annotations

import functools
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sim.errors import ConfigError


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Spec):
    """A decoder-only (Llama-family) LLM's shapes, as in its published config.json."""

    name: str
    display_name: str
    hf_id: str
    num_layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_key_value_heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    vocab_size: int = Field(ge=1)
    tie_word_embeddings: bool
    qkv_bias: bool
    num_parameters: float = Field(gt=0)
    """Published/counted parameter count (a test checks it against the shapes)."""
    max_position_embeddings: int = Field(ge=1)
    source: str

    @property
    def params_per_layer(self) -> int:
        d, h = self.hidden_size, self.head_dim
        nq, nkv = self.num_attention_heads, self.num_key_value_heads
        attn = d * h * (nq + 2 * nkv) + nq * h * d
        bias = h * (nq + 2 * nkv) if self.qkv_bias else 0
        return attn + bias + 3 * d * self.intermediate_size + 2 * d

    @property
    def params_total(self) -> int:
        """Parameters computed from the shapes (embeddings counted once if tied)."""
        emb = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * self.params_per_layer + emb + self.hidden_size

    @property
    def params_active(self) -> int:
        """Parameters a token's forward pass multiplies with (embedding lookup is a gather)."""
        return self.num_layers * self.params_per_layer + self.vocab_size * self.hidden_size

    def kv_bytes_per_token(self, kv_bytes_per_elem: float, tp: int = 1) -> float:
        """KV-cache bytes one token occupies on one GPU at tensor-parallel degree ``tp``.

        KV heads are split across ranks; with fewer KV heads than ranks each rank keeps one
        (replicated), as vLLM does.
        """
        kv_heads = max(1, -(-self.num_key_value_heads // tp))
        return 2 * self.num_layers * kv_heads * self.head_dim * kv_bytes_per_elem


class Efficiency(_Spec):
    compute: float = Field(gt=0, le=1)
    bandwidth: float = Field(gt=0, le=1)
    source: str


class Overheads(_Spec):
    step_s: float = Field(ge=0)
    per_seq_s: float = Field(ge=0)
    per_layer_s: float = Field(ge=0)
    source: str


class Price(_Spec):
    usd_per_gpu_hour: float = Field(gt=0)
    date: str
    source: str


class GPUSpec(_Spec):
    """A GPU's datasheet peaks, price and the efficiency factors the roofline applies."""

    name: str
    display_name: str
    bf16_tflops: float = Field(gt=0)
    fp8_tflops: float | None = Field(default=None, gt=0)
    memory_gib: float = Field(gt=0)
    hbm_tb_s: float = Field(gt=0)
    interconnect: str
    interconnect_gb_s: float = Field(gt=0)
    """Scale-up link bandwidth per GPU, both directions together."""
    allreduce_latency_s: float = Field(ge=0)
    tdp_w: float = Field(gt=0)
    price: Price
    efficiency: Efficiency
    overheads: Overheads
    source: str

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * 2**30


def _load(file: str, key: str, cls: type[_Spec]) -> dict[str, _Spec]:
    text = resources.files("sim.catalog").joinpath("data", file).read_text()
    raw = yaml.safe_load(text)[key]
    out = {}
    for name, entry in raw.items():
        try:
            out[name] = cls(name=name, **entry)
        except ValidationError as exc:  # a broken shipped catalog is a bug, say where
            raise ConfigError(f"catalog {file}: entry {name!r}: {exc.errors()[0]['msg']}") from None
    return out


@functools.cache
def models() -> dict[str, ModelSpec]:
    """All LLMs in the catalog, by name."""
    return _load("models.yaml", "models", ModelSpec)  # type: ignore[return-value]


@functools.cache
def gpus() -> dict[str, GPUSpec]:
    """All GPUs in the catalog, by name."""
    return _load("gpus.yaml", "gpus", GPUSpec)  # type: ignore[return-value]


def get_model(name: str) -> ModelSpec:
    try:
        return models()[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; allowed: {', '.join(models())}") from None


def get_gpu(name: str) -> GPUSpec:
    try:
        return gpus()[name]
    except KeyError:
        raise ConfigError(f"unknown gpu {name!r}; allowed: {', '.join(gpus())}") from None

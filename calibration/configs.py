"""Shapes of the LLMs calibration builds random-weight replicas of, read from the simulator's catalog.

The shapes live in one place, ``sim/catalog/data/models.yaml``. calibration has to run where only
torch, numpy, pyyaml and pandas are installed, so it reads that file with pyyaml instead of
importing ``sim.catalog`` (which validates with pydantic).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: The simulator's LLM catalog (``sim`` and ``calibration`` are sibling top-level packages).
MODELS_YAML = Path(__file__).resolve().parents[1] / "sim" / "catalog" / "data" / "models.yaml"


@dataclass(frozen=True)
class LlamaConfig:
    """A Llama-family decoder (RMSNorm, RoPE, GQA, SwiGLU), named as in Hugging Face config.json."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    """Query heads (``num_attention_heads``)."""
    num_kv_heads: int
    """Key/value heads (``num_key_value_heads``); query heads share them in groups (GQA)."""
    head_dim: int
    intermediate_size: int
    """Width of the SwiGLU MLP."""
    vocab_size: int
    qkv_bias: bool
    """Biases on the q, k and v projections (Qwen2)."""
    tie_word_embeddings: bool
    """The LM head reuses the input embedding matrix."""
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    """RoPE base; the catalog does not record it and random weights do not care."""
    max_position_embeddings: int = 8192
    """Longest sequence the model is built for (sizes the RoPE table)."""

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"{self.name}: num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )

    def kv_bytes_per_token(self, elem_bytes: int) -> int:
        """KV-cache bytes one token occupies (K and V, every layer) at ``elem_bytes`` per element."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * elem_bytes

    def params_per_layer(self) -> int:
        """One decoder layer: q/k/v/o projections (+ q/k/v biases), SwiGLU MLP and two RMSNorms."""
        d, h = self.hidden_size, self.head_dim
        qkv = d * h * (self.num_heads + 2 * self.num_kv_heads)
        bias = h * (self.num_heads + 2 * self.num_kv_heads) if self.qkv_bias else 0
        o = self.num_heads * h * d
        return qkv + bias + o + 3 * d * self.intermediate_size + 2 * d

    def params_total(self) -> int:
        """Embedding, layers, final norm and LM head (not counted again when tied)."""
        emb = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return emb + self.num_layers * self.params_per_layer() + self.hidden_size


@functools.cache
def _catalog() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(MODELS_YAML.read_text(encoding="utf-8"))["models"]


def llm_models() -> list[str]:
    """Names of the catalog's dense LLMs, in file order: the kit's decoder is a dense Llama;
    mixture-of-experts entries (``num_experts``) are not calibrated by it yet."""
    return [name for name, m in _catalog().items() if not m.get("num_experts")]


def llm_config(name: str) -> LlamaConfig:
    """The catalog entry ``name`` as a :class:`LlamaConfig`."""
    m = _catalog().get(name)
    if m is not None and m.get("num_experts"):
        raise ValueError(
            f"{name} is a mixture-of-experts model; the calibration kit runs dense Llama-family decoders only"
        )
    if m is None:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(llm_models())}")
    return LlamaConfig(
        name=name,
        num_layers=m["num_layers"],
        hidden_size=m["hidden_size"],
        num_heads=m["num_attention_heads"],
        num_kv_heads=m["num_key_value_heads"],
        head_dim=m["head_dim"],
        intermediate_size=m["intermediate_size"],
        vocab_size=m["vocab_size"],
        qkv_bias=m["qkv_bias"],
        tie_word_embeddings=m["tie_word_embeddings"],
        max_position_embeddings=m["max_position_embeddings"],
    )

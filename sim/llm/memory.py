"""How many KV blocks a replica gets: GPU memory x utilisation - weights - activation reserve.

vLLM sizes its KV cache the same way: it profiles a forward pass at ``max_num_batched_tokens``
to find the activation peak, adds non-torch memory (CUDA context, cuBLAS workspace, CUDA
graphs), and gives the rest of ``gpu_memory_utilization`` x total memory to KV blocks. servesim
estimates the activation peak from the model shapes; a calibrated or measured block count can
be given as ``num_gpu_blocks`` instead (block count moves TTFT by ~20 %, so prefer a measured
one when you have it).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.catalog import GPUSpec, ModelSpec
from sim.config import EngineConfig
from sim.errors import CapacityError

GIB = 2**30
#: CUDA context, cuBLAS/NCCL workspaces and captured CUDA graphs: outside torch's allocator.
NON_TORCH_BYTES = 1.5 * GIB


@dataclass(frozen=True, slots=True)
class KVBudget:
    num_gpu_blocks: int
    block_size: int
    kv_bytes_per_token: float
    """Per GPU (one TP rank)."""
    weight_bytes: float
    activation_bytes: float
    usable_bytes: float

    @property
    def capacity_tokens(self) -> int:
        return self.num_gpu_blocks * self.block_size


def activation_bytes(model: ModelSpec, engine: EngineConfig, tp: int) -> float:
    """Peak activation memory of a forward pass at the token budget, plus non-torch memory."""
    n = engine.max_num_batched_tokens
    h, d = model.head_dim, model.hidden_size
    per_token = (
        2 * d  # residual stream and normalised input
        + (model.num_attention_heads + 2 * model.num_key_value_heads) * h / tp  # q, k, v
        + 3 * model.ffn_width_per_token / tp  # gate, up and their product (a token's experts)
    ) * 2  # bf16
    logits = min(engine.max_num_seqs, n) * model.vocab_size / tp * 4  # fp32 logits
    return n * per_token + logits + NON_TORCH_BYTES


def weight_bytes(model: ModelSpec, engine: EngineConfig) -> float:
    """Bytes of the model's weights: the transformer blocks at the engine's weight precision
    (routed experts at ``expert_bytes_per_elem``), the embeddings (and an untied LM head) at
    ``head_bytes_per_elem``."""
    blocks = model.block_params
    total = engine.weight_bytes_per_elem * blocks + engine.head_bytes_per_elem * (model.params_total - blocks)
    if engine.expert_bytes_per_elem != engine.weight_bytes_per_elem:
        total += (engine.expert_bytes_per_elem - engine.weight_bytes_per_elem) * model.routed_expert_params
    return total


def weight_bytes_per_gpu(model: ModelSpec, engine: EngineConfig, tp: int) -> float:
    """Weight bytes on each of a replica's ``tp`` GPUs. With data-parallel attention in groups
    of g = tp / ``attention_data_parallel`` GPUs, the routed experts spread over all ``tp`` GPUs
    and everything else (attention, shared experts, dense layers, embeddings) is split over a
    group and held by every group."""
    dp = engine.attention_data_parallel
    if dp == 1:
        return weight_bytes(model, engine) / tp
    routed = engine.expert_bytes_per_elem * model.routed_expert_params
    return (weight_bytes(model, engine) - routed) / (tp // dp) + routed / tp


def eagle_head(model: ModelSpec) -> ModelSpec:
    """An EAGLE (or MTP) proposer for ``model``: one decoder layer of its shape (of a mixture of
    experts, an expert layer, as DeepSeek-V3's MTP module is), reading the target's embeddings
    and LM head."""
    return model.model_copy(update={"name": f"{model.name}-eagle", "num_layers": 1, "first_k_dense_replace": 0})


def draft_spec(model: ModelSpec, engine: EngineConfig) -> ModelSpec | None:
    """The model a speculative proposer runs (None: none, or n-gram lookup)."""
    spec = engine.speculative
    if spec is None or spec.method == "ngram":
        return None
    if spec.method == "eagle":
        return eagle_head(model)
    from sim import catalog

    return catalog.get_model(spec.draft_model)


def draft_bytes(model: ModelSpec, engine: EngineConfig, tp: int) -> tuple[float, float]:
    """(weight bytes per GPU, KV bytes per token per GPU) a speculative proposer adds: a draft
    model's whole weights and KV cache; an EAGLE head's one layer and its KV (it shares the
    target's embeddings and LM head); nothing for n-gram lookup."""
    draft = draft_spec(model, engine)
    if draft is None:
        return 0.0, 0.0
    kv = draft.kv_bytes_per_token(engine.kv_bytes_per_elem, tp)
    if engine.speculative.method == "eagle":
        return engine.weight_bytes_per_elem * draft.block_params / tp, kv
    return weight_bytes(draft, engine) / tp, kv


def kv_budget(model: ModelSpec, gpu: GPUSpec, engine: EngineConfig, tp: int) -> KVBudget:
    """Blocks per replica (each block spans all TP ranks of an attention group; with
    speculative decoding a block holds the proposer's KV of its tokens too). With
    data-parallel attention every group has its own cache: the replica's blocks are the
    groups' together. A model with sliding-window layers keeps their window for each of
    ``max_num_seqs`` sequences aside first. Raises CapacityError if the model does not fit."""
    dp = engine.attention_data_parallel
    group = tp // dp
    extra_weights, extra_kv = draft_bytes(model, engine, tp)
    kv_tok = model.kv_bytes_per_token(engine.kv_bytes_per_elem, group) + extra_kv
    weights = weight_bytes_per_gpu(model, engine, tp) + extra_weights
    act = (
        engine.activation_reserve_gib * GIB
        if engine.activation_reserve_gib is not None
        else activation_bytes(model, engine, group)
    )
    usable = gpu.memory_bytes * engine.gpu_memory_utilization - weights - act
    if model.sliding_window_layers:
        usable -= engine.max_num_seqs * model.window_kv_bytes_per_seq(
            engine.kv_bytes_per_elem, group, engine.block_size
        )
    if engine.num_gpu_blocks is not None:
        return KVBudget(engine.num_gpu_blocks, engine.block_size, kv_tok, weights, act, usable)
    blocks = int(usable // (engine.block_size * kv_tok)) * dp
    if blocks < 1:
        raise CapacityError(
            f"{model.name} does not fit {gpu.name} at tensor_parallel_size {tp}: weights "
            f"{weights / GIB:.1f} GiB + activations {act / GIB:.1f} GiB > "
            f"{engine.gpu_memory_utilization:g} x {gpu.memory_gib:g} GiB; raise "
            f"tensor_parallel_size or gpu_memory_utilization, or pick a larger GPU"
        )
    return KVBudget(blocks, engine.block_size, kv_tok, weights, act, usable)

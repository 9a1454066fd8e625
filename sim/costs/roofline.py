"""Roofline step cost: FLOPs and bytes of a step from the model config, against GPU peaks.

Each part of a step is bound by compute, memory traffic or a kernel's least duration, at the
efficiencies the GPU catalog gives for that kind of kernel (gpus.yaml; docs/explanation/calibration.md,
"The roofline's terms"):

* token-parallel GEMMs (QKV/O/gate-up/down and the LM head): 2 FLOPs per weight per token
  (``C``) and streaming every weight once (``M``), combined as ``(C^p + M^p)^(1/p)``: the two
  overlap only partly in one GEMM (Vidur's H100/A100 timings: p ~ 1.3, where the classic
  roofline's max is p = infinity), plus each GEMM kernel's least duration;
* a layer's elementwise kernels (RMSNorms, RoPE, SiLU-and-multiply, residual add): the
  activation bytes each token moves, plus each kernel's least duration;
* decode attention: 4*L*n_q*h FLOPs per (query, key) pair vs reading the KV cache (always
  memory-bound for GQA models);
* prefill attention: the causal pair count of each chunk vs reading its cached prefix;
* host overheads per step and per scheduled sequence (scheduling, sampling, launches);
* with tensor parallelism, work and weights divide by TP and each layer adds two ring
  all-reduces of the step's activations.

Summing per-part times (not one max over totals) matters for mixed steps, where GEMMs are
compute-bound while decode attention stays memory-bound. Forms and floors follow the
project's calibration notes (section "Physical floors").
"""

from __future__ import annotations

from sim.catalog import GPUSpec, ModelSpec
from sim.costs.base import StepLine, StepShape

#: Fraction of link bandwidth a ring all-reduce achieves (Vidur's H100 DGX all-reduce profile
#: reaches 270-365 GB/s bus bandwidth at 64 MB against 450 GB/s per direction).
ALLREDUCE_EFFICIENCY = 0.7
ACT_BYTES = 2  # activations travel in bf16
GEMMS_PER_LAYER = 4  # QKV, O, gate-up, down
ELEMENTWISE_PER_LAYER = 5  # two RMSNorms, RoPE, SiLU-and-multiply, residual add


def overlapped(compute_s: float, memory_s: float, p: float) -> float:
    """A kernel's time from its compute and memory floors when they overlap only partly:
    ``(C^p + M^p)^(1/p)``, p = 1 their sum, large p their max (computed stably for any p)."""
    top = compute_s if compute_s > memory_s else memory_s
    if top <= 0.0:
        return 0.0
    return top * ((compute_s / top) ** p + (memory_s / top) ** p) ** (1.0 / p)


def elementwise_bytes_per_token(d: int, f: int, n_heads: int, n_kv_heads: int, head_dim: int, tp: int = 1) -> float:
    """Activation bytes one token moves through a layer's elementwise kernels on one TP rank
    (bf16), for hidden size ``d`` and MLP intermediate ``f``: each RMSNorm reads and writes the
    hidden state, RoPE reads and writes q and k, the SiLU-and-multiply reads gate and up and
    writes their product, the residual add reads two hidden states and writes one. The hidden
    stream is replicated across ranks; q, k and the MLP's intermediate are split."""
    qk = (n_heads + n_kv_heads) * head_dim
    return ACT_BYTES * (7 * d + (2 * qk + 3 * f) / tp)


class RooflineCostModel:
    name = "roofline"

    def __init__(
        self,
        model: ModelSpec,
        gpu: GPUSpec,
        tp: int = 1,
        weight_bytes: float = 2.0,
        kv_bytes: float = 2.0,
        compute_efficiency: float | None = None,
        bandwidth_efficiency: float | None = None,
        head_bytes: float | None = None,
        fp8_compute: bool | None = None,
    ):
        """``weight_bytes``: bytes per weight of the transformer blocks; ``head_bytes``: of the LM
        head (default: the same); ``fp8_compute``: matrix products at the GPU's FP8 peak
        (default: when weights are 1 byte, i.e. FP8)."""
        self.model, self.gpu, self.tp = model, gpu, tp
        eff = gpu.efficiency
        eff_c = compute_efficiency or eff.compute
        eff_b = bandwidth_efficiency or eff.bandwidth
        fp8 = weight_bytes == 1 if fp8_compute is None else fp8_compute
        peak_tflops = gpu.fp8_tflops if fp8 and gpu.fp8_tflops else gpu.bf16_tflops
        flops_per_s = peak_tflops * 1e12 * eff_c
        bytes_per_s = gpu.hbm_tb_s * 1e12 * eff_b
        # attention runs in bf16 whatever the weights' precision
        attn_flops_per_s = gpu.bf16_tflops * 1e12 * (compute_efficiency or eff.attention_compute or eff.compute)
        kv_bytes_per_s = gpu.hbm_tb_s * 1e12 * (bandwidth_efficiency or eff.attention_bandwidth or eff.bandwidth)
        L, d, h = model.num_layers, model.hidden_size, model.head_dim
        # Seconds per unit of work on one rank (work divides evenly across TP ranks).
        self._lin_s_per_token = 2 * model.block_active_params / tp / flops_per_s
        self._head_s_per_row = 2 * d * model.vocab_size / tp / flops_per_s
        # Weights streamed once per step: every block's and the LM head's (the embedding lookup
        # is a gather of a few rows). A mixture-of-experts step reads only the experts its
        # tokens were routed to: attention, router and shared experts always, and of the routed
        # experts as many as the step's tokens touch (ModelSpec.distinct_experts).
        head = weight_bytes if head_bytes is None else head_bytes
        head_params = model.vocab_size * d
        self.model_is_moe = model.is_moe
        if model.is_moe:
            fixed = model.block_params - model.moe_layers * model.num_experts * model.expert_params
            self._weights_s = (weight_bytes * fixed + head * head_params) / tp / bytes_per_s
            self._expert_s = weight_bytes * model.moe_layers * model.expert_params / tp / bytes_per_s
        else:
            streamed = weight_bytes * model.block_params + head * (model.params_active - model.block_params)
            self._weights_s = streamed / tp / bytes_per_s
            self._expert_s = 0.0
        self._overlap = eff.overlap
        self._attn_flop_s_per_pair = L * model.attention_flops_per_pair(decode=False) / tp / attn_flops_per_s
        dec_flop_s_per_pair = L * model.attention_flops_per_pair(decode=True) / tp / attn_flops_per_s
        self._kv_s_per_token = model.kv_bytes_per_token(kv_bytes, tp) / kv_bytes_per_s
        if eff.elementwise_bandwidth is not None:
            act = elementwise_bytes_per_token(
                d, model.ffn_width_per_token, model.num_attention_heads, model.num_key_value_heads, h, tp
            )
            self._elem_s_per_token = L * act / (gpu.hbm_tb_s * 1e12 * eff.elementwise_bandwidth)
        else:
            self._elem_s_per_token = 0.0
        ov = gpu.overheads
        kernels_s = L * (GEMMS_PER_LAYER * eff.gemm_kernel_s + ELEMENTWISE_PER_LAYER * eff.elementwise_kernel_s)
        self._fixed_s = ov.step_s + ov.per_layer_s * L + kernels_s + eff.gemm_kernel_s  # + the LM head
        self._per_seq_s = ov.per_seq_s
        if tp > 1:
            link = gpu.interconnect_gb_s / 2 * 1e9 * ALLREDUCE_EFFICIENCY  # one direction
            self._ar_fixed_s = 2 * L * gpu.allreduce_latency_s
            self._ar_s_per_token = 2 * L * 2 * (tp - 1) / tp * d * ACT_BYTES / link
        else:
            self._ar_fixed_s = self._ar_s_per_token = 0.0
        # Decode attention: per (query, key) pair it costs max(compute, KV read); both scale
        # with the same pair count, so the slower coefficient is the whole story.
        self._dec_attn_s_per_pair = max(dec_flop_s_per_pair, self._kv_s_per_token)
        self._lines: dict[int, StepLine] = {}

    def weights_s(self, num_tokens: int) -> float:
        """Seconds to stream the weights a step of ``num_tokens`` tokens reads."""
        if not self.model_is_moe:
            return self._weights_s
        return self._weights_s + self._expert_s * self.model.distinct_experts(num_tokens)

    def _common_s(self, num_tokens: int, num_seqs: int) -> float:
        weights = self._weights_s if not self.model_is_moe else self.weights_s(num_tokens)
        linear = overlapped(
            self._lin_s_per_token * num_tokens + self._head_s_per_row * num_seqs, weights, self._overlap
        )
        comm = self._ar_fixed_s + self._ar_s_per_token * num_tokens if num_tokens else 0.0
        elementwise = self._elem_s_per_token * num_tokens
        return self._fixed_s + self._per_seq_s * num_seqs + linear + elementwise + comm

    def step_s(self, shape: StepShape) -> float:
        if shape.num_tokens == 0:
            return 0.0
        t = self._common_s(shape.num_tokens, shape.num_seqs)
        if shape.num_decode:
            t += self._dec_attn_s_per_pair * (shape.decode_ctx_sum + shape.num_decode)
        if shape.num_prefill_tokens:
            t += max(
                self._attn_flop_s_per_pair * shape.prefill_attn_pairs,
                self._kv_s_per_token * (shape.prefill_ctx_sum + shape.num_prefill_tokens),
            )
        return t

    def decode_line(self, num_decode: int) -> StepLine:
        line = self._lines.get(num_decode)
        if line is None:
            k = self._dec_attn_s_per_pair
            line = self._lines[num_decode] = StepLine([(self._common_s(num_decode, num_decode) + k * num_decode, k)])
        return line

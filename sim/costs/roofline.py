"""Roofline step cost: FLOPs and bytes of a step from the model config, against GPU peaks.

Each part of a step is bound either by compute or by memory traffic, whichever is slower at
the efficiency the catalog gives for that GPU:

* token-parallel layers (QKV/O/gate-up/down GEMMs and the LM head): 2 FLOPs per weight per
  token vs streaming every weight once;
* decode attention: 4*L*n_q*h FLOPs per (query, key) pair vs reading the KV cache (always
  memory-bound for GQA models);
* prefill attention: the causal pair count of each chunk vs reading its cached prefix;
* fixed overheads per step, per scheduled sequence and per layer (launches, host work);
* with tensor parallelism, work and weights divide by TP and each layer adds two ring
  all-reduces of the step's activations.

Summing per-part maxima (not one max over totals) matters for mixed steps, where GEMMs are
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
    ):
        self.model, self.gpu, self.tp = model, gpu, tp
        eff_c = compute_efficiency or gpu.efficiency.compute
        eff_b = bandwidth_efficiency or gpu.efficiency.bandwidth
        peak_tflops = gpu.fp8_tflops if weight_bytes == 1 and gpu.fp8_tflops else gpu.bf16_tflops
        flops_per_s = peak_tflops * 1e12 * eff_c
        bytes_per_s = gpu.hbm_tb_s * 1e12 * eff_b
        L, d, h = model.num_layers, model.hidden_size, model.head_dim
        # Seconds per unit of work on one rank (work divides evenly across TP ranks).
        self._lin_s_per_token = 2 * L * model.params_per_layer / tp / flops_per_s
        self._head_s_per_row = 2 * d * model.vocab_size / tp / flops_per_s
        self._weights_s = weight_bytes * model.params_active / tp / bytes_per_s
        self._attn_flop_s_per_pair = 4 * L * model.num_attention_heads * h / tp / flops_per_s
        self._kv_s_per_token = model.kv_bytes_per_token(kv_bytes, tp) / bytes_per_s
        ov = gpu.overheads
        self._fixed_s = ov.step_s + ov.per_layer_s * L
        self._per_seq_s = ov.per_seq_s
        if tp > 1:
            link = gpu.interconnect_gb_s / 2 * 1e9 * ALLREDUCE_EFFICIENCY  # one direction
            self._ar_fixed_s = 2 * L * gpu.allreduce_latency_s
            self._ar_s_per_token = 2 * L * 2 * (tp - 1) / tp * d * ACT_BYTES / link
        else:
            self._ar_fixed_s = self._ar_s_per_token = 0.0
        # Decode attention: per (query, key) pair it costs max(compute, KV read); both scale
        # with the same pair count, so the slower coefficient is the whole story.
        self._dec_attn_s_per_pair = max(self._attn_flop_s_per_pair, self._kv_s_per_token)
        self._lines: dict[int, StepLine] = {}

    def _common_s(self, num_tokens: int, num_seqs: int) -> float:
        linear = max(self._lin_s_per_token * num_tokens + self._head_s_per_row * num_seqs, self._weights_s)
        comm = self._ar_fixed_s + self._ar_s_per_token * num_tokens if num_tokens else 0.0
        return self._fixed_s + self._per_seq_s * num_seqs + linear + comm

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

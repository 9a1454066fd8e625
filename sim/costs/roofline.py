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
  all-reduces of the step's activations;
* with expert parallelism, each GPU holds whole experts and the step waits for the GPU whose
  experts drew the most tokens; with data-parallel attention, groups of GPUs run attention on
  their own requests (attention weights held by every group, the KV cache split among them)
  and each expert layer adds an all-to-all dispatch and combine of the tokens' hidden states;
* sliding-window layers read at most their window of KV per query.

Summing per-part times (not one max over totals) matters for mixed steps, where GEMMs are
compute-bound while decode attention stays memory-bound. Forms and floors follow the
project's calibration notes (section "Physical floors").
"""

from __future__ import annotations

import math
from statistics import NormalDist

from sim.catalog import GPUSpec, ModelSpec
from sim.costs.base import StepLine, StepShape

#: Fraction of link bandwidth a ring all-reduce achieves (Vidur's H100 DGX all-reduce profile
#: reaches 270-365 GB/s bus bandwidth at 64 MB against 450 GB/s per direction).
ALLREDUCE_EFFICIENCY = 0.7
#: Fraction of link bandwidth an expert-parallel all-to-all achieves within an NVLink node
#: (DeepSeek's DeepEP reports 153-158 GB/s of NVLink bandwidth for its normal dispatch and
#: combine kernels on H800, whose NVLink gives 200 GB/s per direction: ~0.77; the diffusion
#: model's Ulysses all-to-all takes 0.7 for the same reason).
EP_ALLTOALL_EFFICIENCY = 0.75
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
        expert_bytes: float | None = None,
        expert_parallel: bool = False,
        attention_dp: int = 1,
        expert_imbalance: float = 1.0,
    ):
        """``weight_bytes``: bytes per weight of the transformer blocks; ``head_bytes``: of the LM
        head (default: the same); ``expert_bytes``: of the routed experts (default: the same);
        ``fp8_compute``: matrix products at the GPU's FP8 peak (default: when weights are 1
        byte, i.e. FP8). ``expert_parallel``: whole experts per GPU (the busiest GPU's routed
        work sets the pace, times ``expert_imbalance``); ``attention_dp``: attention groups of
        ``tp / attention_dp`` GPUs, each with its own requests (needs ``expert_parallel``)."""
        self.model, self.gpu, self.tp = model, gpu, tp
        dp = attention_dp
        g = tp // dp  # GPUs of one attention group (tp without data-parallel attention)
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
        # Seconds per unit of work on one rank (work divides evenly across TP ranks; with data
        # parallel attention a group's 1/dp of the tokens over its g GPUs is the same share).
        self._lin_s_per_token = 2 * model.block_active_params / tp / flops_per_s
        # Expert parallelism: the routed experts' share, which the busiest GPU scales.
        self._ep = tp if expert_parallel and model.is_moe and tp > 1 else 0
        self._ep_imbalance = expert_imbalance
        # expected largest of N standard normals (Blom's approximation, Blom 1958)
        self._ep_z = NormalDist().inv_cdf((tp - 0.375) / (tp + 0.25)) if self._ep else 0.0
        if self._ep:
            routed = 2 * model.moe_layers * model.num_experts_per_tok * model.expert_params / tp / flops_per_s
            self._routed_s_per_token = routed
            self._lin_s_per_token -= routed
        else:
            self._routed_s_per_token = 0.0
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
            expert = weight_bytes if expert_bytes is None else expert_bytes
            # everything but the routed experts is split over an attention group (all of tp
            # without data-parallel attention) and held by each group
            self._weights_s = (weight_bytes * fixed + head * head_params) / g / bytes_per_s
            self._expert_s = expert * model.moe_layers * model.expert_params / tp / bytes_per_s
        else:
            streamed = weight_bytes * model.block_params + head * (model.params_active - model.block_params)
            self._weights_s = streamed / tp / bytes_per_s
            self._expert_s = 0.0
        self._overlap = eff.overlap
        # Attention: FLOPs split over all tp GPUs either way (a group's heads over its g GPUs,
        # its 1/dp of the sequences); the KV a GPU reads is its group's share, 1/dp of the
        # context at g-way head split (MLA's latent is not split by heads, so data-parallel
        # attention reads dp times less of it per GPU than tensor-parallel attention).
        Lf, Lw = model.full_attention_layers, model.sliding_window_layers
        pre_flops, dec_flops = model.attention_flops_per_pair(decode=False), model.attention_flops_per_pair(decode=True)
        self._attn_flop_s_per_pair = Lf * pre_flops / tp / attn_flops_per_s
        dec_flop_s_per_pair = Lf * dec_flops / tp / attn_flops_per_s
        self._kv_s_per_token = model.kv_bytes_per_token(kv_bytes, g) / dp / kv_bytes_per_s
        if Lw:
            # Sliding-window layers: a query meets at most ``window`` keys. Decodes are charged
            # the whole window (contexts shorter than it are rare and cheap); a prefill chunk
            # min(its causal pairs, its tokens x window).
            win_kv = model.window_kv_bytes_per_seq(kv_bytes, g, 0) / model.sliding_window / dp / kv_bytes_per_s
            self._win_attn_flop_s_per_pair = Lw * pre_flops / tp / attn_flops_per_s
            self._win_kv_s_per_token = win_kv
            self._win_dec_s_per_seq = model.sliding_window * max(Lw * dec_flops / tp / attn_flops_per_s, win_kv)
        else:
            self._win_attn_flop_s_per_pair = self._win_kv_s_per_token = self._win_dec_s_per_seq = 0.0
        self._window = model.sliding_window
        if eff.elementwise_bandwidth is not None:
            act = elementwise_bytes_per_token(
                d, model.ffn_width_per_token, model.num_attention_heads, model.num_key_value_heads, h, g
            )
            self._elem_s_per_token = L * act / (gpu.hbm_tb_s * 1e12 * eff.elementwise_bandwidth)
            if dp > 1:
                self._elem_s_per_token /= dp
        else:
            self._elem_s_per_token = 0.0
        ov = gpu.overheads
        kernels_s = L * (GEMMS_PER_LAYER * eff.gemm_kernel_s + ELEMENTWISE_PER_LAYER * eff.elementwise_kernel_s)
        self._fixed_s = ov.step_s + ov.per_layer_s * L + kernels_s + eff.gemm_kernel_s  # + the LM head
        # each group's host process schedules and samples its own sequences, side by side
        self._per_seq_s = ov.per_seq_s if dp == 1 else ov.per_seq_s / dp
        link = gpu.interconnect_gb_s / 2 * 1e9  # one direction
        if g > 1:
            # a group's two all-reduces per layer over its 1/dp of the step's tokens
            self._ar_fixed_s = 2 * L * gpu.allreduce_latency_s
            self._ar_s_per_token = 2 * L * 2 * (g - 1) / g * d * ACT_BYTES / (link * ALLREDUCE_EFFICIENCY)
            if dp > 1:
                self._ar_s_per_token /= dp
        else:
            self._ar_fixed_s = self._ar_s_per_token = 0.0
        if dp > 1:
            # Each expert layer: dispatch and combine. A GPU sends its 1/tp of the step's tokens,
            # each to its top-k experts, (tp-1)/tp of them on other GPUs, the hidden state in
            # bf16 each way; a latency per collective like an all-reduce's.
            k = model.num_experts_per_tok
            per_token = k * (tp - 1) / tp * d * ACT_BYTES / tp / (link * EP_ALLTOALL_EFFICIENCY)
            self._a2a_fixed_s = 2 * model.moe_layers * gpu.allreduce_latency_s
            self._a2a_s_per_token = 2 * model.moe_layers * per_token
        else:
            self._a2a_fixed_s = self._a2a_s_per_token = 0.0
        self._dp = dp
        # Decode attention: per (query, key) pair it costs max(compute, KV read); both scale
        # with the same pair count, so the slower coefficient is the whole story.
        self._dec_attn_s_per_pair = max(dec_flop_s_per_pair, self._kv_s_per_token)
        self._lines: dict[int, StepLine] = {}

    def weights_s(self, num_tokens: int) -> float:
        """Seconds to stream the weights a step of ``num_tokens`` tokens reads."""
        if not self.model_is_moe:
            return self._weights_s
        return self._weights_s + self._expert_s * self.model.distinct_experts(num_tokens)

    def expert_load_factor(self, num_tokens: int) -> float:
        """The busiest expert-parallel GPU's routed token-expert pairs over the mean, for
        uniform routing: each of the step's T·k pairs lands on one of N GPUs, so a GPU's load
        is binomial (mean T·k/N, variance T·k/N·(1-1/N)), and the largest of N such loads is
        about the mean plus z standard deviations, z the expected largest of N standard normals
        (Blom's approximation) corrected for the binomial's skew (Cornish-Fisher); no GPU can
        take more than all T tokens on each of its E/N experts. Times the configured skew (``expert_load_imbalance``)."""
        n, k, e = self._ep, self.model.num_experts_per_tok, self.model.num_experts
        mean = num_tokens * k / n
        sd = math.sqrt(mean * (1.0 - 1.0 / n))
        # Cornish-Fisher's skewness term: small loads are binomial, not normal (a long right tail)
        z = self._ep_z + (self._ep_z**2 - 1.0) * (1.0 - 2.0 / n) / sd / 6.0
        most = num_tokens * min(k, e / n) / mean
        return min(1.0 + z * sd / mean, most) * self._ep_imbalance

    def _common_s(self, num_tokens: int, num_seqs: int, group_load: float = 1.0, extra_rows: int = 0) -> float:
        """The step's parts other than attention. ``group_load``: with data-parallel attention,
        the busiest group's tokens over the mean (a prefill chunk runs on one group);
        ``extra_rows``: logit rows beyond one per sequence."""
        weights = self._weights_s if not self.model_is_moe else self.weights_s(num_tokens)
        compute = self._lin_s_per_token * num_tokens + self._head_s_per_row * (num_seqs + extra_rows)
        if group_load != 1.0:
            compute *= group_load
        if self._ep and num_tokens:
            compute += self._routed_s_per_token * num_tokens * self.expert_load_factor(num_tokens)
        linear = overlapped(compute, weights, self._overlap)
        comm = self._ar_fixed_s + self._ar_s_per_token * num_tokens * group_load if num_tokens else 0.0
        if self._dp > 1 and num_tokens:
            comm += self._a2a_fixed_s + self._a2a_s_per_token * num_tokens
        elementwise = self._elem_s_per_token * num_tokens * group_load
        return self._fixed_s + self._per_seq_s * num_seqs + linear + elementwise + comm

    def step_s(self, shape: StepShape) -> float:
        if shape.num_tokens == 0:
            return 0.0
        # Data-parallel attention: requests spread evenly over the groups, but a prefill chunk is
        # one request's and runs on one group, which may then carry more than its share.
        load = 1.0
        if self._dp > 1 and shape.max_prefill_chunk * self._dp > shape.num_tokens:
            load = shape.max_prefill_chunk * self._dp / shape.num_tokens
        t = self._common_s(shape.num_tokens, shape.num_seqs, load, shape.extra_logit_rows)
        if shape.num_decode:
            t += self._dec_attn_s_per_pair * (shape.decode_ctx_sum + shape.num_decode)
            if self._window:
                t += self._win_dec_s_per_seq * shape.num_decode
        if shape.num_prefill_tokens:
            pre = max(
                self._attn_flop_s_per_pair * shape.prefill_attn_pairs,
                self._kv_s_per_token * (shape.prefill_ctx_sum + shape.num_prefill_tokens),
            )
            if self._window:
                n = shape.num_prefill_tokens
                pre += max(
                    self._win_attn_flop_s_per_pair * min(shape.prefill_attn_pairs, n * self._window),
                    self._win_kv_s_per_token * min(shape.prefill_ctx_sum + n, n * self._window),
                )
            t += pre * load if load != 1.0 else pre
        return t

    def decode_line(self, num_decode: int) -> StepLine:
        line = self._lines.get(num_decode)
        if line is None:
            k = self._dec_attn_s_per_pair
            a = self._common_s(num_decode, num_decode) + k * num_decode
            if self._window:
                a += self._win_dec_s_per_seq * num_decode
            line = self._lines[num_decode] = StepLine([(a, k)])
        return line

"""Diffusion stage costs (roofline and constant) and the GPU memory a diffusion request holds.

The roofline times each stage of a pipeline as ``max(FLOPs / (peak x eff_c), bytes / (bw x
eff_b)) + a fixed cost`` with the FLOP forms and per-component efficiencies of the diffusion
catalog (``sim/catalog/data/diffusion_models.yaml``): a denoising step reads the denoiser's
weights once and its activations per row; text encoders read their weights once per batch of
prompts; the VAE decoder is compute-bound. Forms follow the project's calibration notes
(sections "Diffusion: what determines one denoising step" and "Physical floors").
"""

from __future__ import annotations

from sim.catalog import ComponentEfficiency, DiffusionModelSpec, GPUSpec
from sim.errors import ConfigError

GIB = 2**30
WEIGHT_BYTES = 2  # bf16 weights
#: Denoiser precisions: bf16, and the 8-bit ones (1 byte a weight, products at the 8-bit peak).
EIGHT_BIT = ("fp8", "int8")
ACT_BYTES = 2  # bf16 activations

#: Peak live activations of a denoiser forward, in hidden-size vectors per token per row: a DiT
#: block holds the residual stream, its normed and modulated copies, Q, K, V, the attention
#: output and the MLP hidden state and its activation (4-6 d wide), ~15-20 d; a UNet keeps
#: ~5 base-width vectors of skip connections per latent pixel on top of a similar working set.
#: FlashAttention-style kernels are assumed (no N^2 score matrix).
ACT_RESIDENT_VECTORS = 20
#: VAE decode peak per output pixel of a decoded chunk: a conv's input and output plus a
#: GroupNorm/SiLU temporary at the widest full-resolution feature map (``VAESpec.peak_channels``).
VAE_WORKSPACE_FACTOR = 3
LATENT_BYTES = 4  # fp32 latents in the scheduler
#: Fraction of the GPU link's one-way bandwidth an all-to-all reaches (as the all-reduce's in
#: sim/costs/roofline.py, from Vidur's H100 DGX collective profile).
ALLTOALL_EFFICIENCY = 0.7
RGB_BYTES = 3 * 4  # decoded frames as fp32 RGB before conversion


class ComponentTime:
    """Seconds per FLOP and per byte of one component on one GPU, and its fixed cost per call."""

    __slots__ = ("s_per_flop", "s_per_byte", "overhead_s")

    def __init__(
        self, eff: ComponentEfficiency, gpu: GPUSpec, compute: float | None = None, bandwidth: float | None = None
    ):
        eff_c = compute or eff.compute
        eff_b = bandwidth or eff.bandwidth or gpu.efficiency.bandwidth
        self.s_per_flop = 1.0 / (gpu.bf16_tflops * 1e12 * eff_c)
        self.s_per_byte = 1.0 / (gpu.hbm_tb_s * 1e12 * eff_b)
        self.overhead_s = eff.overhead_s

    def time_s(self, flops: float, nbytes: float) -> float:
        return self.overhead_s + max(flops * self.s_per_flop, nbytes * self.s_per_byte)


class DiffusionRooflineCost:
    """Roofline stage times of one diffusion pipeline on one GPU.

    ``compute_efficiency`` and ``bandwidth_efficiency`` override the denoiser's catalog factors
    only (it dominates a request's time); text encoders and the VAE keep theirs.
    """

    name = "roofline"

    def __init__(
        self,
        spec: DiffusionModelSpec,
        gpu: GPUSpec,
        compute_efficiency: float | None = None,
        bandwidth_efficiency: float | None = None,
        execution: str = "compiled",
        dtype: str = "bfloat16",
        gpus: int = 1,
        cfg_parallel: bool = False,
    ):
        self.spec, self.gpu = spec, gpu
        # xDiT: CFG's two rows on two GPUs, the tokens split over the rest (Ulysses).
        self._cfg = 2 if cfg_parallel else 1
        self._sp = gpus // self._cfg
        link = gpu.interconnect_gb_s / 2 * 1e9 * ALLTOALL_EFFICIENCY  # one direction
        self._link_s_per_byte = 1.0 / link
        self._hop_s = gpu.allreduce_latency_s
        self._denoiser = ComponentTime(spec.efficiency, gpu, compute_efficiency, bandwidth_efficiency)
        if dtype in EIGHT_BIT:  # products at the 8-bit peak, at the GPU's 8-bit share of bf16's efficiency
            peak = eight_bit_peak_tflops(gpu, dtype)
            self._denoiser.s_per_flop *= gpu.bf16_tflops / (peak * gpu.efficiency.denoiser_8bit)
        # Eager execution (PyTorch without a compiler): every op is its own kernel dispatched
        # from Python, and the elementwise ops stream their tensors through HBM unfused. The
        # step then takes max(GPU, host): the GPU's time plus the elementwise bytes at the
        # GPU's fitted elementwise bandwidth, against the host's dispatch of every op.
        if execution not in ("compiled", "eager"):
            raise ConfigError(f"execution must be 'compiled' or 'eager', got {execution!r}")
        self._eager = None
        if execution == "eager":
            if spec.eager is None:
                raise ConfigError(f"{spec.name} has no eager op counts in the diffusion catalog: run it compiled")
            eff = gpu.efficiency.elementwise_bandwidth or gpu.efficiency.bandwidth
            s_per_byte = 1.0 / (gpu.hbm_tb_s * 1e12 * eff)
            self._eager = (
                spec.eager.elementwise_bytes_per_row * s_per_byte,
                spec.eager.elementwise_bytes_per_row_token * s_per_byte,
                spec.eager.ops_per_forward * gpu.overheads.eager_op_s,
            )
        self._denoiser_weight_bytes = denoiser_weight_bytes(spec, dtype)
        self._text = [
            (ComponentTime(e.efficiency, gpu), e.flops_per_prompt, WEIGHT_BYTES * e.params) for e in spec.text_encoders
        ]
        self._vae = ComponentTime(spec.vae.efficiency, gpu)
        self._vae_weight_bytes = WEIGHT_BYTES * spec.vae.params
        self._per_row: dict[int, tuple[float, float]] = {}

    def text_encode_s(self, num_prompts: int) -> float:
        if num_prompts <= 0:
            return 0.0
        return sum(stage.time_s(num_prompts * flops, nbytes) for stage, flops, nbytes in self._text)

    def denoise_step_s(self, rows: int, tokens: int) -> float:
        if rows <= 0:
            return 0.0
        per_row = self._per_row.get(tokens)
        if per_row is None:  # a replica sees a handful of shapes: memoise their per-row work
            spec = self.spec
            per_row = self._per_row[tokens] = (spec.denoiser_flops(tokens), spec.denoiser_act_io_bytes(tokens))
        flops, act_bytes = per_row
        if self._cfg > 1 or self._sp > 1:
            return self._parallel_step_s(rows, tokens, flops, act_bytes)
        gpu_s = self._denoiser.time_s(rows * flops, self._denoiser_weight_bytes + rows * act_bytes)
        if self._eager is None:
            return gpu_s
        per_row_s, per_token_s, host_s = self._eager
        return max(gpu_s + rows * (per_row_s + per_token_s * tokens), host_s)

    def _parallel_step_s(self, rows: int, tokens: int, flops: float, act_bytes: float) -> float:
        """One step on the replica's GPUs: each computes its share of the rows (CFG parallel:
        half) and of the tokens (1/sp of the work and activations), reading the whole denoiser.
        Ulysses adds four all-to-alls per block (q, k and v to heads, the output back), each
        moving a GPU's tokens' hidden states but its own share; CFG parallel gathers the two
        noise predictions once a step."""
        spec, sp = self.spec, self._sp
        rows_g = -(-rows // self._cfg)
        t = self._denoiser.time_s(rows_g * flops / sp, self._denoiser_weight_bytes + rows_g * act_bytes / sp)
        if sp > 1:
            moved = rows_g * tokens / sp * spec.hidden_size * ACT_BYTES * (sp - 1) / sp
            t += spec.num_layers * 4 * (self._hop_s + moved * self._link_s_per_byte)
        if self._cfg > 1:
            t += self._hop_s + rows_g * tokens * spec.latent_channels * LATENT_BYTES * self._link_s_per_byte
        if self._eager is not None:
            raise ConfigError("eager execution is not modelled with sequence or CFG parallelism")
        return t

    def vae_decode_s(self, num_images: int, width: int, height: int, frames: int) -> float:
        if num_images <= 0:
            return 0.0
        flops = num_images * self.spec.vae_decode_flops(width, height, frames)
        return self._vae.time_s(flops, self._vae_weight_bytes)


class DiffusionConstantCost:
    """Fixed stage times, for tests and queueing-theory checks: a denoising step costs
    ``step_s + per_row_s x rows``, a batch's text encoding ``text_encode_s`` (once, whatever its
    size) and its VAE decode ``vae_decode_s`` per image."""

    name = "constant"

    def __init__(self, step_s: float, per_row_s: float = 0.0, text_encode_s: float = 0.0, vae_decode_s: float = 0.0):
        self.step_s = step_s
        self.per_row_s = per_row_s
        self.text_s = text_encode_s
        self.vae_s = vae_decode_s

    def text_encode_s(self, num_prompts: int) -> float:
        return self.text_s if num_prompts > 0 else 0.0

    def denoise_step_s(self, rows: int, tokens: int) -> float:
        return self.step_s + self.per_row_s * rows

    def vae_decode_s(self, num_images: int, width: int, height: int, frames: int) -> float:
        return self.vae_s * num_images


def eight_bit_peak_tflops(gpu: GPUSpec, dtype: str) -> float | None:
    """The GPU's dense FP8 TFLOP/s or INT8 TOP/s for an 8-bit denoiser (None: not supported)."""
    return gpu.fp8_tflops if dtype == "fp8" else gpu.int8_tops


def denoiser_weight_bytes(spec: DiffusionModelSpec, dtype: str) -> float:
    """The denoiser's weights in ``dtype``: 1 byte a weight in 8 bits, else bf16."""
    return (1 if dtype in EIGHT_BIT else WEIGHT_BYTES) * spec.denoiser_params


def pipeline_weight_bytes(spec: DiffusionModelSpec, dtype: str) -> float:
    """Every weight of the pipeline: the denoiser in ``dtype``, text encoders and VAE in bf16."""
    return spec.weights_bytes(WEIGHT_BYTES) - WEIGHT_BYTES * spec.denoiser_params + denoiser_weight_bytes(spec, dtype)


def cached_step_cost(cache, spec: DiffusionModelSpec) -> float:
    """A cached step's cost as a fraction of a full one (``StepCache``)."""
    if cache.cached_step_cost is not None:
        return cache.cached_step_cost
    return 0.0 if cache.method == "teacache" else 1.0 / spec.num_layers


def request_bytes(spec: DiffusionModelSpec, width: int, height: int, frames: int, images: int, cfg: bool) -> float:
    """GPU memory one request holds while in a batch: its latents, the denoiser activations of
    its rows (images x 2 with guidance) and its share of the VAE decode workspace.

    Activations ~ ``ACT_RESIDENT_VECTORS`` x tokens x hidden x 2 bytes per row (mmdit tokens
    include the text). The VAE decodes ``decode_chunk_frames`` output frames at a time, peaking
    at ~``VAE_WORKSPACE_FACTOR`` x pixels x ``peak_channels`` x 2 bytes per image, plus the
    decoded RGB frames. Activations and the VAE workspace are added although they peak at
    different times (conservative: allocator caches rarely give the first back in time).
    """
    rows = images * (2 if cfg else 1)
    f = spec.vae_spatial_factor
    latent_pixels = (width // f) * (height // f) * spec.latent_frames(frames)
    latents = rows * spec.latent_channels * latent_pixels * LATENT_BYTES * 2  # latent + model output
    tokens = spec.latent_tokens(width, height, frames)
    if spec.architecture == "mmdit":
        tokens += spec.text_tokens
    activations = rows * ACT_RESIDENT_VECTORS * tokens * spec.hidden_size * ACT_BYTES
    chunk = min(frames, spec.vae.decode_chunk_frames)
    vae = (
        images
        * width
        * height
        * (chunk * spec.vae.peak_channels * ACT_BYTES * VAE_WORKSPACE_FACTOR + frames * RGB_BYTES)
    )
    return latents + activations + vae


def diffusion_memory_budget(
    spec: DiffusionModelSpec, gpu: GPUSpec, gpu_memory_utilization: float, dtype: str = "bfloat16"
) -> float:
    """Bytes left for requests on one GPU: memory x utilisation - weights (the denoiser in
    ``dtype``, text encoders and VAE decoder in bf16, all resident). Raises ConfigError if the
    weights do not fit."""
    usable = gpu.memory_bytes * gpu_memory_utilization
    weights = pipeline_weight_bytes(spec, dtype)
    if weights >= usable:
        raise ConfigError(
            f"{spec.name} does not fit {gpu.name}: weights {weights / GIB:.1f} GiB (denoiser, text "
            f"encoders, VAE) >= {gpu_memory_utilization:g} x {gpu.memory_gib:g} GiB; raise "
            f"gpu_memory_utilization or pick a larger GPU"
        )
    return usable - weights

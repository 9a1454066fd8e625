"""Model, diffusion-pipeline and GPU catalogs: data files in ``sim/catalog/data`` loaded into frozen specs.

The catalog is data, not code: adding a model or a GPU means adding a YAML entry. Each entry
is validated on load (unknown keys, wrong types and out-of-range values are errors).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
    num_experts: int = Field(default=0, ge=0)
    """Mixture-of-experts: routed experts per layer (0: a dense model)."""
    num_experts_per_tok: int = Field(default=0, ge=0)
    """Mixture-of-experts: experts each token is routed to (top-k)."""
    moe_intermediate_size: int | None = Field(default=None, ge=1)
    """Mixture-of-experts: each expert's SwiGLU width (default: ``intermediate_size``)."""
    num_shared_experts: int = Field(default=0, ge=0)
    """Mixture-of-experts: experts every token goes through besides its routed ones."""
    first_k_dense_replace: int = Field(default=0, ge=0)
    """Mixture-of-experts: the first k layers have a dense MLP of ``intermediate_size`` instead
    of experts (DeepSeek-V3: 3)."""
    kv_lora_rank: int = Field(default=0, ge=0)
    """Multi-head latent attention (MLA, DeepSeek-V2/V3): the rank of the compressed KV latent a
    token keeps per layer, beside its ``qk_rope_head_dim`` positional key (0: ordinary
    attention)."""
    q_lora_rank: int = Field(default=0, ge=0)
    """MLA: the rank of the compressed query (0: queries projected directly)."""
    qk_nope_head_dim: int = Field(default=0, ge=0)
    """MLA: per-head query/key width without rotary position."""
    qk_rope_head_dim: int = Field(default=0, ge=0)
    """MLA: per-head query/key width with rotary position (the key part is shared by all heads)."""
    v_head_dim: int = Field(default=0, ge=0)
    """MLA: per-head value width."""
    sliding_window: int = Field(default=0, ge=0)
    """Sliding-window attention: the keys a windowed layer's query attends to (the latest
    ``sliding_window`` tokens; gpt-oss: 128). 0: every layer attends to the whole context."""
    sliding_window_layers: int = Field(default=0, ge=0)
    """Layers with sliding-window attention (gpt-oss alternates them with full attention: half
    its layers); the rest attend to the whole context."""

    @model_validator(mode="after")
    def _moe(self) -> ModelSpec:
        if self.num_experts and not 1 <= self.num_experts_per_tok <= self.num_experts:
            raise ValueError("num_experts_per_tok must be between 1 and num_experts for a mixture-of-experts model")
        if not self.num_experts and (self.num_experts_per_tok or self.num_shared_experts or self.first_k_dense_replace):
            raise ValueError("num_experts_per_tok, num_shared_experts and first_k_dense_replace need num_experts")
        if self.first_k_dense_replace > self.num_layers:
            raise ValueError("first_k_dense_replace is more than num_layers")
        if bool(self.sliding_window) != bool(self.sliding_window_layers):
            raise ValueError("sliding_window and sliding_window_layers go together (both 0, or both set)")
        if self.sliding_window_layers > self.num_layers:
            raise ValueError("sliding_window_layers is more than num_layers")
        if self.sliding_window_layers and self.is_mla:
            raise ValueError("sliding-window layers with multi-head latent attention are not modelled")
        if self.kv_lora_rank and not (self.qk_nope_head_dim and self.qk_rope_head_dim and self.v_head_dim):
            raise ValueError(
                "multi-head latent attention (kv_lora_rank) needs qk_nope_head_dim, qk_rope_head_dim and v_head_dim"
            )
        return self

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def moe_layers(self) -> int:
        """Layers with experts (the rest have a dense MLP)."""
        return self.num_layers - self.first_k_dense_replace if self.is_moe else 0

    def _all_blocks(self, per_layer: int) -> int:
        """``per_layer`` over every layer, the dense first layers (a dense MLP) apart."""
        if self.is_moe and self.first_k_dense_replace:
            dense = self.attention_params_per_layer + 3 * self.hidden_size * self.intermediate_size
            return self.first_k_dense_replace * dense + self.moe_layers * per_layer
        return self.num_layers * per_layer

    @property
    def block_params(self) -> int:
        """Every transformer block's parameters together (attention, norms, MLPs or experts)."""
        return self._all_blocks(self.params_per_layer)

    @property
    def block_active_params(self) -> int:
        """What one token multiplies with in all the blocks together."""
        return self._all_blocks(self.active_params_per_layer)

    def attention_flops_per_pair(self, decode: bool) -> float:
        """FLOPs of one (query, key) pair in one layer, all heads: 4 per head and head dimension
        (q.k and p.v). MLA decodes on the latent (vLLM absorbs the up-projections into the query
        and output): q.k over the latent and the rotary part, p.v over the latent; it prefills
        with the heads expanded (q.k over the no-rope and rope widths, p.v over the value
        width)."""
        if not self.is_mla:
            return 4 * self.num_attention_heads * self.head_dim
        if decode:
            return 2 * self.num_attention_heads * (2 * self.kv_lora_rank + self.qk_rope_head_dim)
        return 2 * self.num_attention_heads * (self.qk_nope_head_dim + self.qk_rope_head_dim + self.v_head_dim)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def full_attention_layers(self) -> int:
        """Layers whose KV cache grows with the context (all but the sliding-window ones)."""
        return self.num_layers - self.sliding_window_layers

    @property
    def routed_expert_params(self) -> int:
        """Every routed expert of every layer together (what expert parallelism spreads whole
        across GPUs; shared experts, attention and embeddings are the rest)."""
        return self.moe_layers * self.num_experts * self.expert_params

    @property
    def expert_params(self) -> int:
        """Parameters of one expert (a SwiGLU MLP: gate, up and down)."""
        return 3 * self.hidden_size * (self.moe_intermediate_size or self.intermediate_size)

    @property
    def attention_params_per_layer(self) -> int:
        """Attention (QKV, output, their biases) and the two norms of one layer. MLA: the
        query's down and up projections (or its direct one), the joint KV down-projection with
        the rotary key, the KV up-projection, the output, and the latents' norms."""
        if self.is_mla:
            d, n = self.hidden_size, self.num_attention_heads
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            q = d * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * n * qk if self.q_lora_rank else d * n * qk
            kv = d * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
            kv += self.kv_lora_rank * n * (self.qk_nope_head_dim + self.v_head_dim)
            return q + kv + n * self.v_head_dim * d + 2 * d
        d, h = self.hidden_size, self.head_dim
        nq, nkv = self.num_attention_heads, self.num_key_value_heads
        attn = d * h * (nq + 2 * nkv) + nq * h * d
        bias = h * (nq + 2 * nkv) if self.qkv_bias else 0
        return attn + bias + 2 * d

    @property
    def params_per_layer(self) -> int:
        """Every parameter of one layer: a dense MLP, or every expert, the shared ones and the
        router."""
        d = self.hidden_size
        if not self.is_moe:
            return self.attention_params_per_layer + 3 * d * self.intermediate_size
        experts = (self.num_experts + self.num_shared_experts) * self.expert_params
        return self.attention_params_per_layer + experts + d * self.num_experts

    @property
    def active_params_per_layer(self) -> int:
        """What one token multiplies with in a layer: a dense MLP, or its top-k experts, the
        shared ones and the router."""
        if not self.is_moe:
            return self.params_per_layer
        experts = (self.num_experts_per_tok + self.num_shared_experts) * self.expert_params
        return self.attention_params_per_layer + experts + self.hidden_size * self.num_experts

    @property
    def ffn_width_per_token(self) -> int:
        """SwiGLU width a token's activations pass through in one layer (its experts' together)."""
        if not self.is_moe:
            return self.intermediate_size
        width = self.moe_intermediate_size or self.intermediate_size
        return (self.num_experts_per_tok + self.num_shared_experts) * width

    def distinct_experts(self, tokens: float) -> float:
        """Expected routed experts a layer's ``tokens`` touch together, each token choosing
        top-k of E with every expert equally likely: E (1 - (1 - k/E)^tokens)."""
        e, k = self.num_experts, self.num_experts_per_tok
        return e * (1.0 - (1.0 - k / e) ** tokens) if tokens > 0 else 0.0

    @property
    def params_total(self) -> int:
        """Parameters computed from the shapes (embeddings counted once if tied)."""
        emb = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.block_params + emb + self.hidden_size

    @property
    def params_active(self) -> int:
        """Parameters a token's forward pass multiplies with (embedding lookup is a gather; a
        mixture-of-experts token only its experts)."""
        return self.block_active_params + self.vocab_size * self.hidden_size

    def kv_bytes_per_token(self, kv_bytes_per_elem: float, tp: int = 1) -> float:
        """KV-cache bytes one token occupies on one GPU at tensor-parallel degree ``tp``.

        KV heads are split across ranks; with fewer KV heads than ranks each rank keeps one
        (replicated), as vLLM does. MLA keeps one latent (and rotary key) per token and layer,
        which every rank holds whole (vLLM's tensor-parallel MLA).
        """
        if self.is_mla:
            return self.num_layers * (self.kv_lora_rank + self.qk_rope_head_dim) * kv_bytes_per_elem
        kv_heads = max(1, -(-self.num_key_value_heads // tp))
        return 2 * self.full_attention_layers * kv_heads * self.head_dim * kv_bytes_per_elem

    def window_kv_bytes_per_seq(self, kv_bytes_per_elem: float, tp: int = 1, block_size: int = 16) -> float:
        """KV bytes one running sequence keeps on one GPU for its sliding-window layers: the
        window and the partly filled block behind it (vLLM's hybrid KV-cache manager frees the
        blocks that slide out of the window), whatever the context's length. ``kv_bytes_per_token``
        counts only the full-attention layers."""
        if not self.sliding_window_layers:
            return 0.0
        kv_heads = max(1, -(-self.num_key_value_heads // tp))
        per_token = 2 * self.sliding_window_layers * kv_heads * self.head_dim * kv_bytes_per_elem
        return per_token * (self.sliding_window + block_size)


class Efficiency(_Spec):
    """What fraction of a GPU's peaks the roofline assumes each kind of kernel reaches
    (gpus.yaml explains each term and where it comes from)."""

    compute: float = Field(gt=0, le=1)
    """GEMMs: fraction of the dense bf16 (or fp8) peak."""
    bandwidth: float = Field(gt=0, le=1)
    """GEMMs: fraction of HBM bandwidth while streaming weights."""
    overlap: float = Field(default=1000.0, ge=1)
    """p of the GEMM time (C^p + M^p)^(1/p): 1 = compute and weight streaming add up, large = max."""
    gemm_kernel_s: float = Field(default=0.0, ge=0)
    """Least time of one GEMM kernel."""
    elementwise_bandwidth: float | None = Field(default=None, gt=0, le=1)
    """Elementwise kernels (norms, RoPE, activation, residual add): fraction of HBM bandwidth;
    None leaves them out."""
    elementwise_kernel_s: float = Field(default=0.0, ge=0)
    attention_compute: float | None = Field(default=None, gt=0, le=1)
    """Prefill attention: fraction of the bf16 peak (default: ``compute``)."""
    attention_bandwidth: float | None = Field(default=None, gt=0, le=1)
    """Decode attention's KV-cache read: fraction of HBM bandwidth (default: ``bandwidth``)."""
    denoiser_8bit: float = Field(default=1.0, gt=0, le=1)
    """An 8-bit (FP8 or INT8) diffusion denoiser's compute efficiency at the 8-bit peak, as a
    fraction of its bf16 efficiency at the bf16 peak: what quantised convolutions and matrix
    products reach after their scaling, the layers kept in 16 bits and attention."""
    fitted: bool = False
    """True where the GEMM and elementwise terms were fitted on measurements of this GPU."""
    source: str


class Overheads(_Spec):
    step_s: float = Field(ge=0)
    per_seq_s: float = Field(ge=0)
    per_layer_s: float = Field(ge=0)
    eager_op_s: float = Field(default=0.0, ge=0)
    """Host time to dispatch one op of an eager PyTorch model (diffusion denoisers run eagerly)."""
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
    int8_tops: float | None = Field(default=None, gt=0)
    """Dense INT8 tensor-core TOP/s (8-bit diffusion denoisers with ``batching.dtype: int8``)."""
    memory_gib: float = Field(gt=0)
    hbm_tb_s: float = Field(gt=0)
    interconnect: str
    interconnect_gb_s: float = Field(gt=0)
    """Scale-up link bandwidth per GPU, both directions together."""
    allreduce_latency_s: float = Field(ge=0)
    host_link: str = "pcie-gen5"
    """The link between the GPU and host memory (a name in the link catalog): KV swapped out
    or loaded from a CPU tier crosses it."""
    tdp_w: float = Field(gt=0)
    price: Price
    efficiency: Efficiency
    overheads: Overheads
    source: str

    @model_validator(mode="after")
    def _host_link(self) -> GPUSpec:
        if self.host_link not in links():
            raise ValueError(f"unknown host_link {self.host_link!r}; allowed: {', '.join(links())}")
        return self

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * 2**30


def _lookup(table: dict[str, _Spec], name: str, what: str) -> _Spec:
    """``table[name]``, or one line naming what is allowed."""
    try:
        return table[name]
    except KeyError:
        raise ConfigError(f"unknown {what} {name!r}; allowed: {', '.join(table)}") from None


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
    return _lookup(models(), name, "model")  # type: ignore[return-value]


def get_gpu(name: str) -> GPUSpec:
    return _lookup(gpus(), name, "gpu")  # type: ignore[return-value]


# -- Links between replicas ---------------------------------------------------------------------


class LinkSpec(_Spec):
    """A link a KV cache crosses between a prefill and a decode replica (prefill/decode
    disaggregation): what one GPU can send on it in one direction, and a transfer's latency."""

    name: str
    display_name: str
    gb_s: float = Field(gt=0)
    """Bandwidth per GPU, one direction, in GB/s (10^9 bytes per second): the line rate of the
    GPU's own NVLink ports or network adapter."""
    efficiency: float = Field(gt=0, le=1)
    """Fraction of ``gb_s`` a bulk GPU-to-GPU transfer reaches (measured, see ``source``)."""
    latency_s: float = Field(ge=0)
    """From a transfer's start to its first bytes arriving (read request, switch hops, the
    notification that it is done)."""
    scope: Literal["node", "network"]
    """``node``: both replicas in one server (NVLink, PCIe); ``network``: across servers."""
    source: str

    @property
    def effective_gb_s(self) -> float:
        return self.gb_s * self.efficiency


@functools.cache
def links() -> dict[str, LinkSpec]:
    """Every link in the catalog, by name."""
    return _load("links.yaml", "links", LinkSpec)  # type: ignore[return-value]


def get_link(name: str) -> LinkSpec:
    return _lookup(links(), name, "link")  # type: ignore[return-value]


class StorageSpec(_Spec):
    """Where a starting replica reads its weights from (autoscaling cold starts)."""

    name: str
    display_name: str
    gb_s: float = Field(gt=0)
    """Read bandwidth reaching the GPUs of one replica, in GB/s (10^9 bytes per second), as
    measured loading model weights (see ``source``)."""
    source: str


@functools.cache
def storage() -> dict[str, StorageSpec]:
    """Every weight store in the catalog, by name."""
    return _load("storage.yaml", "storage", StorageSpec)  # type: ignore[return-value]


def get_storage(name: str) -> StorageSpec:
    return _lookup(storage(), name, "storage")  # type: ignore[return-value]


# -- Diffusion pipelines ------------------------------------------------------------------------
#
# Shapes and FLOP forms follow the project's calibration notes (sections "Diffusion: what
# determines one denoising step", "Physical floors" and Appendix A); the data file cites each
# number.

#: Activation bytes read and written per token per transformer block in one DiT forward, in
#: units of hidden-size bf16 vectors: norms, modulation, QKV (3), attention in/out, residual adds
#: and the 4d-wide MLP in and out make ~40 (an estimate; only the memory side of the roofline
#: uses it, and DiTs at ~0.3*d FLOP per byte never hit it).
DIT_ACT_IO_VECTORS = 40
ACT_BYTES = 2  # activations in bf16


class ComponentEfficiency(_Spec):
    """What fraction of the GPU's peaks one pipeline component reaches, and its fixed cost.

    A GPU's ``efficiency.compute`` in gpus.yaml is the LLM GEMM figure; convolution-heavy VAEs,
    short-sequence text encoders and small UNets run far below it, so each component has its own.
    """

    compute: float = Field(gt=0, le=1)
    """Fraction of dense bf16 peak FLOP/s."""
    bandwidth: float | None = Field(default=None, gt=0, le=1)
    """Fraction of HBM bandwidth; None takes the GPU's (weight streaming)."""
    overhead_s: float = Field(ge=0)
    """Fixed seconds per call (per denoiser forward, per text-encoder batch, per VAE decode)."""
    source: str


class TextEncoderSpec(_Spec):
    """A transformer text encoder; FLOPs per prompt follow from its shapes (2 FLOPs per MAC)."""

    name: str
    display_name: str
    params: float = Field(gt=0)
    num_layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    ffn_size: int = Field(ge=1)
    gated_ffn: bool
    """Three FFN matrices (T5's gated GELU) instead of two."""
    tokens: int = Field(ge=1)
    """Sequence length the pipeline pads prompts to."""
    efficiency: ComponentEfficiency
    source: str

    @property
    def flops_per_prompt(self) -> float:
        """One prompt: 2 x (attention + FFN weights) x tokens + 4 L d T^2 for attention."""
        L, d, T = self.num_layers, self.hidden_size, self.tokens
        per_layer = 4 * d * d + (3 if self.gated_ffn else 2) * d * self.ffn_size
        return 2 * L * per_layer * T + 4 * L * d * T * T


class VAESpec(_Spec):
    """A VAE decoder: convolutions scale with output pixels; an optional mid-block attention
    over the latent pixels of each latent frame adds a quadratic term (image VAEs)."""

    name: str
    params: float = Field(gt=0)
    """Decoder parameters (text-to-image serving never runs the encoder)."""
    flops_per_pixel: float = Field(gt=0)
    """FLOPs per output pixel per frame, outside the mid-block attention."""
    mid_attention_channels: int = Field(default=0, ge=0)
    """Channels of the single-head mid-block self-attention at latent resolution (0: none)."""
    peak_channels: int = Field(ge=1)
    """Widest feature map at full output resolution (sizes the decode workspace)."""
    decode_chunk_frames: int = Field(default=1, ge=1)
    """Output frames decoded at once (video VAEs decode a few latent frames at a time)."""
    efficiency: ComponentEfficiency
    source: str


class UNetFlopFit(_Spec):
    """A UNet forward's FLOPs as ``linear*N + quadratic*N^2`` in latent pixels N (one row).

    A UNet has no transformer closed form (it runs at 3-4 resolutions); the two coefficients
    are solved exactly from two FlopCounterMode counts.
    """

    linear: float = Field(gt=0)
    quadratic: float = Field(ge=0)
    act_io_bytes_per_pixel: float = Field(gt=0)
    """Activation bytes read and written per latent pixel per row in one forward."""
    source: str


class EagerCounts(_Spec):
    """What one denoiser forward of one row launches when PyTorch runs it eagerly (counted by
    ``python -m calibration.eager_counts`` on the replica in ``calibration/models``)."""

    ops_per_forward: int = Field(ge=1)
    """Ops that launch work (each a kernel and a Python dispatch)."""
    elementwise_bytes_per_row: float = Field(ge=0)
    elementwise_bytes_per_row_token: float = Field(ge=0)
    """Bytes the elementwise ops (everything but GEMMs, convolutions and attention) read and
    write: ``per_row + per_row_token x latent tokens`` per row; a compiler fuses them away."""
    source: str


class DiffusionModelSpec(_Spec):
    """A text-to-image or text-to-video diffusion pipeline: denoiser, text encoders and VAE."""

    name: str
    display_name: str
    hf_id: str
    kind: Literal["image", "video"]
    architecture: Literal["unet", "mmdit", "dit"]
    """unet; mmdit: joint attention over image and text tokens; dit: self-attention over image
    tokens plus cross-attention to the text."""
    denoiser_params: float = Field(gt=0)
    """Published/counted denoiser parameters (all of them: what the weights occupy)."""
    num_layers: int = Field(ge=1)
    """Transformer blocks (UNet: transformer blocks over all resolutions, informational)."""
    hidden_size: int = Field(ge=1)
    """Transformer width d (UNet: channels at full latent resolution)."""
    per_token_params: float | None = Field(default=None, gt=0)
    """DiTs: parameters each token multiplies with (P_tok / P_self); excludes adaLN modulation
    applied to one vector per sample and, for dit, the cross-attention K/V of the text."""
    unet_flops: UNetFlopFit | None = None
    flops_correction: float = Field(default=1.0, gt=0)
    """Multiplier on the closed form where it misses the counted FLOPs by more than ~10 %."""
    patch_size: int = Field(ge=1)
    """Latent pixels per token side (UNet 1; Flux packs 2x2 latents, so 2)."""
    text_tokens: int = Field(ge=1)
    """T: text tokens the denoiser attends to (joint for mmdit, cross for dit and unet)."""
    latent_channels: int = Field(ge=1)
    vae_spatial_factor: int = Field(ge=1)
    vae_temporal_factor: int = Field(ge=1)
    cfg: bool
    """Classifier-free guidance by default (False for guidance-distilled models)."""
    default_steps: int = Field(ge=1)
    default_width: int = Field(ge=1)
    default_height: int = Field(ge=1)
    default_frames: int = Field(default=1, ge=1)
    fps: float | None = Field(default=None, gt=0)
    text_encoders: tuple[TextEncoderSpec, ...] = Field(min_length=1)
    vae: VAESpec
    efficiency: ComponentEfficiency
    """The denoiser's."""
    eager: EagerCounts | None = None
    """Counts for an eager (uncompiled) denoiser; None: the model cannot be run eagerly here."""
    source: str

    @model_validator(mode="after")
    def _consistent(self) -> DiffusionModelSpec:
        if (self.architecture == "unet") != (self.unet_flops is not None):
            raise ValueError("unet_flops is required for a unet and only for a unet")
        if (self.architecture != "unet") != (self.per_token_params is not None):
            raise ValueError("per_token_params is required for a DiT and only for a DiT")
        if self.kind == "image" and (self.default_frames != 1 or self.fps is not None or self.vae_temporal_factor != 1):
            raise ValueError("an image model has default_frames 1, no fps and vae_temporal_factor 1")
        if self.kind == "video" and self.fps is None:
            raise ValueError("a video model needs fps")
        if self.check_size(self.default_width, self.default_height, self.default_frames):
            raise ValueError(self.check_size(self.default_width, self.default_height, self.default_frames))
        return self

    @property
    def size_multiple(self) -> int:
        """Width and height must be multiples of this (VAE downsampling x patch)."""
        return self.vae_spatial_factor * self.patch_size

    def check_size(self, width: int, height: int, frames: int = 1) -> str:
        """'' if the pipeline can generate this size, else a one-line reason."""
        m = self.size_multiple
        for what, v in (("width", width), ("height", height)):
            if v < m or v % m:
                return f"{what} {v} must be a positive multiple of {m} for {self.name}"
        if self.kind == "image":
            if frames != 1:
                return f"frames {frames}: {self.name} generates images (frames must be 1)"
        elif frames < 1 or (frames - 1) % self.vae_temporal_factor:
            t = self.vae_temporal_factor
            return f"frames {frames} must be {t}k+1 (1, {t + 1}, {2 * t + 1}, ...) for {self.name}"
        return ""

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.vae_temporal_factor + 1 if self.kind == "video" else 1

    def latent_tokens(self, width: int, height: int, frames: int = 1) -> int:
        """Denoiser tokens per row: (H/8)(W/8)/patch^2 per latent frame (UNet: latent pixels)."""
        m = self.size_multiple
        return -(-height // m) * -(-width // m) * self.latent_frames(frames)

    def denoiser_flops(self, tokens: int) -> float:
        """FLOPs of one denoiser forward over one row of ``tokens`` latent tokens."""
        N, T = tokens, self.text_tokens
        if self.unet_flops is not None:
            f = self.unet_flops.linear * N + self.unet_flops.quadratic * N * N
        else:
            P, L, d = self.per_token_params, self.num_layers, self.hidden_size
            if self.architecture == "mmdit":
                f = 2 * P * (N + T) + 4 * L * d * (N + T) ** 2
            else:
                f = 2 * P * N + 4 * L * d * N * N + 4 * L * d * N * T
        return f * self.flops_correction

    def denoiser_act_io_bytes(self, tokens: int) -> float:
        """Activation bytes one forward of one row reads and writes (memory side of the roofline)."""
        if self.unet_flops is not None:
            return self.unet_flops.act_io_bytes_per_pixel * tokens
        n = tokens + self.text_tokens if self.architecture == "mmdit" else tokens
        return DIT_ACT_IO_VECTORS * self.num_layers * self.hidden_size * ACT_BYTES * n

    def text_encoder_flops(self) -> float:
        """FLOPs to encode one prompt with every text encoder."""
        return sum(e.flops_per_prompt for e in self.text_encoders)

    def vae_decode_flops(self, width: int, height: int, frames: int = 1) -> float:
        """FLOPs to decode one image or video."""
        f = frames * width * height * self.vae.flops_per_pixel
        if self.vae.mid_attention_channels:
            n_lat = (width // self.vae_spatial_factor) * (height // self.vae_spatial_factor)
            f += self.latent_frames(frames) * 4 * self.vae.mid_attention_channels * n_lat * n_lat
        return f

    @property
    def params_total(self) -> float:
        """Denoiser + text encoders + VAE decoder."""
        return self.denoiser_params + sum(e.params for e in self.text_encoders) + self.vae.params

    def weights_bytes(self, bytes_per_param: float = 2) -> float:
        return self.params_total * bytes_per_param

    def video_seconds(self, frames: int) -> float:
        return frames / self.fps if self.kind == "video" and self.fps else 0.0


@functools.cache
def diffusion_models() -> dict[str, DiffusionModelSpec]:
    """All diffusion pipelines in the catalog, by name."""
    return _load("diffusion_models.yaml", "diffusion_models", DiffusionModelSpec)  # type: ignore[return-value]


def shipped(kind: str) -> dict[str, _Spec]:
    """The entries of one shipped data file (``models``, ``gpus``, ``diffusion_models``, ``links`` or
    ``storage``), read
    afresh: without the entries scenarios added to this process's catalog (``add_entries``)."""
    files = {
        "models": ModelSpec,
        "gpus": GPUSpec,
        "diffusion_models": DiffusionModelSpec,
        "links": LinkSpec,
        "storage": StorageSpec,
    }
    if kind not in files:
        raise ValueError(f"unknown catalog {kind!r}; allowed: {', '.join(files)}")
    return _load(f"{kind}.yaml", kind, files[kind])


def get_diffusion_model(name: str) -> DiffusionModelSpec:
    return _lookup(diffusion_models(), name, "diffusion model")  # type: ignore[return-value]


@functools.cache
def vaes() -> dict[str, VAESpec]:
    """The decoders of the diffusion catalog's ``vaes`` section, by name (the pixel decoders of
    the ``ar_image`` and ``hybrid`` kinds name one)."""
    text = resources.files("sim.catalog").joinpath("data", "diffusion_models.yaml").read_text()
    return {name: VAESpec(**{**entry, "name": name}) for name, entry in yaml.safe_load(text)["vaes"].items()}


def get_vae(name: str) -> VAESpec:
    return _lookup(vaes(), name, "decoder")  # type: ignore[return-value]


def assumed_efficiency_note(gpu: str) -> str | None:
    """A one-line caveat when ``gpu``'s roofline efficiencies are assumed rather than fitted on
    measurements of that GPU (``efficiency.fitted`` in gpus.yaml); None when they are fitted."""
    g = get_gpu(gpu)
    if g.efficiency.fitted:
        return None
    return (
        f"{gpu}'s roofline efficiencies are assumed, not fitted on measurements of that GPU "
        f"({g.efficiency.source}); latencies and capacity on it are estimates: calibrate a profile to rely on them"
    )


# -- Entries a scenario brings ------------------------------------------------------------------
#
# A scenario's ``catalog:`` block adds models, GPUs and diffusion pipelines the shipped catalog
# does not have, validated by the same specs. They are added to this process's tables (every
# process that simulates the scenario adds them again: ``add_entries`` is idempotent); a name
# already in the catalog with other values is an error, so that no scenario changes another's.

ASSUMED_INTERCONNECT_GB_S = 128.0
"""A user GPU's scale-up link when its entry gives none: PCIe Gen5 x16, 64 GB/s per direction
(PCI-SIG PCIe 5.0 specification: 32 GT/s x 16 lanes, 128b/130b encoding)."""


def _gpu_defaults() -> dict:
    text = resources.files("sim.catalog").joinpath("data", "gpus.yaml").read_text()
    return yaml.safe_load(text)["defaults"]


def llm_from_hf_config(config: dict, name: str) -> dict:
    """The catalog fields of a Llama-family decoder from its Hugging Face ``config.json``:
    dense, or mixture-of-experts with every layer sparse (Mixtral ``num_local_experts``, Qwen-MoE
    ``num_experts`` and ``moe_intermediate_size``), or DeepSeek-V2/V3-style (MLA attention,
    ``n_routed_experts``, shared experts of the experts' width, dense first layers). Sparse
    attention indexers (DeepSeek-V3.2) and MoE layers at a stride are refused."""
    if "index_topk" in config or int(config.get("moe_layer_freq", 1) or 1) != 1:
        raise ConfigError(
            f"models {name!r}: config.json has sparse attention or MoE layers at a stride, which servesim does not "
            "model yet"
        )
    if config.get("mlp_only_layers") or int(config.get("decoder_sparse_step", 1) or 1) != 1:
        raise ConfigError(
            f"models {name!r}: config.json mixes dense and sparse layers, which servesim does not model yet"
        )
    experts = int(config.get("num_local_experts") or config.get("num_experts") or config.get("n_routed_experts") or 0)
    moe = {}
    layer_types = config.get("layer_types") or []
    windowed = sum(1 for t in layer_types if t == "sliding_attention")
    if windowed and config.get("sliding_window"):
        # gpt-oss: windowed layers named per layer (a config-wide sliding_window alone, as
        # Mistral's and Qwen2's carry, is charged as full attention: an over-estimate)
        moe.update({"sliding_window": int(config["sliding_window"]), "sliding_window_layers": windowed})
    if experts:
        moe = {"num_experts": experts, "num_experts_per_tok": int(config.get("num_experts_per_tok") or 0)}
        if config.get("moe_intermediate_size"):
            moe["moe_intermediate_size"] = int(config["moe_intermediate_size"])
        if config.get("n_shared_experts"):
            moe["num_shared_experts"] = int(config["n_shared_experts"])
        if config.get("first_k_dense_replace"):
            moe["first_k_dense_replace"] = int(config["first_k_dense_replace"])
    if config.get("kv_lora_rank"):
        moe.update(
            {
                key: int(config.get(key) or 0)
                for key in ("kv_lora_rank", "q_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
            }
        )
        moe["head_dim"] = moe["qk_nope_head_dim"] + moe["qk_rope_head_dim"]
        if config.get("shared_expert_intermediate_size"):
            raise ConfigError(
                f"models {name!r}: config.json has a shared expert of its own width, which servesim does not model yet"
            )
    try:
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return {
            "num_layers": int(config["num_hidden_layers"]),
            "hidden_size": hidden,
            "num_attention_heads": heads,
            "num_key_value_heads": int(config.get("num_key_value_heads") or heads),
            "head_dim": int(config.get("head_dim") or hidden // heads),
            "intermediate_size": int(config["intermediate_size"]),
            "vocab_size": int(config["vocab_size"]),
            "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
            # Qwen2 puts biases on q, k and v without saying so; Llama says attention_bias
            "qkv_bias": bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
            "max_position_embeddings": int(config["max_position_embeddings"]),
            **moe,
        }
    except KeyError as exc:
        raise ConfigError(f"models {name!r}: config.json has no {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"models {name!r}: config.json holds a value that is not a number ({exc})") from None


def entry_spec(kind: str, raw: dict, where: str) -> _Spec:
    """A scenario's catalog entry as the spec the shipped entries are (``kind``: models, gpus or
    diffusion_models), with what a user entry may leave out filled in: an LLM's shapes from its
    ``config_json`` (a local Hugging Face config.json; read by the scenario's loader), display
    name, source and parameter count; a GPU's efficiencies and host overheads (the catalog's
    assumed defaults, so it is flagged as assumed), and its link (``ASSUMED_INTERCONNECT_GB_S``)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ConfigError(f"{where}: each entry is a mapping with a 'name'")
    entry = dict(raw)
    name = entry["name"]
    entry.setdefault("display_name", name)
    entry.setdefault("source", "defined in the scenario")
    if kind == "models":
        hf = entry.pop("hf_config", None)
        if hf is not None:
            entry = {**llm_from_hf_config(hf, name), **entry}
        entry.setdefault("hf_id", "")
        entry.setdefault("tie_word_embeddings", False)
        entry.setdefault("qkv_bias", False)
        cls: type[_Spec] = ModelSpec
        if "num_parameters" not in entry:
            try:
                probe = ModelSpec(**{**entry, "num_parameters": 1.0})
            except ValidationError as exc:
                raise ConfigError(f"{where} {name!r}: {_first_error(exc)}") from None
            entry["num_parameters"] = float(probe.params_total)
    elif kind == "gpus":
        defaults = _gpu_defaults()
        entry.setdefault("efficiency", defaults["efficiency"])
        entry.setdefault("overheads", defaults["overheads"])
        entry.setdefault("interconnect", "assumed PCIe Gen5 x16")
        entry.setdefault("interconnect_gb_s", ASSUMED_INTERCONNECT_GB_S)
        entry.setdefault("allreduce_latency_s", 2.0e-5)
        entry.setdefault("tdp_w", 700.0)
        price = entry.get("price")
        if isinstance(price, dict):
            entry["price"] = {"date": "given in the scenario", "source": "given in the scenario", **price}
        cls = GPUSpec
    elif kind == "diffusion_models":
        cls = DiffusionModelSpec
    else:
        raise ConfigError(f"{where}: unknown kind {kind!r}; allowed: models, gpus, diffusion_models")
    try:
        return cls(**entry)
    except ValidationError as exc:
        raise ConfigError(f"{where} {name!r}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def add_entries(kind: str, specs: list[_Spec]) -> None:
    """Add a scenario's entries to this process's catalog (again: a no-op)."""
    table = {"models": models, "gpus": gpus, "diffusion_models": diffusion_models}[kind]()
    for spec in specs:
        old = table.get(spec.name)
        if old is not None and old != spec:
            raise ConfigError(
                f"{kind}: {spec.name!r} is already in the catalog with other values; give the scenario's entry another name"
            )
        table[spec.name] = spec

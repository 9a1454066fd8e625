"""Scenario configuration: the only place YAML becomes objects.

A scenario file loads into frozen pydantic v2 models. Unknown keys, wrong types and values out
of range are rejected with one line naming the field path and what is allowed
(``load_scenario`` raises ``ConfigError``; the CLI turns it into exit code 2). Engine knobs
carry vLLM's names (``max_num_seqs``, ``max_num_batched_tokens``, ``block_size``...) so a
scenario reads like a launch command.
"""

from __future__ import annotations

import copy
import json
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sim import catalog
from sim.errors import ConfigError, ServesimError

MAX_SECONDS = 1e7
"""Longest simulated span a duration may ask for (about 116 days), and the longest one step of
a constant cost model may take: past it, times leave the range a float counts seconds in
exactly, and no machine holds the run."""
MAX_TOKENS = 10_000_000
"""Upper bound of every token-count field (lengths, engine token budgets): far beyond any
model's context, and small enough that sampled lengths stay exact in int64 and float64."""

MAX_REQUESTS = 100_000_000
"""Most arrivals one class may generate in one replication (memory: one object per request)."""


def _not_bool(value: Any) -> Any:
    # YAML turns true/false/yes/no/on/off into booleans, and pydantic's lax mode would read
    # them as 1 and 0 (or 1.0 and 0.0): a number field never takes a boolean.
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "Input should be a number, not a boolean")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
"""An integer field: booleans rejected, whole floats (2.0) accepted."""
Float = Annotated[float, BeforeValidator(_not_bool)]
"""A float field: booleans rejected; infinity and NaN are rejected by ``Strict``."""
TokenCount = Annotated[Int, Field(ge=1, le=MAX_TOKENS)]


class Strict(BaseModel):
    """Base of every config model: frozen, unknown keys rejected, floats finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- lengths


class FixedLength(Strict):
    dist: Literal["fixed"]
    value: Int = Field(ge=1, le=MAX_TOKENS)
    """Every request gets exactly this many tokens."""


class UniformLength(Strict):
    dist: Literal["uniform"]
    low: Int = Field(ge=1, le=MAX_TOKENS)
    high: Int = Field(ge=1, le=MAX_TOKENS)
    """Integers drawn uniformly from [low, high], both ends included."""

    @model_validator(mode="after")
    def _ordered(self) -> UniformLength:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


class LognormalLength(Strict):
    dist: Literal["lognormal"]
    mean: Float = Field(gt=0, le=MAX_TOKENS)
    cv: Float = Field(gt=0, le=20)
    """Coefficient of variation (std / mean) of the un-truncated lognormal."""
    min: Int = Field(default=1, ge=1, le=MAX_TOKENS)
    max: Int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    """Values are clipped to [min, max]."""

    @model_validator(mode="after")
    def _ordered(self) -> LognormalLength:
        if self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class ExponentialLength(Strict):
    dist: Literal["exponential"]
    mean: Float = Field(ge=1, le=MAX_TOKENS)
    """Geometric on {1, 2, ...} with this mean: the discrete memoryless length."""


class EmpiricalLength(Strict):
    dist: Literal["empirical"]
    values: list[TokenCount] | None = Field(default=None, min_length=1)
    weights: list[Annotated[Float, Field(ge=0)]] | None = None
    """Either values (with optional weights), or a trace whose column is resampled."""
    trace: TraceSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EmpiricalLength:
        if self.trace is not None and (self.trace.time_scale is not None or self.trace.target_rate is not None):
            raise ValueError("an empirical length uses only the trace's lengths: drop time_scale/target_rate")
        if (self.values is None) == (self.trace is None):
            raise ValueError("give exactly one of 'values' or 'trace'")
        if self.weights is not None:
            if self.values is None or len(self.weights) != len(self.values):
                raise ValueError("weights must have one entry per value")
            if sum(self.weights) <= 0:
                raise ValueError("weights must be >= 0 and not all zero")
        return self


def least_tokens(dist: Any) -> int:
    """The fewest tokens a length distribution can draw (1 where it does not bound them, or
    draws them from a trace)."""
    if isinstance(dist, FixedLength):
        return dist.value
    if isinstance(dist, UniformLength):
        return dist.low
    if isinstance(dist, LognormalLength):
        return dist.min
    if isinstance(dist, EmpiricalLength) and dist.values is not None:
        weights = dist.weights or [1.0] * len(dist.values)
        return min(v for v, w in zip(dist.values, weights) if w > 0)
    return 1


LengthDist = Annotated[
    Union[FixedLength, UniformLength, LognormalLength, ExponentialLength, EmpiricalLength],
    Field(discriminator="dist"),
]


# --------------------------------------------------------------------------- arrivals


class PoissonArrival(Strict):
    process: Literal["poisson"]
    rate: Float = Field(gt=0)
    """Mean arrivals per second."""


class GammaArrival(Strict):
    process: Literal["gamma"]
    rate: Float = Field(gt=0)
    cv: Float = Field(gt=0, le=50)
    """Coefficient of variation of inter-arrival times (1 = Poisson, > 1 bursty)."""


class ConstantArrival(Strict):
    process: Literal["constant"]
    rate: Float = Field(gt=0)


class PiecewiseArrival(Strict):
    """A non-homogeneous Poisson process whose rate follows a curve (e.g. diurnal)."""

    process: Literal["piecewise"]
    points: list[tuple[Float, Float]] = Field(min_length=1)
    """(time_s, rate) pairs, times ascending from 0."""
    interpolation: Literal["step", "linear"] = "step"
    period_s: Float | None = Field(default=None, gt=0)
    """Repeat the curve with this period (86400 for a daily cycle)."""

    @field_validator("points")
    @classmethod
    def _points(cls, pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if pts[0][0] != 0:
            raise ValueError("the first point must be at time 0")
        if any(b[0] <= a[0] for a, b in zip(pts, pts[1:])):
            raise ValueError("point times must be strictly ascending")
        if any(r < 0 for _, r in pts) or max(r for _, r in pts) <= 0:
            raise ValueError("rates must be >= 0 and not all zero")
        return pts


Arrival = Annotated[
    Union[PoissonArrival, GammaArrival, ConstantArrival, PiecewiseArrival],
    Field(discriminator="process"),
]


class TraceSource(Strict):
    """A published trace file: arrivals and lengths replayed as recorded, or rescaled."""

    path: str
    """File path, relative to the scenario file, or ``builtin:NAME`` for a shipped sample."""
    format: Literal["azure", "mooncake", "vidur", "alibaba"]
    """azure, mooncake, vidur: text requests; alibaba: image requests (Alibaba GenTD26:
    arrival times, denoising steps, images per prompt)."""
    time_scale: Float | None = Field(default=None, gt=0, le=1e6)
    """Multiply inter-arrival times by this (2 = half the rate)."""
    target_rate: Float | None = Field(default=None, gt=0)
    """Rescale arrival times so the requests the run keeps (those arriving within duration_s,
    or the first num_requests) arrive at this mean rate, in requests per second."""
    max_requests: Int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    hash_block_tokens: Int = Field(default=512, ge=1, le=MAX_TOKENS)
    """Tokens covered by one prefix hash id (Mooncake: 512)."""

    @model_validator(mode="after")
    def _one_scale(self) -> TraceSource:
        if self.time_scale is not None and self.target_rate is not None:
            raise ValueError("give at most one of 'time_scale' or 'target_rate'")
        return self


EmpiricalLength.model_rebuild()


# --------------------------------------------------------------------------- images and video

DETERMINISTIC_SAMPLERS = ("ddim", "dpmpp_2m", "unipc", "euler")
"""Same seed and schedule, same image: a retry resumes from a saved step."""
STOCHASTIC_SAMPLERS = ("ddpm", "euler_ancestral")
"""Fresh noise every step: a retry must start again."""

Sampler = Literal["ddim", "dpmpp_2m", "unipc", "euler", "ddpm", "euler_ancestral"]


class ImageSpec(Strict):
    """What an image or video request asks a diffusion pool for. Unset fields take the
    model's defaults from the diffusion catalog."""

    width: Int | None = Field(default=None, ge=8, le=16384)
    height: Int | None = Field(default=None, ge=8, le=16384)
    frames: Int | None = Field(default=None, ge=1, le=10_000)
    """Video frames (video models only; images have one)."""
    steps: Int | LengthDist | None = None
    """Denoising steps: a number, or a distribution drawn per request."""
    cfg: bool | None = None
    """Classifier-free guidance: doubles the denoiser's rows every step. Default: the
    model's (guidance-distilled models such as Flux run without)."""
    sampler: Sampler = "dpmpp_2m"
    """Deterministic (ddim, dpmpp_2m, unipc, euler) or stochastic (ddpm, euler_ancestral):
    decides whether a retry after a fault may resume from a saved step."""
    images_per_prompt: Int | LengthDist = 1
    """Images generated together for one request (one latent each)."""

    @field_validator("steps", "images_per_prompt")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        if isinstance(value, int) and not 1 <= value <= 10_000:
            raise ValueError("must be between 1 and 10000")
        return value


class RetryPolicy(Strict):
    """What happens to a request whose replica fails, and how long it may take."""

    max_retries: Int = Field(default=3, ge=0, le=1000)
    """Attempts after the first; a request that needs more is reported failed."""
    timeout_s: Float | None = Field(default=None, gt=0)
    """A request not finished this long after its arrival is abandoned and reported failed."""


class Stage(Strict):
    """One stage of a pipeline request: a text request to an LLM pool or an image request
    to a diffusion pool. The next stage starts when this one finishes."""

    name: str = Field(min_length=1)
    pool: str
    prompt_tokens: LengthDist | None = None
    output_tokens: LengthDist | None = None
    image: ImageSpec | None = None

    @model_validator(mode="after")
    def _kind(self) -> Stage:
        text = self.prompt_tokens is not None or self.output_tokens is not None
        if self.image is not None and text:
            raise ValueError("a stage is either text (prompt_tokens, output_tokens) or an image: not both")
        if self.image is None and (self.prompt_tokens is None or self.output_tokens is None):
            raise ValueError("give 'prompt_tokens' and 'output_tokens' (a text stage) or 'image' (an image stage)")
        return self


# --------------------------------------------------------------------------- SLOs and classes


class SLO(Strict):
    """Per-request latency targets; goodput counts requests meeting all of them."""

    ttft_s: Float | None = Field(default=None, gt=0)
    tpot_s: Float | None = Field(default=None, gt=0)
    e2e_s: Float | None = Field(default=None, gt=0)
    percentile: Float = Field(default=99.0, gt=0, lt=100)
    """The SLO holds when this percentile of each metric is within its target."""
    attainment: Float | None = Field(default=None, gt=0, le=1)
    """Alternatively, the SLO holds when at least this fraction of requests meets every target
    (DistServe's SLO attainment); ``percentile`` is then not used."""

    @model_validator(mode="after")
    def _targets(self) -> SLO:
        if self.attainment is not None and self.ttft_s is None and self.tpot_s is None and self.e2e_s is None:
            raise ValueError("'attainment' needs a target: give ttft_s, tpot_s or e2e_s")
        return self

    def targets(self, kind: str = "text") -> list[tuple[str, float]]:
        """``(metric, target)`` of each target that applies to a class of this kind: TTFT and
        TPOT only to text (an image or a pipeline has no token stream), E2E to every kind."""
        pairs = (("ttft_s", self.ttft_s), ("tpot_s", self.tpot_s), ("e2e_s", self.e2e_s))
        return [(m, t) for m, t in pairs if t is not None and (kind == "text" or m == "e2e_s")]


class RequestClass(Strict):
    """A stream of requests with its own arrivals, routed to one pool: text requests
    (prompt and output lengths, or a text trace), image/video requests (``image``), or
    pipelines whose stages run on several pools in turn (``stages``)."""

    name: str = Field(min_length=1)
    pool: str | None = None
    """Name of the pool that serves this class (pipelines name a pool per stage instead)."""
    arrival: Arrival | None = None
    prompt_tokens: LengthDist | None = None
    output_tokens: LengthDist | None = None
    image: ImageSpec | None = None
    """Image or video requests to a diffusion pool."""
    stages: list[Stage] | None = Field(default=None, min_length=1)
    """A pipeline: each arrival runs these stages in order, each on its own pool."""
    trace: TraceSource | None = None
    """Replay a trace (arrivals and lengths). With ``arrival`` also given, the trace only
    supplies (prompt, output) pairs, resampled jointly (Mooncake: with their prefix hash
    ids); its arrival times are not needed, so lengths-only Vidur files work here. Image
    classes take the ``alibaba`` format (arrivals, steps, images per prompt)."""
    retry: RetryPolicy = RetryPolicy()
    slo: SLO | None = None

    @property
    def kind(self) -> str:
        """text, image or pipeline."""
        if self.stages is not None:
            return "pipeline"
        if self.image is not None or (self.trace is not None and self.trace.format == "alibaba"):
            return "image"
        return "text"

    @model_validator(mode="after")
    def _sources(self) -> RequestClass:
        lengths = (self.prompt_tokens is not None, self.output_tokens is not None)
        if self.stages is not None:
            if self.pool is not None:
                raise ValueError("a pipeline names a pool per stage: drop 'pool'")
            if any(lengths) or self.image is not None or self.trace is not None:
                raise ValueError(
                    "a pipeline's stages give its work: drop 'prompt_tokens'/'output_tokens'/'image'/'trace'"
                )
            if self.arrival is None:
                raise ValueError("a pipeline needs 'arrival'")
            names = [s.name for s in self.stages]
            if len(set(names)) != len(names):
                raise ValueError(f"stage names must be unique (got {names})")
            return self
        if self.pool is None:
            raise ValueError("give 'pool' (or 'stages' for a pipeline)")
        alibaba = self.trace is not None and self.trace.format == "alibaba"
        if self.image is not None or alibaba:
            if any(lengths):
                raise ValueError("an image class has no token lengths: drop 'prompt_tokens'/'output_tokens'")
            if self.trace is not None and not alibaba:
                raise ValueError(f"an image class replays an 'alibaba' trace, not {self.trace.format!r}")
            if self.trace is None and self.arrival is None:
                raise ValueError("an image class needs 'arrival' (or an 'alibaba' trace)")
            if alibaba and self.arrival is not None:
                raise ValueError("with an 'alibaba' trace, arrivals come from the trace: drop 'arrival'")
            return self
        if self.trace is None:
            if self.arrival is None or not all(lengths):
                raise ValueError("without 'trace', give 'arrival', 'prompt_tokens' and 'output_tokens'")
        elif any(lengths):
            raise ValueError("with 'trace', lengths come from the trace: drop 'prompt_tokens'/'output_tokens'")
        elif self.arrival is not None and (self.trace.time_scale is not None or self.trace.target_rate is not None):
            raise ValueError(
                "with both 'arrival' and 'trace', arrivals come from 'arrival' and the trace only supplies "
                "lengths: drop 'trace.time_scale'/'trace.target_rate'"
            )
        return self


# --------------------------------------------------------------------------- pools


class EngineConfig(Strict):
    """vLLM engine knobs for an LLM replica (names as in vLLM's EngineArgs)."""

    scheduler: Literal["continuous", "static"] = "continuous"
    """continuous: vLLM v1 iteration-level scheduling. static: request-level batches that run
    until their longest member ends, nobody joins (the pre-Orca baseline)."""
    max_num_seqs: Int = Field(default=256, ge=1, le=MAX_TOKENS)
    max_num_batched_tokens: Int = Field(default=8192, ge=1, le=MAX_TOKENS)
    block_size: Int = Field(default=16, ge=1, le=1024)
    gpu_memory_utilization: Float = Field(default=0.9, gt=0, le=1)
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    num_gpu_blocks: Int | None = Field(default=None, ge=1, le=1_000_000_000)
    """Override the KV block count derived from memory (vLLM's num_gpu_blocks_override)."""
    max_model_len: Int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    """Longest prompt + output; default the model's max_position_embeddings."""
    activation_reserve_gib: Float | None = Field(default=None, ge=0)
    """Memory kept for activations, CUDA graphs and context; default estimated from the
    model and max_num_batched_tokens."""
    dtype: Literal["bfloat16", "fp8"] = "bfloat16"
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    capacity_scheduler_policy: Literal["max_utilization", "guaranteed_no_evict"] = "max_utilization"
    """Admission against the KV cache (continuous scheduler). max_utilization: vLLM's, admit
    while the blocks a step needs are free, preempt (recompute) the newest request when they
    run out. guaranteed_no_evict: TensorRT-LLM's default capacity scheduler, admit a request
    only when its whole prompt + output fits beside every running request's whole prompt +
    output; nothing is ever preempted."""

    @model_validator(mode="after")
    def _budget(self) -> EngineConfig:
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs ({self.max_num_seqs})"
            )
        return self

    @property
    def weight_bytes_per_elem(self) -> float:
        """Bytes per weight element: 1 for FP8 weights, else 2 (bf16)."""
        return 1.0 if self.dtype == "fp8" else 2.0

    @property
    def kv_bytes_per_elem(self) -> float:
        """Bytes per KV-cache element: "auto" keeps KV in the activation dtype (bf16), also for
        FP8-quantised weights."""
        return 1.0 if self.kv_cache_dtype == "fp8" else 2.0


class DiffusionBatching(Strict):
    """How a diffusion replica batches image and video requests."""

    policy: Literal["static", "step"] = "static"
    """static: a batch forms, runs text encode -> every step -> VAE decode, and finishes
    together; nobody joins. step: requests join and leave between denoising steps."""
    max_batch_size: Int = Field(default=4, ge=1, le=4096)
    """Most images in a batch (a request with more images than this runs alone)."""
    max_wait_s: Float = Field(default=0.0, ge=0)
    """Hold a batch that is not full until its oldest request has waited this long (from its
    arrival, as Triton's max_queue_delay); 0 dispatches whatever is waiting."""
    shapes: Literal["bucket", "pad"] = "bucket"
    """bucket: a batch holds one shape (resolution, frames, steps); pad: any shapes, padded
    to the largest latent and run for the most steps."""
    preview_every: Int = Field(default=0, ge=0)
    """Decode a preview image every k steps for "streaming" (an extra VAE decode); 0: none."""
    checkpoint_every: Int = Field(default=0, ge=0)
    """Save the latents every k steps, so a deterministic sampler resumes there after a
    fault; 0: no checkpoints."""
    gpu_memory_utilization: Float = Field(default=0.9, gt=0, le=1)
    """Fraction of GPU memory for weights, latents and activations."""


class FaultConfig(Strict):
    """Replica failures: each replica fails after an up time and comes back after a repair."""

    mtbf_s: Float | None = Field(default=None, gt=0)
    """Mean time between failures of one replica."""
    mttr_s: Float = Field(default=60.0, gt=0)
    """Mean time to repair."""
    distribution: Literal["exponential", "fixed"] = "exponential"
    """Up and repair times: exponential with these means, or exactly these values."""
    at_s: list[tuple[Int, Float]] | None = None
    """Instead of (or besides) mtbf_s: failures at given times, as (replica index, time_s)."""

    @model_validator(mode="after")
    def _some(self) -> FaultConfig:
        if self.mtbf_s is None and not self.at_s:
            raise ValueError("give 'mtbf_s' or 'at_s'")
        if self.at_s and any(t < 0 or r < 0 for r, t in self.at_s):
            raise ValueError("at_s entries are (replica index >= 0, time_s >= 0)")
        return self


class RooflineCost(Strict):
    """Analytic step cost from FLOPs and bytes against the GPU's peaks (the default)."""

    kind: Literal["roofline"] = "roofline"
    compute_efficiency: Float | None = Field(default=None, gt=0, le=1)
    bandwidth_efficiency: Float | None = Field(default=None, gt=0, le=1)
    """Override the GPU catalog's efficiency factors."""
    execution: Literal["compiled", "eager"] = "compiled"
    """Diffusion pools: how the denoiser runs. compiled (torch.compile, TensorRT, CUDA
    graphs): elementwise ops fused, the host hidden. eager (plain PyTorch, as a diffusers
    pipeline runs by default): every op a kernel dispatched from Python and every elementwise
    op's tensors through HBM; a step takes max(GPU + elementwise traffic, host dispatch)."""


class ConstantCost(Strict):
    """LLM step time = step_s + prefill_token_s x prefill tokens + decode_seq_s x decodes.
    Diffusion: a denoising step takes step_s + per_row_s x rows; a batch adds text_encode_s
    once and vae_decode_s per image."""

    kind: Literal["constant"]
    step_s: Float = Field(gt=0, le=3600)
    prefill_token_s: Float = Field(default=0.0, ge=0, le=3600)
    decode_seq_s: Float = Field(default=0.0, ge=0, le=3600)
    per_row_s: Float = Field(default=0.0, ge=0, le=3600)
    text_encode_s: Float = Field(default=0.0, ge=0, le=3600)
    vae_decode_s: Float = Field(default=0.0, ge=0, le=3600)


class ProfileCost(Strict):
    """Step costs from a calibration profile (``servesim-profile/1``, docs/profile-format.md):
    per-op timings measured (or imported from Vidur) for one model, GPU and tensor-parallel
    degree. The profile's model, kind and tp must match the pool's, and so must its GPU when it
    names one; the pool's gpu still sets memory, KV capacity and price."""

    kind: Literal["profile"]
    path: str = Field(min_length=1)
    """Profile YAML file, relative to the scenario file (``../profiles/vidur/...``) or absolute."""


CostModelConfig = Annotated[Union[RooflineCost, ConstantCost, ProfileCost], Field(discriminator="kind")]


class PoolConfig(Strict):
    """N identical replicas of one model on one GPU type, behind one router. An LLM pool
    takes ``engine``; a diffusion pool (a model from the diffusion catalog) ``batching``."""

    name: str = Field(min_length=1)
    model: str
    gpu: str
    replicas: Int = Field(default=1, ge=1, le=10_000)
    tensor_parallel_size: Int = Field(default=1, ge=1, le=64)
    engine: EngineConfig = EngineConfig()
    batching: DiffusionBatching | None = None
    """Diffusion pools only (default: static batches of up to 4 images)."""
    router: Literal["round_robin", "least_outstanding", "jsq_tokens"] = "round_robin"
    cost_model: CostModelConfig = RooflineCost()
    price_per_gpu_hour: Float | None = Field(default=None, gt=0)
    """Override the catalog's dated price ($ per GPU-hour)."""
    faults: FaultConfig | None = None

    @property
    def is_diffusion(self) -> bool:
        return self.model in catalog.diffusion_models()

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        """A pool written out holds only the block its kind takes (an LLM pool no ``batching``, a
        diffusion pool no ``engine``), so that what is written parses back: scenario.json, a
        plan's fleet.yaml and overrides applied to a parsed scenario."""
        data = handler(self)
        if isinstance(data, dict):
            data.pop("engine" if self.is_diffusion else "batching", None)
        return data

    @property
    def diffusion(self) -> DiffusionBatching:
        return self.batching or DiffusionBatching()

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name not in catalog.models() and name not in catalog.diffusion_models():
            allowed = [*catalog.models(), *catalog.diffusion_models()]
            raise ValueError(f"unknown model {name!r}; allowed: {', '.join(allowed)}")
        return name

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, name: str) -> str:
        if name not in catalog.gpus():
            raise ValueError(f"unknown gpu {name!r}; allowed: {', '.join(catalog.gpus())}")
        return name

    @model_validator(mode="after")
    def _tp(self) -> PoolConfig:
        tp = self.tensor_parallel_size
        if self.is_diffusion:
            if "engine" in self.model_fields_set:
                raise ValueError(f"{self.model} is a diffusion model: its pool takes 'batching', not 'engine'")
            if tp != 1:
                raise ValueError(f"tensor_parallel_size must be 1 for diffusion model {self.model} (got {tp})")
            return self
        if self.batching is not None:
            raise ValueError(f"{self.model} is an LLM: its pool takes 'engine', not 'batching'")
        spec = catalog.get_model(self.model)
        if spec.num_attention_heads % tp:
            raise ValueError(
                f"tensor_parallel_size {tp} must divide num_attention_heads "
                f"({spec.num_attention_heads}) of {self.model}"
            )
        if self.engine.dtype == "fp8" and catalog.get_gpu(self.gpu).fp8_tflops is None:
            raise ValueError(f"gpu {self.gpu} has no FP8 support; use dtype: bfloat16")
        return self


# --------------------------------------------------------------------------- scenario


class PlanPoolSpace(Strict):
    """What ``servesim plan`` may choose for one pool (each list: the options tried; left out:
    the plan-wide option, else the pool's own setting)."""

    gpus: list[str] | None = Field(default=None, min_length=1)
    tensor_parallel_size: list[Annotated[Int, Field(ge=1, le=64)]] | None = Field(default=None, min_length=1)
    models: list[str] | None = Field(default=None, min_length=1)
    """Alternative models serving the same classes (e.g. sdxl vs flux-schnell)."""
    variants: list[dict[str, Any]] | None = Field(default=None, min_length=1)
    """Knob alternatives: each a mapping of pool fields, dotted (``engine.max_num_seqs: 128``,
    ``batching.max_batch_size: 8``, ``router: jsq_tokens``), applied over the pool."""
    max_replicas: Int | None = Field(default=None, ge=1, le=10_000)

    @field_validator("gpus")
    @classmethod
    def _known_gpus(cls, names: list[str] | None) -> list[str] | None:
        for name in names or ():
            if name not in catalog.gpus():
                raise ValueError(f"unknown gpu {name!r}; allowed: {', '.join(catalog.gpus())}")
        return names

    @field_validator("models")
    @classmethod
    def _known_models(cls, names: list[str] | None) -> list[str] | None:
        known = [*catalog.models(), *catalog.diffusion_models()]
        for name in names or ():
            if name not in known:
                raise ValueError(f"unknown model {name!r}; allowed: {', '.join(known)}")
        return names


class PlanLayout(Strict):
    """One way to lay the classes out on pools. ``merge`` joins pools of the scenario into one
    shared pool (the first listed gives its knobs); pools not merged stay as they are."""

    name: str = Field(min_length=1)
    merge: dict[str, list[str]] = {}


class PlanConfig(Strict):
    """The search space and the statistics of ``servesim plan``."""

    gpus: list[str] | None = Field(default=None, min_length=1)
    """GPU types tried for every pool (default: each pool's own)."""
    tensor_parallel_size: list[Annotated[Int, Field(ge=1, le=64)]] | None = Field(default=None, min_length=1)
    """TP degrees tried for every LLM pool (default: each pool's own)."""
    prices: dict[str, Annotated[Float, Field(gt=0)]] = {}
    """$ per GPU-hour by GPU type, overriding the catalog's dated prices."""
    max_replicas: Int = Field(default=64, ge=1, le=10_000)
    """Most replicas of one pool; a candidate that needs more is rejected."""
    replications: Int = Field(default=3, ge=2, le=100)
    """Seeded replications per evaluation (the CI of each percentile comes from them)."""
    max_replications: Int = Field(default=8, ge=2, le=1000)
    """When the CI of a check still straddles its target, add replications up to this many."""
    duration_s: Float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    """Arrivals per evaluation (default: the scenario's duration_s)."""
    pools: dict[str, PlanPoolSpace] = {}
    """Per-pool search space, by pool name (a merged pool: by its new name)."""
    layouts: list[PlanLayout] | None = Field(default=None, min_length=1)
    """Pool layouts to compare (e.g. split vs shared); default: the scenario's own."""

    @field_validator("gpus")
    @classmethod
    def _known_gpus(cls, names: list[str] | None) -> list[str] | None:
        return PlanPoolSpace._known_gpus(names) if names else names

    @field_validator("prices")
    @classmethod
    def _priced_gpus(cls, prices: dict[str, float]) -> dict[str, float]:
        PlanPoolSpace._known_gpus(list(prices))
        return prices

    @model_validator(mode="after")
    def _reps(self) -> PlanConfig:
        if self.max_replications < self.replications:
            raise ValueError(
                f"max_replications ({self.max_replications}) must be >= replications ({self.replications})"
            )
        names = [layout.name for layout in self.layouts or ()]
        if len(set(names)) != len(names):
            raise ValueError(f"layout names must be unique (got {names})")
        return self


def _include_catalog_files(data: dict) -> dict:
    """A catalog block's ``files`` (catalog files several scenarios share: ``models``, ``gpus``
    and ``diffusion_models`` lists at their top level) merged into its own lists; an LLM's
    ``config_json`` in a file is relative to that file."""
    files = data.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ValueError("files: a list of catalog file paths")
    out = {k: list(v) for k, v in data.items() if k != "files" and isinstance(v, list)}
    out.update({k: v for k, v in data.items() if k != "files" and not isinstance(v, list)})
    for i, name in enumerate(files):
        path = Path(name)
        try:
            raw = read_yaml(path, "catalog file")
        except ConfigError as exc:
            raise ValueError(f"files.{i}: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"files.{i}: {path} is not a mapping of models, gpus and diffusion_models")
        unknown = sorted(set(raw) - {"models", "gpus", "diffusion_models"})
        if unknown:
            raise ValueError(f"files.{i}: {path}: unknown key {unknown[0]!r}; allowed: models, gpus, diffusion_models")
        for kind in ("models", "gpus", "diffusion_models"):
            entries = raw.get(kind) or []
            if not isinstance(entries, list):
                raise ValueError(f"files.{i}: {path}: {kind} is not a list")
            for entry in entries:
                if kind == "models" and isinstance(entry, dict) and isinstance(entry.get("config_json"), str):
                    entry = {**entry, "config_json": str(path.parent / Path(entry["config_json"]).expanduser())}
                out.setdefault(kind, []).append(entry)
    return out


class ScenarioCatalog(Strict):
    """LLMs, GPUs and diffusion pipelines the shipped catalog lacks, defined by the scenario.
    Each entry is written as in ``sim/catalog/data/*.yaml`` (with its ``name``) and validated the
    same way. An LLM may give ``config_json: path/to/config.json`` (a Hugging Face config file you
    have; relative to the scenario file) instead of its shapes; a GPU needs only its peaks
    (``bf16_tflops``, ``memory_gib``, ``hbm_tb_s``) and ``price: {usd_per_gpu_hour: ...}``, its
    roofline efficiencies then being the catalog's assumed defaults. ``files: [...]`` reads in
    catalog files several scenarios share (their ``models``, ``gpus`` and ``diffusion_models``
    lists). A name already in the catalog with other values is an error."""

    files: list[str] = Field(default_factory=list, exclude=True)
    """Catalog files read in (relative to the scenario file); once read, their entries stand in
    the lists below and the paths are not kept (nor written out)."""
    models: list[dict[str, Any]] = Field(default_factory=list)
    gpus: list[dict[str, Any]] = Field(default_factory=list)
    diffusion_models: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _read_configs(cls, data: Any) -> Any:
        """``files`` are read in (their entries join the scenario's own), and an LLM's
        ``config_json`` becomes its shapes, so that the scenario stands alone once read
        (scenario.json holds the entries, not the paths)."""
        if isinstance(data, dict) and "files" in data:
            data = _include_catalog_files(data)
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            return data
        models = []
        for i, entry in enumerate(data["models"]):
            if isinstance(entry, dict) and "config_json" in entry:
                entry = dict(entry)
                path = Path(str(entry.pop("config_json")))
                try:
                    config = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise ValueError(f"models.{i}.config_json: cannot read {path} as JSON ({exc})") from None
                if not isinstance(config, dict):
                    raise ValueError(f"models.{i}.config_json: {path} is not a JSON object")
                name = entry.get("name", f"models.{i}")
                entry = {**catalog.llm_from_hf_config(config, name), **entry}
            models.append(entry)
        return {**data, "models": models}

    @model_validator(mode="after")
    def _add(self) -> ScenarioCatalog:
        try:
            self.add()
        except ServesimError as exc:
            raise ValueError(str(exc)) from None
        return self

    def add(self) -> None:
        """Add the entries to this process's catalog (every process that simulates the scenario
        calls it; adding again is a no-op)."""
        for kind in ("models", "gpus", "diffusion_models"):
            specs = [catalog.entry_spec(kind, raw, f"{kind}.{i}") for i, raw in enumerate(getattr(self, kind))]
            catalog.add_entries(kind, specs)


class Scenario(Strict):
    """One question about a fleet: pools of replicas, request classes, how long to run."""

    name: str = Field(min_length=1)
    description: str = ""
    seed: Int = Field(default=0, ge=0)
    replications: Int = Field(default=1, ge=1, le=1000)
    """Independent seeded runs; percentiles get confidence intervals across them."""
    duration_s: Float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    """Arrivals are generated for this long (traces: cut at this time)."""
    num_requests: Int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    """Alternatively (or also), stop generating after this many arrivals per class."""
    warmup_s: Float = Field(default=0.0, ge=0)
    """Requests arriving before this time are simulated but left out of the summary."""
    drain_timeout_s: Float | None = Field(default=None, gt=0)
    """Stop at last arrival + this; unfinished requests are reported in flight. None: run
    until every request has finished or been rejected."""
    catalog: ScenarioCatalog | None = None
    """Models, GPUs and diffusion pipelines the scenario defines (validated before its pools,
    which may use them)."""
    pools: list[PoolConfig] = Field(min_length=1)
    classes: list[RequestClass] = Field(min_length=1)
    slo: SLO | None = None
    """Default SLO for classes that give none."""
    plan: PlanConfig | None = None
    """What ``servesim plan`` searches over (``run`` ignores it)."""

    @model_validator(mode="after")
    def _links(self) -> Scenario:
        pool_names = [p.name for p in self.pools]
        if len(set(pool_names)) != len(pool_names):
            raise ValueError(f"pool names must be unique (got {pool_names})")
        class_names = [c.name for c in self.classes]
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"class names must be unique (got {class_names})")
        pools = {p.name: p for p in self.pools}
        for c in self.classes:
            targets = [
                (s.pool, "image" if s.image is not None else "text", f"stage {s.name!r} of ") for s in c.stages or ()
            ]
            if c.pool is not None:
                targets.append((c.pool, c.kind, ""))
            for pool, kind, where in targets:
                if pool not in pools:
                    raise ValueError(
                        f"{where}class {c.name!r} routes to unknown pool {pool!r}; pools: {', '.join(pool_names)}"
                    )
                diffusion = pools[pool].is_diffusion
                if kind == "image" and not diffusion:
                    raise ValueError(
                        f"{where}class {c.name!r} sends images to pool {pool!r}, which serves the LLM {pools[pool].model}"
                    )
                if kind == "text" and diffusion:
                    raise ValueError(
                        f"{where}class {c.name!r} sends text to pool {pool!r}, which serves the diffusion model {pools[pool].model}"
                    )
        if self.duration_s is not None and self.warmup_s >= self.duration_s:
            raise ValueError(
                f"warmup_s ({self.warmup_s:g}) must be < duration_s ({self.duration_s:g}): nothing would be measured"
            )
        if "all" in class_names and len(class_names) > 1:
            raise ValueError("class name 'all' is reserved for the whole-fleet summary row; rename the class")
        for c in self.classes:
            if c.arrival is not None and self.duration_s is None and self.num_requests is None:
                raise ValueError(f"class {c.name!r} has a synthetic arrival process: give duration_s or num_requests")
        for c in self.classes:
            if c.arrival is None or self.duration_s is None:
                continue
            # Arrivals are drawn at the peak rate over duration_s (piecewise: then thinned).
            peak = max(r for _, r in c.arrival.points) if isinstance(c.arrival, PiecewiseArrival) else c.arrival.rate
            expected = peak * self.duration_s
            # Piecewise arrivals are thinned from the whole duration even when num_requests cuts them.
            if self.num_requests is not None and not isinstance(c.arrival, PiecewiseArrival):
                expected = min(expected, self.num_requests)
            if expected > MAX_REQUESTS:
                raise ValueError(
                    f"class {c.name!r} would generate about {expected:.3g} arrivals (rate x duration_s), more than "
                    f"the {MAX_REQUESTS:,} allowed per class; lower the rate or duration_s, or set num_requests"
                )
        for pool in self.pools:
            for i, at in (pool.faults.at_s or ()) if pool.faults is not None else ():
                if i >= pool.replicas:
                    raise ValueError(
                        f"pools.{pool.name}.faults.at_s: replica index {i} at {at:g} s, but the pool has "
                        f"{pool.replicas} replica(s) (indices 0-{pool.replicas - 1})"
                    )
        for c in self.classes:
            # a class none of whose requests could ever fit its pool serves nothing: say so now
            if (
                c.kind != "text"
                or c.pool is None
                or c.trace is not None
                or c.prompt_tokens is None
                or c.output_tokens is None
            ):
                continue
            pool = pools[c.pool]
            limit = pool.engine.max_model_len or catalog.get_model(pool.model).max_position_embeddings
            least = least_tokens(c.prompt_tokens) + least_tokens(c.output_tokens)
            if least > limit:
                raise ValueError(
                    f"class {c.name!r}: every request needs at least {least:,} tokens (prompt + output), more than the "
                    f"max_model_len ({limit:,}) of pool {c.pool!r}: none could be served; shorten the lengths or raise "
                    "engine.max_model_len (up to the model's context)"
                )
        if self.plan is not None:
            self._check_plan(pools)
        return self

    def _check_plan(self, pools: dict[str, PoolConfig]) -> None:
        names = set(pools)
        for layout in self.plan.layouts or ():
            seen: set[str] = set()
            for new, members in layout.merge.items():
                where = f"plan.layouts.{layout.name}.merge.{new}"
                if len(members) < 2:
                    raise ValueError(f"{where}: merge at least two pools (got {members})")
                for m in members:
                    if m not in pools:
                        raise ValueError(f"{where}: unknown pool {m!r}; pools: {', '.join(pools)}")
                    if m in seen:
                        raise ValueError(f"{where}: pool {m!r} is merged twice")
                    seen.add(m)
                models = {pools[m].model for m in members}
                if len(models) > 1:
                    raise ValueError(f"{where}: merged pools must serve one model (got {', '.join(sorted(models))})")
                if new in pools and new not in members:
                    raise ValueError(f"{where}: name {new!r} is already a pool; pick another name")
                names.add(new)
        for name in self.plan.pools:
            if name not in names:
                raise ValueError(f"plan.pools.{name}: unknown pool; pools: {', '.join(sorted(names))}")
        # A variant naming a field no pool has is a typo, not a fleet that fails its SLOs.
        for name, space in self.plan.pools.items():
            base = pools.get(name)
            if base is None or not space.variants:
                continue
            raw = base.model_dump(exclude_unset=True)
            for i, variant in enumerate(space.variants):
                try:
                    PoolConfig.model_validate(
                        apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in variant.items()])
                    )
                except ConfigError as exc:
                    raise ValueError(f"plan.pools.{name}.variants.{i}: {exc}") from None
                except ValidationError as exc:
                    unknown = [e for e in exc.errors() if e["type"] == "extra_forbidden"]
                    if unknown:
                        field = ".".join(str(x) for x in unknown[0]["loc"])
                        allowed = _allowed_fields(("pools", 0, *unknown[0]["loc"][:-1]))
                        raise ValueError(
                            f"plan.pools.{name}.variants.{i}: {field} is not a pool field"
                            + (f"; allowed: {', '.join(allowed)}" if allowed else "")
                        ) from None

    def pool(self, name: str) -> PoolConfig:
        return next(p for p in self.pools if p.name == name)

    def slo_for(self, cls: RequestClass) -> SLO | None:
        return cls.slo if cls.slo is not None else self.slo


# --------------------------------------------------------------------------- loading


MAX_YAML_BYTES = 16 * 2**20
"""Largest YAML input read (a scenario is a few kB; a plan grid or price list, tens)."""
MAX_YAML_DEPTH = 64
"""Deepest nesting of mappings and lists (scenarios need about 6)."""
MAX_YAML_VALUES = 200_000
"""Most values a document may expand to once its aliases are followed (an alias bomb of a few
hundred bytes expands to billions)."""


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader with limits and YAML 1.2 readings of scalars.

    * duplicate keys in a mapping are an error (PyYAML keeps the last silently);
    * integers are decimal, ``0x`` hex or ``0o`` octal, floats have no ``:`` sexagesimal form,
      and booleans are ``true``/``false`` only, as YAML 1.2's core schema reads them: YAML 1.1
      turns ``replicas: 010`` into 8, ``duration_s: 1:30`` into 90 and ``on`` into true;
    * nesting deeper than ``MAX_YAML_DEPTH`` is an error at the line it happens.
    """

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base constructor reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (each key may appear once in a mapping)", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.yaml_implicit_resolvers = {k: [r for r in v if r[0] not in (
    "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool")] for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}  # fmt: skip
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9_]+|0x[0-9a-fA-F_]+|0o[0-7_]+)$"), list("-+0123456789")
)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_int(loader: _StrictLoader, node) -> int:
    text = loader.construct_scalar(node).replace("_", "")
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 16) if text.startswith("0x") else int(text, 10)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _expanded_size(value: Any, limit: int) -> int:
    """How many values ``value`` holds once every shared (aliased) part is counted each time it
    is referenced; stops counting past ``limit``. Linear in the distinct objects."""
    memo: dict[int, int] = {}

    def size(v: Any) -> int:
        if not isinstance(v, dict | list):
            return 1
        key = id(v)
        if key not in memo:
            memo[key] = limit + 1  # a cycle counts as too big
            items = list(v.keys()) + list(v.values()) if isinstance(v, dict) else v
            total = 1
            for item in items:
                total += size(item)
                if total > limit:
                    break
            memo[key] = total
        return memo[key]

    return size(value)


def parse_yaml_text(text: str, shown: str) -> Any:
    """Parse YAML ``text`` with ``_StrictLoader`` and the size limits; problems are a one-line
    ConfigError naming ``shown`` and, where the parser knows it, the line and column."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise ConfigError(f"{shown}: larger than {MAX_YAML_BYTES // 2**20} MiB; YAML inputs are expected to be small")
    try:
        value = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark else str(shown)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{shown}: nested too deeply (at most {MAX_YAML_DEPTH} levels)") from None
    if _expanded_size(value, MAX_YAML_VALUES) > MAX_YAML_VALUES:
        raise ConfigError(
            f"{shown}: expands to more than {MAX_YAML_VALUES:,} values once its aliases (*name) are followed; "
            "write the values out or use fewer aliases"
        )
    return value


def read_yaml(path: Path, what: str, shown: Path | None = None) -> Any:
    """Parse a YAML file; a syntax error, a binary file or an unreadable one is a one-line
    ConfigError naming ``shown`` (default ``path``) and, for syntax, the line and column. Read
    with ``_StrictLoader`` (no duplicate keys, YAML 1.2 scalars, bounded depth) and bounded
    size and alias expansion."""
    shown = shown or path
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(
                f"{shown}: larger than {MAX_YAML_BYTES // 2**20} MiB; YAML inputs are expected to be small"
            )
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not a text (UTF-8) file") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read {what}: {exc.strerror or exc}") from None
    return parse_yaml_text(text, str(shown))


def load_scenario(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Scenario, Path]:
    """Read, override and validate a scenario file. Returns the scenario and its directory
    (trace paths are relative to it). Raises ConfigError with a one-line message."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a scenario file")
    if not path.is_file():
        raise ConfigError(f"{path}: scenario file not found")
    raw = read_yaml(path, "scenario file")
    if raw is None:
        raise ConfigError(f"{path}: scenario file is empty; a scenario must be a YAML mapping of fields")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a scenario must be a YAML mapping of fields (got {type(raw).__name__})")
    raw = apply_overrides(raw, overrides)
    cat = raw.get("catalog")
    if isinstance(cat, dict):  # paths in the catalog block are relative to the scenario file
        for entry in cat.get("models") if isinstance(cat.get("models"), list) else ():
            if isinstance(entry, dict) and isinstance(entry.get("config_json"), str):
                entry["config_json"] = str(path.parent / Path(entry["config_json"]).expanduser())
        if isinstance(cat.get("files"), list):
            cat["files"] = [str(path.parent / Path(f).expanduser()) if isinstance(f, str) else f for f in cat["files"]]
    return parse_scenario(raw, source=str(path)), path.parent


def parse_scenario(raw: dict[str, Any], source: str = "scenario") -> Scenario:
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc)}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML). List items are addressed by
    index (``pools.0.replicas``) or by name (``pools.chat.replicas``)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE")
        try:
            value = parse_yaml_text(text, f"--set {key}")
        except ConfigError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
        parts = key.split(".")
        node: Any = raw
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                idx = _list_index(node, part)
                if idx is None:
                    raise ConfigError(f"--set {key}: no item {part!r} in list {'.'.join(parts[:i]) or '(top)'}")
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(f"--set {key}: {where} is not a mapping or list")
    return raw


def _list_index(items: list[Any], part: str) -> int | None:
    if part.lstrip("-").isdigit():
        idx = int(part)
        return idx if -len(items) <= idx < len(items) else None
    for idx, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return idx
    return None


def format_validation_error(exc: ValidationError) -> str:
    """One line: the first error's field path, what is wrong and what is allowed.

    The path is the one in the user's YAML (``classes.0.arrival.rate``): pydantic's location
    also names the member chosen in a tagged union (``classes.0.arrival.poisson.rate``), which
    is not a key anywhere in the file, so those elements are left out."""
    errors = exc.errors()
    err = errors[0]
    shown_loc, _ = _walk(err["loc"])
    path = ".".join(shown_loc) or "(top level)"
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_fields(err["loc"][:-1])
        msg = f"{path}: unknown field" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    elif kind == "missing":
        msg = f"{path}: required field is missing"
    elif kind == "model_type":
        msg = f"{path}: expected a mapping of fields (a valid dictionary), got {yaml_type(got)}"
    else:
        text = err["msg"].removeprefix("Value error, ")
        value = short_repr(got)
        # Validators that quote a bad string already ("unknown model 'x'") need no "(got 'x')".
        repeated = isinstance(got, str) and value in text
        shown = "" if isinstance(got, dict | list) or got is None or repeated else f" (got {value})"
        msg = f"{path}: {text}{shown}"
    more = len(errors) - 1
    msg += f" (and {more} more error{'s' * (more > 1)})" if more else ""
    return " ".join(msg.splitlines())


def short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def yaml_type(value: Any) -> str:
    """What a YAML value is, in YAML's words."""
    if value is None:
        return "nothing (null)"
    for tp, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string")):
        if isinstance(value, tp):  # bool before int: a bool is an int
            return name
    return {list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _walk(loc: tuple[Any, ...]) -> tuple[list[str], Any]:
    """Follow an error location through the schema. Returns the location as the user's YAML
    spells it (tags of tagged unions dropped) and the type found at its end (a model class
    where the location names one; None where the walk left the schema)."""
    model: Any = Scenario
    shown: list[str] = []
    for part in loc:
        if isinstance(part, int):
            shown.append(str(part))
            continue
        if typing.get_origin(model) is dict:  # a mapping of user-named entries (plan.pools.<name>)
            shown.append(str(part))
            model = _unwrap(typing.get_args(model)[1])
            continue
        fields = getattr(model, "model_fields", None)
        if isinstance(fields, dict) and part in fields:
            model = _unwrap(fields[part].annotation)
            shown.append(part)
            continue
        member = _union_member(model, part)
        if member is not model:
            # A discriminated union: the location names the tag of the chosen member.
            model = member
            continue
        shown.append(str(part))
        model = None
    return shown, model


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    """Walk the schema along an error location to list the fields allowed there."""
    _, model = _walk(loc)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (list, tuple):
        return _unwrap(typing.get_args(tp)[0])
    if origin in (Union, __import__("types").UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        return members[0] if len(members) == 1 else tp
    return tp


def _union_member(tp: Any, tag: Any) -> Any:
    for member in typing.get_args(_unwrap(tp)) or ():
        fields = getattr(member, "model_fields", {})
        for f in fields.values():
            args = typing.get_args(f.annotation)
            if typing.get_origin(f.annotation) is Literal and tag in args:
                return member
    return tp

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
from sim.diffusion.cost import eight_bit_peak_tflops
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

    # use_attribute_docstrings: the docstring under each field is its description (in the JSON
    # Schema, and in the reference that sim.docgen.reference writes from it).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True)


# --------------------------------------------------------------------------- lengths


class FixedLength(Strict):
    """``dist: fixed``: one length for every request."""

    dist: Literal["fixed"]
    """Selects this distribution."""
    value: Int = Field(ge=1, le=MAX_TOKENS)
    """Every request gets exactly this many tokens."""


class UniformLength(Strict):
    """``dist: uniform``: integers drawn uniformly from [``low``, ``high``], both ends included."""

    dist: Literal["uniform"]
    """Selects this distribution."""
    low: Int = Field(ge=1, le=MAX_TOKENS)
    """Smallest value; at most ``high``."""
    high: Int = Field(ge=1, le=MAX_TOKENS)
    """Largest value."""

    @model_validator(mode="after")
    def _ordered(self) -> UniformLength:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


class LognormalLength(Strict):
    """``dist: lognormal``: lognormal draws, rounded to the nearest integer, then clipped to
    [``min``, ``max``]."""

    dist: Literal["lognormal"]
    """Selects this distribution."""
    mean: Float = Field(gt=0, le=MAX_TOKENS)
    """Mean of the un-clipped lognormal. Clipping moves the sample mean: the quickstart's
    prompts (mean 1000, cv 1, max 6000) average about 990 tokens."""
    cv: Float = Field(gt=0, le=20)
    """Coefficient of variation (std / mean) of the un-clipped lognormal."""
    min: Int = Field(default=1, ge=1, le=MAX_TOKENS)
    """Lower clip; at most ``max``."""
    max: Int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    """Upper clip; ``null``: 10,000,000."""

    @model_validator(mode="after")
    def _ordered(self) -> LognormalLength:
        if self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class ExponentialLength(Strict):
    """``dist: exponential``: geometric on {1, 2, ...}, the discrete memoryless length."""

    dist: Literal["exponential"]
    """Selects this distribution."""
    mean: Float = Field(ge=1, le=MAX_TOKENS)
    """Mean length (success probability 1/``mean``; ``mean: 1`` always gives 1). Draws are
    capped at 10,000,000."""


class EmpiricalLength(Strict):
    """``dist: empirical``: resample observed lengths, either a list you give or a column of a
    trace file."""

    dist: Literal["empirical"]
    """Selects this distribution."""
    values: list[TokenCount] | None = Field(default=None, min_length=1)
    """Lengths to draw from (with replacement). Give exactly one of ``values`` and ``trace``."""
    weights: list[Annotated[Float, Field(ge=0)]] | None = None
    """Relative probabilities of the ``values``: one per value, not all 0; only with ``values``.
    ``null``: equally likely."""
    trace: TraceSource | None = None
    """Draw from a trace file's column: its prompt lengths when used for ``prompt_tokens``, its
    output lengths for ``output_tokens``; no ``time_scale`` or ``target_rate``. All rows are
    used, or the first ``max_requests`` in file order; ``hash_block_tokens`` is ignored. Prompt
    and output are drawn independently (use a class-level ``trace`` with ``arrival`` to keep
    pairs). Lengths-only Vidur files (no ``arrived_at`` column) work here."""

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
    """``process: poisson``: exponential inter-arrival times, so independent arrivals at a
    constant mean rate."""

    process: Literal["poisson"]
    """Selects this process."""
    rate: Float = Field(gt=0)
    """Mean arrivals per second."""


class GammaArrival(Strict):
    """``process: gamma``: gamma-distributed inter-arrival times; Poisson-like at ``cv`` 1,
    burstier above, more regular below."""

    process: Literal["gamma"]
    """Selects this process."""
    rate: Float = Field(gt=0)
    """Mean arrivals per second."""
    cv: Float = Field(gt=0, le=50)
    """Coefficient of variation (std / mean) of the inter-arrival times (gamma shape 1/cv²)."""


class ConstantArrival(Strict):
    """``process: constant``: evenly spaced arrivals at 1/rate, 2/rate, ... (the first is at
    1/rate, not at 0)."""

    process: Literal["constant"]
    """Selects this process."""
    rate: Float = Field(gt=0)
    """Arrivals per second."""


class PiecewiseArrival(Strict):
    """``process: piecewise``: a non-homogeneous Poisson process whose rate follows a curve, e.g.
    a daily cycle (generated by thinning a Poisson process at the curve's peak)."""

    process: Literal["piecewise"]
    """Selects this process."""
    points: list[tuple[Float, Float]] = Field(min_length=1)
    """The rate curve, as ``[time_s, rate]`` pairs: the first at time 0, times strictly
    ascending, rates ≥ 0 and not all 0. After the last point the last rate holds (unless
    ``period_s`` repeats the curve)."""
    interpolation: Literal["step", "linear"] = "step"
    """``step``: each rate holds until the next point. ``linear``: the rate ramps linearly
    between points."""
    period_s: Float | None = Field(default=None, gt=0)
    """Repeat the curve with this period (86400 for a daily cycle); times are taken modulo it."""

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


class ClosedArrival(Strict):
    """A closed loop: ``users`` users, each sending a request, waiting for its answer (finished,
    rejected or failed), thinking, then sending the next. The load follows the fleet's speed
    (as ``vllm bench serve --max-concurrency`` and chat users do) instead of a fixed rate. With
    a conversation trace (sharegpt), each user plays one conversation's turns in order, then the
    next conversation."""

    process: Literal["closed"]
    """Selects this process."""
    users: Int = Field(ge=1, le=1_000_000)
    """Concurrent users (requests in flight, think time aside)."""
    think_time_s: Float = Field(default=0.0, ge=0, le=1e6)
    """Mean think time between an answer and the user's next request, in seconds."""
    think: Literal["exponential", "fixed"] = "exponential"
    """Think times drawn exponentially around the mean, or always the mean."""
    ramp_s: Float = Field(default=0.0, ge=0, le=1e6)
    """Users start evenly spread over this many seconds (0: all at once, as a benchmark does)."""


Arrival = Annotated[
    Union[PoissonArrival, GammaArrival, ConstantArrival, PiecewiseArrival, ClosedArrival],
    Field(discriminator="process"),
]


class TraceColumns(Strict):
    """Column names of a generic CSV trace."""

    arrival: str | None = None
    """Arrival time column (unit: ``time_unit``); without it the file gives lengths only."""
    prompt: str
    """Prompt tokens column."""
    output: str
    """Output tokens column."""


class TraceSource(Strict):
    """A published trace file: arrivals and lengths replayed as recorded, or rescaled. Used as a
    class's ``trace`` (replay) and as an ``empirical`` length's ``trace``. Token counts of 0 in a
    file are read as 1. The shipped samples are described in ``sim/data/traces/README.md``; no
    sample of the ``alibaba`` trace is shipped (it is published without a licence).

    The published formats: ``azure``, CSV ``TIMESTAMP,ContextTokens,GeneratedTokens``
    (wall-clock times); ``mooncake``, JSON Lines with ``timestamp`` (ms), ``input_length``,
    ``output_length`` and optional ``hash_ids`` (prefix hashes, which drive prefix caching);
    ``vidur``, CSV ``arrived_at`` (s), ``num_prefill_tokens``, ``num_decode_tokens``;
    ``alibaba`` (images, as an image class's ``trace`` only, without ``arrival``), the Alibaba
    GenTD26 image-request CSV (``lora_request_trace.csv``): ``gmt_create`` (wall-clock, 1 s
    resolution), ``num_inference_steps`` and ``num_images_per_prompt`` of the rows whose
    ``predict_status`` is ``SUCCEED``. Arrivals are sorted and shifted to start at 0."""

    path: str
    """The trace file, relative to the scenario file's directory, ``builtin:NAME`` or
    ``shared:PATH``. ``builtin:`` names a shipped sample: ``azure_conv_2023.csv``,
    ``azure_code_2023_sample.csv``, ``mooncake_conversation_sample.jsonl``,
    ``vidur_splitwise_conv_sample.csv``, ``servegen_deepseek_r1_chunk-70-trace.csv``, or a format
    example written for servesim: ``burstgpt_format_example.csv``, ``requests_log_example.csv``,
    ``vllm_bench_example.json``, ``sharegpt_example.json``. ``shared:`` is a path inside a shared data folder:
    ``$SERVESIM_SHARED``, else the first folder named ``shared`` in the scenario's folder or one
    of its parents."""
    format: Literal["azure", "mooncake", "vidur", "burstgpt", "csv", "vllm-bench", "sharegpt", "servegen", "alibaba"]
    """Text requests: azure, mooncake, vidur (published traces), burstgpt, csv (columns named in
    ``columns``), vllm-bench (a ``vllm bench serve --save-result`` JSON), sharegpt (conversations:
    turns with a growing shared prefix; needs ``arrival``), servegen (a client's arrival and length
    fits, generated seeded). Image requests: alibaba (Alibaba GenTD26: arrival times, denoising
    steps, images per prompt)."""
    columns: TraceColumns | None = None
    """csv: which columns hold the arrival time, prompt tokens and output tokens."""
    time_unit: Literal["s", "ms", "us", "datetime"] = "s"
    """csv: unit of the arrival column (datetime: date-time text such as 2026-01-31 13:05:00)."""
    where: dict[str, str | list[str]] | None = None
    """burstgpt, csv: keep only rows whose column holds one of these values, e.g.
    ``{Model: ChatGPT, Log Type: Conversation log}``."""
    chars_per_token: Float = Field(default=4.0, gt=0, le=100)
    """sharegpt: characters of text per token when no ``tokenizer`` is given (4: OpenAI's rule of
    thumb for English)."""
    tokenizer: str | None = None
    """sharegpt: a local Hugging Face tokenizer folder to count tokens with (needs transformers;
    nothing is downloaded)."""
    start_s: Float = Field(default=0.0, ge=0)
    """Skip the trace's first start_s seconds (servegen: start this far into the client's day)."""
    rate_scale: Float | None = Field(default=None, gt=0, le=1e6)
    """servegen: multiply every 10-minute window's rate by this (as many clients alike sending
    together), keeping the day's shape, each window's CV and the lengths; the run keeps its
    real clock (unlike ``time_scale``)."""
    time_scale: Float | None = Field(default=None, gt=0, le=1e6)
    """Multiply every inter-arrival time by this (2 = half the rate). Not with
    ``target_rate``; replay only (not with ``arrival``, not in an ``empirical`` length)."""
    target_rate: Float | None = Field(default=None, gt=0)
    """Rescale arrival times so the requests the run keeps arrive at this many requests per
    second: those within ``duration_s`` when it is set (a multi-day trace's first hour is then
    at this rate, not the days' average), else the first ``num_requests``, else the whole trace
    ((requests − 1) / span). Burstiness is kept. Not with ``time_scale``; replay only (not with
    ``arrival``, not in an ``empirical`` length)."""
    max_requests: Int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    """Keep only the first N requests: by arrival time for a replay (before rescaling and
    before ``duration_s`` / ``num_requests``), in file order for (prompt, output) pairs under an
    ``arrival`` process (Mooncake: by arrival time), in file order for an ``empirical``
    length."""
    hash_block_tokens: Int = Field(default=512, ge=1, le=MAX_TOKENS)
    """Prompt tokens covered by one prefix hash id in the file (Mooncake: 512). Used to map hash
    ids onto KV blocks of ``block_size`` tokens; ignored by formats without hashes."""

    @model_validator(mode="after")
    def _one_scale(self) -> TraceSource:
        if self.time_scale is not None and self.target_rate is not None:
            raise ValueError("give at most one of 'time_scale' or 'target_rate'")
        if (self.format == "csv") != (self.columns is not None):
            raise ValueError(
                "the csv format needs 'columns' ({prompt: NAME, output: NAME, arrival: NAME})"
                if self.format == "csv"
                else f"'columns' is for the csv format, not {self.format!r}"
            )
        if self.where is not None and self.format not in ("csv", "burstgpt"):
            raise ValueError(f"'where' filters csv and burstgpt rows, not {self.format!r}")
        if self.rate_scale is not None and self.format != "servegen":
            raise ValueError(f"'rate_scale' multiplies a servegen client's rates, not {self.format!r}'s")
        if self.tokenizer is not None and self.format != "sharegpt":
            raise ValueError(f"'tokenizer' counts the tokens of sharegpt text, not of {self.format!r}")
        return self

    def read_options(self):
        """The fields the user-format readers need (sim.workload.readers.ReadOptions)."""
        from sim.workload.readers import ReadOptions

        where = None
        if self.where is not None:
            where = {k: tuple(v.strip() for v in ([w] if isinstance(w, str) else w)) for k, w in self.where.items()}
        columns = self.columns.model_dump(exclude_none=True) if self.columns is not None else None
        return ReadOptions(columns, self.time_unit, where, self.chars_per_token, self.tokenizer)


EmpiricalLength.model_rebuild()


# --------------------------------------------------------------------------- images and video

DETERMINISTIC_SAMPLERS = ("ddim", "dpmpp_2m", "unipc", "euler")
"""Same seed and schedule, same image: a retry resumes from a saved step."""
STOCHASTIC_SAMPLERS = ("ddpm", "euler_ancestral")
"""Fresh noise every step: a retry must start again."""

Sampler = Literal["ddim", "dpmpp_2m", "unipc", "euler", "ddpm", "euler_ancestral"]


class ImageSpec(Strict):
    """What each request of an image class (or image stage) asks of its diffusion pool. Unset
    fields take the model's defaults from the diffusion catalog
    (``sim/catalog/data/diffusion_models.yaml``): 1024 × 1024 for ``sdxl``, ``sd3-medium`` and
    the Flux models, 512 × 512 for ``sd-1.5``; 49 frames of 720 × 480 for ``cogvideox-2b``, 81
    of 832 × 480 for ``wan2.1-1.3b``."""

    width: Int | None = Field(default=None, ge=8, le=16384)
    """Image width in pixels, a multiple of 8 for ``sd-1.5`` and ``sdxl``, of 16 for the
    others (VAE factor × patch size); ``null``: the model's. The denoiser's tokens per row grow
    with width × height."""
    height: Int | None = Field(default=None, ge=8, le=16384)
    """Image height in pixels, the same multiples as ``width``; ``null``: the model's."""
    frames: Int | None = Field(default=None, ge=1, le=10_000)
    """Frames of a video: video models only, 4k + 1 (1, 5, 9, ..., 49, 81); ``null``: the
    model's. Image models refuse it."""
    steps: Int | LengthDist | None = None
    """Denoising steps: an integer 1 – 10000, or a length distribution drawn per request (draws
    capped at 10000); ``null``: the model's default (30 for ``sdxl``, 50 for ``sd-1.5`` and the
    video models, 28 for ``sd3-medium`` and ``flux-dev``, 4 for ``flux-schnell``). With an
    ``alibaba`` trace, an integer replaces the trace's steps."""
    cfg: bool | None = None
    """Classifier-free guidance: two denoiser rows per image every step (twice the compute and
    activation memory) and two text encodings. ``null``: the model's (on, except for the
    guidance-distilled ``flux-dev`` and ``flux-schnell``)."""
    sampler: Sampler = "dpmpp_2m"
    """Deterministic (``ddim``, ``dpmpp_2m``, ``unipc``, ``euler``) or stochastic (``ddpm``,
    ``euler_ancestral``). Matters only after a replica failure: a deterministic sampler resumes
    from the last checkpoint (``checkpoint_every``), a stochastic one, which draws fresh noise
    every step, starts again. Step cost does not depend on it."""
    images_per_prompt: Int | LengthDist = 1
    """Images generated together for one request, one latent each: an integer 1 – 10000, or a
    length distribution drawn per request (draws capped at 10000). They count towards
    ``max_batch_size``. With an ``alibaba`` trace the trace's counts are used."""

    @field_validator("steps", "images_per_prompt")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        if isinstance(value, int) and not 1 <= value <= 10_000:
            raise ValueError("must be between 1 and 10000")
        return value


class RetryPolicy(Strict):
    """What happens to a request whose replica fails, and how long it may take. A request fails,
    and is reported ``failed`` with a ``fail_reason``, when its retry budget or its time runs
    out. Failed requests are left out of the latency percentiles and count against goodput and
    SLO attainment, and ``SLO met`` fails when rejected and failed requests together exceed
    (100 − ``percentile``) % of the window's arrivals. Every request ends up counted once in
    ``arrived = finished + rejected + failed + in flight``."""

    max_retries: Int = Field(default=3, ge=0, le=1000)
    """How many times a request may lose its replica while running and be started again on
    another (see ``FaultConfig``); the next loss fails it (``replica N failed and the retry
    budget (B) is spent``). ``0``: no retries."""
    timeout_s: Float | None = Field(default=None, gt=0)
    """A request not finished this long after its arrival is abandoned and fails (``not
    finished within timeout_s T s``). An LLM request, queued or running, is aborted at its
    replica's next step boundary (one that finishes in the step in flight is kept). A queued
    image request leaves at once; one in a static batch stays until the batch ends and its
    result is discarded; under ``step`` it leaves after the step in flight. A pipeline's
    deadline counts from the pipeline's arrival. ``null``: no limit."""


class Stage(Strict):
    """One stage of a pipeline class: a text request to an LLM pool (``prompt_tokens`` and
    ``output_tokens``) or an image request to a diffusion pool (``image``), never both. Its
    lengths or steps are drawn per arrival. The stage is submitted the moment the one before it
    finishes; a stage that is rejected or fails rejects or fails the pipeline, with the stage
    named in the reason. The summary gives each stage's mean latency and its shares of the
    pipelines' latency and cost (``stage_<name>_e2e_s_mean``, ``stage_<name>_latency_share``,
    ``stage_<name>_cost_share`` in ``summary.json``)."""

    name: str = Field(min_length=1)
    """Labels the stage in the summary; unique within the class."""
    pool: str
    """The ``name`` of the pool that runs this stage, a pool of the stage's kind."""
    prompt_tokens: LengthDist | None = None
    """Text stage: prompt length. Required with ``output_tokens``; not with ``image``."""
    output_tokens: LengthDist | None = None
    """Text stage: tokens generated. Required with ``prompt_tokens``; not with ``image``."""
    image: ImageSpec | None = None
    """Image stage: what the diffusion pool generates."""

    @model_validator(mode="after")
    def _kind(self) -> Stage:
        text = self.prompt_tokens is not None or self.output_tokens is not None
        if self.image is not None and text:
            raise ValueError("a stage is either text (prompt_tokens, output_tokens) or an image: not both")
        if self.image is None and (self.prompt_tokens is None or self.output_tokens is None):
            raise ValueError("give 'prompt_tokens' and 'output_tokens' (a text stage) or 'image' (an image stage)")
        return self


# --------------------------------------------------------------------------- SLOs and classes


FIRST_OUTPUT_KINDS = ("text", "dllm", "audio")
"""Kinds with a first output a client waits for, which ``SLO.ttft_s`` judges: the first token,
the first block of a diffusion LM, the first audio."""


class SLO(Strict):
    """Per-request latency targets; goodput counts requests meeting all of them. Any subset of
    the three targets may be given. ``ttft_s`` and ``tpot_s`` apply to text requests only; image
    and pipeline classes are judged on ``e2e_s``."""

    ttft_s: Float | None = Field(default=None, gt=0)
    """Time-to-first-token target, seconds (text; for a diffusion LM its first block, for audio
    its first audio)."""
    tpot_s: Float | None = Field(default=None, gt=0)
    """Time-per-output-token target, seconds (text only; requests with one output token pass)."""
    e2e_s: Float | None = Field(default=None, gt=0)
    """End-to-end latency target, seconds."""
    percentile: Float = Field(default=99.0, gt=0, lt=100)
    """``SLO met`` requires this percentile of each targeted metric to be within its target,
    and at most (100 − ``percentile``) % of the window's arrivals to be rejected or failed. The
    summary always computes p50, p90, p95, p99 and p99.9, and adds this percentile when it is
    another value (``ttft_s_p97.5``...). Goodput and SLO attainment are per request and do not
    use it."""
    attainment: Float | None = Field(default=None, gt=0, le=1)
    """Instead of a percentile: the SLO holds when at least this fraction of the window's
    arrivals meets every target (DistServe's SLO attainment; rejected, failed and unfinished
    requests count as misses). Needs at least one target."""

    @model_validator(mode="after")
    def _targets(self) -> SLO:
        if self.attainment is not None and self.ttft_s is None and self.tpot_s is None and self.e2e_s is None:
            raise ValueError("'attainment' needs a target: give ttft_s, tpot_s or e2e_s")
        return self

    def targets(self, kind: str = "text") -> list[tuple[str, float]]:
        """``(metric, target)`` of each target that applies to a class of this kind: TTFT and
        TPOT to text; TTFT also to a diffusion LM (its first block) and to audio (its first
        audio); E2E to every kind (an image or a pipeline has no token stream)."""
        pairs = (("ttft_s", self.ttft_s), ("tpot_s", self.tpot_s), ("e2e_s", self.e2e_s))
        first = kind in FIRST_OUTPUT_KINDS
        return [
            (m, t) for m, t in pairs if t is not None and (kind == "text" or m == "e2e_s" or (first and m == "ttft_s"))
        ]


class AcceptanceRate(Strict):
    """How often a target model accepts a speculated token: each draft token is accepted with
    probability ``mean`` (given the ones before it were), and requests differ around it: each
    request draws its own rate from a Beta distribution with this mean and coefficient of
    variation (0: every request the same)."""

    mean: Float = Field(gt=0, le=1)
    """Mean per-token acceptance rate (vLLM reports it as ``spec_decode`` acceptance rate)."""
    cv: Float = Field(default=0.0, ge=0)
    """Coefficient of variation across requests (a Beta distribution needs cv² < (1 - mean) /
    mean)."""

    @model_validator(mode="after")
    def _beta(self) -> AcceptanceRate:
        if self.cv > 0 and (self.mean >= 1 or (self.cv * self.mean) ** 2 >= self.mean * (1 - self.mean)):
            raise ValueError(
                f"acceptance cv {self.cv:g} is too wide for mean {self.mean:g}: a Beta distribution needs "
                f"cv < {((1 - self.mean) / self.mean) ** 0.5:.3g}"
            )
        return self


# --------------------------------------------------------------------------- kinds beyond two

#: HART's scale schedule at 1024 x 1024 (``patch_nums`` of its VAR-style tokenizer): the side of
#: each scale's token grid; scale k is generated in one AR step of k x k tokens.
HART_1024_SCALES = (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64)


class TextDiffusion(Strict):
    """A diffusion language model's decoding (LLaDA, Dream, Mercury; block diffusion as in
    BD3-LM and Fast-dLLM): the answer is produced a block of ``block_tokens`` at a time, each
    block refined over ``steps_per_block`` parallel denoising steps (every step one forward pass
    of the whole block, bidirectional within it, attending to the KV cache of the prompt and of
    the finished blocks), then committed to the KV cache. Requests at different blocks and steps
    share each engine step (step-level batching). Runs on an LLM pool whose every class is a
    diffusion LM; the pool's model is the transformer that is costed (``llada-8b``, ``dream-7b``
    in the catalog)."""

    block_tokens: Int = Field(default=32, ge=1, le=4096)
    """Tokens denoised together (LLaDA's ``block_length``, 32 in its examples; Fast-dLLM uses 32
    too). The last block of an answer may be shorter."""
    steps_per_block: Int = Field(default=32, ge=1, le=4096)
    """Denoising steps per block. LLaDA's default unmasks one token per step (steps = block
    length); parallel decoding (Fast-dLLM's confidence threshold, Mercury) needs fewer."""
    cache: Literal["block", "prefix"] = "block"
    """What a step recomputes. ``block``: only the block being denoised, over the KV cache of
    everything before it (block diffusion, BD3-LM; Fast-dLLM's DualCache comes close). ``prefix``:
    the block and every still-masked token after it (a model trained with full bidirectional
    attention, LLaDA, sees the masked answer it has not reached; Fast-dLLM's PrefixCache)."""


class ARImage(Strict):
    """Autoregressive image generation (Janus-Pro, LlamaGen, Emu3): an LLM-style decoder writes
    the image's VQ tokens one by one, row by row, its KV cache growing per token, then a
    convolutional decoder turns the token grid into pixels. Runs on an LLM pool whose model is
    the image-token decoder (``janus-pro-7b`` in the catalog). The request's output tokens are
    the grid's: (height / ``downsample``) rows of (width / ``downsample``) tokens, plus one per
    row with ``row_end_tokens``."""

    width: Int = Field(default=384, ge=8, le=8192)
    """Image width in pixels, a multiple of ``downsample`` (Janus-Pro: 384)."""
    height: Int = Field(default=384, ge=8, le=8192)
    """Image height in pixels, a multiple of ``downsample``."""
    downsample: Int = Field(default=16, ge=1, le=64)
    """Pixels per token side of the VQ tokenizer (Janus-Pro and LlamaGen's VQ-16: 16; Emu3: 8)."""
    row_end_tokens: bool = False
    """One extra token closes each row (Emu3's end-of-line token); Janus-Pro has none."""
    cfg: bool = True
    """Classifier-free guidance: a second, unconditional sequence decodes beside the image's
    (Janus-Pro's default CFG weight 5), on the same replica: twice the decode rows and KV."""
    decoder: str = "llamagen-vq16"
    """The decoder that turns tokens into pixels: a ``vaes`` entry of the diffusion catalog,
    whose FLOPs per output pixel and efficiency time it (``llamagen-vq16``: the VQ-16 decoder
    Janus-Pro and LlamaGen use)."""

    @model_validator(mode="after")
    def _grid(self) -> ARImage:
        for side in ("width", "height"):
            if getattr(self, side) % self.downsample:
                raise ValueError(f"{side} {getattr(self, side)} is not a multiple of downsample {self.downsample}")
        return self

    @property
    def tokens_per_row(self) -> int:
        return self.width // self.downsample + (1 if self.row_end_tokens else 0)

    @property
    def rows(self) -> int:
        return self.height // self.downsample

    @property
    def image_tokens(self) -> int:
        """Tokens the decoder generates for one image."""
        return self.rows * self.tokens_per_row


class ARAudio(Strict):
    """Autoregressive audio (MusicGen, Orpheus and other codec-token TTS): an LLM-style decoder
    writes neural-codec tokens at the codec's frame rate, and the codec's decoder turns them into
    a waveform chunk by chunk as they stream. Runs on an LLM pool whose model is the token
    decoder (``musicgen-medium``, ``orpheus-3b`` in the catalog)."""

    seconds: LengthDist
    """Audio each request asks for, in seconds: a length distribution (drawn per request)."""
    frame_rate_hz: Float = Field(default=50.0, gt=0, le=10_000)
    """Codec frames per second of audio (EnCodec 32 kHz in MusicGen: 50; SNAC 24 kHz in
    Orpheus: about 12, at its coarsest level)."""
    codebooks: Int = Field(default=4, ge=1, le=64)
    """Codec tokens per frame (MusicGen: 4 residual codebooks; Orpheus: 7 SNAC tokens)."""
    parallel_codebooks: bool = True
    """``true``: one decoder step emits a frame's codebooks together (MusicGen's delay pattern:
    frames + codebooks - 1 steps); ``false``: the codebooks are flattened into the token stream,
    one step per token (Orpheus: frames x codebooks steps)."""
    cfg: bool = False
    """Classifier-free guidance: a second, unconditional sequence decodes beside it (MusicGen
    samples with guidance scale 3 by default)."""
    first_chunk_s: Float = Field(default=0.5, gt=0, le=60)
    """Audio the codec decodes at a time, in seconds: time to first audio is the first token,
    the steps that produce this much audio, and its decode; after the last token only the last
    chunk is left to decode (the rest was decoded as the tokens streamed)."""
    codec_gflops_per_s: Float = Field(default=7.8, gt=0)
    """The codec decoder's work per second of audio, GFLOPs (default: EnCodec 32 kHz's SEANet
    decoder in MusicGen, 3.9 GMAC per second counted from audiocraft's configuration; no figure
    is published for SNAC's, give yours)."""

    def steps(self, seconds: float) -> int:
        """Decoder steps (KV positions) for ``seconds`` of audio."""
        frames = max(1, round(seconds * self.frame_rate_hz))
        if self.parallel_codebooks:
            return frames + self.codebooks - 1
        return frames * self.codebooks

    @property
    def steps_per_audio_s(self) -> float:
        return self.frame_rate_hz * (1 if self.parallel_codebooks else self.codebooks)


class HybridImage(Strict):
    """Hybrid autoregressive + diffusion image generation as one request (HART): an AR
    transformer generates discrete tokens scale by scale (VAR's next-scale prediction: scale k's
    whole k x k grid in one step, attending to the KV cache of the coarser scales), then a small
    diffusion refiner predicts the residual over the last scale's tokens in a few steps, and a
    decoder makes pixels. Runs on an LLM pool whose model is the AR transformer (``hart-0.7b`` in
    the catalog); the refiner and decoder run on the same replica."""

    width: Int = Field(default=1024, ge=8, le=8192)
    """Image width in pixels (for the decoder)."""
    height: Int = Field(default=1024, ge=8, le=8192)
    """Image height in pixels."""
    scales: list[Int] = Field(default=list(HART_1024_SCALES), min_length=1, max_length=256)
    """Side of each scale's token grid, coarse to fine: one AR step per scale (HART at 1024 x
    1024: 14 scales up to 64 x 64). A list of ones is token-by-token generation."""
    refine_steps: Int = Field(default=8, ge=0, le=1000)
    """Diffusion steps of the residual refiner (HART: 8)."""
    refiner_params: Float = Field(default=37e6, gt=0)
    """Parameters of the refiner, applied to every token of the last scale each step (HART's
    residual diffusion MLP: 37 M)."""
    cfg: bool = True
    """Classifier-free guidance: an unconditional row beside the image's in every AR step and
    refiner step (HART samples with CFG 4.5): twice the tokens and KV."""
    decoder: str = "hart-vq16"
    """The pixel decoder: a ``vaes`` entry of the diffusion catalog (as for ``ar_image``;
    ``hart-vq16``: HART's tokenizer decoder)."""

    @field_validator("scales")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v < 1 or v > 1024 for v in value):
            raise ValueError("each scale is a grid side between 1 and 1024")
        return value

    @property
    def blocks(self) -> list[int]:
        """Tokens generated at each AR step."""
        return [k * k for k in self.scales]


NEW_KINDS = ("dllm", "ar_image", "audio", "hybrid")
"""Request kinds beyond text, image and pipeline (``sim.kinds``)."""
PARENT_KINDS = ("pipeline", "ar_image", "audio")
"""Kinds whose rows are parents: their work runs as text requests (stages, or a sequence and
its CFG twin) pointing at them through ``parent_id``; they cost the sum of those."""
BLOCK_KINDS = ("dllm", "hybrid")
"""Kinds that run on a block-step engine (``sim.kinds.blocks``) rather than vLLM's scheduler."""


class RequestClass(Strict):
    """A stream of requests with its own arrivals. It is one of three kinds, named in the
    summary's table titles:

    - **text**, sent to an LLM ``pool``: give either ``arrival``, ``prompt_tokens`` and
      ``output_tokens`` (synthetic traffic), or ``trace`` (replay). With ``trace`` and
      ``arrival`` both given, arrivals come from the process and each request takes a (prompt,
      output) pair drawn at random, jointly, from the trace (a Mooncake pair keeps its prefix
      hashes); the trace's arrival times are not used, so ``time_scale`` and ``target_rate``
      are not allowed there, lengths-only Vidur files (no ``arrived_at`` column) can be used,
      and the scenario needs ``duration_s`` or ``num_requests`` to know when arrivals stop.
    - **image** (or video), sent to a diffusion ``pool``: give ``image`` and ``arrival``, or an
      ``alibaba`` ``trace`` (arrivals, steps and images per request as recorded; ``image`` may
      still set the resolution and, as an integer, the steps). No token lengths.
    - **pipeline**: give ``stages`` and ``arrival``, and no ``pool``, lengths, ``image`` or
      ``trace``; each arrival runs the stages in turn, each on its own pool.

    Four more kinds run on LLM pools, each with ``arrival`` and ``prompt_tokens`` and one block
    saying what is generated (docs/explanation/generative-shapes.md): **dllm**
    (``diffusion_lm``, with ``output_tokens``), **ar_image** (``ar_image``), **audio**
    (``audio``) and **hybrid** (``hybrid``)."""

    name: str = Field(min_length=1)
    """Labels the class in the summary and in the ``class`` column; unique among classes. With
    several classes the summary adds a row named ``all``, so that name is rejected then."""
    pool: str | None = None
    """The ``name`` of the pool that serves this class: an LLM pool for text, a diffusion pool
    for images. Required unless ``stages`` is given (a pipeline names a pool per stage)."""
    arrival: Arrival | None = None
    """When requests arrive: an arrival process, chosen by ``process``. Required without
    ``trace``; not allowed with an ``alibaba`` trace."""
    prompt_tokens: LengthDist | None = None
    """Prompt length of each request (text classes only): a length distribution, chosen by
    ``dist``. Required without ``trace``, not allowed with it."""
    output_tokens: LengthDist | None = None
    """Tokens each request generates (text classes only); the simulator knows it in advance and
    always generates exactly this many (no early end). Required without ``trace``, not allowed
    with it."""
    image: ImageSpec | None = None
    """Makes the class an image (or video) class: what each request asks the diffusion pool
    for."""
    stages: list[Stage] | None = Field(default=None, min_length=1)
    """Makes the class a pipeline: every arrival runs these stages in order, each on its own
    pool. Stage names are unique."""
    trace: TraceSource | None = None
    """Replay a published trace: arrival times and lengths as recorded (optionally rescaled), or
    only its (prompt, output) pairs when ``arrival`` is also given. An ``alibaba`` trace makes an
    image class."""
    retry: RetryPolicy = RetryPolicy()
    """How often a request that loses its replica is started again, and how long it may take."""
    speculative_acceptance: AcceptanceRate | None = None
    """Text classes on a pool with speculative decoding: this class's acceptance rate (its
    content accepts more or fewer speculated tokens than the pool's default); ``null``: the
    pool's ``engine.speculative.acceptance``."""
    slo: SLO | None = None
    """This class's latency targets; ``null`` uses the scenario's ``slo``."""
    diffusion_lm: TextDiffusion | None = None
    """Makes the class a diffusion-LM class (kind ``dllm``): ``output_tokens`` are denoised a
    block at a time."""
    ar_image: ARImage | None = None
    """Makes the class an autoregressive-image class (kind ``ar_image``): no ``output_tokens``,
    the image's token grid is the output."""
    audio: ARAudio | None = None
    """Makes the class an autoregressive-audio class (kind ``audio``): no ``output_tokens``,
    the audio's codec tokens are the output."""
    hybrid: HybridImage | None = None
    """Makes the class a hybrid AR + diffusion image class (kind ``hybrid``): no
    ``output_tokens``."""

    @property
    def shape(self) -> TextDiffusion | ARImage | ARAudio | HybridImage | None:
        """The block of a kind beyond text, image and pipeline (None for those)."""
        return self.diffusion_lm or self.ar_image or self.audio or self.hybrid

    @property
    def kind(self) -> str:
        """text, image, pipeline, dllm, ar_image, audio or hybrid."""
        if self.stages is not None:
            return "pipeline"
        if self.diffusion_lm is not None:
            return "dllm"
        if self.ar_image is not None:
            return "ar_image"
        if self.audio is not None:
            return "audio"
        if self.hybrid is not None:
            return "hybrid"
        if self.image is not None or (self.trace is not None and self.trace.format == "alibaba"):
            return "image"
        return "text"

    @model_validator(mode="after")
    def _sources(self) -> RequestClass:
        lengths = (self.prompt_tokens is not None, self.output_tokens is not None)
        shapes = [n for n in ("diffusion_lm", "ar_image", "audio", "hybrid") if getattr(self, n) is not None]
        if shapes:
            if len(shapes) > 1:
                raise ValueError(f"a class is one kind: give one of {', '.join(shapes)}")
            what = shapes[0]
            if self.stages is not None or self.image is not None or self.trace is not None:
                raise ValueError(f"a {what} class takes no 'stages', 'image' or 'trace'")
            if self.pool is None or self.arrival is None or self.prompt_tokens is None:
                raise ValueError(f"a {what} class needs 'pool', 'arrival' and 'prompt_tokens'")
            if isinstance(self.arrival, ClosedArrival):
                raise ValueError("closed-loop arrivals ('process: closed') are for text classes")
            if what == "diffusion_lm" and self.output_tokens is None:
                raise ValueError("a diffusion_lm class needs 'output_tokens' (the answer's length)")
            if what != "diffusion_lm" and self.output_tokens is not None:
                raise ValueError(f"a {what} class generates its own tokens: drop 'output_tokens'")
            if self.speculative_acceptance is not None:
                raise ValueError(f"'speculative_acceptance' is for text classes, not {what}")
            return self
        if isinstance(self.arrival, ClosedArrival) and (self.stages is not None or self.image is not None):
            raise ValueError("closed-loop arrivals ('process: closed') are for text classes")
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
        if self.trace is not None and self.trace.format == "sharegpt" and self.arrival is None:
            raise ValueError(
                "a sharegpt file has no arrival times: give 'arrival' (e.g. {process: closed, users: 16, "
                "think_time_s: 5} to play its conversations turn by turn)"
            )
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


class SpeculativeDecoding(Strict):
    """vLLM ``--speculative-config``: each step, a proposer suggests ``num_speculative_tokens``
    tokens per decoding request, and the target model verifies them all in one forward pass
    (one query per proposed token plus one, like a short prefill chunk). The accepted prefix of
    the proposal and one more token (the target's own at the first rejection) are emitted:
    with a per-token acceptance rate a and k proposed, (1 - a^(k+1)) / (1 - a) tokens a step
    on average. ``method``: ``draft_model`` runs a smaller LLM of the same tokenizer k times
    per step (its weights and KV cache take GPU memory); ``eagle`` one decoder layer of the
    target's shape over the target's hidden states, with the target's LM head (EAGLE, Li et
    al. 2024; DeepSeek's MTP modules are the same shape); ``ngram`` looks the proposal up in
    the prompt (no GPU time, no memory). Decoding requests then run one by one (not as the
    closed-form cohort)."""

    method: Literal["draft_model", "eagle", "ngram"]
    """The proposer."""
    num_speculative_tokens: Int = Field(ge=1, le=16)
    """Tokens proposed per decoding request and step (k)."""
    draft_model: str | None = None
    """``draft_model``: the draft LLM (a catalog model with the target's vocabulary, e.g.
    ``llama-3.2-1b`` for Llama-3 targets); it runs on the same GPUs at the same TP degree."""
    acceptance: AcceptanceRate
    """The acceptance rate of this proposer with this target; a class may set its own
    (``speculative_acceptance``: code accepts more than open chat)."""

    @model_validator(mode="after")
    def _draft(self) -> SpeculativeDecoding:
        if (self.method == "draft_model") != (self.draft_model is not None):
            raise ValueError("draft_model is needed with method draft_model, and only then")
        if self.draft_model is not None and self.draft_model not in catalog.models():
            raise ValueError(f"unknown draft_model {self.draft_model!r}; allowed: {', '.join(catalog.models())}")
        return self


class EngineConfig(Strict):
    """vLLM engine knobs for an LLM replica. Names and defaults follow vLLM's engine arguments
    (EngineArgs), so a pool reads like a launch command."""

    scheduler: Literal["continuous", "static"] = "continuous"
    """``continuous``: vLLM v1's iteration-level scheduling. ``static``: request-level batches
    that run until their longest member ends, nobody joins (the pre-Orca baseline). Both are
    explained in docs/explanation/how-the-model-works.md. Not a vLLM flag: vLLM is always
    continuous."""
    max_num_seqs: Int = Field(default=256, ge=1, le=MAX_TOKENS)
    """vLLM ``--max-num-seqs``: the most requests running at once (static: the batch size).
    Also sizes the logits in the activation estimate."""
    max_num_batched_tokens: Int = Field(default=8192, ge=1, le=MAX_TOKENS)
    """vLLM ``--max-num-batched-tokens``: the token budget of one step (prefill chunks plus one
    token per decode); at least ``max_num_seqs``. A larger budget means larger prefill chunks
    (longer stalls for decodes) and a larger activation reserve (fewer KV blocks)."""
    block_size: Int = Field(default=16, ge=1, le=1024)
    """vLLM ``--block-size``: tokens per KV block. KV is allocated, and prefix-cache hits
    counted, in whole blocks."""
    gpu_memory_utilization: Float = Field(default=0.9, gt=0, le=1)
    """vLLM ``--gpu-memory-utilization``: the fraction of GPU memory the engine may use for
    weights, activations and KV cache (how the KV blocks follow from it:
    docs/explanation/how-the-model-works.md)."""
    enable_chunked_prefill: bool = True
    """vLLM ``--enable-chunked-prefill`` / ``--no-enable-chunked-prefill``. On: a prompt longer
    than the step's remaining budget is split over several steps. Off: a waiting request is
    admitted only when its whole prompt fits the remaining budget, and a request whose prompt +
    output exceeds ``max_num_batched_tokens`` is rejected at arrival (a recompute after
    preemption would prefill all of it in one step). Static batching always chunks its
    prefill."""
    enable_prefix_caching: bool = True
    """vLLM ``--enable-prefix-caching`` / ``--no-enable-prefix-caching``: KV blocks of a prompt
    prefix already in the cache are reused instead of recomputed. Requests carry prompt content
    only when they come from a trace with prefix hashes (Mooncake ``hash_ids``); synthetic
    requests and Azure or Vidur traces never hit. Ignored by ``static``."""
    num_gpu_blocks: Int | None = Field(default=None, ge=1, le=1_000_000_000)
    """vLLM ``--num-gpu-blocks-override``: use this many KV blocks per replica instead of
    deriving them from memory (for example a count read from a real vLLM log). Memory is then
    not checked."""
    max_model_len: Int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    """vLLM ``--max-model-len``: the longest prompt + output a request may have; longer requests
    are rejected at arrival. ``null``: the model's ``max_position_embeddings`` from the
    catalog."""
    activation_reserve_gib: Float | None = Field(default=None, ge=0)
    """GiB per GPU held back for activations, CUDA graphs and context. vLLM measures this by
    profiling; ``null`` uses servesim's estimate from the model and ``max_num_batched_tokens``
    (docs/explanation/how-the-model-works.md)."""
    dtype: Literal["bfloat16", "fp8", "int8", "int4", "mxfp4"] = "bfloat16"
    """Weight precision. ``bfloat16`` is vLLM ``--dtype bfloat16``; ``fp8`` stands for FP8
    weights (vLLM ``--quantization fp8``): 1 byte per weight (more KV blocks, faster weight
    streaming) and the GPU's FP8 peak in the roofline. The GPU must support FP8 (``a100-80gb``
    does not). ``int8`` and ``int4`` are weight-only quantisation as AWQ and GPTQ checkpoints
    have it (vLLM ``--quantization awq``/``gptq``, W8A16/W4A16): the transformer blocks' weights
    in 8 or 4 bits with an fp16 scale and a zero point per ``quantization_group_size`` weights,
    the embeddings and LM head kept in bf16, and the matrix products at the GPU's bf16 peak
    (weights are widened to bf16 in the kernel): less memory and faster weight streaming, the
    same compute. ``mxfp4`` (mixture-of-experts models) is how gpt-oss ships: the routed
    experts' weights in MXFP4 (OCP Microscaling: 4-bit E2M1 values sharing an 8-bit scale per
    32, 4.25 bits a weight), attention, router, shared experts and embeddings in bf16; the
    matrix products at the bf16 peak (Hopper widens FP4 weights in the kernel; Blackwell's FP4
    tensor cores are not modelled)."""
    quantization_group_size: Int = Field(default=128, ge=16, le=65536)
    """int8, int4: weights sharing one scale and zero point (AWQ and GPTQ use 128)."""
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    """vLLM ``--kv-cache-dtype``: ``auto`` keeps KV in bf16 (2 bytes, also with FP8 weights);
    ``fp8`` stores 1 byte per element, about doubling the tokens that fit and halving KV read
    time."""
    speculative: SpeculativeDecoding | None = None
    """Speculative decoding (vLLM ``--speculative-config``); ``null``: off. Continuous
    scheduler only."""
    preemption_mode: Literal["recompute", "swap"] = "recompute"
    """What a preempted request's KV cache becomes. ``recompute`` (vLLM v1's only mode): freed,
    and the prompt and the tokens generated so far are computed again when it is readmitted.
    ``swap`` (vLLM v0 ``--preemption-mode swap``): copied to CPU memory over PCIe and back
    before anyone new is admitted, nothing computed again; when ``swap_space_gib`` is full it
    recomputes. Each copy's time is the KV bytes over the GPU's host link (the GPU catalog's
    ``host_link``), added to the step that makes it."""
    swap_space_gib: Float = Field(default=4.0, ge=0, le=100_000)
    """vLLM v0 ``--swap-space``: GiB of CPU memory per GPU for swapped-out KV (``swap``
    mode)."""
    kv_offloading_size: Float = Field(default=0.0, ge=0, le=100_000)
    """vLLM ``--kv-offloading-size``: a CPU tier for the prefix cache, in GiB of CPU memory in
    total across the replica's tensor-parallel ranks (as vLLM counts it). Prefix blocks the GPU
    cache evicts move there (least recently used first out); a later prompt whose next blocks
    are there loads them over PCIe instead of computing them (the load's time added to its
    step, as LMCache's connector loads by default). 0: no CPU tier. Needs prefix caching."""
    expert_parallel: bool = False
    """vLLM ``--enable-expert-parallel`` (mixture-of-experts models): each GPU of the replica
    holds whole routed experts, 1/``tensor_parallel_size`` of them, instead of a slice of every
    expert. A step then waits for the GPU whose experts drew the most tokens: with uniform
    routing the busiest of N GPUs gets the mean plus z_N standard deviations of its binomial
    share of the token-expert pairs (z_N the expected largest of N standard normals), times
    ``expert_load_imbalance``. Without ``attention_data_parallel`` every GPU sees every token
    (tensor-parallel attention) and the all-reduce after the experts combines them, as with
    tensor-parallel experts."""
    attention_data_parallel: Int = Field(default=1, ge=1, le=64)
    """Data-parallel attention inside the replica (vLLM ``--data-parallel-size`` with
    ``--enable-expert-parallel``, SGLang ``--enable-dp-attention``; DeepSeek-V3's serving
    layout): the replica's ``tensor_parallel_size`` GPUs form this many attention groups of
    ``tensor_parallel_size / attention_data_parallel`` GPUs, each running its own requests'
    attention with its own KV cache, while the routed experts are spread whole over all of them
    (needs ``expert_parallel``). Tokens reach their experts' GPUs and come back by two
    all-to-alls per expert layer. The groups are modelled as one scheduler with their KV caches
    and ``max_num_seqs`` and ``max_num_batched_tokens`` (per group, as vLLM's data-parallel
    ranks each have them) pooled, and their requests spread evenly (vLLM's coordinator sends
    each to the least loaded group): a group's own imbalance is not modelled. 1: attention is
    tensor parallel over the whole replica."""
    expert_load_imbalance: Float = Field(default=1.0, ge=1, le=64)
    """With ``expert_parallel``: the busiest GPU's share of routed tokens over what uniform
    routing gives it (1: uniform routing; real routers are skewed towards popular experts,
    which load balancers such as DeepSeek's EPLB counter by replicating them)."""
    capacity_scheduler_policy: Literal["max_utilization", "guaranteed_no_evict"] = "max_utilization"
    """Admission against the KV cache. ``max_utilization`` is vLLM's: admit while the blocks a
    step needs are free, and preempt (recompute) the newest request when they run out.
    ``guaranteed_no_evict`` is TensorRT-LLM's default capacity scheduler: admit a request only
    when its whole prompt + output fits beside every running request's whole prompt + output,
    so nothing is ever preempted (fewer requests run at once when outputs are long)."""

    @model_validator(mode="after")
    def _budget(self) -> EngineConfig:
        if self.speculative is not None and self.scheduler != "continuous":
            raise ValueError("speculative decoding needs the continuous scheduler")
        if self.kv_offloading_size > 0 and (self.scheduler != "continuous" or not self.enable_prefix_caching):
            raise ValueError("kv_offloading_size needs the continuous scheduler and enable_prefix_caching")
        if self.attention_data_parallel > 1 and not self.expert_parallel:
            raise ValueError("attention_data_parallel needs expert_parallel: true (the groups share the experts)")
        if self.attention_data_parallel > 1 and (
            self.speculative is not None or self.preemption_mode == "swap" or self.kv_offloading_size > 0
        ):
            raise ValueError(
                "attention_data_parallel with speculative decoding, swap preemption or a CPU KV tier is not modelled"
            )
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs ({self.max_num_seqs})"
            )
        return self

    @property
    def weight_bytes_per_elem(self) -> float:
        """Bytes per weight of the transformer blocks: 2 (bf16), 1 (FP8), or for weight-only
        int8/int4 the quantised value plus its share of the group's fp16 scale and q-bit zero
        point: (q + (16 + q) / group) / 8 (AWQ: Lin et al., MLSys 2024; GPTQ: Frantar et al.,
        ICLR 2023), 0.52 bytes for int4 in groups of 128."""
        if self.dtype in ("int8", "int4"):
            q = 8 if self.dtype == "int8" else 4
            return (q + (16 + q) / self.quantization_group_size) / 8
        return 1.0 if self.dtype == "fp8" else 2.0

    @property
    def expert_bytes_per_elem(self) -> float:
        """Bytes per weight of the routed experts: MXFP4's 4-bit value and its share of the
        8-bit scale per 32 weights (OCP Microscaling Formats v1.0), 0.53125; otherwise as the
        blocks' weights."""
        return (4 + 8 / 32) / 8 if self.dtype == "mxfp4" else self.weight_bytes_per_elem

    @property
    def head_bytes_per_elem(self) -> float:
        """Bytes per weight of the embeddings and the LM head: weight-only quantisation leaves
        them in bf16; otherwise as the blocks' weights."""
        return 2.0 if self.dtype in ("int8", "int4") else self.weight_bytes_per_elem

    @property
    def kv_bytes_per_elem(self) -> float:
        """Bytes per KV-cache element: "auto" keeps KV in the activation dtype (bf16), also for
        FP8-quantised weights."""
        return 1.0 if self.kv_cache_dtype == "fp8" else 2.0


class StepCache(Strict):
    """Reuse of denoiser computation across steps (TeaCache, First-Block Cache, DeepCache): on a
    share of the steps the denoiser's output (or its deep features) is taken from an earlier
    step instead of computed, at the cost of a small part of a step. Which steps and how many
    depend on a threshold and the content in the real methods; here ``cached_fraction`` of the
    steps after the first ``warmup_steps`` are cached, spread evenly: the speed-up is a
    parameter, as the methods' papers report it (the simulation does not judge image
    quality)."""

    method: Literal["teacache", "fbcache", "deepcache"]
    """What a cached step still computes. ``teacache``: nothing of the denoiser (it reuses the
    last output residual; the timestep-modulated input that decides is negligible).
    ``fbcache``: the first transformer block (ParaAttention's First-Block Cache: 1 of the
    denoiser's blocks). ``deepcache``: the UNet's shallow branch (set ``cached_step_cost``)."""
    cached_fraction: Float = Field(gt=0, lt=1)
    """Share of the steps after ``warmup_steps`` served from the cache."""
    warmup_steps: Int = Field(default=2, ge=0, le=10_000)
    """First steps always computed (the methods keep the early, fast-changing steps)."""
    cached_step_cost: Float | None = Field(default=None, ge=0, le=1)
    """A cached step's cost as a fraction of a full one; ``null``: 0 for teacache, one block's
    share for fbcache (required for deepcache)."""

    @model_validator(mode="after")
    def _cost(self) -> StepCache:
        if self.method == "deepcache" and self.cached_step_cost is None:
            raise ValueError("deepcache needs cached_step_cost (the shallow branch's share of a step)")
        return self

    def is_cached(self, step: int) -> bool:
        """Whether the request's step (0-based) is served from the cache."""
        i = step - self.warmup_steps
        if i < 0:
            return False
        s = self.cached_fraction
        return int((i + 1) * s) > int(i * s)


class DiffusionBatching(Strict):
    """How a diffusion replica batches image and video requests. A replica runs a batch as text
    encoding, then the denoising steps, then the VAE decode (``sim/diffusion/batcher.py``,
    ``sim/fleet/diffusion_replica.py``). A request holds its memory (latents, the denoiser
    activations of its rows, its share of the VAE workspace) for as long as it is in a batch;
    the requests of a batch must fit together in what ``gpu_memory_utilization`` × GPU memory
    leaves after the weights (denoiser, text encoders and VAE, all resident in bf16), and a
    request that cannot fit on an empty replica is rejected at arrival. A row is one image's
    latent; with classifier-free guidance each image has two."""

    policy: Literal["static", "step"] = "static"
    """``static``: when the replica is free, the oldest waiting request opens a batch and later
    ones join in arrival order while there is room; the batch runs every step and all its
    members finish with its last VAE decode; nobody joins a running batch. ``step``: step-level
    batching: waiting requests join a running batch between two denoising steps (their text
    encoding runs with that step) and members leave after their own last step, with their VAE
    decode, so a short request does not wait for a long one."""
    max_batch_size: Int = Field(default=4, ge=1, le=4096)
    """The most images in a batch; a request with more images than this runs alone."""
    max_wait_s: Float = Field(default=0.0, ge=0)
    """A free replica holds a batch that is not full until its oldest request has waited this
    long since its arrival (Triton's ``max_queue_delay``), then runs what it has. ``0``: run
    whatever is waiting at once. The wait is the ``batch forming`` row. Under ``step`` it
    applies only to opening a batch on an idle replica."""
    shapes: Literal["bucket", "pad"] = "bucket"
    """``bucket``: a batch holds one shape, the same resolution and frames, and under
    ``static`` the same number of steps still to run; requests of other shapes wait for a later
    batch. ``pad``: any shapes share a batch, computed (and holding memory) at the largest
    latent; a static batch runs for its longest member's steps."""
    preview_every: Int = Field(default=0, ge=0)
    """Decode a preview of each member's images every k steps (for a client that streams
    progress): an extra VAE decode each time, which lengthens the batch. Its latency is the
    ``first preview`` row. ``0``: no previews."""
    checkpoint_every: Int = Field(default=0, ge=0)
    """Save each request's latents every k steps. After a replica failure a request with a
    deterministic ``sampler`` resumes on another replica from its last checkpoint; a stochastic
    one starts again. Saving is not charged any time. ``0``: every retry starts from step 0."""
    gpu_memory_utilization: Float = Field(default=0.9, gt=0, le=1)
    """Fraction of GPU memory for weights, latents and activations; what is left after the
    weights is the pool line's ``GiB for latents/replica``."""
    step_cache: StepCache | None = None
    """Cached denoiser steps (TeaCache, First-Block Cache, DeepCache); ``null``: every step
    computed. In a batch a step is cached only when it is for every member (one forward serves
    them all)."""
    cfg_parallel: bool = False
    """With ``tensor_parallel_size`` ≥ 2: the conditional and unconditional rows of
    classifier-free guidance run on two GPUs at once, and their noise predictions are gathered
    each step (xDiT's CFG parallelism)."""
    dtype: Literal["bfloat16", "fp8", "int8"] = "bfloat16"
    """The denoiser's precision. ``fp8`` (FP8 weights and matrix products, as TensorRT and
    torchao serve FLUX and SDXL) and ``int8`` (INT8 weights and activations, TensorRT's 8-bit
    SDXL) read 1 byte per weight and run at the GPU's FP8 or INT8 peak, at the GPU catalog's
    ``denoiser_8bit`` share of the denoiser's bf16 efficiency (fitted on published 8-bit
    pipelines: docs/explanation/calibration.md). Text encoders and the VAE stay bf16. The GPU
    must have the 8-bit tensor cores (the A100 has INT8, no FP8)."""


class FaultConfig(Strict):
    """Replica failures: each replica of the pool fails on its own. It runs for an up time of
    mean ``mtbf_s``, goes down for a repair time of mean ``mttr_s``, comes back empty, and so on
    until the run ends (times come from a random stream of the replication, so runs stay
    reproducible). What a failure does:

    - An LLM replica loses the step in flight and its whole KV cache. Its running requests are
      retried on the replicas still up (each counts against the class's ``max_retries``) and
      start from scratch: the prompt is prefilled and the output generated again, the lost
      attempt's GPU time stays in ``gpu_s``, and TTFT runs from the arrival to the new attempt's
      first token. Its queued requests move to other replicas without counting a retry.
    - A diffusion replica loses the batch in flight. Its requests are retried the same way,
      resuming from their last checkpoint (``checkpoint_every``) if their sampler is
      deterministic, from step 0 otherwise; ``steps_computed`` counts the lost steps too.
    - While every replica of the pool is down, its requests wait for the first one to come back.

    With faults (or a ``timeout_s``) in a scenario the run continues until every request has
    finished, been rejected or failed, or until ``drain_timeout_s``."""

    mtbf_s: Float | None = Field(default=None, gt=0)
    """Mean time between failures of one replica: its up time before each failure. Give
    ``mtbf_s`` or ``at_s``."""
    mttr_s: Float = Field(default=60.0, gt=0)
    """Mean time to repair: how long a failed replica stays down."""
    distribution: Literal["exponential", "fixed"] = "exponential"
    """``exponential``: up and repair times drawn from exponentials with these means. ``fixed``:
    exactly ``mtbf_s`` and ``mttr_s``, so every replica fails at the same moments."""
    at_s: list[tuple[Int, Float]] | None = None
    """Failures at given times, as ``[replica, time_s]`` pairs (the replica's index within the
    pool, from 0; a time ≥ 0), instead of or besides ``mtbf_s``; each is repaired after a
    repair time as above. An index past the pool's last replica is an error."""
    notice_s: Float = Field(default=0.0, ge=0)
    """How long before each failure the replica is told, as a spot instance's eviction notice
    (AWS: 2 minutes; Google Cloud and Azure: 30 seconds): from then on the router sends it no new
    requests, and what it finishes before it goes down is kept. 0: no warning."""

    @model_validator(mode="after")
    def _some(self) -> FaultConfig:
        if self.mtbf_s is None and not self.at_s:
            raise ValueError("give 'mtbf_s' or 'at_s'")
        if self.at_s and any(t < 0 or r < 0 for r, t in self.at_s):
            raise ValueError("at_s entries are (replica index >= 0, time_s >= 0)")
        return self


class SpotCapacity(Strict):
    """The pool's GPUs are spot (preemptible) instances: cheaper, and evicted now and then. An
    eviction is a replica failure (``FaultConfig``) announced ``notice_s`` ahead: the replica
    takes no new requests from the notice, loses what it still holds when it goes, and is
    replaced after ``replacement_s``; its requests are retried as after any failure (an LLM
    request starts again, a diffusion request resumes from its checkpoint when it can).
    ``price`` and ``plan`` bill the spot price, so the discount is weighed against the lost
    work and the SLO misses."""

    price_per_gpu_hour: Float | None = Field(default=None, gt=0)
    """The spot price; ``null``: the on-demand price (the pool's or the catalog's) less
    ``discount``."""
    discount: Float | None = Field(default=None, gt=0, lt=1)
    """Fraction off the on-demand price (give this or ``price_per_gpu_hour``)."""
    evictions_per_hour: Float = Field(gt=0)
    """Evictions per replica per hour (exponential times between them)."""
    notice_s: Float = Field(default=30.0, ge=0)
    """Warning before an eviction (Google Cloud and Azure: 30 s; AWS: 120 s)."""
    replacement_s: Float = Field(default=300.0, gt=0)
    """From an eviction to a new instance serving: provisioning, loading the weights, warming up."""

    @model_validator(mode="after")
    def _price(self) -> SpotCapacity:
        if (self.price_per_gpu_hour is None) == (self.discount is None):
            raise ValueError("give the spot price_per_gpu_hour or its discount, one of them")
        return self

    def as_faults(self) -> FaultConfig:
        return FaultConfig(mtbf_s=3600.0 / self.evictions_per_hour, mttr_s=self.replacement_s, notice_s=self.notice_s)


class ColdStart(Strict):
    """What a new replica does between being asked for and taking traffic: starting the
    engine's process, reading the weights from ``storage``, compiling and capturing CUDA graphs.
    Its GPUs are held (and billed) from the start. Each part is a default from published
    measurements (``docs/explanation/how-the-model-works.md``, "Autoscaling"); measure your own
    and set them, or set ``cold_start_s`` for the whole."""

    storage: str = "local-nvme"
    """Where the weights are read from, in the storage catalog (``servesim catalog storage``):
    ``local-nvme`` (a local SSD), ``network`` (object storage through a parallel loader),
    ``host-cache`` (weights already in host memory). The read takes the replica's weight bytes
    over the storage's bandwidth."""
    provision_s: Float = Field(default=0.0, ge=0, le=86_400)
    """Before the engine starts: a node to come up, a container image to pull (0: a warm node
    with the image cached)."""
    engine_start_s: Float | None = Field(default=None, ge=0, le=86_400)
    """The engine's start-up besides reading weights and compiling: process, imports, CUDA
    context, profiling run, KV-cache allocation. ``null``: 34 s for an LLM (vLLM serving
    Llama-3.1-8B on an L40S with its cache kept, "init engine and imports": Tensorfuse, Reducing
    GPU cold start, 2025), 4 s for a diffusion pipeline (imports 2.2 s and building the
    pipeline 1.4 s for Stable Diffusion in diffusers: modal-labs/modal-examples pull request
    152)."""
    compile_s: Float | None = Field(default=None, ge=0, le=86_400)
    """torch.compile and CUDA-graph capture. ``null``: 30 s for an LLM (the same vLLM start with
    its compile cache kept: Dynamo 10 s, compile 13 s, graph capture 7 s; without the cache 106
    s), 0 for a diffusion pipeline (eager)."""
    cold_start_s: Float | None = Field(default=None, ge=0, le=86_400)
    """The whole cold start, measured: overrides the parts above."""


class Autoscaling(Strict):
    """The pool grows and shrinks between ``min_replicas`` and ``max_replicas`` (``replicas`` is
    the count it starts with), as a Kubernetes HorizontalPodAutoscaler or a Knative/KServe
    autoscaler would: every ``interval_s`` it computes the replicas it wants from ``metric`` and
    ``target``, adds replicas at once (each ready after its cold start) and removes them only
    when every wish of the last ``scale_down_delay_s`` was lower. A removed replica takes no new
    requests and is let go when its last request ends. GPU-hours count the time replicas are
    held (starting, serving or draining)."""

    min_replicas: Int = Field(default=1, ge=0, le=10_000)
    """The fewest replicas held; 0 lets the pool scale to zero once idle (a request arriving
    to no replica waits for one to start: the scale-from-zero cold start)."""
    max_replicas: Int = Field(ge=1, le=10_000)
    """The most replicas held."""
    metric: Literal["in_flight", "queue", "utilisation", "slo", "schedule"] = "in_flight"
    """What the autoscaler follows. ``in_flight``: requests routed and unfinished (waiting for
    a replica or on one), replicas wanted = ceil(mean in flight over ``window_s`` / ``target``)
    (Knative's concurrency target). ``queue``: requests waiting to start (on no replica yet or
    queued on one), replicas wanted = current × mean waiting per replica / ``target``, at least
    one more while any wait beyond ``target`` per replica. ``utilisation``: the share of time the
    replicas computed over ``window_s`` (the GPU's duty cycle, as DCGM reports it), wanted =
    ceil(current × utilisation / ``target``). ``slo``: the pool's classes' SLO: one more replica
    when the SLO's percentile of TTFT (text) or end-to-end latency (images) over requests
    finished in ``window_s`` exceeds ``target`` × the SLO, one fewer when it is under half of
    that. ``schedule``: the replica counts of ``schedule`` at their times."""
    target: Float | None = Field(default=None, gt=0, le=1_000_000)
    """The metric's target: requests per replica (in_flight, queue), a busy fraction in (0, 1]
    (utilisation), a fraction of the SLO (slo; default 0.8). Required except for slo and
    schedule."""
    schedule: list[tuple[Float, Int]] | None = None
    """``metric: schedule``: ``[time_s, replicas]`` pairs, the first at time 0, times ascending;
    a count holds until the next time (``period_s`` repeats them)."""
    period_s: Float | None = Field(default=None, gt=0)
    """Repeat ``schedule`` with this period (86400: daily)."""
    interval_s: Float = Field(default=15.0, gt=0, le=86_400)
    """How often the autoscaler decides (Kubernetes HPA's sync period: 15 s)."""
    window_s: Float = Field(default=60.0, gt=0, le=86_400)
    """The span the metric is averaged over (Knative's stable window: 60 s)."""
    scale_down_delay_s: Float = Field(default=300.0, ge=0, le=86_400)
    """Scale down only to the highest count wanted over this span (HPA's scale-down
    stabilisation window: 300 s), so a dip does not throw away replicas a peak needs again."""
    tolerance: Float = Field(default=0.1, ge=0, lt=1)
    """No change while the metric is within this fraction of its target (HPA's 10 %)."""
    cold_start: ColdStart = ColdStart()
    """How long a new replica takes before it serves."""

    @model_validator(mode="after")
    def _consistent(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        needs_target = self.metric in ("in_flight", "queue", "utilisation")
        if needs_target and self.target is None:
            raise ValueError(f"metric {self.metric} needs a target")
        if self.metric == "utilisation" and self.target is not None and self.target > 1:
            raise ValueError("metric utilisation: target is a busy fraction in (0, 1]")
        if (self.metric == "schedule") != (self.schedule is not None):
            raise ValueError("metric schedule and a schedule go together")
        if self.schedule is not None:
            times = [t for t, _ in self.schedule]
            if not times or times[0] != 0 or any(b <= a for a, b in zip(times, times[1:])):
                raise ValueError("schedule: the first time is 0 and times ascend")
            if any(not self.min_replicas <= n <= self.max_replicas for _, n in self.schedule):
                raise ValueError("schedule: every count between min_replicas and max_replicas")
        return self


class Colocation(Strict):
    """This pool's replicas run on another pool's GPUs: replica i of this pool shares the GPUs
    of replica i of ``pool`` (an LLM beside a diffusion model, or two LLMs). Memory is
    partitioned; compute is either time-sliced (CUDA's default between processes) or split by
    MIG into fixed slices."""

    pool: str
    """The pool whose GPUs this one shares (same GPU type, replicas and GPUs per replica)."""
    mode: Literal["time_slice", "mig"] = "time_slice"
    """``time_slice``: each model runs on the whole GPU while the other waits; a step is
    slowed by the other's load: its time × (1 + the other replica's busy fraction over the
    last ``window_s``), the mean-field form of two processes sharing a processor in turns.
    ``mig``: Multi-Instance GPU slices; each model sees a smaller GPU (``compute_fraction`` of
    the compute and bandwidth, ``memory_fraction`` of the memory) and nothing of the other."""
    memory_fraction: Float = Field(gt=0, lt=1)
    """This pool's share of each GPU's memory (the other pool gets the rest): weights,
    activations and KV cache or latents must fit in it."""
    compute_fraction: Float | None = Field(default=None, gt=0, lt=1)
    """``mig``: this pool's share of the GPU's compute and memory bandwidth, as MIG slices give it
    (on an H100, 3g.40gb is 3/7 of the compute and 4/8 of the memory); default: the memory
    fraction."""
    window_s: Float = Field(default=5.0, gt=0, le=3600)
    """``time_slice``: the span over which the other replica's busy fraction is measured."""

    @property
    def compute_share(self) -> float:
        return self.compute_fraction if self.compute_fraction is not None else self.memory_fraction


class RooflineCost(Strict):
    """The default cost model: step time from FLOPs and bytes against the GPU's peaks, scaled by
    efficiency factors (docs/explanation/how-the-model-works.md). For a diffusion pool the same
    idea prices the text encoders, each denoising step (its rows × latent tokens) and the VAE
    decode, with per-component efficiency factors from
    ``sim/catalog/data/diffusion_models.yaml``."""

    kind: Literal["roofline"] = "roofline"
    """Selects this cost model."""
    compute_efficiency: Float | None = Field(default=None, gt=0, le=1)
    """Fraction of peak TFLOP/s the kernels reach; ``null`` uses the GPU catalog's factor (0.715
    for ``h100-sxm``; prefill attention uses its own, 0.65). For a diffusion pool it replaces
    the denoiser's factor only; text encoders and VAE keep theirs."""
    bandwidth_efficiency: Float | None = Field(default=None, gt=0, le=1)
    """Fraction of HBM bandwidth reached when streaming weights and KV; ``null`` uses the
    catalog's factor (0.923 for ``h100-sxm``; the KV-cache read uses its own, 0.80). For a
    diffusion pool, the denoiser's only."""
    execution: Literal["compiled", "eager"] = "compiled"
    """Diffusion pools: how the denoiser runs. ``compiled`` (torch.compile, TensorRT, CUDA
    graphs) fuses the elementwise ops and hides the host. ``eager`` (a plain diffusers
    pipeline) launches every op from Python and streams every elementwise op's tensors through
    HBM: a step takes the longer of the GPU time plus that traffic (op counts and bytes per
    model in the diffusion catalog, ``eager:``) and the host's dispatch of every op
    (``overheads.eager_op_s`` in the GPU catalog). LLM pools ignore it."""


class ConstantCost(Strict):
    """Step times you set yourself.

    LLM pools: step time = ``step_s`` + ``prefill_token_s`` × prefill tokens in the step +
    ``decode_seq_s`` × decoding requests in the step. With the last two at zero every step
    costs the same, which makes a replica with ``max_num_seqs: 1`` an M/D/1 queue (useful for
    checking against queueing theory). KV capacity is still derived from the pool's model and
    GPU.

    Diffusion pools: a denoising step takes ``step_s`` + ``per_row_s`` × rows in the batch; a
    batch adds ``text_encode_s`` once for its text encoding (under ``policy: step``, once for
    each step at which requests join), and every VAE decode, final or preview, adds
    ``vae_decode_s`` per image. Memory is still derived from the pool's model and GPU. Each kind
    of pool ignores the other kind's fields."""

    kind: Literal["constant"]
    """Selects this cost model."""
    step_s: Float = Field(gt=0, le=3600)
    """Seconds every step costs (LLM engine step or denoising step)."""
    prefill_token_s: Float = Field(default=0.0, ge=0, le=3600)
    """LLM: extra seconds per prompt token computed in the step."""
    decode_seq_s: Float = Field(default=0.0, ge=0, le=3600)
    """LLM: extra seconds per decoding request in the step."""
    per_row_s: Float = Field(default=0.0, ge=0, le=3600)
    """Diffusion: extra seconds per denoiser row in the step (one per image, two with
    guidance)."""
    text_encode_s: Float = Field(default=0.0, ge=0, le=3600)
    """Diffusion: seconds of text encoding per batch, whatever its size."""
    vae_decode_s: Float = Field(default=0.0, ge=0, le=3600)
    """Diffusion: seconds of VAE decoding per image, for the final image and for each
    preview."""


class ProfileCost(Strict):
    """Step times from a calibration profile (format ``servesim-profile/1``,
    docs/profile-format.md): per-op timings measured on a device (or imported from Vidur) for
    one model, dtype and tensor-parallel degree, fitted to a table over tokens (the linear
    layers) and linear forms (attention, all-reduce, LM head, host overhead). ``profiles/vidur/``
    ships profiles imported from Vidur's published H100 and A100 timings (``python -m
    calibration.vidur`` regenerates them); ``scenarios/llama2_7b_h100_profile.yaml`` runs one.
    The profile's ``model`` and ``tp`` must equal the pool's ``model`` and
    ``tensor_parallel_size``, an LLM pool needs an LLM profile and a diffusion pool a diffusion
    one, and a profile measured on a catalog GPU (``device.gpu``) only prices a pool on that
    GPU; a profile of an uncatalogued device (``device.gpu: null``, a CPU for instance) prices
    any. The pool's ``gpu`` still sets memory, KV capacity and price. A step beyond the
    profile's ``extrapolation_limit`` × its measured range (more tokens in a step than were
    measured, say) stops the run with a one-line error naming the op and the range."""

    kind: Literal["profile"]
    """Selects this cost model."""
    path: str = Field(min_length=1)
    """Path of the profile YAML file, relative to the scenario file (for a shipped scenario:
    ``../profiles/vidur/llama-2-7b-h100-sxm-float16-tp1.yaml``) or absolute."""


CostModelConfig = Annotated[Union[RooflineCost, ConstantCost, ProfileCost], Field(discriminator="kind")]


class Disaggregation(Strict):
    """Prefill/decode disaggregation (DistServe, Splitwise, Mooncake, NVIDIA Dynamo, llm-d): this
    pool only decodes. A request sent here first runs its prompt on ``prefill_pool`` (as a
    one-token request, vLLM's remote-prefill recipe), which keeps the prompt's KV cache; a
    replica of this pool then admits it, allocating blocks for the prompt, and reads that KV
    cache over ``link`` (bytes: the model's KV bytes per token × prompt tokens); then the
    prefill side frees it, and this side computes the last prompt token again for the first
    output token (as vLLM does) and decodes. TTFT therefore includes the prefill pool's queue
    and prefill, the wait for a decode replica's blocks, the transfer and one decode step."""

    prefill_pool: str = Field(min_length=1)
    """The LLM pool that runs the prompts: same model, ``block_size`` and KV cache dtype, a
    continuous scheduler. Other classes may send it requests of their own."""
    link: str = "infiniband-ndr"
    """The link between the two pools' GPUs, from the link catalog (``servesim catalog links``):
    its rate per GPU (line rate × measured efficiency) and latency. Each tensor-parallel rank sends its share of the KV cache
    on its own link; the transfers into one decode replica queue for its links."""
    bandwidth_gb_s: Float | None = Field(default=None, gt=0)
    """Overrides the link's rate per GPU, one direction, in GB/s, as reached (the catalog's line
    rate × efficiency otherwise): e.g. the rate your transfer library measured."""
    latency_s: Float | None = Field(default=None, ge=0)
    """Overrides the link's fixed time per transfer, in seconds."""

    @field_validator("link")
    @classmethod
    def _known_link(cls, name: str) -> str:
        if name not in catalog.links():
            raise ValueError(f"unknown link {name!r}; allowed: {', '.join(catalog.links())}")
        return name

    @property
    def gb_s(self) -> float:
        return self.bandwidth_gb_s or catalog.get_link(self.link).effective_gb_s

    @property
    def transfer_latency_s(self) -> float:
        return self.latency_s if self.latency_s is not None else catalog.get_link(self.link).latency_s


#: GPUs joined by NVLink in one server (HGX/DGX H100, H200, B200): expert parallelism's
#: all-to-all is modelled within one.
GPUS_PER_NODE = 8


class PoolConfig(Strict):
    """``replicas`` identical replicas of one model on one GPU type, behind one router. A
    replica of an LLM is one vLLM engine, set by ``engine``; a replica of a diffusion model (a
    model from the diffusion catalog) runs text encoding, denoising steps and VAE decoding in
    batches, set by ``batching``."""

    name: str = Field(min_length=1)
    """How classes, stages and ``--set`` refer to the pool; unique among pools."""
    model: str
    """An LLM from ``sim/catalog/data/models.yaml`` (its shapes set the weights, KV bytes per
    token, step cost and the default ``max_model_len``), or a diffusion pipeline from
    ``sim/catalog/data/diffusion_models.yaml`` (denoiser, text encoders, VAE, default
    resolution, frames and steps), or one the scenario's ``catalog`` defines. The names are
    listed by ``servesim catalog`` and in docs/reference/catalog.md. Text classes need an LLM
    pool, image classes a diffusion pool."""
    gpu: str
    """A GPU from ``sim/catalog/data/gpus.yaml`` (or the scenario's ``catalog``): memory, peaks,
    efficiencies, interconnect and dated price (``servesim catalog gpus``,
    docs/reference/catalog.md)."""
    replicas: Int = Field(default=1, ge=1, le=10_000)
    """Number of replicas; each has its own scheduler and KV cache (diffusion: its own batches
    and memory). With ``autoscaling``: the count it starts with."""
    tensor_parallel_size: Int = Field(default=1, ge=1, le=64)
    """GPUs per replica (vLLM ``--tensor-parallel-size``); must divide the model's attention
    heads. Weights, KV heads and compute are split across them and each layer adds two
    all-reduces; cost counts ``replicas`` × ``tensor_parallel_size`` GPUs. A diffusion pool
    (DiT and MMDiT denoisers) spreads a request over this many GPUs as xDiT does:
    classifier-free guidance's two rows on two GPUs (``batching.cfg_parallel``) and the image's
    tokens over the rest (Ulysses sequence parallelism); every GPU holds the whole denoiser."""
    engine: EngineConfig = EngineConfig()
    """The replica's vLLM engine knobs (LLM pools only)."""
    batching: DiffusionBatching | None = None
    """How a diffusion replica forms batches (diffusion pools only); ``null``: all defaults
    (static batches of up to 4 images, no waiting)."""
    router: Literal["round_robin", "least_outstanding", "jsq_tokens", "cache_aware"] = "round_robin"
    """Picks the replica for each arriving request (and for each retry), among the replicas that
    are up: ``round_robin`` in turn; ``least_outstanding`` the fewest unfinished requests routed
    to it; ``jsq_tokens`` the least work still to do (LLM: prompt and output tokens of its
    unfinished requests; diffusion: remaining steps × rows); ``cache_aware`` (LLM pools) NVIDIA
    Dynamo's KV-aware cost: ``router_overlap_weight`` × the prefill blocks it would wait behind
    and add (its prompt less what the replica's prefix cache holds) + the KV blocks in use and
    those it would add. Ties go round robin."""
    router_overlap_weight: Float = Field(default=1.0, ge=0, le=1000)
    """``cache_aware`` router: the weight of the prefill term against the blocks in use (Dynamo's
    ``overlap_score_weight``, default 1); larger follows cache hits harder, 0 balances memory
    only."""
    cost_model: CostModelConfig = RooflineCost()
    """How long an engine step (LLM) or a text encode, denoising step and VAE decode (diffusion)
    take: a cost model, chosen by ``kind``."""
    price_per_gpu_hour: Float | None = Field(default=None, gt=0)
    """Dollars per GPU-hour for cost figures; ``null`` uses the catalog's dated price for the
    GPU."""
    faults: FaultConfig | None = None
    """Replica failures and repairs; ``null``: replicas never fail."""
    spot: SpotCapacity | None = None
    """Spot (preemptible) GPUs: a spot price and evictions with notice; ``null``: on-demand."""
    disaggregation: Disaggregation | None = None
    """This LLM pool decodes only: its requests' prompts run on another pool and their KV cache
    crosses a link (prefill/decode disaggregation); ``null``: it prefills and decodes
    (aggregated serving)."""
    autoscaling: Autoscaling | None = None
    """Replicas added and removed with the load, each new one after a cold start; ``null``: a
    fixed ``replicas``."""
    colocation: Colocation | None = None
    """This pool's replicas share another pool's GPUs (memory partitioned, compute time-sliced
    or MIG-split); ``null``: its own GPUs."""

    @property
    def replicas_built(self) -> int:
        """Replicas the simulation builds: ``replicas``, or an autoscaled pool's most."""
        return self.autoscaling.max_replicas if self.autoscaling is not None else self.replicas

    @property
    def is_diffusion(self) -> bool:
        return self.model in catalog.diffusion_models()

    @property
    def effective_faults(self) -> FaultConfig | None:
        """The failures the pool sees: its ``faults``, or its spot evictions."""
        return self.spot.as_faults() if self.spot is not None else self.faults

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
        if self.spot is not None and self.faults is not None:
            raise ValueError("spot evictions are the pool's failures: give spot or faults, not both")
        scaling = self.autoscaling
        if scaling is not None:
            if not scaling.min_replicas <= self.replicas <= scaling.max_replicas:
                raise ValueError(
                    f"replicas {self.replicas} (the count it starts with) must lie between autoscaling.min_replicas "
                    f"{scaling.min_replicas} and max_replicas {scaling.max_replicas}"
                )
            if self.effective_faults is not None or self.disaggregation is not None:
                raise ValueError("autoscaling with faults, spot capacity or disaggregation is not modelled")
            if scaling.cold_start.storage not in catalog.storage():
                raise ValueError(
                    f"autoscaling.cold_start.storage {scaling.cold_start.storage!r} is not in the storage catalog; "
                    f"allowed: {', '.join(catalog.storage())}"
                )
        tp = self.tensor_parallel_size
        if self.is_diffusion:
            if "engine" in self.model_fields_set:
                raise ValueError(f"{self.model} is a diffusion model: its pool takes 'batching', not 'engine'")
            cfg_par = 2 if self.diffusion.cfg_parallel else 1
            if tp % cfg_par:
                raise ValueError(f"tensor_parallel_size {tp} must be even with batching.cfg_parallel")
            if tp > 1 and catalog.get_diffusion_model(self.model).architecture == "unet":
                raise ValueError(
                    f"tensor_parallel_size {tp}: {self.model} is a UNet; sequence and CFG parallelism here are for DiT "
                    "denoisers (use 1)"
                )
            if self.router == "cache_aware":
                raise ValueError(f"router cache_aware reads an LLM's KV cache; {self.model} is a diffusion model")
            dtype = self.diffusion.dtype
            if dtype != "bfloat16" and eight_bit_peak_tflops(catalog.get_gpu(self.gpu), dtype) is None:
                raise ValueError(f"gpu {self.gpu} has no {dtype.upper()} support; use batching.dtype: bfloat16")
            return self
        if self.batching is not None:
            raise ValueError(f"{self.model} is an LLM: its pool takes 'engine', not 'batching'")
        spec = catalog.get_model(self.model)
        e = self.engine
        dp = e.attention_data_parallel
        if (e.expert_parallel or e.dtype == "mxfp4") and not spec.is_moe:
            what = "expert_parallel" if e.expert_parallel else "dtype mxfp4"
            raise ValueError(f"engine.{what} is for mixture-of-experts models; {self.model} is dense")
        if tp % dp:
            raise ValueError(f"engine.attention_data_parallel {dp} must divide tensor_parallel_size {tp}")
        if e.expert_parallel and tp > GPUS_PER_NODE:
            raise ValueError(
                f"engine.expert_parallel over tensor_parallel_size {tp}: expert parallelism across nodes (its all-to-all "
                f"over the network) is not modelled; one {GPUS_PER_NODE}-GPU NVLink node at most"
            )
        if e.expert_parallel and not isinstance(self.cost_model, RooflineCost):
            raise ValueError("engine.expert_parallel needs the roofline cost model (a profile measures one layout)")
        if dp > 1 and self.disaggregation is not None:
            raise ValueError("engine.attention_data_parallel on a disaggregated pool is not modelled")
        if spec.num_attention_heads % (tp // dp):
            group = "tensor_parallel_size" if dp == 1 else "tensor_parallel_size / engine.attention_data_parallel"
            raise ValueError(
                f"{group} {tp // dp} must divide num_attention_heads ({spec.num_attention_heads}) of {self.model}"
            )
        spec = self.engine.speculative
        if spec is not None and spec.draft_model is not None:
            draft = catalog.get_model(spec.draft_model)
            if draft.vocab_size != catalog.get_model(self.model).vocab_size:
                raise ValueError(
                    f"engine.speculative.draft_model {spec.draft_model} has a vocabulary of {draft.vocab_size:,}, "
                    f"{self.model} {catalog.get_model(self.model).vocab_size:,}: a draft must share the target's tokenizer"
                )
            if draft.num_attention_heads % tp:
                raise ValueError(
                    f"engine.speculative.draft_model {spec.draft_model}: tensor_parallel_size {tp} must divide its "
                    f"num_attention_heads ({draft.num_attention_heads})"
                )
        if self.engine.dtype == "fp8" and catalog.get_gpu(self.gpu).fp8_tflops is None:
            raise ValueError(f"gpu {self.gpu} has no FP8 support; use dtype: bfloat16")
        return self


# --------------------------------------------------------------------------- scenario


class PlanPoolSpace(Strict):
    """What ``servesim plan`` may choose for one pool (each list: the options tried; left out:
    the plan-wide option, else the pool's own setting)."""

    gpus: list[str] | None = Field(default=None, min_length=1)
    """GPU types for this pool (catalog GPUs)."""
    tensor_parallel_size: list[Annotated[Int, Field(ge=1, le=64)]] | None = Field(default=None, min_length=1)
    """TP degrees for this pool (diffusion pools run TP 1)."""
    models: list[str] | None = Field(default=None, min_length=1)
    """Alternative models serving the same classes (``[sdxl, flux-schnell]``). An image class
    that does not fix ``steps`` runs each model's default step count."""
    variants: list[dict[str, Any]] | None = Field(default=None, min_length=1)
    """Knob alternatives: each a mapping of pool fields, dotted (``engine.max_num_seqs: 128``,
    ``batching.max_batch_size: 8``, ``router: jsq_tokens``), applied over the pool."""
    max_replicas: Int | None = Field(default=None, ge=1, le=10_000)
    """This pool's cap on replicas (default: the plan's; a disaggregated pool: on units)."""
    pd_ratios: list[str] | None = Field(default=None, min_length=1)
    """A disaggregated (decode) pool: the prefill:decode replica ratios tried, as ``"P:D"``
    (``"1:3"``). A fleet is a number of units of P prefill and D decode replicas, and the plan
    finds the fewest units for each ratio. ``null``: 3:1, 2:1, 1:1, 1:2, 1:3. The prefill side's
    GPUs and TP degrees come from the prefill pool's own entry here (else the plan-wide lists,
    else its own)."""

    @field_validator("pd_ratios")
    @classmethod
    def _ratios(cls, ratios: list[str] | None) -> list[str] | None:
        for r in ratios or ():
            parse_pd_ratio(r)
        return ratios

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


def _other_pool(pools: dict[str, PoolConfig], me: str, name: str, where: str) -> PoolConfig:
    """The pool ``name`` that pool ``me`` refers to at ``where``; it must be another one."""
    if name not in pools or name == me:
        others = [p for p in pools if p != me]
        raise ValueError(f"{where}: {name!r} is not another pool; pools: {', '.join(others)}")
    return pools[name]


DEFAULT_PD_RATIOS = ["3:1", "2:1", "1:1", "1:2", "1:3"]


def parse_pd_ratio(text: str) -> tuple[int, int]:
    """``"P:D"`` -> (P, D), both whole numbers from 1 to 64."""
    parts = str(text).split(":")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        p, d = int(parts[0]), int(parts[1])
        if 1 <= p <= 64 and 1 <= d <= 64:
            return p, d
    raise ValueError(f"pd ratio {text!r}: write prefill:decode replicas as two whole numbers from 1 to 64, e.g. '1:3'")


def disaggregation_mismatch(prefill: PoolConfig, decode: PoolConfig) -> str:
    """Why ``decode`` cannot decode for ``prefill`` ('' if it can)."""
    name = prefill.name
    if decode.is_diffusion or prefill.is_diffusion:
        return "both pools must serve an LLM"
    if prefill.disaggregation is not None:
        return f"pool {name!r} itself decodes only; it cannot prefill for another"
    if prefill.model != decode.model:
        return f"prefill pool {name!r} serves {prefill.model}, this pool {decode.model}: they must match"
    for field_ in ("block_size", "kv_cache_dtype"):
        a, b = getattr(prefill.engine, field_), getattr(decode.engine, field_)
        if a != b:
            return f"engine.{field_} is {a!r} on prefill pool {name!r} and {b!r} here: they must match"
    for pool in (prefill, decode):
        if pool.engine.scheduler != "continuous":
            return f"pool {pool.name!r} must use the continuous scheduler"
    return ""


class PlanLayout(Strict):
    """One way to lay the classes out on pools. ``merge`` joins pools of the scenario into one
    shared pool (the first listed gives its knobs); pools not merged stay as they are."""

    name: str = Field(min_length=1)
    """The layout's name in the output; unique among layouts."""
    merge: dict[str, list[str]] = {}
    """New pool name → the pools it joins (at least two, of one model; a pool in one group at
    most). The new pool serves all their classes; the first listed gives its knobs."""


class PlanConfig(Strict):
    """The ``plan:`` block of a scenario: what ``servesim plan`` may choose and how sure it must
    be (docs/how-to/plan-a-fleet.md). The scenario's pools give everything else (router, engine
    knobs, batching); their ``replicas`` are ignored: the plan finds them."""

    gpus: list[str] | None = Field(default=None, min_length=1)
    """GPU types (catalog GPUs) tried for every pool. ``null``: each pool's own ``gpu``."""
    tensor_parallel_size: list[Annotated[Int, Field(ge=1, le=64)]] | None = Field(default=None, min_length=1)
    """TP degrees tried for every LLM pool (a degree that does not divide the model's heads is
    rejected with its reason). ``null``: each pool's own."""
    prices: dict[str, Annotated[Float, Field(gt=0)]] = {}
    """$ per GPU-hour by GPU type, overriding the catalog's dated prices (a pool's own
    ``price_per_gpu_hour`` applies when its GPU is not changed)."""
    max_replicas: Int = Field(default=64, ge=1, le=10_000)
    """Most replicas of one pool; a candidate that needs more is rejected."""
    replications: Int = Field(default=3, ge=2, le=100)
    """Seeded replications per evaluation; each check's 95 % CI comes from them. A workload
    with nothing random (a trace replayed with its own arrivals, no faults) uses one."""
    max_replications: Int = Field(default=8, ge=2, le=1000)
    """When a check's CI straddles its target, replications are added up to this many (at
    least ``replications``); still undecided, the evaluation counts as a miss."""
    duration_s: Float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    """Arrivals per evaluation. ``null``: the scenario's ``duration_s``."""
    pools: dict[str, PlanPoolSpace] = {}
    """Per-pool search space by pool name (merged pools by their new name), overriding the
    plan-wide lists."""
    layouts: list[PlanLayout] | None = Field(default=None, min_length=1)
    """Pool layouts to compare (split vs shared), with unique names. ``null``: the scenario's
    own pools, as one layout named ``as-given``."""

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
    """LLMs, GPUs and diffusion pipelines the shipped catalog lacks, defined by the scenario for
    its pools. Each entry is written as in ``sim/catalog/data/*.yaml`` (with its ``name``) and
    validated the same way; a name the catalog already has with other values is an error (one
    line naming the entry). Every process that simulates the scenario (sweep and plan workers
    too) sees its entries, and ``scenario.json`` writes them out whole.

    An LLM may give ``config_json: path/to/config.json`` (a Hugging Face config file you have,
    relative to the scenario file; no download) instead of its shapes: its layers, hidden size,
    attention and KV heads, head size, MLP width, vocabulary, tied embeddings, q/k/v biases and
    context length come from the file, and its parameter count from those shapes; Llama-family
    dense decoders only (a mixture-of-experts config is refused). A GPU needs only its peaks
    (``bf16_tflops``, ``memory_gib``, ``hbm_tb_s``) and ``price: {usd_per_gpu_hour: ...}``; its
    roofline efficiencies and host overheads are then the catalog's assumed defaults (the run
    says so, as for any GPU without a fit), and its link PCIe Gen5 x16 unless
    ``interconnect_gb_s`` is given. A diffusion pipeline gives every field of a
    ``diffusion_models.yaml`` entry. Entries several scenarios share go in a catalog file (a
    YAML mapping with ``models``, ``gpus`` and ``diffusion_models`` lists; its ``config_json``
    paths relative to it) that each scenario reads in with ``catalog: {files: [...]}``. A worked
    example: docs/how-to/bring-your-own-model-or-gpu.md."""

    files: list[str] = Field(default_factory=list, exclude=True)
    """Catalog files several scenarios share, read in (paths relative to the scenario file);
    once read, their entries stand in the lists below and the paths are not kept (nor written
    out)."""
    models: list[dict[str, Any]] = Field(default_factory=list)
    """LLMs: entries as in ``models.yaml``, or with ``config_json``."""
    gpus: list[dict[str, Any]] = Field(default_factory=list)
    """GPUs: entries as in ``gpus.yaml``; ``efficiency``, ``overheads`` and the link
    (``interconnect_gb_s``) optional."""
    diffusion_models: list[dict[str, Any]] = Field(default_factory=list)
    """Diffusion pipelines: entries as in ``diffusion_models.yaml``."""

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


def kinds_problem(pool: PoolConfig, kinds: set[str], linked: bool = False, cfg: bool = False) -> str | None:
    """Why ``pool`` cannot serve classes of ``kinds`` (None if it can): the kinds beyond text,
    image and pipeline are not modelled with some pool features yet, and a block-step pool
    (diffusion LM, hybrid) serves those kinds alone. ``linked``: another pool shares its GPUs or
    prefills for it; ``cfg``: an AR image or audio class on it runs two sequences together."""
    new = kinds & set(NEW_KINDS)
    if not new:
        return None
    blocks = kinds & set(BLOCK_KINDS)
    if blocks and kinds - blocks:
        return (
            f"serves {', '.join(sorted(blocks))} classes (a block-step engine) and "
            f"{', '.join(sorted(kinds - blocks))} ones (vLLM's scheduler): give them separate pools"
        )
    if len(blocks) > 1:
        return "serves both dllm and hybrid classes; give them separate pools"
    e = pool.engine
    for bad, what in (
        (pool.autoscaling is not None, "autoscaling"),
        (pool.disaggregation is not None or linked, "disaggregation or colocation"),
        (pool.colocation is not None, "disaggregation or colocation"),
        (e.speculative is not None, "speculative decoding"),
        (bool(blocks) and e.scheduler != "continuous", "a static scheduler"),
        (bool(blocks) and e.attention_data_parallel > 1, "data-parallel attention"),
        (bool(blocks) and (e.preemption_mode == "swap" or e.kv_offloading_size > 0), "KV swap or offload"),
        (bool(blocks) and pool.router == "cache_aware", "the cache_aware router"),
    ):
        if bad:
            return f"serves {', '.join(sorted(new))} classes, which are not modelled with {what} yet; remove it or serve them elsewhere"
    if cfg and e.max_num_seqs < 2:
        return "max_num_seqs must be at least 2 for classifier-free guidance: a request's two sequences decode together"
    return None


class Scenario(Strict):
    """One question about a fleet: pools of replicas, request classes, how long to run."""

    name: str = Field(min_length=1)
    """Names the run: first line of the summary, ``scenario`` in ``summary.json``."""
    description: str = ""
    """Free text for readers; kept in ``scenario.json``, not used by the simulation."""
    seed: Int = Field(default=0, ge=0)
    """Root of all randomness (``--seed`` on the command line). Same seed, same results."""
    replications: Int = Field(default=1, ge=1, le=1000)
    """Independent runs, each with its own random streams derived from ``seed``; the summary
    reports mean ± 95 % interval across them (``--replications``)."""
    duration_s: Float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    """Synthetic arrivals are generated in [0, ``duration_s``); a replayed trace is cut at this
    time (after rescaling). The simulation itself continues until the requests drain."""
    num_requests: Int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    """Stop each class after this many arrivals (with ``duration_s`` too, whichever comes first;
    a trace keeps its first N). A class with an ``arrival`` process (also one that takes its
    lengths from a ``trace``) needs ``duration_s`` or ``num_requests``, and may not be set up to
    generate more than 100,000,000 arrivals (rate, or a piecewise curve's peak rate, ×
    ``duration_s``)."""
    warmup_s: Float = Field(default=0.0, ge=0)
    """Start of the measurement window: requests arriving earlier are simulated (they fill the
    caches and queues) but left out of the summary. Must be below ``duration_s`` (checked on
    validation) and below every replication's last arrival time (checked after the first
    replication that breaks it)."""
    drain_timeout_s: Float | None = Field(default=None, gt=0)
    """Stop the run this long after the last arrival; unfinished requests are reported ``in
    flight`` and left out of latency statistics. ``null``: run until every request has
    finished, been rejected or failed."""
    catalog: ScenarioCatalog | None = None
    """Models, GPUs and diffusion pipelines the scenario defines for its pools (the shipped
    catalog lacks them); validated before the pools, which may use them."""
    pools: list[PoolConfig] = Field(min_length=1)
    """The serving fleet, with unique ``name``s."""
    classes: list[RequestClass] = Field(min_length=1)
    """The traffic, with unique ``name``s."""
    slo: SLO | None = None
    """Default SLO for classes without their own, and the SLO of the ``all`` row when there are
    several classes."""
    plan: PlanConfig | None = None
    """What ``servesim plan`` may choose (GPU types, TP, models, knobs, layouts) and its
    statistics; ``run`` ignores it."""

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
                if kind != "image" and diffusion:
                    what = "text" if kind == "text" else f"{kind} requests"
                    raise ValueError(
                        f"{where}class {c.name!r} sends {what} to pool {pool!r}, which serves the diffusion model {pools[pool].model}"
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
            if c.arrival is None or self.duration_s is None or isinstance(c.arrival, ClosedArrival):
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
        self._check_disaggregation(pools)
        self._check_colocation(pools)
        self._check_kinds(pools)
        for c in self.classes:
            # a class none of whose requests could ever fit its pool serves nothing: say so now
            if c.kind not in ("text", *NEW_KINDS) or c.pool is None or c.trace is not None or c.prompt_tokens is None:
                continue
            shape = c.shape
            if c.kind in ("text", "dllm"):
                if c.output_tokens is None:
                    continue
                out = least_tokens(c.output_tokens)
            elif c.kind == "audio":
                out = shape.steps(least_tokens(shape.seconds))
            else:
                out = sum(shape.blocks) if c.kind == "hybrid" else shape.image_tokens
            pool = pools[c.pool]
            limit = pool.engine.max_model_len or catalog.get_model(pool.model).max_position_embeddings
            least = least_tokens(c.prompt_tokens) + out
            if least > limit:
                raise ValueError(
                    f"class {c.name!r}: every request needs at least {least:,} tokens (prompt + output), more than the "
                    f"max_model_len ({limit:,}) of pool {c.pool!r}: none could be served; shorten the lengths or raise "
                    "engine.max_model_len (up to the model's context)"
                )
        if self.plan is not None:
            self._check_plan(pools)
        return self

    def _check_kinds(self, pools: dict[str, PoolConfig]) -> None:
        """Classes of the kinds beyond text, image and pipeline: what their pools may be."""
        served: dict[str, set[str]] = {}
        for c in self.classes:
            if c.pool is not None:
                served.setdefault(c.pool, set()).add(c.kind)
            for st in c.stages or ():
                served.setdefault(st.pool, set()).add("pipeline stage")
        for name, kinds in served.items():
            shared = any(p.colocation is not None and p.colocation.pool == name for p in self.pools)
            prefills = any(p.disaggregation is not None and p.disaggregation.prefill_pool == name for p in self.pools)
            cfg = any(
                c.pool == name and getattr(c.shape, "cfg", False)
                for c in self.classes
                if c.kind in ("ar_image", "audio")
            )
            why = kinds_problem(pools[name], kinds, shared or prefills, cfg)
            if why:
                raise ValueError(f"pools.{name}: {why}")
        for c in self.classes:
            shape = c.shape
            decoder = getattr(shape, "decoder", None)
            if decoder is not None:
                try:
                    catalog.get_vae(decoder)
                except ConfigError as exc:
                    raise ValueError(f"classes.{c.name}.{c.kind}.decoder: {exc}") from None

    def _check_colocation(self, pools: dict[str, PoolConfig]) -> None:
        hosts: dict[str, str] = {}
        for g in self.pools:
            if g.colocation is None:
                continue
            where = f"pools.{g.name}.colocation"
            name = g.colocation.pool
            h = _other_pool(pools, g.name, name, f"{where}.pool")
            if h.colocation is not None or name in hosts:
                raise ValueError(f"{where}.pool: {name!r} already shares its GPUs; two pools share a GPU at most")
            hosts[name] = g.name
            for field_ in ("gpu", "replicas", "tensor_parallel_size"):
                if getattr(h, field_) != getattr(g, field_):
                    raise ValueError(
                        f"{where}: {field_} is {getattr(g, field_)!r} here and {getattr(h, field_)!r} on {name!r}: "
                        "pools sharing GPUs must match in gpu, replicas and tensor_parallel_size"
                    )
            for pool in (h, g):
                if (
                    pool.autoscaling
                    or pool.effective_faults
                    or pool.disaggregation
                    or pool.cost_model.kind != "roofline"
                ):
                    raise ValueError(
                        f"{where}: pool {pool.name!r} sharing GPUs must use the roofline cost model and have no "
                        "autoscaling, faults, spot capacity or disaggregation (not modelled together)"
                    )
            if any(
                p.disaggregation is not None and p.disaggregation.prefill_pool in (name, g.name) for p in self.pools
            ):
                raise ValueError(f"{where}: a pool sharing GPUs cannot prefill for a disaggregated pool")
        if hosts and self.plan is not None:
            raise ValueError("plan: pools sharing GPUs (colocation) cannot be planned yet; run them")

    def _check_disaggregation(self, pools: dict[str, PoolConfig]) -> None:
        for d in self.pools:
            if d.disaggregation is None:
                continue
            where = f"pools.{d.name}.disaggregation"
            name = d.disaggregation.prefill_pool
            p = _other_pool(pools, d.name, name, f"{where}.prefill_pool")
            if p.autoscaling is not None:
                raise ValueError(
                    f"{where}: autoscaling the prefill pool {name!r} is not modelled; remove its autoscaling"
                )
            why = disaggregation_mismatch(p, d)
            if why:
                raise ValueError(f"{where}: {why}")
            for pool in (p, d):
                if pool.effective_faults is not None:
                    raise ValueError(
                        f"pools.{pool.name}.faults: replica failures are not modelled with disaggregated "
                        "serving yet; remove faults or the disaggregation"
                    )
            for c in self.classes:
                if c.pool == d.name and c.retry.timeout_s is not None:
                    raise ValueError(
                        f"classes.{c.name}.retry.timeout_s: deadlines are not modelled for a disaggregated pool "
                        f"({d.name!r}) yet; remove timeout_s"
                    )
                for st in c.stages or ():
                    if st.pool == d.name:
                        raise ValueError(
                            f"classes.{c.name}: stage {st.name!r} runs on the disaggregated pool {d.name!r}; "
                            "pipeline stages need an aggregated pool"
                        )

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

"""A real static-batching diffusion server: requests arrive on a schedule, batches form by the
simulator's static policy, and each batch runs a random-weight pipeline on a device.

It validates servesim's diffusion replica (``sim/fleet/diffusion_replica.py`` with
``sim/diffusion/batcher.py``, ``policy: static``, ``shapes: bucket``): the same arrivals should
form the same batches at the same times, and the measured stage times are what the simulator's
cost model must predict. A batch runs text encode (the prompts, and with classifier-free
guidance as many negative prompts) -> ``steps`` denoiser forwards over all its rows (2 x images
with guidance) with an Euler update -> one VAE decode of its images; all its requests finish
together.

The policy is re-implemented in ``StaticBatcher`` because the simulator's ``DiffusionBatcher``
imports its pydantic config, and calibration runs with torch, numpy, pandas and pyyaml alone.
Memory is not bounded here: a batch that does not fit the device fails with its error.

The serving loop (``serve``) takes its time from a ``Clock`` and runs batches through an
``Executor``. ``run_diffusion_engine`` gives it the wall clock and the real pipeline; tests give it
a ``VirtualClock`` and a ``ConstantExecutor`` (the simulator's constant cost model), which replay
the policy without a model and without waiting.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import pandas as pd
import torch

from calibration.diffusion_configs import diffusion_config
from calibration.harness import configure_cpu, sync
from calibration.measure import DTYPES
from calibration.models.diffusion import Conditioning, DiffusionPipeline

GUIDANCE_SCALE = 7.5
"""Classifier-free guidance weight of the update (values do not change the timing)."""

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class DiffusionEngineConfig:
    """Static batching knobs, as the simulator's ``DiffusionBatching`` names them."""

    max_batch_size: int = 4
    """Most images in a batch (a request with more images than this runs alone)."""
    max_wait_s: float = 0.5
    """Hold a batch that is not full until its oldest request has waited this long since its
    arrival (Triton's max_queue_delay); 0 dispatches whatever is waiting."""

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if not 0 <= self.max_wait_s < math.inf:
            raise ValueError(f"max_wait_s must be finite and >= 0, got {self.max_wait_s}")


@dataclass(frozen=True)
class ImageWorkItem:
    """One request of the schedule: when it arrives and what it asks for."""

    request_id: int
    arrival_s: float
    """Seconds after the run starts."""
    width: int
    height: int
    steps: int
    frames: int = 1
    images: int = 1
    """Images per prompt: latents generated together."""

    def __post_init__(self) -> None:
        if not 0 <= self.arrival_s < math.inf:
            raise ValueError(f"request {self.request_id}: arrival_s must be finite and >= 0, got {self.arrival_s}")
        for name in ("width", "height", "steps", "frames", "images"):
            if getattr(self, name) < 1:
                raise ValueError(f"request {self.request_id}: {name} must be >= 1, got {getattr(self, name)}")

    @property
    def shape_key(self) -> tuple[int, int, int, int]:
        """The bucket a static batch shares: resolution, frames and steps."""
        return (self.width, self.height, self.frames, self.steps)


# ------------------------------------------------------------------------------------ policy


class StaticBatcher:
    """Which waiting requests run together, and when: ``sim/diffusion/batcher.py``'s static
    policy with ``shapes: bucket`` and no memory bound.

    When the server is free, the oldest waiting request opens a batch; requests behind it with
    its shape join in arrival order while the batch has at most ``max_batch_size`` images (a
    request that would overflow it closes the batch). A batch that is not full waits until its
    oldest request has waited ``max_wait_s`` since arrival, or until an arrival fills it.
    """

    def __init__(self, cfg: DiffusionEngineConfig):
        self.cfg = cfg
        self.waiting: deque[ImageWorkItem] = deque()

    def _take(self) -> tuple[list[ImageWorkItem], bool]:
        """The batch the head of the queue would open, and whether it is full."""
        limit = self.cfg.max_batch_size
        key = self.waiting[0].shape_key
        taken: list[ImageWorkItem] = []
        images = 0
        for item in self.waiting:
            if item.shape_key != key:
                continue
            if taken and images + item.images > limit:
                return taken, True
            taken.append(item)
            images += item.images
            if images >= limit:
                return taken, True
        return taken, False

    def form(self, now: float) -> tuple[list[ImageWorkItem], float | None]:
        """A batch to run now, ``(members, None)``; or ``([], t)``: look again at time ``t`` or
        at the next arrival (``t`` None: nothing is waiting)."""
        if not self.waiting:
            return [], None
        taken, full = self._take()
        deadline = self.waiting[0].arrival_s + self.cfg.max_wait_s
        if self.cfg.max_wait_s > 0 and now < deadline and not full:
            return [], deadline
        gone = set(map(id, taken))
        self.waiting = deque(item for item in self.waiting if id(item) not in gone)
        return taken, None


# ------------------------------------------------------------------------------ time and work


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the run started."""

    def sleep_until(self, t: float) -> None:
        """Return at time ``t`` (at once if it has passed)."""


class WallClock:
    """``time.perf_counter`` from construction; idle waits are ``time.sleep``."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self._t0

    def sleep_until(self, t: float) -> None:
        dt = t - self.now()
        if dt > 0:
            time.sleep(dt)


class VirtualClock:
    """Time that passes only when asked: sleeping jumps to the wake-up time."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep_until(self, t: float) -> None:
        self.t = max(self.t, t)


@dataclass(frozen=True)
class StageTimes:
    """Seconds one batch spent in each stage."""

    text_s: float
    denoise_s: float
    """All ``steps`` denoiser forwards (and latent updates)."""
    vae_s: float


class Executor(Protocol):
    cfg: bool
    """Classifier-free guidance: two denoiser rows per image."""

    def latent_tokens(self, width: int, height: int, frames: int) -> int: ...

    def warmup(self, batches: Iterable[list[ImageWorkItem]]) -> None:
        """Run these batches once, untimed, before the clock starts."""

    def run(self, batch: list[ImageWorkItem], clock: Clock) -> StageTimes:
        """Run one batch (one shape) to its end, reading ``clock`` around its stages."""


class ConstantExecutor:
    """The simulator's constant diffusion cost model (``sim/diffusion/cost.py``
    ``DiffusionConstantCost``) on a clock: a denoising step costs ``step_s + per_row_s x rows``,
    text encoding ``text_encode_s`` per batch and VAE decode ``vae_decode_s`` per image."""

    def __init__(
        self,
        step_s: float,
        per_row_s: float = 0.0,
        text_encode_s: float = 0.0,
        vae_decode_s: float = 0.0,
        *,
        cfg: bool = True,
        vae_factor: int = 8,
    ):
        self.step_s, self.per_row_s = step_s, per_row_s
        self.text_encode_s, self.vae_decode_s = text_encode_s, vae_decode_s
        self.cfg = cfg
        self.vae_factor = vae_factor

    def latent_tokens(self, width: int, height: int, frames: int) -> int:
        return (width // self.vae_factor) * (height // self.vae_factor) * frames

    def warmup(self, batches: Iterable[list[ImageWorkItem]]) -> None:
        pass

    def run(self, batch: list[ImageWorkItem], clock: Clock) -> StageTimes:
        images = sum(item.images for item in batch)
        rows = images * (2 if self.cfg else 1)
        times = StageTimes(
            self.text_encode_s, batch[0].steps * (self.step_s + self.per_row_s * rows), self.vae_decode_s * images
        )
        clock.sleep_until(clock.now() + times.text_s + times.denoise_s + times.vae_s)
        return times


class PipelineExecutor:
    """A random-weight ``DiffusionPipeline`` run stage by stage, the device synchronised before
    each clock reading."""

    def __init__(self, pipe: DiffusionPipeline):
        self.pipe = pipe
        self.cfg = pipe.cfg.cfg
        self.device = str(pipe.device)
        self.warmed: set[tuple] = set()
        """(shape key, images per prompt) of the batches already warmed up."""

    def latent_tokens(self, width: int, height: int, frames: int) -> int:
        return self.pipe.latent_tokens(width, height, frames)

    def warmup(self, batches: Iterable[list[ImageWorkItem]]) -> None:
        """Run each batch once untimed, unless one of its shape and image counts already ran."""
        clock = WallClock()
        for batch in batches:
            key = (batch[0].shape_key, tuple(item.images for item in batch))
            if key not in self.warmed:
                self.run(batch, clock)
                self.warmed.add(key)

    @torch.inference_mode()
    def run(self, batch: list[ImageWorkItem], clock: Clock) -> StageTimes:
        pipe, g = self.pipe, 2 if self.cfg else 1
        width, height, frames, steps = batch[0].shape_key
        per_prompt = [item.images for item in batch]
        images = sum(per_prompt)
        sync(self.device)
        t0 = clock.now()
        # Prompts [negative prompts; prompts], then one conditioning row per denoiser row.
        cond = pipe.encode_text(g * len(batch))
        repeats = torch.tensor(per_prompt * g, device=pipe.device)
        pooled = None if cond.pooled is None else cond.pooled.repeat_interleave(repeats, dim=0)
        cond = Conditioning(cond.states.repeat_interleave(repeats, dim=0), pooled)  # [g * images, T, D]
        sync(self.device)
        t1 = clock.now()
        latents = pipe.make_latents(images, width, height, frames)  # [images, C, (F,) h, w]
        sigmas = [1.0 - i / steps for i in range(steps + 1)]  # flow matching: noise at 1, image at 0
        for i in range(steps):
            x = torch.cat([latents, latents]) if g == 2 else latents  # [g * images, ...]
            v = pipe.denoise(x, cond, 1000.0 * sigmas[i])
            if g == 2:
                v_uncond, v_cond = v.chunk(2)
                v = v_uncond + GUIDANCE_SCALE * (v_cond - v_uncond)
            latents = latents + (sigmas[i + 1] - sigmas[i]) * v
        sync(self.device)
        t2 = clock.now()
        pipe.decode(latents)
        sync(self.device)
        t3 = clock.now()
        return StageTimes(t1 - t0, t2 - t1, t3 - t2)


# ------------------------------------------------------------------------------ serving loop


def serve(
    workload: list[ImageWorkItem],
    cfg: DiffusionEngineConfig,
    executor: Executor,
    clock: Clock,
    progress: Progress | None = None,
    stop_after_s: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Serve ``workload`` open-loop on one replica (until ``stop_after_s`` on ``clock``, if given:
    requests not served by then are left out of the tables): a request joins the queue at its scheduled
    ``arrival_s`` (however late the loop notices it), a free replica asks the batcher for a batch
    and otherwise sleeps until the next arrival or batch deadline. Requests arriving at the same
    time queue in workload order. Returns (requests, batches) tables, rows by request id and
    batch start."""
    ids = [item.request_id for item in workload]
    if len(set(ids)) != len(ids):
        raise ValueError("request ids must be unique")
    pending = sorted(workload, key=lambda item: item.arrival_s)
    batcher = StaticBatcher(cfg)
    g = 2 if executor.cfg else 1
    req_rows: list[dict] = []
    batch_rows: list[dict] = []
    total, arrived, done = len(pending), 0, 0
    stop = math.inf if stop_after_s is None else stop_after_s
    while done < total:
        now = clock.now()
        if now > stop:
            break
        while arrived < total and pending[arrived].arrival_s <= now:
            batcher.waiting.append(pending[arrived])
            arrived += 1
        batch, wait_until = batcher.form(now)
        if not batch:
            next_arrival = pending[arrived].arrival_s if arrived < total else math.inf
            clock.sleep_until(min(next_arrival, stop, math.inf if wait_until is None else wait_until))
            continue
        times = executor.run(batch, clock)
        end = clock.now()
        width, height, frames, steps = batch[0].shape_key
        images = sum(item.images for item in batch)
        batch_id = len(batch_rows)
        batch_rows.append(
            {
                "batch_id": batch_id,
                "start_s": now,
                "end_s": end,
                "requests": len(batch),
                "images": images,
                "rows": g * images,
                "width": width,
                "height": height,
                "frames": frames,
                "steps": steps,
                "tokens": executor.latent_tokens(width, height, frames),
                "text_s": times.text_s,
                "denoise_s": times.denoise_s,
                "vae_s": times.vae_s,
                "mean_step_s": times.denoise_s / steps,
            }
        )
        for item in batch:
            req_rows.append(
                {
                    "request_id": item.request_id,
                    "arrival_s": item.arrival_s,
                    "start_s": now,
                    "finish_s": end,
                    "queue_s": now - item.arrival_s,
                    "e2e_s": end - item.arrival_s,
                    "width": item.width,
                    "height": item.height,
                    "frames": item.frames,
                    "steps": item.steps,
                    "images": item.images,
                    "batch_id": batch_id,
                }
            )
        done += len(batch)
        if progress is not None:
            progress(done, total)
    requests = pd.DataFrame(req_rows, columns=_REQUEST_COLUMNS).sort_values("request_id", ignore_index=True)
    return requests, pd.DataFrame(batch_rows, columns=_BATCH_COLUMNS)


_REQUEST_COLUMNS = [
    "request_id", "arrival_s", "start_s", "finish_s", "queue_s", "e2e_s",
    "width", "height", "frames", "steps", "images", "batch_id",
]  # fmt: skip
_BATCH_COLUMNS = [
    "batch_id", "start_s", "end_s", "requests", "images", "rows", "width", "height", "frames", "steps",
    "tokens", "text_s", "denoise_s", "vae_s", "mean_step_s",
]  # fmt: skip


def warmup_batches(workload: list[ImageWorkItem], cfg: DiffusionEngineConfig) -> list[list[ImageWorkItem]]:
    """One-step batches covering every (resolution, frames) of ``workload`` at every image count a
    batch of it can have (1 to ``max_batch_size`` single-image prompts, and each request that has
    more images on its own), so no first-call cost lands in a timed batch."""
    batches = []
    for width, height, frames in sorted({(i.width, i.height, i.frames) for i in workload}):
        counts = range(1, cfg.max_batch_size + 1)
        for n in counts:
            batches.append([ImageWorkItem(-k - 1, 0.0, width, height, 1, frames) for k in range(n)])
        for images in sorted({i.images for i in workload if i.images > cfg.max_batch_size}):
            batches.append([ImageWorkItem(-1, 0.0, width, height, 1, frames, images)])
    return batches


def run_diffusion_engine(
    model: str,
    workload: list[ImageWorkItem],
    cfg: DiffusionEngineConfig,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    threads: int = 1,
    seed: int = 0,
    progress: Progress | None = None,
    executor: PipelineExecutor | None = None,
    stop_after_s: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Serve ``workload`` on a random-weight replica of catalog diffusion model ``model`` in real
    time (on ``executor``'s pipeline when given, as a server loads its model once; it must be
    ``model``'s, on ``device`` in ``dtype``). Every shape is warmed up first (untimed); the clock starts after. Returns
    (requests, batches):

    * requests: request_id, arrival_s, start_s (its batch's start), finish_s, queue_s, e2e_s,
      width, height, frames, steps, images, batch_id;
    * batches: batch_id, start_s, end_s, requests, images, rows (x2 with guidance), width, height,
      frames, steps, tokens (latent tokens per row), text_s, denoise_s (all steps), vae_s,
      mean_step_s.

    ``progress(done, total)`` is called after each batch with the requests finished so far.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    model_cfg = diffusion_config(model)
    on_cpu = torch.device(device).type == "cpu"
    old_threads = torch.get_num_threads()
    if on_cpu:
        configure_cpu(threads)
    try:
        if executor is None:
            torch.manual_seed(seed)
            executor = PipelineExecutor(DiffusionPipeline(model_cfg, dtype=DTYPES[dtype], device=device))
        for item in workload:  # an invalid shape fails now, not in the middle of the run
            executor.pipe.latent_shape(item.width, item.height, item.frames)
        executor.warmup(warmup_batches(workload, cfg))
        return serve(workload, cfg, executor, WallClock(), progress, stop_after_s)
    finally:
        if on_cpu:
            torch.set_num_threads(old_threads)

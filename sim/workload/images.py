"""Image and video request streams: arrival times and one shape per request.

Unset fields of a class's ``image`` spec take the model's defaults from the diffusion catalog
(resolution, frames, steps, guidance). Steps and images per prompt may be distributions, drawn
per request; an ``alibaba`` trace supplies arrivals, steps and images per prompt as recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim import catalog
from sim.config import DETERMINISTIC_SAMPLERS, ImageSpec, RequestClass, Scenario
from sim.errors import ConfigError
from sim.workload.lengths import sample_lengths


@dataclass(frozen=True)
class ImageShape:
    """The fixed part of a class's requests (per-request parts are arrays in the stream)."""

    width: int
    height: int
    frames: int
    cfg: bool
    deterministic: bool


@dataclass(frozen=True)
class ImageStream:
    arrival_s: np.ndarray
    steps: np.ndarray
    images: np.ndarray
    shape: ImageShape

    def __len__(self) -> int:
        return len(self.arrival_s)


def resolve_shape(spec: ImageSpec | None, model: str) -> ImageShape:
    """The request shape a spec asks of a model, defaults filled in. Raises ConfigError for a
    size the model cannot generate."""
    m = catalog.get_diffusion_model(model)
    spec = spec or ImageSpec()
    width = spec.width or m.default_width
    height = spec.height or m.default_height
    if spec.frames is not None and m.kind != "video":
        raise ConfigError(f"frames: {model} generates images, not video; drop 'frames'")
    frames = spec.frames or m.default_frames
    reason = m.check_size(width, height, frames)
    if reason:
        raise ConfigError(reason)
    cfg = m.cfg if spec.cfg is None else spec.cfg
    return ImageShape(width, height, frames, cfg, spec.sampler in DETERMINISTIC_SAMPLERS)


def check_image_shapes(scenario: Scenario) -> None:
    """Raise ConfigError (naming the class or stage) for any image request shape its model
    cannot generate: the check a run makes when it draws the requests, made before."""
    for cls in scenario.classes:
        if cls.kind == "image" and cls.pool is not None:
            try:
                resolve_shape(cls.image, scenario.pool(cls.pool).model)
            except ConfigError as exc:
                raise ConfigError(f"classes.{cls.name}.image: {exc}") from None
        for i, st in enumerate(cls.stages or ()):
            if st.image is not None:
                try:
                    resolve_shape(st.image, scenario.pool(st.pool).model)
                except ConfigError as exc:
                    raise ConfigError(f"classes.{cls.name}.stages.{i}.image: {exc}") from None


def sample_shapes(
    spec: ImageSpec | None, model: str, rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """(steps, images per prompt) for n requests."""
    spec = spec or ImageSpec()
    m = catalog.get_diffusion_model(model)
    steps = _draw(spec.steps if spec.steps is not None else m.default_steps, rng, n)
    images = _draw(spec.images_per_prompt, rng, n)
    return steps, images


def _draw(value, rng: np.random.Generator, n: int) -> np.ndarray:
    if isinstance(value, int):
        return np.full(n, value, dtype=np.int64)
    return np.minimum(sample_lengths(value, rng, n), 10_000)


def build_image_stream(scenario: Scenario, cls: RequestClass, rng: np.random.Generator, base_dir: Path) -> ImageStream:
    from sim.workload.stream import class_arrivals, resolve_path
    from sim.workload.traces import read_diffusion_trace, rescale_diffusion

    model = scenario.pool(cls.pool).model
    try:
        shape = resolve_shape(cls.image, model)
    except ConfigError as exc:
        raise ConfigError(f"classes.{cls.name}.image: {exc}") from None
    duration, limit = scenario.duration_s, scenario.num_requests
    if cls.trace is not None:
        src = cls.trace
        trace = read_diffusion_trace(resolve_path(src.path, base_dir), src.format, src.max_requests)
        if src.time_scale is not None or src.target_rate is not None:
            trace = rescale_diffusion(
                trace, time_scale=src.time_scale, target_rate=src.target_rate, window_s=duration, limit=limit
            )
        keep = np.ones(len(trace), dtype=bool) if duration is None else trace.arrival_s < duration
        idx = np.flatnonzero(keep)
        if limit is not None:
            idx = idx[:limit]
        steps, images = trace.steps[idx], trace.images[idx]
        if cls.image is not None and isinstance(cls.image.steps, int):
            steps = np.full(len(idx), cls.image.steps, dtype=np.int64)
        return ImageStream(trace.arrival_s[idx], steps, images, shape)
    times = class_arrivals(cls, rng, duration, limit)
    if len(times) == 0:
        raise ConfigError(f"classes.{cls.name}: the arrival process produced no requests in the run's duration")
    steps, images = sample_shapes(cls.image, model, rng, len(times))
    return ImageStream(times, steps, images, shape)

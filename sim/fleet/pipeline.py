"""Pipeline requests: a chain of stages across pools (e.g. an LLM prompt rewrite -> an image
generation -> an LLM caption). Each stage is an ordinary text or image request on its stage's
pool; the next one is submitted the moment the previous one finishes. The pipeline's latency is
its last stage's finish minus its arrival; its cost is the sum of its stages' costs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim.config import RequestClass, Scenario
from sim.errors import ConfigError
from sim.llm.request import Request
from sim.status import RequestStatus
from sim.workload.images import ImageShape, resolve_shape, sample_shapes
from sim.workload.lengths import sample_lengths


@dataclass(frozen=True)
class StageDraws:
    """Per-arrival draws of one stage: (prompt, output) for text, (steps, images) for images."""

    name: str
    pool: str
    kind: str
    a: np.ndarray
    b: np.ndarray
    shape: ImageShape | None = None


@dataclass(frozen=True)
class PipelineStream:
    arrival_s: np.ndarray
    stages: list[StageDraws]

    def __len__(self) -> int:
        return len(self.arrival_s)


def build_pipeline_stream(
    scenario: Scenario, cls: RequestClass, rng: np.random.Generator, base_dir: Path
) -> PipelineStream:
    from sim.workload.stream import class_arrivals

    times = class_arrivals(cls, rng, scenario.duration_s, scenario.num_requests)
    n = len(times)
    if n == 0:
        raise ConfigError(f"classes.{cls.name}: the arrival process produced no requests in the run's duration")
    stages = []
    for i, st in enumerate(cls.stages):
        if st.image is not None:
            model = scenario.pool(st.pool).model
            try:
                shape = resolve_shape(st.image, model)
            except ConfigError as exc:
                raise ConfigError(f"classes.{cls.name}.stages.{i}.image: {exc}") from None
            steps, images = sample_shapes(st.image, model, rng, n)
            stages.append(StageDraws(st.name, st.pool, "image", steps, images, shape))
        else:
            prompt = sample_lengths(st.prompt_tokens, rng, n)
            output = sample_lengths(st.output_tokens, rng, n)
            stages.append(StageDraws(st.name, st.pool, "text", prompt, output))
    return PipelineStream(times, stages)


@dataclass(slots=True, eq=False)
class PipelineRequest:
    request_id: int
    class_id: int
    arrival_s: float
    stream: PipelineStream
    index: int
    """Its row in the stream's per-stage draws."""
    stage: int = -1
    children: list = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    finish_s: float = -1.0
    reject_reason: str = ""
    fail_reason: str = ""
    _ctx: tuple = ()

    def start(self, env, pools: dict, ids, recorder, timeout_s: float | None) -> None:
        self._ctx = (env, pools, ids, recorder, timeout_s)
        self.status = RequestStatus.RUNNING
        self._next()

    def _next(self) -> None:
        env, pools, ids, recorder, timeout_s = self._ctx
        self.stage += 1
        draws = self.stream.stages[self.stage]
        pool = pools[draws.pool]
        now = env.now
        i = self.index
        if draws.kind == "image":
            child = pool.make_request(next(ids), self.class_id, now, draws.shape, int(draws.a[i]), int(draws.b[i]))
            recorder.image_arrival(child)
        else:
            child = Request(next(ids), self.class_id, now, int(draws.a[i]), int(draws.b[i]))
            recorder.arrival(child)
        child.parent = self
        child.stage = self.stage
        child.on_done = self._stage_done
        self.children.append(child)
        pool.route(child)
        if timeout_s is not None:
            # The pipeline's deadline counts from its own arrival.
            left = self.arrival_s + timeout_s - now
            env.timeout(max(left, 0.0)).callbacks.append(lambda _e, c=child, p=pool: p.timeout(c, timeout_s))

    def _stage_done(self, child) -> None:
        name = self.stream.stages[self.stage].name
        if child.status == RequestStatus.FINISHED:
            if self.stage + 1 < len(self.stream.stages):
                self._next()
            else:
                self.status = RequestStatus.FINISHED
                self.finish_s = child.finish_s
        elif child.status == RequestStatus.REJECTED:
            self.status = RequestStatus.REJECTED
            self.reject_reason = f"stage {name!r}: {child.reject_reason}"
        else:
            self.status = RequestStatus.ABORTED
            self.fail_reason = f"stage {name!r}: {child.fail_reason}"

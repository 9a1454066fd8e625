"""One diffusion replica's engine loop: form a batch -> text encode -> S steps -> VAE decode.

A static batch runs as one stretch of simulated time computed in closed form from the cost
model (every step of a batch has the same shape); nobody joins, and every member finishes when
the last VAE decode does. Under step-level batching each denoising step is one event: waiting
requests join between steps (their text encoding runs with that step), members leave after
their last step (with their VAE decode). Previews for "streaming" add a VAE decode of the
member's images every ``preview_every`` steps.

A failure (``fail``) interrupts the loop: the work of the batch in flight is lost except what
was checkpointed, and every request on the replica goes back to the pool, which retries it
elsewhere under its class's retry policy.
"""

from __future__ import annotations

import simpy

from sim.config import DiffusionBatching
from sim.costs.base import DiffusionCostModel
from sim.diffusion.batcher import DiffusionBatcher
from sim.diffusion.request import ImageRequest
from sim.metrics.recorder import Recorder
from sim.status import RequestStatus

MIB = 2**20


class DiffusionReplica:
    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        batcher: DiffusionBatcher,
        cost: DiffusionCostModel,
        recorder: Recorder,
        cfg: DiffusionBatching,
    ):
        self.env = env
        self.index = index
        self.batcher = batcher
        self.cost = cost
        self.recorder = recorder
        self.cfg = cfg
        self.step_level = cfg.policy == "step"
        self.num_outstanding = 0
        self.outstanding_tokens = 0
        """Work still to do here: remaining steps x rows (the router's load view)."""
        self.running: list[ImageRequest] = []
        self.up = True
        self.on_lost = None
        """Called with the requests a failure took away (set by the pool)."""
        self.on_idle = None
        self.fail_request = None
        """Called with (request, reason) for a request given up on (set by the pool)."""
        self._dropped: list[ImageRequest] = []
        self._wake: simpy.Event | None = None
        self._free_since = 0.0
        self._batch_start = 0.0
        self._plan: tuple = ()
        self.gpus = 1
        """GPUs a request runs on (xDiT sequence and CFG parallelism; set by the pool): its GPU
        time counts them all."""
        self.cached_cost = 1.0
        """A cached step's cost as a fraction of a full one (``batching.step_cache``; set by the
        pool)."""
        self.process = env.process(self._run())

    # ------------------------------------------------------------------ requests in

    def submit(self, req: ImageRequest) -> None:
        req.replica = self.index
        req.seen_in_system = self.num_outstanding
        req.queued_s = self.env.now
        reason = self.batcher.reject_reason(req)
        if reason:
            req.status = RequestStatus.REJECTED
            req.reject_reason = reason
            return
        self.batcher.waiting.append(req)
        self.num_outstanding += 1
        self.outstanding_tokens += req.remaining_steps * req.rows
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    @property
    def num_running(self) -> int:
        """Requests in the batch being denoised (queue autoscaling counts the rest)."""
        return len(self.running)

    def cancel(self, req: ImageRequest, reason: str) -> None:
        """Give up on a request whose deadline passed: a waiting one leaves the queue now; a
        running one stays in its batch until the batch ends (a static batch cannot shrink;
        step-level: until the step in flight ends) and its result is discarded."""
        if self.batcher.remove(req):
            self._forget(req)
            self.fail_request(req, reason)
        elif req in self.running:
            self.fail_request(req, reason)
            if self.step_level:
                self._dropped.append(req)

    def _forget(self, req: ImageRequest) -> None:
        self.num_outstanding -= 1
        self.outstanding_tokens -= req.remaining_steps * req.rows

    # ------------------------------------------------------------------ engine loop

    def _sleep(self, until: float | None):
        self._wake = self.env.event()
        if until is not None:
            self.env.timeout(until - self.env.now).callbacks.append(lambda _e, w=self._wake: w.triggered or w.succeed())
        return self._wake

    def _run(self):
        env = self.env
        while True:
            try:
                if not self.up:
                    yield self._sleep(None)
                    continue
                if self.running:  # step-level: the batch goes on, newcomers join
                    joiners, _ = self.batcher.take(self.running, True)
                    yield from self._step(joiners)
                    continue
                batch, wait_until = self.batcher.form(env.now, self.step_level)
                if not batch:
                    yield self._sleep(wait_until)
                    continue
                now = env.now
                for req in batch:
                    req.forming_s += now - max(req.queued_s, self._free_since)
                    if req.first_scheduled_s < 0:
                        req.first_scheduled_s = now
                if self.step_level:
                    self.running = batch
                    yield from self._step(batch)
                else:
                    yield from self._static(batch)
                self._free_since = env.now if not self.running else self._free_since
            except simpy.Interrupt:
                self._lose_work()

    # ------------------------------------------------------------------ static batches

    def _static(self, batch: list[ImageRequest]):
        cost, cfg = self.cost, self.cfg
        steps = max(r.remaining_steps for r in batch)
        tokens = max(r.tokens for r in batch)
        rows = sum(r.rows for r in batch)
        t_text = cost.text_encode_s(sum(2 if r.cfg else 1 for r in batch))
        t_step = cost.denoise_step_s(rows, tokens)
        if cfg.step_cache is not None:
            # A batch step is cached when it is for every member still computing it; its
            # steps then average out (a failure's progress is reckoned at the mean step).
            cache = cfg.step_cache
            cached = sum(
                all(cache.is_cached(r.steps_done + j) for r in batch if j < r.remaining_steps) for j in range(steps)
            )
            t_step *= (steps - cached + cached * self.cached_cost) / steps
        t_vae = _vae_s(cost, batch)
        k = cfg.preview_every
        n_prev = (steps - 1) // k if k else 0
        total = t_text + steps * t_step + n_prev * t_vae + t_vae
        start = self.env.now
        self.running = batch
        self._batch_start = start
        self._plan = (t_text, t_step, t_vae, steps, rows)
        mem = sum(r.mem_bytes / r.tokens for r in batch) * tokens
        self.recorder.busy(self.index, start, total, len(batch), len(self.batcher.waiting), int(mem / MIB), steps)
        yield self.env.timeout(total)
        end = self.env.now
        self.running = []
        for req in batch:
            req.gpu_s += total * self.gpus * req.rows / rows
            req.steps_computed += steps
            if k and k < req.steps and req.first_preview_s < 0:
                req.first_preview_s = start + t_text + k * t_step + t_vae
            self._complete(req, end)

    # ------------------------------------------------------------------ step-level batching

    def _step(self, joiners: list[ImageRequest]):
        cost, k = self.cost, self.cfg.preview_every
        if self._dropped:  # timed out: they leave between steps
            dropped = set(map(id, self._dropped))
            for req in self._dropped:
                self._forget(req)
            self.running = [r for r in self.running if id(r) not in dropped]
            self._dropped = []
            if not self.running and not joiners:
                self._free_since = self.env.now
                return
        members = self.running
        if joiners and members is not joiners:
            now = self.env.now
            for req in joiners:  # they waited while the replica was busy: queue time only
                if req.first_scheduled_s < 0:
                    req.first_scheduled_s = now
            members.extend(joiners)
        tokens = max(r.tokens for r in members)
        rows = sum(r.rows for r in members)
        t_text = cost.text_encode_s(sum(2 if r.cfg else 1 for r in joiners)) if joiners else 0.0
        t_step = cost.denoise_step_s(rows, tokens)
        cache = self.cfg.step_cache
        if cache is not None and all(cache.is_cached(r.steps_done) for r in members):
            t_step *= self.cached_cost
        previews, done = [], []
        for req in members:
            n = req.steps_done + 1
            if n >= req.steps:
                done.append(req)
            elif k and n % k == 0:
                previews.append(req)
        t_extra = _vae_s(cost, done) + _vae_s(cost, previews)
        total = t_text + t_step + t_extra
        start = self.env.now
        self._batch_start = start
        self._plan = (t_text, t_step, 0.0, 1, rows)
        mem = sum(r.mem_bytes / r.tokens for r in members) * tokens
        self.recorder.busy(self.index, start, total, len(members), len(self.batcher.waiting), int(mem / MIB), 1)
        yield self.env.timeout(total)
        end = self.env.now
        for req in members:
            req.steps_done += 1
            req.steps_computed += 1
            req.gpu_s += total * self.gpus * req.rows / rows
            self.outstanding_tokens -= req.rows
            if self.cfg.checkpoint_every and req.steps_done % self.cfg.checkpoint_every == 0:
                req.checkpoint_step = req.steps_done
        for req in previews:
            if req.first_preview_s < 0:
                req.first_preview_s = end
        if done:
            self.running = [r for r in members if r.steps_done < r.steps]
            for req in done:  # their work was counted down step by step
                self._complete(req, end, counted=True)
            if not self.running:
                self._free_since = end

    # ------------------------------------------------------------------ endings

    def _complete(self, req: ImageRequest, now: float, counted: bool = False) -> None:
        if counted:
            self.num_outstanding -= 1
        else:
            self._forget(req)
        req.steps_done = req.steps
        if not req.fail_reason:  # a timed-out member's result is discarded
            req.status = RequestStatus.FINISHED
            req.finish_s = now
            if req.on_done is not None:
                req.on_done(req)
        if self.num_outstanding == 0 and self.on_idle is not None:
            self.on_idle()

    # ------------------------------------------------------------------ faults

    def fail(self) -> None:
        """The replica goes down now: work in flight is lost, every request leaves."""
        if not self.up:
            return
        self.up = False
        if self.running or self._wake is None or self._wake.triggered:
            self.process.interrupt("failure")
        else:
            self._lose_work()

    def recover(self) -> None:
        self.up = True
        self._free_since = self.env.now
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def _lose_work(self) -> None:
        now = self.env.now
        lost = list(self.running)
        if lost and not self.step_level:
            t_text, t_step, t_vae, steps, rows = self._plan
            elapsed = now - self._batch_start
            done = self._steps_within(elapsed, t_text, t_step, t_vae, steps)
            for req in lost:
                req.gpu_s += elapsed * self.gpus * req.rows / rows
                req.steps_computed += done
                req.steps_done = min(req.steps, req.steps_done + done)
                every = self.cfg.checkpoint_every
                if every:
                    req.checkpoint_step = max(req.checkpoint_step, req.steps_done // every * every)
        elif lost:
            elapsed = now - self._batch_start
            rows = self._plan[4]
            for req in lost:
                req.gpu_s += elapsed * self.gpus * req.rows / rows
        self.running = []
        waiting = list(self.batcher.waiting)
        self.batcher.waiting.clear()
        self.num_outstanding = 0
        self.outstanding_tokens = 0
        self._free_since = now
        self.recorder.busy(self.index, now, 0.0, 0, 0, 0, 0)
        if self.on_lost is not None:
            self.on_lost(lost, waiting)

    def _steps_within(self, elapsed: float, t_text: float, t_step: float, t_vae: float, steps: int) -> int:
        """Denoising steps a static batch had finished ``elapsed`` seconds after its start."""
        k = self.cfg.preview_every
        t = t_text
        for j in range(1, steps + 1):
            t += t_step
            if t > elapsed:
                return j - 1
            if k and j % k == 0 and j < steps:
                t += t_vae
        return steps


def _vae_s(cost, reqs: list[ImageRequest]) -> float:
    """VAE decode time of ``reqs``' images, decoded together as a pipeline decodes a batch's
    latents: one call per shape (a VAE call takes one latent size), not one per request."""
    groups: dict[tuple[int, int, int], int] = {}
    for r in reqs:
        key = (r.width, r.height, r.frames)
        groups[key] = groups.get(key, 0) + r.images
    return sum(cost.vae_decode_s(n, w, h, f) for (w, h, f), n in groups.items())

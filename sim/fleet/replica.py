"""One LLM replica's engine loop: schedule -> run the step for its cost -> update.

This is vLLM's ``EngineCore.step()`` with ``execute_model`` replaced by a SimPy timeout of the
cost model's duration. Decode-only stretches run in closed form: the scheduler reports how
many identical-membership decode steps lie ahead (``decode_span``), the cost model gives their
total time, and the engine sleeps once for all of them. An arrival that could join the batch
interrupts the sleep; the step in flight completes, the finished steps are committed, and the
loop schedules normally again. Work therefore scales with arrivals, completions and
preemptions, not with generated tokens.
"""

from __future__ import annotations

import simpy

from sim.costs.base import CostModel
from sim.llm.request import Request
from sim.metrics.recorder import Recorder


class LLMReplica:
    """A replica (``num_gpus`` = tensor-parallel ranks) serving one model."""

    decode_spans = True
    """Advance pure-decode stretches in closed form (tests switch it off to compare)."""

    def __init__(self, env: simpy.Environment, index: int, scheduler, cost: CostModel, recorder: Recorder, num_gpus: int):
        self.env = env
        self.index = index
        self.scheduler = scheduler
        self.kv = scheduler.kv
        self.cost = cost
        self.recorder = recorder
        self.num_gpus = num_gpus
        self.num_outstanding = 0
        """Requests routed here and not yet finished (the router's load view)."""
        self.outstanding_tokens = 0
        """Tokens still to compute for them, prefill and decode (approximate mid-span)."""
        self._wake: simpy.Event | None = None
        self._in_span = False
        self.process = env.process(self._run())

    # ------------------------------------------------------------------ requests in

    def submit(self, req: Request) -> None:
        req.replica = self.index
        req.seen_in_system = self.num_outstanding
        self.recorder.arrival(req)
        if self.scheduler.add_request(req):
            req.finish_s = -1.0
            self.recorder.reject(req)
            return
        self.num_outstanding += 1
        self.outstanding_tokens += req.num_prompt_tokens + req.max_tokens
        if self._wake is not None:
            wake, self._wake = self._wake, None
            wake.succeed()
        elif self._in_span and self.scheduler.admits_mid_batch:
            self._in_span = False
            self.process.interrupt()

    # ------------------------------------------------------------------ engine loop

    def _run(self):
        env = self.env
        sched = self.scheduler
        rec = self.recorder
        idx = self.index
        pool = self.kv.pool
        while True:
            if not sched.has_unfinished_requests():
                self._wake = env.event()
                yield self._wake
                continue

            span = sched.decode_span() if self.decode_spans else None
            if span is not None and span.num_steps >= 2:
                line = self.cost.decode_line(span.num_rows)
                k = span.num_steps
                start = env.now
                total = line.total_s(span.ctx_sum, span.ctx_growth, k)
                state = (sched.num_running, sched.num_waiting, pool.num_used)
                self._in_span = True
                try:
                    yield env.timeout(total)
                    done = k
                except simpy.Interrupt:
                    # The step in flight completes; the newcomer joins the next one.
                    done = min(line.steps_within(span.ctx_sum, span.ctx_growth, env.now - start, k) + 1, k)
                    total = line.total_s(span.ctx_sum, span.ctx_growth, done)
                    if start + total > env.now:
                        yield env.timeout(start + total - env.now)
                self._in_span = False
                rec.busy(idx, start, total, *state, done)
                self._commit_span(span, line, done, start, total)
                continue

            out = sched.schedule()
            if not out.requests:
                raise RuntimeError(f"replica {idx}: scheduler made no progress with requests pending")
            start = env.now
            dur = self.cost.step_s(out.shape)
            rec.busy(idx, start, dur, sched.num_running, sched.num_waiting, pool.num_used, 1)
            for req in out.newly_scheduled:
                req.first_scheduled_s = start
            for req in out.preempted:
                # Its computed tokens must be computed again.
                self.outstanding_tokens += req.num_tokens
            yield env.timeout(dur)
            now = env.now
            emitted, finished = sched.update_from_output(out)
            # GPU time is shared among the step's requests in proportion to their tokens.
            gpu_per_token = dur * self.num_gpus / out.shape.num_tokens
            for req, n in zip(out.requests, out.num_scheduled_tokens):
                req.gpu_s += gpu_per_token * n
            self.outstanding_tokens -= out.shape.num_tokens
            for req in emitted:
                if req.first_token_s < 0:
                    req.first_token_s = now
                else:
                    gap = now - req.last_token_s
                    if gap > req.max_itl_s:
                        req.max_itl_s = gap
                req.last_token_s = now
            self._finish(finished, now)

    def _commit_span(self, span, line, done: int, start: float, total: float) -> None:
        sched = self.scheduler
        running = list(sched.running)
        # Static batches carry finished members as padding rows: they pay, but emit nothing.
        emitting = [r for r in running if r.num_output_tokens < r.max_tokens]
        finished = sched.advance_decode(done)
        end = start + total
        first_step = line.step_s(span.ctx_sum)
        last_step = line.step_s(span.ctx_sum + (done - 1) * span.ctx_growth)
        gpu_each = total * self.num_gpus / span.num_rows
        first_end = start + first_step
        for req in running:
            req.gpu_s += gpu_each
        for req in emitting:
            gap = first_end - req.last_token_s
            if gap < last_step:
                gap = last_step
            if gap > req.max_itl_s:
                req.max_itl_s = gap
            req.last_token_s = end
        self.outstanding_tokens -= span.ctx_growth * done
        self._finish(finished, end)

    def _finish(self, finished: list[Request], now: float) -> None:
        for req in finished:
            req.finish_s = now
            self.num_outstanding -= 1
        if finished:
            # Recomputation makes the token counter drift; settle it when the replica drains.
            if self.num_outstanding == 0:
                self.outstanding_tokens = 0

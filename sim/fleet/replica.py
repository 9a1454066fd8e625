"""One LLM replica's engine loop: schedule -> run the step for its cost -> update.

This is vLLM's ``EngineCore.step()`` with ``execute_model`` replaced by a SimPy timeout of the
cost model's duration. Decode-only stretches run in closed form: the scheduler reports how
many identical-membership decode steps lie ahead (``decode_span``), the cost model gives their
total time, and the engine sleeps once for all of them. An arrival that could join the batch
moves the wake-up to the end of the step in flight; the finished steps are committed, and the
loop schedules normally again.

Per-request metrics of the scheduler's decode cohort accrue lazily, like its token counters:
GPU time through a per-row accumulator, the last token time through the cohort's last step,
and the longest inter-token gap through a monotonic stack of step durations (the longest step
since a member joined is the first stack entry after its join clock). A member's metrics are
settled when it leaves the cohort. Work therefore scales with arrivals, completions and
preemptions, not with generated tokens or the batch size.

A failure (``fail``) interrupts the loop wherever it is: the step or span in flight is lost,
the scheduler is drained (the KV cache is gone), and every request goes back to the pool,
which restarts the ones that were running on another replica. A timed-out request is
cancelled at the next step boundary (``cancel``).
"""

from __future__ import annotations

from bisect import bisect_right

import simpy

from sim.costs.base import CostModel
from sim.llm.request import Request, RequestStatus
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
        # Lazily accrued cohort metrics.
        self._row_gpu_s = 0.0  # GPU-seconds one cohort row has accrued since the start
        self._cohort_last_s = 0.0  # end of the latest cohort step
        self._itl_clock: list[int] = []  # monotonic stack: scheduler clock after a step ...
        self._itl_dur: list[float] = []  # ... and its duration, durations decreasing
        self._wake: simpy.Event | None = None
        # A decode span in flight: the engine sleeps on _span_wake, which the current
        # _span_timer triggers. An arrival that can join replaces the timer with one at the
        # end of the step in flight (cheaper than interrupting the process).
        self._in_span = False
        self._span_wake: simpy.Event | None = None
        self._span_timer: simpy.Event | None = None
        self._span: tuple = ()  # (span, line, start) of the span in flight
        self._span_done = 0  # steps it will have run when the engine wakes
        self.up = True
        self.on_lost = None
        """Called with (running, waiting) requests a failure took away (set by the pool)."""
        self.on_idle = None
        """Called when the last outstanding request finishes (set by the cluster)."""
        self.fail_request = None
        """Called with (request, reason) for a request given up on (set by the pool)."""
        self._cancels: list[Request] = []
        self._step_start = 0.0
        self._step_out = None
        self.process = env.process(self._run())

    # ------------------------------------------------------------------ requests in

    def submit(self, req: Request) -> None:
        req.replica = self.index
        req.seen_in_system = self.num_outstanding
        if self.scheduler.add_request(req):
            return  # rejected with its reason (the request's record says which)
        self.num_outstanding += 1
        self.outstanding_tokens += req.num_prompt_tokens + req.max_tokens
        if self._wake is not None:
            wake, self._wake = self._wake, None
            wake.succeed()
        elif self._in_span and self.scheduler.admits_mid_batch:
            # The step in flight completes; the newcomer joins the next one.
            self._cut_span()

    def _cut_span(self) -> None:
        """End the decode span in flight at the end of its current step."""
        self._in_span = False
        span, line, start = self._span
        k = span.num_steps
        now = self.env.now
        done = min(line.steps_within(span.ctx_sum, span.ctx_growth, now - start, k) + 1, k)
        self._span_done = done
        self._set_span_timer(start + line.total_s(span.ctx_sum, span.ctx_growth, done) - now)

    def _set_span_timer(self, delay: float) -> None:
        timer = self.env.timeout(delay)
        timer.callbacks.append(self._span_timer_fired)
        self._span_timer = timer

    def _span_timer_fired(self, event: simpy.Event) -> None:
        if event is self._span_timer:  # a replaced timer fires for nothing
            self._span_wake.succeed()

    # ------------------------------------------------------------------ cohort metrics

    def _cohort_step(self, clock: int, dur_s: float, end_s: float, row_gpu_s: float) -> None:
        self._row_gpu_s += row_gpu_s
        self._cohort_last_s = end_s
        clocks, durs = self._itl_clock, self._itl_dur
        while durs and durs[-1] <= dur_s:
            durs.pop()
            clocks.pop()
        clocks.append(clock)
        durs.append(dur_s)

    def _mark(self, req: Request) -> None:
        req.gpu_mark = self._row_gpu_s
        req.itl_mark = self.scheduler.clock
        req.cohort_marked = True

    def _settle(self, req: Request) -> None:
        """Fold a leaving member's lazily accrued metrics into its record."""
        req.gpu_s += self._row_gpu_s - req.gpu_mark
        i = bisect_right(self._itl_clock, req.itl_mark)
        if i < len(self._itl_dur) and self._itl_dur[i] > req.max_itl_s:
            req.max_itl_s = self._itl_dur[i]
        if self._cohort_last_s > req.last_token_s:
            req.last_token_s = self._cohort_last_s
        req.cohort_marked = False

    # ------------------------------------------------------------------ engine loop

    def _run(self):
        env = self.env
        sched = self.scheduler
        rec = self.recorder
        idx = self.index
        pool = self.kv.pool
        gpus = self.num_gpus
        while True:
            try:
                yield from self._loop(env, sched, rec, idx, pool, gpus)
            except simpy.Interrupt:
                self._lose_work()
                self._wake = env.event()
                yield self._wake  # until recover()

    def _loop(self, env, sched, rec, idx, pool, gpus):
        while True:
            if self._cancels:
                self._apply_cancels()
            if not sched.has_unfinished_requests():
                self._wake = env.event()
                yield self._wake
                continue

            span = sched.decode_span() if self.decode_spans else None
            if span is not None and (span.num_steps >= 2 or span.cohort):
                line = self.cost.decode_line(span.num_rows)
                start = env.now
                state = (sched.num_running, sched.num_waiting, pool.num_used)
                self._span = (span, line, start)
                self._span_done = span.num_steps
                self._span_wake = env.event()
                self._set_span_timer(line.total_s(span.ctx_sum, span.ctx_growth, span.num_steps))
                self._in_span = True
                yield self._span_wake
                self._in_span = False
                done = self._span_done
                self._commit_span(span, line, start, done, env.now - start, state)
                continue

            out = sched.schedule()
            if not out.requests and not out.num_cohort:
                raise RuntimeError(f"replica {idx}: scheduler made no progress with requests pending")
            start = env.now
            dur = self.cost.step_s(out.shape)
            self._step_start = start
            self._step_out = out
            rec.busy(idx, start, dur, sched.num_running, sched.num_waiting, pool.num_used, 1)
            for req in out.newly_scheduled:
                req.first_scheduled_s = start
            for req in out.preempted:
                # Its computed tokens must be computed again.
                self.outstanding_tokens += req.num_tokens
                if req.cohort_marked:
                    self._settle(req)
            yield env.timeout(dur)
            self._step_out = None
            now = env.now
            emitted, finished, joined = sched.update_from_output(out)
            # GPU time is shared among the step's rows in proportion to their tokens.
            gpu_per_token = dur * gpus / out.shape.num_tokens
            for req, n in zip(out.requests, out.num_scheduled_tokens):
                req.gpu_s += gpu_per_token * n
            if out.num_cohort:
                self._cohort_step(sched.clock, dur, now, gpu_per_token)
            self.outstanding_tokens -= out.shape.num_tokens
            cohort_last = self._cohort_last_s
            for req in emitted:
                if req.first_token_s < 0:
                    req.first_token_s = now
                else:
                    last = req.last_token_s
                    if req.cohort_marked and cohort_last > last:
                        last = cohort_last
                    if now - last > req.max_itl_s:
                        req.max_itl_s = now - last
                req.last_token_s = now
            for req in joined:
                if req.cohort_marked:
                    self._settle(req)
                self._mark(req)
            self._finish(finished, now)

    def _commit_span(self, span, line, start: float, done: int, total: float, state: tuple) -> None:
        """Apply a finished span; ``state`` is (running, waiting, KV blocks used) at its start."""
        sched = self.scheduler
        self.recorder.busy(self.index, start, total, *state, done)
        # Step times grow with context inside a span: its last step is its longest.
        last_step = line.step_s(span.ctx_sum + (done - 1) * span.ctx_growth)
        end = start + total
        if span.cohort:
            finished = sched.advance_decode(done)
            self._cohort_step(sched.clock, last_step, end, total * self.num_gpus / span.num_rows)
        else:
            finished = self._commit_exact_span(span, line, done, start, total, last_step)
        self.outstanding_tokens -= span.ctx_growth * done
        self._finish(finished, end)

    def _commit_exact_span(self, span, line, done: int, start: float, total: float, last_step: float) -> list[Request]:
        """A span of a scheduler without a cohort (static batching): per-request updates."""
        sched = self.scheduler
        running = list(sched.running)
        # Static batches carry finished members as padding rows: they pay, but emit nothing.
        emitting = [r for r in running if r.num_output_tokens < r.max_tokens]
        finished = sched.advance_decode(done)
        gpu_each = total * self.num_gpus / span.num_rows
        first_end = start + line.step_s(span.ctx_sum)
        end = start + total
        for req in running:
            req.gpu_s += gpu_each
        for req in emitting:
            gap = max(first_end - req.last_token_s, last_step)
            if gap > req.max_itl_s:
                req.max_itl_s = gap
            req.last_token_s = end
        return finished

    def _finish(self, finished: list[Request], now: float) -> None:
        for req in finished:
            if req.cohort_marked:
                self._settle(req)
            req.finish_s = now
            self.num_outstanding -= 1
            if req.on_done is not None:
                req.on_done(req)
        if finished and self.num_outstanding == 0:
            # Recomputation makes the token counter drift; settle it when the replica drains.
            self.outstanding_tokens = 0
            if self.on_idle is not None:
                self.on_idle()

    # ------------------------------------------------------------------ timeouts and faults

    def cancel(self, req: Request, reason: str) -> None:
        """Abandon a request (its deadline passed) at the next step boundary, as an engine
        processes aborts between steps; one that finishes in the step in flight is kept."""
        self._cancels.append((req, reason))
        if self._in_span:
            self._cut_span()

    def _apply_cancels(self) -> None:
        cancels, self._cancels = self._cancels, []
        sched = self.scheduler
        for req, reason in cancels:
            if req not in sched.waiting and req not in sched.running:
                continue  # finished meanwhile
            if req.cohort_marked:
                self._settle(req)
            sched.abort(req)
            self.num_outstanding -= 1
            self.fail_request(req, reason)
        if self.num_outstanding == 0:
            self.outstanding_tokens = 0
            if self.on_idle is not None:
                self.on_idle()

    def fail(self) -> None:
        """The replica goes down now."""
        if not self.up:
            return
        self.up = False
        self.process.interrupt("failure")

    def recover(self) -> None:
        self.up = True
        if self._wake is not None:
            wake, self._wake = self._wake, None
            wake.succeed()

    def _lose_work(self) -> None:
        """Drop everything: the step or span in flight, the KV cache, the queue."""
        now = self.env.now
        sched = self.scheduler
        if self._in_span:
            span, line, start = self._span  # nothing of it is committed: no KV change
            # GPU time of the lost partial span, shared by its rows.
            self._row_gpu_s += (now - start) * self.num_gpus / span.num_rows
            self._in_span = False
        finished: list[Request] = []
        if self._step_out is not None:
            out = self._step_out
            share = (now - self._step_start) * self.num_gpus / max(1, out.shape.num_tokens)
            for req, n in zip(out.requests, out.num_scheduled_tokens):
                req.gpu_s += share * n
            if out.num_cohort:
                self._row_gpu_s += share
            self._step_out = None
            # Close the scheduler's books on the interrupted step (its blocks were allocated
            # when it was scheduled) before dropping everything; what it would have
            # finished is lost with the rest.
            _, finished, _ = sched.update_from_output(out)
            for req in finished:
                req.status = RequestStatus.RUNNING
        self._span_timer = None
        running = list(sched.running) + finished
        for req in running:
            if req.cohort_marked:
                self._settle(req)
        lost = sched.drain() + finished
        in_flight = set(map(id, running))
        waiting = [r for r in lost if id(r) not in in_flight]
        running = [r for r in lost if id(r) in in_flight]
        self._cancels = []
        self.num_outstanding = 0
        self.outstanding_tokens = 0
        self.recorder.busy(self.index, now, 0.0, 0, 0, 0, 0)
        if self.on_lost is not None:
            self.on_lost(running, waiting)

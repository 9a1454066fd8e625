"""One LLM replica's engine loop: schedule -> run the step for its cost -> update.

This is vLLM's ``EngineCore.step()`` with ``execute_model`` replaced by a timer of the cost
model's duration (on SimPy's queue: ``sim/fleet/timers.py``), whose callback applies the step
and starts the next. Decode-only
stretches run in closed form: the scheduler reports how many identical-membership decode steps
lie ahead (``decode_span``), the cost model gives their total time, and the engine sleeps once
for all of them. An arrival that could join the batch moves the wake-up to the end of the step
in flight; the finished steps are committed, and the loop schedules normally again.

Per-request metrics of the scheduler's decode cohort accrue lazily, like its token counters:
GPU time through a per-row accumulator, the last token time through the cohort's last step,
and the longest inter-token gap through a monotonic stack of step durations (the longest step
since a member joined is the first stack entry after its join clock). A member's metrics are
settled when it leaves the cohort. Work therefore scales with arrivals, completions and
preemptions, not with generated tokens or the batch size.

A failure (``fail``) stops the engine wherever it is: the step or span in flight is lost,
the scheduler is drained (the KV cache is gone), and every request goes back to the pool,
which restarts the ones that were running on another replica. A timed-out request is
cancelled at the next step boundary (``cancel``).
"""

from __future__ import annotations

from bisect import bisect_right
from heapq import heappush
from operator import itemgetter

from sim.costs.base import CostModel
from sim.fleet.timers import NORMAL, Environment
from sim.llm.request import Request
from sim.llm.scheduler import BatchScheduler
from sim.metrics.itl import pack_run
from sim.metrics.recorder import Recorder
from sim.status import RequestStatus


class LLMReplica:
    """A replica (``num_gpus`` = tensor-parallel ranks) serving one model."""

    def __init__(
        self,
        env: Environment,
        index: int,
        scheduler: BatchScheduler,
        cost: CostModel,
        recorder: Recorder,
        num_gpus: int,
        decode_spans: bool = True,
    ):
        self.decode_spans = decode_spans
        """Advance pure-decode stretches in closed form (off: one event and one time-series
        sample per decode step; the same results, more events)."""
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
        self.pending_prefill_tokens = 0
        """Prompt tokens of the requests routed here that have no first token yet (a prompt
        whose KV cache comes from a prefill pool counts none): the cache-aware router's load."""
        # Lazily accrued cohort metrics.
        self._row_gpu_s = 0.0  # GPU-seconds one cohort row has accrued since the start
        self._cohort_last_s = 0.0  # end of the latest cohort step
        # Monotonic stack of (scheduler clock after a step, its duration), durations decreasing.
        self._itl: list[tuple[int, float]] = []
        # Inter-token gaps, pooled per class (requests that arrived after the warm-up): the
        # histogram, and how many cohort members of each class each cohort step emits for.
        self._warmup_s = recorder.warmup_s
        self._gap_log = recorder.gap_log  # the recorder's bytearray, appended to in place
        self._cohort_classes: dict[int, int] = {}  # class -> members (none at 0)
        self._target = -1  # id of the timer the engine waits on (-1: none)
        self._idle_now = False  # set while idle: submit() wakes the engine
        # A decode span in flight. An arrival that can join replaces its end (the target)
        # with the end of the step in flight.
        self._in_span = False
        self._span: tuple = ()  # (span, line, start) of the span in flight
        self._span_state: tuple = ()  # (running, waiting, KV blocks used) at its start
        self._span_done = 0  # steps it will have run when it ends
        self.up = True
        self.on_lost = None
        """Called with (running, waiting) requests a failure took away (set by the pool)."""
        self.on_idle = None
        """Called when the last outstanding request finishes (set by the cluster)."""
        self.fail_request = None
        """Called with (request, reason) for a request given up on (set by the pool)."""
        self.host_s_per_token = 0.0
        """Seconds to move one token's KV (per GPU) between GPU and host memory."""
        self.draft = None
        """Speculative decoding: the proposer's cost model (None: none, or free n-gram lookup)."""
        self.receive = None
        """Disaggregated serving, a decode replica: called with a request admitted to receive
        its prompt's KV cache; it calls ``received`` when the transfer ends (set by the pool)."""
        self._cancels: list[Request] = []
        self._step_start = 0.0
        self._step_dur = 0.0
        self._step_out = None
        self._idle()

    # ------------------------------------------------------------------ requests in

    def submit(self, req: Request) -> None:
        req.replica = self.index
        req.seen_in_system = self.num_outstanding
        if self.scheduler.add_request(req):
            return  # rejected with its reason (the request's record says which)
        self.num_outstanding += 1
        self.outstanding_tokens += req.num_prompt_tokens - req.num_external_tokens + req.max_tokens
        if req.kv_source is None:
            self.pending_prefill_tokens += req.num_prompt_tokens
        if self._idle_now:
            self._wake_up()
        elif self._in_span and self.scheduler.admits_mid_batch:
            # The step in flight completes; the newcomer joins the next one.
            self._cut_span()

    def received(self, req: Request) -> None:
        """A request's prompt KV cache has arrived from its prefill replica: it can take its
        first step (as an arrival would, it wakes the engine or ends a span)."""
        self.scheduler.finish_receiving(req)
        if self._idle_now:
            self._wake_up()
        elif self._in_span:
            self._cut_span()

    def release(self, req: Request) -> None:
        """A prefill leg's KV cache has been read by the decode side: its blocks are free (a
        request waiting for them may now be admitted)."""
        self.scheduler.release(req)
        if self._idle_now and self.up and self.scheduler.has_unfinished_requests():
            self._wake_up()

    def _cut_span(self) -> None:
        """End the decode span in flight at the end of its current step."""
        self._in_span = False
        span, line, start = self._span
        k = span.num_steps
        now = self.env._now
        self._span_done, end = line.step_end_at(span.ctx_sum, span.ctx_growth, now - start, k)
        self._wait(start + end - now, self._span_end)

    # ------------------------------------------------------------------ cohort metrics

    def _cohort_step(self, clock: int, dur_s: float, end_s: float, row_gpu_s: float) -> None:
        self._row_gpu_s += row_gpu_s
        self._cohort_last_s = end_s
        stack = self._itl
        while stack and stack[-1][1] <= dur_s:
            stack.pop()
        stack.append((clock, dur_s))

    def _mark(self, req: Request) -> None:
        req.gpu_mark = self._row_gpu_s
        req.itl_mark = self.scheduler.clock
        req.cohort_marked = True
        if req.arrival_s >= self._warmup_s:
            classes = self._cohort_classes
            classes[req.class_id] = classes.get(req.class_id, 0) + 1

    def _settle(self, req: Request) -> None:
        """Fold a leaving member's lazily accrued metrics into its record."""
        req.gpu_s += self._row_gpu_s - req.gpu_mark
        stack = self._itl
        i = bisect_right(stack, req.itl_mark, key=itemgetter(0))
        if i < len(stack) and stack[i][1] > req.max_itl_s:
            req.max_itl_s = stack[i][1]
        if self._cohort_last_s > req.last_token_s:
            req.last_token_s = self._cohort_last_s
        req.cohort_marked = False
        if req.arrival_s >= self._warmup_s:
            classes = self._cohort_classes
            left = classes[req.class_id] - 1
            if left:
                classes[req.class_id] = left
            else:
                del classes[req.class_id]

    # ------------------------------------------------------------------ engine loop
    # The engine is a chain of bare timers (``Environment.call_later``) rather than a SimPy
    # process: the timer that ends a step or a span applies it and starts the next one (a
    # process would add a generator resume per event, and a span would need a second event to
    # be woken early). ``_target`` is the id of the one timer the engine waits on; any other
    # that fires (a span end replaced by a cut, a step end a failure took away) does nothing.

    def _wait(self, delay: float, callback) -> None:
        # env.call_later(), inlined: this is the hottest call of the simulator.
        env = self.env
        eid = self._target = next(env._eid)
        heappush(env._queue, (env._now + delay, NORMAL, eid, callback))

    def _idle(self) -> None:
        """Wait for ``submit()`` (or ``recover()``) to wake the engine."""
        self._idle_now = True
        self._target = -1

    def _wake_up(self) -> None:
        self._idle_now = False
        self._wait(0.0, self._woken)

    def _woken(self, timer: int) -> None:
        if timer == self._target:
            self._next(self.env._now)

    def _next(self, now: float) -> None:
        """Between steps: start the next decode span or step, or go idle."""
        if self._cancels:
            self._apply_cancels()
        sched = self.scheduler
        if not sched.has_unfinished_requests():
            self._idle()
            return
        span = sched.decode_span() if self.decode_spans else None
        if span is not None and (span.num_steps >= 2 or span.cohort):
            line = self.cost.decode_line(span.num_rows)
            self._span = (span, line, now)
            # A span's rows are every running request.
            pool = self.kv.pool
            self._span_state = (span.num_rows, len(sched.waiting), pool.num_blocks - pool.num_free)
            self._span_done = span.num_steps
            self._in_span = True
            self._wait(line.total_s(span.ctx_sum, span.ctx_growth, span.num_steps), self._span_end)
            return

        out = sched.schedule()
        if out.receiving:
            for req in out.receiving:
                self.receive(req)
        if not out.requests and not out.num_cohort:
            if getattr(sched, "receiving", None) or getattr(sched, "held", None):
                # Waiting for a prompt's KV cache to arrive, or for blocks a prefill leg holds
                # until the decode side has read them.
                self._idle()
                return
            raise RuntimeError(f"replica {self.index}: scheduler made no progress with requests pending")
        dur = self.cost.step_s(out.shape)
        if out.draft is not None and self.draft is not None:
            # The proposer: one pass per proposed token over the decoding rows, and one over
            # the prompt chunks (to keep its KV cache in step).
            dur += max(out.spec_tokens) * self.draft.step_s(out.draft) + self.draft.step_s(out.draft_prefill)
        if out.host_tokens:
            # KV swapped out or in, or loaded from the CPU tier, before the step computes.
            dur += out.host_tokens * self.host_s_per_token
        self._step_start = now
        self._step_dur = dur
        self._step_out = out
        pool = self.kv.pool
        self.recorder.busy(
            self.index, now, dur, sched.num_running, len(sched.waiting), pool.num_blocks - pool.num_free, 1
        )
        if out.newly_scheduled:
            for req in out.newly_scheduled:
                req.first_scheduled_s = now
        if out.preempted:
            for req in out.preempted:
                # Its computed tokens must be computed again.
                self.outstanding_tokens += req.num_tokens
                if req.cohort_marked:
                    self._settle(req)
        self._wait(dur, self._step_end)

    def _step_end(self, timer: int) -> None:
        if timer != self._target:
            return
        out, self._step_out = self._step_out, None
        dur = self._step_dur
        now = self.env._now
        sched = self.scheduler
        emitted, finished, joined = sched.update_from_output(out)
        # GPU time is shared among the step's rows in proportion to their tokens.
        gpu_per_token = dur * self.num_gpus / out.shape.num_tokens
        if out.spec_tokens is None:
            for req, n in zip(out.requests, out.num_scheduled_tokens):
                req.gpu_s += gpu_per_token * n
                if n > 1:
                    req.prefill_gpu_s += gpu_per_token * n
        else:
            for req, n, k in zip(out.requests, out.num_scheduled_tokens, out.spec_tokens):
                req.gpu_s += gpu_per_token * n
                if n > 1 and not k:
                    req.prefill_gpu_s += gpu_per_token * n
            self.outstanding_tokens += out.spec_rejected  # proposed, rejected: still to do
        if out.num_cohort:
            self._cohort_step(sched.clock, dur, now, gpu_per_token)
            for key, members in self._cohort_classes.items():  # a gap of this step per member
                self._gap_log += pack_run(key, dur, 0.0, 1, members)
        self.outstanding_tokens -= out.shape.num_tokens
        cohort_last = self._cohort_last_s
        warmup = self._warmup_s
        for req in emitted:
            if req.first_token_s < 0:
                req.first_token_s = now
                if req.kv_source is None:
                    self.pending_prefill_tokens -= req.num_prompt_tokens
            else:
                last = req.last_token_s
                if req.cohort_marked and cohort_last > last:
                    last = cohort_last
                if now - last > req.max_itl_s:
                    req.max_itl_s = now - last
                if req.arrival_s >= warmup:
                    self._gap_log += pack_run(req.class_id, now - last, 0.0, 1, 1.0)
            req.last_token_s = now
        for req in joined:
            if req.cohort_marked:
                self._settle(req)
            self._mark(req)
        if finished:
            self._finish(finished, now)
        self._next(now)

    def _span_end(self, timer: int) -> None:
        """Apply the span in flight: its first ``_span_done`` steps."""
        if timer != self._target:
            return
        self._in_span = False
        span, line, start = self._span
        done = self._span_done
        now = self.env._now
        total = now - start
        sched = self.scheduler
        running, waiting, kv_used = self._span_state  # at its start
        self.recorder.busy(self.index, start, total, running, waiting, kv_used, done)
        # Step times grow with context inside a span: its last step is its longest.
        last_step = line.step_s(span.ctx_sum + (done - 1) * span.ctx_growth)
        end = start + total
        if span.cohort:
            finished = sched.advance_decode(done)
            self._cohort_step(sched.clock, last_step, end, total * self.num_gpus / span.num_rows)
            classes = self._cohort_classes
            if classes:  # each member: a gap per step
                log = self._gap_log
                affine = line.affine
                if affine is not None:  # one run of steps (the common case, inlined)
                    first_s, slope_s = affine[0] + affine[1] * span.ctx_sum, affine[1] * span.ctx_growth
                    for key, members in classes.items():
                        log += pack_run(key, first_s, slope_s, done, members)
                else:
                    for first_s, slope_s, steps in line.segments(span.ctx_sum, span.ctx_growth, done):
                        for key, members in classes.items():
                            log += pack_run(key, first_s, slope_s, steps, members)
        else:
            finished = self._commit_exact_span(span, line, done, start, total, last_step)
        self.outstanding_tokens -= span.ctx_growth * done
        if finished:
            self._finish(finished, end)
        self._next(now)

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
        segments = line.segments(span.ctx_sum, span.ctx_growth, done)
        warmup = self._warmup_s
        log = self._gap_log
        for req in emitting:
            gap = max(first_end - req.last_token_s, last_step)
            if gap > req.max_itl_s:
                req.max_itl_s = gap
            if req.arrival_s >= warmup:
                # The first step's gap runs from its previous token (none before the first
                # token); the others are steps.
                key = req.class_id
                if req.last_token_s >= 0:
                    log += pack_run(key, first_end - req.last_token_s, 0.0, 1, 1.0)
                first_s, slope_s, steps = segments[0]
                if steps > 1:
                    log += pack_run(key, first_s + slope_s, slope_s, steps - 1, 1.0)
                for first_s, slope_s, steps in segments[1:]:
                    log += pack_run(key, first_s, slope_s, steps, 1.0)
            req.last_token_s = end
        return finished

    def _finish(self, finished: list[Request], now: float) -> None:
        """Stamp requests that finished at ``now`` (at least one)."""
        for req in finished:
            if req.cohort_marked:
                self._settle(req)
            req.finish_s = now
            self.num_outstanding -= 1
            if req.on_done is not None:
                req.on_done(req)
        if self.num_outstanding == 0:
            # Recomputation makes the token counter drift; settle it when the replica drains.
            self.outstanding_tokens = 0
            if self.on_idle is not None:
                self.on_idle()

    # ------------------------------------------------------------------ timeouts and faults

    @property
    def num_running(self) -> int:
        """Requests in the engine's running batch (queue autoscaling counts the rest)."""
        return len(self.scheduler.running)

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
            if req.first_token_s < 0 and req.kv_source is None:
                self.pending_prefill_tokens -= req.num_prompt_tokens
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
        # At once, ahead of ordinary events now (as a SimPy interrupt of a process would).
        self.env.call_later(0.0, self._failed, urgent=True)

    def _failed(self, _timer: int) -> None:
        self._target = -1
        self._lose_work()
        self._idle()  # until recover()

    def recover(self) -> None:
        self.up = True
        if self._idle_now:
            self._wake_up()

    def _lose_work(self) -> None:
        """Drop everything: the step or span in flight, the KV cache, the queue."""
        now = self.env._now
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
                if n > 1:
                    req.prefill_gpu_s += share * n
            if out.num_cohort:
                self._row_gpu_s += share
            self._step_out = None
            # Close the scheduler's books on the interrupted step (its blocks were allocated
            # when it was scheduled) before dropping everything; what it would have
            # finished is lost with the rest.
            _, finished, _ = sched.update_from_output(out)
            for req in finished:
                req.status = RequestStatus.RUNNING
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
        self.pending_prefill_tokens = 0
        self.recorder.busy(self.index, now, 0.0, 0, 0, 0, 0)
        if self.on_lost is not None:
            self.on_lost(running, waiting)

"""Continuous (iteration-level) batching: a mirror of vLLM v1's scheduler.

Follows vllm/v1/core/sched/scheduler.py: there is no prefill or decode phase, only requests
whose ``num_computed_tokens`` catch up with their ``num_tokens`` under a per-step token budget.
Each ``schedule()``:

1. serves RUNNING requests in order, each up to its remaining tokens (chunked by the budget);
   when ``allocate_slots`` fails it preempts the last running request (FCFS), frees its
   blocks and puts it back at the head of WAITING to recompute prompt + generated tokens;
2. only if nothing was preempted, admits WAITING requests in order while the budget,
   ``max_num_seqs`` and free blocks allow, after looking up prefix-cache hits.

The scheduler knows nothing of time: the engine calls ``schedule()``, runs the step for as
long as the cost model says, then ``update_from_output()``. For speed it can also report a
*decode span*: k upcoming steps in which nothing but one token per running request would be
scheduled, which the engine advances in closed form with ``advance_decode(k)``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from sim.costs.base import StepShape
from sim.llm.kv_cache import KVCacheManager
from sim.llm.request import Request, RequestStatus


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    enable_chunked_prefill: bool = True


@dataclass(frozen=True, slots=True)
class DecodeSpan:
    """k upcoming pure-decode steps: ``num_rows`` rows per step (the cost-model batch), whose
    summed context starts at ``ctx_sum`` and grows by ``ctx_growth`` per step."""

    num_steps: int
    num_rows: int
    ctx_sum: int
    ctx_growth: int


@dataclass(slots=True)
class SchedulerOutput:
    """What one step computes."""

    requests: list[Request] = field(default_factory=list)
    num_scheduled_tokens: list[int] = field(default_factory=list)
    shape: StepShape = field(default_factory=StepShape)
    newly_scheduled: list[Request] = field(default_factory=list)
    """Requests scheduled for the first time (their queueing delay ends now)."""
    preempted: list[Request] = field(default_factory=list)

    @property
    def total_num_scheduled_tokens(self) -> int:
        return self.shape.num_tokens


def reject_reason(req: Request, config: SchedulerConfig, kv: KVCacheManager) -> str:
    """Why a request can never be served on this replica ('' if it can)."""
    total = req.num_prompt_tokens + req.max_tokens
    if total > config.max_model_len:
        return f"prompt+output {total} tokens > max_model_len {config.max_model_len}"
    if total > kv.capacity_tokens:
        return f"prompt+output {total} tokens > KV cache capacity {kv.capacity_tokens} tokens"
    if not config.enable_chunked_prefill and total > config.max_num_batched_tokens:
        # A recompute after preemption prefills prompt + output in one step.
        return (
            f"prompt+output {total} tokens > max_num_batched_tokens "
            f"{config.max_num_batched_tokens} with chunked prefill disabled"
        )
    return ""


class Scheduler:
    """vLLM v1-style continuous batching over a paged KV cache."""

    def __init__(self, config: SchedulerConfig, kv: KVCacheManager):
        self.config = config
        self.kv = kv
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []

    # ------------------------------------------------------------------ requests in

    def add_request(self, req: Request) -> str:
        """Queue a request; returns a rejection reason instead if it can never fit."""
        reason = reject_reason(req, self.config, self.kv)
        if reason:
            req.status = RequestStatus.REJECTED
            req.reject_reason = reason
            return reason
        self.waiting.append(req)
        return ""

    def has_unfinished_requests(self) -> bool:
        return bool(self.running) or bool(self.waiting)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    # ------------------------------------------------------------------ one step

    def schedule(self) -> SchedulerOutput:
        cfg, kv = self.config, self.kv
        bs = kv.block_size
        out = SchedulerOutput()
        shape = out.shape
        reqs, counts = out.requests, out.num_scheduled_tokens
        budget = cfg.max_num_batched_tokens
        running = self.running

        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            computed = req.num_computed_tokens
            n = req.num_tokens - computed
            if n > budget:
                n = budget
            if computed + n > req.num_blocks * bs:
                scheduled = True
                while not kv.allocate_slots(req, n):
                    victim = running.pop()
                    self._preempt(victim)
                    out.preempted.append(victim)
                    if victim is req:
                        scheduled = False
                        break
                if not scheduled:
                    break
            # Inline StepShape.add_decode: this loop is the simulator's hottest.
            if n == 1 and computed == req.num_tokens - 1:
                shape.num_seqs += 1
                shape.num_tokens += 1
                shape.num_decode += 1
                shape.decode_ctx_sum += computed
            else:
                shape.add_prefill(n, computed)
            reqs.append(req)
            counts.append(n)
            req.num_computed_tokens = computed + n
            budget -= n
            i += 1

        if not out.preempted:
            waiting = self.waiting
            while waiting and budget > 0 and len(running) < cfg.max_num_seqs:
                req = waiting[0]
                hits = kv.get_computed_blocks(req) if req.num_computed_tokens == 0 else 0
                cached = hits * kv.block_size
                n = req.num_tokens - req.num_computed_tokens - cached
                if not cfg.enable_chunked_prefill and n > budget:
                    break
                n = min(n, budget)
                if not kv.allocate_slots(req, n, hits):
                    break
                waiting.popleft()
                req.num_computed_tokens += cached
                if req.num_cached_tokens < 0:
                    req.num_cached_tokens = cached
                    out.newly_scheduled.append(req)
                req.status = RequestStatus.RUNNING
                running.append(req)
                self._add(out, req, n)
                budget -= n

        if out.shape.num_tokens > cfg.max_num_batched_tokens or len(running) > cfg.max_num_seqs:
            raise AssertionError("scheduler exceeded its token budget or max_num_seqs")
        return out

    def _add(self, out: SchedulerOutput, req: Request, n: int) -> None:
        computed = req.num_computed_tokens
        if n == 1 and computed == req.num_tokens - 1:
            out.shape.add_decode(computed)
        else:
            out.shape.add_prefill(n, computed)
        out.requests.append(req)
        out.num_scheduled_tokens.append(n)
        req.num_computed_tokens = computed + n

    def _preempt(self, req: Request) -> None:
        self.kv.free(req)
        req.num_computed_tokens = 0
        req.status = RequestStatus.PREEMPTED
        req.num_preemptions += 1
        self.waiting.appendleft(req)

    def update_from_output(self, out: SchedulerOutput) -> tuple[list[Request], list[Request]]:
        """Apply a finished step: requests level with their tokens sample one more.

        Returns (requests that produced a token, requests that finished)."""
        emitted: list[Request] = []
        finished: list[Request] = []
        for req in out.requests:
            if req.num_computed_tokens >= req.num_tokens:
                req.num_output_tokens += 1
                req.num_tokens += 1
                emitted.append(req)
                if req.num_output_tokens >= req.max_tokens:
                    finished.append(req)
        if finished:
            for req in finished:
                self._finish(req)
            done = set(map(id, finished))
            self.running = [r for r in self.running if id(r) not in done]
        return emitted, finished

    def _finish(self, req: Request) -> None:
        req.status = RequestStatus.FINISHED
        self.kv.free(req)

    # ------------------------------------------------------------------ decode spans

    #: New arrivals can join between steps (the engine wakes up for them).
    admits_mid_batch = True

    def decode_span(self) -> DecodeSpan | None:
        """The upcoming steps that are pure decode of the current running set, if any.

        Those steps schedule exactly one token per running request, admit nobody and preempt
        nobody; the last of them finishes at least one request (or is the last step before
        the KV pool runs dry). None when the next step is anything else.
        """
        running = self.running
        if not running:
            return None
        remaining = 1 << 62
        ctx = 0
        for req in running:
            computed = req.num_computed_tokens
            if computed != req.num_tokens - 1:
                return None
            ctx += computed
            left = req.max_tokens - req.num_output_tokens
            if left < remaining:
                remaining = left
        n = len(running)
        if self.waiting and n < self.config.max_num_seqs and self._can_admit_head(n):
            return None
        kv = self.kv
        # Each request needs at most ceil(k / block_size) new blocks in k steps: when the pool
        # has that many for everyone, it cannot run dry and the exact count is not needed.
        if kv.pool.num_free < n * (remaining // kv.block_size + 1):
            remaining = min(remaining, self._steps_until_blocks_run_out())
        if remaining == 0:
            return None
        return DecodeSpan(remaining, n, ctx, n)

    def _can_admit_head(self, num_decodes: int) -> bool:
        """Would the next schedule() admit the head of WAITING (ahead of the decodes' own
        block needs)? If not now, then not during the span either: free blocks only shrink."""
        kv = self.kv
        budget = self.config.max_num_batched_tokens - num_decodes
        if budget <= 0:
            return False
        req = self.waiting[0]
        hits = kv.get_computed_blocks(req) if req.num_computed_tokens == 0 else 0
        computed = req.num_computed_tokens + hits * kv.block_size
        n = req.num_tokens - computed
        if not self.config.enable_chunked_prefill and n > budget:
            return False
        n = min(n, budget)
        return kv.blocks_for(computed + n) - req.num_blocks - hits <= kv.pool.num_free

    def _steps_until_blocks_run_out(self) -> int:
        """Steps the running set can decode before an allocation would fail."""
        bs = self.kv.block_size
        free = self.kv.pool.num_free
        # Request i needs a new block at steps r_i, r_i + bs, r_i + 2bs, ...
        offsets = sorted(max(0, req.num_blocks * bs - req.num_tokens + 1) for req in self.running)
        if offsets[-1] < bs:
            q, rem = divmod(free, len(offsets))
            return q * bs + offsets[rem]
        # Some request holds spare blocks: count allocations by bisection (rare).
        lo, hi = 0, (free + 1) * bs + offsets[-1]
        while lo < hi:
            mid = (lo + hi + 1) // 2
            used = sum((mid - 1 - r) // bs + 1 for r in offsets if r <= mid - 1)
            if used <= free:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def advance_decode(self, k: int) -> list[Request]:
        """Apply k pure-decode steps at once; returns the requests that finished."""
        kv = self.kv
        bs = kv.block_size
        new_blocks = 0
        finished: list[Request] = []
        for req in self.running:
            req.num_output_tokens += k
            req.num_tokens += k
            req.num_computed_tokens += k
            # Blocks to hold every computed token (the newest sampled one is not computed yet).
            need = -(-req.num_computed_tokens // bs)
            if need > req.num_blocks:
                new_blocks += need - req.num_blocks
                req.num_blocks = need
            if req.num_output_tokens >= req.max_tokens:
                finished.append(req)
        kv.pool.get_new_blocks(new_blocks)
        if finished:
            for req in finished:
                self._finish(req)
            self.running = [r for r in self.running if r.status == RequestStatus.RUNNING]
        return finished

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
long as the cost model says, then ``update_from_output()``.

**The decode cohort.** Running requests that are decoding (one token per step) form a cohort
whose members advance together: their counters are not touched one by one each step but lag
behind a scheduler ``clock`` and are brought up to date when someone needs them (a member
finishes, is preempted, or the cohort dissolves). The cohort keeps the aggregates a step needs:
its summed context, how many members need a fresh KV block at each clock value (members are
bucketed by their context modulo ``block_size``), and a heap of finish clocks. This keeps a
step's cost independent of the batch size, and lets the engine advance k pure-decode steps in
closed form (``decode_span`` / ``advance_decode``). The running order vLLM relies on is kept:
decoding requests always precede the (at most one) request still in prefill, which is the
tail, so FCFS preemption only ever picks from the non-cohort tail; when the cohort itself
cannot get the blocks it needs, it dissolves into the exact per-request path for that step.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sim.costs.base import StepShape
from sim.llm.kv_cache import KVCacheManager
from sim.llm.request import Request
from sim.status import RequestStatus

# Read in the per-step loops: a module global is cheaper to load than an enum member.
_RUNNING = RequestStatus.RUNNING


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    enable_chunked_prefill: bool = True
    guaranteed_no_evict: bool = False
    """TensorRT-LLM's GUARANTEED_NO_EVICT capacity policy: admit a request only if the blocks
    of its whole prompt + output fit beside those reserved by every running request, so that
    no allocation can fail and nobody is preempted. Off: vLLM's (admit on the blocks free now,
    preempt when they run out)."""


@dataclass(slots=True)
class DecodeSpan:
    """k upcoming pure-decode steps: ``num_rows`` rows per step (the cost-model batch: every
    running request), whose summed context starts at ``ctx_sum`` and grows by ``ctx_growth``
    per step. ``cohort``: the rows are the scheduler's decode cohort (members' metrics accrue
    lazily)."""

    num_steps: int
    num_rows: int
    ctx_sum: int
    ctx_growth: int
    cohort: bool = False


@dataclass(slots=True)
class SchedulerOutput:
    """What one step computes."""

    requests: list[Request] = field(default_factory=list)
    """Requests scheduled individually (cohort members are not listed: see num_cohort)."""
    num_scheduled_tokens: list[int] = field(default_factory=list)
    shape: StepShape = field(default_factory=StepShape)
    num_cohort: int = 0
    """Decode-cohort members scheduled in aggregate, one token each."""
    newly_scheduled: list[Request] | tuple = ()
    """Requests scheduled for the first time (their queueing delay ends now; a list when any,
    like ``preempted``: most steps have none, and an empty list per step is not free)."""
    preempted: list[Request] | tuple = ()
    receiving: list[Request] | tuple = ()
    """Requests admitted to wait for their prompt's KV cache from a prefill replica (blocks
    allocated, nothing computed: the engine starts their transfers)."""
    spec_tokens: list[int] | None = None
    """Speculative decoding: tokens proposed for each of ``requests`` (0: not a decode); the
    proposer's own work as shapes (``draft``: one proposal pass over the decoding rows,
    ``draft_prefill``: the prompt chunks the proposer also reads)."""
    draft: StepShape | None = None
    draft_prefill: StepShape | None = None
    spec_rejected: int = 0
    """Proposed tokens the target rejected in this step (set by update_from_output)."""
    host_tokens: int = 0
    """Tokens of KV this step moves between GPU and CPU memory (swap out, swap in, loads from
    the CPU tier of the prefix cache); the engine charges their PCIe time to the step."""


@runtime_checkable
class BatchScheduler(Protocol):
    """What a replica's engine loop needs of a scheduler (vLLM's ``Scheduler`` interface as
    ``EngineCore`` uses it). ``Scheduler`` (continuous batching) and ``StaticBatchScheduler``
    (request-level batches) are both one; the decode cohort's ``clock`` is ``Scheduler``'s own,
    read only for cohort members."""

    kv: KVCacheManager
    admits_mid_batch: bool
    waiting: deque[Request]

    def add_request(self, req: Request) -> str:
        """Queue a request, or return why it can never run ("" when queued)."""
        ...

    def has_unfinished_requests(self) -> bool: ...

    @property
    def num_waiting(self) -> int: ...

    @property
    def num_running(self) -> int: ...

    @property
    def running(self) -> list[Request]: ...

    def abort(self, req: Request) -> None: ...

    def drain(self) -> list[Request]: ...

    def schedule(self) -> SchedulerOutput: ...

    def update_from_output(self, out: SchedulerOutput) -> tuple[list[Request], list[Request], list[Request]]: ...

    def decode_span(self) -> DecodeSpan | None: ...

    def advance_decode(self, k: int) -> list[Request]: ...


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


def queue_or_reject(req: Request, config: SchedulerConfig, kv: KVCacheManager, waiting: deque[Request]) -> str:
    """Append a servable request to ``waiting``; mark any other rejected, with its reason."""
    reason = reject_reason(req, config, kv)
    if reason:
        req.status = RequestStatus.REJECTED
        req.reject_reason = reason
        return reason
    waiting.append(req)
    return ""


class Scheduler:
    """vLLM v1-style continuous batching over a paged KV cache."""

    #: New arrivals can join between steps (the engine wakes up for them).
    admits_mid_batch = True
    #: Off, every step dissolves the cohort and schedules each request individually: the
    #: reference path the tests compare the cohort against.
    use_cohort = True

    def __init__(self, config: SchedulerConfig, kv: KVCacheManager):
        self.config = config
        self.kv = kv
        self.block_size = kv.block_size
        # Requests up to this many tokens can always be served (reject_reason is '').
        self._fits_tokens = min(
            config.max_model_len,
            kv.capacity_tokens,
            config.max_num_batched_tokens if not config.enable_chunked_prefill else kv.capacity_tokens,
        )
        self.waiting: deque[Request] = deque()
        self.cohort: dict[Request, None] = {}
        """Decoding requests in running order (a dict keeps insertion order)."""
        self.others: list[Request] = []
        """Running requests not in the cohort (prefilling or just admitted); they follow it."""
        self.clock = 0
        """Cohort decode steps so far."""
        self._ctx_base = 0  # sum over members of (computed tokens - clock) at any clock
        self._needs_block = [0] * kv.block_size  # members by (computed - clock) mod block_size
        self._finish_heap: list[tuple[int, int, Request]] = []
        self._reserved = 0
        """Blocks reserved by running requests (guaranteed_no_evict; 0 otherwise)."""
        # Prefill/decode disaggregation (vLLM's KV connector): on a decode replica, requests
        # whose prompt KV is in flight (blocks allocated, WAITING_FOR_REMOTE_KVS), then those
        # whose KV has arrived and wait for their first step; on a prefill replica, finished
        # legs whose blocks stay until the decode side has read them.
        self.receiving: dict[Request, None] = {}
        self.received: deque[Request] = deque()
        self.held: dict[Request, None] = {}
        self.swapped: deque[Request] = deque()
        """Requests preempted by swapping their KV to CPU memory, next to swap in first."""
        self.swap_capacity_blocks = 0
        """CPU blocks for swapped KV (vLLM ``--swap-space``); 0: preemption recomputes."""
        self._swap_used = 0
        self._swapped_blocks: dict[Request, int] = {}
        self._host_tokens = 0  # KV tokens moved over PCIe in the step being scheduled
        self.spec_k = 0
        """Speculative decoding: tokens proposed per decoding request and step (0: off)."""
        self.spec_rng = None
        """Its random.Random: per-request acceptance rates and per-step acceptances."""
        self.spec_acceptance: dict = {}
        """class id -> (mean, cv) of the acceptance rate; key None: the pool's."""

    # ------------------------------------------------------------------ requests in

    def add_request(self, req: Request) -> str:
        """Queue a request; returns a rejection reason instead if it can never fit."""
        if req.num_prompt_tokens + req.max_tokens <= self._fits_tokens:
            self.waiting.append(req)
            return ""
        return queue_or_reject(req, self.config, self.kv, self.waiting)

    def has_unfinished_requests(self) -> bool:
        return bool(self.cohort or self.others or self.waiting or self.receiving or self.received or self.swapped)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.cohort) + len(self.others)

    @property
    def running(self) -> list[Request]:
        """Running requests in vLLM's order, with up-to-date counters (O(batch))."""
        for req in self.cohort:
            self._sync(req)
        return [*self.cohort, *self.others]

    # ------------------------------------------------------------------ requests out
    # Timeouts and faults. The engine calls these between steps only: during a step (after
    # schedule(), before update_from_output()) the cohort holds blocks for a clock value it
    # has not reached, and a member's block count could not be brought up to date.

    def abort(self, req: Request) -> None:
        """Take an unfinished request out wherever it is and free its KV blocks (vLLM's
        ``finish_requests(..., FINISHED_ABORTED)``). Its counters are brought up to date
        first, so ``num_output_tokens`` is what it generated. Does nothing to a request that
        is already final, as vLLM ignores aborts of finished requests."""
        status = req.status
        if status > RequestStatus.PREEMPTED:
            return
        if status == RequestStatus.RUNNING:
            if req in self.cohort:
                self._leave(req)
                if not self.cohort:
                    self._finish_heap.clear()  # only stale entries are left
            else:
                self.others.remove(req)
            self.kv.free(req)
            self._release(req)
        elif req in self._swapped_blocks:
            self.swapped.remove(req)
            self._swap_used -= self._swapped_blocks.pop(req)
        else:
            self.waiting.remove(req)  # near the head when the oldest time out first
        req.status = RequestStatus.ABORTED

    def drain(self) -> list[Request]:
        """Take every request out, running first (in running order) then waiting (in queue
        order), for a replica failure: their blocks are freed, their counters brought up to
        date, their status set to ABORTED, and the prefix cache is forgotten (the GPU memory
        is lost). The clock keeps counting, so marks the engine took on it stay ordered."""
        kv = self.kv
        running = self.running
        for req in running:
            kv.free(req)
            req.reserved_blocks = 0
        self._reserved = 0
        remote = [*self.received, *self.receiving]
        for req in remote:
            kv.free(req)
            req.reserved_blocks = 0
        for req in self.held:
            kv.free(req)
        out = running + remote + list(self.swapped) + list(self.waiting)
        for req in out:
            req.status = RequestStatus.ABORTED
        self.swapped.clear()
        self._swapped_blocks.clear()
        self._swap_used = 0
        self.waiting.clear()
        self.receiving.clear()
        self.received.clear()
        self.held.clear()
        self.cohort.clear()
        self.others = []
        self._ctx_base = 0
        self._needs_block = [0] * kv.block_size
        self._finish_heap.clear()
        kv.reset()
        return out

    # ------------------------------------------------------------------ the cohort

    def _sync(self, req: Request) -> None:
        """Bring a member's counters up to the clock."""
        d = self.clock - req.cohort_mark
        if d:
            req.num_output_tokens += d
            req.num_tokens += d
            req.num_computed_tokens += d
            req.cohort_mark = self.clock
        req.num_blocks = -(-req.num_computed_tokens // self.block_size)

    def _join(self, req: Request) -> None:
        clock = self.clock
        base = req.num_computed_tokens - clock
        req.cohort_mark = clock
        req.cohort_base = base
        self._ctx_base += base
        self._needs_block[base % self.block_size] += 1
        finish = clock + req.max_tokens - req.num_output_tokens
        req.cohort_finish_clock = finish
        heapq.heappush(self._finish_heap, (finish, req.request_id, req))
        self.cohort[req] = None

    def _leave(self, req: Request) -> None:
        self._sync(req)
        del self.cohort[req]
        self._ctx_base -= req.cohort_base
        self._needs_block[req.cohort_base % self.block_size] -= 1

    def _blocks_needed_at(self, clock: int) -> int:
        """Members that need a new block in the step taken at this clock value: a member
        holding exactly enough blocks for c computed tokens needs one more when c % bs == 0."""
        return self._needs_block[(-clock) % self.block_size]

    def _pop_finished(self) -> list[Request]:
        heap, clock, cohort = self._finish_heap, self.clock, self.cohort
        finished = []
        while heap and heap[0][0] <= clock:
            finish, _, req = heapq.heappop(heap)
            if req in cohort and req.cohort_finish_clock == finish:
                self._leave(req)
                self._finish(req)
                finished.append(req)
        return finished

    def _next_finish_clock(self) -> int:
        """The clock at which the next member finishes (the cohort must not be empty: every
        member has an entry in the heap)."""
        heap, cohort = self._finish_heap, self.cohort
        while True:
            finish, _, req = heap[0]
            if req in cohort and req.cohort_finish_clock == finish:
                return finish
            heapq.heappop(heap)  # stale entry of a request that left the cohort

    def _dissolve_cohort(self) -> None:
        """Turn every member back into an individually scheduled request (rare: the cohort
        cannot get its blocks, so vLLM's per-request order decides who is preempted)."""
        members = list(self.cohort)
        for req in members:
            self._sync(req)
        self.cohort.clear()
        self._ctx_base = 0
        self._needs_block = [0] * self.kv.block_size
        self._finish_heap.clear()
        self.others = members + self.others

    # ------------------------------------------------------------------ one step

    def schedule(self) -> SchedulerOutput:
        cfg, kv = self.config, self.kv
        out = SchedulerOutput()
        shape = out.shape
        budget = cfg.max_num_batched_tokens
        spec_k = self.spec_k
        if spec_k:
            out.spec_tokens = []
            out.draft = StepShape()
            out.draft_prefill = StepShape()

        n_dec = len(self.cohort)
        if n_dec:
            need = self._blocks_needed_at(self.clock)
            if need > kv.pool.num_free or not self.use_cohort:
                self._dissolve_cohort()
                n_dec = 0
            else:
                if need:
                    kv.pool.get_new_blocks(need)
                out.num_cohort = n_dec
                shape.num_seqs += n_dec
                shape.num_tokens += n_dec
                shape.num_decode += n_dec
                shape.decode_ctx_sum += self._ctx_base + n_dec * self.clock
                budget -= n_dec

        others = self.others
        i = 0
        while i < len(others) and budget > 0:
            req = others[i]
            n = min(req.num_tokens - req.num_computed_tokens, budget)
            k = 0
            if spec_k and n == 1 and req.num_output_tokens:
                # A decode: propose up to k tokens (never past its last one, nor the budget).
                k = max(0, min(spec_k, req.max_tokens - req.num_output_tokens - 1, budget - 1))
                n += k
            scheduled = True
            while not kv.allocate_slots(req, n):
                # FCFS: preempt the last running request (always a non-member: members
                # precede every request in `others`).
                victim = others.pop()
                self._preempt(victim)
                if not out.preempted:
                    out.preempted = []
                out.preempted.append(victim)
                if victim is req:
                    scheduled = False
                    break
            if not scheduled:
                break
            self._add(out, req, n, k)
            budget -= n
            i += 1

        if not out.preempted:
            # The cohort does not change from here on: only `others` grows.
            swapped = self.swapped
            while swapped and budget > 0 and n_dec + len(others) < cfg.max_num_seqs:
                # Swapped-out requests come back first (vLLM v0), their KV copied in again.
                req = swapped[0]
                n = min(req.num_tokens - req.num_computed_tokens, budget)
                if not kv.allocate_slots(req, n):
                    break
                swapped.popleft()
                self._swap_used -= self._swapped_blocks.pop(req)
                self._host_tokens += req.num_computed_tokens
                req.num_swapped_tokens += req.num_computed_tokens
                req.status = RequestStatus.RUNNING
                others.append(req)
                self._add(out, req, n)
                budget -= n
            received = self.received
            while received and budget > 0 and n_dec + len(others) < cfg.max_num_seqs:
                # Its KV arrived: its first step recomputes the last prompt token for the
                # logits (its blocks were allocated for the whole prompt, so it needs none).
                req = received[0]
                if not kv.allocate_slots(req, 1):
                    break
                received.popleft()
                req.status = RequestStatus.RUNNING
                others.append(req)
                self._add(out, req, 1)
                budget -= 1
            # Nobody new while a swapped request waits to come back (vLLM v0).
            waiting = self.waiting if not swapped else ()
            while waiting and budget > 0 and n_dec + len(others) < cfg.max_num_seqs:
                req = waiting[0]
                if req.num_external_tokens:
                    if not self._start_receiving(req, out):
                        break
                    continue
                hits = loaded = 0
                if req.num_computed_tokens == 0 and req.block_hashes:
                    hits = kv.get_computed_blocks(req)
                    if kv.pool.cpu_tier is not None:
                        loaded = kv.cpu_hits(req, hits) * kv.block_size
                cached = hits * kv.block_size
                n = req.num_tokens - req.num_computed_tokens - cached - loaded
                if not cfg.enable_chunked_prefill and n > budget:
                    break
                n = min(n, budget)
                if cfg.guaranteed_no_evict:
                    reserve = kv.blocks_for(req.num_prompt_tokens + req.max_tokens)
                    if self._reserved + reserve > kv.pool.num_blocks:
                        break
                if loaded:
                    # Most recently used in the CPU tier now: the blocks the allocation below
                    # evicts from the GPU into it must not push these out.
                    kv.touch_cpu(req, hits, loaded // kv.block_size)
                if not kv.allocate_slots(req, loaded + n, hits):
                    break
                if cfg.guaranteed_no_evict:
                    req.reserved_blocks = reserve
                    self._reserved += reserve
                waiting.popleft()
                if loaded:
                    # Prefix blocks the CPU tier holds: copied in, not computed.
                    self._host_tokens += loaded
                    req.num_cpu_hit_tokens += loaded
                    cached += loaded
                req.num_computed_tokens += cached
                if req.num_cached_tokens < 0:
                    req.num_cached_tokens = cached
                    if not out.newly_scheduled:
                        out.newly_scheduled = []
                    out.newly_scheduled.append(req)
                req.status = RequestStatus.RUNNING
                others.append(req)
                self._add(out, req, n)
                budget -= n

        if shape.num_tokens > cfg.max_num_batched_tokens or n_dec + len(others) > cfg.max_num_seqs:
            raise AssertionError("scheduler exceeded its token budget or max_num_seqs")
        if self._host_tokens:
            out.host_tokens = self._host_tokens
            self._host_tokens = 0
        return out

    def _start_receiving(self, req: Request, out: SchedulerOutput) -> bool:
        """Admit the head of WAITING to receive its prompt's KV cache: blocks for the whole
        prompt now, no tokens this step (vLLM: WAITING_FOR_REMOTE_KVS). False if they are
        short."""
        kv = self.kv
        if self.config.guaranteed_no_evict:
            reserve = kv.blocks_for(req.num_prompt_tokens + req.max_tokens)
            if self._reserved + reserve > kv.pool.num_blocks:
                return False
        if not kv.allocate_slots(req, req.num_prompt_tokens):
            return False
        if self.config.guaranteed_no_evict:
            req.reserved_blocks = reserve
            self._reserved += reserve
        self.waiting.popleft()
        req.num_cached_tokens = 0  # queued until its prefill began elsewhere (set by the pool)
        self.receiving[req] = None
        if not out.receiving:
            out.receiving = []
        out.receiving.append(req)
        return True

    def finish_receiving(self, req: Request) -> None:
        """Its prompt's KV cache has arrived. As vLLM does when every prompt token is loaded,
        the last one is computed again (its logits give the first output token)."""
        del self.receiving[req]
        req.num_computed_tokens = req.num_tokens - 1
        req.num_external_tokens = 0
        self.received.append(req)

    def release(self, req: Request) -> None:
        """A held prefill leg's KV cache has been read: free its blocks."""
        del self.held[req]
        self.kv.free(req)

    def enable_speculation(self, k: int, rng, acceptance: dict) -> None:
        """Propose ``k`` tokens per decoding request each step. Decoding requests are then
        scheduled one by one (no cohort): each advances by its own accepted count."""
        self.spec_k = k
        self.spec_rng = rng
        self.spec_acceptance = acceptance
        self.use_cohort = False

    def _acceptance(self, req: Request) -> float:
        mean, cv = self.spec_acceptance.get(req.class_id) or self.spec_acceptance[None]
        if cv <= 0:
            return mean
        # Beta(a, b) with this mean and coefficient of variation.
        kappa = (1 - mean) / (cv * cv * mean) - 1
        return self.spec_rng.betavariate(mean * kappa, (1 - mean) * kappa)

    def _add(self, out: SchedulerOutput, req: Request, n: int, k: int = 0) -> None:
        computed = req.num_computed_tokens
        if n == 1 and computed == req.num_tokens - 1:
            out.shape.add_decode(computed)
        else:
            # A prefill chunk, or a decode with k proposed tokens: k + 1 queries to verify.
            out.shape.add_prefill(n, computed)
        if out.spec_tokens is not None:
            out.spec_tokens.append(k)
            if k:
                out.draft.add_decode(computed)  # a proposer pass over this row
            elif n > 1:
                out.draft_prefill.add_prefill(n, computed)  # the proposer reads the prompt too
        out.requests.append(req)
        out.num_scheduled_tokens.append(n)
        req.num_computed_tokens = computed + n

    def _preempt(self, req: Request) -> None:
        if self.config.guaranteed_no_evict:
            raise AssertionError("guaranteed_no_evict admitted more than the KV cache holds")
        blocks = req.num_blocks
        if self.swap_capacity_blocks and self._swap_used + blocks <= self.swap_capacity_blocks:
            # Swap: its KV goes to CPU memory over PCIe and comes back before anyone new is
            # admitted; nothing is computed again (vLLM v0 --preemption-mode swap).
            self.kv.free(req)
            self._swap_used += blocks
            self._swapped_blocks[req] = blocks
            self._host_tokens += req.num_computed_tokens
            req.num_swapped_tokens += req.num_computed_tokens
            req.status = RequestStatus.PREEMPTED
            req.num_preemptions += 1
            self.swapped.appendleft(req)
            return
        self.kv.free(req)
        req.num_computed_tokens = 0
        req.status = RequestStatus.PREEMPTED
        req.num_preemptions += 1
        self.waiting.appendleft(req)

    def update_from_output(self, out: SchedulerOutput) -> tuple[list[Request], list[Request], list[Request]]:
        """Apply a finished step: requests level with their tokens sample one more.

        Returns (individually scheduled requests that produced a token, requests that
        finished, requests that joined the decode cohort). Cohort members all produced a
        token; they are not listed."""
        if out.spec_tokens is not None:
            return self._update_speculative(out)
        finished: list[Request] = []
        if out.num_cohort:
            self.clock += 1
            finished = self._pop_finished()
        emitted: list[Request] = []
        joined: list[Request] = []
        for req in out.requests:
            if req.status != _RUNNING:
                continue
            if req.num_computed_tokens >= req.num_tokens:
                req.num_output_tokens += 1
                req.num_tokens += 1
                emitted.append(req)
                if req.num_output_tokens >= req.max_tokens:
                    self._finish(req)
                    finished.append(req)
                else:
                    joined.append(req)
        if emitted:
            for req in joined:
                self._join(req)
            # Those that finished or joined the cohort leave `others` (a loop: the list is
            # short, and a comprehension costs a function call).
            cohort = self.cohort
            others = []
            for req in self.others:
                if req.status == _RUNNING and req not in cohort:
                    others.append(req)
            self.others = others
        return emitted, finished, joined

    def _update_speculative(self, out: SchedulerOutput) -> tuple[list[Request], list[Request], list[Request]]:
        """``update_from_output`` with speculation: a decode that proposed k tokens keeps the
        accepted prefix a (each accepted with the request's rate, until the first rejection)
        and the target's own next token, a + 1 tokens; the KV slots of the k - a rejected
        ones are computed again later (vLLM rolls ``num_computed_tokens`` back; the blocks
        stay). Nobody joins a cohort."""
        rng = self.spec_rng
        emitted: list[Request] = []
        finished: list[Request] = []
        rejected = 0
        for req, k in zip(out.requests, out.spec_tokens):
            if req.status != _RUNNING or req.num_computed_tokens < req.num_tokens:
                continue
            tokens = 1
            if k:
                alpha = req.spec_alpha
                if alpha < 0:
                    alpha = req.spec_alpha = self._acceptance(req)
                a = 0
                while a < k and rng.random() < alpha:
                    a += 1
                tokens += a
                req.num_computed_tokens -= k - a
                rejected += k - a
            req.num_output_tokens += tokens
            req.num_tokens += tokens
            emitted.append(req)
            if req.num_output_tokens >= req.max_tokens:
                self._finish(req)
                finished.append(req)
        out.spec_rejected = rejected
        if finished:
            self.others = [r for r in self.others if r.status == _RUNNING]
        return emitted, finished, []

    def _finish(self, req: Request) -> None:
        req.status = RequestStatus.FINISHED
        if req.hold_kv:
            self.held[req] = None
        else:
            self.kv.free(req)
        self._release(req)

    def _release(self, req: Request) -> None:
        self._reserved -= req.reserved_blocks
        req.reserved_blocks = 0

    # ------------------------------------------------------------------ decode spans

    def decode_span(self) -> DecodeSpan | None:
        """The upcoming steps that are pure decode of the cohort, if any.

        Those steps schedule exactly one token per running request, admit nobody and preempt
        nobody; the last of them finishes at least one request (or is the last step before
        the KV pool runs dry). None when the next step is anything else.
        """
        if self.others or not self.cohort:
            return None
        n = len(self.cohort)
        if n < self.config.max_num_seqs and (
            self.received
            or (self.swapped and self._can_swap_in(n))
            or (self.waiting and not self.swapped and self._can_admit_head(n))
        ):
            return None
        k = self._next_finish_clock() - self.clock
        bs = self.block_size
        # Each member needs at most ceil(k / bs) new blocks in k steps: when the pool has that
        # many for everyone it cannot run dry and the exact count is not needed.
        if self.kv.pool.num_free < n * (k // bs + 1):
            k = min(k, self._steps_until_blocks_run_out())
        if k <= 0:
            return None
        return DecodeSpan(k, n, self._ctx_base + n * self.clock, n, True)

    def _can_swap_in(self, num_decodes: int) -> bool:
        """Would the next schedule() swap the first swapped request back in?"""
        req = self.swapped[0]
        budget = self.config.max_num_batched_tokens - num_decodes
        if budget <= 0:
            return False
        n = min(req.num_tokens - req.num_computed_tokens, budget)
        return self.kv.blocks_for(req.num_computed_tokens + n) <= self.kv.pool.num_free

    def _can_admit_head(self, num_decodes: int) -> bool:
        """Would the next schedule() admit the head of WAITING (ahead of the decodes' own
        block needs)? If not now, then not during the span either: free blocks only shrink."""
        kv = self.kv
        budget = self.config.max_num_batched_tokens - num_decodes
        if budget <= 0:
            return False
        req = self.waiting[0]
        if req.num_external_tokens:
            blocks = kv.blocks_for(req.num_prompt_tokens)
            if (
                self.config.guaranteed_no_evict
                and self._reserved + kv.blocks_for(req.num_prompt_tokens + req.max_tokens) > kv.pool.num_blocks
            ):
                return False
            return blocks - req.num_blocks <= kv.pool.num_free
        # Cheap test first: if it fits without cache hits it is admitted whatever the hits
        # (the prefix lookup walks the prompt's blocks, so it is only done when it matters).
        if self._admissible(req, budget, 0):
            return True
        if req.num_computed_tokens or not req.block_hashes:
            return False
        hits = kv.get_computed_blocks(req)
        loaded = kv.cpu_hits(req, hits) * kv.block_size if kv.pool.cpu_tier is not None else 0
        return (hits > 0 or loaded > 0) and self._admissible(req, budget, hits, loaded)

    def _admissible(self, req: Request, budget: int, hits: int, loaded: int = 0) -> bool:
        kv = self.kv
        computed = req.num_computed_tokens + hits * kv.block_size + loaded
        n = req.num_tokens - computed
        if not self.config.enable_chunked_prefill and n > budget:
            return False
        n = min(n, budget)
        if (
            self.config.guaranteed_no_evict
            and self._reserved + kv.blocks_for(req.num_prompt_tokens + req.max_tokens) > kv.pool.num_blocks
        ):
            return False
        return kv.blocks_for(computed + n) - req.num_blocks - hits <= kv.pool.num_free

    def _steps_until_blocks_run_out(self) -> int:
        """Steps the cohort can decode before an allocation would fail. Allocations repeat
        with period block_size (every member needs one block per period)."""
        bs = self.block_size
        q, rem = divmod(self.kv.pool.num_free, len(self.cohort))
        used = 0
        for j in range(bs):
            used += self._blocks_needed_at(self.clock + j)
            if used > rem:
                return q * bs + j
        raise AssertionError("cohort block bookkeeping out of step")

    def advance_decode(self, k: int) -> list[Request]:
        """Apply k pure-decode steps of the cohort at once; returns the requests that finished."""
        bs = self.block_size
        periods, rest = divmod(k, bs)
        new_blocks = periods * len(self.cohort)
        if rest:
            # Clocks c..c+rest-1 visit residues (-c) % bs downwards, wrapping at 0.
            needs = self._needs_block
            top = (-self.clock) % bs
            low = top - rest + 1
            if low >= 0:
                new_blocks += sum(needs[low : top + 1])
            else:
                new_blocks += sum(needs[: top + 1]) + sum(needs[bs + low :])
        if new_blocks:
            self.kv.pool.get_new_blocks(new_blocks)
        self.clock += k
        heap = self._finish_heap
        if not heap or heap[0][0] > self.clock:
            return []
        return self._pop_finished()

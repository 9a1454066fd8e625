"""Static (request-level) batching on the same replica, for contrast with continuous batching.

The pre-Orca way (FasterTransformer-style serving): when the replica is free, a batch of up
to ``max_num_seqs`` waiting requests is formed, with KV space reserved up front for each
member's whole sequence. The batch prefills (chunked by ``max_num_batched_tokens``), then
decodes every row each step until its longest member ends; members that finish early stay in
the batch as padding rows (still computed, frozen context). Nobody joins a running batch, and
every member is returned when the batch ends, so the slowest member sets everyone's latency.
Prefix caching is not used.
"""

from __future__ import annotations

from collections import deque

from sim.llm.kv_cache import KVCacheManager
from sim.llm.request import Request
from sim.llm.scheduler import DecodeSpan, SchedulerConfig, SchedulerOutput, queue_or_reject
from sim.status import RequestStatus


class StaticBatchScheduler:
    admits_mid_batch = False

    def __init__(self, config: SchedulerConfig, kv: KVCacheManager):
        self.config = config
        self.kv = kv
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # the current batch, padding members included

    def add_request(self, req: Request) -> str:
        return queue_or_reject(req, self.config, self.kv, self.waiting)

    def has_unfinished_requests(self) -> bool:
        return bool(self.running) or bool(self.waiting)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def abort(self, req: Request) -> None:
        """Take an unfinished request out (a timeout): a batch member gives back its reserved
        blocks and leaves the batch, which carries on without it. Nothing for a final request.

        Between steps only, as for ``Scheduler.abort``. If the member taken out was the only
        one still generating, the batch ends after one more (padding-only) step: the engine
        learns of finished requests from update_from_output()."""
        if req.status > RequestStatus.PREEMPTED:
            return
        if req.status == RequestStatus.RUNNING:
            self.running.remove(req)
            self.kv.free(req)
        else:
            self.waiting.remove(req)
        req.status = RequestStatus.ABORTED

    def drain(self) -> list[Request]:
        """Take every request out for a replica failure: the batch (in batch order), then the
        queue (in order), all ABORTED with their blocks freed; the KV pool starts afresh."""
        for req in self.running:
            self.kv.free(req)
        out = self.running + list(self.waiting)
        for req in out:
            req.status = RequestStatus.ABORTED
        self.running = []
        self.waiting.clear()
        self.kv.reset()
        return out

    def _form_batch(self, out: SchedulerOutput) -> None:
        kv = self.kv
        while self.waiting and len(self.running) < self.config.max_num_seqs:
            req = self.waiting[0]
            need = kv.blocks_for(req.num_prompt_tokens + req.max_tokens)
            if need > kv.pool.num_free:
                break
            self.waiting.popleft()
            kv.pool.get_new_blocks(need)
            req.num_blocks = need
            req.status = RequestStatus.RUNNING
            req.num_cached_tokens = 0
            if not out.newly_scheduled:
                out.newly_scheduled = []
            out.newly_scheduled.append(req)
            self.running.append(req)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        if not self.running:
            self._form_batch(out)
        prefilling = [r for r in self.running if r.num_computed_tokens < r.num_prompt_tokens]
        shape = out.shape
        if prefilling:
            budget = self.config.max_num_batched_tokens
            for req in prefilling:
                if budget <= 0:
                    break
                n = min(req.num_prompt_tokens - req.num_computed_tokens, budget)
                shape.add_prefill(n, req.num_computed_tokens)
                out.requests.append(req)
                out.num_scheduled_tokens.append(n)
                req.num_computed_tokens += n
                budget -= n
            return out
        for req in self.running:
            if req.num_output_tokens < req.max_tokens:
                shape.add_decode(req.num_computed_tokens)
                out.requests.append(req)
                out.num_scheduled_tokens.append(1)
                req.num_computed_tokens += 1
            else:  # padding row: computed (and paid for), produces nothing
                shape.add_decode(req.num_computed_tokens)
                out.requests.append(req)
                out.num_scheduled_tokens.append(1)
        return out

    def update_from_output(self, out: SchedulerOutput) -> tuple[list[Request], list[Request], list[Request]]:
        emitted = []
        for req in out.requests:
            if req.num_computed_tokens >= req.num_tokens:
                req.num_output_tokens += 1
                req.num_tokens += 1
                emitted.append(req)
        return emitted, self._maybe_end_batch(), []

    def _maybe_end_batch(self) -> list[Request]:
        if any(r.num_output_tokens < r.max_tokens for r in self.running):
            return []
        finished = self.running
        for req in finished:
            req.status = RequestStatus.FINISHED
            self.kv.free(req)
        self.running = []
        return finished

    def decode_span(self) -> DecodeSpan | None:
        if not self.running:
            return None
        active = [r for r in self.running if r.num_output_tokens < r.max_tokens]
        if not active or any(r.num_computed_tokens != r.num_tokens - 1 for r in active):
            return None
        k = min(r.max_tokens - r.num_output_tokens for r in active)
        ctx = sum(r.num_computed_tokens for r in self.running)
        return DecodeSpan(k, len(self.running), ctx, len(active))

    def advance_decode(self, k: int) -> list[Request]:
        for req in self.running:
            if req.num_output_tokens < req.max_tokens:
                req.num_output_tokens += k
                req.num_tokens += k
                req.num_computed_tokens += k
        return self._maybe_end_batch()

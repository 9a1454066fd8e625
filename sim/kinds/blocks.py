"""A block-step engine: the generation kinds whose every step computes a block of tokens per
request rather than one (``dllm``: a diffusion language model denoising a block of L tokens in S
parallel steps; ``hybrid``: HART's AR transformer generating a whole scale per step, then a small
diffusion refiner). vLLM's scheduler (``sim.llm.scheduler``) is built around one new token per
running request per step; these kinds need their own loop, which keeps what carries over:

* step-level batching: every step takes each running request's current block (or its refiner
  rows, or a chunk of its prompt) up to ``max_num_batched_tokens``, FCFS; requests join and leave
  between steps;
* the KV cache in blocks of ``engine.block_size`` tokens: a request is admitted when the blocks
  of its prompt and its whole output fit beside the running ones' (its length is known, and a
  block-step engine has no preemption), up to ``max_num_seqs``;
* the step's time is the pool's LLM cost model on the step's shape: a block of q tokens at
  context c is a chunk of q tokens over c cached ones, bidirectional within the block for a
  diffusion LM, with logits for all q positions; the refiner is its own roofline term.

It has no prefix cache, always chunks prompts (``enable_chunked_prefill`` off is not
honoured) and always reserves a request's whole answer (whatever ``capacity_scheduler_policy``
says). A block is committed to the KV cache when its last step ends (the KV of a finished block is
what the next blocks attend to: block diffusion's cache, Fast-dLLM's). The prompt's last chunk
also runs the first block's first step (one forward over the prompt and the masked block).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from sim.costs.base import StepShape
from sim.fleet.timers import Environment
from sim.metrics.recorder import Recorder
from sim.status import RequestStatus


@dataclass(slots=True, eq=False)
class BlockRequest:
    request_id: int
    class_id: int
    arrival_s: float
    kind: str
    """``dllm`` or ``hybrid``."""
    num_prompt_tokens: int
    blocks: tuple
    """Tokens committed by each block, in order."""
    steps: tuple
    """Steps each block takes (a diffusion LM's denoising steps; one per HART scale)."""
    bidirectional: bool = True
    """Attention within a block sees the whole block (a diffusion LM; a VAR scale too)."""
    suffix: bool = False
    """Each step also recomputes every token after the block (a diffusion LM whose masked answer
    is all visible: ``cache: prefix``)."""
    sequences: int = 1
    """Rows computed together (2 with classifier-free guidance): tokens and KV times this."""
    refine_steps: int = 0
    refine_tokens: int = 0
    """Tokens the refiner processes at each of its steps (HART: the last scale's)."""
    refine_s_per_token: float = 0.0
    """The refiner's seconds per token per step on this replica (roofline)."""
    decode_s: float = 0.0
    """The pixel decoder's seconds after the last step (hybrid)."""
    # -- state
    status: RequestStatus = RequestStatus.WAITING
    prefilled: int = 0
    block: int = 0
    step: int = 0
    refined: int = 0
    kv_blocks: int = 0
    # -- timing, written by the engine
    replica: int = -1
    seen_in_system: int = -1
    first_scheduled_s: float = -1.0
    first_token_s: float = -1.0
    """When the first block was committed (-1: not yet)."""
    finish_s: float = -1.0
    gpu_s: float = 0.0
    num_retries: int = 0
    reject_reason: str = ""
    fail_reason: str = ""
    on_done: object = None
    parent: object = None
    stage: int = -1
    output_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.output_tokens = sum(self.blocks)

    @property
    def generated_tokens(self) -> int:
        return sum(self.blocks[: self.block])

    @property
    def total_steps(self) -> int:
        return sum(self.steps) + self.refine_steps

    def reset_for_retry(self) -> None:
        self.status = RequestStatus.WAITING
        self.prefilled = self.block = self.step = self.refined = 0
        self.first_token_s = -1.0


class BlockReplica:
    """One replica (``num_gpus`` tensor-parallel ranks) of a block-step engine."""

    def __init__(
        self,
        env: Environment,
        index: int,
        cost,
        recorder: Recorder,
        num_gpus: int,
        num_kv_blocks: int,
        block_size: int,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
    ):
        self.env = env
        self.index = index
        self.cost = cost
        self.recorder = recorder
        self.num_gpus = num_gpus
        self.capacity = num_kv_blocks
        self.free = num_kv_blocks
        self.block_size = block_size
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.waiting: deque[BlockRequest] = deque()
        self.running: list[BlockRequest] = []
        self.num_outstanding = 0
        self.outstanding_tokens = 0
        self.up = True
        self.on_lost = None
        self.on_idle = None
        self.fail_request = None
        self._target = -1
        self._busy = False
        self._members: list = []
        self._step_start = 0.0
        self._step_dur = 0.0

    # ------------------------------------------------------------------ requests in

    def _kv_need(self, req: BlockRequest) -> int:
        tokens = req.num_prompt_tokens + req.output_tokens
        return -(-tokens // self.block_size) * req.sequences

    def submit(self, req: BlockRequest) -> None:
        req.replica = self.index
        req.seen_in_system = self.num_outstanding
        tokens = req.num_prompt_tokens + req.output_tokens
        if tokens > self.max_model_len:
            req.status = RequestStatus.REJECTED
            req.reject_reason = f"prompt + output ({tokens:,} tokens) exceeds max_model_len ({self.max_model_len:,})"
            return
        if self._kv_need(req) > self.capacity:
            req.status = RequestStatus.REJECTED
            req.reject_reason = (
                f"its KV cache ({tokens:,} tokens) exceeds the replica's ({self.capacity * self.block_size:,} tokens)"
            )
            return
        self.waiting.append(req)
        self.num_outstanding += 1
        self.outstanding_tokens += tokens
        if not self._busy:
            self._busy = True
            self._target = self.env.call_later(0.0, self._wake)

    def cancel(self, req: BlockRequest, reason: str) -> None:
        """A deadline passed: a waiting request leaves now, a running one at the step's end
        (unless that step finishes it)."""
        if req in self.waiting:
            self.waiting.remove(req)
            self._forget(req)
            self.fail_request(req, reason)
        elif req in self.running:
            req.fail_reason = reason  # dropped when the step in flight ends

    def _forget(self, req: BlockRequest) -> None:
        self.num_outstanding -= 1
        self.outstanding_tokens -= req.num_prompt_tokens + req.output_tokens
        if req.kv_blocks:
            self.free += req.kv_blocks
            req.kv_blocks = 0
        if self.num_outstanding == 0 and self.on_idle is not None:
            self.on_idle()

    def fail(self) -> None:
        """The replica goes down now: the step in flight is lost, and so is every request's
        progress (the KV cache of its prompt and finished blocks); the pool retries them."""
        if not self.up:
            return
        self.up = False
        # at once, ahead of ordinary events now (as the LLM replica does)
        self.env.call_later(0.0, self._failed, urgent=True)

    def _failed(self, _timer: int) -> None:
        now = self.env.now
        self._target = -1  # the step in flight never ends
        if self._members:
            # the lost step's GPU time so far, shared by its rows
            total = sum(m[1] for m in self._members) or 1
            for req, n, _ in self._members:
                req.gpu_s += (now - self._step_start) * self.num_gpus * n / total
            self._members = []
        running, waiting = list(self.running), list(self.waiting)
        self.running, self.waiting = [], deque()
        for req in running + waiting:
            req.kv_blocks = 0
        self.free = self.capacity
        self.num_outstanding = 0
        self.outstanding_tokens = 0
        self._busy = False
        self.recorder.busy(self.index, now, 0.0, 0, 0, 0, 0)
        for req in [r for r in running if r.fail_reason]:
            running.remove(req)  # its deadline passed during the lost step
            self.fail_request(req, req.fail_reason)
        if self.on_lost is not None:
            self.on_lost(running, waiting)

    def recover(self) -> None:
        self.up = True
        if self.waiting and not self._busy:
            self._busy = True
            self._target = self.env.call_later(0.0, self._wake)

    # ------------------------------------------------------------------ the loop

    def _wake(self, timer: int) -> None:
        if timer != self._target:
            return
        now = self.env.now
        while self.waiting and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            need = self._kv_need(req)
            if need > self.free:
                break
            self.waiting.popleft()
            self.free -= need
            req.kv_blocks = need
            req.status = RequestStatus.RUNNING
            if req.first_scheduled_s < 0:
                req.first_scheduled_s = now
            self.running.append(req)
        if not self.running:
            self._busy = False
            return
        shape = StepShape()
        budget = self.max_num_batched_tokens
        refine = 0
        members = []
        # running generation first (like vLLM's decodes), then prompt chunks with what is left
        for req in self.running:
            if req.prefilled < req.num_prompt_tokens:
                continue
            if req.block < len(req.blocks):
                q = self._block_tokens(req)
                if q * req.sequences > budget and members:
                    continue  # waits for a step with room
                self._add_block(shape, req, q, req.num_prompt_tokens + req.generated_tokens, 0)
                budget -= q * req.sequences
                members.append((req, q * req.sequences, 1))
            else:
                refine += req.refine_tokens * req.sequences * req.refine_s_per_token
                members.append((req, req.refine_tokens * req.sequences, 2))
        for req in self.running:
            left = req.num_prompt_tokens - req.prefilled
            if left <= 0 or budget <= 0:
                continue
            room = budget // req.sequences
            if room <= 0 and members:
                continue
            n = min(left, max(room, 1))  # a step always makes progress, however small its budget
            q = self._block_tokens(req)
            q = q if n == left and (n + q) * req.sequences <= budget else 0
            # the prompt's last chunk runs the first block's first step in the same forward
            self._add_block(shape, req, q, req.prefilled, n)
            budget -= (n + q) * req.sequences
            members.append((req, (n + q) * req.sequences, 0 if not q else 3))
            req.prefilled += n
        dur = (self.cost.step_s(shape) if shape.num_seqs else 0.0) + refine
        self._step_start = now
        self._step_dur = dur
        self.recorder.busy(self.index, now, dur, len(self.running), len(self.waiting), self.capacity - self.free, 1)
        self._members = members
        self._target = self.env.call_later(dur, self._stepped)

    @staticmethod
    def _block_tokens(req: BlockRequest) -> int:
        """Tokens the request's next step computes: its block (and the masked tokens after it)."""
        if req.suffix:
            return sum(req.blocks[req.block :])
        return req.blocks[req.block]

    @staticmethod
    def _add_block(shape: StepShape, req: BlockRequest, q: int, ctx: int, prompt: int) -> None:
        """A forward over ``prompt`` new prompt tokens and a block of ``q`` at ``ctx`` cached,
        for each of the request's rows."""
        for _ in range(req.sequences):
            shape.add_prefill(prompt + q, ctx)
            if q and req.bidirectional:
                shape.prefill_attn_pairs += q * (q - 1) / 2  # the block's keys after each query
            if q > 1:
                shape.extra_logit_rows += q - 1  # logits for every position of the block

    def _stepped(self, timer: int) -> None:
        if timer != self._target:
            return
        now = self.env.now
        total = sum(m[1] for m in self._members) or 1
        per = self._step_dur * self.num_gpus / total  # the step's GPU time, shared by its rows
        for req, n, _ in self._members:
            req.gpu_s += per * n
        for req, _n, what in self._members:
            if what == 0:
                continue  # a prompt chunk
            if what == 2:
                req.refined += 1
                if req.refined >= req.refine_steps:
                    self._finish(req, now)
                continue
            req.step += 1
            if req.step >= req.steps[req.block]:
                req.step = 0
                req.block += 1
                if req.first_token_s < 0:
                    req.first_token_s = now
                if req.block >= len(req.blocks) and req.refined >= req.refine_steps:
                    self._finish(req, now)
        dropped = [r for r in self.running if r.fail_reason]
        for req in dropped:
            self.running.remove(req)
            self._forget(req)
            self.fail_request(req, req.fail_reason)
        self._members = []
        self._target = self.env.call_later(0.0, self._wake)

    def _finish(self, req: BlockRequest, now: float) -> None:
        self.running.remove(req)
        req.status = RequestStatus.FINISHED
        req.fail_reason = ""  # one that finishes in the step in flight is kept, as vLLM's aborts
        req.gpu_s += req.decode_s * self.num_gpus
        req.finish_s = now + req.decode_s
        self._forget(req)
        if req.on_done is not None:
            req.on_done(req)

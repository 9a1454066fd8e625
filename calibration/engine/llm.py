"""A real continuous-batching LLM serving loop, the ground truth the simulator is validated against.

It serves an open-loop workload with the random-weight Llama replica of ``calibration.models.llama``
on a real device and records what happened: per request arrival, first scheduling, first token,
finish; per step its wall-clock span and batch composition (the simulator's ``StepShape``
features, so a profile can predict each logged step). Calibration notes, section 5.2.

**The scheduler** is a compact re-implementation of the simulator's vLLM v1 mirror
(``sim/llm/scheduler.py`` with ``sim/llm/kv_cache.py``, prefix caching off), so that a validation
run differs from the simulator only in step costs. The simulator's ``Scheduler`` is not reused:
importing it imports ``sim.costs`` and with it ``sim.catalog`` (pydantic), and ``calibration``
must run on a bare GPU machine (torch, numpy, pandas, pyyaml). It also keeps its decode cohort in
aggregate, while an engine needs every request's rows. This one takes the simulator's
per-request path (its ``use_cohort = False`` reference, which its tests hold equal to the
cohort), in the same order of decisions:

1. RUNNING requests in running order, each up to its remaining tokens, cut by the token budget
   (``max_num_batched_tokens``); when KV blocks run out, the last running request is preempted
   (recompute: its blocks are freed and it goes back to the head of WAITING, to recompute prompt
   plus generated tokens) until the allocation fits or the request itself was the victim;
2. only if nobody was preempted, WAITING requests in order while the budget, ``max_num_seqs`` and
   free blocks allow (whole prompts only when chunked prefill is off);
3. after the step, a request whose computed tokens reach its prompt + output so far samples one
   token, and finishes after exactly ``output_tokens`` of them.

KV blocks are counted as the simulator counts them (a request holds ceil(computed tokens /
block_size) blocks, allocated when a step's tokens are scheduled); the model's KV tensors are
per-request contiguous, sized for the whole request when it is (re)admitted and freed when it
finishes or is preempted. ``schedule_only`` runs the scheduler without a model, for checking its
decisions against the simulator's.

**The loop** admits every request whose scheduled arrival has passed at each step boundary,
sleeps until the next arrival when nothing is left to run, and records arrivals from the schedule
(no coordinated omission). A step's span runs from ``schedule()`` to the host copy of the
sampled ids (which on CUDA waits for the device); its tokens are stamped at that copy.
"""

from __future__ import annotations

import enum
import gc
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

REQUEST_COLUMNS = [
    "request_id",
    "arrival_s",
    "prompt_tokens",
    "output_tokens",
    "first_scheduled_s",
    "first_token_s",
    "finish_s",
    "preemptions",
    "rejected",
    "ttft_s",
    "e2e_s",
    "tpot_s",
    "max_itl_s",
]
SHAPE_COLUMNS = [
    "num_seqs",
    "num_tokens",
    "num_decode",
    "decode_ctx_sum",
    "num_prefill_tokens",
    "prefill_ctx_sum",
    "prefill_attn_pairs",
    "num_prefill_seqs",
]
TIME_COLUMNS = ["schedule_s", "prepare_s", "launch_s", "sync_s", "device_s", "bucket"]
"""Host seconds of a step's parts (``ModelRunner.step``; schedule_s is the scheduler's), the
device's own time (CUDA events; NaN on a CPU), and the padded token rows it ran at (0: eager)."""
STEP_COLUMNS = ["start_s", "end_s", *SHAPE_COLUMNS, "kv_blocks_used", "num_preempted", *TIME_COLUMNS]


@dataclass(frozen=True)
class EngineConfig:
    """The engine's knobs, named as vLLM's (the simulator is given the same values)."""

    max_num_seqs: int = 16
    max_num_batched_tokens: int = 512
    """Token budget of one step."""
    enable_chunked_prefill: bool = True
    block_size: int = 16
    num_kv_blocks: int = 256
    """KV capacity in blocks (the simulator's ``num_gpu_blocks``)."""
    max_model_len: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size", "num_kv_blocks", "max_model_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            # as vLLM: every running request must be able to decode in one step
            raise ValueError(f"max_num_batched_tokens {self.max_num_batched_tokens} < max_num_seqs {self.max_num_seqs}")

    @property
    def capacity_tokens(self) -> int:
        return self.num_kv_blocks * self.block_size


@dataclass(frozen=True)
class WorkItem:
    """One request of a workload."""

    request_id: int
    arrival_s: float
    """Seconds after the run's start."""
    prompt_tokens: int
    output_tokens: int


class Status(enum.IntEnum):
    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    FINISHED = 3
    REJECTED = 4


@dataclass(slots=True, eq=False)
class EngineRequest:
    """A request as the scheduler and the loop see it (counters named as ``vllm/v1/request.py``)."""

    request_id: int
    arrival_s: float
    num_prompt_tokens: int
    max_tokens: int
    """Output tokens it generates (the workload fixes the length)."""
    token_ids: list[int] = field(default_factory=list)
    """Prompt ids then the sampled ids (empty when the scheduler runs without a model)."""

    status: Status = Status.WAITING
    num_output_tokens: int = 0
    num_tokens: int = 0
    """Prompt + output tokens so far."""
    num_computed_tokens: int = 0
    num_blocks: int = 0
    num_preemptions: int = 0
    reject_reason: str = ""

    first_scheduled_s: float = float("nan")
    first_token_s: float = float("nan")
    last_token_s: float = float("nan")
    finish_s: float = float("nan")
    max_itl_s: float = float("nan")

    def __post_init__(self) -> None:
        self.num_tokens = self.num_prompt_tokens + self.num_output_tokens


@dataclass(slots=True)
class BatchShape:
    """A step's batch composition: ``sim.costs.base.StepShape``'s fields and definitions (that
    class cannot be imported here), plus the count of prefill rows."""

    num_seqs: int = 0
    num_tokens: int = 0
    num_decode: int = 0
    decode_ctx_sum: int = 0
    """Sum over decodes of the tokens already in their KV cache."""
    num_prefill_tokens: int = 0
    prefill_ctx_sum: int = 0
    """Sum over prefill chunks of the cached tokens before the chunk."""
    prefill_attn_pairs: float = 0.0
    """Sum over chunks of p*k + p*(p+1)/2."""
    num_prefill_seqs: int = 0

    def add(self, num_new: int, num_cached: int, num_tokens: int) -> None:
        """Add a row of ``num_new`` tokens on top of ``num_cached`` for a request of ``num_tokens``
        so far. One new token that brings it level is a decode (as the simulator's ``_add``)."""
        self.num_seqs += 1
        self.num_tokens += num_new
        if num_new == 1 and num_cached == num_tokens - 1:
            self.num_decode += 1
            self.decode_ctx_sum += num_cached
        else:
            self.num_prefill_seqs += 1
            self.num_prefill_tokens += num_new
            self.prefill_ctx_sum += num_cached
            self.prefill_attn_pairs += num_new * num_cached + num_new * (num_new + 1) / 2


@dataclass(slots=True)
class SchedulerOutput:
    """What one step computes: rows in running order."""

    requests: list[EngineRequest] = field(default_factory=list)
    num_scheduled_tokens: list[int] = field(default_factory=list)
    num_cached_tokens: list[int] = field(default_factory=list)
    """Each row's tokens already in the KV cache before this step (its SeqSlice.num_cached)."""
    newly_scheduled: list[EngineRequest] = field(default_factory=list)
    """Scheduled for the first time (their queueing delay ends now)."""
    preempted: list[EngineRequest] = field(default_factory=list)
    shape: BatchShape = field(default_factory=BatchShape)
    kv_blocks_used: int = 0
    """Blocks held during the step (after this step's allocations and preemptions)."""


def reject_reason(req: EngineRequest, cfg: EngineConfig) -> str:
    """Why a request can never be served ('' if it can): the simulator's ``reject_reason``."""
    total = req.num_prompt_tokens + req.max_tokens
    if total > cfg.max_model_len:
        return f"prompt+output {total} tokens > max_model_len {cfg.max_model_len}"
    if total > cfg.capacity_tokens:
        return f"prompt+output {total} tokens > KV cache capacity {cfg.capacity_tokens} tokens"
    if not cfg.enable_chunked_prefill and total > cfg.max_num_batched_tokens:
        return (
            f"prompt+output {total} tokens > max_num_batched_tokens {cfg.max_num_batched_tokens} "
            "with chunked prefill disabled"
        )
    return ""


class Scheduler:
    """vLLM v1-style continuous batching over a counted pool of KV blocks (no time, no torch)."""

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.num_free_blocks = cfg.num_kv_blocks
        self.waiting: deque[EngineRequest] = deque()
        self.running: list[EngineRequest] = []

    @property
    def num_used_blocks(self) -> int:
        return self.cfg.num_kv_blocks - self.num_free_blocks

    def add_request(self, req: EngineRequest) -> bool:
        """Queue a request; False (and the request marked REJECTED) if it can never fit."""
        reason = reject_reason(req, self.cfg)
        if reason:
            req.status = Status.REJECTED
            req.reject_reason = reason
            return False
        self.waiting.append(req)
        return True

    def has_unfinished_requests(self) -> bool:
        return bool(self.running) or bool(self.waiting)

    def _allocate(self, req: EngineRequest, num_new: int) -> bool:
        """Blocks for ``num_new`` more tokens; False, changing nothing, if the pool is short."""
        bs = self.cfg.block_size
        need = -(-(req.num_computed_tokens + num_new) // bs) - req.num_blocks
        if need > self.num_free_blocks:
            return False
        if need > 0:
            self.num_free_blocks -= need
            req.num_blocks += need
        return True

    def _free(self, req: EngineRequest) -> None:
        self.num_free_blocks += req.num_blocks
        req.num_blocks = 0

    def _preempt(self, req: EngineRequest) -> None:
        self._free(req)
        req.num_computed_tokens = 0
        req.status = Status.PREEMPTED
        req.num_preemptions += 1
        self.waiting.appendleft(req)

    @staticmethod
    def _add(out: SchedulerOutput, req: EngineRequest, n: int) -> None:
        computed = req.num_computed_tokens
        out.shape.add(n, computed, req.num_tokens)
        out.requests.append(req)
        out.num_scheduled_tokens.append(n)
        out.num_cached_tokens.append(computed)
        req.num_computed_tokens = computed + n

    def schedule(self) -> SchedulerOutput:
        cfg = self.cfg
        out = SchedulerOutput()
        budget = cfg.max_num_batched_tokens
        running = self.running

        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            n = min(req.num_tokens - req.num_computed_tokens, budget)
            scheduled = True
            while not self._allocate(req, n):
                victim = running.pop()  # FCFS: the most recently admitted goes
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is req:
                    scheduled = False
                    break
            if not scheduled:
                break
            self._add(out, req, n)
            budget -= n
            i += 1

        if not out.preempted:
            waiting = self.waiting
            while waiting and budget > 0 and len(running) < cfg.max_num_seqs:
                req = waiting[0]
                n = req.num_tokens - req.num_computed_tokens
                if not cfg.enable_chunked_prefill and n > budget:
                    break
                n = min(n, budget)
                if not self._allocate(req, n):
                    break
                waiting.popleft()
                if req.status == Status.WAITING:
                    out.newly_scheduled.append(req)
                req.status = Status.RUNNING
                running.append(req)
                self._add(out, req, n)
                budget -= n

        out.kv_blocks_used = self.num_used_blocks
        return out

    def update_from_output(
        self, out: SchedulerOutput, sampled_token_ids: list[int] | None = None
    ) -> tuple[list[EngineRequest], list[EngineRequest]]:
        """Apply a finished step: rows level with their tokens take one more (the sampled id, in
        row order, when given). Returns (requests that got a token, requests that finished)."""
        emitted: list[EngineRequest] = []
        finished: list[EngineRequest] = []
        for row, req in enumerate(out.requests):
            if req.status != Status.RUNNING or req.num_computed_tokens < req.num_tokens:
                continue
            req.num_output_tokens += 1
            req.num_tokens += 1
            if sampled_token_ids is not None:
                req.token_ids.append(sampled_token_ids[row])
            emitted.append(req)
            if req.num_output_tokens >= req.max_tokens:
                req.status = Status.FINISHED
                self._free(req)
                finished.append(req)
        if finished:
            self.running = [r for r in self.running if r.status == Status.RUNNING]
        return emitted, finished


def _requests(workload: Iterable[WorkItem]) -> list[EngineRequest]:
    """Requests in arrival order (ties in workload order)."""
    items = sorted(workload, key=lambda w: w.arrival_s)
    ids = [w.request_id for w in items]
    if len(set(ids)) != len(ids):
        raise ValueError("request ids in a workload must be unique")
    for w in items:
        if w.prompt_tokens < 1 or w.output_tokens < 1:
            raise ValueError(f"request {w.request_id}: prompt and output need at least one token each")
    return [EngineRequest(w.request_id, float(w.arrival_s), w.prompt_tokens, w.output_tokens) for w in items]


def schedule_only(workload: Iterable[WorkItem], cfg: EngineConfig) -> list[SchedulerOutput]:
    """The scheduler's steps for ``workload`` and no model: the decisions alone, for checking
    against the simulator. Every request has arrived before the first step (in arrival order)."""
    sched = Scheduler(cfg)
    for req in _requests(workload):
        sched.add_request(req)
    steps = []
    while sched.has_unfinished_requests():
        out = sched.schedule()
        if not out.requests:
            raise RuntimeError("scheduler made no progress with requests pending")
        sched.update_from_output(out)
        steps.append(out)
    return steps


# ---------------------------------------------------------------------- the serving loop


def _warm_up(runner, cfg: EngineConfig, max_len: int) -> None:
    """A few untimed steps of a long prefill, a full decode batch and a mixed batch, so the timed
    run does not pay for first-call allocations and kernel selection."""
    import torch

    from calibration.models.llama import SeqSlice

    cache, vocab = runner.cache, runner.net.cfg.vocab_size
    rows = min(cfg.max_num_seqs, cache.num_slots)
    ctx = max(1, min(64, max_len - 1))
    chunk = max(1, min(cfg.max_num_batched_tokens - (rows - 1), max_len - ctx))
    shapes = [
        [SeqSlice(-1, min(cfg.max_num_batched_tokens, max_len), 0)],
        [SeqSlice(-1 - i, 1, ctx) for i in range(rows)],
        [SeqSlice(-1 - i, 1, ctx) for i in range(rows - 1)] + [SeqSlice(-1 - rows, chunk, ctx)],
    ]
    for seqs in shapes:
        for s in seqs:
            cache.allocate(s.seq_id, s.num_cached + s.num_new)
            cache.fill_random(s.seq_id, s.num_cached)
        n = sum(s.num_new for s in seqs)
        for _ in range(2):
            runner.step(torch.randint(0, vocab, (n,)).tolist(), seqs)
        for s in seqs:
            cache.free(s.seq_id)


@dataclass
class LoadedReplica:
    """A random-weight model and its (empty) KV cache, built and warmed up once so that several
    runs can share them: a serving engine loads its model once, and building and warming
    llama-tiny takes about 3 s on a CPU core, which a validation session would otherwise pay
    before each of its runs and bursts."""

    model: str
    cfg: EngineConfig
    device: str
    dtype: Any
    net: Any
    cache: Any
    runner: Any = None
    """The ``ModelRunner`` steps go through (piecewise CUDA graphs and varlen attention on CUDA)."""
    check: dict | None = None
    """What ``ModelRunner.check`` compared on the device, and what it turned off."""


def load_replica(
    model: str,
    cfg: EngineConfig,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    threads: int = 1,
    seed: int = 0,
    model_cfg=None,
    attention: str = "auto",
    cuda_graphs: bool | None = None,
) -> LoadedReplica:
    """Build catalog model ``model`` (or ``model_cfg``) with random weights from ``seed`` on
    ``device``, with its KV cache (one slot of ``max_model_len`` tokens per sequence), check the
    serving paths against the reference, capture CUDA graphs (on CUDA) and run the untimed
    warm-up steps of ``cfg``'s shapes."""
    import torch

    from calibration.configs import llm_config
    from calibration.harness import configure_cpu
    from calibration.models.llama import KVCache, LlamaModel
    from calibration.models.runner import ModelRunner

    torch_dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    if not device.startswith("cuda"):
        configure_cpu(threads)
    mcfg = model_cfg if model_cfg is not None else llm_config(model)
    if cfg.max_model_len > mcfg.max_position_embeddings:
        raise ValueError(
            f"max_model_len {cfg.max_model_len} > {mcfg.name}'s max_position_embeddings {mcfg.max_position_embeddings}"
        )
    torch.manual_seed(seed)
    net = LlamaModel(mcfg, dtype=torch_dtype, device=device).eval()
    cache = KVCache(mcfg, torch_dtype, device, num_slots=max(cfg.max_num_seqs, 4), max_len=max(cfg.max_model_len, 64))
    runner = ModelRunner(
        net, cache, attention=attention, cuda_graphs=cuda_graphs, max_tokens=cfg.max_num_batched_tokens
    )
    runner.capture()
    check = runner.check()
    _warm_up(runner, cfg, cfg.max_model_len)
    return LoadedReplica(model, cfg, device, torch_dtype, net, cache, runner, check)


def run_llm_engine(
    model: str,
    workload: list[WorkItem],
    cfg: EngineConfig,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    threads: int = 1,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    model_cfg=None,
    replica: LoadedReplica | None = None,
    stop_after_s: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Serve ``workload`` open-loop with the random-weight replica of catalog model ``model`` (or
    ``model_cfg``, a ``LlamaConfig``, when given) on ``device``. Returns (requests, steps): one
    row per request (``REQUEST_COLUMNS``, times in seconds from the run's start, NaN where a
    request never got there) and one per step (``STEP_COLUMNS``).

    With a ``replica`` (``load_replica``) the run serves on it instead of building and warming
    up its own; it must be of the same model, knobs, device and dtype, and ``seed`` then draws the prompts'
    token ids alone. Every sequence the run put in its cache is freed when it ends, however it
    ends, so the next run finds the cache empty.

    ``stop_after_s`` ends the run that many seconds after its start, finished or not (a budgeted
    run on a borrowed machine): requests not finished by then keep NaN times."""
    import torch

    from calibration.models.llama import SeqSlice

    if replica is None:
        replica = load_replica(model, cfg, device=device, dtype=dtype, threads=threads, seed=seed, model_cfg=model_cfg)
    else:
        want = (model, cfg, device, getattr(torch, dtype, None) if isinstance(dtype, str) else dtype)
        if (replica.model, replica.cfg, replica.device, replica.dtype) != want:
            raise ValueError(
                f"replica of {replica.model} ({replica.dtype}) on {replica.device} with {replica.cfg} "
                f"cannot serve {model} ({dtype}) on {device} with {cfg}"
            )
    net, cache, runner = replica.net, replica.cache, replica.runner
    mcfg = net.cfg
    if cache.bytes_allocated:
        raise ValueError("the replica's KV cache still holds sequences of another run")
    reqs = _requests(workload)
    rng = np.random.default_rng(seed)
    for req in reqs:
        req.token_ids = rng.integers(0, mcfg.vocab_size, req.num_prompt_tokens).tolist()

    step_rows: list[tuple] = []
    try:
        sched = Scheduler(cfg)
        total, done, next_i = len(reqs), 0, 0
        gc.collect()
        gc.disable()  # a collection pause would land on whichever step is running
        t0 = time.perf_counter()
        stop = float("inf") if stop_after_s is None else stop_after_s
        while done < total:
            now = time.perf_counter() - t0
            if now > stop:
                break
            while next_i < total and reqs[next_i].arrival_s <= now:
                if not sched.add_request(reqs[next_i]):
                    done += 1
                    if progress is not None:
                        progress(done, total)
                next_i += 1
            if not sched.has_unfinished_requests():
                if next_i < total:
                    time.sleep(max(0.0, min(stop, reqs[next_i].arrival_s) - (time.perf_counter() - t0)))
                continue

            start = time.perf_counter() - t0
            out = sched.schedule()
            scheduled = time.perf_counter() - t0
            if not out.requests:
                raise RuntimeError("scheduler made no progress with requests pending")
            for req in out.preempted:
                if cache.has(req.request_id):
                    cache.free(req.request_id)
            for req in out.newly_scheduled:
                req.first_scheduled_s = start
            ids: list[int] = []
            seqs: list[SeqSlice] = []
            for req, n, cached in zip(out.requests, out.num_scheduled_tokens, out.num_cached_tokens):
                if not cache.has(req.request_id):
                    cache.allocate(req.request_id, req.num_prompt_tokens + req.max_tokens)
                ids.extend(req.token_ids[cached : cached + n])
                seqs.append(SeqSlice(req.request_id, n, cached))
            sampled, times = runner.step(ids, seqs)  # ends with the host sync
            end = time.perf_counter() - t0

            emitted, finished = sched.update_from_output(out, sampled)
            for req in emitted:
                if req.num_output_tokens == 1:
                    req.first_token_s = end
                else:
                    gap = end - req.last_token_s
                    if not gap <= req.max_itl_s:  # NaN before the second token
                        req.max_itl_s = gap
                req.last_token_s = end
            for req in finished:
                req.finish_s = end
                cache.free(req.request_id)
                done += 1
                if progress is not None:
                    progress(done, total)
            step_rows.append(
                (start, end, *_shape_row(out.shape), out.kv_blocks_used, len(out.preempted), scheduled - start,
                 times.prepare_s, times.launch_s, times.sync_s, times.device_s, times.bucket)
            )  # fmt: skip
    finally:
        gc.enable()
        cache.clear()  # this run's sequences, however it ended
    return _request_frame(reqs), pd.DataFrame(step_rows, columns=STEP_COLUMNS)


def _shape_row(s: BatchShape) -> tuple:
    return (
        s.num_seqs,
        s.num_tokens,
        s.num_decode,
        s.decode_ctx_sum,
        s.num_prefill_tokens,
        s.prefill_ctx_sum,
        s.prefill_attn_pairs,
        s.num_prefill_seqs,
    )


def _request_frame(reqs: list[EngineRequest]) -> pd.DataFrame:
    reqs = sorted(reqs, key=lambda r: r.request_id)
    df = pd.DataFrame(
        {
            "request_id": [r.request_id for r in reqs],
            "arrival_s": [r.arrival_s for r in reqs],
            "prompt_tokens": [r.num_prompt_tokens for r in reqs],
            "output_tokens": [r.max_tokens for r in reqs],
            "first_scheduled_s": [r.first_scheduled_s for r in reqs],
            "first_token_s": [r.first_token_s for r in reqs],
            "finish_s": [r.finish_s for r in reqs],
            "preemptions": [r.num_preemptions for r in reqs],
            "rejected": [r.status == Status.REJECTED for r in reqs],
            "max_itl_s": [r.max_itl_s for r in reqs],
        },
        columns=[c for c in REQUEST_COLUMNS if c not in ("ttft_s", "e2e_s", "tpot_s")],
    )
    df = df.astype({"request_id": "int64", "prompt_tokens": "int64", "output_tokens": "int64", "preemptions": "int64"})
    df["rejected"] = df["rejected"].astype(bool)
    df["ttft_s"] = df["first_token_s"] - df["arrival_s"]
    df["e2e_s"] = df["finish_s"] - df["arrival_s"]
    # as vLLM's benchmark: (E2E - TTFT) / (output tokens - 1)
    df["tpot_s"] = (df["finish_s"] - df["first_token_s"]) / (df["output_tokens"] - 1).where(df["output_tokens"] > 1)
    return df[REQUEST_COLUMNS]

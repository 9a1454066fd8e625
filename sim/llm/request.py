"""A text request as the scheduler and KV manager see it (mirrors vllm/v1/request.py).

The counters follow vLLM: ``num_computed_tokens`` catches up with ``num_tokens`` (prompt plus
output so far); a step that brings it level samples one new token. Timing fields are written
by the replica engine and read by the metrics recorder; the scheduler never reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.status import RequestStatus


@dataclass(slots=True, eq=False)
class Request:
    request_id: int
    class_id: int
    arrival_s: float
    num_prompt_tokens: int
    max_tokens: int
    """Output tokens this request will generate (its length is known to the simulator)."""
    block_hashes: tuple | None = None
    """Content keys of the prompt's full KV blocks, for prefix caching (None: no sharing)."""

    # -- scheduler state
    status: RequestStatus = RequestStatus.WAITING
    num_output_tokens: int = 0
    num_tokens: int = 0
    """Prompt + output tokens so far (kept in step with num_output_tokens)."""
    num_computed_tokens: int = 0
    num_blocks: int = 0
    """KV blocks held."""
    num_hashed_blocks: int = 0
    """Of those, the leading prompt blocks registered under their hash."""
    num_preemptions: int = 0
    reserved_blocks: int = 0
    """KV blocks reserved for its whole prompt + output while running (guaranteed_no_evict)."""
    num_retries: int = 0
    """Times the engine resubmitted it after an abort or a drain (reset_for_retry keeps it)."""
    num_cached_tokens: int = -1
    """Prompt tokens served from the prefix cache at first scheduling (-1: not yet)."""
    num_external_tokens: int = 0
    """Prompt tokens whose KV cache arrives from a prefill replica instead of being computed
    here (prefill/decode disaggregation); 0 once it has arrived, or for a local prefill."""
    hold_kv: bool = False
    """A prefill leg: keep its KV blocks after it finishes, until the decode side has read them
    (``Scheduler.release``)."""
    # Decode cohort (scheduler-owned): while a request is a cohort member its counters above
    # lag by (scheduler clock - cohort_mark) steps and are brought up to date on demand.
    cohort_mark: int = 0
    cohort_base: int = 0
    cohort_finish_clock: int = 0

    # -- timing, written by the engine
    replica: int = -1
    seen_in_system: int = -1
    """Requests already at its replica when it arrived (by PASTA, a time-average sample)."""
    first_scheduled_s: float = -1.0
    first_token_s: float = -1.0
    last_token_s: float = -1.0
    finish_s: float = -1.0
    max_itl_s: float = 0.0
    gpu_s: float = 0.0
    prefill_gpu_s: float = 0.0
    """Of ``gpu_s``, the share of steps in which it computed more than one token: its prompt
    (and any recompute after a preemption); the rest is decode."""
    # Engine-owned marks for cohort members' lazily accumulated metrics.
    gpu_mark: float = 0.0
    itl_mark: int = 0
    cohort_marked: bool = False
    reject_reason: str = ""
    fail_reason: str = ""
    """Why it was given up on (retries spent after replica failures, or its timeout)."""
    on_done: object = None
    """Called with the request when it finishes, is rejected or fails (pipeline stages)."""
    parent: object = None
    """The pipeline request this is a stage of (None: a request of its own)."""
    stage: int = -1
    kv_source: object = None
    """Disaggregated serving: the prefill leg that computes this request's prompt elsewhere."""
    num_swapped_tokens: int = 0
    """Tokens of KV this request moved over PCIe by swap preemption (out and back in)."""
    num_cpu_hit_tokens: int = 0
    """Prompt tokens whose KV it loaded from the CPU tier of the prefix cache."""
    spec_alpha: float = -1.0
    """Speculative decoding: this request's per-token acceptance rate (drawn at its first
    proposal; -1: not yet)."""
    kv_transfer_s: float = -1.0
    """Disaggregated serving: from the decode replica admitting it (KV blocks allocated) to its
    prompt's KV cache having arrived (-1: none)."""

    def __post_init__(self) -> None:
        self.num_tokens = self.num_prompt_tokens + self.num_output_tokens

    def reset_for_retry(self) -> None:
        """Back to the scheduler state of a fresh arrival, after ``abort()`` or ``drain()``.

        Its output is lost and will be generated again (the KV cache it had is gone).
        Accumulated metrics stay (``gpu_s``, ``num_preemptions``, ``num_retries``), and so do
        the timing fields and the engine's marks: the engine decides what a retry means to them.
        """
        if self.num_blocks:
            raise RuntimeError(f"request {self.request_id} still holds {self.num_blocks} KV blocks")
        self.status = RequestStatus.WAITING
        self.num_output_tokens = 0
        self.num_tokens = self.num_prompt_tokens
        self.num_computed_tokens = 0
        self.num_hashed_blocks = 0
        self.num_cached_tokens = -1
        self.num_external_tokens = 0  # a retry prefills locally (vLLM's recompute on a lost load)
        self.cohort_mark = 0
        self.cohort_base = 0
        self.cohort_finish_clock = 0

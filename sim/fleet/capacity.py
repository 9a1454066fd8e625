"""What an LLM pool's replica can serve at most: its cost per token at the largest decode batch
its KV cache and ``max_num_seqs`` allow.

The planner uses it to bound how many replicas a load needs (no fleet smaller than the load's
work at full batches can keep up), and pricing to define an LLM pool's utilisation: the served
load's work at full batches over the GPU time billed, so that a break-even utilisation reads as
"the share of its capacity a pool must sell". A continuously batched GPU is busy whenever any
request is in flight, so its busy fraction says little about how much more it could serve.

The full batch holds ``max_num_seqs`` sequences or as many mean-length requests (prompt + output
tokens) as the KV cache holds, whichever is fewer; its decode step reads a context of the mean
prompt plus half the mean output per sequence (a request's context grows from its prompt to
prompt + output while it decodes). A prompt token costs the marginal time of a prefill chunk
riding along in that step (chunked prefill fills the step's token budget).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.config import PoolConfig
from sim.costs.base import StepShape


@dataclass(frozen=True)
class TextCapacity:
    """Replica-seconds per token at the full batch (multiply by the pool's GPUs per replica for
    GPU-seconds)."""

    batch: int
    """Sequences in the full decode batch."""
    prefill_token_s: float
    """Per prompt token computed (not served from the prefix cache)."""
    decode_step_s: float
    """One decode step of the full batch."""

    @property
    def decode_token_s(self) -> float:
        """Per output token."""
        return self.decode_step_s / self.batch

    def request_s(self, prompt_tokens: float, output_tokens: float) -> float:
        """Replica-seconds a request with these computed prompt and output tokens takes at the
        full batch."""
        return prompt_tokens * self.prefill_token_s + output_tokens * self.decode_token_s


def text_capacity(pool: PoolConfig, cost, mean_tokens: float, mean_context: float, share=None) -> TextCapacity:
    """The pool's ``TextCapacity`` for requests of ``mean_tokens`` prompt + output tokens whose
    decode reads ``mean_context`` tokens on average; ``cost`` is the pool's step cost model
    (``share``: its side of GPUs it shares with another pool, sim.fleet.sharing)."""
    from sim.fleet.pools import pool_kv_budget, scheduler_config

    e = scheduler_config(pool)  # the replica's limits (data-parallel attention groups together)
    kv_tokens = pool_kv_budget(pool, share).capacity_tokens
    batch = int(max(1, min(e.max_num_seqs, kv_tokens // max(1.0, mean_tokens))))
    dec = StepShape(num_seqs=batch, num_tokens=batch, num_decode=batch, decode_ctx_sum=int(batch * mean_context))
    t_dec = cost.step_s(dec)
    chunk = max(1, e.max_num_batched_tokens - batch)
    mixed = StepShape(batch, batch, batch, int(batch * mean_context))
    mixed.add_prefill(chunk, 0)
    return TextCapacity(batch, max(0.0, cost.step_s(mixed) - t_dec) / chunk, t_dec)

"""Routers: pick the replica of a pool that takes an arriving request.

A router sees only each replica's read-only load view (``num_outstanding``,
``outstanding_tokens``; the cache-aware router also its prefix cache, blocks in use and
prompt tokens waiting for their prefill); it never changes replica state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Router(Protocol):
    def select(self, replicas: Sequence, req=None) -> int: ...


class RoundRobin:
    def __init__(self) -> None:
        self._next = 0

    def select(self, replicas: Sequence, req=None) -> int:
        i = self._next % len(replicas)
        self._next = i + 1
        return i


class _LeastLoaded:
    """Pick the replica with the smallest ``load_attr``; ties go round robin so that equal
    replicas share the load."""

    load_attr = ""

    def __init__(self) -> None:
        self._next = 0

    def select(self, replicas: Sequence, req=None) -> int:
        n = len(replicas)
        start = self._next
        attr = self.load_attr
        best, best_load = start % n, None
        for k in range(n):
            i = (start + k) % n
            load = getattr(replicas[i], attr)
            if best_load is None or load < best_load:
                best, best_load = i, load
        self._next = best + 1
        return best


class LeastOutstanding(_LeastLoaded):
    """Fewest unfinished requests."""

    load_attr = "num_outstanding"


class JoinShortestQueueTokens(_LeastLoaded):
    """Fewest tokens still to compute (prefill and decode)."""

    load_attr = "outstanding_tokens"


class CacheAware:
    """NVIDIA Dynamo's KV-aware router (its default worker selector at temperature 0): each
    replica's cost, in KV blocks, is

        w × (prompt tokens routed there still waiting for their prefill
             + this prompt's tokens not in its prefix cache) / block_size
        + blocks in use there + this prompt's blocks not already in use there

    and the cheapest replica takes the request (ties round robin). The first term is the
    prefill work the request would wait behind and add, the second the memory (decode) load;
    ``w`` is Dynamo's ``overlap_score_weight`` (default 1). Dynamo reads each engine's cache
    from its KV events; here the router reads the replica's cache itself, with the same
    result. Requests without prefix keys (prefix caching off) see no overlap: the router then
    balances prefill work and blocks in use. Like ``jsq_tokens`` it reads a replica as last
    committed: a closed-form decode span commits its blocks (and the evictions they cause) at
    its end, so routing during a span sees the state at the span's start, and can differ from
    simulating step by step (real routers read KV events and metrics that lag too)."""

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight
        self._next = 0

    def select(self, replicas: Sequence, req=None) -> int:
        n = len(replicas)
        start = self._next
        w = self.weight
        best, best_cost = start % n, None
        for k in range(n):
            i = (start + k) % n
            rep = replicas[i]
            kv = rep.kv
            bs = kv.block_size
            cached, active = kv.prefix_overlap(req)
            prompt = 0 if req.kv_source is not None else req.num_prompt_tokens
            new_tokens = max(0, prompt - cached * bs)
            blocks = -(-req.num_prompt_tokens // bs)
            cost = w * (rep.pending_prefill_tokens + new_tokens) / bs + kv.pool.num_used + blocks - active
            if best_cost is None or cost < best_cost:
                best, best_cost = i, cost
        self._next = best + 1
        return best


ROUTERS = {
    "round_robin": RoundRobin,
    "least_outstanding": LeastOutstanding,
    "jsq_tokens": JoinShortestQueueTokens,
    "cache_aware": CacheAware,
}


def make_router(name: str, overlap_weight: float = 1.0) -> Router:
    if name == "cache_aware":
        return CacheAware(overlap_weight)
    return ROUTERS[name]()

"""Routers: pick the replica of a pool that takes an arriving request.

A router sees only each replica's read-only load view (``num_outstanding``,
``outstanding_tokens``); it never changes replica state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Router(Protocol):
    def select(self, replicas: Sequence) -> int: ...


class RoundRobin:
    def __init__(self) -> None:
        self._next = 0

    def select(self, replicas: Sequence) -> int:
        i = self._next % len(replicas)
        self._next = i + 1
        return i


class _LeastLoaded:
    """Pick the replica with the smallest ``load_attr``; ties go round robin so that equal
    replicas share the load."""

    load_attr = ""

    def __init__(self) -> None:
        self._next = 0

    def select(self, replicas: Sequence) -> int:
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


ROUTERS = {
    "round_robin": RoundRobin,
    "least_outstanding": LeastOutstanding,
    "jsq_tokens": JoinShortestQueueTokens,
}


def make_router(name: str) -> Router:
    return ROUTERS[name]()

"""Where a request stands, for both shapes: an LLM request and an image or video request go
through the same states (waiting, running, preempted, then one final state)."""

from __future__ import annotations

import enum


class RequestStatus(enum.IntEnum):
    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    # Anything after PREEMPTED is final (as in vLLM).
    FINISHED = 3
    REJECTED = 4
    ABORTED = 5
    """Taken out unfinished by ``abort()`` (a timeout) or ``drain()`` (a replica failure)."""

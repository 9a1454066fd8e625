"""Bare timers on SimPy's event queue, and a run loop that calls them directly.

The LLM engine and the arrival feeds are chains of callbacks: each wake-up calls one method,
which does the work and arms the next wake-up. A SimPy ``Timeout`` is more than that needs (an
``Event`` object with a callback list, a value and an environment reference, allocated per
wake-up). A bare timer is a bound method put on SimPy's own queue under the same key a
``Timeout`` armed at that moment would get (time, priority, insertion counter), so events are
processed in exactly the same order and replacing one with the other changes no result. When
it comes up the method is called with that counter value (the timer's id): an owner that
re-armed meanwhile compares it with the id it now waits on and ignores a stale one.

``Environment.run`` is SimPy's loop with ``step`` inlined plus that direct call. It keeps every
documented behaviour of SimPy's: ``until`` as a time or an event, a failed event that nobody
defused raising, and an event whose callbacks stopped the run resuming where it stopped. Why
not SimPy's loop: per event it costs a method call, a ``try`` and an ``Event`` allocation that
together made up about a tenth of a simulated LLM request's cost.
"""

from __future__ import annotations

from heapq import heappop, heappush
from types import MethodType

import simpy
from simpy.core import StopSimulation
from simpy.events import NORMAL, URGENT, Event

__all__ = ["NORMAL", "URGENT", "Environment"]


class Environment(simpy.Environment):
    """``simpy.Environment`` with bare timers (``call_later``) and a tight ``run`` loop."""

    def call_later(self, delay: float, method: MethodType, urgent: bool = False) -> int:
        """Arm ``method(timer_id)`` to run ``delay`` seconds from now, where and when
        ``env.timeout(delay)`` would fire (ahead of ordinary events at that time when
        ``urgent``). Returns the timer's id. ``method`` must be a bound method."""
        if method.__class__ is not MethodType:
            raise TypeError(f"call_later needs a bound method, got {type(method).__name__}")
        eid = next(self._eid)
        heappush(self._queue, (self._now + delay, URGENT if urgent else NORMAL, eid, method))
        return eid

    def step(self) -> None:
        queue = self._queue
        if queue and queue[0][3].__class__ is MethodType:
            self._now, _, eid, method = heappop(queue)
            method(eid)
        else:
            super().step()

    def run(self, until=None):
        if until is not None:
            if not isinstance(until, Event):
                at = until if isinstance(until, int) else float(until)
                if at <= self._now:
                    raise ValueError(f"until ({at}) must be greater than the current simulation time")
                until = Event(self)
                until._ok = True
                until._value = None
                self.schedule(until, URGENT, at - self._now)
            elif until.callbacks is None:
                return until.value
            until.callbacks.append(StopSimulation.callback)
        queue = self._queue
        pop = heappop
        bare = MethodType
        try:
            while queue:
                self._now, _, eid, event = pop(queue)
                if event.__class__ is bare:
                    event(eid)
                    continue
                callbacks, event.callbacks = event.callbacks, None
                try:
                    for callback in callbacks:
                        callback(event)
                except StopSimulation:
                    # Resume the rest of this event's callbacks on the next run (as SimPy does).
                    event.callbacks = callbacks[callbacks.index(callback) + 1 :]
                    self.schedule(event, -1)
                    raise
                if not event._ok and not hasattr(event, "_defused"):
                    exc = type(event._value)(*event._value.args)
                    exc.__cause__ = event._value
                    raise exc
        except StopSimulation as exc:
            return exc.args[0]
        if until is not None:
            raise RuntimeError(f'No scheduled events left but "until" event was not triggered: {until}')
        return None

"""The bare-timer environment keeps SimPy's event order and ``run`` semantics."""

from __future__ import annotations

import pytest
import simpy

from sim.fleet.timers import Environment


class Log:
    def __init__(self, env, log, name):
        self.env, self.log, self.name = env, log, name

    def fire(self, timer_id: int) -> None:
        self.log.append((self.env.now, self.name, timer_id))


def _schedule_mixed(env, log, bare: bool):
    """Timers and events at equal and different times, armed in a fixed order."""
    for i, delay in enumerate([1.0, 0.5, 1.0, 0.0, 2.0, 1.0]):
        name = f"t{i}"
        if bare:
            env.call_later(delay, Log(env, log, name).fire)
        else:
            env.timeout(delay).callbacks.append(lambda _e, n=name: log.append((env.now, n)))
    env.timeout(1.0).callbacks.append(lambda _e: log.append((env.now, "event")))


def test_bare_timers_fire_in_the_order_timeouts_would():
    bare_env, plain_env = Environment(), simpy.Environment()
    bare, plain = [], []
    _schedule_mixed(bare_env, bare, True)
    _schedule_mixed(plain_env, plain, False)
    bare_env.run()
    plain_env.run()
    assert [(t, n) for t, n, *_ in bare] == plain
    assert bare_env.now == plain_env.now == 2.0


def test_urgent_timer_runs_before_ordinary_events_at_the_same_time():
    env, log = Environment(), []
    env.timeout(1.0).callbacks.append(lambda _e: log.append("timeout"))
    env.timeout(1.0).callbacks.append(lambda _e: env.call_later(0.0, Log(env, log, "urgent").fire, urgent=True))
    env.timeout(1.0).callbacks.append(lambda _e: log.append("later"))
    env.run()
    assert [x if isinstance(x, str) else x[1] for x in log] == ["timeout", "urgent", "later"]


def test_timer_receives_its_own_id():
    env, log = Environment(), []
    first = env.call_later(1.0, Log(env, log, "a").fire)
    second = env.call_later(2.0, Log(env, log, "b").fire)
    env.run()
    assert [(n, i) for _, n, i in log] == [("a", first), ("b", second)]


def test_run_until_a_time_stops_there_and_resumes():
    env, log = Environment(), []
    for d in (1.0, 2.0, 3.0):
        env.call_later(d, Log(env, log, str(d)).fire)
    env.run(until=2.5)
    assert env.now == 2.5 and [n for _, n, _ in log] == ["1.0", "2.0"]
    env.run()
    assert [n for _, n, _ in log] == ["1.0", "2.0", "3.0"]
    with pytest.raises(ValueError):
        env.run(until=1.0)


def test_run_until_an_event_returns_its_value_and_processes():
    env = Environment()

    def proc():
        yield env.timeout(1.5)
        return "done"

    p = env.process(proc())
    assert env.run(until=p) == "done"
    assert env.now == 1.5
    assert env.run(until=p) == "done"  # already processed


def test_run_until_an_event_that_never_comes_raises():
    env = Environment()
    with pytest.raises(RuntimeError, match="No scheduled events left"):
        env.run(until=env.event())


def test_a_failed_event_nobody_handles_raises():
    env = Environment()
    env.event().fail(KeyError("lost"))
    with pytest.raises(KeyError):
        env.run()


def test_step_processes_bare_timers_and_events():
    env, log = Environment(), []
    env.call_later(1.0, Log(env, log, "bare").fire)
    env.timeout(2.0).callbacks.append(lambda _e: log.append("event"))
    env.step()
    assert env.now == 1.0 and log[0][1] == "bare"
    env.step()
    assert env.now == 2.0 and log[-1] == "event"
    with pytest.raises(simpy.core.EmptySchedule):
        env.step()


def test_call_later_takes_bound_methods_only():
    env = Environment()
    with pytest.raises(TypeError, match="bound method"):
        env.call_later(1.0, lambda timer_id: None)

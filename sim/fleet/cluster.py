"""The cluster: builds pools of replicas from a scenario and runs one seeded replication.

A request's path reads straight through here: a class's stream feeds arrivals -> the pool's
router picks a replica -> the replica's engine loop schedules, runs and finishes it -> the
recorder keeps what happened. A pipeline request runs its stages on their pools in turn, each
stage starting when the one before finishes. When a replica fails, its pool takes back every
request it held and retries them on the replicas still up, under each class's retry policy.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sim.config import BLOCK_KINDS, NEW_KINDS, Scenario
from sim.fleet.pipeline import PipelineRequest, PipelineStream, build_pipeline_stream
from sim.fleet.pools import DiffusionPool, DisaggregatedPool, LLMPool, Pool
from sim.fleet.sharing import shares, time_slice
from sim.fleet.timers import Environment
from sim.llm.request import Request
from sim.metrics.recorder import Recorder
from sim.seeds import class_rngs, fault_rng
from sim.workload.images import ImageStream, build_image_stream
from sim.workload.stream import ClosedStream, Stream, block_keys, build_stream

# --------------------------------------------------------------------------- a replication


@dataclass
class ReplicationResult:
    """What one seeded run produced."""

    requests: pd.DataFrame
    timeseries: pd.DataFrame
    end_s: float
    """Simulated time when the run stopped."""
    arrivals_end_s: float
    """Time of the last arrival."""
    wall_s: float
    num_steps: int
    replicas: pd.DataFrame = field(default_factory=pd.DataFrame)
    itl_counts: np.ndarray | None = None
    """Inter-token gaps per class (rows) and bin (sim.metrics.itl)."""
    itl_total_s: np.ndarray | None = None
    """Their exact sum per class."""
    outages: list = field(default_factory=list)
    """[replica, down at, back up at or None] per replica failure."""
    held: dict = field(default_factory=dict)
    """Autoscaled replicas: [from, until] spans each was held (sim.metrics.recorder)."""
    scaling: dict = field(default_factory=dict)
    """Per autoscaled pool: its autoscaler's record (``Autoscaler.summary``)."""


class _Feed:
    """One class's arrivals as a chain of timers: each wake-up lets in every arrival due by now
    (``arrive(i, t)``) and arms the next one; a SimPy process would add a generator resume per
    arrival. It starts, and ``finished`` succeeds after the last arrival, exactly when the
    equivalent process would start and end."""

    def __init__(self, env: Environment, times: list[float], arrive: Callable[[int, float], None]):
        self.env = env
        self.times = times
        self.arrive = arrive
        self.next = 0
        self.finished = env.event()
        env.call_later(0.0, self._wake, urgent=True)

    def _wake(self, _timer: int) -> None:
        env = self.env
        times = self.times
        arrive = self.arrive
        i = self.next
        n = len(times)
        while i < n:
            t = times[i]
            if t > env._now:
                self.next = i
                env.call_later(t - env._now, self._wake)
                return
            arrive(i, t)
            i += 1
        self.next = i
        self.finished.succeed()


class _User:
    """One closed-loop user: its session's turns and the next turn's index."""

    __slots__ = ("feed", "turns", "turn")

    def __init__(self, feed: _ClosedFeed):
        self.feed = feed
        self.turns: list | None = None
        self.turn = 0

    def go(self, _timer: int) -> None:
        self.feed.next(self)

    def done(self, _req) -> None:
        """Its request ended: think, then go on."""
        feed = self.feed
        feed.env.call_later(feed.stream.think_s(), self.go)


class _ClosedFeed:
    """A closed-loop class: each user sends a request, waits for its end (finished, rejected or
    failed), thinks, and sends the next (the next turn of its session, or the first of a new
    one). Users stop at the run's duration, when the run's request count is reached, or when a
    conversation file runs out; ``finished`` succeeds when the last user stops."""

    def __init__(self, env: Environment, stream: ClosedStream, send, duration_s: float | None, limit: int | None):
        self.env = env
        self.stream = stream
        self.send = send
        self.duration_s = duration_s
        self.limit = limit
        self.sent = 0
        spec = stream.spec
        self.active = spec.users
        self.finished = env.event()
        self.last_arrival_s = 0.0
        for u in range(spec.users):
            delay = spec.ramp_s * u / spec.users
            env.call_later(delay, _User(self).go, urgent=delay == 0.0)

    def next(self, user: _User) -> None:
        now = self.env._now
        if (self.duration_s is not None and now >= self.duration_s) or (
            self.limit is not None and self.sent >= self.limit
        ):
            self._stop()
            return
        if user.turns is None or user.turn >= len(user.turns):
            user.turns = self.stream.next_session()
            user.turn = 0
            if user.turns is None:
                self._stop()
                return
        turn = user.turns[user.turn]
        user.turn += 1
        self.sent += 1
        self.last_arrival_s = now
        self.send(now, turn, user.done)

    def _stop(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.finished.succeed()


def _text_sender(
    env, block_tokens: int | None, class_id: int, pool: LLMPool, ids, rec: Recorder, on_arrival, timeout_s
):
    """``send(t, prompt, output, hashes, done)``: a text request arrives at ``t`` (its prefix
    block keys from ``hashes`` when the pool caches prefixes; ``done`` called when it ends)."""
    engine = pool.prefix_engine
    block_size = engine.block_size
    prefix = engine.enable_prefix_caching and block_tokens is not None
    record = rec.arrival
    route = pool.route

    def send(t: float, prompt: int, output: int, hashes, done) -> None:
        keys = block_keys(hashes, prompt, block_size, block_tokens) if prefix and hashes is not None else None
        req = Request(next(ids), class_id, t, prompt, output, keys)
        if done is not None:
            req.on_done = done
        record(req)
        route(req)
        if timeout_s is not None:
            _deadline(env, pool, req, timeout_s)
        if on_arrival is not None:
            on_arrival()

    return send


def _closed_sends(env, stream: ClosedStream, class_id: int, pool: LLMPool, ids, rec: Recorder, on_arrival, timeout_s):
    send = _text_sender(env, stream.hash_block_tokens, class_id, pool, ids, rec, on_arrival, timeout_s)
    return lambda t, turn, done: send(t, turn[0], turn[1], turn[2], done)


def _text_arrivals(env, stream: Stream, class_id: int, pool: LLMPool, ids, rec: Recorder, on_arrival, timeout_s):
    block_tokens = stream.hash_block_tokens if stream.prefix_hashes is not None else None
    send = _text_sender(env, block_tokens, class_id, pool, ids, rec, on_arrival, timeout_s)
    prompts = stream.prompt_tokens.tolist()
    outputs = stream.output_tokens.tolist()
    hashes = stream.prefix_hashes or ()

    def arrive(i: int, t: float) -> None:
        send(t, prompts[i], outputs[i], hashes[i] if hashes else None, None)

    return arrive


def _image_arrivals(
    env, stream: ImageStream, class_id: int, pool: DiffusionPool, ids, rec: Recorder, on_arrival, timeout_s
):
    steps = stream.steps.tolist()
    images = stream.images.tolist()

    def arrive(i: int, t: float) -> None:
        req = pool.make_request(next(ids), class_id, t, stream.shape, steps[i], images[i])
        rec.image_arrival(req)
        pool.route(req)
        if timeout_s is not None:
            _deadline(env, pool, req, timeout_s)
        if on_arrival is not None:
            on_arrival()

    return arrive


def _pipeline_arrivals(
    env, stream: PipelineStream, class_id: int, pools: dict, ids, rec: Recorder, on_arrival, timeout_s
):
    def arrive(i: int, t: float) -> None:
        pipe = PipelineRequest(next(ids), class_id, t, stream, i)
        rec.pipeline_arrival(pipe)
        pipe.start(env, pools, ids, rec, timeout_s)
        if on_arrival is not None:
            on_arrival()

    return arrive


def _deadline(env, pool: Pool, req, timeout_s: float) -> None:
    env.timeout(timeout_s).callbacks.append(lambda _e: pool.timeout(req, timeout_s))


def _faults(env, pool: Pool, rng: np.random.Generator, rec: Recorder):
    """Failure and repair times for every replica of a pool (each outage recorded)."""
    f = pool.cfg.effective_faults

    def draw(mean: float) -> float:
        return float(rng.exponential(mean)) if f.distribution == "exponential" else mean

    def down(i: int) -> list:
        pool.fail(i)
        return rec.outage(pool.replicas[i].index, env.now)

    def up(i: int, outage: list) -> None:
        pool.recover(i)
        outage[2] = env.now

    def cycle(i: int):
        while True:
            if f.notice_s:
                life = draw(f.mtbf_s)
                notice = min(f.notice_s, life)
                yield env.timeout(life - notice)
                pool.notice(i)
                yield env.timeout(notice)
            else:
                yield env.timeout(draw(f.mtbf_s))
            outage = down(i)
            yield env.timeout(draw(f.mttr_s))
            up(i, outage)

    def scheduled(i: int, at: float):
        if f.notice_s:
            notice = min(f.notice_s, at)
            yield env.timeout(at - notice)
            pool.notice(i)
            yield env.timeout(notice)
        else:
            yield env.timeout(at)
        outage = down(i)
        yield env.timeout(draw(f.mttr_s))
        up(i, outage)

    procs = []
    if f.mtbf_s is not None:
        procs += [env.process(cycle(i)) for i in range(len(pool.replicas))]
    for i, at in f.at_s or ():
        if i < len(pool.replicas):
            procs.append(env.process(scheduled(i, at)))
    return procs


@contextmanager
def _cyclic_gc_paused():
    """Pause Python's cyclic garbage collector for an event loop. The loop leaves no cyclic
    garbage behind (steps, timers and events are freed by reference counting: a 200,000-request
    run has none to collect until the whole simulation is dropped), yet the collector keeps
    walking the ever-growing set of live request objects, about 5 % of a run's time. It is
    back on afterwards, as it was."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def simulate(
    scenario: Scenario,
    base_dir: Path,
    seed: np.random.SeedSequence,
    on_arrival: Callable[[], None] | None = None,
    streams: list | None = None,
    decode_spans: bool = True,
) -> ReplicationResult:
    """Run one replication. ``seed`` spawns one generator per request class (and one for
    replica failures). ``decode_spans`` False runs LLM replicas one decode step per event (the
    same results; a time-series sample per step)."""
    wall0 = time.perf_counter()
    if scenario.catalog is not None:
        scenario.catalog.add()  # a worker process has not parsed the scenario: add its entries here
    env = Environment()
    recorder = Recorder([c.name for c in scenario.classes], scenario.warmup_s)
    retry = {i: c.retry for i, c in enumerate(scenario.classes)}
    pools: dict[str, Pool] = {}
    gpu_shares = shares(scenario.pools)
    for p in scenario.pools:
        share = gpu_shares.get(p.name)
        if p.is_diffusion:
            pools[p.name] = DiffusionPool(env, p, recorder, retry, base_dir, share=share)
        elif block_kind(scenario, p.name):
            from sim.kinds import BlockPool

            pools[p.name] = BlockPool(env, p, recorder, retry, base_dir)
        else:
            kind = DisaggregatedPool if p.disaggregation is not None else LLMPool
            pools[p.name] = kind(env, p, recorder, retry, base_dir, decode_spans, share=share)
    for p in scenario.pools:
        if p.colocation is not None and p.colocation.mode == "time_slice":
            time_slice(env, recorder, pools[p.colocation.pool], pools[p.name], p.colocation.window_s)
    scaled = []
    for pool in pools.values():
        if pool.cfg.autoscaling is not None:
            from sim.fleet.autoscale import Autoscaler

            slo = next(
                (scenario.slo_for(c) for c in scenario.classes if c.pool == pool.cfg.name and scenario.slo_for(c)),
                None,
            )
            scaled.append(Autoscaler(env, pool, recorder, slo))
    if streams is None:
        rngs = class_rngs(seed, len(scenario.classes))
        streams = [build_stream_for(scenario, c, rng, base_dir) for c, rng in zip(scenario.classes, rngs)]
    ids = iter(range(1 << 62))
    for pool in pools.values():
        spec = None if pool.cfg.is_diffusion else pool.cfg.engine.speculative
        if spec is not None:
            acceptance = {None: (spec.acceptance.mean, spec.acceptance.cv)}
            for i, c in enumerate(scenario.classes):
                if c.speculative_acceptance is not None:
                    acceptance[i] = (c.speculative_acceptance.mean, c.speculative_acceptance.cv)
            pool.start_speculation(seed, acceptance)
        if isinstance(pool, DisaggregatedPool):
            pool.connect(pools[pool.cfg.disaggregation.prefill_pool], ids)
            recorder.kv_transfers = True
    feeders = []
    closed: list[_ClosedFeed] = []
    for class_id, (cls, stream) in enumerate(zip(scenario.classes, streams)):
        timeout_s = cls.retry.timeout_s
        if isinstance(stream, ClosedStream):
            send = _closed_sends(env, stream, class_id, pools[cls.pool], ids, recorder, on_arrival, timeout_s)
            feed = _ClosedFeed(env, stream, send, scenario.duration_s, scenario.num_requests)
            closed.append(feed)
            feeders.append(feed.finished)
            continue
        if cls.kind in NEW_KINDS:
            from sim.kinds import kind_arrivals

            pool = pools[cls.pool]
            arrive = kind_arrivals(env, stream, class_id, cls, pool, ids, recorder, on_arrival, timeout_s)
        elif cls.kind == "pipeline":
            arrive = _pipeline_arrivals(env, stream, class_id, pools, ids, recorder, on_arrival, timeout_s)
        elif cls.kind == "image":
            arrive = _image_arrivals(env, stream, class_id, pools[cls.pool], ids, recorder, on_arrival, timeout_s)
        else:
            arrive = _text_arrivals(env, stream, class_id, pools[cls.pool], ids, recorder, on_arrival, timeout_s)
        feeders.append(_Feed(env, stream.arrival_s.tolist(), arrive).finished)
    last_arrival = max((float(s.arrival_s[-1]) for s in streams if len(s)), default=0.0)
    until = last_arrival + scenario.drain_timeout_s if scenario.drain_timeout_s is not None else None
    faulty = [p for p in pools.values() if p.cfg.effective_faults is not None]
    timeouts = any(c.retry.timeout_s is not None for c in scenario.classes)
    if closed:
        # Arrivals follow answers: the run ends when every user has stopped and the fleet is idle,
        # or the drain timeout after the last user stopped.
        until = None
    if faulty or timeouts or closed or scaled:
        # Failure cycles, deadlines and autoscalers never run out of events: stop when every
        # request has finished, been rejected or failed (or at the drain timeout).
        faults = fault_rng(seed)
        for p in faulty:
            _faults(env, p, faults, recorder)
        stop = env.event()

        def check() -> None:
            if stop.triggered or not all(f.triggered for f in feeders):
                return
            if all(p.num_outstanding == 0 for p in pools.values()):
                stop.succeed()

        for p in pools.values():
            p.on_idle = check
            for rep in p.replicas:
                rep.on_idle = check
        for f in feeders:
            f.callbacks.append(lambda _e: check())
        if until is not None:
            env.timeout(until).callbacks.append(lambda _e: stop.triggered or stop.succeed())
        elif closed and scenario.drain_timeout_s is not None:

            def drain_clock(_e) -> None:
                if all(f.triggered for f in feeders):
                    env.timeout(scenario.drain_timeout_s).callbacks.append(lambda _e: stop.triggered or stop.succeed())

            for f in feeders:
                f.callbacks.append(drain_clock)
        with _cyclic_gc_paused():
            env.run(until=stop)
    else:
        with _cyclic_gc_paused():
            env.run(until=until)
    replicas = pd.DataFrame(
        {
            "replica": range(len(recorder.replica_pool)),
            "pool": recorder.replica_pool,
            "num_gpus": recorder.replica_gpus,
            "kv_blocks": recorder.replica_kv_blocks,
            "busy_s": recorder.replica_busy_s,
        }
    )
    if closed:
        last_arrival = max([last_arrival, *(f.last_arrival_s for f in closed)])
    for spans in recorder.held.values():
        if spans[-1][1] == float("inf"):
            spans[-1][1] = float(env.now)
    itl = recorder.itl()
    return ReplicationResult(
        held=recorder.held,
        scaling={a.pool.cfg.name: a.summary() for a in scaled},
        outages=recorder.outages,
        itl_counts=itl.counts,
        itl_total_s=itl.total_s,
        requests=recorder.requests_frame(),
        timeseries=recorder.timeseries_frame(),
        end_s=float(env.now),
        arrivals_end_s=last_arrival,
        wall_s=time.perf_counter() - wall0,
        num_steps=recorder.num_steps,
        replicas=replicas,
    )


def block_kind(scenario: Scenario, pool: str) -> bool:
    """Whether ``pool`` serves diffusion-LM or hybrid classes (a block-step pool)."""
    return any(c.pool == pool and c.kind in BLOCK_KINDS for c in scenario.classes)


def build_stream_for(scenario: Scenario, cls, rng: np.random.Generator, base_dir: Path):
    if cls.kind in NEW_KINDS:
        from sim.kinds import build_kind_stream

        return build_kind_stream(scenario, cls, rng)
    if cls.kind == "pipeline":
        return build_pipeline_stream(scenario, cls, rng, base_dir)
    if cls.kind == "image":
        return build_image_stream(scenario, cls, rng, base_dir)
    return build_stream(scenario, cls, rng, base_dir)

"""Autoscaling: a pool that adds replicas when its load rises and lets them go when it falls,
each new replica serving only after its cold start.

The autoscaler works as Kubernetes' HorizontalPodAutoscaler does, with Knative's habits where
LLM serving uses them (docs/explanation/how-the-model-works.md, "Autoscaling"): every
``interval_s`` it reads its metric (averaged over ``window_s``), computes the replicas it
wants, adds them at once and removes them only when every wish of the last
``scale_down_delay_s`` was lower; a request that finds no replica serving waits in the pool and
wakes the autoscaler (Knative's activator), so a pool scaled to zero starts one at once.

A replica is in one of four states. ``parked``: not held (no GPUs, not billed). ``starting``:
held, cold-starting for ``cold_start_s(pool)``. ``up``: held, taking requests. ``draining``:
held, taking no new requests, let go (parked, its cache forgotten) at the first decision after
its last request ends. GPU-hours are the time each replica is held, times its GPUs.
"""

from __future__ import annotations

import math
from collections import deque

from sim import catalog
from sim.config import PoolConfig
from sim.status import RequestStatus

#: Defaults of ``autoscaling.cold_start`` (their sources are in sim.config.ColdStart).
LLM_ENGINE_START_S = 34.0
LLM_COMPILE_S = 30.0
DIFFUSION_ENGINE_START_S = 4.0

PARKED, STARTING, UP, DRAINING = range(4)


def replica_weight_bytes(pool: PoolConfig) -> float:
    """Bytes a starting replica reads from storage: every GPU's weights (a diffusion replica's
    GPUs each hold the whole pipeline; an LLM replica's its share, attention replicated over
    data-parallel groups)."""
    gpus = pool.tensor_parallel_size
    if pool.is_diffusion:
        from sim.diffusion.cost import pipeline_weight_bytes

        return pipeline_weight_bytes(catalog.get_diffusion_model(pool.model), pool.diffusion.dtype) * gpus
    from sim.llm.memory import draft_bytes, weight_bytes_per_gpu

    model = catalog.get_model(pool.model)
    return (weight_bytes_per_gpu(model, pool.engine, gpus) + draft_bytes(model, pool.engine, gpus)[0]) * gpus


def held_s(spans, t0: float, t1: float) -> float:
    """Seconds of the [from, until] spans a replica was held that fall within [t0, t1]."""
    return sum(max(0.0, min(b, t1) - max(a, t0)) for a, b in spans)


def cold_start_parts(pool: PoolConfig) -> dict[str, float]:
    """Seconds of each part of a replica's cold start (provision, engine start, weight read,
    compile); ``{"measured": s}`` when the scenario gives the whole."""
    cs = pool.autoscaling.cold_start
    if cs.cold_start_s is not None:
        return {"measured": cs.cold_start_s}
    diffusion = pool.is_diffusion
    start = (
        cs.engine_start_s
        if cs.engine_start_s is not None
        else (DIFFUSION_ENGINE_START_S if diffusion else LLM_ENGINE_START_S)
    )
    compile_s = cs.compile_s if cs.compile_s is not None else (0.0 if diffusion else LLM_COMPILE_S)
    read = replica_weight_bytes(pool) / (catalog.get_storage(cs.storage).gb_s * 1e9)
    return {"provision": cs.provision_s, "engine_start": start, "weights": read, "compile": compile_s}


def cold_start_s(pool: PoolConfig) -> float:
    """From asking for a replica to its taking requests."""
    return sum(cold_start_parts(pool).values())


class Autoscaler:
    """Scales one pool (``pool.cfg.autoscaling``); see the module docstring."""

    def __init__(self, env, pool, recorder, slo=None):
        cfg = pool.cfg.autoscaling
        self.env, self.pool, self.recorder, self.cfg = env, pool, recorder, cfg
        self.cold_s = cold_start_s(pool.cfg)
        n0 = pool.cfg.replicas
        self.state = [UP] * n0 + [PARKED] * (len(pool.replicas) - n0)
        for rep in pool.replicas[n0:]:
            rep.up = False
        pool.up = list(pool.replicas[:n0])
        for rep in pool.replicas[:n0]:
            recorder.hold(rep.index, 0.0)
        pool.autoscaler = self
        self._starting: dict[int, int] = {}  # timer id -> replica
        self._samples: deque[tuple[float, float]] = deque()
        self._wishes: deque[tuple[float, int]] = deque()
        self.scale_ups = 0
        self.scale_downs = 0
        self.events: list[tuple[float, int, int]] = []
        """(time, replicas held, replicas up) after every change."""
        self._slo = slo
        self._latencies: deque[tuple[float, float]] = deque()
        self.watch = cfg.metric == "slo"
        """Whether the pool hands each routed request to ``routed``."""
        self._seen: set[int] = set()
        if cfg.metric == "utilisation":
            recorder.track_busy()
        env.call_later(cfg.interval_s, self._tick)

    # -- state
    def _count(self, *states: int) -> int:
        return sum(1 for s in self.state if s in states)

    @property
    def held(self) -> int:
        return self._count(STARTING, UP, DRAINING)

    def _note(self) -> None:
        self.events.append((self.env.now, self.held, self._count(UP)))

    def _refresh_up(self) -> None:
        self.pool.up = [r for r, s in zip(self.pool.replicas, self.state) if s == UP]

    def _start(self, n: int) -> None:
        """Add ``n`` replicas: draining ones back first (warm, no cold start), then parked ones
        cold-started."""
        now = self.env.now
        for i, s in enumerate(self.state):
            if n and s == DRAINING:
                self.state[i] = UP
                n -= 1
        self._refresh_up()
        for i, s in enumerate(self.state):
            if n == 0:
                break
            if s == PARKED:
                self.state[i] = STARTING
                self.recorder.hold(self.pool.replicas[i].index, now)
                self._starting[self.env.call_later(self.cold_s, self._ready)] = i
                self.scale_ups += 1
                n -= 1
        self._note()

    def _ready(self, timer: int) -> None:
        i = self._starting.pop(timer, None)
        if i is None:
            return  # cancelled while starting
        self.state[i] = UP
        pool = self.pool
        pool.replicas[i].recover()
        self._refresh_up()
        self._note()
        pending, pool.pending = pool.pending, []
        for req in pending:
            pool.route(req)

    def _stop(self, n: int) -> None:
        """Let ``n`` replicas go: those still starting first (newest first), then those serving
        with the fewest requests."""
        now = self.env.now
        for timer, i in sorted(self._starting.items(), key=lambda kv: -kv[1]):
            if n == 0:
                break
            del self._starting[timer]
            self.state[i] = PARKED
            self.recorder.release(self.pool.replicas[i].index, now)
            self.scale_downs += 1
            n -= 1
        if n:
            up = [i for i, s in enumerate(self.state) if s == UP]
            up.sort(key=lambda i: (self.pool.replicas[i].num_outstanding, -i))
            for i in up[:n]:
                self.state[i] = DRAINING
                self.scale_downs += 1
            self._refresh_up()
        self._release_drained()
        self._note()

    def _release_drained(self) -> None:
        now = self.env.now
        for i, s in enumerate(self.state):
            if s == DRAINING and self.pool.replicas[i].num_outstanding == 0:
                self.state[i] = PARKED
                self.pool.replicas[i].fail()  # nothing to lose: the engine stops, its cache goes
                self.recorder.release(self.pool.replicas[i].index, now)

    def wake(self) -> None:
        """A request found no replica serving: start one now unless one is on its way."""
        if not self._starting and self.held < self.cfg.max_replicas:
            self._start(1)

    def routed(self, req) -> None:
        """Follow a request's end for the ``slo`` metric (once, whatever its retries)."""
        if id(req) in self._seen:
            return
        self._seen.add(id(req))
        before = req.on_done

        def done(r, before=before) -> None:
            self._seen.discard(id(r))
            self._finished(r)
            if before is not None:
                before(r)

        req.on_done = done

    def _finished(self, req) -> None:
        slo = self._slo
        if req.status != RequestStatus.FINISHED:
            latency = math.inf
        elif slo.ttft_s is not None and getattr(req, "first_token_s", -1.0) >= 0:
            latency = (req.first_token_s - req.arrival_s) / slo.ttft_s
        elif slo.e2e_s is not None:
            latency = (req.finish_s - req.arrival_s) / slo.e2e_s
        elif slo.tpot_s is not None and getattr(req, "num_output_tokens", 0) > 1:
            latency = (req.finish_s - req.first_token_s) / (req.num_output_tokens - 1) / slo.tpot_s
        else:
            return
        self._latencies.append((self.env.now, latency))

    def summary(self) -> dict:
        """What the run's summary keeps of this autoscaler: ``scale_ups`` counts cold starts,
        ``scale_downs`` replicas asked to leave (one taken back while draining starts nothing,
        so there may be more of these)."""
        return {
            "cold_start_s": self.cold_s,
            "cold_start_parts_s": cold_start_parts(self.pool.cfg),
            "scale_ups": self.scale_ups,
            "scale_downs": self.scale_downs,
            "events": self.events,
        }

    # -- deciding
    def _metric(self) -> float:
        """This decision's reading of the metric (before averaging)."""
        pool, metric = self.pool, self.cfg.metric
        if metric == "in_flight":
            return float(pool.num_outstanding)
        if metric == "queue":
            waiting = len(pool.pending)
            for rep, s in zip(pool.replicas, self.state):
                if s in (UP, DRAINING):
                    waiting += rep.num_outstanding - rep.num_running
            return float(waiting)
        # utilisation: the busy seconds of the replicas so far (a difference of two readings)
        busy = self.recorder.busy_by_replica
        return float(sum(busy[rep.index] for rep in pool.replicas))

    def _wanted(self, now: float) -> int:
        cfg = self.cfg
        current = self._count(STARTING, UP)
        if cfg.metric == "schedule":
            t = now % cfg.period_s if cfg.period_s else now
            wanted = cfg.schedule[0][1]
            for at, n in cfg.schedule:
                if at <= t:
                    wanted = n
            return wanted
        if cfg.metric == "slo":
            return self._wanted_slo(now, current)
        value = self._metric()
        self._samples.append((now, value))
        while self._samples and self._samples[0][0] < now - cfg.window_s:
            self._samples.popleft()
        if cfg.metric == "utilisation":
            t0, b0 = self._samples[0]
            serving = self._count(UP, DRAINING)
            if now <= t0 or serving == 0:
                return current
            load = (value - b0) / (now - t0) / cfg.target  # replicas' worth of busy time
        else:
            load = sum(v for _, v in self._samples) / len(self._samples) / cfg.target
        if current and abs(load / current - 1.0) <= cfg.tolerance:
            return current
        return math.ceil(load - 1e-9)

    def _wanted_slo(self, now: float, current: int) -> int:
        cfg, slo = self.cfg, self._slo
        while self._latencies and self._latencies[0][0] < now - cfg.window_s:
            self._latencies.popleft()
        if not self._latencies:
            return current
        lat = sorted(v for _, v in self._latencies)  # each as a fraction of its SLO target
        p = lat[min(len(lat) - 1, max(0, math.ceil(slo.percentile / 100 * len(lat)) - 1))]
        limit = cfg.target or 0.8
        if p > limit:
            return current + 1
        if p < limit / 2:
            return current - 1
        return current

    def _tick(self, _timer: int) -> None:
        cfg, now = self.cfg, self.env.now
        self._release_drained()
        wanted = min(cfg.max_replicas, max(cfg.min_replicas, self._wanted(now)))
        if self.pool.pending and wanted == 0:
            wanted = 1
        self._wishes.append((now, wanted))
        while self._wishes and self._wishes[0][0] < now - cfg.scale_down_delay_s:
            self._wishes.popleft()
        current = self._count(STARTING, UP)
        if wanted > current:
            self._start(wanted - current)
        elif wanted < current:
            floor = max(w for _, w in self._wishes)
            if floor < current:
                self._stop(current - floor)
        self.env.call_later(cfg.interval_s, self._tick)

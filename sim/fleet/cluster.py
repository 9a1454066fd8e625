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
import simpy

from sim import catalog
from sim.config import ConstantCost, PoolConfig, ProfileCost, RetryPolicy, Scenario
from sim.costs import ConstantCostModel, CostModel, ProfileCostModel, RooflineCostModel
from sim.costs.profile import DiffusionProfileCost, Profile, check_profile_for_pool, load_profile
from sim.diffusion.batcher import DiffusionBatcher
from sim.diffusion.cost import DiffusionConstantCost, DiffusionRooflineCost, diffusion_memory_budget, request_bytes
from sim.diffusion.request import ImageRequest
from sim.errors import ConfigError
from sim.fleet.diffusion_replica import MIB, DiffusionReplica
from sim.fleet.pipeline import PipelineRequest, PipelineStream, build_pipeline_stream
from sim.fleet.replica import LLMReplica
from sim.fleet.router import make_router
from sim.fleet.timers import Environment
from sim.llm.kv_cache import KVCacheManager
from sim.llm.memory import KVBudget, kv_budget, kv_bytes_per_elem, weight_bytes_per_elem
from sim.llm.request import Request, RequestStatus
from sim.llm.scheduler import Scheduler, SchedulerConfig
from sim.llm.static import StaticBatchScheduler
from sim.metrics.recorder import Recorder
from sim.seeds import class_rngs, fault_rng
from sim.workload.images import ImageStream, build_image_stream
from sim.workload.stream import Stream, block_keys, build_stream


def build_cost_model(pool: PoolConfig, base_dir: Path | None = None) -> CostModel:
    cm = pool.cost_model
    if isinstance(cm, ConstantCost):
        return ConstantCostModel(cm.step_s, cm.prefill_token_s, cm.decode_seq_s)
    if isinstance(cm, ProfileCost):
        return ProfileCostModel(pool_profile(pool, base_dir))
    return RooflineCostModel(
        catalog.get_model(pool.model),
        catalog.get_gpu(pool.gpu),
        tp=pool.tensor_parallel_size,
        weight_bytes=weight_bytes_per_elem(pool.engine),
        kv_bytes=kv_bytes_per_elem(pool.engine),
        compute_efficiency=cm.compute_efficiency,
        bandwidth_efficiency=cm.bandwidth_efficiency,
    )


def build_diffusion_cost(pool: PoolConfig, base_dir: Path | None = None):
    cm = pool.cost_model
    if isinstance(cm, ConstantCost):
        return DiffusionConstantCost(cm.step_s, cm.per_row_s, cm.text_encode_s, cm.vae_decode_s)
    if isinstance(cm, ProfileCost):
        return DiffusionProfileCost(pool_profile(pool, base_dir))
    return DiffusionRooflineCost(
        catalog.get_diffusion_model(pool.model),
        catalog.get_gpu(pool.gpu),
        compute_efficiency=cm.compute_efficiency,
        bandwidth_efficiency=cm.bandwidth_efficiency,
        execution=cm.execution,
    )


def pool_profile(pool: PoolConfig, base_dir: Path | None) -> Profile:
    """The profile a ``cost_model: {kind: profile}`` pool reads (path relative to the scenario
    file), checked against the pool's model, kind, TP degree and GPU. Raises ConfigError."""
    path = Path(pool.cost_model.path)
    profile = load_profile(path if path.is_absolute() else (base_dir or Path(".")) / path)
    check_profile_for_pool(profile, pool.name, pool.model, pool.gpu, pool.tensor_parallel_size, pool.is_diffusion)
    return profile


def check_cost_models(scenario: Scenario, base_dir: Path) -> None:
    """Raise ConfigError (one line, naming the field) if a pool's profile is missing, malformed
    or does not match its pool. Cheap: run before simulating."""
    for i, pool in enumerate(scenario.pools):
        if not isinstance(pool.cost_model, ProfileCost):
            continue
        path = Path(pool.cost_model.path)
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            what = "is a directory, not a profile file" if path.is_dir() else "profile file not found"
            raise ConfigError(f"pools.{i}.cost_model.path: {what}: {path}")
        pool_profile(pool, base_dir)


def pool_kv_budget(pool: PoolConfig) -> KVBudget:
    return kv_budget(catalog.get_model(pool.model), catalog.get_gpu(pool.gpu), pool.engine, pool.tensor_parallel_size)


def check_pool_fits(pool: PoolConfig) -> None:
    """Raise ConfigError (one line) if the pool's model does not fit its GPU."""
    if pool.is_diffusion:
        diffusion_memory_budget(
            catalog.get_diffusion_model(pool.model), catalog.get_gpu(pool.gpu), pool.diffusion.gpu_memory_utilization
        )
    else:
        pool_kv_budget(pool)


def scheduler_config(pool: PoolConfig) -> SchedulerConfig:
    e = pool.engine
    return SchedulerConfig(
        max_num_seqs=e.max_num_seqs,
        max_num_batched_tokens=e.max_num_batched_tokens,
        max_model_len=e.max_model_len or catalog.get_model(pool.model).max_position_embeddings,
        enable_chunked_prefill=e.enable_chunked_prefill,
        guaranteed_no_evict=e.capacity_scheduler_policy == "guaranteed_no_evict",
    )


def price_per_gpu_hour(pool: PoolConfig) -> float:
    return pool.price_per_gpu_hour or catalog.get_gpu(pool.gpu).price.usd_per_gpu_hour


# --------------------------------------------------------------------------- pools


class Pool:
    """Replicas of one pool behind a router; the replicas up take the traffic."""

    def __init__(self, env: simpy.Environment, cfg: PoolConfig, recorder: Recorder, retry: dict[int, RetryPolicy]):
        self.env = env
        self.cfg = cfg
        self.recorder = recorder
        self.router = make_router(cfg.router)
        self.retry = retry
        self.replicas: list = []
        self.up: list = self.replicas
        """Replicas taking traffic (the same list object as ``replicas`` until one fails)."""
        self.pending: list = []
        """Requests waiting for a replica to come back (every replica down)."""
        self.on_idle: Callable[[], None] | None = None
        self.expired: dict[int, str] = {}
        """Requests whose deadline passed (by id), with the reason, so a retry is not tried."""

    @property
    def first_index(self) -> int:
        """Recorder index of the pool's first replica (replica indices are global)."""
        return self.replicas[0].index

    def _adopt(self, rep) -> None:
        rep.on_lost = self.requeue
        rep.fail_request = self.fail_request
        self.replicas.append(rep)

    def route(self, req) -> None:
        up = self.up
        if not up:
            self.pending.append(req)
            return
        up[self.router.select(up)].submit(req)
        if req.on_done is not None and req.status == RequestStatus.REJECTED:
            req.on_done(req)

    @property
    def num_outstanding(self) -> int:
        return len(self.pending) + sum(r.num_outstanding for r in self.replicas)

    # -- faults
    def fail(self, i: int) -> None:
        rep = self.replicas[i]
        if not rep.up:
            return
        if self.up is self.replicas:
            self.up = list(self.replicas)
        self.up.remove(rep)
        rep.fail()

    def recover(self, i: int) -> None:
        rep = self.replicas[i]
        if rep.up:
            return
        rep.recover()
        self.up = [r for r in self.replicas if r.up]
        pending, self.pending = self.pending, []
        for req in pending:
            self.route(req)

    def requeue(self, running: list, waiting: list) -> None:
        """Requests a failed replica held: running ones are retried (their work is lost, up
        to a checkpoint for deterministic diffusion), queued ones simply go elsewhere."""
        for req in running:
            if req.fail_reason:
                continue  # timed out already
            if id(req) in self.expired:
                self.fail_request(req, self.expired[id(req)])
                continue
            req.num_retries += 1
            policy = self.retry.get(req.class_id)
            limit = policy.max_retries if policy is not None else 0
            if req.num_retries > limit:
                self.fail_request(req, f"replica {req.replica} failed and the retry budget ({limit}) is spent")
                continue
            self._reset(req)
            self.route(req)
        for req in waiting:
            if req.fail_reason:
                continue
            if id(req) in self.expired:
                self.fail_request(req, self.expired[id(req)])
                continue
            self._reset(req)
            self.route(req)
        if self.on_idle is not None:
            self.on_idle()

    def _reset(self, req) -> None:
        req.status = RequestStatus.WAITING
        if isinstance(req, Request):
            req.reset_for_retry()
            # The client sees a new generation: its first token is the new attempt's.
            req.first_token_s = -1.0
            req.last_token_s = -1.0
            req.max_itl_s = 0.0
        else:
            if not req.deterministic:
                req.checkpoint_step = 0
            req.steps_done = req.checkpoint_step

    def fail_request(self, req, reason: str) -> None:
        req.status = RequestStatus.ABORTED
        req.fail_reason = reason
        req.finish_s = -1.0
        if req.on_done is not None:
            req.on_done(req)

    def timeout(self, req, timeout_s: float) -> None:
        """A request's deadline passed: give up on it wherever it is."""
        if req.status == RequestStatus.FINISHED or req.status == RequestStatus.REJECTED or req.fail_reason:
            return
        reason = f"not finished within timeout_s {timeout_s:g} s"
        self.expired[id(req)] = reason
        if req in self.pending:
            self.pending.remove(req)
            self.fail_request(req, reason)
        elif 0 <= req.replica:
            self.replicas[req.replica - self.first_index].cancel(req, reason)
        if self.on_idle is not None:
            self.on_idle()


class LLMPool(Pool):
    def __init__(
        self,
        env,
        cfg: PoolConfig,
        recorder: Recorder,
        retry: dict[int, RetryPolicy],
        base_dir: Path | None = None,
        decode_spans: bool = True,
    ):
        super().__init__(env, cfg, recorder, retry)
        self.budget = pool_kv_budget(cfg)
        cost = build_cost_model(cfg, base_dir)
        sched_cfg = scheduler_config(cfg)
        sched_cls = StaticBatchScheduler if cfg.engine.scheduler == "static" else Scheduler
        prefix = cfg.engine.enable_prefix_caching and cfg.engine.scheduler == "continuous"
        model = catalog.get_model(cfg.model)
        block_gib = (
            model.kv_bytes_per_token(kv_bytes_per_elem(cfg.engine), cfg.tensor_parallel_size)
            * cfg.engine.block_size
            / 2**30
        )
        for _ in range(cfg.replicas):
            kv = KVCacheManager(self.budget.num_gpu_blocks, cfg.engine.block_size, prefix)
            index = recorder.add_replica(cfg.name, self.budget.num_gpu_blocks, cfg.tensor_parallel_size, block_gib)
            self._adopt(
                LLMReplica(env, index, sched_cls(sched_cfg, kv), cost, recorder, cfg.tensor_parallel_size, decode_spans)
            )


class DiffusionPool(Pool):
    def __init__(
        self, env, cfg: PoolConfig, recorder: Recorder, retry: dict[int, RetryPolicy], base_dir: Path | None = None
    ):
        super().__init__(env, cfg, recorder, retry)
        self.spec = catalog.get_diffusion_model(cfg.model)
        gpu = catalog.get_gpu(cfg.gpu)
        batching = cfg.diffusion
        self.mem_budget = diffusion_memory_budget(self.spec, gpu, batching.gpu_memory_utilization)
        cost = build_diffusion_cost(cfg, base_dir)
        self._mem: dict[tuple, tuple[int, float]] = {}
        for _ in range(cfg.replicas):
            index = recorder.add_replica(cfg.name, max(1, int(self.mem_budget / MIB)), 1, 1 / 1024, llm=False)
            self._adopt(
                DiffusionReplica(env, index, DiffusionBatcher(batching, self.mem_budget), cost, recorder, batching)
            )

    def make_request(self, request_id: int, class_id: int, t: float, shape, steps: int, images: int) -> ImageRequest:
        key = (shape.width, shape.height, shape.frames, images, shape.cfg)
        found = self._mem.get(key)
        if found is None:
            tokens = self.spec.latent_tokens(shape.width, shape.height, shape.frames)
            mem = request_bytes(self.spec, shape.width, shape.height, shape.frames, images, shape.cfg)
            found = self._mem[key] = (tokens, mem)
        return ImageRequest(
            request_id,
            class_id,
            t,
            shape.width,
            shape.height,
            shape.frames,
            steps,
            images,
            shape.cfg,
            shape.deterministic,
            found[0],
            found[1],
        )


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


def _text_arrivals(env, stream: Stream, class_id: int, pool: LLMPool, ids, rec: Recorder, on_arrival, timeout_s):
    block_size = pool.cfg.engine.block_size
    prefix = pool.cfg.engine.enable_prefix_caching and stream.prefix_hashes is not None
    prompts = stream.prompt_tokens.tolist()
    outputs = stream.output_tokens.tolist()
    hashes = stream.prefix_hashes
    record = rec.arrival
    route = pool.route

    def arrive(i: int, t: float) -> None:
        keys = block_keys(hashes[i], prompts[i], block_size, stream.hash_block_tokens) if prefix else None
        req = Request(next(ids), class_id, t, prompts[i], outputs[i], keys)
        record(req)
        route(req)
        if timeout_s is not None:
            _deadline(env, pool, req, timeout_s)
        if on_arrival is not None:
            on_arrival()

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


def _faults(env, pool: Pool, rng: np.random.Generator):
    """Failure and repair times for every replica of a pool."""
    f = pool.cfg.faults

    def draw(mean: float) -> float:
        return float(rng.exponential(mean)) if f.distribution == "exponential" else mean

    def cycle(i: int):
        while True:
            yield env.timeout(draw(f.mtbf_s))
            pool.fail(i)
            yield env.timeout(draw(f.mttr_s))
            pool.recover(i)

    def scheduled(i: int, at: float):
        yield env.timeout(at)
        pool.fail(i)
        yield env.timeout(draw(f.mttr_s))
        pool.recover(i)

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
    env = Environment()
    recorder = Recorder([c.name for c in scenario.classes])
    retry = {i: c.retry for i, c in enumerate(scenario.classes)}
    pools: dict[str, Pool] = {}
    for p in scenario.pools:
        pools[p.name] = (
            DiffusionPool(env, p, recorder, retry, base_dir)
            if p.is_diffusion
            else LLMPool(env, p, recorder, retry, base_dir, decode_spans)
        )
    if streams is None:
        rngs = class_rngs(seed, len(scenario.classes))
        streams = [build_stream_for(scenario, c, rng, base_dir) for c, rng in zip(scenario.classes, rngs)]
    ids = iter(range(1 << 62))
    feeders = []
    for class_id, (cls, stream) in enumerate(zip(scenario.classes, streams)):
        timeout_s = cls.retry.timeout_s
        if cls.kind == "pipeline":
            arrive = _pipeline_arrivals(env, stream, class_id, pools, ids, recorder, on_arrival, timeout_s)
        elif cls.kind == "image":
            arrive = _image_arrivals(env, stream, class_id, pools[cls.pool], ids, recorder, on_arrival, timeout_s)
        else:
            arrive = _text_arrivals(env, stream, class_id, pools[cls.pool], ids, recorder, on_arrival, timeout_s)
        feeders.append(_Feed(env, stream.arrival_s.tolist(), arrive).finished)
    last_arrival = max((float(s.arrival_s[-1]) for s in streams if len(s)), default=0.0)
    until = last_arrival + scenario.drain_timeout_s if scenario.drain_timeout_s is not None else None
    faulty = [p for p in pools.values() if p.cfg.faults is not None]
    timeouts = any(c.retry.timeout_s is not None for c in scenario.classes)
    if faulty or timeouts:
        # Failure cycles and deadlines never run out of events: stop when every request has
        # finished, been rejected or failed (or at the drain timeout).
        faults = fault_rng(seed)
        for p in faulty:
            _faults(env, p, faults)
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
    return ReplicationResult(
        requests=recorder.requests_frame(),
        timeseries=recorder.timeseries_frame(),
        end_s=float(env.now),
        arrivals_end_s=last_arrival,
        wall_s=time.perf_counter() - wall0,
        num_steps=recorder.num_steps,
        replicas=replicas,
    )


def build_stream_for(scenario: Scenario, cls, rng: np.random.Generator, base_dir: Path):
    if cls.kind == "pipeline":
        return build_pipeline_stream(scenario, cls, rng, base_dir)
    if cls.kind == "image":
        return build_image_stream(scenario, cls, rng, base_dir)
    return build_stream(scenario, cls, rng, base_dir)

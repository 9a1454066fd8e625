"""The cluster: builds pools of replicas from a scenario and runs one seeded replication.

A request's path reads straight through here: a class's stream feeds arrivals -> the pool's
router picks a replica -> the replica's engine loop schedules, runs and finishes it -> the
recorder keeps what happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import simpy

from sim import catalog
from sim.config import ConstantCost, PoolConfig, Scenario
from sim.costs import ConstantCostModel, CostModel, RooflineCostModel
from sim.fleet.replica import LLMReplica
from sim.fleet.router import make_router
from sim.llm.kv_cache import KVCacheManager
from sim.llm.memory import KVBudget, kv_budget, kv_bytes_per_elem, weight_bytes_per_elem
from sim.llm.request import Request
from sim.llm.scheduler import Scheduler, SchedulerConfig
from sim.llm.static import StaticBatchScheduler
from sim.metrics.recorder import Recorder
from sim.workload.stream import Stream, block_keys, build_stream


def build_cost_model(pool: PoolConfig) -> CostModel:
    cm = pool.cost_model
    if isinstance(cm, ConstantCost):
        return ConstantCostModel(cm.step_s, cm.prefill_token_s, cm.decode_seq_s)
    return RooflineCostModel(
        catalog.get_model(pool.model),
        catalog.get_gpu(pool.gpu),
        tp=pool.tensor_parallel_size,
        weight_bytes=weight_bytes_per_elem(pool.engine),
        kv_bytes=kv_bytes_per_elem(pool.engine),
        compute_efficiency=cm.compute_efficiency,
        bandwidth_efficiency=cm.bandwidth_efficiency,
    )


def pool_kv_budget(pool: PoolConfig) -> KVBudget:
    return kv_budget(catalog.get_model(pool.model), catalog.get_gpu(pool.gpu), pool.engine, pool.tensor_parallel_size)


def scheduler_config(pool: PoolConfig) -> SchedulerConfig:
    e = pool.engine
    return SchedulerConfig(
        max_num_seqs=e.max_num_seqs,
        max_num_batched_tokens=e.max_num_batched_tokens,
        max_model_len=e.max_model_len or catalog.get_model(pool.model).max_position_embeddings,
        enable_chunked_prefill=e.enable_chunked_prefill,
    )


def price_per_gpu_hour(pool: PoolConfig) -> float:
    return pool.price_per_gpu_hour or catalog.get_gpu(pool.gpu).price.usd_per_gpu_hour


class Pool:
    def __init__(self, env: simpy.Environment, cfg: PoolConfig, recorder: Recorder):
        self.cfg = cfg
        self.budget = pool_kv_budget(cfg)
        self.router = make_router(cfg.router)
        cost = build_cost_model(cfg)
        sched_cfg = scheduler_config(cfg)
        sched_cls = StaticBatchScheduler if cfg.engine.scheduler == "static" else Scheduler
        prefix = cfg.engine.enable_prefix_caching and cfg.engine.scheduler == "continuous"
        self.replicas: list[LLMReplica] = []
        for _ in range(cfg.replicas):
            kv = KVCacheManager(self.budget.num_gpu_blocks, cfg.engine.block_size, prefix)
            index = recorder.add_replica(cfg.name, self.budget.num_gpu_blocks, cfg.tensor_parallel_size)
            self.replicas.append(LLMReplica(env, index, sched_cls(sched_cfg, kv), cost, recorder, cfg.tensor_parallel_size))

    def route(self, req: Request) -> None:
        self.replicas[self.router.select(self.replicas)].submit(req)


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


def _feed(env: simpy.Environment, stream: Stream, class_id: int, pool: Pool, ids, block_size: int, on_arrival):
    prefix = pool.cfg.engine.enable_prefix_caching and stream.prefix_hashes is not None
    times = stream.arrival_s.tolist()
    prompts = stream.prompt_tokens.tolist()
    outputs = stream.output_tokens.tolist()
    hashes = stream.prefix_hashes
    for i, t in enumerate(times):
        if t > env.now:
            yield env.timeout(t - env.now)
        keys = block_keys(hashes[i], prompts[i], block_size, stream.hash_block_tokens) if prefix else None
        pool.route(Request(next(ids), class_id, t, prompts[i], outputs[i], keys))
        if on_arrival is not None:
            on_arrival()


def simulate(
    scenario: Scenario,
    base_dir: Path,
    seed: np.random.SeedSequence,
    on_arrival: Callable[[], None] | None = None,
    streams: list[Stream] | None = None,
) -> ReplicationResult:
    """Run one replication. ``seed`` spawns one generator per request class."""
    wall0 = time.perf_counter()
    env = simpy.Environment()
    recorder = Recorder([c.name for c in scenario.classes])
    pools = {p.name: Pool(env, p, recorder) for p in scenario.pools}
    if streams is None:
        rngs = [np.random.default_rng(s) for s in seed.spawn(len(scenario.classes))]
        streams = [build_stream(scenario, c, rng, base_dir) for c, rng in zip(scenario.classes, rngs)]
    ids = iter(range(1 << 62))
    for class_id, (cls, stream) in enumerate(zip(scenario.classes, streams)):
        pool = pools[cls.pool]
        env.process(_feed(env, stream, class_id, pool, ids, pool.cfg.engine.block_size, on_arrival))
    last_arrival = max((float(s.arrival_s[-1]) for s in streams if len(s)), default=0.0)
    until = last_arrival + scenario.drain_timeout_s if scenario.drain_timeout_s is not None else None
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

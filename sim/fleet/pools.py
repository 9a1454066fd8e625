"""Pools: the replicas of one model on one GPU type behind a router, with what a pool does
when a replica fails (retry or give up) and when a request's deadline passes; how a pool's
memory, scheduler and price follow from its configuration."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Protocol, runtime_checkable

import simpy

from sim import catalog
from sim.config import PoolConfig, RetryPolicy
from sim.costs.factory import build_cost_model, build_diffusion_cost, build_draft_cost
from sim.diffusion.batcher import DiffusionBatcher
from sim.diffusion.cost import diffusion_memory_budget, request_bytes
from sim.diffusion.request import ImageRequest
from sim.fleet.diffusion_replica import MIB, DiffusionReplica
from sim.fleet.replica import LLMReplica
from sim.fleet.router import make_router
from sim.fleet.sharing import Share, shared_gpu
from sim.llm.kv_cache import KVCacheManager
from sim.llm.memory import KVBudget, kv_budget
from sim.llm.request import Request
from sim.llm.scheduler import Scheduler, SchedulerConfig
from sim.llm.static import StaticBatchScheduler
from sim.metrics.recorder import Recorder
from sim.status import RequestStatus


def pool_kv_budget(pool: PoolConfig, share: Share | None = None) -> KVBudget:
    """The pool's KV blocks per replica (``share``: its side of GPUs it shares)."""
    gpu = shared_gpu(catalog.get_gpu(pool.gpu), share)
    return kv_budget(catalog.get_model(pool.model), gpu, pool.engine, pool.tensor_parallel_size)


def check_pool_fits(pool: PoolConfig, share: Share | None = None) -> None:
    """Raise ConfigError (one line) if the pool's model does not fit its GPU (or its share of
    one)."""
    if pool.is_diffusion:
        diffusion_memory_budget(
            catalog.get_diffusion_model(pool.model),
            shared_gpu(catalog.get_gpu(pool.gpu), share),
            pool.diffusion.gpu_memory_utilization,
            pool.diffusion.dtype,
        )
    else:
        pool_kv_budget(pool, share)


def scheduler_config(pool: PoolConfig) -> SchedulerConfig:
    e = pool.engine
    # data-parallel attention groups each have the engine's limits; one scheduler stands for them
    dp = e.attention_data_parallel
    return SchedulerConfig(
        max_num_seqs=e.max_num_seqs * dp,
        max_num_batched_tokens=e.max_num_batched_tokens * dp,
        max_model_len=e.max_model_len or catalog.get_model(pool.model).max_position_embeddings,
        enable_chunked_prefill=e.enable_chunked_prefill,
        guaranteed_no_evict=e.capacity_scheduler_policy == "guaranteed_no_evict",
    )


def price_per_gpu_hour(pool: PoolConfig) -> float:
    on_demand = pool.price_per_gpu_hour or catalog.get_gpu(pool.gpu).price.usd_per_gpu_hour
    return spot_price(pool, on_demand)


def spot_price(pool: PoolConfig, on_demand: float) -> float:
    """What a GPU-hour of the pool costs given its on-demand price (spot: its price or the
    discount off on-demand)."""
    spot = pool.spot
    if spot is None:
        return on_demand
    return spot.price_per_gpu_hour or on_demand * (1 - spot.discount)


# --------------------------------------------------------------------------- pools


@runtime_checkable
class Replica(Protocol):
    """What a pool and its router need of a replica: ``LLMReplica`` and ``DiffusionReplica``
    are both one. The pool hands each replica ``on_lost`` (take back a failed replica's requests)
    and ``fail_request`` (give up on one); the run loop sets ``on_idle`` when it must notice a
    replica going quiet (failures, deadlines)."""

    index: int
    """The replica's number in the whole fleet (the recorder's index)."""
    up: bool
    num_outstanding: int
    """Requests routed here and not yet finished (least_outstanding routing)."""
    outstanding_tokens: int
    """Work still to do here (jsq_tokens routing): tokens for an LLM, step rows for diffusion."""
    on_lost: Callable[[list, list], None] | None
    on_idle: Callable[[], None] | None
    fail_request: Callable[[object, str], None] | None

    def submit(self, req) -> None: ...

    def cancel(self, req, reason: str) -> None: ...

    def fail(self) -> None: ...

    def recover(self) -> None: ...


class Pool:
    """Replicas of one pool behind a router; the replicas up take the traffic."""

    def __init__(self, env: simpy.Environment, cfg: PoolConfig, recorder: Recorder, retry: dict[int, RetryPolicy]):
        self.env = env
        self.cfg = cfg
        self.recorder = recorder
        self.router = make_router(cfg.router, cfg.router_overlap_weight)
        self.retry = retry
        self.replicas: list[Replica] = []
        self.up: list[Replica] = self.replicas
        """Replicas taking traffic (the same list object as ``replicas`` until one fails)."""
        self.pending: list = []
        """Requests waiting for a replica to come back (every replica down)."""
        self.on_idle: Callable[[], None] | None = None
        self.expired: dict[int, str] = {}
        """Requests whose deadline passed (by id), with the reason, so a retry is not tried."""
        self.autoscaler = None
        """The pool's ``sim.fleet.autoscale.Autoscaler`` when it scales."""

    @property
    def first_index(self) -> int:
        """Recorder index of the pool's first replica (replica indices are global)."""
        return self.replicas[0].index

    def _adopt(self, rep: Replica) -> None:
        rep.on_lost = self.requeue
        rep.fail_request = self.fail_request
        self.replicas.append(rep)

    def route(self, req) -> None:
        up = self.up
        if self.autoscaler is not None and self.autoscaler.watch:
            self.autoscaler.routed(req)
        if not up:
            self.pending.append(req)
            if self.autoscaler is not None:
                self.autoscaler.wake()
            return
        up[self.router.select(up, req)].submit(req)
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
        self.notice(i)
        rep.fail()

    def notice(self, i: int) -> None:
        """Replica ``i`` will fail (an eviction notice): route nothing more to it."""
        rep = self.replicas[i]
        if self.up is self.replicas:
            self.up = list(self.replicas)
        if rep in self.up:
            self.up.remove(rep)

    def recover(self, i: int) -> None:
        rep = self.replicas[i]
        if rep.up:
            return
        rep.recover()
        self.up = [r for r in self.replicas if r.up]
        pending, self.pending = self.pending, []
        for req in pending:
            self.reroute(req)

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
            self.reroute(req)
        for req in waiting:
            if req.fail_reason:
                continue
            if id(req) in self.expired:
                self.fail_request(req, self.expired[id(req)])
                continue
            self._reset(req)
            self.reroute(req)
        if self.on_idle is not None:
            self.on_idle()

    def reroute(self, req) -> None:
        """Route a request again after a failure; the unconditional sequence of an AR image or
        audio request (``sim.kinds.media``) follows its conditional one to its replica, as the
        two decode together."""
        main = req.parent.children[0] if req.stage > 0 and getattr(req.parent, "children", None) else None
        if main is not None and getattr(req.parent, "kind", "") in ("ar_image", "audio"):
            i = main.replica - self.first_index
            if main.status == RequestStatus.RUNNING or main.status == RequestStatus.WAITING:
                if 0 <= i < len(self.replicas) and self.replicas[i].up and main not in self.pending:
                    self.replicas[i].submit(req)
                    if req.on_done is not None and req.status == RequestStatus.REJECTED:
                        req.on_done(req)
                    return
        self.route(req)

    def _reset(self, req) -> None:
        req.status = RequestStatus.WAITING
        if isinstance(req, Request):
            req.reset_for_retry()
            # The client sees a new generation: its first token is the new attempt's.
            req.first_token_s = -1.0
            req.last_token_s = -1.0
            req.max_itl_s = 0.0
        elif hasattr(req, "reset_for_retry"):
            req.reset_for_retry()  # a block-step request: its blocks are lost with the KV cache
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
        share: Share | None = None,
    ):
        super().__init__(env, cfg, recorder, retry)
        self.budget = pool_kv_budget(cfg, share)
        cost = build_cost_model(cfg, base_dir, shared_gpu(catalog.get_gpu(cfg.gpu), share) if share else None)
        # GPUs billed per replica (a share of GPUs shared with another pool)
        gpus = cfg.tensor_parallel_size if share is None else cfg.tensor_parallel_size * share.billed
        sched_cfg = scheduler_config(cfg)
        sched_cls = StaticBatchScheduler if cfg.engine.scheduler == "static" else Scheduler
        prefix = cfg.engine.enable_prefix_caching and cfg.engine.scheduler == "continuous"
        model = catalog.get_model(cfg.model)
        dp = cfg.engine.attention_data_parallel
        block_gib = (
            model.kv_bytes_per_token(cfg.engine.kv_bytes_per_elem, cfg.tensor_parallel_size // dp)
            * cfg.engine.block_size
            / 2**30
        )
        if dp > 1:
            block_gib /= dp  # a block lives on one group's GPUs: per GPU of the replica, 1/dp of it
        e = cfg.engine
        # KV of one block on one GPU: what crosses each GPU's host link when it moves.
        block_bytes = self.budget.kv_bytes_per_token * e.block_size
        link = catalog.get_link(catalog.get_gpu(cfg.gpu).host_link)
        host_s_per_token = self.budget.kv_bytes_per_token / (link.effective_gb_s * 1e9)
        swap_blocks = int(e.swap_space_gib * 2**30 // block_bytes) if e.preemption_mode == "swap" else 0
        cpu_blocks = int(e.kv_offloading_size * 2**30 // (block_bytes * cfg.tensor_parallel_size))
        if swap_blocks or cpu_blocks:
            recorder.kv_tiers = True
        for _ in range(cfg.replicas_built):
            kv = KVCacheManager(self.budget.num_gpu_blocks, cfg.engine.block_size, prefix)
            if cpu_blocks:
                kv.pool.cpu_tier = OrderedDict()
                kv.pool.cpu_capacity = cpu_blocks
            index = recorder.add_replica(cfg.name, self.budget.num_gpu_blocks, gpus, block_gib)
            sched = sched_cls(sched_cfg, kv)
            if swap_blocks:
                sched.swap_capacity_blocks = swap_blocks
            rep = LLMReplica(env, index, sched, cost, recorder, gpus, decode_spans)
            rep.host_s_per_token = host_s_per_token
            self._adopt(rep)
        if cfg.engine.speculative is not None:
            draft = build_draft_cost(cfg)
            for rep in self.replicas:
                rep.draft = draft

    def start_speculation(self, seed, acceptance: dict) -> None:
        """Turn speculative decoding on in every replica: each draws acceptances from its own
        generator (``seed``: the replication's; the replica's index keys the stream), with the
        classes' acceptance rates (``acceptance``: class id -> (mean, cv), None -> the pool's)."""
        from sim.seeds import speculation_rng

        k = self.cfg.engine.speculative.num_speculative_tokens
        for rep in self.replicas:
            rep.scheduler.enable_speculation(k, speculation_rng(seed, rep.index), acceptance)

    @property
    def prefix_engine(self):
        """The engine whose prefix cache an arrival's block keys are made for."""
        return self.cfg.engine


def link_bytes_per_token(prefill: PoolConfig, decode: PoolConfig) -> float:
    """Bytes of a prompt token's KV cache that one link carries from a prefill replica to a
    decode replica: each prefill rank's share; a decode link takes several shares when the
    decode side has fewer ranks."""
    tp_p, tp_d = prefill.tensor_parallel_size, decode.tensor_parallel_size
    per_rank = catalog.get_model(decode.model).kv_bytes_per_token(prefill.engine.kv_bytes_per_elem, tp_p)
    return per_rank * max(1.0, tp_p / tp_d)


def transfer_s(prefill: PoolConfig, decode: PoolConfig, tokens: int) -> float:
    """A prompt's KV transfer on an idle link: latency + bytes per link / rate."""
    d = decode.disaggregation
    return d.transfer_latency_s + link_bytes_per_token(prefill, decode) * tokens / (d.gb_s * 1e9)


class DisaggregatedPool(LLMPool):
    """A decode-only LLM pool (``disaggregation``): each request it is sent first runs its prompt
    on the prefill pool as a one-token leg (a request of its own, recorded as the request's
    child, stage 0), whose KV blocks stay held when it finishes. The request is then routed to a
    replica here; when that replica admits it (allocating blocks for the prompt), the prompt's
    KV cache crosses the link, the prefill side frees the leg's blocks, and the request takes its
    first step here.

    The transfer: bytes = KV bytes per token per rank (at the prefill pool's tensor-parallel
    size) × prompt tokens, sent by every prefill rank on its own link; when the decode replica
    has fewer ranks, each of its links takes several shares. A transfer starts when the
    replica's links are free (transfers into one replica queue, first come first served) and
    ends bytes ÷ bandwidth later plus the link's latency."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        d = self.cfg.disaggregation
        self.bandwidth_b_s = d.gb_s * 1e9
        self.latency_s = d.transfer_latency_s
        self.prefill: LLMPool | None = None
        self.ids = None
        self._link_free = [0.0] * len(self.replicas)
        for i, rep in enumerate(self.replicas):
            rep.receive = partial(self._transfer, i)

    def connect(self, prefill: LLMPool, ids) -> None:
        """Attach the prefill pool and the run's request ids (legs are requests too)."""
        self.prefill = prefill
        self.ids = ids
        self.link_bytes_per_token = link_bytes_per_token(prefill.cfg, self.cfg)
        """Bytes one link carries per prompt token (the busiest link when the sides differ)."""

    @property
    def prefix_engine(self):
        return self.prefill.cfg.engine

    def route(self, req) -> None:
        if req.kv_source is not None or req.num_retries:
            super().route(req)
            return
        leg = Request(next(self.ids), req.class_id, req.arrival_s, req.num_prompt_tokens, 1, req.block_hashes)
        req.block_hashes = None  # the prompt's blocks are cached (and looked up) on the prefill side
        leg.hold_kv = True
        leg.parent = req
        leg.stage = 0
        leg.on_done = self._prefilled
        req.kv_source = leg
        self.recorder.arrival(leg)
        self.prefill.route(leg)

    def _prefilled(self, leg: Request) -> None:
        req = leg.parent
        if leg.status == RequestStatus.FINISHED:
            req.first_scheduled_s = leg.first_scheduled_s
            req.num_external_tokens = req.num_prompt_tokens
            super().route(req)
            return
        req.status = leg.status
        req.reject_reason = f"prefill pool {self.prefill.cfg.name!r}: {leg.reject_reason}" if leg.reject_reason else ""
        req.fail_reason = f"prefill pool {self.prefill.cfg.name!r}: {leg.fail_reason}" if leg.fail_reason else ""
        if req.on_done is not None:
            req.on_done(req)

    def _transfer(self, i: int, req: Request) -> None:
        env = self.env
        now = env.now
        start = max(now, self._link_free[i])
        busy = self.link_bytes_per_token * req.num_prompt_tokens / self.bandwidth_b_s
        self._link_free[i] = start + busy
        env.call_later(start + busy + self.latency_s - now, _Transfer(self, i, req, now).arrived)


class _Transfer:
    """One prompt's KV cache crossing the link into decode replica ``i``."""

    __slots__ = ("pool", "i", "req", "started")

    def __init__(self, pool: DisaggregatedPool, i: int, req: Request, started: float):
        self.pool, self.i, self.req, self.started = pool, i, req, started

    def arrived(self, _timer: int) -> None:
        pool, req = self.pool, self.req
        req.kv_transfer_s = pool.env.now - self.started
        leg = req.kv_source
        pool.prefill.replicas[leg.replica - pool.prefill.first_index].release(leg)
        pool.replicas[self.i].received(req)


class DiffusionPool(Pool):
    def __init__(
        self,
        env,
        cfg: PoolConfig,
        recorder: Recorder,
        retry: dict[int, RetryPolicy],
        base_dir: Path | None = None,
        share: Share | None = None,
    ):
        super().__init__(env, cfg, recorder, retry)
        self.spec = catalog.get_diffusion_model(cfg.model)
        gpu = shared_gpu(catalog.get_gpu(cfg.gpu), share)
        batching = cfg.diffusion
        # Over several GPUs each holds the whole denoiser and its share of the requests' memory.
        gpus = cfg.tensor_parallel_size
        self.mem_budget = gpus * diffusion_memory_budget(
            self.spec, gpu, batching.gpu_memory_utilization, batching.dtype
        )
        cost = build_diffusion_cost(cfg, base_dir, gpu if share else None)
        if share is not None:
            gpus = gpus * share.billed  # billed: its share of the GPUs it shares
        self._mem: dict[tuple, tuple[int, float]] = {}
        for _ in range(cfg.replicas_built):
            index = recorder.add_replica(cfg.name, max(1, int(self.mem_budget / MIB)), gpus, 1 / 1024, llm=False)
            self._adopt(
                DiffusionReplica(env, index, DiffusionBatcher(batching, self.mem_budget), cost, recorder, batching)
            )
        for rep in self.replicas:
            rep.gpus = gpus
        if batching.step_cache is not None:
            from sim.diffusion.cost import cached_step_cost

            for rep in self.replicas:
                rep.cached_cost = cached_step_cost(batching.step_cache, self.spec)

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

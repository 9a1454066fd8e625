"""``servesim plan``: the cheapest fleet that meets every SLO.

A scenario's ``plan:`` block says what may vary: GPU types, TP degrees, models, knob variants
per pool, and pool layouts (``merge`` pools into shared ones: shared vs split). The search:

1. **Layouts into pools.** Every class runs on one pool, and pools share nothing, so each
   pool of each layout is sized on its own (a pool that two layouts have in common is sized
   once) and a layout costs the sum of its pools.
2. **Candidates.** For a pool, every (model, GPU, TP, variant) is a candidate. Analytic
   bounds prune before any simulation: the model must fit the GPU's memory; the floors of
   the SLO metrics (one request alone on an idle replica: its prefill for TTFT, a batch of
   one for TPOT, its whole generation for image E2E) must be within target; and
   utilisation < 1 gives the fewest replicas (offered work per second over the work a
   replica does per second at its largest batch), the first count simulated.
3. **Replica counts by simulation.** From that count up (doubling steps) until the SLOs are
   met, then bisection down to the fewest that meet them. Every evaluation simulates the
   pool with its own classes on common random numbers: replication r of class c draws
   from ``SeedSequence(seed, spawn_key=(r, c))``, as ``servesim run`` would, so every
   candidate sees the same arrivals and ``servesim run fleet.yaml`` reproduces the plan's
   figures. A percentile's 95 % CI comes from the replications; a close call adds
   replications (up to ``max_replications``) until the CI is on one side of the target,
   and is decided by the mean (and flagged) if it never is. Unfinished and rejected
   requests count as infinitely late.
4. **Order and pruning.** Each pool's candidate with the cheapest lower bound runs first;
   the others then run in parallel, capped at the replica count that would still be
   cheaper than it (so the answer does not depend on which worker finished first).

Outputs (``-o DIR``): ``plan.json`` (answer, every candidate with its status or rejection
reason and its evaluations, frontier), ``fleet.yaml`` (the answer as a runnable scenario)
and ``evaluations.jsonl`` (every simulated replication, appended as it finishes: a plan
run again with the same ``-o`` reuses them, so an interrupted plan resumes).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError

from sim import __version__, catalog, journal
from sim.config import (
    DEFAULT_PD_RATIOS,
    NEW_KINDS,
    SLO,
    PlanConfig,
    PlanLayout,
    PoolConfig,
    Scenario,
    apply_overrides,
    disaggregation_mismatch,
    format_validation_error,
    kinds_problem,
    parse_pd_ratio,
)
from sim.costs.base import StepShape
from sim.errors import ConfigError, ServesimError
from sim.metrics.summary import t_half_width
from sim.seeds import class_rng, replication_seed

EVALUATIONS_FILE = "evaluations.jsonl"
STABLE_FRACTION = 0.95
"""A class without an SLO must still be served: completions in the window at least this
fraction of its arrivals (as the run summary's overload flag)."""
LATE_S = 1e9
"""Latency given to a request that never finished (rejected, failed or still running)."""


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """One pool to size: its base config (the layout's pool, replicas ignored) and the
    classes it serves (indices into the scenario's classes)."""

    name: str
    pool: PoolConfig
    classes: tuple[int, ...]
    prefill: PoolConfig | None = None
    """A disaggregated pool's prefill pool, sized with it (replicas ignored)."""

    @property
    def key(self) -> str:
        text = self.pool.model_dump_json(exclude={"replicas"}) + json.dumps(self.classes)
        if self.prefill is not None:
            text += self.prefill.model_dump_json(exclude={"replicas"})
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Layout:
    name: str
    problems: list[Problem]


def layouts(scenario: Scenario) -> list[Layout]:
    """The pool layouts to compare; raises ConfigError for a class that spans pools."""
    for c in scenario.classes:
        if c.kind == "pipeline":
            raise ConfigError(
                f"classes.{c.name}: plan sizes pools one by one and needs every class on one pool; "
                f"a pipeline spans {len(c.stages)} stages (size each stage's pool with its own class)"
            )
    plan = scenario.plan or PlanConfig()
    specs = plan.layouts or [PlanLayout(name="as-given")]
    out = []
    for spec in specs:
        into = {m: new for new, members in spec.merge.items() for m in members}
        problems: dict[str, tuple[PoolConfig, list[int]]] = {}
        for p in scenario.pools:
            name = into.get(p.name, p.name)
            if name not in problems:
                problems[name] = (p.model_copy(update={"name": name}), [])
        for i, c in enumerate(scenario.classes):
            problems[into.get(c.pool, c.pool)][1].append(i)
        found = []
        for n, (pool, ix) in problems.items():
            if not ix:
                continue
            prefill = None
            if pool.disaggregation is not None:
                pool, prefill = _prefill_side(spec.name, n, pool, problems, into)
            found.append(Problem(n, pool, tuple(ix), prefill))
        out.append(Layout(spec.name, found))
    return out


def _prefill_side(layout: str, name: str, pool: PoolConfig, problems: dict, into: dict) -> tuple:
    """A disaggregated pool of a layout and its prefill pool's config (None when the layout
    merges the two: it serves aggregated). The prefill pool is sized with it, so it may not
    serve classes of its own."""
    own = into.get(pool.disaggregation.prefill_pool, pool.disaggregation.prefill_pool)
    if own == name:
        return pool.model_copy(update={"disaggregation": None}), None
    prefill, classes = problems[own]
    if classes:
        raise ConfigError(
            f"plan, layout {layout!r}: pool {own!r} prefills for {name!r} and also serves classes of its own; "
            "plan sizes a prefill pool together with its decode pool: give those classes another pool"
        )
    d = pool.disaggregation.model_copy(update={"prefill_pool": own})
    return pool.model_copy(update={"disaggregation": d}), prefill


# --------------------------------------------------------------------------- candidates


@dataclass
class Candidate:
    """One way to build a pool (everything but the replica count) and what it costs."""

    problem: str
    layout_pools: list[str]
    pool: PoolConfig | None
    label: dict[str, Any]
    usd_per_replica_hour: float = math.nan
    status: str = "pending"
    reason: str | None = None
    bounds: dict[str, Any] = field(default_factory=dict)
    replicas: int | None = None
    margin: float | None = None
    evaluations: list[dict] = field(default_factory=list)
    max_replicas: int = 64
    prefill: PoolConfig | None = None
    """Disaggregated: the prefill pool; ``replicas`` then counts units of ``ratio``."""
    ratio: tuple[int, int] | None = None
    """Disaggregated: prefill and decode replicas per unit."""
    side_usd: tuple[float, float] | None = None
    """Disaggregated: $ per replica-hour of the prefill side and of the decode side."""

    def cost(self, replicas: int | None) -> float | None:
        """$ per hour at ``replicas``; an autoscaled pool's at ``replicas`` most: the replicas
        it held on average, as simulated."""
        if replicas is None:
            return None
        if self.pool is not None and self.pool.autoscaling is not None:
            held = next((e.get("replicas_held") for e in self.evaluations if e["replicas"] == replicas), None)
            if held is not None:
                return held * self.usd_per_replica_hour
        return replicas * self.usd_per_replica_hour

    def fleet(self, n: int) -> tuple[PoolConfig, ...]:
        """The pools at ``n`` replicas (disaggregated: ``n`` units; the prefill pool first); an
        autoscaled pool at ``n`` replicas most (its least kept, or ``n`` if fewer)."""
        if self.ratio is None and self.pool.autoscaling is not None:
            a = self.pool.autoscaling
            low = min(a.min_replicas, n)
            scaling = a.model_copy(update={"max_replicas": n, "min_replicas": low})
            start = min(n, max(low, self.pool.replicas, 1))
            return (self.pool.model_copy(update={"replicas": start, "autoscaling": scaling}),)
        if self.ratio is None:
            return (self.pool.model_copy(update={"replicas": n}),)
        p, d = self.ratio
        return (
            self.prefill.model_copy(update={"replicas": n * p}),
            self.pool.model_copy(update={"replicas": n * d}),
        )


def gpu_price(plan: PlanConfig, pool: PoolConfig, base: PoolConfig) -> float:
    """$ per GPU-hour: the plan's price for the GPU type, else the pool's own override when the
    GPU is the pool's own, else the catalog's dated price."""
    from sim.fleet.pools import spot_price

    if pool.gpu in plan.prices:
        on_demand = plan.prices[pool.gpu]
    elif pool.gpu == base.gpu and base.price_per_gpu_hour is not None:
        on_demand = base.price_per_gpu_hour
    else:
        on_demand = catalog.get_gpu(pool.gpu).price.usd_per_gpu_hour
    return spot_price(pool, on_demand)


def candidates(scenario: Scenario, problem: Problem) -> list[Candidate]:
    """Every (model, GPU, TP, variant) for a pool; invalid combinations come back rejected."""
    plan = scenario.plan or PlanConfig()
    base = problem.pool
    space = plan.pools.get(problem.name)
    models = (space and space.models) or [base.model]
    gpus = (space and space.gpus) or plan.gpus or [base.gpu]
    tps = (space and space.tensor_parallel_size) or plan.tensor_parallel_size or [base.tensor_parallel_size]
    variants = (space and space.variants) or [{}]
    cap = (space and space.max_replicas) or plan.max_replicas
    raw = base.model_dump(exclude_unset=True, exclude={"replicas"})
    out = []
    # A diffusion pool's GPUs per request (xDiT degrees) come from its own list only.
    degrees = (space and space.tensor_parallel_size) or [base.tensor_parallel_size if base.is_diffusion else 1]
    for model in models:
        diffusion = model in catalog.diffusion_models()
        for gpu in gpus:
            for tp in degrees if diffusion else tps:
                for variant in variants:
                    label = {"model": model, "gpu": gpu, "tensor_parallel_size": tp, "knobs": dict(variant)}
                    d = {**raw, "model": model, "gpu": gpu}
                    if not diffusion or tp != 1:
                        d["tensor_parallel_size"] = tp
                    if gpu != base.gpu:
                        d.pop("price_per_gpu_hour", None)
                    cand = Candidate(problem.name, [], None, label, max_replicas=cap)
                    try:
                        d = apply_overrides(d, [f"{k}={json.dumps(v)}" for k, v in variant.items()])
                        cand.pool = PoolConfig.model_validate(d)
                    except ValidationError as exc:
                        cand.status, cand.reason = "rejected", f"invalid pool: {format_validation_error(exc)}"
                    except ConfigError as exc:
                        cand.status, cand.reason = "rejected", f"invalid variant: {exc}"
                    else:
                        cand.usd_per_replica_hour = cand.pool.tensor_parallel_size * gpu_price(plan, cand.pool, base)
                        if cand.pool.autoscaling is not None:
                            label["autoscale_min"] = cand.pool.autoscaling.min_replicas
                    if problem.prefill is not None:
                        out += _disaggregated(plan, problem, cand)
                        continue
                    out.append(cand)
    return out


def _disaggregated(plan: PlanConfig, problem: Problem, decode: Candidate) -> list[Candidate]:
    """A disaggregated pool's candidates from one decode-side candidate: every prefill-side GPU
    and TP degree (the prefill pool's search space) and every prefill:decode ratio. Each costs
    per unit: P prefill replicas and D decode replicas."""
    base = problem.prefill
    space = plan.pools.get(base.name)
    gpus = (space and space.gpus) or plan.gpus or [base.gpu]
    tps = (space and space.tensor_parallel_size) or plan.tensor_parallel_size or [base.tensor_parallel_size]
    own = plan.pools.get(problem.name)
    ratios = [parse_pd_ratio(r) for r in (own and own.pd_ratios) or DEFAULT_PD_RATIOS]
    raw = base.model_dump(exclude_unset=True, exclude={"replicas"})
    out = []
    for gpu in gpus:
        for tp in tps:
            for p, d in ratios:
                label = {
                    **decode.label,
                    "prefill": {"gpu": gpu, "tensor_parallel_size": tp},
                    "pd_ratio": f"{p}:{d}",
                }
                cand = Candidate(problem.name, [], decode.pool, label, max_replicas=decode.max_replicas, ratio=(p, d))
                if decode.status == "rejected":
                    cand.status, cand.reason = decode.status, decode.reason
                    out.append(cand)
                    continue
                try:
                    pre = {**raw, "model": decode.pool.model, "gpu": gpu, "tensor_parallel_size": tp}
                    if gpu != base.gpu:
                        pre.pop("price_per_gpu_hour", None)
                    cand.prefill = PoolConfig.model_validate(pre)
                except ValidationError as exc:
                    cand.status, cand.reason = "rejected", f"invalid prefill pool: {format_validation_error(exc)}"
                    out.append(cand)
                    continue
                why = disaggregation_mismatch(cand.prefill, decode.pool)
                if why:
                    cand.status, cand.reason = "rejected", why
                else:
                    cand.side_usd = (tp * gpu_price(plan, cand.prefill, base), decode.usd_per_replica_hour)
                    cand.usd_per_replica_hour = p * cand.side_usd[0] + d * cand.side_usd[1]
                out.append(cand)
    return out


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Settings:
    """What every evaluation shares (part of the cache key)."""

    seed: int
    replications: int
    max_replications: int
    duration_s: float | None
    warmup_s: float
    drain_timeout_s: float | None

    @classmethod
    def of(cls, scenario: Scenario, seed: int | None = None) -> Settings:
        plan = scenario.plan or PlanConfig()
        return cls(
            seed=scenario.seed if seed is None else seed,
            replications=plan.replications,
            max_replications=plan.max_replications,
            duration_s=plan.duration_s or scenario.duration_s,
            warmup_s=scenario.warmup_s,
            drain_timeout_s=scenario.drain_timeout_s,
        )


def sub_scenario(
    scenario: Scenario, pools: PoolConfig | tuple[PoolConfig, ...], classes: tuple[int, ...], settings: Settings
) -> Scenario:
    """The pool alone with its classes (a disaggregated pool: with its prefill pool, first), as
    the plan simulates it."""
    pools = (pools,) if isinstance(pools, PoolConfig) else pools
    picked = [scenario.classes[i].model_copy(update={"pool": pools[-1].name}) for i in classes]
    return scenario.model_copy(
        update={
            "pools": list(pools),
            "classes": picked,
            "duration_s": settings.duration_s,
            "seed": settings.seed,
            "plan": None,
        }
    )


def _streams(sub: Scenario, classes: tuple[int, ...], rep: int, base_dir: Path) -> list:
    """The pool's classes' request streams in replication ``rep``, drawn as ``servesim run`` draws them."""
    from sim.fleet.cluster import build_stream_for

    return [build_stream_for(sub, cls, class_rng(sub.seed, rep, i), base_dir) for i, cls in zip(classes, sub.classes)]


@dataclass(frozen=True)
class Check:
    """One SLO target of one class (or the stability of a class with no SLO)."""

    cls: str
    metric: str  # ttft_s, tpot_s, e2e_s, attainment or stable
    target: float
    percentile: float | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.metric in ("attainment", "stable")

    def margin(self, value: float) -> float:
        """(target - value) / target for a latency, (value - target) / (room) for a fraction:
        positive means met with room to spare."""
        if not math.isfinite(value):
            return -math.inf if not self.higher_is_better else -1.0
        if self.higher_is_better:
            room = 1 - self.target if self.metric == "attainment" and self.target < 1 else self.target
            return (value - self.target) / room
        return (self.target - value) / self.target


def checks_for(scenario: Scenario, classes: tuple[int, ...]) -> list[Check]:
    out = []
    for i in classes:
        cls = scenario.classes[i]
        slo = scenario.slo_for(cls)
        targets = _targets(slo, cls.kind)
        if not targets:
            out.append(Check(cls.name, "stable", STABLE_FRACTION))
        elif slo.attainment is not None:
            out.append(Check(cls.name, "attainment", slo.attainment))
        else:
            out += [Check(cls.name, m, t, slo.percentile) for m, t in targets]
    return out


def _targets(slo: SLO | None, kind: str) -> list[tuple[str, float]]:
    return [] if slo is None else slo.targets(kind)


def measure(checks: list[Check], sub: Scenario, result, window_end: float) -> dict[str, Any]:
    """One replication's value of every check, and the fraction of its requests rejected,
    over the window from warm-up to ``window_end`` (the last arrival of the whole scenario, as
    ``servesim run`` measures it)."""
    df = result.requests
    if "parent_id" in df:
        df = df[df["parent_id"] < 0]  # a disaggregated request's prefill leg is part of it
    t0, t1 = sub.warmup_s, window_end
    out: dict[str, Any] = {"values": {}, "rejected": {}}
    names = [c.name for c in sub.classes]
    for ck in checks:
        mine = df[(df["class_id"] == names.index(ck.cls)) & (df["arrival_s"] >= t0) & (df["arrival_s"] <= t1)]
        status = mine["status"].astype(str)
        done = (mine["finish_s"] >= 0).to_numpy()
        out["rejected"][ck.cls] = float((status == "rejected").mean()) if len(mine) else 0.0
        if ck.metric == "stable":
            finished_in = (
                (df["class_id"] == names.index(ck.cls)) & (df["finish_s"] >= t0) & (df["finish_s"] <= t1)
            ).sum()
            value = float(finished_in / len(mine)) if len(mine) else 1.0
        elif ck.metric == "attainment":
            from sim.metrics.summary import meets_slo

            slo = sub.slo_for(sub.classes[names.index(ck.cls)])
            value = float(meets_slo(mine, slo.model_copy(update={"attainment": None})).mean()) if len(mine) else 1.0
        else:
            vals = mine[ck.metric].to_numpy(dtype=float, na_value=np.nan)
            if ck.metric == "tpot_s":  # one output token: no inter-token time
                vals = np.where(done & np.isnan(vals), 0.0, vals)
            vals = np.where(done & ~np.isnan(vals), vals, LATE_S)
            value = float(np.percentile(vals, ck.percentile)) if len(vals) else 0.0
        out["values"][f"{ck.cls}/{ck.metric}"] = value
    return out


def decide(checks: list[Check], reps: list[dict]) -> dict[str, Any]:
    """Mean and 95 % CI of each check over replications. The evaluation meets its SLOs only
    when every check's CI is on the right side of its target; it is decided when some CI is
    wholly on the wrong side, or every one on the right side. An undecided evaluation that
    runs out of replications counts as a miss (not shown to meet at 95 % confidence)."""
    rows, decided, meets = [], True, True
    for ck in checks:
        vals = np.array([r["values"][f"{ck.cls}/{ck.metric}"] for r in reps], dtype=float)
        mean = float(vals.mean())
        hw = t_half_width(vals) if len(vals) > 1 else math.inf  # one replication shows nothing
        hw = 0.0 if not math.isfinite(hw) and np.all(vals == vals[0]) else hw
        lo, hi = mean - hw, mean + hw
        sure_met = lo >= ck.target if ck.higher_is_better else hi <= ck.target
        sure_missed = hi < ck.target if ck.higher_is_better else lo > ck.target
        rows.append(
            {
                "class": ck.cls,
                "metric": ck.metric,
                "percentile": ck.percentile,
                "slo": ck.target,
                "value": mean,
                "ci95": hw,
                "met": bool(sure_met),
                "decided": bool(sure_met or sure_missed),
                "margin": ck.margin(mean),
            }
        )
        meets &= sure_met
        if sure_missed:
            return _verdict(rows, False, True)
        decided &= sure_met or sure_missed
    return _verdict(rows, meets, decided)


def _verdict(rows: list[dict], meets: bool, decided: bool) -> dict[str, Any]:
    return {"meets": bool(meets), "decided": bool(decided), "margin": min(r["margin"] for r in rows), "checks": rows}


class Evaluator:
    """Simulates a candidate at a replica count, replication by replication, caching each
    replication's measurements (in memory and, when given, appended to a JSONL file)."""

    def __init__(self, scenario: Scenario, base_dir: Path, settings: Settings, cache: dict, cache_path: Path | None):
        self.scenario, self.base_dir, self.settings = scenario, base_dir, settings
        self.cache, self.cache_path = cache, cache_path
        self.simulated = 0
        self.new: list[dict] = []
        self._ends: dict[int, float] = {}

    def window_end(self, rep: int) -> float:
        """Replication ``rep``'s last arrival over every class of the scenario."""
        if rep not in self._ends:
            from sim.fleet.cluster import build_stream_for
            from sim.workload.stream import ClosedStream

            s = self.settings
            full = self.scenario.model_copy(update={"duration_s": s.duration_s, "seed": s.seed, "plan": None})
            ends = [0.0]
            for i, c in enumerate(full.classes):
                stream = build_stream_for(full, c, class_rng(s.seed, rep, i), self.base_dir)
                if len(stream.arrival_s):
                    ends.append(float(stream.arrival_s[-1]))
                elif isinstance(stream, ClosedStream) and s.duration_s is not None:
                    ends.append(float(s.duration_s))  # a closed loop: arrivals follow answers until then
            self._ends[rep] = max(ends)
        return self._ends[rep]

    def key(self, fleet: tuple[PoolConfig, ...], classes: tuple[int, ...], rep: int) -> str:
        pools = [p.model_dump(mode="json") for p in fleet]
        sc = self.scenario
        # The workload itself, not only the classes' numbers: a plan resumed into the same folder
        # after the scenario's classes (or its own catalog entries) changed must not reuse results.
        workload = [sc.classes[i].model_dump(mode="json") for i in classes]
        if sc.catalog is not None:
            workload.append(sc.catalog.model_dump(mode="json"))
        text = json.dumps(
            [
                pools[0] if len(pools) == 1 else pools,
                classes,
                workload,
                asdict(self.settings) | {"replications": 0, "max_replications": 0},
                rep,
                __version__,
            ],
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def replication(
        self, fleet: tuple[PoolConfig, ...], classes: tuple[int, ...], checks: list[Check], rep: int
    ) -> dict:
        key = self.key(fleet, classes, rep)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        from sim.fleet.cluster import simulate

        sub = sub_scenario(self.scenario, fleet, classes, self.settings)
        streams = _streams(sub, classes, rep, self.base_dir)
        t0 = time.perf_counter()
        result = simulate(
            sub, self.base_dir, replication_seed(sub.seed, rep, len(self.scenario.classes)), streams=streams
        )
        record = measure(checks, sub, result, self.window_end(rep)) | {
            "key": key,
            "wall_s": round(time.perf_counter() - t0, 4),
        }
        if result.scaling:
            record["replicas_held"] = replicas_held(result, sub.warmup_s, self.window_end(rep))
        self.simulated += 1
        self.cache[key] = record
        self.new.append(record)
        if self.cache_path is not None:
            journal.append(self.cache_path, record)
        return record

    def evaluate(self, fleet: tuple[PoolConfig, ...], classes: tuple[int, ...], checks: list[Check], n: int) -> dict:
        """Replications of the pools ``fleet`` (``n`` replicas, or units of a disaggregated
        pair) until every check is decided (or max_replications); the verdict. A workload with
        nothing random (trace replay, no faults) needs one replication."""
        s = self.settings
        first = 1 if deterministic(self.scenario, fleet, classes) else s.replications
        reps = [self.replication(fleet, classes, checks, r) for r in range(first)]
        verdict = decide(checks, reps)
        while first > 1 and not verdict["decided"] and len(reps) < s.max_replications:
            reps.append(self.replication(fleet, classes, checks, len(reps)))
            verdict = decide(checks, reps)
        rejected = {c: float(np.mean([r["rejected"][c] for r in reps])) for c in reps[0]["rejected"]}
        out = {"replicas": n, "replications": len(reps), **verdict, "rejected": rejected}
        if "replicas_held" in reps[0]:
            out["replicas_held"] = float(np.mean([r["replicas_held"] for r in reps]))
        return out


def replicas_held(result, t0: float, t1: float) -> float:
    """Replicas an autoscaled fleet held on average from ``t0`` to ``t1`` (all its autoscaled
    pools together; a plan's fleet has one)."""
    pools = set(result.scaling)
    rows = result.replicas[result.replicas["pool"].isin(pools)]
    from sim.fleet.autoscale import held_s

    total = sum(held_s(result.held.get(int(i), []), t0, t1) for i in rows["replica"])
    return total / (t1 - t0) if t1 > t0 else 0.0


def deterministic(scenario: Scenario, fleet: tuple[PoolConfig, ...], classes: tuple[int, ...]) -> bool:
    """True when every replication would be the same: text classes replaying a trace's own
    arrivals and lengths, and no replica failures."""
    picked = [scenario.classes[i] for i in classes]
    return all(p.effective_faults is None for p in fleet) and all(
        c.kind == "text" and c.trace is not None and c.arrival is None for c in picked
    )


def read_cache(path: Path) -> dict[str, dict]:
    """Finished replications from an earlier run, by key (a cut last line is ignored)."""
    return {rec["key"]: rec for rec in journal.read_records(path, "key")}


# --------------------------------------------------------------------------- analytic bounds


def bounds(
    scenario: Scenario, cand: Candidate, classes: tuple[int, ...], settings: Settings, base_dir: Path
) -> str | None:
    """Fill ``cand.bounds`` (fewest replicas by utilisation < 1, SLO floors); return why the
    candidate cannot work at any replica count, or None."""
    from sim.costs.factory import build_cost_model, build_diffusion_cost
    from sim.fleet.pools import check_pool_fits

    pool = cand.pool
    picked = [scenario.classes[i] for i in classes]
    cfg = any(getattr(c.shape, "cfg", False) for c in picked if c.kind in ("ar_image", "audio"))
    why = kinds_problem(pool, {c.kind for c in picked}, False, cfg)
    if why:
        return why  # a variant or a merge the kinds beyond text and images cannot run on
    if cand.prefill is not None:
        return _disaggregated_bounds(scenario, cand, classes, settings, base_dir)
    try:
        check_pool_fits(pool)
    except ServesimError as exc:
        return f"does not fit: {exc}"
    sub = sub_scenario(scenario, pool, classes, settings)
    try:
        streams = _streams(sub, classes, 0, base_dir)
        cost = build_diffusion_cost(pool, base_dir) if pool.is_diffusion else build_cost_model(pool, base_dir)
    except ServesimError as exc:
        return str(exc)
    span = max((float(s.arrival_s[-1]) for s in streams if len(s)), default=0.0) or 1.0
    work = 0.0
    for cls, stream in zip(sub.classes, streams):
        if not len(stream) or cls.kind in NEW_KINDS:
            continue  # the kinds beyond text and images have no analytic bound: simulation decides
        slo = sub.slo_for(cls)
        q = slo.percentile if slo is not None and slo.attainment is None else 50.0
        if pool.is_diffusion:
            per_req, floor = _image_bounds(pool, cost, stream)
            floors = {"e2e_s": float(np.percentile(floor, q))}
        else:
            per_req, floors = _text_bounds(pool, cost, stream, q)
        work += len(stream) / span * per_req
        cand.bounds[f"{cls.name}/gpu_s_per_request"] = per_req
        why = _floor_miss(cand, cls, slo, q, floors, "an idle replica")
        if why:
            return why
    cand.bounds["offered_load"] = work
    cand.bounds["min_replicas"] = max(1, math.floor(work) + 1)
    return None


def _floor_miss(cand: Candidate, cls, slo: SLO | None, q: float, floors: dict[str, float], where: str) -> str:
    """Record the class's SLO floors in ``cand.bounds``; why one is beyond its target ('' if none)."""
    for metric, target in _targets(slo, cls.kind):
        if metric in floors:
            cand.bounds[f"{cls.name}/{metric}_floor"] = floors[metric]
            if floors[metric] > target:
                what = f"p{q:g} " if slo.attainment is None else ""
                return (
                    f"{cls.name}: {what}{metric.removesuffix('_s').upper()} is at least {_secs(floors[metric])} even on "
                    f"{where} (SLO {_secs(target)})"
                )
    return ""


def _disaggregated_bounds(
    scenario: Scenario, cand: Candidate, classes: tuple[int, ...], settings: Settings, base_dir: Path
) -> str | None:
    """``bounds`` for a prefill/decode pair: the prefill side's work is the prompts (full
    chunks: a prefill replica batches prompts up to its token budget), the decode side's the
    outputs at the full decode batch; the fewest units keep both sides below full use. The TTFT
    floor is a prompt's prefill alone, its transfer on an idle link and one decode step; the
    TPOT floor a decode batch of one."""
    from sim.costs.factory import build_cost_model
    from sim.fleet.capacity import text_capacity
    from sim.fleet.pools import check_pool_fits, transfer_s

    pre, dec = cand.prefill, cand.pool
    for side, p in (("prefill", pre), ("decode", dec)):
        try:
            check_pool_fits(p)
        except ServesimError as exc:
            return f"{side} side does not fit: {exc}"
    sub = sub_scenario(scenario, cand.fleet(1), classes, settings)
    try:
        streams = _streams(sub, classes, 0, base_dir)
        cost_p, cost_d = build_cost_model(pre, base_dir), build_cost_model(dec, base_dir)
    except ServesimError as exc:
        return str(exc)
    span = max((float(s.arrival_s[-1]) for s in streams if len(s)), default=0.0) or 1.0
    chunk = pre.engine.max_num_batched_tokens
    full = StepShape()
    full.add_prefill(chunk, 0)
    prefill_token_s = cost_p.step_s(full) / chunk
    work_p = work_d = 0.0
    for cls, stream in zip(sub.classes, streams):
        if not len(stream):
            continue
        slo = sub.slo_for(cls)
        q = slo.percentile if slo is not None and slo.attainment is None else 50.0
        prompt = stream.prompt_tokens.astype(float)
        output = stream.output_tokens.astype(float)
        cap = text_capacity(dec, cost_d, float(np.mean(prompt + output)), float(np.mean(prompt + output / 2)))
        cached = stream.prefix_hashes is not None and pre.engine.enable_prefix_caching
        per_p = 0.0 if cached else float(np.mean(prompt)) * prefill_token_s
        per_d = float(np.mean(output)) * cap.decode_token_s
        rate = len(stream) / span
        work_p += rate * per_p
        work_d += rate * per_d
        cand.bounds[f"{cls.name}/gpu_s_per_request"] = per_p + per_d
        one = StepShape()
        one.add_decode(int(np.percentile(prompt + output / 2, q)))
        floors = {"tpot_s": cost_d.step_s(one)}
        if not cached:
            tokens = int(np.percentile(prompt, q))
            first = StepShape()
            first.add_decode(tokens)
            floors["ttft_s"] = (
                _prefill_s(cost_p, tokens, chunk if pre.engine.enable_chunked_prefill else None)
                + transfer_s(pre, dec, tokens)
                + cost_d.step_s(first)
            )
        why = _floor_miss(cand, cls, slo, q, floors, "idle replicas")
        if why:
            return why
    p, d = cand.ratio
    cand.bounds["offered_load"] = work_p + work_d
    cand.bounds["offered_load_prefill"] = work_p
    cand.bounds["offered_load_decode"] = work_d
    cand.bounds["min_replicas"] = max(1, math.floor(work_p / p) + 1, math.floor(work_d / d) + 1)
    return None


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _secs(x: float) -> str:
    return f"{x * 1000:.3g} ms" if x < 1 else f"{x:.3g} s"


def _text_bounds(pool: PoolConfig, cost, stream, q: float) -> tuple[float, dict[str, float]]:
    """GPU-seconds per request at the largest batch the KV cache and max_num_seqs allow
    (decode per token, prefill as the marginal cost of a chunk riding along), and the floors
    of TTFT (the prompt's prefill alone; not with prefix caching, which can skip it) and TPOT
    (a batch of one)."""
    from sim.fleet.capacity import text_capacity

    e = pool.engine
    prompt = stream.prompt_tokens.astype(float)
    output = stream.output_tokens.astype(float)
    full = text_capacity(pool, cost, float(np.mean(prompt + output)), float(np.mean(prompt + output / 2)))
    # With prefix caching a cached prompt skips its prefill: leave prefill out of the bound.
    prefill = 0.0 if stream.prefix_hashes is not None and e.enable_prefix_caching else float(np.mean(prompt))
    per_req = prefill * full.prefill_token_s + float(np.mean(output)) * full.decode_step_s / full.batch
    floors: dict[str, float] = {}
    one = StepShape()
    one.add_decode(int(np.percentile(prompt + output / 2, q)))
    floors["tpot_s"] = cost.step_s(one)
    if e.speculative is not None:
        floors["tpot_s"] /= e.speculative.num_speculative_tokens + 1  # a step may emit k + 1 tokens
    if stream.prefix_hashes is None:
        floors["ttft_s"] = _prefill_s(
            cost, int(np.percentile(prompt, q)), e.max_num_batched_tokens if e.enable_chunked_prefill else None
        )
    return per_req, floors


def _prefill_s(cost, tokens: int, chunk: int | None) -> float:
    done, total = 0, 0.0
    while done < tokens:
        n = tokens - done if chunk is None else min(chunk, tokens - done)
        shape = StepShape()
        shape.add_prefill(n, done)
        total += cost.step_s(shape)
        done += n
    return total


def _image_bounds(pool: PoolConfig, cost, stream) -> tuple[float, np.ndarray]:
    """GPU-seconds per request in full batches of max_batch_size, and each request's time
    alone (text encoding, every step, VAE decode)."""
    spec = catalog.get_diffusion_model(pool.model)
    sh = stream.shape
    tokens = spec.latent_tokens(sh.width, sh.height, sh.frames)
    per_row = 2 if sh.cfg else 1
    alone = {}
    for steps, images in set(zip(stream.steps.tolist(), stream.images.tolist())):
        alone[steps, images] = (
            cost.text_encode_s(per_row)
            + steps * cost.denoise_step_s(images * per_row, tokens)
            + cost.vae_decode_s(images, sh.width, sh.height, sh.frames)
        )
    floor = np.array([alone[s, i] for s, i in zip(stream.steps.tolist(), stream.images.tolist())])
    k = pool.diffusion.max_batch_size
    # Rounded down: the bound prunes candidates by cost, so it must not overstate the work.
    steps, images = float(np.mean(stream.steps)), max(1, math.floor(float(np.mean(stream.images))))
    batch = cost.text_encode_s(k * per_row) + steps * cost.denoise_step_s(k * images * per_row, tokens)
    batch += k * cost.vae_decode_s(images, sh.width, sh.height, sh.frames)
    return batch / k, floor


# --------------------------------------------------------------------------- search


def search(task: tuple) -> dict:
    """Size one candidate (a worker's job): the fewest replicas meeting every check, at most
    ``cap``. Returns the candidate's fields to update."""
    _, scenario, base_dir, settings, problem, cand, cap, cache, cache_path = task
    if scenario.catalog is not None:
        scenario.catalog.add()  # a worker process: the scenario's own models and GPUs
    ev = Evaluator(scenario, Path(base_dir), settings, cache, Path(cache_path) if cache_path else None)
    checks = checks_for(scenario, problem.classes)
    results: dict[int, dict] = {}
    t0 = time.perf_counter()

    def at(n: int) -> dict:
        if n not in results:
            results[n] = ev.evaluate(cand.fleet(n), problem.classes, checks, n)
        return results[n]

    def out(status: str, replicas: int | None, reason: str | None = None) -> dict:
        evals = [results[n] for n in sorted(results)]
        margin = results[replicas]["margin"] if replicas is not None else None
        return {
            "status": status,
            "replicas": replicas,
            "reason": reason,
            "margin": margin,
            "evaluations": evals,
            "simulated": ev.simulated,
            "new_records": ev.new if ev.cache_path is None else [],
            "wall_s": round(time.perf_counter() - t0, 3),
        }

    lo = min(cand.bounds.get("min_replicas", 1), cap)
    allowed = {c.cls: 1 - (c.percentile or 100) / 100 for c in checks}
    first_meet, last_miss = None, 0
    n, step = lo, 1
    while True:
        r = at(n)
        if r["meets"]:
            first_meet = n
            break
        last_miss = n
        refused = {c: f for c, f in r["rejected"].items() if f > allowed.get(c, 0.0) + 1e-12}
        if refused:
            c, f = next(iter(refused.items()))
            return out(
                "rejected",
                None,
                f"{c}: {f:.1%} of requests are rejected (they cannot fit the KV cache or max_model_len); more replicas do not help",
            )
        if n >= cap:
            worst = min(r["checks"], key=lambda x: x["margin"])
            why = "the cheapest found so far" if cap < cand.max_replicas else f"max_replicas ({cand.max_replicas})"
            return out(
                "rejected",
                None,
                f"misses at {count_text(cand.label, n)}, the most allowed by {why}: {_check_text(worst)}",
            )
        n, step = min(cap, n + step), step * 2
    if first_meet == lo and lo > 1:
        # The utilisation bound is only a bound: make sure one fewer misses.
        if at(lo - 1)["meets"]:
            first_meet, last_miss = lo - 1, 0
        else:
            last_miss = lo - 1
    while first_meet - last_miss > 1:
        mid = (first_meet + last_miss) // 2
        if at(mid)["meets"]:
            first_meet = mid
        else:
            last_miss = mid
    if first_meet + 1 <= cand.max_replicas:
        at(first_meet + 1)  # one more replica's headroom: a point on the cost-margin frontier
    return out("feasible", first_meet)


def _check_text(c: dict) -> str:
    if not c["decided"]:
        return (
            f"{c['class']} {_metric_name(c)} {_value_text(c)} is not shown within {_target_text(c)} at 95 % confidence"
        )
    if c["metric"] == "stable":
        return f"{c['class']} completes only {c['value']:.0%} of its arrivals (overloaded)"
    if c["metric"] == "attainment":
        return f"{c['class']} SLO attainment {c['value']:.1%} < {c['slo']:.1%}"
    name = c["metric"].removesuffix("_s").upper()
    value = "never (overloaded)" if c["value"] >= LATE_S / 10 else _secs(c["value"])
    return f"{c['class']} p{c['percentile']:g} {name} {value} > {_secs(c['slo'])}"


# --------------------------------------------------------------------------- the plan


@dataclass
class PlanResult:
    scenario: Scenario
    settings: Settings
    layouts: list[Layout]
    candidates: dict[str, list[Candidate]]
    """Per problem key."""
    answer: dict[str, Any]
    layout_rows: list[dict]
    frontier: list[dict]
    wall_s: float
    simulated: int


def plan_fleet(
    scenario: Scenario,
    base_dir: Path,
    *,
    out_dir: Path | None = None,
    workers: int | None = None,
    backend: str = "local",
    address: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> PlanResult:
    """Search for the cheapest fleet; see the module docstring."""
    from sim.costs.factory import check_cost_models
    from sim.workload.stream import check_trace_files

    t0 = time.perf_counter()
    check_trace_files(scenario, base_dir)
    check_cost_models(scenario, base_dir)
    settings = Settings.of(scenario)
    lays = layouts(scenario)
    problems = {p.key: p for lay in lays for p in lay.problems}
    cache_path = None
    cache: dict[str, dict] = {}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        cache_path = out_dir / EVALUATIONS_FILE
        cache = read_cache(cache_path)
        journal.cut_partial_line(cache_path)  # a killed plan's half-written line, before anything is appended
    cands: dict[str, list[Candidate]] = {}
    for key, prob in problems.items():
        cs = candidates(scenario, prob)
        for c in cs:
            c.layout_pools = [f"{lay.name}/{p.name}" for lay in lays for p in lay.problems if p.key == key]
            if c.status == "pending":
                why = bounds(scenario, c, prob.classes, settings, base_dir)
                if why is None and c.bounds["min_replicas"] > c.max_replicas:
                    why = (
                        f"needs at least {count_text(c.label, c.bounds['min_replicas'])} by its throughput bound (offered load "
                        f"{c.bounds['offered_load']:.3g} replicas' worth); max_replicas is {c.max_replicas}"
                    )
                if why is not None:
                    c.status, c.reason = "rejected", why
        cands[key] = cs
    # Phase 1: per pool, the candidate with the cheapest lower bound. Phase 2: the rest, each
    # capped below the cost phase 1 found (ties allowed; the earlier candidate wins them).
    firsts: list[tuple[str, Candidate]] = []
    for key, cs in cands.items():
        live = [c for c in cs if c.status == "pending"]
        if live:
            firsts.append((key, min(live, key=lambda c: c.usd_per_replica_hour * c.bounds["min_replicas"])))
    simulated = _run_searches(
        scenario,
        base_dir,
        settings,
        problems,
        [(k, c, c.max_replicas) for k, c in firsts],
        cache,
        cache_path,
        workers,
        backend,
        address,
        progress,
    )
    second = []
    for key, first in firsts:
        best = first.cost(first.replicas) if first.status == "feasible" else None
        for c in cands[key]:
            if c.status != "pending":
                continue
            cap = c.max_replicas
            if best is not None:
                cap = min(cap, math.floor(best / c.usd_per_replica_hour + 1e-9))
            if cap < c.bounds["min_replicas"]:
                c.status = "rejected"
                least = c.bounds["min_replicas"]
                what = (
                    f"one {'unit' if c.ratio else 'replica'}"
                    if least == 1
                    else f"the {count_text(c.label, least)} its throughput bound needs"
                )
                c.reason = f"{what} (${least * c.usd_per_replica_hour:,.2f}/h) cost more than the ${best:,.2f}/h found"
                if least == 1:
                    c.reason = c.reason.replace(" cost more", " costs more")
                continue
            second.append((key, c, cap))
    simulated += _run_searches(
        scenario, base_dir, settings, problems, second, cache, cache_path, workers, backend, address, progress
    )
    answer, layout_rows = _answer(scenario, lays, cands)
    frontier = _frontier(lays, cands)
    return PlanResult(
        scenario, settings, lays, cands, answer, layout_rows, frontier, time.perf_counter() - t0, simulated
    )


def _run_searches(
    scenario, base_dir, settings, problems, jobs, cache, cache_path, workers, backend, address, progress
) -> int:
    if not jobs:
        return 0
    # Local workers append to the evaluations file themselves (a killed plan keeps every
    # finished replication); Ray workers may be on other hosts: the driver appends for them.
    shared_file = str(cache_path) if cache_path is not None and backend != "ray" else None
    tasks = [
        (str(i), scenario, str(base_dir), settings, problems[key], cand, cap, cache, shared_file)
        for i, (key, cand, cap) in enumerate(jobs)
    ]
    by_id = {t[0]: t[5] for t in tasks}
    failures: list = []
    simulated = 0
    for res in _map(tasks, workers, backend, address, failures):
        cand = by_id[res.pop("id")]
        simulated += res.pop("simulated")
        res.pop("wall_s")
        for record in res.pop("new_records"):
            cache[record["key"]] = record
            if cache_path is not None:
                journal.append(cache_path, record)
        for k, v in res.items():
            setattr(cand, k, v)
        if progress is not None:
            progress(_progress_line(cand))
    if failures:
        tid, exc = failures[0]
        raise ConfigError(f"a candidate search failed ({by_id[tid].label}): {type(exc).__name__}: {exc}") from exc
    return simulated


def _search_task(task: tuple) -> dict:
    return {"id": task[0], **search(task)}


def _map(tasks: list, workers: int | None, backend: str, address: str | None, failures: list) -> Iterator[dict]:
    from sim.parallel import run_local, run_ray, usable_cpus

    if backend == "ray":
        yield from run_ray(tasks, workers, address, failures, fn=_search_task)
    elif len(tasks) == 1 or (workers or usable_cpus()) == 1:
        for t in tasks:  # no process pool for one search: the cache stays shared in memory
            yield _search_task(t)
    else:
        yield from run_local(tasks, workers, failures, fn=_search_task)


def _progress_line(c: Candidate) -> str:
    what = f"{c.problem}: {describe(c.label)}"
    if c.status == "feasible":
        return f"{what}: {count_text(c.label, c.replicas)}, ${c.cost(c.replicas):,.2f}/h"
    return f"{what}: rejected ({c.reason})"


def describe(label: dict) -> str:
    parts = [label["model"], label["gpu"]]
    if label["tensor_parallel_size"] > 1:
        parts.append(f"TP{label['tensor_parallel_size']}")
    parts += [f"{k}={v}" for k, v in label["knobs"].items()]
    pre = label.get("prefill")
    if pre is not None:
        tp = f" TP{pre['tensor_parallel_size']}" if pre["tensor_parallel_size"] > 1 else ""
        parts.append(f"decode, prefill on {pre['gpu']}{tp}, P:D {label['pd_ratio']}")
    return " ".join(parts)


def count_text(label: dict, n: int) -> str:
    """``n`` replicas, or for a disaggregated pair ``n`` units and the replicas they make, or
    for an autoscaled pool its bounds."""
    ratio = label.get("pd_ratio")
    if label.get("autoscale_min") is not None:
        return f"autoscaled {min(label['autoscale_min'], n)}-{n} replicas"
    if ratio is None:
        return _n(n, "replica")
    p, d = parse_pd_ratio(ratio)
    return f"{_n(n, 'unit')} of {ratio} ({n * p}P:{n * d}D)"


def _pick(c: Candidate, pool: str, n: int) -> dict:
    """A pool's choice at ``n`` (replicas, or units of a disaggregated pair): its label, its
    replicas and GPUs, and for a pair the prefill side's."""
    out = {"pool": pool, **c.label, "replicas": n, "gpus": n * c.label["tensor_parallel_size"]}
    if c.pool is not None and c.pool.autoscaling is not None:
        scaled = c.fleet(n)[0]
        held = next((e.get("replicas_held") for e in c.evaluations if e["replicas"] == n), None)
        out["autoscaling"] = {
            "min_replicas": scaled.autoscaling.min_replicas,
            "max_replicas": n,
            "replicas_held": held,
        }
    if c.ratio is not None:
        p, d = c.ratio
        tp_p, tp_d = c.prefill.tensor_parallel_size, c.pool.tensor_parallel_size
        out.update(
            {
                "units": n,
                "replicas": n * d,
                "gpus": n * (p * tp_p + d * tp_d),
                "prefill": {
                    "pool": c.prefill.name,
                    "gpu": c.prefill.gpu,
                    "tensor_parallel_size": tp_p,
                    "replicas": n * p,
                    "gpus": n * p * tp_p,
                    "cost_per_hour": n * p * c.side_usd[0],
                },
            }
        )
    return out


def _best(cs: list[Candidate]) -> Candidate | None:
    feasible = [c for c in cs if c.status in ("feasible", "chosen")]
    return min(feasible, key=lambda c: (c.cost(c.replicas), -c.margin)) if feasible else None


def _answer(scenario: Scenario, lays: list[Layout], cands: dict[str, list[Candidate]]) -> tuple[dict, list[dict]]:
    rows, best_layout, best_cost = [], None, math.inf
    for lay in lays:
        picks = [(p, _best(cands[p.key])) for p in lay.problems]
        missing = [p.name for p, c in picks if c is None]
        cost = sum(c.cost(c.replicas) for _, c in picks if c is not None)
        row = {"name": lay.name, "feasible": not missing, "cost_per_hour": None if missing else cost, "reason": None}
        if missing:
            why = [f"{p.name}: {_closest_miss(cands[p.key])}" for p, c in picks if c is None]
            row["reason"] = "no candidate meets the SLOs of " + "; ".join(why)
        elif cost < best_cost - 1e-9:
            best_layout, best_cost = lay, cost
        rows.append(row)
    if best_layout is None:
        return {"feasible": False, "layout": None, "cost_per_hour": None, "pools": []}, rows
    for row in rows:
        if row["feasible"] and row["name"] != best_layout.name:
            extra = row["cost_per_hour"] - best_cost
            row["reason"] = f"${extra:,.2f}/h ({extra / best_cost:.0%}) more than {best_layout.name} for the same SLOs"
    pools = []
    for p in best_layout.problems:
        c = _best(cands[p.key])
        c.status = "chosen"
        fewer = next((e for e in c.evaluations if e["replicas"] == c.replicas - 1), None)
        chosen = next(e for e in c.evaluations if e["replicas"] == c.replicas)
        pools.append(
            {
                **_pick(c, p.name, c.replicas),
                "cost_per_hour": c.cost(c.replicas),
                "usd_per_replica_hour": c.usd_per_replica_hour,
                "margin": c.margin,
                "classes": [scenario.classes[i].name for i in p.classes],
                "checks": chosen["checks"],
                "replications": chosen["replications"],
                "one_fewer": None
                if fewer is None
                else {
                    "replicas": fewer["replicas"],
                    "margin": fewer["margin"],
                    "meets": fewer["meets"],
                    "checks": fewer["checks"],
                },
            }
        )
    # The binding pool: where one replica fewer misses by the most (its SLO is what the fleet
    # size is bought for); pools at one replica have no fewer to try.
    tried = [p for p in pools if p["one_fewer"] is not None]
    binding = min(tried, key=lambda p: p["one_fewer"]["margin"])["pool"] if tried else None
    answer = {
        "feasible": True,
        "layout": best_layout.name,
        "cost_per_hour": best_cost,
        "gpus": sum(p["gpus"] for p in pools),
        "binding_pool": binding,
        "pools": pools,
    }
    return answer, rows


def _closest_miss(cs: list[Candidate]) -> str:
    """Why a pool has no answer, in one line: the reason of its candidate that came closest
    (the one searched first: the cheapest lower bound), or of the first one rejected."""
    searched = [c for c in cs if c.evaluations]
    if searched:
        c = min(searched, key=lambda c: c.usd_per_replica_hour * c.bounds.get("min_replicas", 1))
        return f"{describe(c.label)}: {c.reason}"
    c = next((c for c in cs if c.reason), None)
    return f"{describe(c.label)}: {c.reason}" if c is not None else "no candidate"


def _frontier(lays: list[Layout], cands: dict[str, list[Candidate]]) -> list[dict]:
    """Cheapest fleet for each SLO margin: every evaluation that met its SLOs is an option for
    its pool; a fleet's margin is its pools' smallest. Pareto points only (more margin costs
    more)."""
    points = []
    for lay in lays:
        options: dict[str, list[tuple[float, float, dict]]] = {}
        for p in lay.problems:
            opts = []
            for c in cands[p.key]:
                for e in c.evaluations:
                    if e["meets"]:
                        opts.append((c.cost(e["replicas"]), e["margin"], _pick(c, p.name, e["replicas"])))
            options[p.name] = opts
        if not all(options.values()):
            continue
        for m in sorted({o[1] for opts in options.values() for o in opts}):
            chosen = []
            for opts in options.values():
                ok = [o for o in opts if o[1] >= m]
                if not ok:
                    break
                chosen.append(min(ok, key=lambda o: (o[0], -o[1])))
            else:
                points.append(
                    {
                        "cost_per_hour": sum(o[0] for o in chosen),
                        "margin": min(o[1] for o in chosen),
                        "layout": lay.name,
                        "pools": [o[2] for o in chosen],
                    }
                )
    points.sort(key=lambda p: (p["cost_per_hour"], -p["margin"]))
    frontier, best_margin = [], -math.inf
    for pt in points:
        if pt["margin"] > best_margin + 1e-12:
            frontier.append(pt)
            best_margin = pt["margin"]
    return frontier


# --------------------------------------------------------------------------- outputs


def fleet_scenario(result: PlanResult) -> dict[str, Any]:
    """The answer as a scenario ``servesim run`` takes (the plan block dropped)."""
    sc = result.scenario
    raw = sc.model_dump(mode="json", exclude_unset=True, exclude={"plan"})
    lay = next(lay for lay in result.layouts if lay.name == result.answer["layout"])
    picks = {p["pool"]: p for p in result.answer["pools"]}
    pools, owner = [], {}
    for prob in lay.problems:
        c = next(c for c in result.candidates[prob.key] if c.status == "chosen")
        pick = picks[prob.name]
        if c.ratio is not None:
            pre = c.prefill.model_dump(mode="json", exclude_unset=True)
            pre["replicas"] = pick["prefill"]["replicas"]
            pre["price_per_gpu_hour"] = c.side_usd[0] / c.prefill.tensor_parallel_size
            pools.append(pre)
        if c.pool.autoscaling is not None:
            d = c.fleet(pick["replicas"])[0].model_dump(mode="json", exclude_unset=True)
        else:
            d = c.pool.model_dump(mode="json", exclude_unset=True)
            d["replicas"] = pick["replicas"]
        d["price_per_gpu_hour"] = (c.side_usd[1] if c.ratio else c.usd_per_replica_hour) / c.pool.tensor_parallel_size
        pools.append(d)
        for i in prob.classes:
            owner[sc.classes[i].name] = prob.name
    raw["pools"] = pools
    for cls in raw["classes"]:
        cls["pool"] = owner[cls["name"]]
    # As many replications as the most any chosen pool needed (a pool decided with fewer sees
    # the extra ones too: same seeds, so its first replications are the plan's).
    raw["replications"] = max(p["replications"] for p in result.answer["pools"])
    if result.settings.duration_s is not None:
        raw["duration_s"] = result.settings.duration_s
    raw["description"] = f"Cheapest fleet found by servesim plan for {sc.name} (layout {result.answer['layout']})."
    raw["name"] = f"{sc.name}-plan"
    return raw


def plan_json(result: PlanResult, scenario_file: str | None = None) -> dict[str, Any]:
    from sim.outputs import jsonable

    cand_rows = []
    for cs in result.candidates.values():
        for c in cs:
            cand_rows.append(
                {
                    "layout_pools": c.layout_pools,
                    "pool": c.problem,
                    **c.label,
                    "status": c.status,
                    "reason": c.reason,
                    "replicas": c.replicas,
                    "usd_per_replica_hour": None if math.isnan(c.usd_per_replica_hour) else c.usd_per_replica_hour,
                    "cost_per_hour": c.cost(c.replicas),
                    "margin": c.margin,
                    "bounds": c.bounds,
                    "evaluations": c.evaluations,
                }
            )
    return jsonable(
        {
            "kind": "plan",
            "scenario": result.scenario.name,
            "description": result.scenario.description,
            "scenario_file": scenario_file,
            "servesim_version": __version__,
            "settings": asdict(result.settings),
            "answer": result.answer,
            "layouts": result.layout_rows,
            "candidates": cand_rows,
            "frontier": result.frontier,
            "wall_s": result.wall_s,
            "simulated_replications": result.simulated,
            "resolved_scenario": result.scenario.model_dump(mode="json", exclude_unset=True),
        }
    )


def write_plan(result: PlanResult, out_dir: Path, scenario_file: str | None = None) -> list[Path]:
    from sim.outputs import clear_stale, write_text_atomic
    from sim.run import check_output_dir

    check_output_dir(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [write_text_atomic(out_dir / "plan.json", json.dumps(plan_json(result, scenario_file), indent=2))]
        if result.answer["feasible"]:
            text = f"# {result.answer['layout']} layout, ${result.answer['cost_per_hour']:,.2f}/h\n" + yaml.safe_dump(
                fleet_scenario(result), sort_keys=False
            )
            paths.append(write_text_atomic(out_dir / "fleet.yaml", text))
        clear_stale(out_dir, ("plan.json", "fleet.yaml", "report.html"), paths)
    except OSError as exc:
        raise ConfigError(f"{exc.filename or out_dir}: cannot write output: {exc.strerror or exc}") from None
    return paths


# --------------------------------------------------------------------------- CLI


def plan_blocks(plan: dict) -> list:
    """What ``servesim plan`` shows, from its ``plan.json`` content (``plan_json``): the answer,
    its SLO checks, layouts and candidates. The report renders the same blocks."""
    from sim.console import Line, Table, term

    out: list = []
    a = plan["answer"]
    name = plan.get("scenario") or ""
    resolved = plan.get("resolved_scenario") or {}
    kinds = {p.get("name"): (p.get("cost_model") or {}).get("kind", "roofline") for p in resolved.get("pools") or []}
    if a["feasible"]:
        t = Table(
            title=f"{term(name)}: cheapest fleet, layout {a['layout']}: ${a['cost_per_hour']:,.2f}/h, {a['gpus']} GPUs"
        )
        for col in ("pool", "model", "gpu", "TP", "knobs", "replicas", "$/h", "SLO margin", "one fewer"):
            t.add_column(col, justify="right" if col in ("TP", "replicas", "$/h", "SLO margin") else "left")
        for p in a["pools"]:
            knobs = " ".join(f"{k}={v}" for k, v in p["knobs"].items()) or "-"
            fewer = (
                "-"
                if p["one_fewer"] is None
                else f"{_pct(p['one_fewer']['margin'])} ({'meets' if p['one_fewer']['meets'] else 'misses'})"
            )
            name = p["pool"] + (" (binding)" if p["pool"] == a["binding_pool"] else "")
            cost = p["cost_per_hour"]
            pre = p.get("prefill")
            if pre is not None:
                t.add_row(
                    term(f"{pre['pool']} (prefill for {p['pool']})"),
                    p["model"],
                    pre["gpu"],
                    str(pre["tensor_parallel_size"]),
                    "-",
                    str(pre["replicas"]),
                    f"{pre['cost_per_hour']:,.2f}",
                    "",
                    "",
                )
                cost -= pre["cost_per_hour"]
                name += f" (decode; P:D {p['pd_ratio']} x {p['units']})"
            t.add_row(
                term(name),
                p["model"],
                p["gpu"],
                str(p["tensor_parallel_size"]),
                knobs,
                _replicas_text(p),
                f"{cost:,.2f}",
                _pct(p["margin"]),
                fewer,
            )
        out.append(t)
        checks = Table(title="SLO checks at the chosen fleet (mean over replications, 95 % CI)")
        for col in ("pool", "class", "metric", "value", "SLO", "met"):
            checks.add_column(col)
        for p in a["pools"]:
            for c in p["checks"]:
                checks.add_row(
                    term(p["pool"]), term(c["class"]), _metric_name(c), _value_text(c), _target_text(c), _met_text(c)
                )
        out.append(checks)
        from sim.catalog import assumed_efficiency_note

        for gpu in dict.fromkeys(p["gpu"] for p in a["pools"] if kinds.get(p["pool"], "roofline") == "roofline"):
            note = assumed_efficiency_note(gpu)
            if note:
                out.append(Line(f"[yellow]note:[/yellow] the answer rests on {note}", highlight=False))
    else:
        out.append(Line(f"[bold red]no fleet meets every SLO[/bold red] within the search space of {term(name)}"))
    layouts = plan.get("layouts") or []
    if len(layouts) > 1:
        lt = Table(title="layouts")
        for col in ("layout", "$/h", "note"):
            lt.add_column(col)
        for row in layouts:
            lt.add_row(
                term(row["name"]),
                "-" if row["cost_per_hour"] is None else f"{row['cost_per_hour']:,.2f}",
                row["reason"] or "",
            )
        out.append(lt)
    ct = Table(title="candidates")
    for col in ("pool", "candidate", "status", "replicas", "$/h", "margin", "why"):
        ct.add_column(col, overflow="fold")
    for c in plan.get("candidates") or []:
        cost = c.get("cost_per_hour")
        ct.add_row(
            c["pool"],
            describe(c),
            c["status"],
            "-"
            if c.get("replicas") is None
            else (
                count_text(c, c["replicas"])
                if c.get("pd_ratio") or c.get("autoscale_min") is not None
                else str(c["replicas"])
            ),
            "-" if cost is None else f"{cost:,.2f}",
            "-" if c.get("margin") is None else _pct(c["margin"]),
            c.get("reason") or "",
        )
    out.append(ct)
    out.append(
        Line(
            f"{plan.get('simulated_replications', 0)} replications simulated in {plan.get('wall_s', 0.0):.1f} s; "
            f"frontier: {len(plan.get('frontier') or [])} points",
            highlight=False,
        )
    )
    return out


def _replicas_text(p: dict) -> str:
    """A chosen pool's replicas; an autoscaled one's bounds and the replicas it held."""
    a = p.get("autoscaling")
    if a is None:
        return str(p["replicas"])
    held = "" if a["replicas_held"] is None else f" ({a['replicas_held']:.2f} held)"
    return f"{a['min_replicas']}-{a['max_replicas']}{held}"


def _pct(margin: float) -> str:
    return "< -100%" if margin < -1 else f"{margin:+.0%}"


def _met_text(c: dict) -> str:
    return "yes" if c["met"] else ("NO" if c["decided"] else "unsure (CI straddles the SLO)")


def _metric_name(c: dict) -> str:
    if c["metric"] in ("stable", "attainment"):
        return c["metric"]
    return f"p{c['percentile']:g} {c['metric'].removesuffix('_s').upper()}"


def _value_text(c: dict) -> str:
    from sim.console import with_ci

    hw = c["ci95"] if c["ci95"] is not None and math.isfinite(c["ci95"]) else None
    if c["metric"] in ("stable", "attainment"):
        return with_ci(c["value"] * 100, None if hw is None else hw * 100, bounds=(0, 100)) + " %"
    if c["value"] >= LATE_S / 10:
        return "overloaded"
    scale, unit = (1e3, "ms") if c["value"] < 1 else (1.0, "s")
    return f"{with_ci(c['value'] * scale, None if hw is None else hw * scale)} {unit}"


def _target_text(c: dict) -> str:
    return f">= {c['slo']:.0%}" if c["metric"] in ("stable", "attainment") else f"<= {_secs(c['slo'])}"

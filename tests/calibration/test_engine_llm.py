"""The real continuous-batching engine: requests finish with exactly their tokens, steps keep the
knobs' limits, preemption and rejection work, the step logs are StepShapes, and the scheduler
makes the simulator's decisions (``sim/llm/scheduler.py``) step for step."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from calibration.configs import LlamaConfig  # noqa: E402
from calibration.engine import llm  # noqa: E402
from calibration.engine.llm import (  # noqa: E402
    REQUEST_COLUMNS,
    SHAPE_COLUMNS,
    STEP_COLUMNS,
    EngineConfig,
    WorkItem,
    load_replica,
    run_llm_engine,
    schedule_only,
)

SMALL = LlamaConfig(
    name="engine-test", num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16,
    intermediate_size=128, vocab_size=101, qkv_bias=False, tie_word_embeddings=False, max_position_embeddings=512,
)  # fmt: skip
CFG = EngineConfig(max_num_seqs=4, max_num_batched_tokens=64, block_size=4, num_kv_blocks=64, max_model_len=512)


def workload(n, seed=0, prompt=(5, 60), output=(1, 12), gap_s=0.0):
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(gap_s, n)) if gap_s else np.zeros(n)
    return [
        WorkItem(i, float(t), int(rng.integers(*prompt, endpoint=True)), int(rng.integers(*output, endpoint=True)))
        for i, t in enumerate(arrivals)
    ]


def run(items, cfg=CFG, **kw):
    return run_llm_engine("engine-test", items, cfg, model_cfg=SMALL, **kw)


@pytest.fixture
def emitted(monkeypatch):
    """Counts the tokens each request gets, and the token ids it holds when it finishes."""
    counts, lengths = {}, {}
    update = llm.Scheduler.update_from_output

    def spy(self, out, sampled=None):
        got, finished = update(self, out, sampled)
        for req in got:
            counts[req.request_id] = counts.get(req.request_id, 0) + 1
        for req in finished:
            lengths[req.request_id] = len(req.token_ids)
        return got, finished

    monkeypatch.setattr(llm.Scheduler, "update_from_output", spy)
    return counts, lengths


# ---------------------------------------------------------------------- the real loop


def test_open_loop_run_finishes_every_request_with_exactly_its_tokens(emitted):
    items = workload(12, seed=1, gap_s=0.01)
    done = []
    reqs, steps = run(items, progress=lambda d, t: done.append((d, t)))
    counts, lengths = emitted
    assert list(reqs.columns) == REQUEST_COLUMNS and list(steps.columns) == STEP_COLUMNS
    assert not reqs["rejected"].any() and reqs["finish_s"].notna().all()
    for w in items:
        assert counts[w.request_id] == w.output_tokens
        assert lengths[w.request_id] == w.prompt_tokens + w.output_tokens
    assert done == [(k, len(items)) for k in range(1, len(items) + 1)]

    # arrivals from the schedule, not from when the engine noticed them
    assert reqs["arrival_s"].tolist() == [w.arrival_s for w in items]
    assert (reqs["arrival_s"] <= reqs["first_scheduled_s"]).all()
    assert (reqs["first_scheduled_s"] < reqs["first_token_s"]).all()
    assert (reqs["first_token_s"] <= reqs["finish_s"]).all()
    np.testing.assert_allclose(reqs["ttft_s"], reqs["first_token_s"] - reqs["arrival_s"])
    np.testing.assert_allclose(reqs["e2e_s"], reqs["finish_s"] - reqs["arrival_s"])
    one = reqs["output_tokens"] == 1
    assert reqs.loc[one, "tpot_s"].isna().all() and reqs.loc[one, "max_itl_s"].isna().all()
    many = reqs[~one]
    np.testing.assert_allclose(many["tpot_s"], (many["finish_s"] - many["first_token_s"]) / (many["output_tokens"] - 1))
    assert (many["max_itl_s"] >= many["tpot_s"] - 1e-12).all()

    # every request is first scheduled, gets its first token and finishes at step boundaries
    assert set(reqs["first_scheduled_s"]) <= set(steps["start_s"])
    assert set(reqs["first_token_s"]) | set(reqs["finish_s"]) <= set(steps["end_s"])
    assert (steps["end_s"] > steps["start_s"]).all()
    assert (steps["start_s"].to_numpy()[1:] >= steps["end_s"].to_numpy()[:-1]).all()


def test_steps_respect_the_knobs_and_are_consistent_step_shapes():
    cfg = EngineConfig(max_num_seqs=4, max_num_batched_tokens=64, block_size=4, num_kv_blocks=256, max_model_len=512)
    items = workload(16, seed=2, prompt=(20, 150), output=(2, 20))
    reqs, steps = run(items, cfg)
    assert (steps["num_seqs"] <= cfg.max_num_seqs).all()
    assert (steps["num_tokens"] <= cfg.max_num_batched_tokens).all()
    assert (steps["kv_blocks_used"] <= cfg.num_kv_blocks).all()
    assert (steps["num_tokens"] == steps["num_decode"] + steps["num_prefill_tokens"]).all()
    assert (steps["num_seqs"] == steps["num_decode"] + steps["num_prefill_seqs"]).all()
    assert (steps["num_prefill_tokens"] >= steps["num_prefill_seqs"]).all()
    assert (steps["decode_ctx_sum"] >= steps["num_decode"]).all()
    # p*k + p(p+1)/2 summed over chunks lies between the chunks' own triangle and the full square
    p, k = steps["num_prefill_tokens"], steps["prefill_ctx_sum"]
    assert (steps["prefill_attn_pairs"] >= p).all()
    assert (steps["prefill_attn_pairs"] <= p * k + p * (p + 1) / 2).all()
    # without preemption every prompt token and every generated token but the last goes through once
    assert steps["num_preempted"].sum() == 0
    assert steps["num_tokens"].sum() == sum(w.prompt_tokens + w.output_tokens - 1 for w in items)
    assert steps["num_prefill_tokens"].sum() + steps["num_decode"].sum() == steps["num_tokens"].sum()

    base = pytest.importorskip("sim.costs.base")
    for row in steps.itertuples():
        shape = base.StepShape(**{c: getattr(row, c) for c in SHAPE_COLUMNS if c != "num_prefill_seqs"})
        assert shape.num_tokens == row.num_tokens


def test_a_tiny_kv_cache_forces_preemptions_and_everything_still_finishes(emitted):
    cfg = EngineConfig(max_num_seqs=6, max_num_batched_tokens=64, block_size=4, num_kv_blocks=16, max_model_len=512)
    items = workload(10, seed=3, prompt=(10, 30), output=(10, 24))
    reqs, steps = run(items, cfg)
    counts, _ = emitted
    assert reqs["preemptions"].sum() > 0
    assert steps["num_preempted"].sum() == reqs["preemptions"].sum()
    assert reqs["finish_s"].notna().all()
    assert all(counts[w.request_id] == w.output_tokens for w in items)
    assert (steps["kv_blocks_used"] <= cfg.num_kv_blocks).all()
    # recomputation: more tokens went through than a run without preemption needs
    assert steps["num_tokens"].sum() > sum(w.prompt_tokens + w.output_tokens - 1 for w in items)


def test_a_request_that_can_never_fit_is_rejected():
    cfg = EngineConfig(max_num_seqs=4, max_num_batched_tokens=64, block_size=4, num_kv_blocks=16, max_model_len=512)
    items = [WorkItem(0, 0.0, 10, 4), WorkItem(1, 0.0, 70, 4), WorkItem(2, 0.0, 12, 3)]  # 74 tokens > 64
    reqs, steps = run(items, cfg)
    assert reqs["rejected"].tolist() == [False, True, False]
    bad = reqs.iloc[1]
    assert all(math.isnan(bad[c]) for c in ("first_scheduled_s", "first_token_s", "finish_s", "ttft_s", "e2e_s"))
    assert reqs.loc[~reqs["rejected"], "finish_s"].notna().all()
    assert steps["num_tokens"].sum() == (10 + 3) + (12 + 2)


def test_the_engine_idles_until_a_late_arrival():
    items = [WorkItem(0, 0.0, 8, 2), WorkItem(1, 0.15, 8, 2)]
    reqs, steps = run(items)
    late = reqs.iloc[1]
    assert late["first_scheduled_s"] >= 0.15
    assert late["first_scheduled_s"] - 0.15 < 0.05  # woke up for it, not much later
    assert len(steps) == 4  # two steps each: no empty steps while idle


def test_a_catalog_model_by_name():
    cfg = EngineConfig(max_num_seqs=2, max_num_batched_tokens=32)
    reqs, steps = run_llm_engine("llama-tiny", [WorkItem(0, 0.0, 20, 3), WorkItem(1, 0.0, 40, 2)], cfg)
    assert reqs["finish_s"].notna().all()
    assert steps["num_tokens"].tolist() == [32, 29, 2]


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="max_num_seqs"):
        EngineConfig(max_num_seqs=32, max_num_batched_tokens=16)
    with pytest.raises(ValueError, match="block_size"):
        EngineConfig(block_size=0)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        run(workload(1), EngineConfig(max_model_len=1024))


# ---------------------------------------------------------------------- the simulator's decisions


def simulator_steps(items, cfg: EngineConfig, use_cohort: bool):
    """The simulator's scheduler on the same requests, all arrived at t=0: per step the rows it
    lists (request id, tokens), its shape and the preempted request ids."""
    sched_mod = pytest.importorskip("sim.llm.scheduler")
    from sim.llm.kv_cache import KVCacheManager
    from sim.llm.request import Request

    sim_cfg = sched_mod.SchedulerConfig(
        max_num_seqs=cfg.max_num_seqs,
        max_num_batched_tokens=cfg.max_num_batched_tokens,
        max_model_len=cfg.max_model_len,
        enable_chunked_prefill=cfg.enable_chunked_prefill,
    )
    sched = sched_mod.Scheduler(sim_cfg, KVCacheManager(cfg.num_kv_blocks, cfg.block_size, enable_prefix_caching=False))
    sched.use_cohort = use_cohort
    rejected = set()
    for w in items:
        if sched.add_request(Request(w.request_id, 0, 0.0, w.prompt_tokens, w.output_tokens)):
            rejected.add(w.request_id)
    steps = []
    while sched.has_unfinished_requests():
        out = sched.schedule()
        rows = [(r.request_id, n) for r, n in zip(out.requests, out.num_scheduled_tokens)]
        shape = {c: getattr(out.shape, c) for c in SHAPE_COLUMNS if c != "num_prefill_seqs"}
        steps.append((rows, out.num_cohort, shape, [r.request_id for r in out.preempted], sched.kv.pool.num_used))
        sched.update_from_output(out)
    return steps, rejected


def engine_steps(items, cfg):
    steps = []
    for out in schedule_only(items, cfg):
        rows = [(r.request_id, n) for r, n in zip(out.requests, out.num_scheduled_tokens)]
        shape = {c: getattr(out.shape, c) for c in SHAPE_COLUMNS if c != "num_prefill_seqs"}
        steps.append((rows, shape, [r.request_id for r in out.preempted], out.kv_blocks_used))
    return steps


CONFIGS = [
    CFG,
    EngineConfig(max_num_seqs=8, max_num_batched_tokens=48, block_size=4, num_kv_blocks=24, max_model_len=512),
    EngineConfig(max_num_seqs=5, max_num_batched_tokens=96, block_size=8, num_kv_blocks=12, max_model_len=80),
    EngineConfig(
        max_num_seqs=6, max_num_batched_tokens=80, enable_chunked_prefill=False, block_size=4, num_kv_blocks=20
    ),
    EngineConfig(max_num_seqs=16, max_num_batched_tokens=512, block_size=16, num_kv_blocks=40),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"seqs{c.max_num_seqs}-tok{c.max_num_batched_tokens}")
@pytest.mark.parametrize("seed", range(6))
def test_the_scheduler_makes_the_simulators_decisions(cfg, seed):
    rng = np.random.default_rng(seed)
    items = workload(int(rng.integers(5, 40)), seed=seed, prompt=(1, 90), output=(1, 40))
    mine = engine_steps(items, cfg)

    # the simulator's per-request reference path: the same rows, in the same order
    exact, rejected = simulator_steps(items, cfg, use_cohort=False)
    assert len(mine) == len(exact)
    for k, ((rows, shape, preempted, used), (s_rows, _, s_shape, s_pre, s_used)) in enumerate(zip(mine, exact)):
        assert (rows, preempted, used) == (s_rows, s_pre, s_used), f"step {k}"
        assert shape == pytest.approx(s_shape), f"step {k}"

    # the decode cohort it really runs with: the same step shapes (its members have no rows)
    cohort, _ = simulator_steps(items, cfg, use_cohort=True)
    assert [(shape, preempted, used) for _, shape, preempted, used in mine] == [
        (pytest.approx(s_shape), s_pre, s_used) for _, _, s_shape, s_pre, s_used in cohort
    ]
    # and it rejects the same requests
    engine_rejected = {r.request_id for r in llm._requests(items) if llm.reject_reason(r, cfg)}
    assert engine_rejected == rejected


def drive(add, schedule, update, unfinished, items, record):
    """Requests join between steps: ``arrival_s`` counts steps here. Idle stretches are skipped."""
    pending = sorted(items, key=lambda w: w.arrival_s)
    k, steps = 0, []
    while pending or unfinished():
        while pending and pending[0].arrival_s <= k:
            add(pending.pop(0))
        if not unfinished():
            k = pending[0].arrival_s
            continue
        out = schedule()
        steps.append((k, record(out)))
        update(out)
        k += 1
    return steps


@pytest.mark.parametrize("cfg", CONFIGS[:3], ids=lambda c: f"seqs{c.max_num_seqs}-tok{c.max_num_batched_tokens}")
@pytest.mark.parametrize("seed", range(4))
def test_the_scheduler_makes_the_simulators_decisions_with_staggered_arrivals(cfg, seed):
    sched_mod = pytest.importorskip("sim.llm.scheduler")
    from sim.llm.kv_cache import KVCacheManager
    from sim.llm.request import Request

    rng = np.random.default_rng(100 + seed)
    items = [
        WorkItem(i, int(t), int(rng.integers(1, 90)), int(rng.integers(1, 40)))
        for i, t in enumerate(np.cumsum(rng.integers(0, 12, 40)))
    ]

    def record(out):
        rows = [(r.request_id, n) for r, n in zip(out.requests, out.num_scheduled_tokens)]
        return rows, [r.request_id for r in out.preempted], out.shape.num_tokens, out.shape.decode_ctx_sum

    mine = llm.Scheduler(cfg)
    ours = drive(
        lambda w: mine.add_request(llm.EngineRequest(w.request_id, w.arrival_s, w.prompt_tokens, w.output_tokens)),
        mine.schedule, mine.update_from_output, mine.has_unfinished_requests, items, record,
    )  # fmt: skip
    sim_cfg = sched_mod.SchedulerConfig(
        cfg.max_num_seqs, cfg.max_num_batched_tokens, cfg.max_model_len, cfg.enable_chunked_prefill
    )
    sim = sched_mod.Scheduler(sim_cfg, KVCacheManager(cfg.num_kv_blocks, cfg.block_size, enable_prefix_caching=False))
    sim.use_cohort = False
    theirs = drive(
        lambda w: sim.add_request(Request(w.request_id, 0, float(w.arrival_s), w.prompt_tokens, w.output_tokens)),
        sim.schedule, sim.update_from_output, sim.has_unfinished_requests, items, record,
    )  # fmt: skip
    assert ours == theirs


def test_the_scheduler_is_exercised_by_those_workloads():
    """The equivalence cases above cover preemption, chunking, rejection and a full batch."""
    seen = {"preempted": 0, "chunked": 0, "full": 0, "rejected": 0}
    for cfg in CONFIGS:
        for seed in range(6):
            rng = np.random.default_rng(seed)
            items = workload(int(rng.integers(5, 40)), seed=seed, prompt=(1, 90), output=(1, 40))
            for out in schedule_only(items, cfg):
                seen["preempted"] += len(out.preempted)
                seen["full"] += len(out.requests) == cfg.max_num_seqs
                seen["chunked"] += any(
                    c + n < r.num_prompt_tokens
                    for r, n, c in zip(out.requests, out.num_scheduled_tokens, out.num_cached_tokens)
                )
            seen["rejected"] += sum(bool(llm.reject_reason(r, cfg)) for r in llm._requests(items))
    assert all(v > 0 for v in seen.values()), seen


def test_the_real_loop_runs_the_schedulers_steps():
    """With every request there at the start, the timed loop's step log is the scheduler's plan."""
    cfg = CONFIGS[1]
    items = workload(14, seed=4, prompt=(1, 90), output=(1, 30))
    reqs, steps = run(items, cfg)
    plan = schedule_only(items, cfg)
    assert len(steps) == len(plan)
    for row, out in zip(steps.itertuples(), plan):
        assert {c: getattr(row, c) for c in SHAPE_COLUMNS} == {c: getattr(out.shape, c) for c in SHAPE_COLUMNS}
        assert (row.num_preempted, row.kv_blocks_used) == (len(out.preempted), out.kv_blocks_used)
    assert steps["num_preempted"].sum() > 0


def test_runs_share_one_loaded_replica_and_leave_its_cache_empty():
    """A session loads the model once: runs on one replica are the scheduler's plan each, with
    their own token ids, and each leaves the KV cache empty, even when it stops half-way; a replica of other knobs, another model or dtype is refused."""
    cfg = CONFIGS[1]
    replica = load_replica("engine-test", cfg, model_cfg=SMALL)
    for seed in (0, 1):
        items = workload(10, seed=seed, prompt=(1, 90), output=(1, 30))
        reqs, steps = run(items, cfg, seed=seed, replica=replica)
        assert [{c: getattr(r, c) for c in SHAPE_COLUMNS} for r in steps.itertuples()] == [
            {c: getattr(out.shape, c) for c in SHAPE_COLUMNS} for out in schedule_only(items, cfg)
        ]
        assert replica.cache.bytes_allocated == 0

    def stop(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(workload(10, seed=2), cfg, replica=replica, progress=stop)
    assert replica.cache.bytes_allocated == 0
    reqs, _ = run(workload(4, seed=3), cfg, replica=replica)
    assert reqs["finish_s"].notna().all()
    with pytest.raises(ValueError, match="cannot serve"):
        run(workload(2), CONFIGS[0], replica=replica)
    with pytest.raises(ValueError, match="cannot serve"):
        run_llm_engine("llama-tiny", workload(2), cfg, replica=replica)
    with pytest.raises(ValueError, match="cannot serve"):
        run(workload(2), cfg, dtype="bfloat16", replica=replica)

"""The vLLM-v1-style scheduler on its own: schedule() -> update_from_output(), no time."""

from sim.llm.kv_cache import KVCacheManager
from sim.llm.request import Request
from sim.llm.scheduler import Scheduler, SchedulerConfig
from sim.llm.static import StaticBatchScheduler
from sim.status import RequestStatus


def make(max_num_seqs=16, budget=8192, blocks=10_000, block_size=16, chunked=True, max_len=100_000, cls=Scheduler):
    cfg = SchedulerConfig(max_num_seqs, budget, max_len, chunked)
    return cls(cfg, KVCacheManager(blocks, block_size, enable_prefix_caching=True))


def reqs(n, prompt=10, out=16):
    return [Request(i, 0, 0.0, prompt, out) for i in range(n)]


def step(s):
    out = s.schedule()
    emitted, finished, joined = s.update_from_output(out)
    # Decode-cohort members are scheduled in aggregate: list them as emitting too.
    return out, emitted + [r for r in getattr(s, "cohort", ()) if r not in joined], finished


def test_prefill_then_decode_one_token_per_step():
    s = make()
    (r,) = reqs(1, prompt=10, out=3)
    s.add_request(r)
    out, emitted, finished = step(s)
    assert out.num_scheduled_tokens == [10] and emitted == [r]
    assert out.shape.num_prefill_tokens == 10 and out.shape.num_decode == 0
    out, emitted, _ = step(s)
    # Decoding requests form the cohort: scheduled in aggregate, one token each.
    assert out.requests == [] and out.num_cohort == 1 and out.shape.num_decode == 1
    assert out.shape.decode_ctx_sum == 10 and emitted == [r]
    _, _, finished = step(s)
    assert finished == [r] and r.status == RequestStatus.FINISHED
    assert r.num_output_tokens == 3 and s.kv.pool.num_free == s.kv.pool.num_blocks


def test_token_budget_chunks_prefill():
    s = make(budget=64)
    (r,) = reqs(1, prompt=150, out=2)
    s.add_request(r)
    sizes = []
    for _ in range(3):
        out, emitted, _ = step(s)
        sizes.append(out.num_scheduled_tokens[0])
    assert sizes == [64, 64, 22] and r.num_output_tokens == 1
    assert out.shape.prefill_ctx_sum == 128


def test_chunked_prefill_disabled_waits_for_a_whole_prompt():
    s = make(budget=64, chunked=False)
    a, b = reqs(2, prompt=40, out=4)
    s.add_request(a)
    s.add_request(b)
    out, _, _ = step(s)
    assert out.requests == [a]  # b's 40 tokens do not fit the remaining 24
    out, _, _ = step(s)
    assert out.num_cohort == 1 and out.requests == [b] and out.num_scheduled_tokens == [40]


def test_max_num_seqs_caps_the_batch():
    s = make(max_num_seqs=2)
    for r in reqs(3):
        s.add_request(r)
    out, _, _ = step(s)
    assert len(out.requests) == 2 and s.num_waiting == 1


def test_preemption_recomputes_prompt_and_output_from_the_head_of_the_queue():
    # 4 blocks of 4 tokens: two requests of 7 prompt tokens fill 2 blocks each once decoding.
    s = make(blocks=4, block_size=4)
    a, b = reqs(2, prompt=7, out=6)
    s.add_request(a)
    s.add_request(b)
    step(s)  # both prefilled: 2 blocks each, pool full
    assert s.kv.pool.num_free == 0
    out, _, _ = step(s)  # both decode into their 8th slot: still 2 blocks each
    out = s.schedule()  # a needs a 3rd block: b (last running) is preempted
    assert out.preempted == [b] and b.status == RequestStatus.PREEMPTED
    assert s.waiting[0] is b and b.num_computed_tokens == 0 and b.num_preemptions == 1
    s.update_from_output(out)
    generated = b.num_output_tokens
    while a.status != RequestStatus.FINISHED:
        step(s)
    out, _, _ = step(s)
    # b comes back and recomputes its prompt plus the tokens it had generated.
    assert out.requests == [b] and out.num_scheduled_tokens == [7 + generated]


def test_request_that_can_never_fit_is_rejected_with_a_reason():
    s = make(blocks=2, block_size=4)
    (r,) = reqs(1, prompt=6, out=4)
    reason = s.add_request(r)
    assert "KV cache capacity" in reason and r.status == RequestStatus.REJECTED
    s2 = make(max_len=8)
    (r2,) = reqs(1, prompt=6, out=4)
    assert "max_model_len" in s2.add_request(r2)


def test_prefix_cache_hit_skips_cached_prompt_blocks():
    s = make(block_size=4)
    hashes = (11, 12, 13)
    a = Request(0, 0, 0.0, 12, 2, hashes)
    s.add_request(a)
    step(s)
    b = Request(1, 0, 0.0, 12, 2, hashes)
    s.add_request(b)
    out, _, _ = step(s)
    # b hits 2 of 3 blocks (the last token is always recomputed) and prefills 4 tokens.
    assert out.requests[-1] is b and out.num_scheduled_tokens[-1] == 4
    assert b.num_cached_tokens == 8


def test_decode_span_matches_step_by_step_execution():
    def run(use_span):
        s = make(blocks=40, block_size=4)
        rs = [Request(i, 0, 0.0, 5 + i, 9 + 3 * i) for i in range(4)]
        for r in rs:
            s.add_request(r)
        trace = []
        while s.has_unfinished_requests():
            span = s.decode_span() if use_span else None
            if span is not None:
                fin = s.advance_decode(span.num_steps)
                trace.append(("span", span.num_steps, [r.request_id for r in fin]))
            else:
                out = s.schedule()
                _, fin, _ = s.update_from_output(out)
                trace.append(("step", 1, [r.request_id for r in fin]))
            assert s.kv.pool.num_used == sum(r.num_blocks for r in s.running)
        return rs, trace, s

    rs_a, trace_a, sa = run(False)
    rs_b, trace_b, sb = run(True)
    assert [r.num_output_tokens for r in rs_a] == [r.num_output_tokens for r in rs_b]
    assert [r.num_preemptions for r in rs_a] == [r.num_preemptions for r in rs_b]
    # Same steps in total, same finish order.
    assert sum(n for _, n, _ in trace_a) == sum(n for _, n, _ in trace_b)
    assert [f for *_, fs in trace_a for f in fs] == [f for *_, fs in trace_b for f in fs]
    assert sa.kv.pool.num_free == sb.kv.pool.num_free == 40


def test_decode_span_stops_before_the_pool_runs_dry():
    s = make(blocks=6, block_size=4)
    a, b = Request(0, 0, 0.0, 4, 16), Request(1, 0, 0.0, 4, 16)
    s.add_request(a)
    s.add_request(b)
    step(s)  # prefill: 1 block each (4 tokens), 4 blocks free
    span = s.decode_span()
    # Each needs a block per 4 steps; 4 free blocks last 2 blocks each = 8 steps.
    assert span is not None and span.num_steps == 8
    s.advance_decode(span.num_steps)
    assert s.kv.pool.num_free == 0
    out = s.schedule()
    assert out.preempted == [b]


def test_static_batch_runs_until_longest_member_and_nobody_joins():
    s = make(max_num_seqs=2, cls=StaticBatchScheduler)
    a, b, c = Request(0, 0, 0.0, 5, 2), Request(1, 0, 0.0, 5, 6), Request(2, 0, 0.0, 5, 2)
    for r in (a, b, c):
        s.add_request(r)
    out, emitted, finished = step(s)
    assert out.requests == [a, b] and set(emitted) == {a, b}
    steps = 1
    while not finished:
        out, emitted, finished = step(s)
        steps += 1
        if a.num_output_tokens >= a.max_tokens:
            assert out.shape.num_decode == 2  # a is a padding row
        assert c.status == RequestStatus.WAITING
    assert steps == 6 and set(finished) == {a, b}
    out, _, _ = step(s)
    assert out.requests == [c]


def test_guaranteed_no_evict_admits_only_what_fits_to_the_end():
    """Two requests whose prompts fit together but whose outputs do not: vLLM's policy admits
    both and preempts the newer when the blocks run out; TensorRT-LLM's GUARANTEED_NO_EVICT
    admits the second only once the first has finished, and preempts nobody."""
    from sim.llm.request import Request
    from sim.llm.scheduler import Scheduler, SchedulerConfig

    def run(no_evict: bool) -> tuple[int, list[int]]:
        kv = KVCacheManager(6, 4, enable_prefix_caching=False)  # 24 tokens
        sched = Scheduler(SchedulerConfig(8, 64, 1000, guaranteed_no_evict=no_evict), kv)
        reqs = [Request(i, 0, 0.0, 4, 12) for i in range(2)]  # 16 tokens (4 blocks) each at the end
        for r in reqs:
            sched.add_request(r)
        running_counts = []
        while sched.has_unfinished_requests():
            out = sched.schedule()
            running_counts.append(sched.num_running)
            sched.update_from_output(out)
        return sum(r.num_preemptions for r in reqs), running_counts

    preempted, counts = run(False)
    assert preempted >= 1 and max(counts) == 2
    preempted, counts = run(True)
    assert preempted == 0 and max(counts) == 1

"""Timeouts and faults at the scheduler: abort() one request, drain() them all, retry.

The decode cohort keeps aggregates over its members (summed context, block-need buckets, a
finish heap); an abort must leave them exact. The check: a twin scheduler with ``use_cohort``
off (every request scheduled individually) gets the same operations, and both must produce
the same steps from then on.
"""

import pytest

from sim.llm.kv_cache import KVCacheManager
from sim.llm.request import Request
from sim.llm.scheduler import Scheduler, SchedulerConfig
from sim.llm.static import StaticBatchScheduler
from sim.status import RequestStatus

FINAL = (RequestStatus.FINISHED, RequestStatus.REJECTED, RequestStatus.ABORTED)


def make(max_num_seqs=16, budget=8192, blocks=10_000, block_size=4, cls=Scheduler, cohort=True):
    s = cls(SchedulerConfig(max_num_seqs, budget, 100_000), KVCacheManager(blocks, block_size))
    if not cohort:
        s.use_cohort = False
    return s


def counters(s, r: Request) -> tuple:
    """A request's counters as they are once brought up to date (without doing it: a cohort
    member's lag must stay for abort() to catch up)."""
    lag = s.clock - r.cohort_mark if r in getattr(s, "cohort", ()) else 0
    computed = r.num_computed_tokens + lag
    blocks = -(-computed // s.kv.block_size) if lag else r.num_blocks
    return (r.status, r.num_output_tokens + lag, r.num_tokens + lag, computed, blocks, r.num_preemptions)


def assert_cohort_exact(s: Scheduler) -> None:
    """The cohort's aggregates equal what its members give when recomputed from scratch."""
    bs = s.kv.block_size
    assert s._ctx_base == sum(r.cohort_base for r in s.cohort)
    needs = [0] * bs
    for r in s.cohort:
        needs[r.cohort_base % bs] += 1
    assert s._needs_block == needs
    live = {(r.cohort_finish_clock, r.request_id) for r in s.cohort}
    assert live <= {(f, i) for f, i, _ in s._finish_heap}


class Twin:
    """The same requests on a cohort scheduler and on the exact per-request path."""

    def __init__(self, specs, **kw):
        self.a = make(**kw)
        self.b = make(cohort=False, **kw)
        self.ra = [Request(i, 0, 0.0, p, o, h) for i, (p, o, h) in enumerate(specs)]
        self.rb = [Request(i, 0, 0.0, p, o, h) for i, (p, o, h) in enumerate(specs)]
        for x, y in zip(self.ra, self.rb):
            self.a.add_request(x)
            self.b.add_request(y)

    def step(self) -> list[int]:
        oa, ob = self.a.schedule(), self.b.schedule()
        assert oa.shape == ob.shape
        assert [r.request_id for r in oa.preempted] == [r.request_id for r in ob.preempted]
        fa = self.a.update_from_output(oa)[1]
        fb = self.b.update_from_output(ob)[1]
        assert sorted(r.request_id for r in fa) == sorted(r.request_id for r in fb)
        self.check()
        return sorted(r.request_id for r in fa)

    def abort(self, i: int) -> None:
        self.a.abort(self.ra[i])
        self.b.abort(self.rb[i])
        self.check()

    def check(self) -> None:
        assert [counters(self.a, r) for r in self.ra] == [counters(self.b, r) for r in self.rb]
        assert self.a.kv.pool.num_free == self.b.kv.pool.num_free
        assert list(self.a.kv.pool.cached_free) == list(self.b.kv.pool.cached_free)
        assert_cohort_exact(self.a)

    def run_out(self) -> None:
        for _ in range(10_000):
            if not self.a.has_unfinished_requests():
                break
            self.step()
        assert not self.b.has_unfinished_requests()
        assert all(r.status in FINAL for r in self.ra)
        assert self.a.kv.pool.num_used == 0


def test_abort_waiting_request():
    t = Twin([(9, 5, None), (6, 4, None), (7, 3, None)], max_num_seqs=1)
    t.step()
    r = t.ra[2]
    assert r.status == RequestStatus.WAITING and r in t.a.waiting
    t.abort(2)
    assert r.status == RequestStatus.ABORTED and r not in t.a.waiting and r.num_blocks == 0
    assert r.num_output_tokens == 0
    t.run_out()
    assert [x.status for x in t.ra] == [RequestStatus.FINISHED, RequestStatus.FINISHED, RequestStatus.ABORTED]


def test_abort_prefilling_request_returns_its_hashed_blocks_to_the_lru():
    hashes = (101, 102, 103, 104, 105)
    t = Twin([(3, 9, None), (21, 4, hashes), (5, 6, None)], budget=9)
    t.step()  # 0 prefills (3 tokens), 1 prefills its first 6
    t.step()  # 0 decodes (cohort), 1 prefills 8 more: 14 of 21 computed
    r = t.ra[1]
    assert r.status == RequestStatus.RUNNING and r.num_computed_tokens == 14 and r.num_hashed_blocks == 3
    used = t.a.kv.pool.num_used
    t.abort(1)
    assert r.status == RequestStatus.ABORTED and r.num_output_tokens == 0 and r.num_blocks == 0
    assert t.a.kv.pool.num_used == used - 4
    # Its three full prompt blocks stay cached, tail block first into the LRU as on finish.
    assert list(t.a.kv.pool.cached_free) == [103, 102, 101]
    t.run_out()


def test_abort_cohort_member_keeps_the_cohort_aggregates_exact():
    specs = [(5 + i, 6 + 5 * i, None) for i in range(5)]
    t = Twin(specs, block_size=4)
    for _ in range(4):
        t.step()
    r = t.ra[2]
    assert r in t.a.cohort and r.num_output_tokens == 1 and t.a.clock - r.cohort_mark == 3  # lagging
    t.abort(2)
    assert r.status == RequestStatus.ABORTED and r not in t.a.cohort
    assert r.num_output_tokens == 4 and r.num_tokens == 7 + 4 and r.num_blocks == 0
    # A decode span after the abort: members and aggregates move together.
    span = t.a.decode_span()
    assert span is not None and span.num_rows == 4
    t.a.advance_decode(span.num_steps)
    finished = []
    for _ in range(span.num_steps):
        oa = t.b.schedule()
        finished += t.b.update_from_output(oa)[1]
    assert finished and all(x.status == RequestStatus.FINISHED for x in finished)
    t.check()
    t.abort(4)
    t.run_out()
    assert [x.num_output_tokens for x in t.ra] == [6, 11, 4, 21, t.ra[4].num_output_tokens]
    assert 0 < t.ra[4].num_output_tokens < 26


def test_abort_every_cohort_member_leaves_an_empty_consistent_cohort():
    t = Twin([(4, 20, None), (6, 20, None)])
    t.step()
    t.step()
    t.abort(0)
    t.abort(1)
    assert not t.a.cohort and not t.a._finish_heap and t.a._ctx_base == 0
    assert not t.a.has_unfinished_requests() and t.a.kv.pool.num_used == 0
    assert t.a.decode_span() is None


def test_abort_preempted_request():
    # 4 blocks of 4 tokens: both requests fill 2 blocks each; 0 needs a third, 1 is preempted.
    t = Twin([(7, 6, None), (7, 6, None)], blocks=4, block_size=4)
    t.step()
    t.step()
    t.step()
    r = t.ra[1]
    assert r.status == RequestStatus.PREEMPTED and r.num_preemptions == 1 and t.a.waiting[0] is r
    generated = r.num_output_tokens
    assert generated == 2
    t.abort(1)
    assert r.status == RequestStatus.ABORTED and not t.a.waiting
    assert r.num_output_tokens == generated and r.num_blocks == 0
    t.run_out()
    assert t.ra[0].status == RequestStatus.FINISHED


def test_abort_of_a_final_request_does_nothing():
    s = make()
    a, b = Request(0, 0, 0.0, 4, 1), Request(1, 0, 0.0, 10**6, 1)
    s.add_request(a)
    s.add_request(b)
    assert b.status == RequestStatus.REJECTED
    s.update_from_output(s.schedule())
    assert a.status == RequestStatus.FINISHED
    s.abort(a)
    s.abort(b)
    assert a.status == RequestStatus.FINISHED and b.status == RequestStatus.REJECTED
    s.abort(a)  # and twice is harmless
    assert s.kv.pool.num_free == s.kv.pool.num_blocks


def test_static_abort_of_a_batch_member_frees_its_reservation_and_the_rest_continue():
    s = make(max_num_seqs=3, cls=StaticBatchScheduler)
    a, b, c, d = (Request(i, 0, 0.0, 5, n) for i, n in enumerate((4, 8, 6, 2)))
    for r in (a, b, c, d):
        s.add_request(r)
    s.update_from_output(s.schedule())  # prefill a, b, c
    s.update_from_output(s.schedule())
    reserved = b.num_blocks
    assert reserved == s.kv.blocks_for(5 + 8)
    used = s.kv.pool.num_used
    s.abort(b)
    assert b.status == RequestStatus.ABORTED and b.num_output_tokens == 2 and b.num_blocks == 0
    assert s.kv.pool.num_used == used - reserved and s.running == [a, c]
    s.abort(d)  # waiting
    assert d.status == RequestStatus.ABORTED and not s.waiting
    finished = []
    while s.has_unfinished_requests():
        span = s.decode_span()
        if span is not None:
            finished += s.advance_decode(span.num_steps)
        else:
            finished += s.update_from_output(s.schedule())[1]
    assert finished == [a, c] and c.num_output_tokens == 6 and s.kv.pool.num_used == 0


def test_static_abort_of_the_last_generating_member_ends_the_batch_after_one_padding_step():
    s = make(max_num_seqs=2, cls=StaticBatchScheduler)
    a, b = Request(0, 0, 0.0, 5, 2), Request(1, 0, 0.0, 5, 9)
    s.add_request(a)
    s.add_request(b)
    for _ in range(3):
        s.update_from_output(s.schedule())
    assert a.num_output_tokens == 2 and a.status == RequestStatus.RUNNING  # padding row
    s.abort(b)
    assert s.decode_span() is None
    out = s.schedule()
    assert out.requests == [a] and out.shape.num_decode == 1
    emitted, finished, _ = s.update_from_output(out)
    assert emitted == [] and finished == [a] and not s.has_unfinished_requests()
    assert s.kv.pool.num_used == 0


def run_to_completion(s, limit=10_000) -> list[Request]:
    finished = []
    for _ in range(limit):
        if not s.has_unfinished_requests():
            return finished
        span = s.decode_span()
        if span is not None:
            finished += s.advance_decode(span.num_steps)
        else:
            finished += s.update_from_output(s.schedule())[1]
    raise AssertionError("did not finish")


@pytest.mark.parametrize("cls", [Scheduler, StaticBatchScheduler])
def test_drain_mid_run_then_retry_everything_on_a_fresh_and_on_the_drained_scheduler(cls):
    def requests():
        return [Request(i, 0, float(i), 6 + 3 * i, 5 + 4 * i, tuple(range(1 + i % 2))) for i in range(8)]

    s = make(max_num_seqs=4, budget=8, blocks=16, block_size=4, cls=cls)
    reqs = requests()
    for r in reqs:
        s.add_request(r)
    early = []
    for _ in range(15):
        early += s.update_from_output(s.schedule())[1]
    if cls is Scheduler:  # a cohort, a recomputing prefill and a preempted request are drained
        assert s.cohort and reqs[4].num_preemptions and reqs[5].status == RequestStatus.PREEMPTED
        assert reqs[4] in s.others and reqs[4].num_computed_tokens < reqs[4].num_tokens - 1
    for r in reqs:
        r.gpu_s = 1.5  # engine-owned metrics survive a retry
    preempts = [r.num_preemptions for r in reqs]
    running = s.running
    waiting = list(s.waiting)
    assert running and waiting
    generated = [r.num_output_tokens for r in reqs]

    drained = s.drain()
    assert drained == running + waiting and len(drained) + len(early) == 8
    assert all(r.status == RequestStatus.ABORTED and r.num_blocks == 0 for r in drained)
    assert [r.num_output_tokens for r in reqs] == generated
    pool = s.kv.pool
    assert not s.has_unfinished_requests() and s.num_running == s.num_waiting == 0
    assert pool.num_free == pool.num_free_plain == pool.num_blocks
    assert not pool.cached_free and not pool.cached_ref
    if cls is Scheduler:
        assert not s.cohort and not s._finish_heap and s._ctx_base == 0 and not any(s._needs_block)
    assert s.drain() == []

    for r in drained:
        r.reset_for_retry()
        r.num_retries += 1
    assert all(r.num_output_tokens == 0 and r.num_tokens == r.num_prompt_tokens for r in drained)
    assert [r.num_preemptions for r in reqs] == preempts and all(r.gpu_s == 1.5 for r in reqs)

    # The same requests on a fresh scheduler, and on the drained one: same steps, same ends.
    fresh = make(max_num_seqs=4, budget=8, blocks=16, block_size=4, cls=cls)
    twins = requests()
    for r, t in zip(drained, [twins[r.request_id] for r in drained]):
        s.add_request(r)
        fresh.add_request(t)
    done = run_to_completion(s)
    done_fresh = run_to_completion(fresh)
    assert [r.request_id for r in done] == [r.request_id for r in done_fresh]
    assert all(r.status == RequestStatus.FINISHED and r.num_output_tokens == r.max_tokens for r in reqs)
    assert [r.num_retries for r in reqs] == [int(r in drained) for r in reqs]
    assert [r.num_preemptions for r in drained] == [
        preempts[r.request_id] + twins[r.request_id].num_preemptions for r in drained
    ]
    assert pool.num_used == 0 and fresh.kv.pool.num_used == 0


def test_reset_for_retry_restores_the_initial_scheduler_state_and_keeps_metrics():
    r = Request(7, 2, 3.0, 10, 5, (1, 2))
    fresh = Request(7, 2, 3.0, 10, 5, (1, 2))
    s = make(block_size=4)
    s.add_request(r)
    for _ in range(3):
        s.update_from_output(s.schedule())
    r.gpu_s, r.first_token_s, r.num_retries = 2.0, 4.0, 3
    with pytest.raises(RuntimeError, match="KV blocks"):
        r.reset_for_retry()  # still running: zeroing its blocks would leak them
    s.abort(r)
    r.reset_for_retry()
    state = ("status", "num_output_tokens", "num_tokens", "num_computed_tokens", "num_blocks", "num_hashed_blocks")
    state += ("num_cached_tokens", "cohort_mark", "cohort_base", "cohort_finish_clock")
    assert [getattr(r, f) for f in state] == [getattr(fresh, f) for f in state]
    assert (r.gpu_s, r.first_token_s, r.num_retries, r.arrival_s, r.class_id) == (2.0, 4.0, 3, 3.0, 2)


def test_kv_reset_forgets_the_prefix_cache_and_refuses_while_blocks_are_in_use():
    kv = KVCacheManager(num_blocks=8, block_size=4)
    a = Request(0, 0, 0.0, 8, 1, (1, 2))
    assert kv.allocate_slots(a, 8)
    with pytest.raises(RuntimeError, match="in use"):
        kv.reset()
    kv.free(a)
    assert kv.pool.is_cached(1) and kv.pool.num_free_plain == 6
    kv.reset()
    assert not kv.pool.is_cached(1) and kv.pool.num_free_plain == kv.pool.num_free == 8
    b = Request(1, 0, 0.0, 8, 1, (1, 2))
    assert kv.get_computed_blocks(b) == 0

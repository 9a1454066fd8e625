"""Hypothesis: the block pool never leaks, double-frees or overflows; every schedule() keeps
the token budget and max_num_seqs; every request finishes or is rejected with a reason."""

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sim.llm.kv_cache import KVCacheManager
from sim.llm.request import Request
from sim.llm.scheduler import Scheduler, SchedulerConfig
from sim.llm.static import StaticBatchScheduler
from sim.status import RequestStatus


class BlockPoolMachine(RuleBasedStateMachine):
    """Random allocate / free / prefix-hit sequences against the KV manager."""

    def __init__(self):
        super().__init__()
        self.kv = KVCacheManager(num_blocks=24, block_size=4, enable_prefix_caching=True)
        self.live: list[Request] = []
        self.next_id = 0

    @rule(prompt=st.integers(1, 40), shared=st.integers(0, 3), extra=st.integers(0, 12))
    def allocate(self, prompt, shared, extra):
        # Requests share a prefix of `shared` hashed blocks drawn from a small universe.
        n_full = prompt // 4
        hashes = tuple(range(min(shared, n_full))) + tuple(
            1000 + self.next_id * 100 + i for i in range(n_full - min(shared, n_full))
        )
        r = Request(self.next_id, 0, 0.0, prompt, 1, hashes)
        self.next_id += 1
        hits = self.kv.get_computed_blocks(r)
        free_before = self.kv.pool.num_free
        ok = self.kv.allocate_slots(r, prompt - hits * 4, hits)
        if ok:
            r.num_computed_tokens = prompt
            self.live.append(r)
            if extra and self.kv.allocate_slots(r, extra):
                r.num_computed_tokens += extra
        else:
            assert self.kv.pool.num_free == free_before and r.num_blocks == 0

    @precondition(lambda self: self.live)
    @rule(i=st.integers(0, 100))
    def free(self, i):
        r = self.live.pop(i % len(self.live))
        self.kv.free(r)
        assert r.num_blocks == 0

    @invariant()
    def conserved(self):
        pool = self.kv.pool
        held = sum(r.num_blocks for r in self.live)
        distinct_hashed = len(pool.cached_ref)
        shared_extra = sum(r.num_hashed_blocks for r in self.live) - distinct_hashed
        # Blocks in use = blocks held, counting a shared hashed block once.
        assert pool.num_used == held - shared_extra
        assert 0 <= pool.num_free <= pool.num_blocks
        assert pool.num_free_plain >= 0
        assert sum(pool.cached_ref.values()) == sum(r.num_hashed_blocks for r in self.live)
        assert not (set(pool.cached_ref) & set(pool.cached_free))


TestBlockPool = BlockPoolMachine.TestCase
TestBlockPool.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


request_lists = st.lists(st.tuples(st.integers(1, 60), st.integers(1, 30), st.integers(0, 2)), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(
    specs=request_lists,
    blocks=st.integers(4, 60),
    block_size=st.sampled_from([1, 2, 4, 16]),
    max_num_seqs=st.integers(1, 8),
    extra_budget=st.integers(0, 64),
    chunked=st.booleans(),
    static=st.booleans(),
    spans=st.booleans(),
    no_evict=st.booleans(),
)
def test_scheduler_invariants_and_conservation(
    specs, blocks, block_size, max_num_seqs, extra_budget, chunked, static, spans, no_evict
):
    budget = max_num_seqs + extra_budget
    no_evict = no_evict and not static
    cfg = SchedulerConfig(max_num_seqs, budget, 10_000, chunked, guaranteed_no_evict=no_evict)
    kv = KVCacheManager(blocks, block_size, enable_prefix_caching=not static)
    sched = (StaticBatchScheduler if static else Scheduler)(cfg, kv)
    reqs = []
    for i, (prompt, out, group) in enumerate(specs):
        n_full = prompt // block_size
        hashes = tuple((group << 20) | j for j in range(n_full)) if group else None
        reqs.append(Request(i, 0, 0.0, prompt, out, hashes))
    pending = list(reqs)
    for _ in range(20_000):
        if pending:  # requests arrive between steps
            r = pending.pop(0)
            reason = sched.add_request(r)
            assert (reason != "") == (r.status == RequestStatus.REJECTED)
        if not sched.has_unfinished_requests():
            if not pending:
                break
            continue
        span = sched.decode_span() if spans else None
        if span is not None:
            sched.advance_decode(span.num_steps)
        else:
            out = sched.schedule()
            assert out.shape.num_tokens <= budget
            assert len(sched.running) <= max_num_seqs
            assert out.requests or out.num_cohort, "no progress with requests pending"
            sched.update_from_output(out)
        pool = kv.pool
        assert 0 <= pool.num_free <= pool.num_blocks
        if no_evict:  # what runs holds at most what it reserved, and that fits the cache
            assert pool.num_used <= sched._reserved <= pool.num_blocks
        if static or not any(r.block_hashes for r in reqs):
            assert pool.num_used == sum(r.num_blocks for r in sched.running)
    else:
        raise AssertionError("did not drain")
    for r in reqs:
        assert r.status in (RequestStatus.FINISHED, RequestStatus.REJECTED)
        if r.status == RequestStatus.FINISHED:
            assert r.num_output_tokens == r.max_tokens
        else:
            assert r.reject_reason
    assert kv.pool.num_free == blocks  # nothing leaked
    if no_evict:
        assert sched._reserved == 0 and not any(r.num_preemptions for r in reqs)


def test_free_counter_matches_its_parts_after_random_use():
    import random

    rng = random.Random(7)
    kv = KVCacheManager(num_blocks=50, block_size=2)
    live = []
    for i in range(2000):
        if live and rng.random() < 0.45:
            kv.free(live.pop(rng.randrange(len(live))))
        else:
            prompt = rng.randint(1, 20)
            hashes = tuple(rng.randint(0, 5) * 1000 + j for j in range(prompt // 2))
            r = Request(i, 0, 0.0, prompt, 1, hashes)
            hits = kv.get_computed_blocks(r)
            if kv.allocate_slots(r, prompt - 2 * hits, hits):
                r.num_computed_tokens = prompt
                live.append(r)
        pool = kv.pool
        assert pool.num_free == pool.num_free_plain + len(pool.cached_free)

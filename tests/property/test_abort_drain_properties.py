"""Hypothesis: random interleavings of arrivals, steps, decode spans, aborts and drains (with
retries of drained requests) never leak or overflow KV blocks, keep the decode cohort's
aggregates exact, and end every request FINISHED, REJECTED, ABORTED or drained.

The continuous-batching machine also runs a twin scheduler with the decode cohort switched
off (every request scheduled one by one); both get the same operations and must produce the
same step shapes, preemptions and finishes, so an aggregate left stale by an abort shows up.
The twin runs without prefix caching only: with it, the two paths can differ before any abort
(a prompt block whose hash was already cached stays plain; the per-request path retries its
registration on every later allocate_slots() and succeeds once the other copy is evicted, a
decoding cohort member never does), which changes later hits.
"""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sim.llm.kv_cache import KVCacheManager
from sim.llm.request import Request
from sim.llm.scheduler import Scheduler, SchedulerConfig
from sim.llm.static import StaticBatchScheduler
from sim.status import RequestStatus

LIVE = (RequestStatus.WAITING, RequestStatus.RUNNING, RequestStatus.PREEMPTED)
FINAL = (RequestStatus.FINISHED, RequestStatus.REJECTED, RequestStatus.ABORTED)


def ids(reqs) -> list[int]:
    return [r.request_id for r in reqs]


def counters(s, r: Request) -> tuple:
    """(status, output, computed, blocks, hashed blocks, preemptions) as they are once brought
    up to date, without doing it: invariants must not sync a lagging cohort member, or every
    abort would find it already synced."""
    lag = s.clock - r.cohort_mark if r in getattr(s, "cohort", ()) else 0
    computed = r.num_computed_tokens + lag
    blocks = -(-computed // s.kv.block_size) if lag else r.num_blocks
    return (r.status, r.num_output_tokens + lag, computed, blocks, r.num_hashed_blocks, r.num_preemptions)


def running(s) -> list[Request]:
    return [*s.cohort, *s.others] if hasattr(s, "cohort") else list(s.running)


class AbortDrainMachine(RuleBasedStateMachine):
    static = False

    @initialize(
        capacity=st.integers(32, 112),
        block_size=st.sampled_from([1, 2, 4, 16]),
        max_num_seqs=st.integers(1, 8),
        extra_budget=st.integers(0, 40),
        chunked=st.booleans(),
        caching=st.booleans(),
    )
    def setup(self, capacity, block_size, max_num_seqs, extra_budget, chunked, caching):
        blocks = max(2, capacity // block_size)
        cfg = SchedulerConfig(max_num_seqs, max_num_seqs + extra_budget, 10_000, chunked)
        self.bs = block_size
        self.caching = caching and not self.static
        cls = StaticBatchScheduler if self.static else Scheduler
        self.a = cls(cfg, KVCacheManager(blocks, block_size, self.caching))
        self.b = None
        if not self.static and not self.caching:
            self.b = Scheduler(cfg, KVCacheManager(blocks, block_size, self.caching))
            self.b.use_cohort = False
        self.ra: list[Request] = []  # by request_id
        self.rb: list[Request] = []
        self.drained: set[int] = set()  # drained and not resubmitted
        self.mid_step = False

    def scheds(self):
        return [(self.a, self.ra)] + ([(self.b, self.rb)] if self.b else [])

    # ------------------------------------------------------------------ rules

    @rule(specs=st.lists(st.tuples(st.integers(1, 30), st.integers(1, 16), st.integers(0, 2)), min_size=1, max_size=4))
    def add(self, specs):
        for prompt, out, group in specs:
            i = len(self.ra)
            n_full = prompt // self.bs
            hashes = tuple((group << 20) | j for j in range(n_full)) if group else None
            for sched, reqs in self.scheds():
                r = Request(i, 0, 0.0, prompt, out, hashes)
                reqs.append(r)
                reason = sched.add_request(r)
                assert (reason != "") == (r.status == RequestStatus.REJECTED)

    @precondition(lambda self: self.a.has_unfinished_requests())
    @rule()
    def step(self):
        self._step()

    @precondition(lambda self: self.a.has_unfinished_requests())
    @rule(n=st.integers(2, 12), spans=st.booleans())
    def run(self, n, spans):
        for _ in range(n):
            if not self.a.has_unfinished_requests():
                return
            if not (spans and self._span()):
                self._step()

    def _step(self):
        self.mid_step = True  # a failed check inside a step leaves blocks taken: teardown skips
        if self.b is None:
            out = self.a.schedule()
            assert out.requests or out.num_cohort
            self.a.update_from_output(out)
            self.mid_step = False
            return
        oa, ob = self.a.schedule(), self.b.schedule()
        assert oa.shape == ob.shape
        assert oa.requests or oa.num_cohort, "no progress with requests pending"
        assert ids(oa.preempted) == ids(ob.preempted)
        fa = self.a.update_from_output(oa)[1]
        fb = self.b.update_from_output(ob)[1]
        self.mid_step = False
        assert sorted(ids(fa)) == sorted(ids(fb))

    @precondition(lambda self: self.a.has_unfinished_requests())
    @rule()
    def span(self):
        self._span()

    def _span(self) -> bool:
        span = self.a.decode_span()
        if span is None:
            return False
        fa = self.a.advance_decode(span.num_steps)
        if self.b is not None:
            # The same steps one by one on the exact path: pure decode, nobody admitted.
            fb = []
            for _ in range(span.num_steps):
                self.mid_step = True
                ob = self.b.schedule()
                assert not ob.preempted and ob.shape.num_decode == span.num_rows == ob.shape.num_seqs
                fb += self.b.update_from_output(ob)[1]
                self.mid_step = False
            assert sorted(ids(fa)) == sorted(ids(fb))
        return True

    @precondition(lambda self: self.ra)
    @rule(i=st.integers(0, 10**6))
    def abort(self, i):
        # Mostly unfinished requests (aborting a final one does nothing, now and then).
        live = [r.request_id for r in self.ra if r.status in LIVE]
        i = live[i % len(live)] if live and i % 8 else i % len(self.ra)
        for sched, reqs in self.scheds():
            r = reqs[i]
            before = r.status
            sched.abort(r)
            assert r.num_blocks == 0
            assert r.status == (RequestStatus.ABORTED if before in LIVE else before)
            assert r.num_output_tokens <= r.max_tokens

    @precondition(lambda self: self.a.num_running)
    @rule(retry=st.booleans())
    def drain(self, retry):
        drained = None
        for sched, reqs in self.scheds():
            live = [r for r in reqs if r.status in LIVE]
            out = sched.drain()
            assert sorted(ids(out)) == sorted(ids(live))
            assert all(r.status == RequestStatus.ABORTED and r.num_blocks == 0 for r in out)
            assert not sched.has_unfinished_requests()
            pool = sched.kv.pool
            assert pool.num_free == pool.num_free_plain == pool.num_blocks
            if drained is not None:
                assert ids(out) == drained
            drained = ids(out)
            if retry:  # the engine resubmits them, in drain order, to the same replica
                for r in out:
                    r.reset_for_retry()
                    r.num_retries += 1
                    sched.add_request(r)
        if not retry:
            self.drained.update(drained)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def blocks_conserved(self):
        for sched, reqs in self.scheds():
            run = [counters(sched, r) for r in running(sched)]
            pool = sched.kv.pool
            held = sum(c[3] for c in run)
            shared = sum(c[4] for c in run) - len(pool.cached_ref)
            assert pool.num_used == held - shared
            assert 0 <= pool.num_free <= pool.num_blocks and pool.num_free_plain >= 0
            assert pool.num_free == pool.num_free_plain + len(pool.cached_free)
            assert sum(pool.cached_ref.values()) == sum(c[4] for c in run)
            assert all(r.num_blocks == 0 for r in reqs if r.status != RequestStatus.RUNNING)
            assert len(run) == sched.num_running and {c[0] for c in run} <= {RequestStatus.RUNNING}

    @invariant()
    def twins_agree(self):
        if self.b is not None:
            assert [counters(self.a, r) for r in self.ra] == [counters(self.b, r) for r in self.rb]
            assert self.a.kv.pool.num_free == self.b.kv.pool.num_free

    @invariant()
    def cohort_aggregates_exact(self):
        s = self.a
        if self.static:
            return
        bs = s.kv.block_size
        assert s._ctx_base == sum(r.cohort_base for r in s.cohort)
        needs = [0] * bs
        for r in s.cohort:
            needs[r.cohort_base % bs] += 1
        assert s._needs_block == needs

    def teardown(self):
        if not hasattr(self, "a") or self.mid_step:
            return
        for sched, reqs in self.scheds():
            for _ in range(20_000):
                if not sched.has_unfinished_requests():
                    break
                out = sched.schedule()
                assert out.requests or out.num_cohort, "no progress with requests pending"
                sched.update_from_output(out)
            else:
                raise AssertionError("did not finish")
            for r in reqs:
                assert r.status in FINAL
                if r.status == RequestStatus.FINISHED:
                    assert r.num_output_tokens == r.max_tokens
                elif r.status == RequestStatus.REJECTED:
                    assert r.reject_reason
                assert r.num_blocks == 0
            assert all(reqs[i].status == RequestStatus.ABORTED for i in self.drained)
            pool = sched.kv.pool
            # Only free blocks are left: plain ones and prefix-cached ones in the LRU.
            assert pool.num_free == pool.num_blocks and not pool.cached_ref
            assert pool.num_free_plain + len(pool.cached_free) == pool.num_blocks


class StaticAbortDrainMachine(AbortDrainMachine):
    static = True


TestAbortDrain = AbortDrainMachine.TestCase
TestAbortDrain.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
TestStaticAbortDrain = StaticAbortDrainMachine.TestCase
TestStaticAbortDrain.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)

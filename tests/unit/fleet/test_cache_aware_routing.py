"""The cache-aware router (NVIDIA Dynamo's KV-aware cost): it picks the replica with the least
``w × (waiting prefill + uncached prompt) / block_size + blocks in use + blocks the prompt
adds``. Checked here: the cost itself against a hand computation; requests that share a prefix
follow the replica that caches it while load is light (the hit rate nears what one cache would
give); load still spreads when one replica's queue outweighs its cache; and the pending-prefill
count it reads returns to zero."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim.config import parse_scenario
from sim.errors import ConfigError
from sim.fleet.cluster import simulate
from sim.fleet.router import CacheAware
from sim.llm.kv_cache import KVCacheManager
from sim.llm.request import Request

BLOCK = 512  # tokens per hash id in the trace files written here


class FakeReplica:
    def __init__(self, kv: KVCacheManager, pending: int = 0):
        self.kv = kv
        self.pending_prefill_tokens = pending


def cached(kv: KVCacheManager, keys: tuple, tokens: int, hold: bool = False) -> Request:
    """Run a request with these block keys through the cache (kept in use when ``hold``)."""
    r = Request(0, 0, 0.0, tokens, 1, keys)
    assert kv.allocate_slots(r, tokens)
    if not hold:
        kv.free(r)
    return r


def test_the_cost_is_dynamos_and_the_cheapest_replica_wins():
    bs = 16
    keys = tuple(range(100, 110))  # a 160-token prompt's ten blocks
    a, b, c = (KVCacheManager(1000, bs) for _ in range(3))
    cached(a, keys[:6], 96)  # six leading blocks cached, free
    cached(b, keys[:3], 48, hold=True)  # three leading blocks cached and in use
    cached(c, tuple(range(900, 950)), 800, hold=True)  # 50 unrelated blocks in use
    reps = [FakeReplica(a, pending=320), FakeReplica(b), FakeReplica(c)]
    req = Request(1, 0, 0.0, 160, 10, keys)

    def cost(w, rep, hit, active):
        return w * (rep.pending_prefill_tokens + 160 - hit * bs) / bs + rep.kv.pool.num_used + 10 - active

    for w in (0.0, 1.0, 5.0):
        expected = [cost(w, reps[0], 6, 0), cost(w, reps[1], 3, 3), cost(w, reps[2], 0, 0)]
        assert CacheAware(w).select(reps, req) == int(np.argmin(expected))
    # w = 1: a pays 20 + 4 = 24 (its prefill queue), b pays 7 + 3 + 7 = 17, c 10 + 50 + 10 = 70.
    assert CacheAware(1.0).select(reps, req) == 1
    # Ties go round robin.
    even = [FakeReplica(KVCacheManager(1000, bs)) for _ in range(3)]
    router = CacheAware(1.0)
    assert [router.select(even, req) for _ in range(4)] == [0, 1, 2, 0]


def trace(tmp_path, groups: list[int], gap_s: float, unique_from: int = 10_000) -> str:
    """A Mooncake file: request i belongs to prefix group groups[i] (four shared 512-token
    blocks) and adds one block of its own."""
    lines = []
    for i, g in enumerate(groups):
        shared = [g * 10 + k for k in range(4)]
        lines.append(
            json.dumps(
                {
                    "timestamp": int(i * gap_s * 1000),
                    "input_length": 5 * BLOCK,
                    "output_length": 20,
                    "hash_ids": [*shared, unique_from + i],
                }
            )
        )
    path = tmp_path / "groups.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run(path: str, router: str, replicas: int = 2, weight: float = 1.0):
    raw = {
        "name": "routing",
        "seed": 1,
        "pools": [
            {
                "name": "p",
                "model": "llama-3-8b",
                "gpu": "h100-sxm",
                "replicas": replicas,
                "router": router,
                "router_overlap_weight": weight,
            }
        ],
        "classes": [{"name": "c", "pool": "p", "trace": {"path": path, "format": "mooncake"}}],
    }
    df = simulate(parse_scenario(raw), None, np.random.SeedSequence(0)).requests
    return df, float(df["cached_tokens"].sum() / df["prompt_tokens"].sum())


def test_shared_prefixes_follow_the_replica_that_caches_them(tmp_path):
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 8, 48).tolist()
    path = trace(tmp_path, groups, gap_s=1.0)  # light load: each request alone
    df, hit = run(path, "cache_aware", replicas=4)
    # One cache holding everything: every request after its group's first hits 4 of 5 blocks
    # (the last prompt token is always computed, so the 4 shared blocks all count).
    ideal = (len(groups) - len(set(groups))) * 4 / (5 * len(groups))
    assert hit == pytest.approx(ideal, rel=1e-9)
    by_group = df.assign(group=groups).groupby("group")["replica"].nunique()
    assert (by_group == 1).all()
    for other in ("round_robin", "least_outstanding", "jsq_tokens"):
        assert run(path, other, replicas=4)[1] < hit - 0.1


def test_load_spreads_when_a_replicas_queue_outweighs_its_cache(tmp_path):
    path = trace(tmp_path, [0] * 80, gap_s=0.005)  # one prefix, a burst: queues build up
    df, _ = run(path, "cache_aware")
    share = df["replica"].value_counts(normalize=True)
    assert len(share) == 2 and share.min() > 0.25
    # Weight 0: only blocks in use count, the cache is ignored; a large weight follows the
    # cache harder and still spreads the burst (the waiting prefill is in the same term).
    assert run(path, "cache_aware", weight=0.0)[0]["replica"].nunique() == 2
    assert run(path, "cache_aware", weight=50.0)[0]["replica"].nunique() == 2


@pytest.mark.parametrize("disaggregated", [False, True])
def test_the_pending_prefill_count_returns_to_zero(tmp_path, disaggregated):
    rng = np.random.default_rng(5)
    path = trace(tmp_path, rng.integers(0, 3, 50).tolist(), gap_s=0.05)
    pools = [{"name": "p", "model": "llama-3-8b", "gpu": "h100-sxm", "replicas": 2, "router": "cache_aware"}]
    if disaggregated:
        pools.append(
            {
                "name": "d",
                "model": "llama-3-8b",
                "gpu": "h100-sxm",
                "replicas": 2,
                "router": "cache_aware",
                "disaggregation": {"prefill_pool": "p"},
            }
        )
    raw = {
        "name": "pending",
        "pools": pools,
        "classes": [{"name": "c", "pool": pools[-1]["name"], "trace": {"path": path, "format": "mooncake"}}],
    }
    from sim.fleet import cluster

    seen = []
    real = cluster.LLMPool.__init__

    def spy(self, *a, **k):
        real(self, *a, **k)
        seen.append(self)

    mp = pytest.MonkeyPatch()
    mp.setattr(cluster.LLMPool, "__init__", spy)
    try:
        df = simulate(parse_scenario(raw), None, np.random.SeedSequence(0)).requests
    finally:
        mp.undo()
    assert (df["status"] == "finished").all()
    assert [r.pending_prefill_tokens for pool in seen for r in pool.replicas] == [0] * (4 if disaggregated else 2)


def test_cache_aware_on_a_diffusion_pool_is_one_line():
    raw = {
        "name": "x",
        "duration_s": 10,
        "pools": [{"name": "img", "model": "sdxl", "gpu": "h100-sxm", "router": "cache_aware"}],
        "classes": [{"name": "i", "pool": "img", "kind": "image", "arrival": {"process": "poisson", "rate": 1}}],
    }
    with pytest.raises(ConfigError, match="router cache_aware reads an LLM's KV cache") as exc:
        parse_scenario(raw)
    assert "\n" not in str(exc.value)

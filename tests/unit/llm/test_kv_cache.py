"""KV manager and block pool, without time or SimPy (the vLLM test pattern)."""

import pytest

from sim.llm.kv_cache import BlockPool, KVCacheManager
from sim.llm.request import Request


def req(prompt, out=8, rid=0, hashes=None):
    return Request(rid, 0, 0.0, prompt, out, hashes)


def test_allocate_rounds_up_to_blocks_and_free_returns_them():
    kv = KVCacheManager(num_blocks=10, block_size=16)
    r = req(33)
    assert kv.allocate_slots(r, 33)
    assert r.num_blocks == 3 and kv.pool.num_free == 7
    kv.free(r)
    assert r.num_blocks == 0 and kv.pool.num_free == 10


def test_allocation_fails_without_side_effects():
    kv = KVCacheManager(num_blocks=2, block_size=16)
    r = req(40)
    assert not kv.allocate_slots(r, 40)
    assert r.num_blocks == 0 and kv.pool.num_free == 2


def test_double_free_is_detected():
    pool = BlockPool(4)
    pool.get_new_blocks(1)
    pool.free_plain(1)
    with pytest.raises(RuntimeError):
        pool.free_plain(1)


def test_prefix_hit_shares_blocks_and_caps_at_last_token():
    kv = KVCacheManager(num_blocks=20, block_size=4)
    hashes = tuple(range(100, 104))  # 4 full blocks = 16 tokens
    a = req(16, hashes=hashes, rid=1)
    assert kv.get_computed_blocks(a) == 0
    assert kv.allocate_slots(a, 16)
    assert a.num_hashed_blocks == 4
    b = req(16, hashes=hashes, rid=2)
    # All 16 prompt tokens are cached, but the last token must be recomputed: 3 blocks hit.
    assert kv.get_computed_blocks(b) == 3
    used = kv.pool.num_used
    assert kv.allocate_slots(b, 4, num_hit_blocks=3)
    assert kv.pool.num_used == used + 1  # only the recomputed last block is new
    kv.free(a)
    kv.free(b)
    assert kv.pool.num_free == 20
    # Freed hashed blocks stay cached until evicted.
    assert all(kv.pool.is_cached(h) for h in hashes[:3])


def test_cached_free_blocks_are_evicted_lru_after_plain_blocks():
    kv = KVCacheManager(num_blocks=6, block_size=4)
    a = req(8, hashes=(1, 2), rid=1)
    kv.allocate_slots(a, 8)
    kv.free(a)  # 2 cached-free blocks, 4 plain free
    b = req(16, rid=2)
    kv.allocate_slots(b, 16)  # takes the 4 plain blocks first
    assert kv.pool.is_cached(1) and kv.pool.is_cached(2)
    c = req(4, rid=3)
    kv.allocate_slots(c, 4)  # must evict one: the tail block (2) was freed first
    assert kv.pool.is_cached(1) and not kv.pool.is_cached(2)


def test_hit_on_free_cached_block_counts_against_free_pool():
    kv = KVCacheManager(num_blocks=3, block_size=4)
    a = req(8, hashes=(1, 2), rid=1)
    kv.allocate_slots(a, 8)
    kv.free(a)
    b = req(12, hashes=(1, 2), rid=2)
    hits = kv.get_computed_blocks(b)
    assert hits == 2
    assert kv.allocate_slots(b, 4, num_hit_blocks=2)
    assert kv.pool.num_free == 0

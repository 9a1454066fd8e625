"""Paged KV cache: a block pool and the manager that allocates slots for requests.

Mirrors vllm/v1/core/block_pool.py and kv_cache_manager.py in behaviour, not in data layout.
vLLM keeps a ``KVCacheBlock`` object per block; servesim keeps counts, because blocks without
reusable content are interchangeable and the simulator's speed depends on not touching them
one by one. Only blocks that carry a prefix hash are tracked individually:

* ``num_free_plain``: free blocks with no reusable content;
* ``cached_free``: free blocks that still hold a hashed prefix, in LRU order (evicted oldest
  first when plain blocks run out: servesim prefers plain blocks over evicting cache, a small
  departure from vLLM's single free queue that can only raise the hit rate);
* ``cached_ref``: in-use hashed blocks and their reference counts (shared by requests).

Invariant: used + free == num_blocks, where free = plain free + cached free.
"""

from __future__ import annotations

from collections import OrderedDict

from sim.llm.request import Request


class BlockPool:
    def __init__(self, num_blocks: int):
        if num_blocks < 1:
            raise ValueError("a block pool needs at least one block")
        self.num_blocks = num_blocks
        self.num_free = num_blocks
        """Plain free blocks plus cached free blocks (kept as a counter: read every step)."""
        self.num_free_plain = num_blocks
        self.cached_free: OrderedDict = OrderedDict()
        self.cached_ref: dict = {}
        self.cpu_tier: OrderedDict | None = None
        """Prefix blocks held in CPU memory (KV offloading), least recently used first; None:
        no CPU tier."""
        self.cpu_capacity = 0

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    def get_new_blocks(self, n: int) -> None:
        """Take n blocks for new content: plain free blocks first, then evict cached ones."""
        if n > self.num_free:
            raise RuntimeError(f"asked for {n} blocks with {self.num_free} free")
        self.num_free -= n
        plain = self.num_free_plain
        if n <= plain:
            self.num_free_plain = plain - n
            return
        self.num_free_plain = 0
        tier = self.cpu_tier
        for _ in range(n - plain):
            key, _ = self.cached_free.popitem(last=False)
            if tier is not None:
                # Evicted from the GPU, kept in CPU memory (least recently used goes first).
                tier[key] = True
                tier.move_to_end(key)
                if len(tier) > self.cpu_capacity:
                    tier.popitem(last=False)

    def free_plain(self, n: int) -> None:
        self.num_free_plain += n
        self.num_free += n
        if self.num_free > self.num_blocks:
            raise RuntimeError("double free: more free blocks than the pool holds")

    def is_cached(self, key) -> bool:
        return key in self.cached_ref or key in self.cached_free

    def touch(self, key) -> None:
        """A cache hit: take a reference on a hashed block (reviving it if it was free)."""
        if key in self.cached_ref:
            self.cached_ref[key] += 1
        else:
            del self.cached_free[key]
            self.num_free -= 1
            self.cached_ref[key] = 1

    def cache_block(self, key) -> bool:
        """Register a freshly computed, in-use block under its hash. False if the content is
        already cached (two requests computed it at once): the block stays plain."""
        if key in self.cached_ref or key in self.cached_free:
            return False
        self.cached_ref[key] = 1
        return True

    def free_hashed(self, key) -> None:
        ref = self.cached_ref[key] - 1
        if ref:
            self.cached_ref[key] = ref
        else:
            del self.cached_ref[key]
            self.cached_free[key] = True  # most recently used end
            self.num_free += 1

    def reset(self) -> None:
        """Forget every cached block (all blocks must be free): the pool of a restarted GPU."""
        if self.num_free != self.num_blocks:
            raise RuntimeError(f"reset with {self.num_used} blocks still in use")
        self.cached_free.clear()
        self.num_free_plain = self.num_blocks
        if self.cpu_tier is not None:
            self.cpu_tier.clear()  # the engine's host memory is gone with it


class KVCacheManager:
    """Allocates and frees KV slots for requests (vLLM's ``KVCacheManager`` facade)."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.pool = BlockPool(num_blocks)
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching

    @property
    def capacity_tokens(self) -> int:
        return self.pool.num_blocks * self.block_size

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def get_computed_blocks(self, req: Request) -> int:
        """Number of leading prompt blocks already in the cache (not yet referenced).

        At least the last token is always recomputed, as in vLLM, so the hit is capped at
        (num_tokens - 1) // block_size blocks.
        """
        hashes = req.block_hashes
        if not self.enable_prefix_caching or not hashes:
            return 0
        limit = min(len(hashes), (req.num_tokens - 1) // self.block_size)
        pool = self.pool
        n = 0
        while n < limit and pool.is_cached(hashes[n]):
            n += 1
        return n

    def cpu_hits(self, req: Request, gpu_hits: int) -> int:
        """Prompt blocks after the ``gpu_hits`` leading ones that the CPU tier holds, in a row
        (the same cap as GPU hits: the last token is always computed)."""
        tier = self.pool.cpu_tier
        hashes = req.block_hashes
        if tier is None or not self.enable_prefix_caching or not hashes:
            return 0
        limit = min(len(hashes), (req.num_tokens - 1) // self.block_size)
        n = gpu_hits
        while n < limit and hashes[n] in tier:
            n += 1
        return n - gpu_hits

    def touch_cpu(self, req: Request, start: int, n: int) -> None:
        """The request's blocks ``start .. start + n``, in the CPU tier, are about to be loaded:
        the most recently used there now."""
        tier = self.pool.cpu_tier
        for key in req.block_hashes[start : start + n]:
            tier.move_to_end(key)

    def prefix_overlap(self, req: Request) -> tuple[int, int]:
        """(leading prompt blocks in the cache, of those the ones in use by a request now),
        without touching anything: what a cache-aware router reads (NVIDIA Dynamo's router
        reads the same from the engines' KV events)."""
        hashes = req.block_hashes
        if not self.enable_prefix_caching or not hashes:
            return 0, 0
        limit = min(len(hashes), (req.num_tokens - 1) // self.block_size)
        ref, free = self.pool.cached_ref, self.pool.cached_free
        n = active = 0
        while n < limit:
            key = hashes[n]
            if key in ref:
                active += 1
            elif key not in free:
                break
            n += 1
        return n, active

    def allocate_slots(self, req: Request, num_new_tokens: int, num_hit_blocks: int = 0) -> bool:
        """Make room for ``num_new_tokens`` more tokens (after ``num_hit_blocks`` cache hits on
        a request that holds nothing yet). False, changing nothing, if the pool is short."""
        pool = self.pool
        hashes = req.block_hashes
        computed = req.num_computed_tokens + num_hit_blocks * self.block_size
        need = self.blocks_for(computed + num_new_tokens) - req.num_blocks - num_hit_blocks
        if need < 0:
            need = 0
        if num_hit_blocks:
            # Hits on free cached blocks take them out of the free pool too.
            evictable = sum(1 for i in range(num_hit_blocks) if hashes[i] in pool.cached_free)
            if need + evictable > pool.num_free:
                return False
            for i in range(num_hit_blocks):
                pool.touch(hashes[i])
            req.num_hashed_blocks += num_hit_blocks
        elif need > pool.num_free:
            return False
        if need:
            pool.get_new_blocks(need)
        req.num_blocks += num_hit_blocks + need
        if hashes and self.enable_prefix_caching:
            # Register prompt blocks that this step fills completely, in order.
            full = min(len(hashes), (computed + num_new_tokens) // self.block_size)
            n = req.num_hashed_blocks
            while n < full and pool.cache_block(hashes[n]):
                n += 1
            req.num_hashed_blocks = n
        return True

    def free(self, req: Request) -> None:
        """Release every block of a finished or preempted request (tail blocks first)."""
        pool = self.pool
        if req.num_hashed_blocks:
            hashes = req.block_hashes
            for i in range(req.num_hashed_blocks - 1, -1, -1):
                pool.free_hashed(hashes[i])
        pool.free_plain(req.num_blocks - req.num_hashed_blocks)
        req.num_blocks = 0
        req.num_hashed_blocks = 0

    def reset(self) -> None:
        """Forget the prefix cache after a replica failure (its GPU memory is lost). Every
        request must have freed its blocks first (``drain()`` does)."""
        self.pool.reset()

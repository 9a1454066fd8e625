"""Batch forming for a diffusion replica: which waiting requests run together, and when.

Pure logic, no time source: the replica engine asks, and runs what it is given.

* **static** — when the replica is free, the oldest waiting request opens a batch. Requests
  behind it join in arrival order while the batch has room (``max_batch_size`` images and the
  memory left after the weights) and, with ``shapes: bucket``, share its shape (resolution,
  frames and the steps still to run); with ``shapes: pad`` any shape joins and the batch runs
  at the largest latent for the most steps. A batch that is not full waits until its oldest
  request has waited ``max_wait_s`` since arrival (Triton's max_queue_delay). Nobody joins a
  running batch; all members finish with its last stage.
* **step** — step-level batching: between two denoising steps waiting requests join a running
  batch (same resolution and frames with ``bucket``; their own step counts) and members leave
  after their last step, so a short request does not wait for a long one.

A request's memory (latents, activations, VAE workspace) is fixed for its whole life; the sum
over a batch bounds it. A request that cannot fit on an empty replica is rejected.
"""

from __future__ import annotations

from collections import deque

from sim.config import DiffusionBatching
from sim.diffusion.request import ImageRequest


class DiffusionBatcher:
    def __init__(self, cfg: DiffusionBatching, mem_budget_bytes: float):
        self.cfg = cfg
        self.mem_budget = mem_budget_bytes
        self.waiting: deque[ImageRequest] = deque()

    def reject_reason(self, req: ImageRequest) -> str:
        if req.mem_bytes > self.mem_budget:
            gib = 2**30
            return (
                f"needs {req.mem_bytes / gib:.1f} GiB for latents, activations and VAE decode "
                f"({req.images} image(s) of {req.width}x{req.height}"
                + (f"x{req.frames} frames" if req.frames > 1 else "")
                + f") > {self.mem_budget / gib:.1f} GiB left after the weights"
            )
        return ""

    def _bucket(self, req: ImageRequest, step_level: bool) -> tuple:
        return (req.width, req.height, req.frames) if step_level else req.shape_key

    def take(self, members: list[ImageRequest], step_level: bool) -> tuple[list[ImageRequest], bool]:
        """Waiting requests that may join ``members`` now, in arrival order, and whether the
        batch is then full (no room for the next candidate). Removes them from ``waiting``."""
        cfg = self.cfg
        pad = cfg.shapes == "pad"
        images = sum(r.images for r in members)
        tokens = max((r.tokens for r in members), default=0)
        mem_rows = sum(r.mem_bytes / r.tokens for r in members)  # memory per token of padded shape
        key = self._bucket(members[0], step_level) if members and not pad else None
        taken: list[ImageRequest] = []
        full = False
        for req in self.waiting:
            if key is None and not pad:
                key = self._bucket(req, step_level)
            elif not pad and self._bucket(req, step_level) != key:
                continue
            n_images = images + req.images
            n_tokens = max(tokens, req.tokens)
            # Memory scales with the (padded) latent: each member's bytes per token x tokens.
            n_mem = (mem_rows + req.mem_bytes / req.tokens) * n_tokens
            if (members or taken) and (n_images > cfg.max_batch_size or n_mem > self.mem_budget):
                full = True
                break
            taken.append(req)
            images, tokens, mem_rows = n_images, n_tokens, mem_rows + req.mem_bytes / req.tokens
            if images >= cfg.max_batch_size:
                full = True
                break
        for req in taken:
            self.waiting.remove(req)
        return taken, full

    def form(self, now: float, step_level: bool = False) -> tuple[list[ImageRequest], float | None]:
        """A new batch for a free replica: (members, None) to run now, or ([], t) to look again
        at time t (or on the next arrival) when the batch is not full and may still wait."""
        if not self.waiting:
            return [], None
        head = self.waiting[0]
        deadline = head.arrival_s + self.cfg.max_wait_s
        if self.cfg.max_wait_s > 0 and now < deadline and not self._would_fill(step_level):
            return [], deadline
        taken, _ = self.take([], step_level)
        return taken, None

    def _would_fill(self, step_level: bool) -> bool:
        """Whether the waiting requests already fill a batch opened by the head."""
        saved = deque(self.waiting)
        taken, full = self.take([], step_level)
        self.waiting = saved
        return full

    def remove(self, req: ImageRequest) -> bool:
        try:
            self.waiting.remove(req)
            return True
        except ValueError:
            return False

"""Two pools on the same GPUs (``pools.<p>.colocation``): replica i of the guest pool runs on
the GPUs of replica i of the host pool.

Memory is partitioned: each side sees a GPU with its ``memory_fraction`` of the memory (the
host the rest), and its weights, activations and KV cache or latents must fit there. Compute
is shared in one of two ways:

* ``mig``: Multi-Instance GPU slices. Each side sees a smaller GPU: ``compute_fraction`` of the
  compute peaks and of the memory bandwidth (MIG partitions the SMs and the memory
  controllers alike), and never waits for the other.
* ``time_slice``: CUDA's default between two processes. Each side runs on the whole GPU in
  turns; a step is slowed by the other's load. Two replicas that are both busy each get half
  the GPU, so a step taken while the other is busy a fraction rho of the time lasts about
  ``(1 + rho)`` times its own time: the mean-field form of processor sharing, with rho the
  other replica's busy fraction over the last ``window_s``. Context-switch overhead is not
  charged.

The GPUs are paid once: each side's GPU-hours are its share of them (``compute_fraction``
for MIG, ``memory_fraction`` when time-sliced), so their classes' costs add up to the GPUs'.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sim.catalog import GPUSpec
from sim.config import PoolConfig
from sim.costs.base import StepLine


@dataclass(frozen=True)
class Share:
    """One side of a shared GPU."""

    memory: float
    compute: float
    mode: str
    partner: str
    window_s: float

    @property
    def billed(self) -> float:
        """The fraction of the shared GPUs' hours this side pays."""
        return self.compute if self.mode == "mig" else self.memory


def shares(pools: list[PoolConfig]) -> dict[str, Share]:
    """Each pool that shares GPUs, by name, with its side of them."""
    out: dict[str, Share] = {}
    for guest in pools:
        c = guest.colocation
        if c is None:
            continue
        out[guest.name] = Share(c.memory_fraction, c.compute_share, c.mode, c.pool, c.window_s)
        out[c.pool] = Share(1 - c.memory_fraction, 1 - c.compute_share, c.mode, guest.name, c.window_s)
    return out


def shared_gpu(gpu: GPUSpec, share: Share | None) -> GPUSpec:
    """The GPU one side sees: its memory share; with MIG also its share of the compute and
    bandwidth."""
    if share is None:
        return gpu
    update = {"memory_gib": gpu.memory_gib * share.memory}
    if share.mode == "mig":
        update.update(bf16_tflops=gpu.bf16_tflops * share.compute, hbm_tb_s=gpu.hbm_tb_s * share.compute)
        for peak in ("fp8_tflops", "int8_tops"):
            if getattr(gpu, peak):
                update[peak] = getattr(gpu, peak) * share.compute
    return gpu.model_copy(update=update)


class TimeSliced:
    """A replica's cost model on a time-sliced GPU: every duration times ``1 + rho``, rho the
    partner replica's busy fraction over the last ``window_s`` (read from the recorder's running
    totals of busy seconds)."""

    def __init__(self, base, env, recorder, partner: int, window_s: float):
        self.base, self.env, self.recorder = base, env, recorder
        self.partner, self.window_s = partner, window_s
        self.name = base.name
        self._history: deque[tuple[float, float]] = deque()

    def factor(self) -> float:
        now = self.env.now
        busy = self.recorder.busy_by_replica[self.partner]
        hist = self._history
        if not hist or hist[-1][0] < now:
            hist.append((now, busy))
        while len(hist) > 1 and hist[1][0] <= now - self.window_s:
            hist.popleft()
        t0, b0 = hist[0]
        if now <= t0:
            return 1.0
        return 1.0 + min(1.0, max(0.0, (busy - b0) / (now - t0)))

    # LLM cost model
    def step_s(self, shape) -> float:
        return self.base.step_s(shape) * self.factor()

    def decode_line(self, num_decode: int) -> StepLine:
        f = self.factor()
        return StepLine([(a * f, s * f) for a, s in self.base.decode_line(num_decode).pieces])

    # diffusion cost model
    def text_encode_s(self, num_prompts: int) -> float:
        return self.base.text_encode_s(num_prompts) * self.factor()

    def denoise_step_s(self, rows: int, tokens: int) -> float:
        return self.base.denoise_step_s(rows, tokens) * self.factor()

    def vae_decode_s(self, num_images: int, width: int, height: int, frames: int) -> float:
        return self.base.vae_decode_s(num_images, width, height, frames) * self.factor()

    def __getattr__(self, name: str):
        return getattr(self.base, name)


def time_slice(env, recorder, host, guest, window_s: float) -> None:
    """Wrap each pair of replicas' cost models so that each is slowed by the other."""
    recorder.track_busy()
    for a, b in zip(host.replicas, guest.replicas, strict=True):
        a.cost = TimeSliced(a.cost, env, recorder, b.index, window_s)
        b.cost = TimeSliced(b.cost, env, recorder, a.index, window_s)

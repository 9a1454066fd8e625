"""Kernel timing: one function times a callable honestly on CPU or CUDA, and says where it ran.

On CUDA a measurement is bracketed by CUDA events after a device synchronise; the callable is
given a fresh input set each repeat (``rotate``), so weights and inputs of one repeat are not
still sitting in L2 from the last. On CPU it is ``perf_counter_ns`` with the garbage collector
off during the timed region; threads are pinned by ``configure_cpu`` (two shared cores make
oversubscription, not the model, the dominant cost otherwise: calibration notes, "Timing
caveats"). Every timing keeps the median, p10, p90 and min of its repeats; every run records
the device, driver and torch versions with the dtype, so a profile always says what it measured.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import gc
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class Timing:
    """Seconds over the timed repeats of one measurement."""

    median_s: float
    p10_s: float
    p90_s: float
    min_s: float
    reps: int
    warmup: int

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: the repeat-to-repeat noise of this point."""
        return (self.p90_s - self.p10_s) / self.median_s if self.median_s > 0 else 0.0


#: glibc mallopt parameters: keep freed memory in the heap instead of returning it to the OS.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Have glibc's malloc reuse freed activation buffers (up to 32 MiB each) instead of mapping
    fresh pages for every one. A serving loop's step shapes change every step; with glibc's
    defaults each large activation is a new mmap whose pages fault in on first touch, which made
    a mixed step of llama-tiny 32 % slower when shapes varied than when one shape repeated (the
    calibration grid's case); with this, 7 %. CPU serving stacks get the same from tcmalloc or
    jemalloc. Returns False where there is no glibc (nothing changes)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20) and libc.mallopt(_M_TRIM_THRESHOLD, 2**30))
    except (OSError, AttributeError):
        return False


def configure_cpu(threads: int = 1) -> None:
    """Pin torch to ``threads`` intra-op threads and one inter-op thread (set before any work),
    and keep freed memory for reuse (``keep_freed_memory``): calibration and the CPU serving
    loops both run this way."""
    keep_freed_memory()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process (it can only be set before use)
        pass


def _summary(samples: list[float], warmup: int) -> Timing:
    a = np.asarray(samples)
    return Timing(
        median_s=float(np.median(a)),
        p10_s=float(np.percentile(a, 10)),
        p90_s=float(np.percentile(a, 90)),
        min_s=float(a.min()),
        reps=len(samples),
        warmup=warmup,
    )


def time_fn(
    fn: Callable[[int], object],
    device: str,
    *,
    warmup: int = 2,
    reps: int = 5,
    min_total_s: float = 0.0,
    max_reps: int = 50,
) -> Timing:
    """Time ``fn(i)`` (``i`` is the repeat index, for rotating inputs) on ``device``.

    Runs ``warmup`` untimed calls, then at least ``reps`` timed ones, and more (up to
    ``max_reps``) until ``min_total_s`` of timed work has accumulated, so short kernels get
    enough samples for a stable median.
    """
    cuda = device.startswith("cuda")
    for i in range(warmup):
        fn(i)
    if cuda:
        torch.cuda.synchronize()
    samples: list[float] = []
    gc.collect()
    gc.disable()
    try:
        i = 0
        while len(samples) < reps or (sum(samples) < min_total_s and len(samples) < max_reps):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(warmup + i)
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter_ns()
                fn(warmup + i)
                samples.append((time.perf_counter_ns() - t0) / 1e9)
            i += 1
    finally:
        gc.enable()
    return _summary(samples, warmup)


#: Points faster than this get an untimed call before each timed one in interleaved rounds.
REWARM_BELOW_S = 0.02


def time_interleaved(
    fns: list[Callable[[int], object]],
    *,
    warmup: int = 2,
    reps: int = 5,
    min_total_s: float = 0.0,
    max_reps: int = 50,
    seed: int = 0,
    on_done: Callable[[int], None] | None = None,
) -> list[Timing]:
    """Time several CPU callables in rounds, each round in a fresh random order.

    On a shared CPU a burst of load from elsewhere lands on whichever point is running; taking
    the points in shuffled rounds spreads each burst over many points as a few slow samples
    that their medians ignore, instead of a whole point's repeats (calibration notes, "Timing
    caveats": randomised, interleaved sweep order). Each timed call of a short point follows an
    untimed one, so every sample sees the caches as a run of that kernel left them, as
    sequential repeats would. ``on_done(k)`` reports k points finished.
    """
    for fn in fns:
        for i in range(warmup):
            fn(i)
    samples: list[list[float]] = [[] for _ in fns]
    rng = np.random.default_rng(seed)

    def wanted(j: int) -> bool:
        got = samples[j]
        return len(got) < reps or (sum(got) < min_total_s and len(got) < max_reps)

    gc.collect()
    gc.disable()
    try:
        active = list(range(len(fns)))
        while active:
            for j in rng.permutation(active):
                if not samples[j] or samples[j][-1] < REWARM_BELOW_S:
                    # a short kernel runs once untimed first: the point before it in the round
                    # has just evicted its data, and warm-or-not would otherwise be the noise
                    fns[j](warmup + len(samples[j]))
                t0 = time.perf_counter_ns()
                fns[j](warmup + len(samples[j]))
                samples[j].append((time.perf_counter_ns() - t0) / 1e9)
            active = [j for j in active if wanted(j)]
            if on_done is not None:
                on_done(len(fns) - len(active))
    finally:
        gc.enable()
    return [_summary(got, warmup) for got in samples]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _nvidia_smi(query: str) -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


#: GPU names as the driver reports them -> catalog keys (sim/catalog/data/gpus.yaml).
GPU_KEYS = (
    ("H200", "h200"),
    ("H100", "h100-sxm"),
    ("A100", "a100-80gb"),
    ("B200", "b200"),
    ("L40S", "l40s"),
    ("L4", "l4"),
    ("MI300X", "mi300x"),
)


def device_info(device: str, threads: int | None = None) -> dict:
    """What a profile records about where it was measured."""
    info: dict = {
        "type": "cuda" if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "driver": None,
        "gpu": None,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "host_cpu": _cpu_name(),
    }
    if info["type"] == "cuda":
        name = torch.cuda.get_device_name(torch.device(device))
        info["name"] = name
        info["driver"] = _nvidia_smi("driver_version")
        info["clocks"] = _nvidia_smi("clocks.sm,clocks.max.sm,power.draw,power.limit")
        info["gpu"] = next((key for tag, key in GPU_KEYS if tag in name), None)
    else:
        info["name"] = f"{info['host_cpu']} ({info['threads']} thread{'s' if info['threads'] != 1 else ''})"
        info["cuda"] = None
        try:
            info["loadavg"] = round(os.getloadavg()[0], 2)
        except OSError:
            pass
    return info


def run_metadata(device: str, dtype: torch.dtype, quick: bool) -> dict:
    return {
        "device": device_info(device),
        "dtype": str(dtype).removeprefix("torch."),
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_sha": _git_sha(),
        "quick": quick,
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()

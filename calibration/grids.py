"""The batch shapes calibration measures: one grid per (shape of model, device, quick or full).

The simulator asks the cost model about the steps a replica actually runs, so the grids cover
those shapes (calibration notes, "Kernel/measurement list"): token-parallel layer ops against
tokens in the step, decode attention against (batch, summed context, skew), prefill attention
against (chunk, cached context, chunks per step), the LM head against rows, whole mixed steps,
and for diffusion the denoiser against (rows, latent size), text encoders against prompts and
the VAE against (images, size). Full grids are sized for a GPU (about 20 minutes per model on
an H100); quick grids finish on two CPU cores in a few minutes.

A fraction of every grid is held out of the fits (``held_out``) so the fit error a profile
reports is measured on points the fit did not see.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LLMGrid:
    lin_tokens: tuple[int, ...]
    decode: tuple[tuple[int, ...], ...]
    """Each entry: the contexts of one decode batch (one per sequence)."""
    prefill: tuple[tuple[tuple[int, int], ...], ...]
    """Each entry: the (new tokens, cached tokens) chunks of one prefill step."""
    head_rows: tuple[int, ...]
    steps: tuple[tuple[tuple[int, int], ...], ...]
    """Whole engine steps: (new tokens, cached tokens) per sequence; new = 1 is a decode."""


@dataclass(frozen=True)
class DiffusionGrid:
    denoise: tuple[tuple[int, int, int, int], ...]
    """(rows, width, height, frames) per denoiser forward."""
    text_prompts: tuple[int, ...]
    vae: tuple[tuple[int, int, int, int], ...]
    """(images, width, height, frames) per VAE decode."""
    notes: list[str] = field(default_factory=list)


def _mixes(rng: np.random.Generator, sizes: list[int], ctx_lo: int, ctx_hi: int, n: int) -> list[tuple[int, ...]]:
    """Skewed decode batches: contexts log-uniform in [ctx_lo, ctx_hi]."""
    out = []
    for _ in range(n):
        b = int(rng.choice(sizes))
        ctx = np.exp(rng.uniform(np.log(ctx_lo), np.log(ctx_hi), size=b)).astype(int)
        out.append(tuple(int(c) for c in ctx))
    return out


def _steps(rng: np.random.Generator, n: int, max_decode: int, ctx_hi: int, chunk_hi: int, token_budget: int):
    """Random whole steps like a continuous-batching engine runs: decodes plus 0-2 prefill chunks."""
    out = []
    for i in range(n):
        kind = i % 3  # decode-only, prefill-only, mixed, in turn
        seqs: list[tuple[int, int]] = []
        if kind != 1:
            b = int(rng.integers(1, max_decode + 1))
            seqs += [(1, int(c)) for c in np.exp(rng.uniform(np.log(16), np.log(ctx_hi), size=b)).astype(int)]
        if kind != 0:
            for _ in range(int(rng.integers(1, 5))):
                budget = token_budget - sum(p for p, _ in seqs)
                if budget < 8:
                    break
                p = int(min(budget, np.exp(rng.uniform(np.log(8), np.log(chunk_hi)))))
                k = int(rng.choice([0, 0, int(rng.integers(16, ctx_hi))]))
                seqs.append((p, k))
        out.append(tuple(seqs))
    return tuple(out)


def llm_grid(device: str, quick: bool, max_context: int) -> LLMGrid:
    """The LLM grid; contexts stay below the model's ``max_context``."""
    rng = np.random.default_rng(20261123)
    cuda = device.startswith("cuda")
    if cuda and not quick:
        lin = [1, 2, 4, *range(8, 1025, 8), *range(1088, 4097, 64), *range(4224, 8193, 128)]
        sizes, ctxs = [1, 2, 4, 8, 16, 32, 64, 128, 256], [128, 512, 1024, 2048, 4096, 8192]
        chunks, cached = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096], [0, 512, 2048, 8192]
        rows = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
        n_mix, n_steps, max_decode, chunk_hi, budget = 24, 60, 256, 2048, 8192
    elif cuda:
        lin = [1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 160, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096]
        sizes, ctxs = [1, 4, 16, 64, 128], [256, 1024, 4096]
        chunks, cached = [32, 128, 512, 2048], [0, 1024, 4096]
        rows = [1, 4, 16, 64, 256]
        n_mix, n_steps, max_decode, chunk_hi, budget = 8, 24, 128, 2048, 4096
    else:
        # CPU BLAS picks kernels by row count, so small GEMMs are not monotonic in rows: the
        # tables need dense grids at the small end to follow that.
        lin = [*range(1, 9), *range(10, 33, 2), *range(36, 65, 4), *range(80, 257, 16), *range(288, 513, 32)]
        sizes, ctxs = [1, 2, 4, 8, 16], [32, 128, 512]
        chunks, cached = [8, 32, 64, 128, 256], [0, 128, 512]
        rows = [*range(1, 17), *range(20, 65, 4)]
        n_mix, n_steps, max_decode, chunk_hi, budget = 6, 30, 16, 256, 512
        if not quick:
            lin += [640, 768, 1024]
            ctxs += [1024, 2048]
            cached += [1024]
            n_steps = 45
    ctxs = [c for c in ctxs if c < max_context]
    chunks = [p for p in chunks if p <= max_context]
    cached = [k for k in cached if k + min(chunks) <= max_context]
    ctx_hi = max(ctxs)
    decode = [tuple([c] * b) for b in sizes for c in ctxs]
    decode += _mixes(rng, sizes[1:], 16, ctx_hi, n_mix)
    # every (chunk, cached) pair a sequence of max_context tokens can hold
    prefill: list[tuple[tuple[int, int], ...]] = [((p, k),) for p in chunks for k in cached if p + k <= max_context]
    prefill += [((p, 0), (p // 2, k)) for p in chunks[1:] for k in cached[-1:] if p // 2 + k <= max_context]
    # Several new prompts admitted in one step (a burst): many short chunks.
    prefill += [tuple((p, 0) for _ in range(m)) for m in (4, 8) for p in chunks[:2]]
    steps = _steps(rng, n_steps, max_decode, ctx_hi, min(chunk_hi, max(chunks)), budget)
    return LLMGrid(tuple(lin), tuple(decode), tuple(prefill), tuple(rows), steps)


def diffusion_grid(device: str, quick: bool, default_size: tuple[int, int, int], multiple: int) -> DiffusionGrid:
    """Denoiser, text-encoder and VAE shapes around the model's default ``(width, height, frames)``.

    Sizes are scaled from the default (x0.5 ... x1.25 per side, rounded to ``multiple``) so a
    video model is timed at fewer frames too; rows cover CFG-doubled static batches.
    """
    w0, h0, f0 = default_size
    cuda = device.startswith("cuda")
    scales = [0.5, 0.625, 0.75, 0.875, 1.0] + ([] if quick else [1.125, 1.25])
    rows = [1, 2, 3, 4, 6, 8] + ([16] if cuda and not quick else [])
    frames = [f0] if f0 == 1 else sorted({max(1, (f0 - 1) // 4 + 1), max(1, (f0 - 1) // 2 + 1), f0})

    def snap(x: float) -> int:
        return max(multiple, int(round(x / multiple)) * multiple)

    sizes = sorted({(snap(w0 * s), snap(h0 * s)) for s in scales})
    denoise = [(r, w, h, f) for r in rows for (w, h) in sizes for f in frames]
    if f0 > 1:  # video: big rows x frames x size products would take minutes each; keep rows small
        denoise = [d for d in denoise if d[0] <= 2]
    vae_images = [1, 2, 3, 4] if f0 == 1 else [1]
    vae = [(b, w, h, f) for b in vae_images for (w, h) in sizes for f in frames]
    prompts = (1, 2, 3, 4, 6, 8) + (() if quick else (12, 16))
    return DiffusionGrid(tuple(denoise), prompts, tuple(vae))


def held_out(n: int, every: int = 4) -> np.ndarray:
    """A boolean mask of the points kept out of a fit: every ``every``-th one, starting at 1."""
    mask = np.zeros(n, dtype=bool)
    mask[1::every] = True
    return mask

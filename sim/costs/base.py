"""The cost-model interface: the shape of one engine step in, seconds out.

``StepShape`` aggregates what determines an LLM step's time (reference: the cost forms in the
project's calibration notes): tokens through the token-parallel layers, decode sequences and
their summed context (decode attention reads that much KV), prefill chunks' attention work,
and logit rows. A ``CostModel`` turns a shape into seconds. For decode-only stretches it also
returns a ``StepLine``: the step time as a function of the summed context, so the engine can
advance many identical-membership decode steps in closed form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class StepShape:
    """The batch one LLM engine step computes (aggregates only: no per-request lists)."""

    num_seqs: int = 0
    """Requests scheduled in this step (= logit rows)."""
    num_tokens: int = 0
    """Tokens through the token-parallel layers: decodes + prefill-chunk tokens."""
    num_decode: int = 0
    decode_ctx_sum: int = 0
    """Sum over decodes of the context each attends to (tokens already in its KV cache)."""
    num_prefill_tokens: int = 0
    prefill_ctx_sum: int = 0
    """Sum over prefill chunks of cached tokens before the chunk (KV read)."""
    prefill_attn_pairs: float = 0.0
    """Sum over chunks of p*k + p*(p+1)/2: causal query-key pairs (attention FLOPs / 4Lnh)."""
    max_prefill_chunk: int = 0
    """The largest prefill chunk's tokens (a chunk runs on one data-parallel attention group)."""
    extra_logit_rows: int = 0
    """Logit rows beyond one per sequence: a diffusion LM samples every position of its block
    (``sim.kinds.blocks``). The roofline charges the LM head for them; other cost models ignore
    them."""

    def add_decode(self, ctx: int) -> None:
        self.num_seqs += 1
        self.num_tokens += 1
        self.num_decode += 1
        self.decode_ctx_sum += ctx

    def add_prefill(self, num_new: int, num_cached: int) -> None:
        self.num_seqs += 1
        self.num_tokens += num_new
        self.num_prefill_tokens += num_new
        self.prefill_ctx_sum += num_cached
        self.prefill_attn_pairs += num_new * num_cached + num_new * (num_new + 1) / 2
        if num_new > self.max_prefill_chunk:
            self.max_prefill_chunk = num_new


class StepLine:
    """Step time of a decode-only batch of fixed membership, as a function of its step index.

    Each step every sequence appends one token, so the summed context grows by the batch size
    B per step: ctx_j = ctx_0 + j*B. The step time is the upper envelope (max) of affine pieces
    ``a + s*ctx`` (a roofline is max(compute, memory) of affine terms; a fitted profile is one
    affine piece), which makes the time of j steps a closed-form sum.
    """

    __slots__ = ("pieces", "affine")

    def __init__(self, pieces: list[tuple[float, float]]):
        if not pieces:
            raise ValueError("a StepLine needs at least one (intercept, slope) piece")
        self.pieces = pieces
        self.affine = pieces[0] if len(pieces) == 1 else None  # the common one-piece case

    def step_s(self, ctx: float) -> float:
        if self.affine is not None:
            a, s = self.affine
            return a + s * ctx
        return max(a + s * ctx for a, s in self.pieces)

    def total_s(self, ctx0: float, dctx: float, num_steps: int) -> float:
        """Seconds for steps j = 0..num_steps-1 at contexts ctx0 + j*dctx."""
        if num_steps <= 0:
            return 0.0
        if self.affine is not None:
            a, s = self.affine
            return num_steps * (a + s * ctx0) + s * dctx * num_steps * (num_steps - 1) / 2
        total = 0.0
        for j, end, cur in self._envelope(ctx0, dctx, num_steps):
            n = end - j
            total += n * cur[0] + cur[1] * (j + end - 1) * n / 2
        return total

    def segments(self, ctx0: float, dctx: float, num_steps: int):
        """The steps j = 0..num_steps-1 as affine runs: (first step's seconds, seconds added
        per step, number of steps), in order."""
        if num_steps <= 0:
            return []
        if self.affine is not None:
            a, s = self.affine
            return [(a + s * ctx0, s * dctx, num_steps)]
        return [(c0 + c1 * j, c1, end - j) for j, end, (c0, c1) in self._envelope(ctx0, dctx, num_steps)]

    def _envelope(self, ctx0: float, dctx: float, num_steps: int):
        """Per-step time in j is max_p(A_p + B_p*j): its upper envelope segment by segment, as
        (first j, end j, (A, B) of the line on top)."""
        lines = [(a + s * ctx0, s * dctx) for a, s in self.pieces]
        j = 0
        while j < num_steps:
            cur = max(lines, key=lambda ln: (ln[0] + ln[1] * j, ln[1]))
            # The next step index at which a steeper line overtakes the current one.
            end = num_steps
            for a, b in lines:
                if b > cur[1]:
                    ratio = (cur[0] - a) / (b - cur[1])
                    if ratio < end - 1:  # also guards a ratio overflowing to infinity
                        cross = math.floor(ratio) + 1
                        if j < cross < end:
                            end = cross
            yield j, end, cur
            j = end

    def steps_within(self, ctx0: float, dctx: float, elapsed_s: float, max_steps: int) -> int:
        """How many whole steps (at most max_steps) have finished ``elapsed_s`` after the start."""
        return self._steps_within(ctx0, dctx, elapsed_s, max_steps)[0]

    def step_end_at(self, ctx0: float, dctx: float, elapsed_s: float, max_steps: int) -> tuple[int, float]:
        """The end of the step running ``elapsed_s`` after the start (at the latest, the end of
        step max_steps): (steps done by then, seconds from the start)."""
        j, next_total = self._steps_within(ctx0, dctx, elapsed_s, max_steps)
        if j < max_steps:
            return j + 1, next_total
        return max_steps, self.total_s(ctx0, dctx, max_steps)

    def _steps_within(self, ctx0: float, dctx: float, elapsed_s: float, max_steps: int) -> tuple[int, float]:
        """(j, total of j+1 steps) where j is ``steps_within``; the total is only meaningful
        when j < max_steps (it comes for free from the search, and a cut needs it)."""
        if self.affine is not None:
            # total(j) = j*a + b*j*(j-1)/2 is increasing: solve the quadratic for an estimate,
            # then settle the float rounding by checking the neighbours (the answer does not
            # depend on the estimate).
            a0, s = self.affine
            a, b = a0 + s * ctx0, s * dctx
            if b > 0:
                h = a - b / 2
                j = int((math.sqrt(h * h + 2 * b * elapsed_s) - h) / b)
            else:
                j = int(elapsed_s / a) if a > 0 else max_steps
            if j > max_steps:
                j = max_steps
            elif j < 0:
                j = 0
            # total(j) written out as total_s() computes it (the same floats, bit for bit).
            while j > 0 and j * a + b * j * (j - 1) / 2 > elapsed_s:
                j -= 1
            next_total = 0.0
            while j < max_steps:
                next_total = (j + 1) * a + b * (j + 1) * j / 2
                if next_total > elapsed_s:
                    break
                j += 1
            return j, next_total
        lo, hi = 0, max_steps
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.total_s(ctx0, dctx, mid) <= elapsed_s:
                lo = mid
            else:
                hi = mid - 1
        return lo, self.total_s(ctx0, dctx, lo + 1) if lo < max_steps else 0.0


class CostModel(Protocol):
    """Seconds for one engine step of a given shape, on one replica (all its TP ranks)."""

    name: str

    def step_s(self, shape: StepShape) -> float:
        """Duration of one step computing ``shape``."""
        ...

    def decode_line(self, num_decode: int) -> StepLine:
        """Step time of a decode-only step of ``num_decode`` sequences vs their summed context.

        Must agree with ``step_s`` on decode-only shapes.
        """
        ...


class DiffusionCostModel(Protocol):
    """Seconds for the stages of a diffusion batch on one replica.

    A batch runs text encoding once per prompt, then denoising steps over a fixed-size latent,
    then a VAE decode per image. ``rows`` counts latents through the denoiser in one step:
    images x 2 with classifier-free guidance (the unconditional half), x 1 without. Every row
    of a step has the same ``tokens`` (members of a batch share a shape or are padded to the
    largest). ``tokens`` are the model's latent tokens per row (see
    ``DiffusionModelSpec.latent_tokens``).
    """

    name: str

    def text_encode_s(self, num_prompts: int) -> float:
        """Encoding ``num_prompts`` prompts with the model's text encoder(s), batched."""
        ...

    def denoise_step_s(self, rows: int, tokens: int) -> float:
        """One denoiser forward over ``rows`` latents of ``tokens`` latent tokens each."""
        ...

    def vae_decode_s(self, num_images: int, width: int, height: int, frames: int) -> float:
        """Decoding ``num_images`` latents to pixels (``frames`` = 1 for an image)."""
        ...

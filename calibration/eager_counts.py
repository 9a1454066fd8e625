"""Count what an eager (uncompiled) PyTorch denoiser step launches, for the diffusion catalog.

    python -m calibration.eager_counts          # prints each model's counts (the catalog holds them)

Run eagerly, every PyTorch op of a denoiser forward is its own kernel launched from Python,
and every elementwise op (norms, activations, modulation, residual adds, RoPE, dtype casts)
reads and writes its tensors through HBM; a compiler (torch.compile, TensorRT) fuses those
into the GEMMs and attention around them and replays the step as a graph. This runs the
random-weight replica of each catalog pipeline (``calibration.models``, built to mirror the
diffusers modules) on the ``meta`` device, where nothing is computed or allocated, under a
dispatch mode that sees every op of one forward of one row:

* ``ops_per_forward``: ops that launch work (views and reshapes excluded);
* elementwise bytes: inputs plus outputs of every op that is not a GEMM, convolution or
  attention, at two sizes, as ``bytes_per_row + bytes_per_row_token x latent tokens`` (exact
  for these architectures: activations scale with tokens, text-token streams do not).

The diffusion roofline charges an eager step ``max(GPU, host)``: the GPU time plus the
elementwise bytes at the GPU's fitted elementwise bandwidth, against the host's
``ops_per_forward x overheads.eager_op_s`` (``sim/diffusion/cost.py``). The counts are the
replica's: where it differs from diffusers in detail (it recomputes Flux's rotary tables per
block, for instance), so do they.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

VIEWS = frozenset(
    "view _unsafe_view reshape _reshape_alias t transpose permute expand slice select unsqueeze squeeze "
    "detach split split_with_sizes chunk unbind as_strided alias lift_fresh unflatten flatten narrow "
    "view_as_real view_as_complex".split()
)
"""Ops that return a view: no kernel."""
HEAVY = frozenset(
    "linear addmm mm bmm matmul baddbmm einsum conv1d conv2d conv3d convolution scaled_dot_product_attention "
    "_scaled_dot_product_flash_attention _scaled_dot_product_efficient_attention".split()
)
"""GEMMs, convolutions and attention: the roofline's FLOPs already cover them."""


def _bytes(x) -> int:
    return sum(t.numel() * t.element_size() for t in tree_flatten(x)[0] if isinstance(t, torch.Tensor))


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.elementwise_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name not in VIEWS:
            self.ops += 1
            if name not in HEAVY:
                self.elementwise_bytes += _bytes(args) + _bytes(kwargs) + _bytes(out)
        return out


def count(model: str, scales: tuple[float, float] = (1.0, 0.5)) -> dict:
    """``ops_per_forward`` and the elementwise bytes' two terms of one row of ``model``'s
    denoiser (bf16), from forwards at two sizes of its default."""
    from calibration.diffusion_configs import diffusion_config
    from calibration.models.diffusion import DiffusionPipeline

    cfg = diffusion_config(model)
    pipe = DiffusionPipeline(cfg, dtype=torch.bfloat16, device="meta")
    m = cfg.vae_spatial_factor * cfg.patch_size
    points = []
    for scale in scales:
        w = max(m, int(cfg.default_width * scale) // m * m)
        h = max(m, int(cfg.default_height * scale) // m * m)
        cond = pipe.conditioning_for(pipe.encode_text(1), 1)
        latents = pipe.make_latents(1, w, h, cfg.default_frames)
        counter = _Counter()
        with torch.inference_mode(), counter:
            pipe.denoise(latents, cond, 500.0)
        points.append((pipe.latent_tokens(w, h, cfg.default_frames), counter.ops, counter.elementwise_bytes))
    (n1, ops1, b1), (n2, ops2, b2) = points
    if ops1 != ops2:
        raise ValueError(f"{model}: {ops1} ops at {n1} tokens but {ops2} at {n2}: the count depends on size")
    per_token = (b1 - b2) / (n1 - n2)
    return {
        "ops_per_forward": ops1,
        "elementwise_bytes_per_row": float(round(b1 - per_token * n1)),
        "elementwise_bytes_per_row_token": float(round(per_token)),
    }


def catalog_models() -> list[str]:
    """Catalog diffusion models with a calibration replica."""
    from calibration.diffusion_configs import diffusion_models

    return list(diffusion_models())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calibration.eager_counts", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="catalog diffusion models (default: all)")
    args = parser.parse_args(argv)
    for model in args.models or catalog_models():
        c = count(model)
        print(
            f"{model}:\n  eager: {{ops_per_forward: {c['ops_per_forward']}, elementwise_bytes_per_row: {c['elementwise_bytes_per_row']:.6g}, "
            f"elementwise_bytes_per_row_token: {c['elementwise_bytes_per_row_token']:.6g}}}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

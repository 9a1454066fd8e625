"""How the device kit's budget would be spent on a catalog GPU, before any GPU is lent.

    python -m calibration.device_estimate --gpu h100-sxm --budget-s 420

Each phase's work is predicted with servesim's roofline for that GPU (``sim.costs.roofline``,
``sim.diffusion.cost``, the catalog's fitted or assumed efficiencies) and set beside the time
the kit's budget gives the phase (``device.Budget``, phases in order, each ending when its
share is spent). For a grid op: every point's timed calls (warm-up, then ``reps`` or as many as
``min_total_s`` asks, up to ``max_reps``) and the one eager call that counts its FLOPs; the
share of the grid measured in the op's time is what the kit would measure (it stops an op at
its deadline). For a serving phase: the bursts simulated on the roofline, then the scored runs,
which take whatever is left by construction. Start-up costs that no roofline predicts are
stated as assumptions (``ASSUMED``).
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import pandas as pd

from calibration.device import (
    LOADS,
    PHASE_SHARES,
    RESERVE,
    TARGETS,
    Target,
    diffusion_kit_grid,
    llm_kit_grid,
    read_workload,
)

ASSUMED = {
    "startup_s": 20.0,
    "why_startup": "python and torch import, CUDA context, nvidia-smi, the matmul/copy peak measurement",
    "init_bytes_per_s": 200e9,
    "why_init": "random weights drawn on the GPU (default init, then normal_): about two passes over the weights",
    "per_point_host_s": 0.02,
    "why_per_point": "building a grid point's tensors and KV cache, freeing the last",
    "graph_capture_s_per_piece": 0.003,
    "why_graph": "capturing one piece of one bucket (CUDA graph capture is host-bound)",
}


def _calls(t_s: float, timing: dict) -> float:
    """Calls ``harness.time_fn`` makes of a point that takes ``t_s`` (warm-up, timed, FLOP count)."""
    reps = max(timing["reps"], min(timing["max_reps"], math.ceil(timing["min_total_s"] / max(t_s, 1e-9))))
    return timing["warmup"] + reps + 1


def _op_rows(op: str, times: list[float], timing: dict, weight: float) -> dict:
    per_point = [_calls(t, timing) * t + ASSUMED["per_point_host_s"] for t in times]
    return {"op": op, "points": len(times), "work_s": float(sum(per_point)), "weight": weight, "point_s": per_point}


def llm_grid_work(t: Target, gpu: str) -> list[dict]:
    from calibration.measure import OP_WEIGHTS
    from sim import catalog
    from sim.costs.base import StepShape
    from sim.costs.roofline import RooflineCostModel

    model = catalog.get_model(t.llm)
    cost = RooflineCostModel(model, catalog.get_gpu(gpu))
    grid = llm_kit_grid(t)
    L = model.num_layers
    stack = min(L, max(2, -(-160 * 2**20 // (model.params_per_layer * 2))))

    def shape(chunks) -> StepShape:
        s = StepShape()
        for p, k in chunks:
            s.num_seqs += 1
            s.num_tokens += p
            if p == 1 and k > 0:
                s.num_decode += 1
                s.decode_ctx_sum += k
            else:
                s.num_prefill_tokens += p
                s.prefill_ctx_sum += k
                s.prefill_attn_pairs += p * k + p * (p + 1) / 2
        return s

    def layers_s(chunks) -> float:  # per layer, without the head
        return (cost.step_s(shape(chunks)) - cost.step_s(shape([(1, 0)]))) / L + cost.step_s(shape([(1, 0)])) / L

    def attention_s(chunks) -> float:
        with_ctx = cost.step_s(shape(chunks))
        no_attn = cost.step_s(shape([(p, 0) for p, _ in chunks]))
        return max(with_ctx - no_attn, 0.0) / L + 5e-6

    w = OP_WEIGHTS["llm"]
    head_s = [
        2 * model.hidden_size * model.vocab_size * 2 / (catalog.get_gpu(gpu).hbm_tb_s * 1e12 * 0.9)
        + 2 * r * model.hidden_size * model.vocab_size / 600e12
        for r in grid.head_rows
    ]
    return [
        _op_rows("lin_layer", [stack * layers_s([(n, 0)]) for n in grid.lin_tokens], t.timing, w["lin_layer"]),
        _op_rows(
            "attn_decode",
            [stack * attention_s([(1, c) for c in ctxs]) for ctxs in grid.decode],
            t.timing,
            w["attn_decode"],
        ),
        _op_rows("attn_prefill", [stack * attention_s(list(ch)) for ch in grid.prefill], t.timing, w["attn_prefill"]),
        _op_rows("lm_head", head_s, t.timing, w["lm_head"]),
        _op_rows("step", [cost.step_s(shape(spec)) for spec in grid.steps], t.timing, w["step"]),
    ]


def diffusion_grid_work(t: Target, gpu: str) -> list[dict]:
    from calibration.measure import OP_WEIGHTS
    from sim import catalog
    from sim.diffusion.cost import DiffusionRooflineCost

    spec = catalog.get_diffusion_model(t.diffusion)
    cost = DiffusionRooflineCost(spec, catalog.get_gpu(gpu))
    grid = diffusion_kit_grid(t)
    w = OP_WEIGHTS["diffusion"]
    return [
        _op_rows("text_encode", [cost.text_encode_s(b) for b in grid.text_prompts], t.timing, w["text_encode"]),
        _op_rows(
            "denoise_step",
            [cost.denoise_step_s(r, spec.latent_tokens(wd, h, f)) for r, wd, h, f in grid.denoise],
            t.timing,
            w["denoise_step"],
        ),
        _op_rows("vae_decode", [cost.vae_decode_s(b, wd, h, f) for b, wd, h, f in grid.vae], t.timing, w["vae_decode"]),
    ]


def _burst_s(t: Target, gpu: str, part: str) -> float:
    """A burst's duration on the roofline (the simulator serving the part's requests at once)."""
    import tempfile
    from pathlib import Path

    from sim.config import parse_scenario
    from sim.run import run_scenario

    work = read_workload(t.workload("llm"))
    frame = work[work["part"] == part]
    with tempfile.TemporaryDirectory() as d:
        trace = Path(d) / "burst.csv"
        pd.DataFrame(
            {
                "arrived_at": np.arange(len(frame)) * 1e-6,
                "num_prefill_tokens": frame["prompt_tokens"],
                "num_decode_tokens": frame["output_tokens"],
            }
        ).to_csv(trace, index=False)
        scenario = {
            "name": "estimate", "seed": 0, "replications": 1, "warmup_s": 0,
            "pools": [{"name": "llm", "model": t.llm, "gpu": gpu, "engine": {
                "max_num_seqs": t.max_num_seqs, "max_num_batched_tokens": t.max_num_batched_tokens, "block_size": 16,
                "enable_chunked_prefill": True, "enable_prefix_caching": False, "num_gpu_blocks": t.num_kv_blocks}}],
            "classes": [{"name": "burst", "pool": "llm", "trace": {"path": str(trace), "format": "vidur"}}],
        }  # fmt: skip
        reqs = run_scenario(parse_scenario(scenario)).requests
    return float(reqs["finish_s"].max())


def _image_burst_s(t: Target, gpu: str) -> float:
    from sim import catalog
    from sim.diffusion.cost import DiffusionRooflineCost

    spec = catalog.get_diffusion_model(t.diffusion)
    cost = DiffusionRooflineCost(spec, catalog.get_gpu(gpu))
    w, h, steps = t.image
    n = int((read_workload(t.workload("diffusion"))["part"] == "capacity").sum())
    g = 2 if spec.cfg else 1
    total = 0.0
    for b in [t.max_batch_size] * (n // t.max_batch_size) + ([n % t.max_batch_size] if n % t.max_batch_size else []):
        total += (
            cost.text_encode_s(g * b)
            + steps * cost.denoise_step_s(g * b, spec.latent_tokens(w, h, 1))
            + cost.vae_decode_s(b, w, h, 1)
        )
    return total


def _weights_bytes(t: Target) -> tuple[float, float]:
    from sim import catalog

    llm = catalog.get_model(t.llm)
    dif = catalog.get_diffusion_model(t.diffusion)
    d_params = dif.denoiser_params + dif.vae.params + sum(e.params for e in dif.text_encoders)
    return 2.0 * llm.params_total, 2.0 * d_params


def estimate(gpu: str = "h100-sxm", budget_s: float = 420.0, target: str = "gpu") -> dict:
    """Phase by phase: the time the budget gives it, the work predicted, what is measured."""
    t = TARGETS[target]
    usable = budget_s * (1 - RESERVE) - ASSUMED["startup_s"]
    llm_bytes, dif_bytes = _weights_bytes(t)
    from sim import catalog

    L = catalog.get_model(t.llm).num_layers
    n_buckets = sum(
        1 for b in (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512) if b <= t.max_num_batched_tokens
    )
    grid_work = {"llm-grid": llm_grid_work(t, gpu), "diffusion-grid": diffusion_grid_work(t, gpu)}
    fixed = {
        "llm-grid": llm_bytes / ASSUMED["init_bytes_per_s"]
        + n_buckets * (L + 1) * ASSUMED["graph_capture_s_per_piece"],
        "llm-serve": llm_bytes / ASSUMED["init_bytes_per_s"]
        + n_buckets * (L + 1) * ASSUMED["graph_capture_s_per_piece"]
        + _burst_s(t, gpu, "capacity")
        + _burst_s(t, gpu, "staircase"),
        "diffusion-grid": dif_bytes / ASSUMED["init_bytes_per_s"],
        "diffusion-serve": dif_bytes / ASSUMED["init_bytes_per_s"] + _image_burst_s(t, gpu),
    }
    rows, left, spent = [], usable, set()
    for phase, share in PHASE_SHARES.items():
        rest = [p for p in PHASE_SHARES if p not in spent]
        allotted = left * share / sum(PHASE_SHARES[p] for p in rest)
        row = {"phase": phase, "allotted_s": allotted, "fixed_s": fixed[phase]}
        if phase in grid_work:
            ops = grid_work[phase]
            avail, wsum, measured, work = allotted - fixed[phase], sum(o["weight"] for o in ops), 0, 0.0
            for o in ops:
                t_op = max(0.0, avail) * o["weight"] / wsum
                cum = np.cumsum(o["point_s"])  # in spread order the prefix spans the grid; sizes vary little
                got = max(min(3, o["points"]), int((cum <= t_op).sum()))
                measured += got
                work += float(cum[got - 1]) if got else 0.0
                row[f"{o['op']}_points"] = f"{got}/{o['points']}"
                row[f"{o['op']}_all_s"] = round(o["work_s"], 1)
            row["used_s"] = fixed[phase] + work
        else:
            row["scored_runs_s_each"] = (allotted - fixed[phase]) / len(LOADS)
            row["used_s"] = allotted
        rows.append(row)
        left -= row["used_s"]
        spent.add(phase)
    total = ASSUMED["startup_s"] + sum(r["used_s"] for r in rows)
    return {"gpu": gpu, "budget_s": budget_s, "phases": rows, "total_s": total, "assumed": ASSUMED}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calibration.device_estimate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", default="h100-sxm")
    parser.add_argument("--budget-s", type=float, default=420.0)
    args = parser.parse_args(argv)
    est = estimate(args.gpu, args.budget_s)
    print(
        f"device kit on {est['gpu']}, budget {est['budget_s']:.0f} s (start-up {ASSUMED['startup_s']:.0f} s assumed):"
    )
    for r in est["phases"]:
        extra = ", ".join(f"{k.removesuffix('_points')} {v}" for k, v in r.items() if k.endswith("_points"))
        if "scored_runs_s_each" in r:
            extra = f"bursts and load {r['fixed_s']:.1f} s, then 3 scored runs of {r['scored_runs_s_each']:.0f} s"
        print(f"  {r['phase']:16s} allotted {r['allotted_s']:6.1f} s, used {r['used_s']:6.1f} s  ({extra})")
    print(f"  total {est['total_s']:.0f} s ({est['total_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

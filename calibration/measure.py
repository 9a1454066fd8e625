"""Measure a model's step kernels on a device and write the raw timings (no fitting here).

    python -m calibration.measure --model llama-3-8b --device cuda -o OUT_DIR [--quick]

Runs with torch, numpy, pandas and pyyaml alone, so it runs on a GPU machine that has nothing
else; the fits (scipy) run wherever ``servesim calibrate --from-raw OUT_DIR`` does. It writes
``raw.jsonl`` (one row per measured point: op, its features, median/p10/p90/min seconds, FLOPs
counted by torch's FlopCounterMode, bytes from the shapes) and ``meta.json`` (device, driver,
torch, dtype, grid, measured peaks). Rows are appended as each op's sweep finishes, and a re-run
into the same folder skips the ops already there, so a sweep cut off by a time limit resumes.

The LLM ops call the same functions a serving step calls (``LlamaLayer.pre_attention`` /
``post_attention``, ``attend``, ``LlamaModel.head``, ``LlamaModel.step``): per-layer ops are
timed over a stack of consecutive layers (a different stack each repeat, so weights are not
L2-resident on a GPU) and divided by its depth; whole steps run the full model and end with the
host copy of the sampled ids, as an engine's step does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from calibration.grids import DiffusionGrid, LLMGrid, diffusion_grid, llm_grid
from calibration.harness import Timing, configure_cpu, run_metadata, sync, time_fn, time_interleaved
from sim import journal

Progress = Callable[[str, int, int], None]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
RAW, META = "raw.jsonl", "meta.json"
OP_WEIGHTS = {
    "llm": {"lin_layer": 0.2, "attn_decode": 0.15, "attn_prefill": 0.15, "lm_head": 0.05, "step": 0.45},
    "diffusion": {"text_encode": 0.1, "denoise_step": 0.6, "vae_decode": 0.3},
}
"""How a measurement with a deadline shares its time among the ops, in the order they run."""


def _print_progress(label: str, done: int, total: int) -> None:
    if done == total or done % max(1, total // 5) == 0:
        print(f"  {label}: {done}/{total}", flush=True)


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs torch counts for one call (matmuls, convolutions, attention; 2 per MAC)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


class _Recorder:
    """Appends each op's rows to ``raw.jsonl`` (one JSON object per measured point; ops have
    different feature columns) as soon as its sweep finishes: a durable journal
    (``sim.journal``), so an interrupted calibration resumes with the ops it had finished."""

    def __init__(self, out: Path):
        self.path = out / RAW
        journal.cut_partial_line(self.path)
        self.done: set[str] = {r["op"] for r in journal.read_records(self.path, "op")}

    def record(self, op: str, rows: list[dict]) -> None:
        journal.append(self.path, *({"op": op, **row} for row in rows))
        self.done.add(op)


def _timing_kwargs(device: str, quick: bool) -> dict:
    if device.startswith("cuda"):
        return {"warmup": 3, "reps": 10, "min_total_s": 0.05, "max_reps": 100}
    return {"warmup": 2, "reps": 5 if quick else 7, "min_total_s": 0.15, "max_reps": 25}


def measure_peaks(device: str, dtype: torch.dtype) -> dict:
    """Achieved dense-matmul FLOP/s and copy bandwidth on this device: the roofline a profile's
    efficiencies are stated against when the device is not a catalog GPU."""
    cuda = device.startswith("cuda")
    n = 8192 if cuda else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    mm = time_fn(lambda i: torch.mm(a, b), device, warmup=2, reps=5)
    elems = (1 << 28) if cuda else (1 << 24)
    src = torch.empty(elems, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    cp = time_fn(lambda i: dst.copy_(src), device, warmup=2, reps=5)
    return {
        "matmul_flops_per_s": 2 * n**3 / mm.median_s,
        "copy_bytes_per_s": 2 * src.numel() * 4 / cp.median_s,
        "matmul_size": n,
    }


@dataclass
class Point:
    """One measured shape: the callable to time (given the repeat index) and what to record."""

    fn: Callable[[int], object]
    features: dict
    nbytes: float
    per: int = 1
    """The callable runs ``per`` copies of the op (a stack of layers); times are divided by it."""
    flops: float | None = None
    """FLOPs of one call where counting cannot see them (None: count with FlopCounterMode)."""


def spread_order(n: int) -> list[int]:
    """Indices 0..n-1 ordered so that every prefix spans the whole range: the ends first, then
    midpoints of the widest gaps. A sweep cut off by its deadline has then measured points across
    the grid rather than only its start."""
    if n <= 2:
        return list(range(n))
    order, seen = [0, n - 1], {0, n - 1}
    gaps = [(0, n - 1)]
    while gaps:
        nxt = []
        for lo, hi in gaps:
            if hi - lo < 2:
                continue
            mid = (lo + hi) // 2
            if mid not in seen:
                order.append(mid)
                seen.add(mid)
            nxt += [(lo, mid), (mid, hi)]
        gaps = nxt
    return order + [i for i in range(n) if i not in seen]


@dataclass
class Deadlines:
    """When each op's sweep must stop (``time.perf_counter`` seconds): a measurement given a
    budget splits what is left among the ops still to run, in proportion to ``weights``."""

    end: float
    weights: dict[str, float]
    min_points: int = 3
    """Points an op measures even past its deadline (a fit needs a few)."""
    cut: dict[str, list[int]] = field(default_factory=dict)
    """op -> [points measured, points in its grid], for the ops that stopped early."""

    def for_op(self, op: str) -> float:
        ops = list(self.weights)
        rest = ops[ops.index(op) :] if op in ops else [op]
        share = self.weights.get(op, 1.0) / sum(self.weights.get(o, 1.0) for o in rest)
        return time.perf_counter() + max(0.0, self.end - time.perf_counter()) * share


def _sweep(
    op: str,
    builders: list[Callable[[], Point]],
    device: str,
    quick: bool,
    rec: _Recorder,
    progress: Progress,
    deadlines: Deadlines | None = None,
    timing: dict | None = None,
) -> None:
    """Measure every point of one op and append its rows.

    On a GPU points are built and timed one at a time (a point's KV cache can be gigabytes); on
    a CPU they are built and timed in interleaved rounds (``time_interleaved``), a few at a time
    when there is a deadline. With ``deadlines`` the points go in ``spread_order`` and the sweep
    stops at the op's deadline once it has ``min_points``."""
    if op in rec.done:
        return
    tk = timing or _timing_kwargs(device, quick)
    stop = deadlines.for_op(op) if deadlines is not None else float("inf")
    order = spread_order(len(builders)) if deadlines is not None else list(range(len(builders)))
    least = deadlines.min_points if deadlines is not None else len(builders)
    rows = []
    if device.startswith("cuda"):
        for j in order:
            if len(rows) >= least and time.perf_counter() > stop:
                break
            point = builders[j]()
            flops = point.flops if point.flops is not None else count_flops(lambda p=point: p.fn(0))
            rows.append(_row(time_fn(point.fn, device, **tk), point, flops))
            del point  # free its tensors before the next point is built
            progress(op, len(rows), len(builders))
    else:
        chunk = len(order) if deadlines is None else max(1, least)
        for c in range(0, len(order), chunk):
            if rows and len(rows) >= least and time.perf_counter() > stop:
                break
            points = [builders[j]() for j in order[c : c + chunk]]
            flops = [p.flops if p.flops is not None else count_flops(lambda p=p: p.fn(0)) for p in points]
            done = len(rows)
            timings = time_interleaved(
                [p.fn for p in points], **tk, on_done=lambda k, done=done: progress(op, done + k, len(builders))
            )
            rows += [_row(t, p, f) for t, p, f in zip(timings, points, flops)]
            del points
    if len(rows) < len(builders) and deadlines is not None:
        deadlines.cut[op] = [len(rows), len(builders)]
    rec.record(op, rows)


def _row(t: Timing, point: Point, flops: float) -> dict:
    k = point.per
    return {
        **point.features,
        "median_s": t.median_s / k,
        "p10_s": t.p10_s / k,
        "p90_s": t.p90_s / k,
        "min_s": t.min_s / k,
        "reps": t.reps,
        "flops": flops / k,
        "bytes": point.nbytes,
    }


# --------------------------------------------------------------------------------------- LLM


def measure_llm(
    name: str,
    device: str,
    dtype: torch.dtype,
    quick: bool,
    rec: _Recorder,
    progress: Progress,
    grid: LLMGrid | None = None,
    deadlines: Deadlines | None = None,
    timing: dict | None = None,
) -> dict:
    from calibration.configs import llm_config
    from calibration.models.llama import KVCache, LlamaModel, SeqSlice, attend, attend_varlen, varlen_plan
    from calibration.models.runner import ModelRunner

    cfg = llm_config(name)
    model = LlamaModel(cfg, dtype=dtype, device=device).eval()
    grid = grid or llm_grid(device, quick, max_context=min(cfg.max_position_embeddings, 16384))
    elem = torch.finfo(dtype).bits // 8
    L, d, h, nq, nkv = cfg.num_layers, cfg.hidden_size, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
    layer_bytes = cfg.params_per_layer() * elem
    kv_layer_tok = 2 * nkv * h * elem
    # Per-layer ops run over a stack of consecutive layers whose weights outgrow the caches
    # (50 MB L2 on an H100; tens of MB of L3 on a server CPU), as in a real step, where each
    # layer's weights arrive cold; each repeat takes the next stack.
    stack = min(L, max(2, -(-160 * 2**20 // layer_bytes)))
    groups = max(1, L // stack)

    def layers_for(i: int):
        start = (i % groups) * stack
        return model.layers[start : start + stack]

    cuda = device.startswith("cuda")

    def fill(cache, chunks):
        """Random K/V for each (new, cached) sequence's cached part, with room for its new
        tokens; the step's SeqSlices."""
        seqs = []
        for sid, (p, k) in enumerate(chunks):
            cache.allocate(sid, k + p)
            if k:
                cache.fill_random(sid, k)
            seqs.append(SeqSlice(sid, p, k))
        return seqs

    def filled_cache(chunks, num_layers: int):
        cache = KVCache(
            cfg, dtype, device, num_layers=num_layers, num_slots=len(chunks), max_len=max(p + k for p, k in chunks)
        )
        return cache, fill(cache, chunks)

    # Whole steps run through the engine's own ModelRunner. On CUDA one runner (piecewise CUDA
    # graphs, varlen attention, checked against the reference first) over a cache sized for the
    # grid's largest step, points built one at a time; on a CPU each point has its own (its
    # points are built together and timed in turns).
    runner = None
    if cuda and grid.steps:
        step_cache = KVCache(
            cfg, dtype, device, num_slots=max(4, *(len(spec) for spec in grid.steps)),
            max_len=max(48, *(p + k for spec in grid.steps for p, k in spec)),
        )  # fmt: skip
        runner = ModelRunner(model, step_cache, max_tokens=max(sum(p for p, _ in spec) for spec in grid.steps))
        runner.capture()
        runner.check()

    def lin_point(n: int) -> Callable[[], Point]:
        def build() -> Point:
            xs = [torch.randn(n, d, device=device, dtype=dtype) for _ in range(2)]
            # positions wrap at the RoPE table size: the tokens of a long step need not be one sequence
            cos, sin = model.rope(torch.arange(n, device=device) % cfg.max_position_embeddings)

            def fn(i: int) -> None:
                x = xs[i % 2]
                with torch.inference_mode():
                    for layer in layers_for(i):
                        q, _, _ = layer.pre_attention(x, cos, sin)
                        layer.post_attention(x, q.reshape(n, -1))

            return Point(fn, {"tokens": n}, layer_bytes + 4 * n * d * elem, per=stack)

        return build

    def attention_point(chunks: list[tuple[int, int]]) -> Callable[[], Point]:
        """Attention of one layer over sequences of (new, cached) tokens, stacked like the layers."""

        def build() -> Point:
            cache, seqs = filled_cache(chunks, stack)
            n = sum(p for p, _ in chunks)
            q = torch.randn(n, nq, h, device=device, dtype=dtype)
            kk = torch.randn(n, nkv, h, device=device, dtype=dtype)
            vv = torch.randn(n, nkv, h, device=device, dtype=dtype)
            # the attention the engine runs: one varlen kernel on CUDA, per sequence elsewhere
            plan = varlen_plan(seqs, cache) if runner is not None and runner.attention == "varlen" else None

            def fn(i: int) -> None:
                with torch.inference_mode():
                    for layer in range(stack):
                        if plan is None:
                            attend(q, kk, vv, seqs, cache, layer)
                        else:
                            attend_varlen(q, kk, vv, plan, cache, layer)

            cached = sum(k for _, k in chunks)
            feats = {
                "num_seqs": len(chunks),
                "num_tokens": n,
                "ctx_sum": cached,
                "ctx_max": max(k for _, k in chunks),
                "attn_pairs": sum(p * k + p * (p + 1) / 2 for p, k in chunks),
            }
            # Counted by hand: on a CPU, FlopCounterMode does not see the SDPA kernels (4 FLOPs
            # per head dim per query-key pair: QK^T and PV), and a stack runs ``stack`` layers.
            flops = stack * 4 * nq * h * feats["attn_pairs"]
            return Point(fn, feats, kv_layer_tok * (cached + n), per=stack, flops=flops)

        return build

    def head_point(r: int) -> Callable[[], Point]:
        def build() -> Point:
            xs = [torch.randn(r, d, device=device, dtype=dtype) for _ in range(2)]

            def fn(i: int) -> None:
                with torch.inference_mode():
                    model.head(xs[i % 2])

            return Point(fn, {"num_seqs": r}, cfg.vocab_size * d * elem)

        return build

    def step_point(spec: tuple[tuple[int, int], ...]) -> Callable[[], Point]:
        def build() -> Point:
            n = sum(p for p, _ in spec)
            if runner is not None:
                point_runner = runner
                point_runner.cache.clear()  # the previous point's sequences
                seqs = fill(point_runner.cache, spec)
            else:
                cache, seqs = filled_cache(spec, L)
                point_runner = ModelRunner(model, cache, max_tokens=n)
            step_cache = point_runner.cache
            ids = torch.randint(0, cfg.vocab_size, (n,)).tolist()

            def fn(i: int) -> None:
                point_runner.step(ids, seqs)  # ends with the engine's per-step host sync

            decodes = [k for p, k in spec if p == 1 and k > 0]
            prefills = [(p, k) for p, k in spec if not (p == 1 and k > 0)]
            feats = {
                "num_seqs": len(spec),
                "num_tokens": n,
                "num_decode": len(decodes),
                "decode_ctx_sum": sum(decodes),
                "num_prefill_tokens": sum(p for p, _ in prefills),
                "prefill_ctx_sum": sum(k for _, k in prefills),
                "prefill_attn_pairs": sum(p * k + p * (p + 1) / 2 for p, k in prefills),
                "num_prefill_seqs": len(prefills),
            }
            nbytes = L * layer_bytes + cfg.vocab_size * d * elem + L * kv_layer_tok * (sum(k for _, k in spec) + n)
            # FLOPs of the same step through the model's plain forward (graph replays hide them)
            flops = count_flops(lambda: model.step(torch.tensor(ids, device=device), seqs, step_cache))
            return Point(fn, feats, nbytes, flops=flops)

        return build

    _sweep("lin_layer", [lin_point(n) for n in grid.lin_tokens], device, quick, rec, progress, deadlines, timing)
    _sweep(
        "attn_decode",
        [attention_point([(1, c) for c in ctxs]) for ctxs in grid.decode],
        device,
        quick,
        rec,
        progress,
        deadlines,
        timing,
    )
    _sweep(
        "attn_prefill",
        [attention_point(list(chunks)) for chunks in grid.prefill],
        device,
        quick,
        rec,
        progress,
        deadlines,
        timing,
    )
    _sweep("lm_head", [head_point(r) for r in grid.head_rows], device, quick, rec, progress, deadlines, timing)
    _sweep("step", [step_point(spec) for spec in grid.steps], device, quick, rec, progress, deadlines, timing)
    sync(device)
    if runner is not None:
        runner.cache.clear()
    return {
        "kind": "llm",
        "layers": L,
        "stack": stack,
        "params_per_layer": cfg.params_per_layer(),
        "kv_bytes_per_token": cfg.kv_bytes_per_token(elem),
        "step_path": None
        if runner is None
        else {"attention": runner.attention, "cuda_graphs": bool(runner._graphs), "notes": runner.notes},
    }


# --------------------------------------------------------------------------------- diffusion


def measure_diffusion(
    name: str,
    device: str,
    dtype: torch.dtype,
    quick: bool,
    rec: _Recorder,
    progress: Progress,
    grid: DiffusionGrid | None = None,
    deadlines: Deadlines | None = None,
    timing: dict | None = None,
) -> dict:
    from calibration.diffusion_configs import diffusion_config
    from calibration.models.diffusion import DiffusionPipeline

    cfg = diffusion_config(name)
    pipe = DiffusionPipeline(cfg, dtype=dtype, device=device)
    multiple = cfg.vae_spatial_factor * cfg.patch_size
    grid = grid or diffusion_grid(device, quick, (cfg.default_width, cfg.default_height, cfg.default_frames), multiple)
    elem = torch.finfo(dtype).bits // 8

    def weight_bytes(*modules) -> float:
        return float(sum(p.numel() for m in modules if m is not None for p in m.parameters()) * elem)

    def text_point(b: int) -> Callable[[], Point]:
        def build() -> Point:
            return Point(lambda i: pipe.encode_text(b), {"prompts": b}, weight_bytes(*pipe.text_encoders))

        return build

    def denoise_point(r: int, w: int, hgt: int, f: int) -> Callable[[], Point]:
        def build() -> Point:
            cond = pipe.conditioning_for(pipe.encode_text(1), r)
            lats = [pipe.make_latents(r, w, hgt, f) for _ in range(2)]
            feats = {"rows": r, "width": w, "height": hgt, "frames": f, "tokens": pipe.latent_tokens(w, hgt, f)}
            return Point(lambda i: pipe.denoise(lats[i % 2], cond, 500.0), feats, weight_bytes(pipe.denoiser))

        return build

    def vae_point(b: int, w: int, hgt: int, f: int) -> Callable[[], Point]:
        def build() -> Point:
            lats = [pipe.make_latents(b, w, hgt, f) for _ in range(2)]
            feats = {"images": b, "width": w, "height": hgt, "frames": f}
            return Point(lambda i: pipe.decode(lats[i % 2]), feats, weight_bytes(pipe.vae))

        return build

    _sweep("text_encode", [text_point(b) for b in grid.text_prompts], device, quick, rec, progress, deadlines, timing)
    _sweep(
        "denoise_step",
        [denoise_point(*shape) for shape in grid.denoise],
        device,
        quick,
        rec,
        progress,
        deadlines,
        timing,
    )
    _sweep("vae_decode", [vae_point(*shape) for shape in grid.vae], device, quick, rec, progress, deadlines, timing)
    sync(device)
    return {"kind": "diffusion", "text_tokens": cfg.text_tokens, "cfg": cfg.cfg}


# ------------------------------------------------------------------------------------- driver


def model_kind(name: str) -> str:
    """'llm' or 'diffusion' for a catalog model name (ValueError listing the allowed names)."""
    from calibration.configs import llm_models
    from calibration.diffusion_configs import diffusion_models

    if name in llm_models():
        return "llm"
    if name in diffusion_models():
        return "diffusion"
    from calibration.configs import llm_config

    llm_config(name)  # a mixture-of-experts entry says so
    raise ValueError(f"unknown model {name!r}; allowed: {', '.join([*llm_models(), *diffusion_models()])}")


def default_dtype(device: str) -> str:
    return "bfloat16" if device.startswith("cuda") else "float32"


def measure(
    model: str,
    device: str,
    out: Path,
    *,
    quick: bool = False,
    dtype: str | None = None,
    threads: int = 1,
    progress: Progress = _print_progress,
    grid: LLMGrid | DiffusionGrid | None = None,
    deadline: float | None = None,
    timing: dict | None = None,
) -> Path:
    """Measure ``model`` on ``device`` into ``out`` (raw.jsonl + meta.json); returns ``out``.

    ``grid`` replaces the default grid (tests and the device kit use their own). With a
    ``deadline`` (a ``time.perf_counter`` time) each op gets a share of what is left and stops
    there (``Deadlines``); meta.json says which ops stopped early. ``timing`` replaces the
    repeat counts (``time_fn``'s keywords)."""
    kind = model_kind(model)
    dtype = dtype or default_dtype(device)
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA device here")
    if not device.startswith("cuda"):
        configure_cpu(threads)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / META
    settings = {
        "model": model,
        "kind": kind,
        "target": device,
        "dtype": dtype,
        "quick": quick,
        "custom_grid": grid is not None,
    }
    if meta_path.exists():  # resume: the same measurement, or refuse
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in settings} != settings:
            raise ValueError(
                f"{out} holds a measurement of {meta.get('model')} ({meta.get('target')}, {meta.get('dtype')}, "
                f"quick={meta.get('quick')}); use another output folder"
            )
    else:
        torch.manual_seed(0)
        meta = {**settings, **run_metadata(device, DTYPES[dtype], quick)}
        meta["peaks"] = measure_peaks(device, DTYPES[dtype])
        meta_path.write_text(json.dumps(meta, indent=2))
    rec = _Recorder(out)
    fn = measure_llm if kind == "llm" else measure_diffusion
    deadlines = None
    if deadline is not None:
        weights = OP_WEIGHTS["llm" if kind == "llm" else "diffusion"]
        deadlines = Deadlines(deadline, weights)
    meta["model_facts"] = fn(model, device, DTYPES[dtype], quick, rec, progress, grid, deadlines, timing)
    if deadlines is not None:
        meta["cut_short"] = deadlines.cut
    meta["complete"] = True
    meta_path.write_text(json.dumps(meta, indent=2))
    return out


def load_raw(folder: Path) -> tuple[pd.DataFrame, dict]:
    """The raw timings and metadata a measurement left in ``folder``."""
    meta_path, raw_path = folder / META, folder / RAW
    if not meta_path.is_file() or not raw_path.is_file():
        raise FileNotFoundError(f"{folder}: no {META} and {RAW} here (run calibration.measure first)")
    meta = json.loads(meta_path.read_text())
    if not meta.get("complete"):
        raise ValueError(f"{folder}: the measurement did not finish; run it again into the same folder to resume")
    return pd.read_json(raw_path, lines=True), meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calibration.measure", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=sorted(DTYPES))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (CPU only)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    from calibration.telemetry import Telemetry

    try:
        # the device's clocks, power and temperature beside the timings (appended per run)
        with Telemetry(args.output / f"telemetry-{time.strftime('%Y%m%dT%H%M%S')}.csv", args.device):
            measure(args.model, args.device, args.output, quick=args.quick, dtype=args.dtype, threads=args.threads)
    except (ValueError, FileNotFoundError) as exc:
        print(f"calibration.measure: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output / RAW} and {args.output / META}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())

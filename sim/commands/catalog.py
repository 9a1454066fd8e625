"""``servesim catalog``: the LLMs, diffusion pipelines and GPUs servesim knows."""

from __future__ import annotations

import argparse
from typing import Any

from sim.console import stdout_console


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    cat = subparsers.add_parser("catalog", help="list the LLMs, diffusion pipelines and GPUs servesim knows")
    cat.add_argument(
        "what", nargs="?", choices=["models", "diffusion", "gpus"], default=None, help="one table (default: all three)"
    )
    cat.set_defaults(handler=run)
    return cat


def run(args) -> int:
    from rich.table import Table

    from sim import catalog

    console = stdout_console()
    if args.what in (None, "models"):
        t = Table(title="LLMs")
        for col in ("name", "params (B)", "layers", "hidden", "heads/kv", "KV KiB/token", "max len", "shapes from"):
            t.add_column(col)
        for m in catalog.models().values():
            t.add_row(
                m.name,
                f"{m.num_parameters / 1e9:.2f}",
                str(m.num_layers),
                str(m.hidden_size),
                f"{m.num_attention_heads}/{m.num_key_value_heads}",
                f"{m.kv_bytes_per_token(2) / 1024:g}",
                str(m.max_position_embeddings),
                m.hf_id or m.source,
            )
        console.print(t)
    if args.what in (None, "diffusion"):
        t = Table(title="Diffusion pipelines")
        for col in (
            "name",
            "kind",
            "denoiser",
            "params (B)",
            "default size",
            "steps",
            "CFG",
            "eager counts",
            "shapes from",
        ):
            t.add_column(col)
        for d in catalog.diffusion_models().values():
            size = f"{d.default_width}x{d.default_height}" + (f"x{d.default_frames}" if d.default_frames > 1 else "")
            t.add_row(
                d.name,
                d.kind,
                d.architecture,
                f"{d.params_total / 1e9:.2f}",
                size,
                str(d.default_steps),
                "yes" if d.cfg else "no",
                "yes" if d.eager else "-",
                d.hf_id,
            )
        console.print(t)
    if args.what in (None, "gpus"):
        t = Table(title="GPUs")
        for col in (
            "name", "BF16 TFLOP/s", "FP8", "memory GiB", "TB/s", "link GB/s", "TDP W", "$/GPU-h", "price date", "roofline",
        ):  # fmt: skip
            t.add_column(col)
        for g in catalog.gpus().values():
            t.add_row(
                g.name,
                f"{g.bf16_tflops:g}",
                f"{g.fp8_tflops:g}" if g.fp8_tflops else "-",
                f"{g.memory_gib:g}",
                f"{g.hbm_tb_s:g}",
                f"{g.interconnect_gb_s:g}",
                f"{g.tdp_w:g}",
                f"{g.price.usd_per_gpu_hour:.2f}",
                g.price.date,
                "fitted" if g.efficiency.fitted else "assumed",
            )
        console.print(t)
    return 0

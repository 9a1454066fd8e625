"""The catalog as tables: the LLMs, diffusion pipelines and GPUs with their key figures, as the
blocks ``servesim catalog`` prints and ``docs/reference/catalog.md`` shows (``sim.docgen.reference``).

Each table takes the entries it lists, so a caller chooses between this process's catalog (the
shipped one plus what scenarios added) and the shipped data alone (``catalog.shipped``).
"""

from __future__ import annotations

from collections.abc import Mapping

from sim.catalog import DiffusionModelSpec, GPUSpec, LinkSpec, ModelSpec, StorageSpec
from sim.console import Table

KINDS = ("models", "diffusion", "gpus", "links", "storage")
"""The tables, in the order ``servesim catalog`` prints them."""


def llm_table(models: Mapping[str, ModelSpec]) -> Table:
    """One row per LLM: size, shapes, KV bytes per token (bf16), context and where the shapes
    come from."""
    t = Table(title="LLMs")
    for col in ("name", "params (B)", "layers", "hidden", "heads/kv", "KV KiB/token", "max len", "shapes from"):
        t.add_column(col)
    for m in models.values():
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
    return t


def diffusion_table(pipelines: Mapping[str, DiffusionModelSpec]) -> Table:
    """One row per diffusion pipeline: its denoiser, size, default shape and steps, guidance."""
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
    for d in pipelines.values():
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
    return t


def gpu_table(gpus: Mapping[str, GPUSpec]) -> Table:
    """One row per GPU: peaks, memory, links, power, dated price and whether its roofline
    efficiencies were fitted or are assumed."""
    t = Table(title="GPUs")
    for col in (
        "name", "BF16 TFLOP/s", "FP8", "INT8 TOP/s", "memory GiB", "TB/s", "link GB/s", "host link", "TDP W", "$/GPU-h", "price date",
        "roofline",
    ):  # fmt: skip
        t.add_column(col)
    for g in gpus.values():
        t.add_row(
            g.name,
            f"{g.bf16_tflops:g}",
            f"{g.fp8_tflops:g}" if g.fp8_tflops else "-",
            f"{g.int8_tops:g}" if g.int8_tops else "-",
            f"{g.memory_gib:g}",
            f"{g.hbm_tb_s:g}",
            f"{g.interconnect_gb_s:g}",
            g.host_link,
            f"{g.tdp_w:g}",
            f"{g.price.usd_per_gpu_hour:.2f}",
            g.price.date,
            "fitted" if g.efficiency.fitted else "assumed",
        )
    return t


def link_table(links: Mapping[str, LinkSpec]) -> Table:
    """One row per link a KV cache may cross between a prefill and a decode replica."""
    t = Table(title="Links (prefill/decode KV transfer)")
    for col in ("name", "link", "scope", "line GB/s", "efficiency", "GB/s reached", "latency us"):
        t.add_column(col)
    for k in links.values():
        t.add_row(
            k.name,
            k.display_name,
            k.scope,
            f"{k.gb_s:g}",
            f"{k.efficiency:g}",
            f"{k.effective_gb_s:.4g}",
            f"{k.latency_s * 1e6:g}",
        )
    return t


def storage_table(stores: Mapping[str, StorageSpec]) -> Table:
    """One row per weight store a cold-starting replica may read from."""
    t = Table(title="Storage (autoscaling cold starts)")
    for col in ("name", "storage", "GB/s", "source"):
        t.add_column(col)
    for k in stores.values():
        t.add_row(k.name, k.display_name, f"{k.gb_s:g}", k.source)
    return t


def catalog_tables(
    what: str | None,
    models: Mapping[str, ModelSpec],
    pipelines: Mapping[str, DiffusionModelSpec],
    gpus: Mapping[str, GPUSpec],
    links: Mapping[str, LinkSpec] | None = None,
    stores: Mapping[str, StorageSpec] | None = None,
) -> list[Table]:
    """The tables ``what`` names (``models``, ``diffusion``, ``gpus``, ``links`` or ``storage``;
    None: all)."""
    if what is not None and what not in KINDS:
        raise ValueError(f"unknown catalog table {what!r}; allowed: {', '.join(KINDS)}")
    out = []
    if what in (None, "models"):
        out.append(llm_table(models))
    if what in (None, "diffusion"):
        out.append(diffusion_table(pipelines))
    if what in (None, "gpus"):
        out.append(gpu_table(gpus))
    if what in (None, "links") and links is not None:
        out.append(link_table(links))
    if what in (None, "storage") and stores is not None:
        out.append(storage_table(stores))
    return out

"""The "generative shapes" page: every request kind servesim models, on the seed article's table.

``python -m sim.docgen.generative_shapes [--out docs/explanation] [--quick]`` runs, on one H100
SXM each: a request of every kind alone on its replica (text, image, diffusion LM, AR image, AR
audio, hybrid), the same request made bigger along the axis that drives its cost, and the
shipped scenario ``scenarios/generative_shapes.yaml`` under load. It writes
``<out>/generative-shapes.md``; every number on the page is read from these runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sim import catalog
from sim.config import load_scenario, parse_scenario
from sim.docgen.two_shapes import fmt
from sim.run import RunResult, run_scenario

COMMAND = "python -m sim.docgen.generative_shapes"
GPU = "h100-sxm"
SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "generative_shapes.yaml"


@dataclass(frozen=True)
class Kind:
    kind: str
    title: str
    model: str
    cls: dict
    bigger: dict
    """The class changed along the axis that drives its cost."""
    bigger_text: str


KINDS = (
    Kind(
        "text",
        "text (AR LLM)",
        "llama-3-8b",
        {"prompt_tokens": {"dist": "fixed", "value": 600}, "output_tokens": {"dist": "fixed", "value": 256}},
        {"output_tokens": {"dist": "fixed", "value": 512}},
        "256 -> 512 output tokens",
    ),
    Kind(
        "image",
        "image (diffusion)",
        "sdxl",
        {"image": {"width": 1024, "height": 1024, "steps": 30}},
        {"image": {"width": 1024, "height": 1024, "steps": 60}},
        "30 -> 60 steps",
    ),
    Kind(
        "dllm",
        "diffusion LM",
        "llada-8b",
        {
            "prompt_tokens": {"dist": "fixed", "value": 600},
            "output_tokens": {"dist": "fixed", "value": 256},
            "diffusion_lm": {"block_tokens": 32, "steps_per_block": 8},
        },
        {"diffusion_lm": {"block_tokens": 32, "steps_per_block": 16}},
        "8 -> 16 steps per block",
    ),
    Kind(
        "ar_image",
        "AR image",
        "janus-pro-7b",
        {"prompt_tokens": {"dist": "fixed", "value": 60}, "ar_image": {"width": 384, "height": 384}},
        {"ar_image": {"width": 512, "height": 512}},
        "384² -> 512² (576 -> 1,024 tokens)",
    ),
    Kind(
        "audio",
        "AR audio",
        "musicgen-medium",
        {
            "prompt_tokens": {"dist": "fixed", "value": 30},
            "audio": {"seconds": {"dist": "fixed", "value": 10}, "cfg": True},
        },
        {"audio": {"seconds": {"dist": "fixed", "value": 20}, "cfg": True}},
        "10 -> 20 s of audio",
    ),
    Kind(
        "hybrid",
        "hybrid AR + diffusion",
        "hart-0.7b",
        {"prompt_tokens": {"dist": "fixed", "value": 80}, "hybrid": {}},
        {"hybrid": {"refine_steps": 16}},
        "8 -> 16 refiner steps",
    ),
)


def solo(k: Kind, cls: dict) -> RunResult:
    """One request alone on its replica."""
    sc = parse_scenario(
        {
            "name": f"solo-{k.kind}",
            "seed": 1,
            "num_requests": 1,
            "pools": [{"name": "p", "model": k.model, "gpu": GPU}],
            "classes": [{"name": "c", "pool": "p", "arrival": {"process": "constant", "rate": 1}, **cls}],
        },
        source=k.kind,
    )
    return run_scenario(sc)


def top(result: RunResult) -> pd.Series:
    df = result.requests
    return df[df["parent_id"] < 0].iloc[0]


@dataclass
class Solo:
    kind: Kind
    row: pd.Series
    bigger: pd.Series
    peak_gib: float
    cost_usd: float
    bigger_cost_usd: float


def measure_solo(k: Kind) -> Solo:
    base = solo(k, k.cls)
    big = solo(k, {**k.cls, **k.bigger})
    price = base.summary["pools"]["p"]["price_per_gpu_hour"]
    row, brow = top(base), top(big)
    return Solo(
        k,
        row,
        brow,
        float(base.timeseries["state_gib"].max()),
        float(row["gpu_s"]) * price / 3600,
        float(brow["gpu_s"]) * price / 3600,
    )


def first_output(s: Solo) -> str:
    r = s.row
    k = s.kind.kind
    if k == "text":
        return f"first token {fmt(r['ttft_s'] * 1e3)} ms, then one token every {fmt(r['tpot_s'] * 1e3)} ms"
    if k == "image":
        return "nothing until the image (previews must be added: a VAE decode each)"
    if k == "dllm":
        return f"first block of 32 tokens at {fmt(r['ttft_s'] * 1e3)} ms, then a block at a time"
    if k == "ar_image":
        return f"first row of the image at {fmt(r['first_chunk_s'])} s, then row by row"
    if k == "audio":
        return f"first audio at {fmt(r['ttft_s'] * 1e3)} ms, then {fmt(1 / r['rtf'])} s of audio per second"
    return "nothing until the image"


def state(s: Solo) -> str:
    m = catalog.get_model(s.kind.model) if s.kind.kind != "image" else None
    kib = m.kv_bytes_per_token(2, 1) / 1024 if m else 0.0
    k = s.kind.kind
    if m is not None and k != "hybrid":
        # at its last token: every sequence's prompt and output (spans sample only at their start)
        tokens = (s.row["prompt_tokens"] + s.row["output_tokens"]) * s.row.get("sequences", 1)
        peak = f"{fmt(tokens * kib / 2**20)} GiB at its last token"
    else:
        peak = f"{fmt(s.peak_gib)} GiB at its peak"
    if k == "text":
        return f"KV cache, {fmt(kib)} KiB per token, grows by the token; {peak}"
    if k == "image":
        return f"a fixed latent and activations from first step to last; {peak}"
    if k == "dllm":
        return f"KV cache of the prompt and finished blocks, grows 32 tokens at a time ({fmt(32 * kib / 1024)} MiB); {peak}"
    if k == "ar_image":
        return f"KV cache of two sequences (CFG), grows by the token to {fmt(s.row['output_tokens'], 3)} each; {peak}"
    if k == "audio":
        return f"KV cache of two sequences (CFG), {fmt(50 * kib / 1024)} MiB per second of audio each; {peak}"
    return f"KV cache of 14 scales (9,451 tokens, two CFG rows), then the refiner's rows; {peak}"


def latency(s: Solo) -> str:
    r = s.row
    k = s.kind.kind
    e2e = f"{fmt(r['e2e_s'])} s alone"
    if k == "text":
        return f"output length x per-token step: {e2e}"
    if k == "image":
        return f"steps x per-step cost: {e2e}"
    if k == "dllm":
        return f"blocks x steps per block x a block step (flat in the block's length): {e2e}"
    if k == "ar_image":
        return f"image tokens x per-token step, then the decoder ({fmt(r['decode_s'] * 1e3)} ms): {e2e}"
    if k == "audio":
        return f"codec frames x per-step cost (real-time factor {fmt(r['rtf'])}), then the codec: {e2e}"
    return f"AR scales (one step each) + refiner steps + the decoder ({fmt(r['decode_s'] * 1e3)} ms): {e2e}"


def cost(s: Solo) -> str:
    ratio = s.bigger_cost_usd / s.cost_usd
    return f"${fmt(s.cost_usd * 1e3)} per 1,000 alone; {s.kind.bigger_text}: x{fmt(ratio)}"


BATCHING = {
    "text": "continuous: requests join and leave every step",
    "image": "static batches (or step-level)",
    "dllm": "step-level: requests at different blocks and steps share every forward",
    "ar_image": "continuous, both CFG sequences in the same steps",
    "audio": "continuous, both CFG sequences in the same steps",
    "hybrid": "step-level: scales of different requests share a forward",
}
RETRY = {
    "text": "start again (the KV cache is lost)",
    "image": "resume from a checkpoint (deterministic sampler)",
    "dllm": "start again (the finished blocks' KV cache is lost)",
    "ar_image": "start again, both CFG sequences together",
    "audio": "start again, both CFG sequences together",
    "hybrid": "start again (the scales' KV cache is lost)",
}
UNIT = {
    "text": "per 1M input and output tokens",
    "image": "per image (or video second)",
    "dllm": "per 1M input and output tokens",
    "ar_image": "per image",
    "audio": "per audio minute",
    "hybrid": "per image",
}


def load_table(quick: bool) -> tuple[str, RunResult]:
    sc, base_dir = load_scenario(SCENARIO, ["duration_s=60", "replications=1"] if quick else [])
    result = run_scenario(sc, base_dir)
    s = result.summary
    lines = [
        "| class | kind | arrivals/s | first output p95 | E2E p95 | output per second | $ per unit |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in sc.classes:
        st = s["classes"][c.name]

        def v(key: str, scale: float = 1.0, st: dict = st) -> str:
            return fmt(st[key]["mean"] * scale) if key in st else "-"

        first = {"dllm": "ttft_s", "audio": "ttft_s", "ar_image": "first_chunk_s"}.get(c.kind)
        first_text = f"{v(f'{first}_p95')} s" if first else "-"
        rate, unit = {
            "dllm": (f"{v('output_tokens_per_s')} tokens", f"${v('cost_per_1m_output_tokens_usd')} per 1M tokens"),
            "ar_image": (f"{v('images_per_s')} images", f"${v('cost_per_image_usd', 1e3)} per 1,000 images"),
            "hybrid": (f"{v('images_per_s')} images", f"${v('cost_per_image_usd', 1e3)} per 1,000 images"),
            "audio": (f"{v('audio_seconds_per_s')} audio-s", f"${v('cost_per_audio_minute_usd', 60)} per audio hour"),
        }[c.kind]
        lines.append(
            f"| {c.name} | {c.kind} | {v('arrival_rate')} | {first_text} | {v('e2e_s_p95')} s | {rate} | {unit} |"
        )
    return "\n".join(lines), result


# LlamaGen's serving README (autoregressive/serve/README.md, "Comparison (A100)"): vLLM 0.4.1,
# class-conditional GPT-XL at 384 x 384, a batch of 8 class labels with CFG scale 4 (16
# sequences of 576 tokens), bf16: 4.84 s of GPT sampling for the batch.
LLAMAGEN = {"model": "llamagen-gpt-xl", "gpu": "a100-80gb", "images": 8, "measured_s": 4.84}


def llamagen_check() -> tuple[float, float]:
    """servesim's sampling time for LlamaGen's published vLLM batch, and its signed error. The
    batch arrives at once; sampling ends with the last sequence's last token (the published time
    leaves out the VQ decoder)."""
    sc = parse_scenario(
        {
            "name": "llamagen-check",
            "seed": 1,
            "num_requests": LLAMAGEN["images"],
            "pools": [{"name": "p", "model": LLAMAGEN["model"], "gpu": LLAMAGEN["gpu"]}],
            "classes": [
                {
                    "name": "c",
                    "pool": "p",
                    "arrival": {"process": "constant", "rate": 1e6},
                    "prompt_tokens": {"dist": "fixed", "value": 1},
                    "ar_image": {"width": 384, "height": 384, "cfg": True},
                }
            ],
        },
        source="llamagen",
    )
    df = run_scenario(sc).requests
    seqs = df[df["kind"] == "text"]
    predicted = float(seqs["finish_s"].max() - seqs["arrival_s"].min())
    return predicted, predicted / LLAMAGEN["measured_s"] - 1


def weights_floor_ms() -> float:
    """Milliseconds to read LlamaGen GPT-XL's bf16 weights once at the A100's HBM bandwidth."""
    model, gpu = catalog.get_model(LLAMAGEN["model"]), catalog.get_gpu(LLAMAGEN["gpu"])
    return model.params_total * 2 / (gpu.hbm_tb_s * 1e12) * 1e3


def display_name(k: Kind) -> str:
    if k.kind == "image":
        return catalog.get_diffusion_model(k.model).display_name
    return catalog.get_model(k.model).display_name


def render(solos: list[Solo], table: str, result: RunResult, quick: bool, check: tuple[float, float]) -> str:
    head = "| Property | " + " | ".join(s.kind.title for s in solos) + " |"
    rule = "|---" * (len(solos) + 1) + "|"
    rows = [
        ("Model (catalog name)", [f"{display_name(s.kind)} (`{s.kind.model}`)" for s in solos]),
        ("State during generation", [state(s) for s in solos]),
        ("Cost per request", [cost(s) for s in solos]),
        ("Streaming", [first_output(s) for s in solos]),
        ("Mid-failure retry", [RETRY[s.kind.kind] for s in solos]),
        ("Batching", [BATCHING[s.kind.kind] for s in solos]),
        ("What dominates latency", [latency(s) for s in solos]),
        ("Billing unit", [UNIT[s.kind.kind] for s in solos]),
    ]
    body = "\n".join(f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows)
    reps = result.scenario.replications
    dur = result.scenario.duration_s
    return f"""<!-- Generated by `{COMMAND}`: do not edit by hand, run it again. -->
# Generative shapes beyond two

The seed article's table contrasts two shapes: autoregressive generation (a KV cache that grows
with every token) and iterative refinement (a fixed latent refined over a fixed number of steps).
Four kinds blur them, and servesim runs each as a request kind of its own, with its own metrics
and billing unit:

- **diffusion LM** (`diffusion_lm`: LLaDA, Dream, Mercury): the answer is denoised a block of
  tokens at a time in a few parallel steps, each block then committed to the KV cache that later
  blocks read. Runs on servesim's block-step engine.
- **AR image** (`ar_image`: Janus-Pro, LlamaGen, Emu3): an LLM-style decoder writes the image's
  VQ tokens row by row, then a convolutional decoder makes pixels. Runs on vLLM's scheduler.
- **AR audio** (`audio`: MusicGen, Orpheus): codec tokens at the codec's frame rate, decoded to
  a waveform as they stream. Runs on vLLM's scheduler.
- **hybrid** (`hybrid`: HART): coarse tokens scale by scale, each scale one AR step, then a
  small diffusion refiner over the last scale's tokens and a decoder. Runs on the block-step
  engine.

How each is costed, and what is assumed, is in
[how the model works](how-the-model-works.md#generative-shapes-beyond-two). The page is generated:
`{COMMAND}` runs every number below on one H100 SXM per replica.

## The table

Each column is one request alone on its replica, and the same request made bigger along the axis
that drives its cost; costs are the request's GPU time at the GPU's price.

{head}
{rule}
{body}

## Under load

`scenarios/generative_shapes.yaml`, each kind on its own H100 ({fmt(dur, 3)} s of arrivals,
{reps} replication(s){", shortened for a quick check" if quick else ""}); first output is the first
block, the first row or the first audio; $ per unit is the pool's GPU-hours at its price over
what it delivered.

{table}

## One published check

LlamaGen's serving notes give one measurement of an AR image model served by vLLM (0.4.1) with
its conditions: class-conditional GPT-XL (775 M, `llamagen-gpt-xl`) at 384 x 384, a batch of 8
class labels with CFG (16 sequences of 576 tokens), bf16 on an A100, **{fmt(LLAMAGEN["measured_s"])} s** of
sampling for the batch. servesim, with nothing fitted to it (the A100's memory is not stated;
80 GB assumed), predicts **{fmt(check[0])} s ({check[1]:+.0%})**: {fmt(check[0] / 576 * 1e3)} ms per decode
step against {fmt(LLAMAGEN["measured_s"] / 576 * 1e3)} ms measured, where streaming the weights once
takes {fmt(weights_floor_ms())} ms. The rest of a step is mostly per-step overhead (launches, scheduling,
sampling), and this engine's (an old release, with a per-step CFG logits processor) is not among
the points servesim's host terms were fitted on ([validation](validation.md)): read AR-image
latencies as optimistic where an engine's per-step overhead is high.

## What these numbers rest on

- The transformers' shapes come from the published configurations (the catalog's `source`
  fields); HART's depth and width are assumed from its parameter count.
- The pixel decoders (`llamagen-vq16`, `hart-vq16`) and the EnCodec decoder are counted from
  their code, at the image VAEs' assumed convolution efficiency; a decoder's time is added to
  its request's latency and GPU time but does not hold the replica's next step.
- Beyond the check above, no engine-grade serving measurement of these kinds with its conditions
  was found: Fast-dLLM's LLaDA figures (54 tokens/s at batch 1 on an A100) come from an eager
  Hugging Face loop, Mercury's (1,109 tokens/s on an H100) name no model size or batch.
"""


def main(out: Path, quick: bool = False) -> Path:
    solos = [measure_solo(k) for k in KINDS]
    table, result = load_table(quick)
    out.mkdir(parents=True, exist_ok=True)
    page = out / "generative-shapes.md"
    page.write_text(render(solos, table, result, quick, llamagen_check()), encoding="utf-8")
    return page


def cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/explanation"), help="directory for the page")
    ap.add_argument("--quick", action="store_true", help="a shorter load run (for tests)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    page = main(args.out, args.quick)
    print(f"wrote {page} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli())

"""Request kinds beyond text, image and pipeline: the generative shapes the two families blur
into (docs/explanation/generative-shapes.md).

* ``dllm``: a diffusion language model; blocks of tokens denoised in parallel steps
  (``sim.kinds.blocks``).
* ``ar_image``: image tokens written autoregressively, then decoded to pixels
  (``sim.kinds.media``).
* ``audio``: neural-codec tokens written autoregressively at the codec's frame rate, decoded to
  a waveform as they stream (``sim.kinds.media``).
* ``hybrid``: HART; coarse tokens scale by scale, then a few diffusion steps of a small refiner
  (``sim.kinds.blocks``).

This module draws each class's arrivals and sizes, times the decoders, and builds the block-step
pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim import catalog
from sim.config import BLOCK_KINDS, ARAudio, ARImage, HybridImage, PoolConfig, RequestClass, Scenario, TextDiffusion
from sim.costs.factory import build_cost_model
from sim.diffusion.cost import WEIGHT_BYTES, ComponentTime
from sim.errors import ConfigError
from sim.fleet.pools import Pool, pool_kv_budget, scheduler_config
from sim.kinds.blocks import BlockReplica, BlockRequest
from sim.kinds.media import MediaRequest
from sim.workload.lengths import sample_lengths


@dataclass(frozen=True)
class KindStream:
    """Per-arrival draws of a class of a new kind: its prompt lengths, and its output tokens
    (``dllm``) or audio seconds (``audio``); zeros where the kind fixes them."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    amount: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival_s)


def build_kind_stream(scenario: Scenario, cls: RequestClass, rng: np.random.Generator) -> KindStream:
    from sim.workload.stream import class_arrivals

    times = class_arrivals(cls, rng, scenario.duration_s, scenario.num_requests)
    n = len(times)
    if n == 0:
        raise ConfigError(f"classes.{cls.name}: the arrival process produced no requests in the run's duration")
    prompt = sample_lengths(cls.prompt_tokens, rng, n)
    if cls.diffusion_lm is not None:
        amount = sample_lengths(cls.output_tokens, rng, n)
    elif cls.audio is not None:
        amount = sample_lengths(cls.audio.seconds, rng, n)
    else:
        amount = np.zeros(n, np.int64)
    return KindStream(times, prompt, amount)


# --------------------------------------------------------------------------- decoders


def pixel_decode_s(decoder: str, gpu: catalog.GPUSpec, width: int, height: int, grid: int) -> float:
    """Decoding one ``width`` x ``height`` image from a token grid of ``grid`` tokens with a
    ``vaes`` entry of the diffusion catalog: its convolutions per output pixel, its mid-block
    attention over the grid, against its efficiency on ``gpu`` (max of compute and weight
    streaming, plus its fixed cost)."""
    vae = catalog.get_vae(decoder)
    flops = width * height * vae.flops_per_pixel + 4 * vae.mid_attention_channels * grid * grid
    return ComponentTime(vae.efficiency, gpu).time_s(flops, WEIGHT_BYTES * vae.params)


def codec_decode_s(audio: ARAudio, gpu: catalog.GPUSpec, seconds: float) -> float:
    """The codec decoder's time for ``seconds`` of audio, at the image VAE's assumed efficiency
    for convolutional decoders (``sd-vae`` in the diffusion catalog)."""
    # compute-bound: tens of MB of weights against tens of GFLOP per second of audio
    return ComponentTime(catalog.get_vae("sd-vae").efficiency, gpu).time_s(audio.codec_gflops_per_s * 1e9 * seconds, 0)


def refiner_s_per_token(hybrid: HybridImage, gpu: catalog.GPUSpec, tp: int) -> float:
    """HART's residual refiner per token per step: 2 FLOPs per parameter at the GPU's GEMM
    efficiency (its weights, a few tens of MB, stay in cache across a step's tokens), split over
    the replica's GPUs."""
    return 2 * hybrid.refiner_params / (gpu.bf16_tflops * 1e12 * gpu.efficiency.compute) / tp


# --------------------------------------------------------------------------- requests


class Maker:
    """Makes the requests of one class of a new kind on its pool."""

    def __init__(self, cls: RequestClass, pool: PoolConfig, class_id: int):
        self.cls = cls
        self.cls_id = class_id
        self.kind = cls.kind
        gpu = catalog.get_gpu(pool.gpu)
        self.gpu = gpu
        shape = cls.shape
        if isinstance(shape, ARImage):
            grid = shape.rows * (shape.width // shape.downsample)
            self.decode_s = pixel_decode_s(shape.decoder, gpu, shape.width, shape.height, grid)
            # the first row of tokens decodes to a strip ``downsample`` pixels high
            self.first_decode_s = pixel_decode_s(
                shape.decoder, gpu, shape.width, shape.downsample, shape.width // shape.downsample
            )
        elif isinstance(shape, HybridImage):
            grid = shape.blocks[-1]
            self.decode_s = pixel_decode_s(shape.decoder, gpu, shape.width, shape.height, grid)
            self.refine_s = refiner_s_per_token(shape, gpu, pool.tensor_parallel_size)

    def make(self, request_id: int, t: float, prompt: int, amount: int):
        shape = self.cls.shape
        if isinstance(shape, TextDiffusion):
            L = shape.block_tokens
            blocks = (L,) * (amount // L) + ((amount % L,) if amount % L else ())
            return BlockRequest(
                request_id,
                self.cls_id,
                t,
                "dllm",
                prompt,
                blocks,
                (shape.steps_per_block,) * len(blocks),
                suffix=shape.cache == "prefix",
            )
        if isinstance(shape, HybridImage):
            b = tuple(shape.blocks)
            return BlockRequest(
                request_id,
                self.cls_id,
                t,
                "hybrid",
                prompt,
                b,
                (1,) * len(b),
                refine_steps=shape.refine_steps,
                refine_tokens=b[-1] if shape.refine_steps else 0,
                decode_s=self.decode_s,
                sequences=2 if shape.cfg else 1,
                refine_s_per_token=self.refine_s,
            )
        if isinstance(shape, ARImage):
            return MediaRequest(
                request_id,
                self.cls_id,
                t,
                "ar_image",
                prompt,
                shape.image_tokens,
                2 if shape.cfg else 1,
                self.decode_s,
                first_chunk_tokens=shape.tokens_per_row,
                first_chunk_decode_s=self.first_decode_s,
            )
        audio: ARAudio = shape
        seconds = float(amount)
        first = min(audio.first_chunk_s, seconds)
        chunk = math.ceil(first * audio.steps_per_audio_s) + (audio.codebooks - 1 if audio.parallel_codebooks else 0)
        return MediaRequest(
            request_id,
            self.cls_id,
            t,
            "audio",
            prompt,
            audio.steps(seconds),
            2 if audio.cfg else 1,
            codec_decode_s(audio, self.gpu, seconds),
            first_chunk_tokens=chunk,
            first_chunk_decode_s=codec_decode_s(audio, self.gpu, first),
            audio_s=seconds,
            # the codec decodes chunk by chunk as the tokens stream: after the last token only
            # the last chunk is left to decode
            tail_s=codec_decode_s(audio, self.gpu, first),
        )


def kind_arrivals(env, stream: KindStream, class_id: int, cls: RequestClass, pool, ids, rec, on_arrival, timeout_s):
    """``arrive(i, t)`` for a class of a new kind on ``pool``."""
    maker = Maker(cls, pool.cfg, class_id)
    prompts = stream.prompt_tokens.tolist()
    amounts = stream.amount.tolist()
    block = cls.kind in BLOCK_KINDS

    def arrive(i: int, t: float) -> None:
        req = maker.make(next(ids), t, prompts[i], amounts[i])
        if block:
            rec.block_arrival(req)
            pool.route(req)
            if timeout_s is not None:
                env.timeout(timeout_s).callbacks.append(lambda _e: pool.timeout(req, timeout_s))
        else:
            rec.media_arrival(req)
            req.start(env, pool, ids, rec, timeout_s)
        if on_arrival is not None:
            on_arrival()

    return arrive


# --------------------------------------------------------------------------- the block pool


class BlockPool(Pool):
    """An LLM pool whose classes are diffusion LMs or hybrids: block-step replicas."""

    def __init__(self, env, cfg: PoolConfig, recorder, retry, base_dir: Path | None):
        super().__init__(env, cfg, recorder, retry)
        self.budget = pool_kv_budget(cfg)
        cost = build_cost_model(cfg, base_dir)
        sched = scheduler_config(cfg)
        model = catalog.get_model(cfg.model)
        tp = cfg.tensor_parallel_size
        block_gib = model.kv_bytes_per_token(cfg.engine.kv_bytes_per_elem, tp) * cfg.engine.block_size / 2**30
        for _ in range(cfg.replicas_built):
            index = recorder.add_replica(cfg.name, self.budget.num_gpu_blocks, tp, block_gib)
            self._adopt(
                BlockReplica(
                    env,
                    index,
                    cost,
                    recorder,
                    tp,
                    self.budget.num_gpu_blocks,
                    cfg.engine.block_size,
                    sched.max_num_seqs,
                    sched.max_num_batched_tokens,
                    sched.max_model_len,
                )
            )

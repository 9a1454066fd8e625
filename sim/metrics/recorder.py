"""The recorder: observes engine events and turns them into tables at the end of a run.

It never steers the simulation. Per-request facts live on the request objects the engine
stamps (arrival, first schedule, first token, finish, preemptions, GPU-seconds); the recorder
keeps a reference to each and builds one row per request in ``requests_frame()``: text, image
and pipeline requests in one table with a ``kind`` column (a pipeline's stages are rows of
their own, pointing at it through ``parent_id``). Per-replica state over time (batch size,
waiting queue, memory held: KV blocks for an LLM, latents and activations for diffusion) is
sampled at every step, decode span or batch into compact arrays.
"""

from __future__ import annotations

import struct
from operator import attrgetter

import numpy as np
import pandas as pd

from sim.config import PARENT_KINDS
from sim.llm.request import Request
from sim.metrics.itl import ITLHistogram

# Request status -> the word in the tables: a request is finished, rejected (with a reason,
# on arrival), failed (retries spent or timed out, with a reason), or still in flight.
_STATUS = {0: "waiting", 1: "running", 2: "waiting", 3: "finished", 4: "rejected", 5: "failed"}
_STATUS_WORDS = np.array([_STATUS[i] for i in range(len(_STATUS))], dtype=object)

# A time-series sample as ``busy()`` stores it: packed (36 bytes), native byte order. ``steps``
# (engine steps the sample covers) feeds the step count and is not a time-series column.
_SAMPLE = np.dtype(
    [
        ("t_s", "=f8"),
        ("replica", "=i4"),
        ("running", "=i4"),
        ("waiting", "=i4"),
        ("kv_blocks_used", "=i4"),
        ("duration_s", "=f8"),
        ("steps", "=i4"),
    ]
)
_COLUMNS = _SAMPLE.names[:-1]
_pack_sample = struct.Struct("=diiiidi").pack


def _column(reqs: list, attr: str, dtype) -> np.ndarray:
    """One attribute of every request, as an array."""
    return np.fromiter(map(attrgetter(attr), reqs), dtype, len(reqs))


def _names(names: list[str], idx: np.ndarray) -> pd.Categorical:
    """``pd.Categorical([names[i] for i in idx])`` (categories: the names present, sorted),
    without a Python loop over ``idx``."""
    present = sorted({names[i] for i in np.unique(idx)})
    codes = np.array([present.index(n) if n in present else -1 for n in names], np.int64)
    return pd.Categorical.from_codes(codes[idx], categories=present)


class Recorder:
    def __init__(self, class_names: list[str], warmup_s: float = 0.0):
        self.class_names = class_names
        self.warmup_s = warmup_s
        """Inter-token gaps are pooled for requests arriving at or after this time."""
        self.gap_log = bytearray()
        """Inter-token gaps as packed runs of steps (sim.metrics.itl.RUN), binned at the end."""
        self.outages: list[list] = []
        """[replica, down at, back up at (None while down)] for every replica failure."""
        self.requests: list[Request] = []
        self.image_requests: list = []
        self.pipelines: list = []
        self.block_requests: list = []
        """Diffusion-LM and hybrid requests (``sim.kinds.blocks``)."""
        self.media: list = []
        """AR image and audio requests (``sim.kinds.media``): parents of text rows."""
        self.kv_transfers = False
        """A pool decodes for another's prefills: text rows get ``kv_transfer_s``."""
        self.kv_tiers = False
        """A pool swaps KV to CPU or has a CPU tier: text rows get ``swapped_tokens`` and
        ``cpu_hit_tokens``."""
        # Per-replica time series, one sample per engine step or decode span (at its start),
        # packed into bytes: one append per sample in the hot loop.
        self._samples = bytearray()
        self.replica_pool: list[str] = []
        self.replica_kv_blocks: list[int] = []
        self.replica_gpus: list[int] = []
        self.replica_unit_gib: list[float] = []
        self.replica_is_llm: list[bool] = []
        self.held: dict[int, list[list[float]]] = {}
        """Autoscaled replicas: [from, until (inf while held)] for every span the replica was
        held (its GPUs billed); replicas of fixed pools are held throughout and not listed."""
        self.busy_by_replica: list[float] | None = None
        """Seconds each replica computed so far, kept only when an autoscaler reads it."""

    def hold(self, replica: int, t: float) -> None:
        """An autoscaled replica's GPUs are held (billed) from ``t``."""
        self.held.setdefault(replica, []).append([t, float("inf")])

    def release(self, replica: int, t: float) -> None:
        """... and let go at ``t``."""
        self.held[replica][-1][1] = t

    def track_busy(self) -> None:
        """Keep a running total of each replica's busy seconds (utilisation autoscaling)."""
        if self.busy_by_replica is None:
            self.busy_by_replica = [0.0] * len(self.replica_pool)

    # -- events
    def add_replica(self, pool: str, num_kv_blocks: int, num_gpus: int, unit_gib: float = 0.0, llm: bool = True) -> int:
        """A replica whose memory holds ``num_kv_blocks`` units (KV blocks, or MiB for a
        diffusion replica: ``llm`` False) of ``unit_gib`` GiB each."""
        self.replica_is_llm.append(llm)
        self.replica_pool.append(pool)
        self.replica_kv_blocks.append(num_kv_blocks)
        self.replica_gpus.append(num_gpus)
        self.replica_unit_gib.append(unit_gib)
        return len(self.replica_pool) - 1

    def itl(self) -> ITLHistogram:
        """The run's inter-token gaps per class, binned."""
        hist = ITLHistogram(len(self.class_names))
        hist.add_log(self.gap_log)
        return hist

    def outage(self, replica: int, t: float) -> list:
        """A replica went down at ``t``; the caller sets the entry's end when it is back up."""
        entry = [replica, t, None]
        self.outages.append(entry)
        return entry

    def arrival(self, req: Request) -> None:
        self.requests.append(req)

    def image_arrival(self, req) -> None:
        self.image_requests.append(req)

    def pipeline_arrival(self, req) -> None:
        self.pipelines.append(req)

    def block_arrival(self, req) -> None:
        self.block_requests.append(req)

    def media_arrival(self, req) -> None:
        self.media.append(req)

    def busy(self, replica: int, t: float, dur_s: float, running: int, waiting: int, kv_used: int, steps: int) -> None:
        """A replica computes for ``dur_s`` from ``t`` (``steps`` engine steps) with this
        state; every figure derived from busy periods is summed from these samples."""
        self._samples += _pack_sample(t, replica, running, waiting, kv_used, dur_s, steps)
        if self.busy_by_replica is not None:
            self.busy_by_replica[replica] += dur_s

    @property
    def replica_busy_s(self) -> list[float]:
        """Seconds each replica computed (summed in sample order, as a running total would)."""
        samples = np.frombuffer(self._samples, _SAMPLE)
        return np.bincount(samples["replica"], weights=samples["duration_s"], minlength=len(self.replica_pool)).tolist()

    @property
    def num_steps(self) -> int:
        """Engine steps of every replica (a decode span counts its steps)."""
        return int(np.frombuffer(self._samples, _SAMPLE)["steps"].sum())

    # -- tables
    def requests_frame(self) -> pd.DataFrame:
        others = self.image_requests or self.pipelines or self.block_requests or self.media
        frames = [self._text_frame()] if self.requests or not others else []
        if self.image_requests:
            frames.append(self._image_frame())
        if self.pipelines:
            frames.append(self._pipeline_frame())
        for kind in ("dllm", "hybrid"):
            reqs = [r for r in self.block_requests if r.kind == kind]
            if reqs:
                frames.append(self._block_frame(reqs, kind))
        for kind in ("ar_image", "audio"):
            reqs = [r for r in self.media if r.kind == kind]
            if reqs:
                frames.append(self._media_frame(reqs, kind))
        df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        df["class"] = pd.Categorical.from_codes(df["class_id"], categories=self.class_names)
        nan = np.nan
        done = df["finish_s"] >= 0
        started = df["first_scheduled_s"] >= 0
        df["queue_s"] = np.where(started, df["first_scheduled_s"] - df["arrival_s"], nan)
        df["e2e_s"] = np.where(done, df["finish_s"] - df["arrival_s"], nan)
        if "first_token_s" in df:
            first = df["first_token_s"] >= 0
            df["ttft_s"] = np.where(first, df["first_token_s"] - df["arrival_s"], nan)
            # TPOT as vLLM's benchmark defines it: (E2E - TTFT) / (output tokens - 1).
            denom = (df["output_tokens"] - 1).where(df["output_tokens"] > 1)
            df["tpot_s"] = np.where(done & first, (df["finish_s"] - df["first_token_s"]) / denom, nan)
            if self.block_requests or self.media:
                # a token stream's metrics are text's; the other kinds' first output is their own
                text = (df["kind"] == "text").to_numpy()
                df["tpot_s"] = np.where(text, df["tpot_s"], nan)
                df.loc[df["kind"].isin(["ar_image", "hybrid"]), "ttft_s"] = nan
        if "first_chunk_s" in df:
            has = df["first_chunk_s"] >= 0
            df["first_chunk_s"] = np.where(has, df["first_chunk_s"] - df["arrival_s"], nan)
            df.loc[df["kind"] == "audio", "ttft_s"] = df["first_chunk_s"]
        if "audio_s" in df:
            df["rtf"] = np.where(done, (df["finish_s"] - df["first_scheduled_s"]) / df["audio_s"], nan)
        if self.block_requests:
            dllm = (df["kind"] == "dllm").to_numpy() & done.to_numpy()
            gen = (df["finish_s"] - df["first_scheduled_s"]).to_numpy()
            df["tokens_per_s"] = np.where(dllm, df["output_tokens"] / np.where(dllm, gen, 1.0), nan)
        df["status"] = df["status"].astype("category")
        return df

    def _common(self, reqs: list, kind: str) -> dict:
        n = len(reqs)
        parent_id = np.full(n, -1, np.int64)
        if kind in PARENT_KINDS:
            pool = [""] * n
        else:
            # Replica -1 (never routed) indexes the last entry: no pool.
            pool = np.array([*self.replica_pool, ""], dtype=object)[_column(reqs, "replica", np.int64)]
            parents = list(map(attrgetter("parent"), reqs))
            if any(p is not None for p in parents):
                parent_id = np.fromiter((-1 if p is None else p.request_id for p in parents), np.int64, n)
        return {
            "request_id": _column(reqs, "request_id", np.int64),
            "class_id": _column(reqs, "class_id", np.int32),
            "kind": np.full(n, kind, dtype=object),
            "pool": pool,
            "parent_id": parent_id,
            "stage": _column(reqs, "stage", np.int32) if kind not in PARENT_KINDS else np.full(n, -1, np.int32),
            "arrival_s": _column(reqs, "arrival_s", np.float64),
            "finish_s": _column(reqs, "finish_s", np.float64),
            "status": _STATUS_WORDS[_column(reqs, "status", np.int64)],
            "reject_reason": list(map(attrgetter("reject_reason"), reqs)),
            "fail_reason": list(map(attrgetter("fail_reason"), reqs)),
        }

    def _leaf_frame(self, reqs: list, kind: str, columns: dict) -> pd.DataFrame:
        """Rows of requests that run on a replica: the common columns, the engine's marks,
        and ``columns`` (name -> (attribute, dtype)) for their kind."""
        cols = self._common(reqs, kind)
        shared = {
            "replica": ("replica", np.int32),
            "seen_in_system": ("seen_in_system", np.int32),
            "first_scheduled_s": ("first_scheduled_s", np.float64),
            "retries": ("num_retries", np.int32),
            "gpu_s": ("gpu_s", np.float64),
        }
        for name, (attr, dtype) in {**shared, **columns}.items():
            cols[name] = _column(reqs, attr, dtype)
        return pd.DataFrame(cols)

    def _text_frame(self) -> pd.DataFrame:
        df = self._leaf_frame(
            self.requests,
            "text",
            {
                "prompt_tokens": ("num_prompt_tokens", np.int64),
                "output_tokens": ("max_tokens", np.int64),
                "generated_tokens": ("num_output_tokens", np.int64),
                "cached_tokens": ("num_cached_tokens", np.int64),
                "first_token_s": ("first_token_s", np.float64),
                "max_itl_s": ("max_itl_s", np.float64),
                "preemptions": ("num_preemptions", np.int32),
                "prefill_gpu_s": ("prefill_gpu_s", np.float64),
                **({"kv_transfer_s": ("kv_transfer_s", np.float64)} if self.kv_transfers else {}),
                **(
                    {
                        "swapped_tokens": ("num_swapped_tokens", np.int64),
                        "cpu_hit_tokens": ("num_cpu_hit_tokens", np.int64),
                    }
                    if self.kv_tiers
                    else {}
                ),
            },
        )
        df["cached_tokens"] = df["cached_tokens"].clip(lower=0)  # -1: never scheduled
        return df

    def _image_frame(self) -> pd.DataFrame:
        return self._leaf_frame(
            self.image_requests,
            "image",
            {
                "width": ("width", np.int64),
                "height": ("height", np.int64),
                "frames": ("frames", np.int64),
                "steps": ("steps", np.int64),
                "images": ("images", np.int64),
                "cfg": ("cfg", bool),
                "steps_computed": ("steps_computed", np.int64),
                "forming_s": ("forming_s", np.float64),
                "first_preview_s": ("first_preview_s", np.float64),
            },
        )

    def _block_frame(self, reqs: list, kind: str) -> pd.DataFrame:
        n = len(reqs)
        df = self._leaf_frame(
            reqs,
            kind,
            {
                "prompt_tokens": ("num_prompt_tokens", np.int64),
                "output_tokens": ("output_tokens", np.int64),
                "generated_tokens": ("generated_tokens", np.int64),
                "first_token_s": ("first_token_s", np.float64),
                "steps": ("total_steps", np.int64),
                "decode_s": ("decode_s", np.float64),
            },
        )
        df["blocks"] = np.fromiter((len(r.blocks) for r in reqs), np.int64, n)
        if kind == "hybrid":
            df["images"] = np.ones(n, np.int64)
        return df

    def _media_frame(self, reqs: list, kind: str) -> pd.DataFrame:
        n = len(reqs)
        cols = self._common(reqs, kind)
        for name, attr, dtype in (
            ("replica", "replica", np.int32),
            ("first_scheduled_s", "first_scheduled_s", np.float64),
            ("retries", "num_retries", np.int32),
            ("gpu_s", "gpu_s", np.float64),
            ("prompt_tokens", "num_prompt_tokens", np.int64),
            ("output_tokens", "output_tokens", np.int64),
            ("sequences", "sequences", np.int64),
            ("first_token_s", "first_token_s", np.float64),
            ("first_chunk_s", "first_chunk_s", np.float64),
            ("decode_s", "decode_s", np.float64),
        ):
            cols[name] = _column(reqs, attr, dtype)
        if kind == "audio":
            cols["audio_s"] = _column(reqs, "audio_s", np.float64)
        else:
            cols["images"] = np.ones(n, np.int64)
        return pd.DataFrame(cols)

    def _pipeline_frame(self) -> pd.DataFrame:
        reqs = self.pipelines
        n = len(reqs)
        cols = self._common(reqs, "pipeline")
        cols.update(
            {
                "replica": np.full(n, -1, np.int32),
                "first_scheduled_s": np.fromiter(
                    (r.children[0].first_scheduled_s if r.children else -1.0 for r in reqs), np.float64, n
                ),
                "retries": np.fromiter((sum(c.num_retries for c in r.children) for r in reqs), np.int32, n),
                "gpu_s": np.fromiter((sum(c.gpu_s for c in r.children) for r in reqs), np.float64, n),
            }
        )
        return pd.DataFrame(cols)

    def timeseries_frame(self) -> pd.DataFrame:
        samples = np.frombuffer(self._samples, _SAMPLE)
        df = pd.DataFrame({name: samples[name].copy() for name in _COLUMNS})
        df["pool"] = _names(self.replica_pool, samples["replica"]) if len(df) else pd.Categorical([])
        kv_total = np.asarray(self.replica_kv_blocks, np.float64)
        unit = np.asarray(self.replica_unit_gib, np.float64)
        idx = df["replica"].to_numpy()
        held = df["kv_blocks_used"].to_numpy()
        df["memory_util"] = held / kv_total[idx] if len(df) else np.empty(0)
        df["state_gib"] = held * unit[idx] if len(df) else np.empty(0)
        # A diffusion replica's memory is counted in MiB of activations, not KV blocks: its
        # rows leave the KV columns empty (memory_util and state_gib hold its figures).
        llm = np.asarray(self.replica_is_llm, bool)[idx] if len(df) else np.empty(0, bool)
        df["kv_blocks_used"] = pd.array(np.where(llm, held, 0), dtype="Int32")
        df.loc[~llm, "kv_blocks_used"] = pd.NA
        df["kv_util"] = np.where(llm, df["memory_util"].to_numpy(), np.nan)
        return df

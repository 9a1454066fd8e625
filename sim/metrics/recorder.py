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

from array import array

import numpy as np
import pandas as pd

from sim.llm.request import Request

# Request status -> the word in the tables: a request is finished, rejected (with a reason,
# on arrival), failed (retries spent or timed out, with a reason), or still in flight.
_STATUS = {0: "waiting", 1: "running", 2: "waiting", 3: "finished", 4: "rejected", 5: "failed"}


class Recorder:
    def __init__(self, class_names: list[str]):
        self.class_names = class_names
        self.requests: list[Request] = []
        self.image_requests: list = []
        self.pipelines: list = []
        # Per-replica time series, one sample per engine step or decode span (at its start).
        self._ts_t = array("d")
        self._ts_replica = array("i")
        self._ts_running = array("i")
        self._ts_waiting = array("i")
        self._ts_kv_used = array("i")
        self._ts_dur = array("d")
        self.replica_pool: list[str] = []
        self.replica_kv_blocks: list[int] = []
        self.replica_busy_s: list[float] = []
        self.replica_gpus: list[int] = []
        self.replica_unit_gib: list[float] = []
        self.num_steps = 0

    # -- events
    def add_replica(self, pool: str, num_kv_blocks: int, num_gpus: int, unit_gib: float = 0.0) -> int:
        """A replica whose memory holds ``num_kv_blocks`` units (KV blocks, or MiB for a
        diffusion replica) of ``unit_gib`` GiB each."""
        self.replica_pool.append(pool)
        self.replica_kv_blocks.append(num_kv_blocks)
        self.replica_busy_s.append(0.0)
        self.replica_gpus.append(num_gpus)
        self.replica_unit_gib.append(unit_gib)
        return len(self.replica_pool) - 1

    def arrival(self, req: Request) -> None:
        self.requests.append(req)

    def image_arrival(self, req) -> None:
        self.image_requests.append(req)

    def pipeline_arrival(self, req) -> None:
        self.pipelines.append(req)

    def busy(self, replica: int, t: float, dur_s: float, running: int, waiting: int, kv_used: int, steps: int) -> None:
        self._ts_t.append(t)
        self._ts_replica.append(replica)
        self._ts_running.append(running)
        self._ts_waiting.append(waiting)
        self._ts_kv_used.append(kv_used)
        self._ts_dur.append(dur_s)
        self.replica_busy_s[replica] += dur_s
        self.num_steps += steps

    # -- tables
    def requests_frame(self) -> pd.DataFrame:
        frames = [self._text_frame()] if self.requests or not (self.image_requests or self.pipelines) else []
        if self.image_requests:
            frames.append(self._image_frame())
        if self.pipelines:
            frames.append(self._pipeline_frame())
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
        df["status"] = df["status"].astype("category")
        return df

    def _common(self, reqs: list, kind: str) -> dict:
        n = len(reqs)
        pools = self.replica_pool
        return {
            "request_id": np.fromiter((r.request_id for r in reqs), np.int64, n),
            "class_id": np.fromiter((r.class_id for r in reqs), np.int32, n),
            "kind": np.full(n, kind, dtype=object),
            "pool": [pools[r.replica] if r.replica >= 0 else "" for r in reqs] if kind != "pipeline" else [""] * n,
            "parent_id": np.fromiter((r.parent.request_id if getattr(r, "parent", None) is not None else -1 for r in reqs), np.int64, n),
            "stage": np.fromiter((r.stage for r in reqs), np.int32, n) if kind != "pipeline" else np.full(n, -1, np.int32),
            "arrival_s": np.fromiter((r.arrival_s for r in reqs), np.float64, n),
            "finish_s": np.fromiter((r.finish_s for r in reqs), np.float64, n),
            "status": [_STATUS[int(r.status)] for r in reqs],
            "reject_reason": [r.reject_reason for r in reqs],
            "fail_reason": [r.fail_reason for r in reqs],
        }

    def _leaf_frame(self, reqs: list, kind: str, columns: dict) -> pd.DataFrame:
        """Rows of requests that run on a replica: the common columns, the engine's marks,
        and ``columns`` (name -> (attribute, dtype)) for their kind."""
        n = len(reqs)
        cols = self._common(reqs, kind)
        shared = {
            "replica": ("replica", np.int32),
            "seen_in_system": ("seen_in_system", np.int32),
            "first_scheduled_s": ("first_scheduled_s", np.float64),
            "retries": ("num_retries", np.int32),
            "gpu_s": ("gpu_s", np.float64),
        }
        for name, (attr, dtype) in {**shared, **columns}.items():
            cols[name] = np.fromiter((getattr(r, attr) for r in reqs), dtype, n)
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

    def _pipeline_frame(self) -> pd.DataFrame:
        reqs = self.pipelines
        n = len(reqs)
        cols = self._common(reqs, "pipeline")
        cols.update(
            {
                "replica": np.full(n, -1, np.int32),
                "first_scheduled_s": np.fromiter((r.children[0].first_scheduled_s if r.children else -1.0 for r in reqs), np.float64, n),
                "retries": np.fromiter((sum(c.num_retries for c in r.children) for r in reqs), np.int32, n),
                "gpu_s": np.fromiter((sum(c.gpu_s for c in r.children) for r in reqs), np.float64, n),
            }
        )
        return pd.DataFrame(cols)

    def timeseries_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(
            {
                "t_s": np.frombuffer(self._ts_t, np.float64) if len(self._ts_t) else np.empty(0),
                "replica": np.frombuffer(self._ts_replica, np.int32) if len(self._ts_replica) else np.empty(0, np.int32),
                "running": np.frombuffer(self._ts_running, np.int32) if len(self._ts_running) else np.empty(0, np.int32),
                "waiting": np.frombuffer(self._ts_waiting, np.int32) if len(self._ts_waiting) else np.empty(0, np.int32),
                "kv_blocks_used": np.frombuffer(self._ts_kv_used, np.int32) if len(self._ts_kv_used) else np.empty(0, np.int32),
                "duration_s": np.frombuffer(self._ts_dur, np.float64) if len(self._ts_dur) else np.empty(0),
            }
        )
        df["pool"] = pd.Categorical([self.replica_pool[i] for i in df["replica"]]) if len(df) else pd.Categorical([])
        kv_total = np.asarray(self.replica_kv_blocks, np.float64)
        unit = np.asarray(self.replica_unit_gib, np.float64)
        idx = df["replica"].to_numpy()
        df["kv_util"] = df["kv_blocks_used"] / kv_total[idx] if len(df) else np.empty(0)
        df["state_gib"] = df["kv_blocks_used"] * unit[idx] if len(df) else np.empty(0)
        return df

"""The recorder: observes engine events and turns them into tables at the end of a run.

It never steers the simulation. Per-request facts live on the request objects the engine
stamps (arrival, first schedule, first token, finish, preemptions, GPU-seconds); the recorder
keeps a reference to each and builds one row per request in ``requests_frame()``. Per-replica
state over time (batch size, waiting queue, KV blocks used) is sampled at every step or
decode span into compact arrays.
"""

from __future__ import annotations

from array import array

import numpy as np
import pandas as pd

from sim.llm.request import Request


class Recorder:
    def __init__(self, class_names: list[str]):
        self.class_names = class_names
        self.requests: list[Request] = []
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
        self.num_steps = 0

    # -- events
    def add_replica(self, pool: str, num_kv_blocks: int, num_gpus: int) -> int:
        self.replica_pool.append(pool)
        self.replica_kv_blocks.append(num_kv_blocks)
        self.replica_busy_s.append(0.0)
        self.replica_gpus.append(num_gpus)
        return len(self.replica_pool) - 1

    def arrival(self, req: Request) -> None:
        self.requests.append(req)

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
        reqs = self.requests
        n = len(reqs)
        cols = {
            "request_id": np.fromiter((r.request_id for r in reqs), np.int64, n),
            "class_id": np.fromiter((r.class_id for r in reqs), np.int32, n),
            "replica": np.fromiter((r.replica for r in reqs), np.int32, n),
            "seen_in_system": np.fromiter((r.seen_in_system for r in reqs), np.int32, n),
            "arrival_s": np.fromiter((r.arrival_s for r in reqs), np.float64, n),
            "prompt_tokens": np.fromiter((r.num_prompt_tokens for r in reqs), np.int64, n),
            "output_tokens": np.fromiter((r.max_tokens for r in reqs), np.int64, n),
            "generated_tokens": np.fromiter((r.num_output_tokens for r in reqs), np.int64, n),
            "cached_tokens": np.fromiter((max(r.num_cached_tokens, 0) for r in reqs), np.int64, n),
            "first_scheduled_s": np.fromiter((r.first_scheduled_s for r in reqs), np.float64, n),
            "first_token_s": np.fromiter((r.first_token_s for r in reqs), np.float64, n),
            "finish_s": np.fromiter((r.finish_s for r in reqs), np.float64, n),
            "max_itl_s": np.fromiter((r.max_itl_s for r in reqs), np.float64, n),
            "preemptions": np.fromiter((r.num_preemptions for r in reqs), np.int32, n),
            "gpu_s": np.fromiter((r.gpu_s for r in reqs), np.float64, n),
            "status": [r.status.name.lower() if r.status.name != "PREEMPTED" else "waiting" for r in reqs],
            "reject_reason": [r.reject_reason for r in reqs],
        }
        df = pd.DataFrame(cols)
        df["class"] = pd.Categorical.from_codes(df["class_id"], categories=self.class_names)
        nan = np.nan
        done = df["finish_s"] >= 0
        started = df["first_scheduled_s"] >= 0
        first = df["first_token_s"] >= 0
        df["queue_s"] = np.where(started, df["first_scheduled_s"] - df["arrival_s"], nan)
        df["ttft_s"] = np.where(first, df["first_token_s"] - df["arrival_s"], nan)
        df["e2e_s"] = np.where(done, df["finish_s"] - df["arrival_s"], nan)
        # TPOT as vLLM's benchmark defines it: (E2E - TTFT) / (output tokens - 1).
        denom = (df["output_tokens"] - 1).where(df["output_tokens"] > 1)
        df["tpot_s"] = np.where(done, (df["finish_s"] - df["first_token_s"]) / denom, nan)
        df["status"] = df["status"].astype("category")
        return df

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
        df["kv_util"] = df["kv_blocks_used"] / kv_total[df["replica"].to_numpy()] if len(df) else np.empty(0)
        return df

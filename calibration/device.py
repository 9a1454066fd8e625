"""The GPU run in one shot: calibrate and serve both shapes within a time budget.

    python3 -m calibration.device --budget-s 420 --out $OUT            # on the GPU machine
    python3 -m calibration.device --target tiny --budget-s 60 --out D  # on a CPU, tiny models

Needs torch, numpy, pandas and pyyaml and the standard library, nothing else (the GPU machine
has no package registry); it imports nothing from ``sim``. Within ``--budget-s`` seconds it

1. records the device (name, driver, CUDA, torch, clocks, power limit, measured peaks) and
   samples clocks, power and temperature beside all the work (``telemetry.csv``);
2. **calibrates** the LLM (Llama-3-8B, bf16) on a grid of its step kernels and whole steps run
   through the engine's own step path (``calibration.measure`` with deadlines);
3. **serves** the LLM with the continuous-batching engine: a capacity burst and a staircase
   burst (calibration: they set the loads and the profile's in-loop composition), then three
   scored runs at 0.4, 0.7 and 0.9 of that capacity. The workloads are shipped files
   (``calibration/workloads``: arrival times at one request per second and lengths, drawn at
   home with a seed not used in development); here they are only scaled to the rate and cut
   to the number of requests that fits the run's time, both decided and written
   (``plan.json``) before the first scored run;
4. does the same for the diffusion model (SDXL, bf16) with the static-batching loop;
5. leaves at most 8 files in ``--out`` (``device.json``, ``log.txt``, ``telemetry.csv`` and one
   ``.tar.gz`` per phase, re-packed as the phase goes), since that is all that comes back.

**Budget arithmetic.** Of the budget, 5 % is kept for packing and slack; the rest is shared
among the phases still to run in proportion to ``PHASE_SHARES`` (a phase that ends early
leaves its time to the next). A calibration phase gives each op a share of its time and stops
an op's sweep at its deadline once it has a few points (``measure.Deadlines``; points go in
an order whose every prefix spans the grid). A serving phase measures as it goes: model load
and warm-up, then the capacity burst; the scored runs' request counts are then set from the
measured capacity so that each run, arrivals plus drain, fits its share of what is left; a
run still going at its deadline is stopped there and says so. ``docs/how-to/calibrate-on-a-gpu.md`` gives
the measured phase times.

At home, ``python -m calibration.home OUT`` fits the profiles, simulates the runs' workloads
with them frozen, and compares.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

WORKLOADS = Path(__file__).resolve().parent / "workloads"
KIT_FORMAT = "servesim-device-kit/1"
PHASES = ("llm-grid", "llm-serve", "diffusion-grid", "extra-grid", "diffusion-serve")
EXTRA_SHARE = 0.1
"""The share of the ``extra-grid`` phase when ``--extra`` names models (0 otherwise)."""
PHASE_SHARES = {"llm-grid": 0.12, "llm-serve": 0.4, "diffusion-grid": 0.12, "diffusion-serve": 0.36}
RESERVE = 0.05
"""Share of the budget kept back for packing and slack."""
LOADS = (0.4, 0.7, 0.9)
"""Scored loads, as fractions of the capacity the burst measured."""
DRAIN_FACTOR = 0.7
"""A scored run's arrivals take this share of its time; the rest is for the last requests to
finish (a run at 0.9 of capacity holds a queue when its arrivals stop)."""


@dataclass(frozen=True)
class Target:
    """What the kit runs: models, dtypes, engine knobs and workload files."""

    name: str
    device: str
    llm: str
    diffusion: str
    dtype: str
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    num_kv_blocks: int
    max_batch_size: int
    max_wait_s: float
    image: tuple[int, int, int]
    """(width, height, steps) of every image request."""
    timing: dict = field(default_factory=dict)
    """Repeat counts of the calibration sweeps (``harness.time_fn`` keywords)."""
    quick_grid: bool = True
    """The quick LLM grid (``grids.llm_grid``), or the full one."""
    shares: dict = field(default_factory=lambda: dict(PHASE_SHARES))
    """Each phase's share of the budget (``Budget``)."""

    def workload(self, shape: str) -> Path:
        return WORKLOADS / f"{self.name}-{shape}.csv"


TARGETS = {
    # One H100/H200: Llama-3-8B with a KV pool of 64 sequences x 4096 tokens (34 GB of bf16 K/V
    # beside 16 GB of weights), a 2048-token step budget; SDXL at 1024x1024, 30 steps, batches
    # of up to 4 images.
    "gpu": Target(
        "gpu", "cuda", "llama-3-8b", "sdxl", "bfloat16",
        max_num_seqs=64, max_num_batched_tokens=2048, max_model_len=4096, num_kv_blocks=64 * 4096 // 16,
        max_batch_size=4, max_wait_s=0.5, image=(1024, 1024, 30),
        timing={"warmup": 2, "reps": 5, "min_total_s": 0.03, "max_reps": 40}, quick_grid=False,
    ),
    # The CPU rehearsal (CI): the catalog's tiny models, the same code paths.
    "tiny": Target(
        "tiny", "cpu", "llama-tiny", "sd-tiny", "float32",
        max_num_seqs=16, max_num_batched_tokens=512, max_model_len=256, num_kv_blocks=512,
        max_batch_size=4, max_wait_s=0.2, image=(256, 256, 4),
        timing={"warmup": 1, "reps": 3, "min_total_s": 0.0, "max_reps": 3},
        # on one CPU core each grid op's three points overrun a small share, and a diffusion
        # batch takes about a second: the serving phases are given the rest
        shares={"llm-grid": 0.1, "llm-serve": 0.3, "diffusion-grid": 0.1, "diffusion-serve": 0.5},
    ),
}  # fmt: skip


# ------------------------------------------------------------------------------- budget


class Budget:
    """Wall-clock budget of the whole kit; phases get deadlines from what is left."""

    def __init__(self, total_s: float, shares: dict[str, float] = PHASE_SHARES, reserve: float = RESERVE):
        self.t0 = time.perf_counter()
        self.total_s = total_s
        self.end = self.t0 + total_s * (1 - reserve)
        self.shares = dict(shares)
        self.spent: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def deadline(self, phase: str) -> float:
        """The ``perf_counter`` time ``phase`` must end by: its share of what is left among the
        phases not yet run (itself included)."""
        rest = [p for p in self.shares if p not in self.spent]
        share = self.shares[phase] / sum(self.shares[p] for p in rest)
        return time.perf_counter() + max(0.0, self.end - time.perf_counter()) * share

    def done(self, phase: str, seconds: float) -> None:
        self.spent[phase] = round(seconds, 3)


# ------------------------------------------------------------------------------ outputs


class Outbox:
    """The kit's files: work in a scratch folder, packed into ``out`` (at most 8 files)."""

    def __init__(self, out: Path, work: Path):
        self.out, self.work = out, work
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        self.log_path = out / "log.txt"

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with self.log_path.open("a") as f:
            f.write(line + "\n")

    def folder(self, phase: str) -> Path:
        path = self.work / phase
        path.mkdir(parents=True, exist_ok=True)
        return path

    def pack(self, phase: str) -> Path:
        """(Re)write ``out/<phase>.tar.gz`` from the phase's folder (atomically: a kill mid-pack
        leaves the last complete one)."""
        dest = self.out / f"{phase}.tar.gz"
        tmp = self.out / f".{phase}.tar.gz.tmp"
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(self.folder(phase), arcname=phase)
        os.replace(tmp, dest)
        return dest

    def write_json(self, name: str, data: dict) -> None:
        tmp = self.out / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=2, default=str))
        os.replace(tmp, self.out / name)


def unpack(folder: Path, into: Path) -> Path:
    """Unpack every phase archive of a kit's output ``folder`` under ``into``; returns ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    for archive in sorted(Path(folder).glob("*.tar.gz")):
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    return into


# ------------------------------------------------------------------------------ workloads


def read_workload(path: Path) -> pd.DataFrame:
    """A shipped workload file (``part`` names the burst or run each row belongs to)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: workload file not found (make them at home: python -m calibration.home --make-workloads)"
        )
    return pd.read_csv(path)


def plan_run(part: pd.DataFrame, rate: float, run_s: float, least: int = 8) -> pd.DataFrame:
    """The requests of a scored run: the part's unit-rate arrivals scaled to ``rate`` (req/s),
    cut to those arriving within ``DRAIN_FACTOR * run_s`` (at least ``least``)."""
    frame = part.sort_values("unit_arrival_s", kind="stable").reset_index(drop=True)
    frame = frame.assign(arrival_s=frame["unit_arrival_s"] / rate)
    keep = max(least, int((frame["arrival_s"] <= DRAIN_FACTOR * run_s).sum()))
    return frame.head(keep).reset_index(drop=True)


def write_plan(folder: Path, capacity: float, runs: list[dict]) -> None:
    (folder / "plan.json").write_text(json.dumps({"capacity_req_s": capacity, "runs": runs}, indent=2))


def plan_scored_runs(work: pd.DataFrame, folder: Path, capacity: float, left_s: float, least: int) -> list[dict]:
    """One scored run per load of ``LOADS``, each given an equal share of ``left_s``: its
    workload file (``plan_run`` at that fraction of ``capacity``) and ``plan.json`` are written
    before any of them starts."""
    run_s = left_s / len(LOADS)
    plan = []
    for k, load in enumerate(LOADS):
        name = f"run-{k + 1}"
        frame = plan_run(work[work["part"] == name], load * capacity, run_s, least=least)
        frame.to_csv(folder / f"{name}_workload.csv", index=False)
        plan.append(
            {"run": name, "load": load, "rate_req_s": load * capacity, "requests": len(frame), "stop_after_s": run_s}
        )
    write_plan(folder, capacity, plan)
    return plan


def _throughput(finish: pd.Series, arrival: pd.Series) -> float:
    done = finish.dropna()
    span = done.max() - arrival.min() if len(done) else float("nan")
    return float(len(done) / span) if span > 0 else float("nan")


def llm_capacity(reqs: pd.DataFrame, steps: pd.DataFrame, mean_output_tokens: float) -> tuple[float, str]:
    """Completed requests per second of a burst, or, when the burst was stopped before its
    requests finished, the tokens it generated per second over ``mean_output_tokens``."""
    served = reqs[~reqs["rejected"]]
    if served["finish_s"].notna().all():
        return _throughput(served["finish_s"], served["arrival_s"]), "completed requests per second"
    span = float(steps["end_s"].max() - reqs["arrival_s"].min()) if len(steps) else float("nan")
    tokens = float(steps["num_decode"].sum() + served["first_token_s"].notna().sum())
    return tokens / span / mean_output_tokens, "burst stopped early: generated tokens per second / mean output tokens"


# ------------------------------------------------------------------------------ phases


def phase_grid(kind: str, t: Target, box: Outbox, budget: Budget, models: tuple[str, ...] | None = None) -> dict:
    """Calibrate one model (or, for ``extra``, each of ``models`` in turn, sharing the phase) on
    its kit grid until the phase's deadline."""
    from calibration.measure import measure, model_kind

    phase = f"{kind}-grid"
    deadline = budget.deadline(phase)
    names = models if models is not None else ((t.llm,) if kind == "llm" else (t.diffusion,))
    box.log(f"{phase}: {', '.join(names)} on {t.device} until +{deadline - budget.t0:.0f} s")
    result = {}
    for k, model in enumerate(names):
        folder = box.folder(phase) / model
        own = model_kind(model)
        grid = llm_kit_grid(t, model) if own == "llm" else diffusion_kit_grid(t, model)
        until = time.perf_counter() + (deadline - time.perf_counter()) / (len(names) - k)
        shown: set[tuple[str, int]] = set()

        def progress(op: str, j: int, n: int, shown=shown) -> None:
            if (j == n or j % max(1, n // 4) == 0) and (op, j) not in shown:
                shown.add((op, j))
                box.log(f"  {op}: {j}/{n}")

        try:
            measure(
                model,
                t.device,
                folder,
                dtype=t.dtype,
                grid=grid,
                deadline=until,
                timing=t.timing,
                progress=progress,
                quick=True,
            )
            meta = json.loads((folder / "meta.json").read_text())
            result[model] = {"cut_short": meta.get("cut_short", {}), "step_path": meta["model_facts"].get("step_path")}
        except Exception as exc:  # noqa: BLE001 - an extra model that fails (memory, say) must not sink the phase
            if models is None:
                raise
            result[model] = {"error": f"{type(exc).__name__}: {exc}"}
            box.log(f"  {model} failed: {result[model]['error']}")
        box.pack(phase)
        _free_memory(t)
    return {"models": result}


def _free_memory(t: Target) -> None:
    """Give the phase's model, caches and graphs back before the next phase builds its own."""
    gc.collect()
    if t.device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def llm_kit_grid(t: Target, model: str | None = None):
    """The LLM grid the kit measures: the target's grid, its whole steps kept to what the engine
    runs (its step budget and sequence limit) and its contexts to its model length."""
    from calibration.configs import llm_config
    from calibration.grids import LLMGrid, llm_grid

    cfg = llm_config(model or t.llm)
    g = llm_grid(t.device, t.quick_grid, max_context=min(cfg.max_position_embeddings, t.max_model_len))
    steps = tuple(
        s for s in g.steps
        if sum(p for p, _ in s) <= t.max_num_batched_tokens and len(s) <= t.max_num_seqs
        and max(p + k for p, k in s) <= t.max_model_len
    )  # fmt: skip
    lin = tuple(n for n in g.lin_tokens if n <= t.max_num_batched_tokens)
    return LLMGrid(lin, g.decode, g.prefill, g.head_rows, steps)


def diffusion_kit_grid(t: Target, model: str | None = None):
    """The diffusion grid the kit measures: the served size and one smaller (so the denoiser's
    token terms are not collinear), every row count a batch of the served size runs, VAE of 1
    to ``max_batch_size`` images, text encoders over the prompts a batch encodes."""
    from calibration.diffusion_configs import diffusion_config
    from calibration.grids import DiffusionGrid

    cfg = diffusion_config(model or t.diffusion)
    w, h, _ = t.image if model is None else (cfg.default_width, cfg.default_height, cfg.default_steps)
    m = cfg.vae_spatial_factor * cfg.patch_size
    small = (max(m, int(w * 0.75) // m * m), max(m, int(h * 0.75) // m * m))
    g = 2 if cfg.cfg else 1
    rows = sorted({g * b for b in range(1, t.max_batch_size + 1)} | {1})
    denoise = [(r, w, h, 1) for r in rows] + [(r, *small, 1) for r in rows]
    vae = [(b, w, h, 1) for b in range(1, t.max_batch_size + 1)] + [(1, *small, 1)]
    prompts = tuple(sorted({g * b for b in range(1, t.max_batch_size + 1)} | {1}))
    return DiffusionGrid(tuple(denoise), prompts, tuple(vae))


def phase_llm_serve(t: Target, box: Outbox, budget: Budget, seed: int) -> dict:
    """Capacity and staircase bursts, then the scored runs, loads taking turns."""

    from calibration.engine.llm import EngineConfig, WorkItem, load_replica, run_llm_engine

    phase = "llm-serve"
    deadline = budget.deadline(phase)
    folder = box.folder(phase)
    work = read_workload(t.workload("llm"))
    cfg = EngineConfig(
        max_num_seqs=t.max_num_seqs, max_num_batched_tokens=t.max_num_batched_tokens,
        num_kv_blocks=t.num_kv_blocks, max_model_len=t.max_model_len,
    )  # fmt: skip
    t_load = time.perf_counter()
    replica = load_replica(t.llm, cfg, device=t.device, dtype=t.dtype, seed=seed)
    info = {"engine": asdict(cfg), "load_s": round(time.perf_counter() - t_load, 3), "check": replica.check}
    box.log(f"{phase}: {t.llm} loaded in {info['load_s']:.1f} s; step path {replica.check}")

    def items(frame: pd.DataFrame, rate: float | None) -> list:
        arrival = np.zeros(len(frame)) if rate is None else frame["arrival_s"].to_numpy(float)
        return [
            WorkItem(int(r.request_id), float(a), int(r.prompt_tokens), int(r.output_tokens))
            for r, a in zip(frame.itertuples(), arrival)
        ]

    def serve(name: str, frame: pd.DataFrame, rate: float | None, stop_s: float) -> pd.DataFrame:
        reqs, steps = run_llm_engine(
            t.llm,
            items(frame, rate),
            cfg,
            device=t.device,
            dtype=t.dtype,
            seed=seed,
            replica=replica,
            stop_after_s=stop_s,
        )
        reqs.to_csv(folder / f"{name}_requests.csv", index=False)
        steps.to_csv(folder / f"{name}_steps.csv", index=False)
        box.pack(phase)
        unfinished = int(reqs["finish_s"].isna().sum() - reqs["rejected"].sum())
        box.log(
            f"  {name}: {len(reqs)} requests, {len(steps)} steps, {unfinished} unfinished, {time.perf_counter() - t_run:.1f} s"
        )
        return reqs

    # Calibration: capacity burst, then the staircase burst. Each may take a share of what is left.
    left = deadline - time.perf_counter()
    t_run = time.perf_counter()
    burst = serve("capacity", work[work["part"] == "capacity"], None, 0.25 * left)
    runs_mean_output = float(work.loc[work["part"].str.startswith("run"), "output_tokens"].mean())
    capacity, how = llm_capacity(burst, pd.read_csv(folder / "capacity_steps.csv"), runs_mean_output)
    t_run = time.perf_counter()
    serve("staircase", work[work["part"] == "staircase"], None, 0.1 * left)
    info["capacity_req_s"], info["capacity_from"] = capacity, how
    box.log(f"  capacity {capacity:.3f} req/s ({how})")

    # Plan the scored runs from the capacity alone, and write it before any of them starts.
    info["plan"] = plan = plan_scored_runs(work, folder, capacity, deadline - time.perf_counter(), least=8)
    box.pack(phase)
    for k, p in enumerate(plan):
        t_run = time.perf_counter()
        frame = pd.read_csv(folder / f"{p['run']}_workload.csv")
        remaining = deadline - time.perf_counter()
        stop = min(p["stop_after_s"], remaining / (len(plan) - k))
        reqs = serve(p["run"], frame, p["rate_req_s"], stop)
        p["cut"] = bool(reqs["finish_s"].isna().sum() > reqs["rejected"].sum())
    write_plan(folder, capacity, plan)
    (folder / "replica.json").write_text(json.dumps(info, indent=2, default=str))
    box.pack(phase)
    replica = None  # free the model and its KV pool before the next phase
    _free_memory(t)
    return info


def phase_diffusion_serve(t: Target, box: Outbox, budget: Budget, seed: int) -> dict:
    """Capacity burst, then the scored runs, on one pipeline loaded once."""
    import torch

    from calibration.diffusion_configs import diffusion_config
    from calibration.engine.diffusion import (
        DiffusionEngineConfig,
        ImageWorkItem,
        PipelineExecutor,
        run_diffusion_engine,
    )
    from calibration.measure import DTYPES
    from calibration.models.diffusion import DiffusionPipeline

    phase = "diffusion-serve"
    deadline = budget.deadline(phase)
    folder = box.folder(phase)
    work = read_workload(t.workload("diffusion"))
    cfg = DiffusionEngineConfig(max_batch_size=t.max_batch_size, max_wait_s=t.max_wait_s)
    t_load = time.perf_counter()
    torch.manual_seed(seed)
    executor = PipelineExecutor(
        DiffusionPipeline(diffusion_config(t.diffusion), dtype=DTYPES[t.dtype], device=t.device)
    )
    info = {"batching": asdict(cfg), "load_s": round(time.perf_counter() - t_load, 3)}
    box.log(f"{phase}: {t.diffusion} loaded in {info['load_s']:.1f} s")

    def serve(name: str, frame: pd.DataFrame, at_once: bool, stop_s: float) -> pd.DataFrame:
        t_run = time.perf_counter()
        arrival = np.zeros(len(frame)) if at_once else frame["arrival_s"].to_numpy(float)
        items = [
            ImageWorkItem(int(r.request_id), float(a), int(r.width), int(r.height), int(r.steps))
            for r, a in zip(frame.itertuples(), arrival)
        ]
        reqs, batches = run_diffusion_engine(
            t.diffusion, items, cfg, device=t.device, dtype=t.dtype, executor=executor, stop_after_s=stop_s
        )
        reqs.to_csv(folder / f"{name}_requests.csv", index=False)
        batches.to_csv(folder / f"{name}_batches.csv", index=False)
        box.pack(phase)
        box.log(
            f"  {name}: {len(reqs)}/{len(frame)} requests served, {len(batches)} batches, {time.perf_counter() - t_run:.1f} s"
        )
        return reqs

    left = deadline - time.perf_counter()
    burst = serve("capacity", work[work["part"] == "capacity"], True, 0.3 * left)
    capacity = _throughput(burst["finish_s"], burst["arrival_s"])
    info["capacity_req_s"] = capacity
    box.log(f"  capacity {capacity:.3f} req/s")
    info["plan"] = plan = plan_scored_runs(work, folder, capacity, deadline - time.perf_counter(), least=4)
    box.pack(phase)
    for k, p in enumerate(plan):
        frame = pd.read_csv(folder / f"{p['run']}_workload.csv")
        stop = min(p["stop_after_s"], (deadline - time.perf_counter()) / (len(plan) - k))
        reqs = serve(p["run"], frame, False, stop)
        p["cut"] = bool(len(reqs) < len(frame))
    write_plan(folder, capacity, plan)
    (folder / "replica.json").write_text(json.dumps(info, indent=2, default=str))
    box.pack(phase)
    executor = None
    _free_memory(t)
    return info


# ------------------------------------------------------------------------------ driver


def device_record(t: Target) -> dict:
    """Device, driver, CUDA, torch, clocks and power limit, and the measured matmul/copy peaks."""
    import torch

    from calibration.harness import device_info
    from calibration.measure import DTYPES, measure_peaks

    info = {
        "format": KIT_FORMAT,
        "target": t.name,
        "settings": asdict(t),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "device": device_info(t.device),
    }
    if t.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info["cuda"] = {
            "version": torch.version.cuda,
            "name": props.name,
            "memory_bytes": props.total_memory,
            "sm_count": props.multi_processor_count,
        }
    info["peaks"] = measure_peaks(t.device, DTYPES[t.dtype])
    return info


def run_kit(
    target: str,
    budget_s: float,
    out: Path,
    work: Path | None = None,
    seed: int = 20261207,
    phases: tuple[str, ...] = PHASES,
    extra: tuple[str, ...] = (),
) -> dict:
    """Run the kit; returns the summary also written to ``out/device.json``. ``extra`` names
    more catalog models to calibrate (grid only) in the ``extra-grid`` phase, time permitting:
    it then takes ``EXTRA_SHARE`` of the budget."""
    from calibration.harness import configure_cpu
    from calibration.telemetry import Telemetry

    t = TARGETS[target]
    if t.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError("target 'gpu' needs a CUDA device, and torch sees none here (use --target tiny on a CPU)")
    else:
        configure_cpu(1)
    for shape in ("llm", "diffusion"):
        read_workload(t.workload(shape))  # a missing file fails now, not minutes in
    from calibration.measure import model_kind

    for model in extra:
        model_kind(model)  # an unknown name fails now
    shares = {**t.shares, "extra-grid": EXTRA_SHARE if extra else 0.0}
    budget = Budget(budget_s, {p: shares[p] for p in PHASES})
    box = Outbox(out, work or Path(tempfile.mkdtemp(prefix="servesim-kit-")))
    summary: dict = {
        "format": KIT_FORMAT,
        "target": target,
        "budget_s": budget_s,
        "seed": seed,
        "extra": list(extra),
        "phases": {},
    }
    with Telemetry(out / "telemetry.csv", t.device):
        box.log(f"servesim device kit: target {target}, budget {budget_s:.0f} s, out {out}")
        summary["device"] = device_record(t)
        box.write_json("device.json", summary)
        runners: dict[str, Callable[[], dict]] = {
            "llm-grid": lambda: phase_grid("llm", t, box, budget),
            "llm-serve": lambda: phase_llm_serve(t, box, budget, seed),
            "diffusion-grid": lambda: phase_grid("diffusion", t, box, budget),
            "extra-grid": lambda: phase_grid("extra", t, box, budget, extra),
            "diffusion-serve": lambda: phase_diffusion_serve(t, box, budget, seed),
        }
        skipped = [p for p in PHASES if p not in phases or (p == "extra-grid" and not extra)]
        for phase in skipped:  # their shares go to the phases that run
            budget.done(phase, 0.0)
        for phase in PHASES:
            if phase in skipped:
                continue
            t0 = time.perf_counter()
            try:
                result = runners[phase]()
                status = "done"
            except Exception as exc:  # noqa: BLE001 - one phase failing must not lose the others
                result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
                status = "failed"
                box.log(f"{phase} FAILED: {result['error']}")
            budget.done(phase, time.perf_counter() - t0)
            summary["phases"][phase] = {"status": status, "seconds": budget.spent[phase], **result}
            box.write_json("device.json", summary)
        summary["elapsed_s"] = round(budget.elapsed(), 3)
        box.log(
            f"done in {summary['elapsed_s']:.1f} s of {budget_s:.0f}: "
            + ", ".join(f"{p} {s['seconds']:.1f} s" for p, s in summary["phases"].items())
        )
    box.write_json("device.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m calibration.device", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=sorted(TARGETS), default="gpu")
    parser.add_argument("--budget-s", type=float, required=True, help="wall-clock seconds the whole kit may take")
    parser.add_argument("--out", type=Path, required=True, help="folder for the (at most 8) files that come back")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument(
        "--seed", type=int, default=20261207, help="random weights and prompt token ids (workloads are files)"
    )
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument(
        "--extra", default="", help="comma-separated catalog models to calibrate too, time permitting (e.g. flux.1-dev)"
    )
    args = parser.parse_args(argv)
    phases = tuple(p for p in args.phases.split(",") if p)
    bad = [p for p in phases if p not in PHASES]
    if bad or args.budget_s <= 0:
        print(
            f"calibration.device: error: --phases takes {', '.join(PHASES)}; --budget-s > 0 (got {bad or args.budget_s})",
            file=sys.stderr,
        )
        return 2
    try:
        run_kit(
            args.target,
            args.budget_s,
            args.out,
            args.work,
            args.seed,
            phases,
            tuple(m for m in args.extra.split(",") if m),
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"calibration.device: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

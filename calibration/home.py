"""At home: turn what the device kit brought back into profiles and a validation report.

    python -m calibration.home FETCHED_DIR -o OUT_DIR [--profiles profiles/h100]
    python -m calibration.home --make-workloads        # (re)write calibration/workloads/*.csv

The protocol is the fidelity one, **calibrate -> freeze -> predict**, on data split on the
device before any scored run started:

1. **Calibrate.** Fit each model's profile on its grid (``calibration.fit``); for the LLM,
   refit the whole-step composition on the steps of the capacity and staircase bursts
   (``validate.refit_in_loop``). Both bursts ran before the first scored run.
2. **Freeze.** Write ``frozen-<model>.yaml`` and its sha256.
3. **Predict.** Simulate each scored run's workload (the file the kit wrote before that run
   started: arrival times scaled to the planned rate, lengths or image sizes) with the frozen
   profile and the engine's knobs, and compare every run with the real one: p50/p90/p99 of
   TTFT, TPOT and E2E and throughput for the LLM; E2E and queue wait for diffusion; each run's
   error and the worst. The step and batch replay (every logged step predicted from its shape)
   and the step path's host time (the per-step fixed cost, measured) are reported beside.

Nothing of the scored runs enters a prediction; a run the kit cut at its deadline is compared
over the requests that finished in both, and flagged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration.device import LOADS, TARGETS, WORKLOADS, Target, unpack

WORKLOAD_SEED = 20261207
"""Seed of the shipped device workloads; no development run used it."""


# ------------------------------------------------------------------------------ workloads


def _lengths(n: int, rng: np.random.Generator, t: Target, trace: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output lengths of ``n`` requests from the conversation sample."""
    from calibration.validate import trace_lengths

    if t.name == "tiny":
        return trace_lengths(n, rng, quick=True)
    fits = trace[trace["ContextTokens"] + trace["GeneratedTokens"] <= t.max_model_len]
    idx = rng.integers(0, len(fits), n)
    return fits["ContextTokens"].to_numpy()[idx], fits["GeneratedTokens"].to_numpy()[idx]


def make_workloads(seed: int = WORKLOAD_SEED, folder: Path = WORKLOADS) -> list[Path]:
    """Write every target's LLM and diffusion workload files.

    LLM: lengths drawn from the Azure LLM 2023 conversation sample (for the GPU target, the
    requests whose prompt + output fit the engine's 4096-token model length; for tiny, scaled
    as ``servesim validate --quick`` scales them); parts ``capacity`` (all at once), ``staircase``
    (outputs evenly spaced from 2 to the 90th percentile, all at once) and ``run-1..3`` (Poisson
    arrivals at one request per second, ``unit_arrival_s``). Diffusion: the target's image size
    and steps, parts ``capacity`` and ``run-1..3``."""
    from sim.workload.traces import sample_path

    folder.mkdir(parents=True, exist_ok=True)
    trace = pd.read_csv(sample_path("azure_conv_2023.csv"))
    written = []
    for name, t in TARGETS.items():
        rng = np.random.default_rng(np.random.SeedSequence([seed, sum(map(ord, name))]))
        sizes = (
            {"capacity": 256, "staircase": 64, "run": 1500}
            if name == "gpu"
            else {"capacity": 16, "staircase": 8, "run": 300}
        )
        parts = []
        rid = 0

        for part in ("capacity", "staircase", "run-1", "run-2", "run-3"):
            n = sizes[part.split("-")[0]]
            prompt, output = _lengths(n, rng, t, trace)
            if part == "staircase":
                top = np.percentile(_lengths(1000, rng, t, trace)[1], 90)
                output = rng.permutation(np.linspace(2, max(2.0, top), n).round().astype(int))
            unit = np.zeros(n) if not part.startswith("run") else np.cumsum(rng.exponential(1.0, n))
            parts.append(pd.DataFrame({
                "part": part, "request_id": np.arange(rid, rid + n), "unit_arrival_s": unit.round(6),
                "prompt_tokens": prompt.astype(int), "output_tokens": np.maximum(output, 1).astype(int),
            }))  # fmt: skip
            rid += n
        path = folder / f"{name}-llm.csv"
        pd.concat(parts, ignore_index=True).to_csv(path, index=False)
        written.append(path)

        w, h, steps = t.image
        img = {"capacity": 16 if name == "gpu" else 8, "run": 400 if name == "gpu" else 120}
        parts, rid = [], 0
        for part in ("capacity", "run-1", "run-2", "run-3"):
            n = img[part.split("-")[0]]
            unit = np.zeros(n) if part == "capacity" else np.cumsum(rng.exponential(1.0, n))
            parts.append(pd.DataFrame({
                "part": part, "request_id": np.arange(rid, rid + n), "unit_arrival_s": unit.round(6),
                "width": w, "height": h, "steps": steps,
            }))  # fmt: skip
            rid += n
        path = folder / f"{name}-diffusion.csv"
        pd.concat(parts, ignore_index=True).to_csv(path, index=False)
        written.append(path)
    return written


# ------------------------------------------------------------------------------ home analysis


def _settings(t: Target, seed: int):
    from calibration.validate import LLMSettings

    return LLMSettings(
        model=t.llm, device=t.device, dtype=t.dtype, seed=seed, max_num_seqs=t.max_num_seqs,
        max_num_batched_tokens=t.max_num_batched_tokens, num_kv_blocks=t.num_kv_blocks, quick=t.name == "tiny",
    )  # fmt: skip


def host_time(steps: pd.DataFrame) -> dict:
    """The step path's host time, measured: per-step medians of scheduling, input preparation and
    launching, and the fixed part (the median over decode-only steps of at most 4 sequences,
    where the device has least to do)."""
    host = steps["schedule_s"] + steps["prepare_s"] + steps["launch_s"]
    small = steps[(steps["num_prefill_seqs"] == 0) & (steps["num_seqs"] <= 4)]
    out = {
        "steps": len(steps),
        "schedule_s_median": float(steps["schedule_s"].median()),
        "prepare_s_median": float(steps["prepare_s"].median()),
        "launch_s_median": float(steps["launch_s"].median()),
        "host_s_median": float(host.median()),
        "host_share_median": float((host / (steps["end_s"] - steps["start_s"])).median()),
        "small_decode_steps": len(small),
        "small_decode_host_s_median": float((small["schedule_s"] + small["prepare_s"] + small["launch_s"]).median())
        if len(small)
        else float("nan"),
    }
    if steps["device_s"].notna().any():
        out["device_s_median"] = float(steps["device_s"].median())
        out["small_decode_device_s_median"] = float(small["device_s"].median()) if len(small) else float("nan")
    out["graph_steps_share"] = float((steps["bucket"] > 0).mean())
    return out


def _compare_cut(case: dict, real: pd.DataFrame, sim: pd.DataFrame, metrics: tuple[str, ...]):
    """``validate.compare_runs`` over the requests that finished in the real run (a run cut at its
    deadline leaves its last requests unfinished; the simulated ones are compared likewise)."""
    from calibration.validate import compare_runs

    done = real["finish_s"].notna() if "rejected" not in real else real["finish_s"].notna() | real["rejected"]
    ids = set(real.loc[done, "request_id"])
    sim = sim[sim["request_id"].isin(ids)] if "request_id" in sim else sim
    return compare_runs(case, [real[real["request_id"].isin(ids)]], [sim], metrics)


def _protocol(frozen: Path, sha: str, calibration: str) -> dict:
    """What a report says of its calibrate -> freeze -> predict protocol."""
    return {
        "frozen_profile": frozen.name,
        "frozen_profile_sha256": sha,
        "calibration": f"{calibration}, run on the device before its first scored run",
        "predictions": "simulated at home from the frozen profile and each run's workload file, which the kit wrote before the run",
        "workload_seed": WORKLOAD_SEED,
    }


def analyse_llm(raw_dir: Path, t: Target, out: Path, seed: int, profiles: Path | None) -> dict:
    """Fit, freeze, predict and compare the LLM runs the kit brought back."""
    from calibration.fit import fit_folder
    from calibration.validate import (
        METRICS,
        finish_report,
        refit_in_loop,
        report_summary,
        sha256_of,
        simulate_llm,
        step_replay,
    )

    grid = raw_dir / "llm-grid" / t.llm
    serve = raw_dir / "llm-serve"
    out.mkdir(parents=True, exist_ok=True)
    target = (profiles or out) / f"{t.llm}-{t.dtype}-tp1.yaml"
    profile = fit_folder(grid, target)
    cal = pd.concat(
        [pd.read_csv(serve / f"{name}_steps.csv").assign(burst=k) for k, name in enumerate(("capacity", "staircase"))],
        ignore_index=True,
    )
    frozen = out / "frozen-profile.yaml"
    _, composition = refit_in_loop(
        profile, cal, frozen, "the capacity and staircase bursts on the device, before any scored run"
    )
    sha = sha256_of(frozen)
    plan = json.loads((serve / "plan.json").read_text())
    s = _settings(t, seed)
    rows, per_run, cdfs, replays, hosts = [], [], {}, [], []
    from calibration.engine.llm import WorkItem

    for p in plan["runs"]:
        name = p["run"]
        if not (serve / f"{name}_requests.csv").is_file():
            continue
        frame = pd.read_csv(serve / f"{name}_workload.csv")
        workload = [
            WorkItem(int(r.request_id), float(r.arrival_s), int(r.prompt_tokens), int(r.output_tokens))
            for r in frame.itertuples()
        ]
        folder = out / name
        folder.mkdir(exist_ok=True)
        predicted = simulate_llm(workload, s, frozen, folder)
        predicted["request_id"] = [w.request_id for w in workload]  # the simulator numbers them in trace order
        predicted.to_csv(folder / "predicted_requests.csv", index=False)
        real = pd.read_csv(serve / f"{name}_requests.csv")
        steps = pd.read_csv(serve / f"{name}_steps.csv")
        case = {"load": p["load"]}
        got, each = _compare_cut(case, real, predicted, METRICS)
        rows += got
        per_run += each
        cdfs[f"load {p['load']:.0%}"] = ([real], [predicted])
        replays.append(step_replay(steps, frozen).assign(load=p["load"]))
        hosts.append({"run": name, "load": p["load"], "cut": p.get("cut", False), **host_time(steps)})
    replay = pd.concat(replays, ignore_index=True)
    replay.to_csv(out / "step_replay.csv", index=False)
    summary = report_summary(s, t.dtype, profile, plan["capacity_req_s"], replay, "steps")
    summary["protocol"] = _protocol(frozen, sha, "kernel grid, the capacity burst and the staircase burst")
    summary["composition"] = composition
    summary["host_time"] = hosts
    summary["runs"] = plan["runs"]
    return finish_report(out, rows, per_run, summary, cdfs, METRICS)


def _alibaba_trace(frame: pd.DataFrame, path: Path) -> Path:
    """A run's image arrivals as an ``alibaba``-format trace (what the simulator replays)."""
    base = pd.Timestamp("2026-01-01 00:00:00")
    pd.DataFrame({
        "gmt_create": [(base + pd.to_timedelta(a, unit="s")).strftime("%Y-%m-%d %H:%M:%S.%f") for a in frame["arrival_s"]],
        "predict_type": "txt2img", "predict_status": "SUCCEED",
        "num_inference_steps": frame["steps"].astype(int), "num_images_per_prompt": 1,
    }).to_csv(path, index=False)  # fmt: skip
    return path


def simulate_images(frame: pd.DataFrame, t: Target, profile: Path, folder: Path, seed: int) -> pd.DataFrame:
    """The simulator's static-batching replica serving a run's arrivals, one image size."""
    from calibration.validate import on_workload_clock
    from sim.config import parse_scenario
    from sim.run import run_scenario

    w, h, _ = t.image
    trace = _alibaba_trace(frame, folder / "workload_alibaba.csv")
    scenario = {
        "name": f"device-{t.diffusion}", "seed": seed, "replications": 1, "warmup_s": 0,
        "pools": [{
            "name": "images", "model": t.diffusion, "gpu": "l4",
            "batching": {"policy": "static", "max_batch_size": t.max_batch_size, "max_wait_s": t.max_wait_s, "shapes": "bucket"},
            "cost_model": {"kind": "profile", "path": str(profile.resolve())},
        }],
        "classes": [{"name": "img", "pool": "images", "trace": {"path": str(trace.resolve()), "format": "alibaba"}, "image": {"width": w, "height": h}}],
    }  # fmt: skip
    sim = run_scenario(parse_scenario(scenario)).requests.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    sim = on_workload_clock(sim, float(frame["arrival_s"].min()))
    sim["request_id"] = frame.sort_values("arrival_s", kind="stable")["request_id"].to_numpy()[: len(sim)]
    return sim


def analyse_diffusion(raw_dir: Path, t: Target, out: Path, seed: int, profiles: Path | None) -> dict:
    from calibration.diffusion_configs import diffusion_config
    from calibration.fit import fit_folder
    from calibration.validate import (
        IMAGE_METRICS,
        DiffusionSettings,
        batch_replay,
        finish_report,
        report_summary,
        sha256_of,
    )

    serve = raw_dir / "diffusion-serve"
    out.mkdir(parents=True, exist_ok=True)
    profile = fit_folder(
        raw_dir / "diffusion-grid" / t.diffusion, (profiles or out) / f"{t.diffusion}-{t.dtype}-tp1.yaml"
    )
    sha = sha256_of(profile)
    plan = json.loads((serve / "plan.json").read_text())
    per_image = 2 if diffusion_config(t.diffusion).cfg else 1
    rows, per_run, cdfs, replays = [], [], {}, []
    for p in plan["runs"]:
        name = p["run"]
        if not (serve / f"{name}_requests.csv").is_file():
            continue
        frame = pd.read_csv(serve / f"{name}_workload.csv")
        folder = out / name
        folder.mkdir(exist_ok=True)
        predicted = simulate_images(frame, t, profile, folder, seed)
        predicted.to_csv(folder / "predicted_requests.csv", index=False)
        real = pd.read_csv(serve / f"{name}_requests.csv")
        got, each = _compare_cut({"load": p["load"]}, real, predicted, IMAGE_METRICS)
        rows += got
        per_run += each
        cdfs[f"load {p['load']:.0%}"] = ([real], [predicted])
        replays.append(
            batch_replay(pd.read_csv(serve / f"{name}_batches.csv"), profile, per_image).assign(load=p["load"])
        )
    replay = pd.concat(replays, ignore_index=True)
    replay.to_csv(out / "batch_replay.csv", index=False)
    settings = DiffusionSettings(model=t.diffusion, device=t.device, dtype=t.dtype, loads=LOADS, repeats=1, seed=seed,
                                 shapes=(t.image[:2],), steps=t.image[2], max_batch_size=t.max_batch_size, max_waits=(t.max_wait_s,))  # fmt: skip
    summary = report_summary(settings, t.dtype, profile, plan["capacity_req_s"], replay, "batches")
    summary["protocol"] = _protocol(profile, sha, "kernel grid and the capacity burst")
    summary["runs"] = plan["runs"]
    return finish_report(out, rows, per_run, summary, cdfs, IMAGE_METRICS)


def analyse(fetched: Path, out: Path, profiles: Path | None = None) -> dict:
    """Unpack the kit's files, analyse both shapes, write ``out/report.md`` and ``summary.json``."""
    device = json.loads((fetched / "device.json").read_text())
    t = TARGETS[device["target"]]
    seed = int(device["seed"])
    raw = unpack(fetched, out / "raw")
    result: dict = {"device": device, "llm": None, "diffusion": None}
    phases = device.get("phases", {})
    if phases.get("llm-grid", {}).get("status") == "done" and (raw / "llm-serve" / "plan.json").is_file():
        result["llm"] = analyse_llm(raw, t, out / "llm", seed, profiles)
    if phases.get("diffusion-grid", {}).get("status") == "done" and (raw / "diffusion-serve" / "plan.json").is_file():
        result["diffusion"] = analyse_diffusion(raw, t, out / "diffusion", seed, profiles)
    extra = {}
    for folder in sorted((raw / "extra-grid").glob("*")) if (raw / "extra-grid").is_dir() else []:
        from calibration.fit import fit_folder

        try:
            meta = json.loads((folder / "meta.json").read_text())
            path = fit_folder(folder, (profiles or out / "profiles") / f"{folder.name}-{meta['dtype']}-tp1.yaml")
            extra[folder.name] = {"profile": str(path), "cut_short": meta.get("cut_short", {})}
        except (FileNotFoundError, ValueError, KeyError) as exc:
            extra[folder.name] = {"error": f"{type(exc).__name__}: {exc}"}
    result["extra"] = extra
    write_report(result, out / "report.md")
    brief = {
        k: v if k == "device" or v is None else {x: y for x, y in v.items() if x not in ("table", "per_run")}
        for k, v in result.items()
    }
    (out / "summary.json").write_text(json.dumps(brief, indent=2, default=str))
    return result


def _fmt_err(x) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:+.1%}"


def write_report(result: dict, path: Path) -> None:
    dev = result["device"]
    d = dev.get("device", {}).get("device", {})
    lines = [
        f"# Device run: {d.get('name', dev.get('target'))}",
        "",
        f"Kit target `{dev['target']}`, budget {dev['budget_s']:.0f} s, took {dev.get('elapsed_s', float('nan')):.0f} s; "
        f"torch {dev.get('device', {}).get('torch')}, seed {dev['seed']}.",
        "",
        "| phase | status | seconds |",
        "| --- | --- | --- |",
        *(f"| {p} | {s['status']} | {s['seconds']:.1f} |" for p, s in dev.get("phases", {}).items()),
        "",
    ]
    for shape in ("llm", "diffusion"):
        s = result.get(shape)
        if not s:
            lines += [f"## {shape.upper()}: no complete calibration and runs came back", ""]
            continue
        lines += [
            f"## {s['model']}",
            "",
            f"Capacity {s['capacity_req_s']:.3f} req/s (burst, before the scored runs); "
            f"frozen profile sha256 `{s['protocol']['frozen_profile_sha256'][:12]}`.",
            "",
        ]
        lines += ["| case | metric | measured | predicted | error |", "| --- | --- | --- | --- | --- |"]
        for r in s["table"].itertuples():
            lines.append(
                f"| load {r.load:.0%} | {r.metric} | {r.measured:.4g} | {r.predicted:.4g} | {_fmt_err(r.error)} |"
            )
        lines += [
            "",
            "Largest |error| per metric over the runs: "
            + ", ".join(f"{m} {h['max_abs_run_error']:.1%}" for m, h in s["headline"].items())
            + f". Details: `{shape}/report.md`.",
            "",
        ]
        for h in s.get("host_time", []):
            lines.append(
                f"- {h['run']} (load {h['load']:.0%}{', cut at deadline' if h['cut'] else ''}): host time per step "
                f"median {h['host_s_median'] * 1e3:.2f} ms ({h['host_share_median']:.0%} of the step), "
                f"small decode steps {h['small_decode_host_s_median'] * 1e3:.2f} ms; graph steps {h['graph_steps_share']:.0%}"
            )
        lines.append("")
    for model, e in (result.get("extra") or {}).items():
        lines.append(
            f"- extra model {model}: " + (f"profile `{Path(e['profile']).name}`" if "profile" in e else e["error"])
        )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calibration.home", description=__doc__.split("\n\n")[0])
    parser.add_argument("fetched", nargs="?", type=Path, help="the folder the device kit's files came back to")
    parser.add_argument("-o", "--output", type=Path, help="report folder")
    parser.add_argument("--profiles", type=Path, help="write the fitted profiles here (default: the report folder)")
    parser.add_argument("--make-workloads", action="store_true", help="(re)write the shipped workload files")
    args = parser.parse_args(argv)
    if args.make_workloads:
        for path in make_workloads():
            print(f"wrote {path}")
        return 0
    if args.fetched is None or args.output is None:
        parser.print_usage(sys.stderr)
        print("calibration.home: error: give the fetched folder and -o OUT_DIR", file=sys.stderr)
        return 2
    if not (args.fetched / "device.json").is_file():
        print(
            f"calibration.home: error: {args.fetched}: no device.json here (the device kit's output folder)",
            file=sys.stderr,
        )
        return 2
    analyse(args.fetched, args.output, args.profiles)
    print(f"wrote {args.output / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``servesim bench``: simulated requests per wall-second and peak memory.

The reference workload (issue "simulator core"): Llama-2-7B on one H100 replica, TP 1,
roofline costs, max_num_seqs 256, max_num_batched_tokens 4096, Poisson 7 req/s, prompt 1024 /
output 211 tokens fixed, at 20,000 and 200,000 requests; and the Azure LLM 2023 conversation
trace replayed at 7 req/s. Each case runs in a fresh child process so that its peak RSS is its
own; the simulation's wall time excludes imports and writing outputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REFERENCE = {
    "name": "bench-reference",
    "seed": 1,
    "pools": [
        {
            "name": "llm",
            "model": "llama-2-7b",
            "gpu": "h100-sxm",
            "replicas": 1,
            "tensor_parallel_size": 1,
            "engine": {"max_num_seqs": 256, "max_num_batched_tokens": 4096},
            "cost_model": {"kind": "roofline"},
        }
    ],
    "classes": [
        {
            "name": "fixed",
            "pool": "llm",
            "arrival": {"process": "poisson", "rate": 7.0},
            "prompt_tokens": {"dist": "fixed", "value": 1024},
            "output_tokens": {"dist": "fixed", "value": 211},
        }
    ],
}


def scenario_for(case: str, requests: int) -> dict:
    raw = json.loads(json.dumps(REFERENCE))
    raw["num_requests"] = requests
    if case == "azure-conv":
        raw["name"] = "bench-azure-conv"
        raw["classes"][0] = {
            "name": "conv",
            "pool": "llm",
            "trace": {"path": "builtin:azure_conv_2023.csv", "format": "azure", "target_rate": 7.0},
        }
    return raw


def measure_case(case: str, requests: int, out: str) -> None:
    """Run a case in this process and write its figures to the JSON file ``out`` (the child's
    side of ``run_case``: a fresh process, so that its peak RSS is its own)."""
    import resource
    import time

    from sim.config import parse_scenario
    from sim.run import run_scenario

    scenario = parse_scenario(scenario_for(case, requests), source="bench")
    t0 = time.perf_counter()
    result = run_scenario(scenario, Path("."))
    wall = time.perf_counter() - t0
    sim_wall = result.wall_s
    n = len(result.requests)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    st = result.summary["classes"][scenario.classes[0].name]
    Path(out).write_text(
        json.dumps(
            {
                "case": case,
                "requests": n,
                "finished": result.summary["conservation"]["finished"],
                "engine_steps": result.summary["simulation"]["engine_steps"],
                "simulated_s": result.summary["simulation"]["simulated_s"],
                "sim_wall_s": sim_wall,
                "total_wall_s": wall,
                "req_per_wall_s": n / sim_wall,
                "peak_rss_mb": rss_mb,
                "ttft_p99_s": st["ttft_s_p99"]["mean"],
                "tpot_p50_s": st["tpot_s_p50"]["mean"],
                "e2e_p50_s": st["e2e_s_p50"]["mean"],
            }
        )
    )


def run_case(case: str, n: int) -> dict:
    """One run of a case in a fresh process: its requests, steps, wall times, peak RSS and a
    few latencies. Raises RuntimeError (with the child's last line) if it fails."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "case.json")
        code = f"from sim.bench import measure_case; measure_case({case!r}, {n}, {out!r})"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode != 0:
            last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output"
            raise RuntimeError(f"bench case {case} ({n} requests) failed: {last}")
        return json.loads(Path(out).read_text())


def cases(requests: list[int] | None = None, skip_trace: bool = False) -> list[tuple[str, int]]:
    """The cases to run: the reference workload at each request count (default 20,000 and
    200,000), then the Azure conversation trace (unless ``skip_trace``)."""
    out = [("reference", n) for n in (requests or [20_000, 200_000])]
    if not skip_trace:
        out.append(("azure-conv", 19_366))
    return out


def bench_table(repeat: int):
    """The empty result table (``sim.console.Table``); ``bench_row`` gives each case's row."""
    from sim.console import Table, term

    table = Table(
        title=f"servesim bench (Llama-2-7B, 1 x H100, roofline, Poisson 7 req/s); median {term('[min-max]')} of {repeat} runs"
    )
    for col in (
        "case",
        "requests",
        "engine steps",
        "sim wall s",
        "req / wall s",
        "peak RSS MB",
        "TTFT p99 ms",
        "TPOT p50 ms",
        "E2E p50 s",
    ):
        table.add_column(col, justify="right")
    return table


def bench_row(case: str, runs: list[dict]) -> list[str]:
    """A case's row: medians and ranges over its runs. Timing on a shared machine moves by tens
    of per cent between runs: read the range, not one number."""
    import statistics

    r = runs[0]
    rates = [x["req_per_wall_s"] for x in runs]
    walls = [x["sim_wall_s"] for x in runs]
    return [
        case, f"{r['requests']:,}", f"{r['engine_steps']:,}",
        f"{statistics.median(walls):.2f} [{min(walls):.2f}-{max(walls):.2f}]",
        f"{statistics.median(rates):,.0f} [{min(rates):,.0f}-{max(rates):,.0f}]",
        f"{max(x['peak_rss_mb'] for x in runs):,.0f}",
        f"{r['ttft_p99_s'] * 1e3:.1f}", f"{r['tpot_p50_s'] * 1e3:.2f}", f"{r['e2e_p50_s']:.2f}",
    ]  # fmt: skip


PEER_NOTE = (
    "Peer reference: Vidur runs ~950 simulated requests per wall-second on this workload on these 2-core machines."
)

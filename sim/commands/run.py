"""``servesim run``: simulate a scenario, print its summary, write its files (``-o``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sim.commands.args import add_scenario_arguments, scenario_overrides
from sim.console import fmt_estimate, stdout_console


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("run", help="simulate a scenario and summarise it")
    add_scenario_arguments(p)
    p.add_argument("-o", "--output", type=Path, help="directory for parquet, summary.json and plots")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)
    return p


def run(args) -> int:
    from rich.console import Console

    from sim.config import load_scenario
    from sim.run import check_output_dir, expected_arrivals, run_scenario, write_outputs

    scenario, base_dir = load_scenario(args.scenario, scenario_overrides(args))
    if args.output is not None:
        check_output_dir(args.output)  # before simulating: a bad -o must not cost the run
    console = Console(stderr=True)
    total = expected_arrivals(scenario)
    if args.quiet:
        result = run_scenario(scenario, base_dir)
    else:
        progress = _RunProgress(console, total)
        try:
            result = run_scenario(scenario, base_dir, on_arrival=progress.tick)
        finally:
            progress.stop()
    print_summary(result, stdout_console())
    if args.output is not None:
        paths = write_outputs(result, args.output, plots=not args.no_plots)
        stdout_console().print(f"wrote {len(paths)} files to {args.output}")
    return 0


class _RunProgress:
    """Progress of a run that lasts: after 2 s a bar on stderr in a terminal, else a line on
    stderr every 5 s (``Ticker``); a short run shows nothing."""

    def __init__(self, console, total: int | None):
        import time

        self.console, self.total, self.count = console, total, 0
        self.t0, self.clock = time.perf_counter(), time.perf_counter
        self.bar = self.task = self.ticker = None

    def tick(self) -> None:
        self.count += 1
        if self.count % 2000:
            return
        if self.clock() - self.t0 < 2.0 and self.bar is None and self.ticker is None:
            return
        of = f" of ~{self.total:,}" if self.total else ""
        if not self.console.is_terminal:
            if self.ticker is None:
                from sim.console import Ticker

                self.ticker = Ticker("run", start=self.t0)
            self.ticker(f"{self.count:,}{of} arrivals")
            return
        if self.bar is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("simulating"),
                BarColumn(),
                TextColumn("{task.completed:,}" + ("/{task.total:,}" if self.total else "") + " arrivals"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("run", total=self.total)
        self.bar.update(self.task, completed=min(self.count, self.total) if self.total else self.count)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.ticker is not None:
            self.ticker.done(f"{self.count:,} arrivals simulated")


def _pool_line(name: str, pool: dict) -> str:
    from sim.console import term

    head = (
        f"  pool {term(name)}: {pool['replicas']} x {pool['model']} on {pool['gpu']} TP{pool['tensor_parallel_size']} "
    )
    tail = f"busy {pool['busy_fraction']:.0%}, mean batch {pool['mean_batch']:.1f}, "
    if "batching" in pool:
        from sim import catalog

        unit = "videos" if catalog.get_diffusion_model(pool["model"]).kind == "video" else "images"
        return (
            head + f"({pool['batching']} batches of <= {pool['max_batch_size']} {unit}), "
            f"{pool['memory_budget_gib']:.0f} GiB for latents/replica, "
            + tail
            + f"mean memory use {pool['mean_memory_util']:.0%}, ${pool['price_per_gpu_hour']:.2f}/GPU-h"
        )
    return (
        head
        + f"({pool['scheduler']}), {pool['kv_capacity_tokens']:,} KV tokens/replica, "
        + tail
        + f"mean KV use {pool['mean_kv_util']:.0%}, ${pool['price_per_gpu_hour']:.2f}/GPU-h"
    )


ROWS = {
    "text": (
        ("ttft_s", "TTFT (ms)", 1e3),
        ("tpot_s", "TPOT (ms)", 1e3),
        ("max_itl_s", "max ITL (ms)", 1e3),
        ("e2e_s", "E2E (s)", 1.0),
        ("queue_s", "queue (ms)", 1e3),
    ),
    "image": (
        ("e2e_s", "E2E (s)", 1.0),
        ("queue_s", "queue + forming (s)", 1.0),
        ("forming_s", "batch forming (s)", 1.0),
        ("preview_s", "first preview (s)", 1.0),
    ),
    "pipeline": (("e2e_s", "E2E (s)", 1.0), ("queue_s", "first-stage queue (s)", 1.0)),
    "mixed": (("e2e_s", "E2E (s)", 1.0), ("queue_s", "queue (s)", 1.0)),
}


def _growth_text(growth: float | None) -> str:
    if growth is None or growth != growth or growth == float("inf"):
        return "requests were still queued when the run stopped"
    return f"the queue wait grows {growth:.2g} s per second, arrivals ~{growth:.0%} above what it serves"


def print_summary(result, console) -> None:
    from rich.table import Table

    from sim.console import WIDE, term, thin_percentiles, wide_note

    s = result.summary
    wide = False

    def show(*parts) -> None:
        nonlocal wide
        console.print(*parts)
        wide = wide or any(
            WIDE in (p if isinstance(p, str) else "".join(str(c) for col in p.columns for c in col.cells))
            for p in parts
        )

    kinds = {c.name: c.kind for c in result.scenario.classes}
    uniform = set(kinds.values())
    kinds["all"] = uniform.pop() if len(uniform) == 1 else "mixed"
    console.print(
        f"[bold]{term(s['scenario'])}[/bold]: {s['replications']} replication(s), seed {s['seed']}, warm-up {s['warmup_s']:g} s"
    )
    for name, pool in s["pools"].items():
        console.print(_pool_line(name, pool))
    from sim.catalog import assumed_efficiency_note

    for gpu in dict.fromkeys(pool["gpu"] for pool in s["pools"].values() if pool.get("efficiency_assumed")):
        console.print(f"  [yellow]note:[/yellow] {assumed_efficiency_note(gpu)}", highlight=False)
    # a diffusion class on a video model makes videos: say so in its labels
    from sim import catalog

    videos = set()
    for c in result.scenario.classes:
        pool = result.scenario.pool(c.pool) if c.pool else None
        if c.kind == "image" and pool is not None and catalog.get_diffusion_model(pool.model).kind == "video":
            videos.add(c.name)
    for cls, st in s["classes"].items():
        kind = kinds[cls]
        unit = "video" if cls in videos else "image"
        # the title stays short (it wraps at the table's width); why is said under the table
        overloaded = "  [red](overloaded)[/red]" if st["overloaded"] else ""
        table = Table(
            title=f"class {term(cls)} ({'video' if cls in videos else kind}){overloaded}", title_justify="left"
        )
        table.add_column("metric")
        for p in ("p50", "p90", "p99", "p99.9", "mean"):
            table.add_column(p, justify="right")
        for metric, label, scale in ROWS.get(kind, ROWS["text"]):
            if f"{metric}_p50" in st:
                table.add_row(
                    label, *(fmt_estimate(st[f"{metric}_{p}"], scale) for p in ("p50", "p90", "p99", "p99.9", "mean"))
                )
        show(table)
        if st["overloaded"]:
            console.print(f"  [red]overloaded:[/red] {_growth_text(st['queue_growth']['mean'])}", highlight=False)
        per_rep = st["finished"]["mean"]
        thin = thin_percentiles(per_rep) if per_rep == per_rep else []
        if thin:
            console.print(
                f"  [yellow]note:[/yellow] {', '.join(thin)} rest{'s' if len(thin) == 1 else ''} on fewer than 10 requests per replication "
                f"beyond {'it' if len(thin) == 1 else 'them'} ({per_rep:,.0f} finished per replication): lengthen duration_s for the tail",
                highlight=False,
            )
        slo = s["slo_met"].get(cls)
        if kind == "image":
            rate = f"{fmt_estimate(st['images_per_s'])} {unit}s/s" + (
                f", {fmt_estimate(st['video_seconds_per_s'])} video-s/s" if "video_seconds_per_s" in st else ""
            )
        elif kind == "text":
            rate = f"{fmt_estimate(st['output_tokens_per_s'])} output tok/s"
        else:
            rate = "all kinds" if kind == "mixed" else "pipelines"
        show(
            f"  throughput {fmt_estimate(st['throughput_rps'])} req/s, {rate}; "
            + (
                f"goodput {fmt_estimate(st['goodput_rps'])} req/s (SLO attainment {fmt_estimate(st['slo_attainment'], fraction=True)})"
                if slo is not None
                else f"completed {fmt_estimate(st['slo_attainment'], fraction=True)} of arrivals"
            )
            + (
                f", rejected {fmt_estimate(st['rejected_fraction'], 100, fraction=True)} %"
                if st["rejected_fraction"]["mean"]
                else ""
            )
            + (
                f", failed {fmt_estimate(st['failed_fraction'], 100, fraction=True)} %"
                if st["failed_fraction"]["mean"]
                else ""
            )
            + (
                f", retries/request {fmt_estimate(st['retries_per_request'])}"
                if st["retries_per_request"]["mean"]
                else ""
            )
            + ("" if slo is None else f"; SLO {'met' if slo else '[red]missed[/red]'}")
        )
        if kind == "text":
            show(
                f"  cost ${fmt_estimate(st['cost_per_1m_output_tokens_usd'])} per 1M output tokens (fleet GPU-hours x price); "
                f"${fmt_estimate(st['request_cost_usd_mean'], 1e3)} per 1k requests attributed; "
                f"preemptions/request {fmt_estimate(st['preemptions_per_request'])}; prefix-cache hit {fmt_estimate(st['prefix_hit_rate'], fraction=True)}"
            )
        elif kind == "image":
            show(
                f"  cost ${fmt_estimate(st['cost_per_image_usd'], 1e3)} per 1k {unit}s (fleet GPU-hours x price)"
                + (
                    f", ${fmt_estimate(st['cost_per_video_second_usd'])} per video second"
                    if "cost_per_video_second_usd" in st
                    else ""
                )
                + f"; ${fmt_estimate(st['request_cost_usd_mean'], 1e3)} per 1k requests attributed; "
                f"denoising steps computed per {unit} {fmt_estimate(st['steps_computed_per_image'])}"
            )
        elif kind == "pipeline":
            stages = [
                k.removeprefix("stage_").removesuffix("_latency_share") for k in st if k.endswith("_latency_share")
            ]
            shares = ", ".join(
                f"{term(name)} {fmt_estimate(st[f'stage_{name}_e2e_s_mean'])} s ({fmt_estimate(st[f'stage_{name}_latency_share'], 100, 2, fraction=True)} % of time, "
                f"{fmt_estimate(st[f'stage_{name}_cost_share'], 100, 2, fraction=True)} % of cost)"
                for name in stages
            )
            show(f"  ${fmt_estimate(st['request_cost_usd_mean'], 1e3)} per 1k pipelines attributed; stages: {shares}")
    c = s["conservation"]
    sim = s["simulation"]
    console.print(
        f"  requests: {c['arrived']:,} arrived = {c['finished']:,} finished + {c['rejected']:,} rejected + {c['failed']:,} failed + {c['in_flight']:,} in flight; "
        f"simulated {sim['simulated_s']:,.0f} s in {sim['wall_s']:.2f} s wall ({sim['requests'] / max(sim['wall_s'], 1e-9):,.0f} req/s)"
    )
    if wide:
        console.print(f"  [yellow]{wide_note(s['replications'])}[/yellow]", highlight=False)

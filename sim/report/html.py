"""The HTML report: one self-contained page for a run, price, sweep or plan output directory.

    servesim report RESULTS_DIR [-o FILE]

    from sim.report.html import write_report
    write_report("results/quickstart")      # -> results/quickstart/report.html

The page shows what the directory holds (one directory may hold several of these):

* a run (``summary.json``; ``scenario.json``, ``requests.parquet``, ``timeseries.parquet``):
  per-class and per-pool tables, latency CDFs with the SLO targets, replica state over time,
  request conservation, the resolved scenario;
* a price study (``price.json``): the tables ``servesim price`` prints, and margin against load
  and steps when it holds a sensitivity study;
* a sweep (``sweep.json``, ``results.jsonl``): the table ``servesim sweep`` prints, and tail
  latency against achieved throughput with the SLO targets;
* a plan (``plan.json``, ``fleet.yaml``): the answer and its SLO checks, the cost frontier, the
  candidates, and each candidate's metrics against its replica count.

The page needs no network: plots are PNGs (matplotlib, Agg) embedded as base64 ``data:`` URIs,
the stylesheet is inline, and there are no scripts. Only the page itself is written.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sim import __version__
from sim.errors import ConfigError

REPORT_FILE = "report.html"
DPI = 96
MAX_STATE_REPLICAS = 4
"""Replicas per pool in the replica-state plots (the first ones of the first replication)."""
MAX_CURVES = 8
"""Candidates per pool in a plan's replicas-vs-metric plot (chosen and feasible ones first)."""
INPUTS = {
    "run": ("summary.json", "scenario.json", "requests.parquet", "timeseries.parquet"),
    "price": ("price.json",),
    "sweep": ("sweep.json", "results.jsonl"),
    "plan": ("plan.json", "fleet.yaml", "evaluations.jsonl"),
}
"""The files each kind of output directory holds; the first of a kind's files marks it (a
sweep: either file)."""
LATENCY = {"ttft_s": ("TTFT", 1e3, "ms"), "tpot_s": ("TPOT", 1e3, "ms"), "e2e_s": ("E2E", 1.0, "s")}
"""Latency metric -> label, scale and unit in tables."""


# --------------------------------------------------------------------------- the command


def write_report(results_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the report page for ``results_dir`` to ``out`` (default ``results_dir/report.html``)
    and return its path. Bad input (no such directory, no servesim results in it, a file that
    cannot be read) is a one-line ConfigError naming the file and what was expected."""
    from sim.run import check_output_dir

    d = Path(results_dir)
    if not d.exists():
        raise ConfigError(
            f"{d}: no such directory; expected the output directory of servesim run, price, sweep or plan"
        )
    if not d.is_dir():
        raise ConfigError(f"{d}: not a directory; expected the output directory of servesim run, price, sweep or plan")
    kinds = detect(d)
    if not kinds:
        raise ConfigError(
            f"{d}: no servesim results here; expected summary.json (run), price.json (price), "
            "sweep.json or results.jsonl (sweep) or plan.json (plan)"
        )
    path = Path(out) if out is not None else d / REPORT_FILE
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; -o takes the path of the page to write")
    inputs = {(d / name).resolve() for names in INPUTS.values() for name in names}
    if path.resolve() in inputs:
        raise ConfigError(f"{path}: is one of the results files; write the report to another path")
    check_output_dir(path.parent)
    page = render_report(d, kinds)  # everything is read before anything is written
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{exc.filename or path}: cannot write the report: {exc.strerror or exc}") from None
    return path


def detect(results_dir: Path) -> list[str]:
    """The kinds of output ``results_dir`` holds, in page order: run, price, sweep, plan."""
    found = []
    for kind, names in INPUTS.items():
        marks = names if kind == "sweep" else names[:1]
        if any((results_dir / name).is_file() for name in marks):
            found.append(kind)
    return found


def render_report(results_dir: Path, kinds: Sequence[str]) -> str:
    """The page's HTML for the kinds of output ``results_dir`` holds (see ``detect``)."""
    builders = {"run": _run_section, "price": _price_section, "sweep": _sweep_section, "plan": _plan_section}
    sections, about = [], _About()
    for kind in kinds:
        sections.append(builders[kind](results_dir, about))
    return _page(results_dir, kinds, about, sections)


# --------------------------------------------------------------------------- reading


def _read_json(path: Path, expected: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}); expected {expected}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) file; expected {expected}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}; expected {expected}") from None


def _require(data: Any, keys: Iterable[str], path: Path, expected: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: holds a JSON {type(data).__name__}, not an object; expected {expected}")
    for key in keys:
        if key not in data:
            raise ConfigError(f"{path}: no {key!r} key; expected {expected}")


def _read_parquet(path: Path, columns: Sequence[str], required: Sequence[str], expected: str) -> pd.DataFrame:
    """The ``columns`` of a parquet file that it has; ConfigError if it cannot be read or lacks
    one of ``required``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        missing = [c for c in required if c not in names]
        if missing:
            raise ConfigError(f"{path}: no {missing[0]!r} column; expected {expected}")
        return pd.read_parquet(path, columns=[c for c in columns if c in names])
    except (OSError, ValueError, pa.ArrowException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not a readable parquet file ({first}); expected {expected}") from None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


# --------------------------------------------------------------------------- HTML pieces


class _Html(str):
    """Text that is HTML already: tables put it in a cell as it is."""


def _esc(value: Any) -> str:
    return value if isinstance(value, _Html) else html.escape(str(value))


def _status(text: str, good: bool | None) -> _Html:
    css = "muted" if good is None else ("ok" if good else "bad")
    return _Html(f'<span class="{css}">{html.escape(text)}</span>')


def _met(value: Any) -> _Html | str:
    return "-" if value is None else _status("met" if value else "missed", bool(value))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "", align: str = "") -> str:
    """A table; ``align`` holds l or r per column (default: the first left, the rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    cls = ["" if a == "l" else ' class="r"' for a in align]
    head = "".join(f"<th{c}>{_esc(h)}</th>" for c, h in zip(cls, headers))
    body = "".join("<tr>" + "".join(f"<td{c}>{_esc(v)}</td>" for c, v in zip(cls, row)) + "</tr>\n" for row in rows)
    cap = f"<caption>{_esc(caption)}</caption>" if caption else ""
    return f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table></div>\n'


def _png(data: bytes, alt: str, caption: str = "") -> str:
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{src}" alt="{_esc(alt)}">{cap}</figure>\n'


def _figure(fig: Figure, alt: str, caption: str = "") -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return _png(buf.getvalue(), alt, caption)


def _details(summary: str, text: str) -> str:
    return f"<details><summary>{_esc(summary)}</summary><pre>{_esc(text)}</pre></details>\n"


def _note(text: str) -> str:
    return f'<p class="muted">{_esc(text)}</p>\n'


def _section(anchor: str, title: str, body: Iterable[str]) -> str:
    return f'<section id="{anchor}">\n<h2>{_esc(title)}</h2>\n' + "".join(body) + "</section>\n"


def _num(x: Any, scale: float = 1.0) -> str:
    """A number to 3 significant digits (an integer: all of them; '-' for none), as the CLI prints one."""
    from sim.console import with_ci

    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return "-"
    if isinstance(x, int) and scale == 1.0:
        return f"{x:,}"  # counts stay exact
    return with_ci(x * scale, None)


def _est(est: Any, scale: float = 1.0) -> str:
    """A summary estimate ``{mean, ci95, n}`` as 'mean±ci95'."""
    from sim.console import fmt_estimate

    if not isinstance(est, dict) or "mean" not in est:
        return "-"
    return fmt_estimate({"mean": est["mean"], "ci95": est.get("ci95")}, scale)


def _percent(x: Any) -> str:
    return _num(x, 100.0)


def _knobs(knobs: Any) -> str:
    if not isinstance(knobs, dict) or not knobs:
        return "-"
    return ", ".join(f"{k}={v}" for k, v in knobs.items())


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class _About:
    """What the header says about the results: filled in by the sections as they read."""

    name: str = ""
    description: str = ""


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1f2328;
  margin:0 auto;max-width:1280px;padding:0 24px 48px;background:#fff}
header{border-bottom:2px solid #d0d7de;padding-bottom:8px}
h1{font-size:24px;margin:22px 0 4px}
h2{font-size:19px;margin:34px 0 8px;padding-bottom:4px;border-bottom:1px solid #d0d7de}
h3{font-size:15px;margin:22px 0 6px}
nav a{margin-right:16px;color:#0969da;text-decoration:none}
.meta,.muted,figcaption{color:#59636e}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:6px 0 16px;font-size:13px}
caption{text-align:left;font-weight:600;padding:4px 0;caption-side:top}
th,td{padding:3px 10px;border-bottom:1px solid #e6e9ec;vertical-align:top;text-align:left}
th{background:#f3f5f7;font-weight:600;white-space:nowrap}
.r{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th.r{white-space:normal;min-width:4em}
.ok{color:#1a7f37;font-weight:600}
.bad{color:#cf222e;font-weight:600}
figure{margin:10px 0 20px}
img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{font-size:12.5px;margin-top:2px}
details{margin:10px 0}
summary{cursor:pointer;font-weight:600}
pre{background:#f6f8fa;padding:10px;overflow-x:auto;font-size:12px;line-height:1.35}
ul.lines{list-style:none;padding-left:0;margin:4px 0 14px}
ul.lines li{margin:2px 0}
"""


def _page(results_dir: Path, kinds: Sequence[str], about: _About, sections: list[str]) -> str:
    name = about.name or results_dir.resolve().name
    when = datetime.now().astimezone().isoformat(timespec="seconds")
    nav = "".join(f'<a href="#{k}">{k}</a>' for k in kinds)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'  # no favicon request
        f"<title>servesim report: {_esc(name)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<header>\n"
        f"<h1>{_esc(name)}</h1>\n"
        + (f"<p>{_esc(about.description)}</p>\n" if about.description else "")
        + f'<p class="meta">{_esc(" + ".join(kinds))} results in {_esc(results_dir)}; report generated {when} '
        f"by servesim {_esc(__version__)}</p>\n<nav>{nav}</nav>\n</header>\n" + "".join(sections) + "</body>\n</html>\n"
    )


# --------------------------------------------------------------------------- a run

RUN_EXPECTED = "the summary.json that servesim run -o writes"


def _kind(stats: dict) -> str:
    if "ttft_s_p50" in stats:
        return "text"
    if "images_per_s" in stats:
        return "image"
    if any(k.startswith("stage_") for k in stats):
        return "pipeline"
    return "mixed"


def _slo_text(slo: dict | None) -> str:
    """'TTFT ≤ 500 ms, TPOT ≤ 50 ms at p99', or '... for ≥ 90 % of requests' (an attainment SLO)."""
    if not slo:
        return "-"
    parts = [
        f"{label} ≤ {_num(slo[m], scale)} {unit}" for m, (label, scale, unit) in LATENCY.items() if _finite(slo.get(m))
    ]
    if not parts:
        return "-"
    if _finite(slo.get("attainment")):
        return ", ".join(parts) + f" for ≥ {_num(slo['attainment'], 100)} % of requests"
    return ", ".join(parts) + f" at p{slo.get('percentile', 99):g}"


def _slo_level(slo: dict) -> float:
    """The fraction of requests an SLO asks to be within its targets."""
    return slo["attainment"] if _finite(slo.get("attainment")) else slo.get("percentile", 99.0) / 100


def _run_section(d: Path, about: _About) -> str:
    path = d / "summary.json"
    summary = _read_json(path, RUN_EXPECTED)
    _require(summary, ("classes", "pools", "conservation"), path, RUN_EXPECTED)
    scenario = None
    if (d / "scenario.json").is_file():
        scenario = _read_json(d / "scenario.json", "the resolved scenario servesim run -o writes")
        _require(scenario, ("name",), d / "scenario.json", "the resolved scenario servesim run -o writes")
        about.name = about.name or str(scenario["name"])
        about.description = about.description or str(scenario.get("description") or "")
    about.name = about.name or str(summary.get("scenario", ""))
    slos = summary.get("slo") or {}
    body = [
        _note(
            f"{summary.get('replications', '?')} replication(s), seed {summary.get('seed', '?')}, "
            f"warm-up {summary.get('warmup_s', 0):g} s. Latencies: mean over replications ± 95 % confidence "
            "half-width (none with one replication)."
        ),
        *_terminal_summary(summary, scenario),
        "<h3>Classes</h3>\n",
        _class_table(summary, slos),
        _latency_table(summary, slos),
        "<h3>Pools</h3>\n",
        _pool_table(summary["pools"]),
        *_assumed_efficiency_notes(summary["pools"]),
    ]
    body += _run_plots(d, summary, slos)
    body.append("<h3>Requests</h3>\n")
    body.append(_conservation_table(summary))
    if scenario is not None:
        body.append(_details("resolved scenario (YAML)", yaml.safe_dump(scenario, sort_keys=False, allow_unicode=True)))
    return _section("run", "Run", body)


def _terminal_summary(summary: dict, scenario: dict | None) -> list[str]:
    """What ``servesim run`` printed of this run, warnings included: the same blocks, rebuilt
    from summary.json and scenario.json."""
    from sim.config import parse_scenario
    from sim.errors import ServesimError
    from sim.run import summary_blocks

    if scenario is None:
        return [_note("scenario.json is not here: the summary as servesim run prints it is left out.")]
    try:
        blocks = summary_blocks(summary, parse_scenario(scenario))
    except (ServesimError, KeyError, TypeError, ValueError, AttributeError) as exc:
        return [
            _note(f"the summary as servesim run prints it cannot be rebuilt from these files ({type(exc).__name__}).")
        ]
    return ["<h3>Summary, as servesim run prints it</h3>\n", blocks_html(blocks)]


def _class_table(summary: dict, slos: dict) -> str:
    classes = {name: st for name, st in summary["classes"].items() if isinstance(st, dict)}
    headers = [
        "class",
        "kind",
        "arrivals (req/s)",
        "throughput (req/s)",
        "goodput (req/s)",
        "SLO attainment (%)",
        "rejected (%)",
        "failed (%)",
        "SLO",
        "SLO met",
    ]
    rows = []
    for name, st in classes.items():
        kinds = summary.get("kinds") or {}
        kind = "all classes" if name == "all" and len(classes) > 1 else kinds.get(name) or _kind(st)
        rows.append(
            [
                name,
                kind,
                _est(st.get("arrival_rate")),
                _est(st.get("throughput_rps")),
                _est(st.get("goodput_rps")),
                _est(st.get("slo_attainment"), 100),
                _est(st.get("rejected_fraction"), 100),
                _est(st.get("failed_fraction"), 100),
                _slo_text(slos.get(name)),
                _met((summary.get("slo_met") or {}).get(name)),
            ]
        )
    return _table(headers, rows, align="llrrrrrrll")


def _latency_table(summary: dict, slos: dict) -> str:
    """p50, p90, p99 (and each SLO's percentile) of TTFT, TPOT and E2E per class."""
    classes = {name: st for name, st in summary["classes"].items() if isinstance(st, dict)}
    percentiles = sorted(
        {50.0, 90.0, 99.0}
        | {float(s["percentile"]) for s in slos.values() if s and "percentile" in s and not s.get("attainment")}
    )
    metrics = [m for m in LATENCY if any(f"{m}_p50" in st for st in classes.values())]
    headers = ["class"] + [f"{LATENCY[m][0]} p{p:g} ({LATENCY[m][2]})" for m in metrics for p in percentiles]
    rows = [
        [name] + [_est(st.get(f"{m}_p{p:g}"), LATENCY[m][1]) for m in metrics for p in percentiles]
        for name, st in classes.items()
    ]
    return _table(headers, rows, "latency percentiles")


def _assumed_efficiency_notes(pools: dict) -> list[str]:
    """The note servesim run prints under its pool lines, for every GPU whose roofline
    efficiencies are assumed (the run's summary says which pools)."""
    from sim.catalog import assumed_efficiency_note

    gpus = dict.fromkeys(
        str(p.get("gpu")) for p in pools.values() if isinstance(p, dict) and p.get("efficiency_assumed")
    )
    return [_note(f"Note: {assumed_efficiency_note(g)}") for g in gpus if g in _known_gpus()]


def _known_gpus() -> set[str]:
    from sim import catalog

    return set(catalog.gpus())


def _pool_table(pools: dict) -> str:
    headers = [
        "pool",
        "model",
        "GPU",
        "TP",
        "replicas",
        "$/GPU-hour",
        "busy (%)",
        "mean batch",
        "KV / memory used (%)",
        "memory per replica",
        "batching",
    ]
    rows = []
    for name, p in pools.items():
        if "batching" in p:
            memory = f"{_num(p.get('memory_budget_gib'))} GiB for latents"
            used, batching = p.get("mean_memory_util"), f"{p['batching']}, ≤ {p.get('max_batch_size', '?')} images"
        else:
            memory = f"{_num(p.get('kv_capacity_tokens'))} KV tokens"
            used, batching = p.get("mean_kv_util"), str(p.get("scheduler", "-"))
        rows.append(
            [
                name,
                *_fleet_cells(p),
                _num(p.get("price_per_gpu_hour")),
                _percent(p.get("busy_fraction")),
                _num(p.get("mean_batch")),
                _percent(used),
                memory,
                batching,
            ]
        )
    return _table(headers, rows, align="lll" + "r" * 6 + "rl")


def _fleet_cells(pool: dict) -> list[Any]:
    """Model, GPU, TP and replicas of a pool (a run's summary or a plan's answer)."""
    return [pool.get(k, "-") for k in ("model", "gpu", "tensor_parallel_size", "replicas")]


def _conservation_table(summary: dict) -> str:
    c, sim = summary["conservation"], summary.get("simulation") or {}
    keys = ("arrived", "finished", "rejected", "failed", "in_flight")
    headers = [k.replace("_", " ") for k in keys] + ["simulated (s)", "engine steps", "wall (s)"]
    row = [_num(c.get(k)) for k in keys] + [
        _num(sim.get("simulated_s")),
        _num(sim.get("engine_steps")),
        _num(sim.get("wall_s")),
    ]
    caption = "every arrived request (pipeline stages included) is finished, rejected, failed or still in flight"
    return _table(headers, [row], caption, align="r" * len(headers))


_CDF_PANELS = {"TTFT (s)": "ttft_s", "TPOT (s)": "tpot_s", "E2E latency (s)": "e2e_s"}
"""The x labels sim.plots.latency_cdfs gives its panels -> the SLO metric each shows."""


def mark_slos(fig: Figure, slos: dict) -> int:
    """Draw each class's SLO target on the latency CDFs of ``latency_cdfs``: a dashed vertical
    line in the class's colour and a dot at the fraction of requests the SLO asks to be within
    it (its percentile, or its attainment), or on the tail panels at the fraction it lets be
    slower. Returns the targets drawn."""
    drawn = 0
    for ax in fig.axes:
        metric = _CDF_PANELS.get(ax.get_xlabel())
        colours = {line.get_label(): line.get_color() for line in ax.get_lines()}
        for cls, slo in slos.items():
            if metric is None or not slo or not _finite(slo.get(metric)) or cls not in colours:
                continue
            target, level = slo[metric], _slo_level(slo)
            if ax.get_yscale() == "log":  # the tail panel: the fraction allowed to be slower
                level = 1.0 - level
            ax.axvline(target, color=colours[cls], ls="--", lw=1.1, gid="slo")
            if level > 0:
                ax.plot([target], [level], "o", color=colours[cls], ms=5, gid="slo")
            drawn += 1
    return drawn


def _run_plots(d: Path, summary: dict, slos: dict) -> list[str]:
    from sim.plots import batch_limits, latency_cdfs, replica_state

    out = ["<h3>Latency</h3>\n"]
    req_path = d / "requests.parquet"
    if req_path.is_file():
        requests = _read_parquet(
            req_path,
            ["class", "arrival_s", "parent_id", "ttft_s", "tpot_s", "e2e_s", "queue_s"],
            ["class", "arrival_s", "e2e_s"],
            "the requests table servesim run -o writes",
        )
        fig = latency_cdfs(requests, float(summary.get("warmup_s") or 0.0))
        caption = (
            "Per class, warm-up left out: empirical CDFs on a log time axis (top) and the tail, the "
            "fraction of requests slower than x on log-log axes, where p99 and p99.9 cross the dotted lines (bottom). "
        ) + (
            "Dashed: the class's SLO target; dot: the fraction of requests the SLO asks to be within it (top) "
            "or lets be slower (bottom)."
            if mark_slos(fig, slos)
            else ""
        )
        out.append(_figure(fig, "latency CDFs per class", caption))
    elif (d / "latency_cdf.png").is_file():
        out.append(_png((d / "latency_cdf.png").read_bytes(), "latency CDFs", "latency_cdf.png as the run wrote it"))
    else:
        out.append(_note("requests.parquet is not here: no latency plot."))
    out.append("<h3>Replica state over time</h3>\n")
    ts_path = d / "timeseries.parquet"
    if ts_path.is_file():
        ts = _read_parquet(
            ts_path,
            ["pool", "replica", "t_s", "running", "waiting", "kv_util", "memory_util", "state_gib", "replication"],
            ["pool", "replica", "t_s", "running", "waiting"],
            "the replica time series servesim run -o writes",
        )
        ts["pool"] = ts["pool"].astype(str)
        for pool in summary["pools"]:
            rows = ts[ts["pool"] == pool]
            if rows.empty or ("kv_util" not in rows and "state_gib" not in rows):
                continue
            info = summary["pools"][pool] if isinstance(summary["pools"][pool], dict) else {}
            outages = [o for o in info.get("outages") or () if isinstance(o, list) and len(o) == 4]
            fig = replica_state(
                rows,
                MAX_STATE_REPLICAS,
                warmup_s=float(summary.get("warmup_s") or 0),
                batch_limits={k: v for k, v in batch_limits(summary["pools"]).items() if k == pool},
                outages=outages,
            )
            fig.suptitle(f"pool {pool}: replica state over time")
            caption = (
                f"First replication, first {MAX_STATE_REPLICAS} replicas: batch size against the pool's batch limit "
                "(dashed), waiting queue, memory held against the pool's budget (dashed); the warm-up, left out of "
                "every statistic, shaded grey"
                + ("; a replica's failure marked x, its time down shaded red." if outages else ".")
            )
            out.append(_figure(fig, f"replica state of pool {pool}", caption))
    elif (d / "replica_state.png").is_file():
        out.append(
            _png((d / "replica_state.png").read_bytes(), "replica state", "replica_state.png as the run wrote it")
        )
    else:
        out.append(_note("timeseries.parquet is not here: no replica-state plot."))
    return out


# --------------------------------------------------------------------------- price


def table_html(table: Any) -> str:
    """A ``sim.console.Table`` as an HTML table: its title, headers, cells and column alignment."""
    from sim.console import plain

    headers = [plain(c.header) for c in table.columns]
    rows = [[plain(cell) for cell in row] for row in table.rows]
    align = "".join("r" if c.justify == "right" else "l" for c in table.columns)
    return _table(headers, rows, plain(table.title or ""), align)


def blocks_html(blocks: Iterable[Any]) -> str:
    """What a command shows (``sim.console`` blocks) as HTML: tables as tables, each run of text
    lines as a list, so that the page shows what the CLI prints."""
    from sim.console import Table, plain

    parts: list[str] = []
    lines: list[str] = []
    for block in [*blocks, None]:
        if (block is None or isinstance(block, Table)) and lines:
            parts.append('<ul class="lines">' + "".join(f"<li>{_esc(t.strip())}</li>" for t in lines) + "</ul>\n")
            lines = []
        if isinstance(block, Table):
            parts.append(table_html(block))
        elif block is not None:
            lines.append(plain(block.markup))
    return "".join(parts)


def _command_blocks(blocks_of, data: Any, path: Path, expected: str) -> str:
    """What a command prints of ``data`` (its blocks, built by ``blocks_of``) as HTML; content
    it cannot read is a one-line error naming the file."""
    try:
        blocks = blocks_of(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: unexpected content ({type(exc).__name__}: {exc}); expected {expected}") from None
    return blocks_html(blocks)


def _price_section(d: Path, about: _About) -> str:
    from sim.price import PRICE_EXPECTED, read_price_json, report_blocks

    path = d / "price.json"
    report = read_price_json(_read_json(path, PRICE_EXPECTED), path)
    about.name = about.name or report.scenario
    body = [_command_blocks(report_blocks, report, path, PRICE_EXPECTED)]
    if report.sensitivity is not None and len(report.sensitivity):
        fig = _sensitivity_figure(report.sensitivity)
        if fig is not None:
            body.append(
                _figure(
                    fig,
                    "margin against load and steps",
                    "Margin at the same prices and fleet, ±95 % CI over replications.",
                )
            )
    return _section("price", "Price", body)


def _sensitivity_figure(sens: pd.DataFrame) -> Figure | None:
    axes_names = [a for a in ("load", "steps") if (sens["axis"] == a).any()]
    if not axes_names:
        return None
    fig = Figure(figsize=(5.5 * len(axes_names), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(axes_names)))
    for ax, name in zip(axes, axes_names):
        rows = sens[sens["axis"] == name].sort_values("value")
        for cls, grp in rows.groupby("class", sort=False):
            err = grp["margin_ci95"].fillna(0) * 100 if "margin_ci95" in grp else None
            ax.errorbar(
                grp["value"],
                grp["margin"] * 100,
                yerr=err,
                marker="o",
                capsize=3,
                lw=2 if cls == "all" else 1.2,
                label=str(cls),
            )
        ax.axhline(0, color="0.4", lw=0.8)
        ax.set_xlabel("load (x the scenario's arrival rates)" if name == "load" else "denoising steps")
        ax.set_ylabel("margin (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle("Margin sensitivity")
    return fig


# --------------------------------------------------------------------------- curves (sweep and plan)


@dataclass
class _Panel:
    """One panel of a curves figure: lines of (x, y ± err), and SLO targets as horizontal lines."""

    title: str
    xlabel: str
    ylabel: str
    curves: list[tuple[str, list[float], list[float], list[float] | None, bool]] = field(default_factory=list)
    """(label, xs, ys, y errors or None, emphasised)"""
    slos: dict[str, float] = field(default_factory=dict)
    """label -> target"""


def _curves_figure(panels: list[_Panel], title: str) -> Figure:
    """Panels side by side; a y value of inf (overloaded: never finished) is an x at the top."""
    fig = Figure(figsize=(max(7.0, 4.6 * len(panels)), 4.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, panel in zip(axes, panels):
        for label, xs, ys, errs, bold in panel.curves:
            ok = [i for i, y in enumerate(ys) if math.isfinite(y)]
            err = [errs[i] for i in ok] if errs else None
            line = ax.errorbar(
                [xs[i] for i in ok],
                [ys[i] for i in ok],
                yerr=err,
                marker="o",
                ms=4,
                capsize=2,
                lw=2.4 if bold else 1.2,
                label=label,
            )
            off = [xs[i] for i, y in enumerate(ys) if not math.isfinite(y)]
            if off:
                ax.plot(
                    off,
                    [0.97] * len(off),
                    "x",
                    color=line.lines[0].get_color(),
                    transform=ax.get_xaxis_transform(),
                    clip_on=False,
                )
        for label, target in panel.slos.items():
            ax.axhline(target, color="0.15", ls="--", lw=1, gid="slo")
            ax.annotate(label, (0.01, target), xycoords=("axes fraction", "data"), fontsize="x-small", va="bottom")
        ys = [y for _, _, v, _, _ in panel.curves for y in v if _finite(y) and y > 0] + [
            t for t in panel.slos.values() if t > 0
        ]
        if ys and max(ys) / min(ys) > 30:
            ax.set_yscale("log")
        if all(isinstance(x, int) for _, xs, _, _, _ in panel.curves for x in xs):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(panel.title, fontsize="medium")
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        per_entry_pt = 4.4 * max(len(t) for t in labels) + 30  # x-small text and the marker
        ncols = max(1, min(len(handles), int(fig.get_figwidth() * 72 // per_entry_pt)))
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize="x-small")
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- a sweep

SWEEP_EXPECTED = "the sweep.json and results.jsonl that servesim sweep -o writes"


def _sweep_section(d: Path, about: _About) -> str:
    from sim.sweep import RESULTS_FILE, SWEEP_FILE, expand_grid, point_id, read_results, results_frame, sweep_table

    manifest: dict = {}
    if (d / SWEEP_FILE).is_file():
        manifest = _read_json(d / SWEEP_FILE, SWEEP_EXPECTED)
        _require(manifest, ("scenario", "grid"), d / SWEEP_FILE, SWEEP_EXPECTED)
        if not isinstance(manifest["grid"], dict) or not all(isinstance(v, list) for v in manifest["grid"].values()):
            raise ConfigError(f"{d / SWEEP_FILE}: 'grid' is not an object of value lists; expected {SWEEP_EXPECTED}")
    records = read_results(d)
    results = d / RESULTS_FILE
    if not records and results.is_file() and (_read_text(results) or "").strip():
        raise ConfigError(
            f"{results}: no complete JSON line; expected one JSON object per finished point ({SWEEP_EXPECTED})"
        )
    for r in records:
        if not isinstance(r.get("point"), dict):
            raise ConfigError(f"{results}: point {r['id']} has no 'point' object; expected {SWEEP_EXPECTED}")
    grid_keys = list(manifest.get("grid") or {}) or list(dict.fromkeys(k for r in records for k in r["point"]))
    base, scenario_note = _sweep_base(manifest)
    if base is not None:
        about.name = about.name or base.name
        about.description = about.description or base.description
    about.name = about.name or Path(str(manifest.get("scenario", "sweep"))).stem
    body = [_sweep_about(manifest, len(records))]
    if scenario_note:
        body.append(_note(scenario_note))
    if not records:
        body.append(_note("No point has finished yet."))
        return _section("sweep", "Sweep", body)
    order = {point_id(p): i for i, p in enumerate(expand_grid(manifest.get("grid") or {}))}
    records.sort(key=lambda r: order.get(r["id"], len(order)))  # grid order, not the order points finished
    df = results_frame(records, grid_keys)
    if base is not None:
        body.append(table_html(sweep_table(df, base, grid_keys)))
    else:
        body.append(_plain_sweep_table(df, grid_keys))
    if "error" in df:
        failed = df[df["error"].notna()]
        if len(failed):
            body.append(_note(f"{len(failed)} point(s) failed on their input; the first: {failed['error'].iloc[0]}"))
    slos = {c.name: base.slo_for(c).model_dump() for c in base.classes if base.slo_for(c)} if base is not None else {}
    ci = pd.DataFrame([r.get("ci95") or {} for r in records], index=df.index)
    fig = _sweep_figure(df, grid_keys, slos, ci)
    if fig is not None:
        body.append(
            _figure(
                fig,
                "tail latency against achieved throughput",
                "One line per value of the other grid keys, in order of the swept value, ±95 % CI over "
                "replications; dashed: SLO targets; x at the top: overloaded (requests never finished).",
            )
        )
    fig = _sweep_cost_figure(df, grid_keys, slos)
    if fig is not None:
        body.append(
            _figure(
                fig,
                "cost against tail latency",
                "Every point of the sweep: what an output token (or image) costs against the tail latency its SLO "
                "is on; filled: the SLO is met; the line joins the cheapest points for each latency (the cost "
                "frontier), labelled with their grid values.",
            )
        )
    return _section("sweep", "Sweep", body)


def _sweep_base(manifest: dict):
    """The sweep's base scenario (for its SLOs and the CLI's table), if its file still loads."""
    from sim.config import load_scenario
    from sim.errors import ServesimError

    path = manifest.get("scenario")
    if not path:
        return None, ""
    try:
        base, _ = load_scenario(Path(path), list(manifest.get("overrides") or []))
    except (ServesimError, OSError, TypeError):
        return None, f"The base scenario ({path}) does not load from here: no SLO lines, a plain table."
    if manifest.get("scenario_sha256") not in (None, hashlib.sha256(base.model_dump_json().encode()).hexdigest()):
        return base, f"{path} has changed since the sweep ran: SLO targets are the file's current ones."
    return base, ""


def _sweep_about(manifest: dict, finished: int) -> str:
    grid = manifest.get("grid") or {}
    from sim.console import yaml_text

    rows = [[k, ", ".join(yaml_text(v) for v in values)] for k, values in grid.items()]
    text = (
        f"Base scenario {manifest.get('scenario', '?')}"
        + (f" with --set {' --set '.join(manifest['overrides'])}" if manifest.get("overrides") else "")
        + f"; {finished} of {manifest.get('points', '?')} points finished"
        + (f"; created {manifest['created']}" if manifest.get("created") else "")
        + "."
    )
    return _note(text) + (_table(["grid key", "values"], rows, align="ll") if rows else "")


def _metric_classes(columns: Iterable[str]) -> list[str]:
    """Class names in flat-metric columns (``C.throughput_rps``), in order."""
    return list(
        dict.fromkeys(
            c.rpartition(".")[0]
            for c in columns
            if c.endswith(".throughput_rps") and not c.startswith(("pool.", "fleet.", "sim."))
        )
    )


def _plain_sweep_table(df: pd.DataFrame, grid_keys: list[str]) -> str:
    """Grid values, throughput, p99 latencies, SLO met and $/hour: for a sweep whose base
    scenario no longer loads (``sweep_table`` needs it)."""
    from sim.console import plain_number, yaml_text

    metrics = [
        c for c in df.columns if c.endswith((".throughput_rps", "_p99", ".slo_met")) or c == "fleet.usd_per_hour"
    ]
    rows = [
        [yaml_text(plain_number(r[k])) for k in grid_keys]
        + [_met(plain_number(r[m])) if m.endswith(".slo_met") else _num(plain_number(r[m])) for m in metrics]
        for r in df.to_dict("records")
    ]
    return _table(grid_keys + metrics, rows, align="r" * (len(grid_keys) + len(metrics)))


def _sweep_figure(df: pd.DataFrame, grid_keys: list[str], slos: dict, ci: pd.DataFrame | None = None) -> Figure | None:
    """Per latency metric, its percentile (the class's SLO's, else p99) against each class's
    achieved throughput: a line per value of the grid keys other than the swept one (the first
    numeric key whose name ends in 'rate', else the first numeric key)."""
    from sim.console import plain_number, yaml_text

    if "error" in df:
        df = df[df["error"].isna()]
    classes = _metric_classes(df.columns)
    if len(classes) > 1:
        classes = [c for c in classes if c != "all"]
    numeric = [k for k in grid_keys if pd.api.types.is_numeric_dtype(df[k]) and not pd.api.types.is_bool_dtype(df[k])]
    swept = next((k for k in numeric if k.endswith("rate")), numeric[0] if numeric else None)
    others = [k for k in grid_keys if k != swept]
    series = pd.Series(
        [
            ", ".join(f"{k.rpartition('.')[2]}={yaml_text(plain_number(r[k]))}" for k in others)
            for r in df.to_dict("records")
        ],
        index=df.index,
    )
    percentile = {c: f"{(slos.get(c) or {}).get('percentile', 99.0):g}" for c in classes}
    panels = []
    for metric, (label, _, _) in LATENCY.items():
        ps = set(percentile.values())
        ylabel = f"{label} p{ps.pop()} (s)" if len(ps) == 1 else f"{label} at the class's SLO percentile (s)"
        panel = _Panel(label, "achieved throughput (req/s)", ylabel)
        for cls in classes:
            col, xcol = f"{cls}.{metric}_p{percentile[cls]}", f"{cls}.throughput_rps"
            if col not in df or df[col].isna().all():
                continue
            for name, grp in df.groupby(series, sort=False):
                grp = grp.sort_values(swept or xcol)
                curve = " ".join(x for x in (cls if len(classes) > 1 else "", name) if x) or cls
                errs = None
                if ci is not None and col in ci:
                    errs = [e if _finite(e) else 0.0 for e in ci.loc[grp.index, col].tolist()]
                panel.curves.append((curve, grp[xcol].tolist(), grp[col].tolist(), errs, False))
            target = (slos.get(cls) or {}).get(metric)
            if _finite(target):
                panel.slos[f"{cls} SLO" if len(classes) > 1 else "SLO"] = float(target)
        if panel.curves:
            panels.append(panel)
    if not panels:
        return None
    return _curves_figure(panels, "Tail latency against achieved throughput" + (f" (swept: {swept})" if swept else ""))


COST_UNITS = (
    ("cost_per_1m_output_tokens_usd", "$ per 1M output tokens"),
    ("cost_per_image_usd", "$ per image"),
    ("request_cost_usd_mean", "$ per request (attributed)"),
)


def _sweep_cost_figure(df: pd.DataFrame, grid_keys: list[str], slos: dict) -> Figure | None:
    """Per class: cost per unit against the latency its SLO is on (its first target: TTFT, TPOT,
    then E2E; p99 E2E without an SLO), every point, SLO met filled, and the Pareto frontier (no
    other point both cheaper and faster) joined and labelled."""
    from sim.console import plain_number, yaml_text

    if "error" in df:
        df = df[df["error"].isna()]
    classes = _metric_classes(df.columns)
    if len(classes) > 1:
        classes = [c for c in classes if c != "all"]
    panels = []
    for cls in classes:
        slo = slos.get(cls) or {}
        metric = next((m for m in ("ttft_s", "tpot_s", "e2e_s") if _finite(slo.get(m))), "e2e_s")
        col = f"{cls}.{metric}_p{slo.get('percentile', 99.0):g}"
        unit = next(((f"{cls}.{k}", label) for k, label in COST_UNITS if f"{cls}.{k}" in df), None)
        if col not in df or unit is None:
            continue
        rows = df[[col, unit[0], *grid_keys] + ([f"{cls}.slo_met"] if f"{cls}.slo_met" in df else [])].dropna(
            subset=[col, unit[0]]
        )
        rows = rows[np.isfinite(rows[col].astype(float)) & np.isfinite(rows[unit[0]].astype(float))]
        if len(rows) < 2:
            continue
        panels.append((cls, metric, col, unit, rows, slo))
    if not panels:
        return None
    fig = Figure(figsize=(max(7.0, 5.2 * len(panels)), 4.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (cls, metric, col, (ucol, ulabel), rows, slo) in zip(axes, panels):
        x = rows[col].astype(float).to_numpy()
        y = rows[ucol].astype(float).to_numpy()
        met = rows[f"{cls}.slo_met"].to_numpy() if f"{cls}.slo_met" in rows else np.full(len(rows), None)
        ok = np.array([m is True or m == 1 for m in met])
        ax.scatter(x[ok], y[ok], c="tab:green", s=28, label="SLO met", zorder=3)
        ax.scatter(x[~ok], y[~ok], facecolors="none", edgecolors="tab:red", s=28, label="SLO missed", zorder=3)
        order = np.lexsort((x, y))  # cheapest first, then fastest
        frontier, best = [], math.inf
        for i in order:
            if x[i] < best:
                frontier.append(i)
                best = x[i]
        frontier.sort(key=lambda i: x[i])
        ax.plot(x[frontier], y[frontier], color="0.3", lw=1, zorder=2, label="cost frontier")
        for n_, i in enumerate(frontier):
            text = ", ".join(f"{k.rpartition('.')[2]}={yaml_text(plain_number(rows[k].iloc[i]))}" for k in grid_keys)
            # Neighbours on the frontier are often close: labels alternate above and below.
            offset = (5, 4) if n_ % 2 == 0 else (5, -11)
            ax.annotate(text, (x[i], y[i]), textcoords="offset points", xytext=offset, fontsize="x-small", color="0.25")
        if _finite(slo.get(metric)):
            ax.axvline(float(slo[metric]), color="0.15", ls="--", lw=1)
            ax.annotate(
                "SLO", (float(slo[metric]), 0.98), xycoords=("data", "axes fraction"), fontsize="x-small", va="top"
            )
        if x.max() / max(x.min(), 1e-12) > 30:
            ax.set_xscale("log")
        ax.set_xlabel(f"{metric.removesuffix('_s').upper()} p{slo.get('percentile', 99.0):g} (s)")
        ax.set_ylabel(ulabel)
        ax.set_title(cls, fontsize="medium")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="x-small", loc="best")
    fig.suptitle("Cost against tail latency")
    return fig


# --------------------------------------------------------------------------- a plan

PLAN_EXPECTED = "the plan.json that servesim plan -o writes"


def _plan_section(d: Path, about: _About) -> str:
    path = d / "plan.json"
    plan = _read_json(path, PLAN_EXPECTED)
    _require(plan, ("answer",), path, PLAN_EXPECTED)
    answer = plan["answer"]
    _require(answer, ("pools",), path, PLAN_EXPECTED + " (its 'answer')")
    if not isinstance(answer["pools"], list) or not all(isinstance(p, dict) for p in answer["pools"]):
        raise ConfigError(f"{path}: answer.pools is not a list of objects; expected {PLAN_EXPECTED}")
    about.name = about.name or str(plan.get("scenario") or "")
    about.description = about.description or str(plan.get("description") or "")
    if answer.get("feasible"):
        headline = (
            f"<p>{_status('feasible', True)}: layout <b>{_esc(answer.get('layout') or '-')}</b>, "
            f"<b>${_esc(_num(answer.get('cost_per_hour')))}/hour</b> for {_esc(answer.get('gpus', '-'))} GPUs; "
            f"binding pool {_esc(answer.get('binding_pool') or '-')} (one replica fewer there misses by the most).</p>\n"
        )
    else:
        headline = f"<p>{_status('no feasible fleet', False)}: no fleet in the search space meets every SLO.</p>\n"
    from sim.plan import plan_blocks

    # The answer, its checks, the layouts and the candidates as servesim plan prints them.
    body = ["<h3>Answer</h3>\n", headline, _command_blocks(plan_blocks, plan, path, PLAN_EXPECTED)]
    frontier = sorted(
        (
            f
            for f in plan.get("frontier") or []
            if isinstance(f, dict) and _finite(f.get("cost_per_hour")) and _finite(f.get("margin"))
        ),
        key=lambda f: f["cost_per_hour"],
    )
    if frontier:
        caption = (
            "The cheapest fleet for each SLO margin (a fleet's margin: its pools' smallest); the answer is starred."
        )
        rows = [
            [i, _num(f["cost_per_hour"]), _percent(f["margin"]), f.get("layout", "-"), _fleet_label(f.get("pools"))]
            for i, f in enumerate(frontier, 1)
        ]
        body += ["<h3>Cost frontier</h3>\n", _figure(_frontier_figure(frontier, answer), "cost frontier", caption)]
        body.append(_table(["#", "$/hour", "margin (%)", "layout", "fleet"], rows, align="rrrll"))
    candidates = [c for c in plan.get("candidates") or [] if isinstance(c, dict)]
    if candidates:
        for pool, shown, fig in _evaluation_figures(candidates):
            caption = f"Pool {pool}, {shown}: each evaluated replica count, ±95 % CI over replications; dashed: the SLO target; x at the top: overloaded (requests never finished)."
            body.append(_figure(fig, f"candidates of pool {pool}: metrics against replicas", caption))
    settings = {k: plan[k] for k in ("scenario_file", "settings", "wall_s", "simulated_replications") if k in plan}
    if settings:
        body.append(_details("plan settings", yaml.safe_dump(settings, sort_keys=False)))
    if isinstance(plan.get("resolved_scenario"), dict):
        body.append(
            _details(
                "resolved scenario (YAML)",
                yaml.safe_dump(plan["resolved_scenario"], sort_keys=False, allow_unicode=True),
            )
        )
    fleet = _read_text(d / "fleet.yaml") if (d / "fleet.yaml").is_file() else None
    if fleet:
        body.append(_details("fleet.yaml (the answer as a runnable scenario)", fleet))
    return _section("plan", "Plan", body)


def _candidate_label(c: dict) -> str:
    """'llama-3-8b h100-sxm TP2 engine.max_num_seqs=64', as sim.plan describes a candidate."""
    tp = c.get("tensor_parallel_size", 1)
    parts = (
        c.get("model"),
        c.get("gpu"),
        f"TP{tp}" if tp != 1 else None,
        _knobs(c.get("knobs")) if c.get("knobs") else None,
    )
    return " ".join(str(x) for x in parts if x)


def _check_view(check: dict) -> tuple[str, float, bool]:
    """How a plan check reads: its metric with unit, the scale of its values, and whether it is
    a latency (a latency of ``sim.plan.LATE_S`` means requests never finished)."""
    metric, p = check.get("metric"), check.get("percentile")
    if metric in LATENCY:
        return (f"p{p:g} " if _finite(p) else "") + f"{LATENCY[metric][0]} (s)", 1.0, True
    fractions = {"attainment": "SLO attainment (%)", "stable": "completed in window (%)"}
    return fractions.get(metric, str(metric)), 100.0 if metric in fractions else 1.0, False


def _overloaded(value: Any) -> bool:
    from sim.plan import LATE_S

    return _finite(value) and value >= LATE_S / 10


def _fleet_label(pools: Any) -> str:
    if not isinstance(pools, list):
        return ""
    return ", ".join(
        f"{p.get('pool', '?')}: {p.get('replicas', '?')} × {_candidate_label(p)}" for p in pools if isinstance(p, dict)
    )


def _frontier_figure(points: list[dict], answer: dict) -> Figure:
    """Cost against margin of the frontier's fleets (numbered as in its table), the answer starred."""
    margins = [p["margin"] for p in answer["pools"] if _finite(p.get("margin"))]
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.subplots()
    costs, ys = [f["cost_per_hour"] for f in points], [100 * f["margin"] for f in points]
    ax.step(costs, ys, "o-", where="post", color="C0", lw=1.2, label="cheapest fleet for a margin")
    if answer.get("feasible") and _finite(answer.get("cost_per_hour")) and margins:
        ax.plot(
            [answer["cost_per_hour"]],
            [100 * min(margins)],
            "*",
            color="C3",
            ms=16,
            zorder=3,
            label="the answer",
            gid="chosen",
        )
    for i, (x, y) in enumerate(zip(costs, ys), 1):
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(5, 5), fontsize="small")
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set_xlabel("fleet cost ($/hour)")
    ax.set_ylabel("SLO margin (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    fig.suptitle("Cost against SLO margin")
    return fig


def _evaluation_figures(candidates: list[dict]) -> list[tuple[str, str, Figure]]:
    """Per pool: one panel per SLO check, one line per candidate (its value against replicas;
    chosen and feasible candidates first, at most MAX_CURVES)."""
    by_pool: dict[str, list[dict]] = {}
    for c in candidates:
        if isinstance(c.get("evaluations"), list) and c["evaluations"]:
            by_pool.setdefault(str(c.get("pool", "?")), []).append(c)
    figures = []
    for pool, cands in by_pool.items():
        panels: dict[tuple, _Panel] = {}
        for c in cands[:MAX_CURVES]:
            lines: dict[tuple, tuple[list, list, list]] = {}
            evaluations = sorted(
                (e for e in c["evaluations"] if isinstance(e, dict) and _finite(e.get("replicas"))),
                key=lambda e: e["replicas"],
            )
            for e in evaluations:
                for check in e.get("checks") or []:
                    if not isinstance(check, dict) or not _finite(check.get("value")):
                        continue
                    key = (check.get("class"), check.get("metric"), check.get("percentile"))
                    label, scale, latency = _check_view(check)
                    if key not in panels:
                        panels[key] = _Panel(f"class {key[0]}", "replicas", label)
                    if _finite(check.get("slo")):
                        panels[key].slos["SLO"] = check["slo"] * scale
                    xs, ys, errs = lines.setdefault(key, ([], [], []))
                    xs.append(e["replicas"])
                    ys.append(math.inf if latency and _overloaded(check["value"]) else check["value"] * scale)
                    errs.append(check["ci95"] * scale if _finite(check.get("ci95")) and not math.isinf(ys[-1]) else 0.0)
            for key, (xs, ys, errs) in lines.items():
                panels[key].curves.append((_candidate_label(c), xs, ys, errs, c.get("status") == "chosen"))
        if panels:
            shown = (
                f"the first {MAX_CURVES} of {len(cands)} candidates" if len(cands) > MAX_CURVES else "its candidates"
            )
            figures.append(
                (pool, shown, _curves_figure(list(panels.values()), f"pool {pool}: SLO metrics against replicas"))
            )
    return figures

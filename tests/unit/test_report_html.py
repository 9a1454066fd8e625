"""sim/report/html.py: one self-contained page for a run, price, sweep or plan directory.

Run, price and sweep outputs are real (shortened runs of shipped scenarios); the plan is a
plan.json written here in the shape sim/plan.py writes. Every shipped scenario runs, prices and
reports.
"""

from __future__ import annotations

import base64
import html
import json
import re
from argparse import Namespace
from pathlib import Path

import pandas as pd
import pytest
import yaml
from rich.console import Console

from sim.commands import report as report_command
from sim.errors import ConfigError
from sim.price import price_scenario, write_price_outputs
from sim.report.html import mark_slos, write_report
from sim.run import run_scenario, write_outputs

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p for p in (ROOT / "scenarios").glob("*.yaml") if "pools" in (yaml.safe_load(p.read_text()) or {}))
SHORT = ("duration_s=20", "warmup_s=2", "replications=1")
PNG = b"\x89PNG\r\n\x1a\n"


def short_overrides() -> tuple[str, ...]:
    """A few seconds of any scenario: the first requests of each class (synthetic or traced)."""
    return ("num_requests=60", "warmup_s=0", "replications=1")


def images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def assert_self_contained(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I), "external reference"
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()
    pngs = images(page)
    assert pngs and all(p.startswith(PNG) and len(p) > 2000 for p in pngs)
    assert page.count("<img") == len(pngs)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A shortened quickstart run with its price study written into the same directory."""
    out = tmp_path_factory.mktemp("run")
    result = run_scenario(
        ROOT / "scenarios/quickstart.yaml", overrides=("duration_s=30", "warmup_s=5", "replications=2")
    )
    write_outputs(result, out, plots=False)
    write_price_outputs(price_scenario(result), out)
    return out


def plan_json(feasible: bool = True) -> dict:
    """A plan in the shape sim/plan.py writes: two layouts, GPU and knob candidates per pool, an
    overloaded evaluation (requests that never finished: sim.plan.LATE_S), a rejected candidate."""
    from sim.plan import LATE_S

    def check(cls, metric, slo, value, ci=0.0, p=99.0):
        return {
            "class": cls,
            "metric": metric,
            "percentile": p,
            "slo": slo,
            "value": value,
            "ci95": ci,
            "met": value + ci <= slo,
            "decided": not value - ci <= slo < value + ci,
            "margin": (slo - value) / slo,
        }

    def evaluation(replicas, checks):
        margin = min(c["margin"] for c in checks)
        return {
            "replicas": replicas,
            "replications": 3,
            "meets": all(c["met"] for c in checks),
            "decided": True,
            "margin": margin,
            "checks": checks,
            "rejected": {checks[0]["class"]: 0.0},
        }

    chat_h100 = [
        evaluation(1, [check("chat", "ttft_s", 0.5, 4.1, 0.9), check("chat", "tpot_s", 0.05, 0.081, 0.01)]),
        evaluation(2, [check("chat", "ttft_s", 0.5, 0.62, 0.08), check("chat", "tpot_s", 0.05, 0.043, 0.002)]),
        evaluation(3, [check("chat", "ttft_s", 0.5, 0.21, 0.02), check("chat", "tpot_s", 0.05, 0.031, 0.001)]),
    ]
    chat_a100 = [
        evaluation(2, [check("chat", "ttft_s", 0.5, LATE_S), check("chat", "tpot_s", 0.05, 0.09, 0.01)]),
        evaluation(3, [check("chat", "ttft_s", 0.5, 1.9, 0.4), check("chat", "tpot_s", 0.05, 0.07, 0.004)]),
        evaluation(5, [check("chat", "ttft_s", 0.5, 0.33, 0.03), check("chat", "tpot_s", 0.05, 0.041, 0.002)]),
    ]
    image_h100 = [
        evaluation(1, [check("image", "e2e_s", 10.0, 31.0, 6.0, 95.0)]),
        evaluation(2, [check("image", "e2e_s", 10.0, 6.5, 0.4, 95.0)]),
    ]
    chat, image = {"model": "llama-3-8b", "tensor_parallel_size": 1}, {"model": "sdxl", "tensor_parallel_size": 1}
    knobs = {"engine.max_num_seqs": 256}

    def pick(pool, label, gpu, knobs, evals, price):
        e = evals[-1]
        fewer = evals[-2]
        return {
            "pool": pool,
            **label,
            "gpu": gpu,
            "knobs": knobs,
            "replicas": e["replicas"],
            "gpus": e["replicas"],
            "cost_per_hour": e["replicas"] * price,
            "usd_per_replica_hour": price,
            "margin": e["margin"],
            "classes": [pool],
            "checks": e["checks"],
            "replications": 3,
            "one_fewer": {k: fewer[k] for k in ("replicas", "margin", "meets", "checks")},
        }

    def candidate(pool, label, gpu, knobs, status, evals, price, reason=None):
        replicas = evals[-1]["replicas"] if status != "rejected" else None
        return {
            "layout_pools": [f"split/{pool}"],
            "pool": pool,
            **label,
            "gpu": gpu,
            "knobs": knobs,
            "status": status,
            "reason": reason,
            "replicas": replicas,
            "usd_per_replica_hour": price,
            "cost_per_hour": None if replicas is None else replicas * price,
            "margin": evals[-1]["margin"] if replicas else None,
            "bounds": {"min_replicas": 1},
            "evaluations": evals,
        }

    def fleet(chat_gpu, chat_n, margin, cost):
        return {
            "cost_per_hour": cost,
            "margin": margin,
            "layout": "split",
            "pools": [
                {"pool": "chat", **chat, "gpu": chat_gpu, "knobs": knobs, "replicas": chat_n},
                {"pool": "image", **image, "gpu": "h100-sxm", "knobs": {}, "replicas": 2},
            ],
        }

    answer_pools = [
        pick("chat", chat, "h100-sxm", knobs, chat_h100, 6.16),
        pick("image", image, "h100-sxm", {}, image_h100, 6.16),
    ]
    return {
        "kind": "plan",
        "scenario": "mixed-chat-image",
        "description": "Chat and images on split or shared pools.",
        "scenario_file": "scenarios/plan_mixed_chat_image.yaml",
        "servesim_version": "0.1.0",
        "settings": {
            "seed": 1,
            "replications": 3,
            "max_replications": 8,
            "duration_s": 300.0,
            "warmup_s": 30.0,
            "drain_timeout_s": None,
        },
        "answer": {
            "feasible": True,
            "layout": "split",
            "cost_per_hour": 30.8,
            "gpus": 5,
            "binding_pool": "image",
            "pools": answer_pools,
        }
        if feasible
        else {"feasible": False, "layout": None, "cost_per_hour": None, "pools": []},
        "layouts": [
            {"name": "split", "feasible": True, "cost_per_hour": 30.8, "reason": None},
            {
                "name": "shared",
                "feasible": False,
                "cost_per_hour": None,
                "reason": "no candidate meets the SLOs of pool(s) shared",
            },
        ],
        "candidates": [
            candidate("chat", chat, "a100-80gb", knobs, "feasible", chat_a100, 2.70),
            candidate(
                "chat",
                chat,
                "l40s",
                {},
                "rejected",
                [],
                2.25,
                "chat: 3.1% of requests are rejected (they cannot fit the KV cache or max_model_len); more replicas do not help",
            ),
            candidate("chat", chat, "h100-sxm", knobs, "chosen", chat_h100, 6.16),
            candidate("image", image, "h100-sxm", {}, "chosen", image_h100, 6.16),
        ],
        "frontier": [fleet("a100-80gb", 5, 0.18, 25.82), fleet("h100-sxm", 3, 0.35, 30.8)],
        "wall_s": 41.5,
        "simulated_replications": 120,
        "resolved_scenario": {"name": "mixed-chat-image", "pools": [], "classes": []},
    }


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plan")
    (out / "plan.json").write_text(json.dumps(plan_json(), indent=2))
    (out / "fleet.yaml").write_text("name: mixed-chat-image-fleet\npools: []\n")
    return out


# --------------------------------------------------------------------------- the kinds of directory


def test_run_and_price_in_one_directory(run_dir):
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.name != "report.html"}
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    page = path.read_text()
    assert_self_contained(page)
    for needle in (
        '<section id="run">',
        '<section id="price">',
        "quickstart",
        "TTFT p99 (ms)",
        "throughput (req/s)",
        'alt="replica state of pool chat"',
        "resolved scenario",
        "<details>",
        "price list vs one flat price",
    ):
        assert needle in page, needle
    assert len(images(page)) == 2  # latency CDFs, replica state (no sensitivity study here)
    # Nothing the run or price wrote is touched.
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.name != "report.html"} == before


def test_latency_cdfs_show_the_slo_targets(run_dir):
    import pandas as pd

    from sim.plots import latency_cdfs

    summary = json.loads((run_dir / "summary.json").read_text())
    fig = latency_cdfs(pd.read_parquet(run_dir / "requests.parquet"), 5.0)
    # quickstart: TTFT and TPOT targets, on the CDF (top) and the tail (bottom) panels
    assert mark_slos(fig, summary["slo"]) == 4
    level = summary["slo"]["chat"]["percentile"] / 100
    dots = {
        (ax.get_yscale(), round(float(line.get_ydata()[0]), 6))
        for ax in fig.axes
        for line in ax.get_lines()
        if line.get_gid() == "slo" and line.get_marker() == "o"
    }
    assert dots == {("linear", round(level, 6)), ("log", round(1 - level, 6))}


def test_an_attainment_slo(tmp_path):
    result = run_scenario(ROOT / "scenarios/quickstart.yaml", overrides=(*SHORT, "slo.attainment=0.95"))
    write_outputs(result, tmp_path, plots=False)
    page = write_report(tmp_path).read_text()
    assert "TTFT ≤ 500 ms, TPOT ≤ 50.0 ms for ≥ 95.0 % of requests" in page


def test_replica_state_marks_failures_and_batch_limits(tmp_path):
    """A run with replica failures lists each outage in its summary, within the run, and the
    report's replica-state figure marks them (and draws the pool's batch limit)."""
    result = run_scenario(ROOT / "scenarios/faults_retry.yaml", overrides=("duration_s=300", "replications=1"))
    chat = result.summary["pools"]["chat"]
    assert chat["outages"] and chat["max_num_seqs"] == result.scenario.pools[0].engine.max_num_seqs
    indices = set(result.replicas.loc[result.replicas["pool"] == "chat", "replica"])
    for rep, replica, down, up in chat["outages"]:
        assert rep == 0 and replica in indices and 0 <= down and (up is None or down < up)
    write_outputs(result, tmp_path, plots=False)
    page = write_report(tmp_path).read_text()
    assert "a replica&#x27;s failure marked x, its time down shaded red" in page or "failure marked x" in page
    assert "against the pool&#x27;s batch limit" in page or "batch limit" in page


def test_the_report_says_what_the_terminal_says_of_an_assumed_gpu(tmp_path, capsys):
    """servesim run's note on a GPU whose roofline efficiencies are assumed is in the report too;
    a fitted GPU gets none."""
    from sim.console import show
    from sim.run import summary_blocks

    for gpu, noted in (("mi300x", True), ("h100-sxm", False)):
        result = run_scenario(ROOT / "scenarios/quickstart.yaml", overrides=(*SHORT, f"pools.chat.gpu={gpu}"))
        out = tmp_path / gpu
        write_outputs(result, out, plots=False)
        page = html.unescape(write_report(out).read_text())
        show(summary_blocks(result.summary, result.scenario), Console(width=400))
        said = capsys.readouterr().out
        note = f"{gpu}'s roofline efficiencies are assumed"
        assert (note in page) == (note in said) == noted


def test_price_with_a_sensitivity_study(tmp_path):
    from sim.price import price_sensitivity

    result = run_scenario(ROOT / "scenarios/pricing_study.yaml", overrides=SHORT)
    report = price_scenario(result)
    report.sensitivity, _ = price_sensitivity(
        result.scenario, ROOT / "scenarios", report.prices, loads=(0.5,), steps=(20,)
    )
    write_price_outputs(report, tmp_path)
    page = write_report(tmp_path, tmp_path / "sub" / "page.html").read_text()
    assert '<section id="price">' in page and '<section id="run">' not in page
    assert "sensitivity (same price list" in page
    assert len(images(page)) == 1
    assert_self_contained(page)


def test_sweep(tmp_path):
    from sim.sweep import run_sweep

    grid = {"classes.chat.arrival.rate": [5, 15]}
    run_sweep(ROOT / "scenarios/quickstart.yaml", grid, tmp_path, overrides=SHORT, workers=1)
    page = write_report(tmp_path).read_text()
    assert '<section id="sweep">' in page and "arrival.rate" in page and "2 of 2 points finished" in page
    assert "TTFT p99 ms" in page  # the table servesim sweep prints
    assert len(images(page)) == 2  # the throughput-latency curves and the cost frontier
    assert "±95 % CI over replications" in page and "cost frontier" in page
    assert_self_contained(page)
    # Every cell of the table servesim sweep prints is on the page.
    from sim.config import load_scenario
    from sim.console import plain
    from sim.sweep import read_results, results_frame, sweep_table

    base, _ = load_scenario(ROOT / "scenarios/quickstart.yaml", list(SHORT))
    table = sweep_table(results_frame(read_results(tmp_path), list(grid)), base, list(grid))
    text = html.unescape(page)
    for cell in [plain(c) for row in table.rows for c in row] + [plain(c.header) for c in table.columns]:
        assert cell in text, cell
    # The base scenario gone: a plain table, the curve without SLO lines, and a note saying so.
    manifest = json.loads((tmp_path / "sweep.json").read_text())
    (tmp_path / "sweep.json").write_text(json.dumps({**manifest, "scenario": str(tmp_path / "gone.yaml")}))
    page = write_report(tmp_path).read_text()
    assert "does not load from here" in page and "chat.ttft_s_p99" in page and len(images(page)) == 2


def test_plan(plan_dir):
    page = write_report(plan_dir).read_text()
    assert_self_contained(page)
    for needle in (
        '<section id="plan">',
        "binding pool image",
        "$30.8/hour",
        "one replica fewer",
        "-24% (misses)",
        "they cannot fit the KV cache",
        "no candidate meets the SLOs of pool(s) shared",
        "fleet.yaml",
        "p99 TTFT",
        "llama-3-8b a100-80gb engine.max_num_seqs=256",
        "chosen",
        "rejected",
    ):
        assert needle in page, needle
    # The frontier, and one replicas-vs-metric figure per pool with evaluations.
    assert len(images(page)) == 3
    # Everything servesim plan prints is on the page: every line (notes included) and every
    # table cell.
    import html

    from sim.console import Table, plain
    from sim.plan import plan_blocks

    text = html.unescape(page)
    for block in plan_blocks(json.loads((plan_dir / "plan.json").read_text())):
        if isinstance(block, Table):
            cells = [plain(c) for row in block.rows for c in row] + [plain(block.title or "")]
        else:
            cells = [plain(block.markup).strip()]
        for cell in cells:
            assert cell in text, cell


def test_plan_with_missing_optional_fields(tmp_path):
    plan = plan_json(feasible=False)
    for key in ("layouts", "candidates", "frontier", "wall_s", "settings", "resolved_scenario"):
        del plan[key]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    page = write_report(tmp_path).read_text()
    assert "no feasible fleet" in page and "<img" not in page


def test_cli_glue(plan_dir, tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    report_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(plan_dir), "-o", str(tmp_path / "r.html")])
    assert isinstance(args, Namespace) and report_command.run(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r.html")
    assert (tmp_path / "r.html").stat().st_size > 10_000


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "files, needle",
    [
        ({}, "no servesim results here"),
        ({"notes.txt": "hello"}, "no servesim results here"),
        ({"summary.json": "{not json"}, "summary.json: not valid JSON"),
        ({"summary.json": "[1, 2]"}, "summary.json: holds a JSON list"),
        ({"summary.json": '{"classes": {}}'}, "summary.json: no 'pools' key"),
        ({"price.json": '{"scenario": "x"}'}, "price.json: no 'prices' key"),
        ({"plan.json": '{"answer": {"pools": 3}}'}, "answer.pools is not a list"),
        ({"results.jsonl": "garbage\n"}, "results.jsonl: no complete JSON line"),
        ({"sweep.json": '{"scenario": "x.yaml", "grid": []}'}, "'grid' is not an object of value lists"),
    ],
)
def test_bad_directory_is_a_one_line_error(tmp_path, files, needle):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as err:
        write_report(tmp_path)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "report.html").exists()


def test_corrupt_parquet_is_a_one_line_error(run_dir, tmp_path):
    for name in ("summary.json", "scenario.json"):
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())
    (tmp_path / "requests.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(
        ConfigError, match=r"requests\.parquet: not a readable parquet file .*expected the requests table"
    ):
        write_report(tmp_path)


def test_bad_paths(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="no such directory"):
        write_report(tmp_path / "nope")
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        write_report(tmp_path / "f")
    with pytest.raises(ConfigError, match="one of the results files"):
        write_report(run_dir, run_dir / "summary.json")
    with pytest.raises(ConfigError, match="is a directory"):
        write_report(run_dir, tmp_path)


# --------------------------------------------------------------------------- every shipped scenario


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_shipped_scenario_runs_prices_and_reports(path, tmp_path, skip_without_traces):
    """Each shipped scenario, shortened, runs once for three checks. The run writes per-class
    metrics, parquet and plots. The price bills every class, and no request more than the bill.
    The report page is self-contained, with every class and one replica-state plot per pool.
    These were three tests that ran every scenario three times: about half the suite's time."""
    skip_without_traces(path)
    result = run_scenario(path, overrides=("duration_s=120", "warmup_s=20", "replications=1"))
    write_outputs(result, tmp_path, plots=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    for cls in yaml.safe_load(path.read_text())["classes"]:
        st = summary["classes"][cls["name"]]
        assert st["arrivals"]["mean"] > 0 and st["e2e_s_p50"]["mean"] > 0
    assert len(pd.read_parquet(tmp_path / "requests.parquet")) == summary["conservation"]["arrived"]
    for png in ("latency_cdf.png", "replica_state.png"):
        assert (tmp_path / png).stat().st_size > 10_000

    priced = price_scenario(result)
    o = priced.overall
    assert o["bill_usd"] > 0 and o["revenue_usd"] > 0
    assert priced.requests["loaded_usd"].sum() <= o["bill_usd"] * (1 + 1e-9)
    assert set(priced.classes["class"]) == {c.name for c in result.scenario.classes}

    write_price_outputs(priced, tmp_path)
    page = write_report(tmp_path).read_text()
    assert '<section id="run">' in page and '<section id="price">' in page
    assert_self_contained(page)
    for cls in result.scenario.classes:
        assert f"<td>{cls.name}</td>" in page
    assert len(images(page)) == 1 + len(result.scenario.pools)  # CDFs, and each pool's replica state


@pytest.mark.parametrize(
    ("scenario", "overrides"),
    [
        # overloaded, thin percentiles, CIs wider than their values
        (
            "quickstart.yaml",
            ("pools.chat.replicas=1", "classes.chat.arrival.rate=30", "duration_s=60", "replications=2"),
        ),
        # a pipeline's per-stage time and cost shares
        ("llm_image_caption_pipeline.yaml", ("replications=2",)),
    ],
)
def test_the_report_shows_every_line_the_terminal_prints(tmp_path, capsys, monkeypatch, scenario, overrides):
    """Issue 20, item 3: the page left out the overload warning and the pipeline's stage shares.
    Every line `servesim run` prints (tables aside, each checked cell by cell) is on the page."""
    from sim.cli import main

    argv = ["run", str(ROOT / "scenarios" / scenario), "-o", str(tmp_path / "o"), "--no-plots", "--quiet"]
    assert main(argv + [x for o in overrides for x in ("--set", o)]) == 0
    said = capsys.readouterr().out
    page = html.unescape(re.sub(r"<[^>]+>", "\n", write_report(tmp_path / "o").read_text()))
    shown = {line.strip() for line in page.splitlines() if line.strip()}
    lines = [line.strip() for line in said.splitlines() if line.strip() and not line.startswith("wrote ")]
    for line in lines:
        if line[0] in "┏┡└┃":
            continue
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            assert all(c in shown for c in cells if c), line
        else:
            assert line in shown, line
    assert "overloaded" in said or "stages:" in said

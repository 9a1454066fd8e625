"""sim/plan.py: CI-decided checks, layouts and candidates, analytic bounds, the search's
answer reproduced by ``servesim run`` on the same seeds, resume from the evaluations file,
determinism across worker counts, bad plan blocks as one-line errors."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from sim.cli import main
from sim.config import parse_scenario
from sim.errors import ConfigError
from sim.plan import (
    EVALUATIONS_FILE,
    Check,
    Settings,
    bounds,
    candidates,
    decide,
    fleet_scenario,
    layouts,
    plan_fleet,
    write_plan,
)
from sim.run import run_scenario

ROOT = Path(__file__).resolve().parents[2]
STEP_S, PROMPT, OUTPUT = 0.01, 100, 20


def scenario(rate: float = 8.0, **plan) -> dict:
    """One LLM class on a constant-cost pool serving one request at a time: each request holds
    a replica for OUTPUT steps of STEP_S."""
    return {
        "name": "plan-test",
        "seed": 3,
        "duration_s": 200,
        "warmup_s": 10,
        "pools": [
            {
                "name": "p",
                "model": "llama-3-8b",
                "gpu": "h100-sxm",
                "engine": {"max_num_seqs": 1, "enable_prefix_caching": False},
                "cost_model": {"kind": "constant", "step_s": STEP_S},
            }
        ],
        "classes": [
            {
                "name": "a",
                "pool": "p",
                "arrival": {"process": "poisson", "rate": rate},
                "prompt_tokens": {"dist": "fixed", "value": PROMPT},
                "output_tokens": {"dist": "fixed", "value": OUTPUT},
                "slo": {"e2e_s": 0.5, "percentile": 99},
            }
        ],
        "plan": {"replications": 3, "max_replications": 6, **plan},
    }


def mixed(**plan) -> dict:
    """Two text classes and two image classes on four pools (roofline costs)."""
    text = lambda name, rate, slo: {  # noqa: E731
        "name": name,
        "pool": name,
        "arrival": {"process": "poisson", "rate": rate},
        "prompt_tokens": {"dist": "lognormal", "mean": 600, "cv": 0.8, "max": 4000},
        "output_tokens": {"dist": "lognormal", "mean": 150, "cv": 0.8, "max": 800},
        "slo": slo,
    }
    return {
        "name": "mixed-test",
        "seed": 9,
        "duration_s": 200,
        "warmup_s": 20,
        "pools": [
            {"name": "chat", "model": "llama-3-8b", "gpu": "h100-sxm", "router": "least_outstanding"},
            {"name": "batch", "model": "llama-3-8b", "gpu": "h100-sxm"},
            {"name": "img", "model": "sdxl", "gpu": "h100-sxm", "batching": {"max_batch_size": 4, "max_wait_s": 0.2}},
            {"name": "img2", "model": "sdxl", "gpu": "h100-sxm", "batching": {"max_batch_size": 4, "max_wait_s": 0.2}},
        ],
        "classes": [
            text("chat", 12, {"ttft_s": 1.0, "tpot_s": 0.05, "percentile": 99}),
            text("batch", 4, None),
            {
                "name": "img",
                "pool": "img",
                "arrival": {"process": "poisson", "rate": 0.6},
                "image": {"steps": 30},
                "slo": {"e2e_s": 12, "percentile": 95},
            },
            {
                "name": "img2",
                "pool": "img2",
                "arrival": {"process": "poisson", "rate": 0.2},
                "image": {"steps": 20},
                "slo": {"e2e_s": 30, "attainment": 0.9},
            },
        ],
        "plan": {
            "gpus": ["a100-80gb", "h100-sxm"],
            "replications": 2,
            "max_replications": 4,
            "layouts": [
                {"name": "split"},
                {"name": "shared", "merge": {"llm": ["chat", "batch"], "images": ["img", "img2"]}},
            ],
            **plan,
        },
    }


# --------------------------------------------------------------------------- decisions


def reps(values: list[float]) -> list[dict]:
    return [{"values": {"a/e2e_s": v}} for v in values]


CHECK = Check("a", "e2e_s", 1.0, 99)


def test_met_only_when_the_ci_is_below_the_target():
    sure = decide([CHECK], reps([0.50, 0.52, 0.48]))
    assert sure["meets"] and sure["decided"] and sure["margin"] == pytest.approx(0.5)
    close = decide([CHECK], reps([0.7, 1.2, 0.9]))  # mean 0.93 but the CI straddles 1.0
    assert not close["meets"] and not close["decided"]
    assert close["checks"][0]["value"] == pytest.approx(0.9333, rel=1e-3)
    missed = decide([CHECK], reps([2.0, 2.1, 1.9]))
    assert not missed["meets"] and missed["decided"] and missed["margin"] < 0


def test_margins_point_the_same_way_for_latencies_and_fractions():
    assert Check("a", "e2e_s", 2.0).margin(1.0) == pytest.approx(0.5)
    assert Check("a", "e2e_s", 2.0).margin(3.0) == pytest.approx(-0.5)
    # Attainment 0.9: the room is the 10 % allowed to miss; 95 % attained uses half of it.
    assert Check("a", "attainment", 0.9).margin(0.95) == pytest.approx(0.5)
    assert Check("a", "attainment", 0.9).margin(0.85) == pytest.approx(-0.5)
    assert Check("a", "e2e_s", 2.0).margin(math.inf) == -math.inf


# --------------------------------------------------------------------------- layouts, candidates, bounds


def test_layouts_merge_pools_and_keep_class_routing():
    sc = parse_scenario(mixed())
    split, shared = layouts(sc)
    assert [(p.name, p.classes) for p in split.problems] == [
        ("chat", (0,)),
        ("batch", (1,)),
        ("img", (2,)),
        ("img2", (3,)),
    ]
    assert [(p.name, p.classes) for p in shared.problems] == [("llm", (0, 1)), ("images", (2, 3))]
    assert shared.problems[0].pool.router == "least_outstanding"  # the first merged pool's knobs


def test_pipelines_are_refused_with_one_line():
    sc = parse_scenario(yaml.safe_load((ROOT / "scenarios/llm_image_caption_pipeline.yaml").read_text()))
    with pytest.raises(ConfigError, match="pipeline"):
        layouts(sc)


def test_candidates_cover_the_space_and_reject_invalid_combinations():
    raw = mixed(tensor_parallel_size=[1, 3])  # 3 does not divide Llama-3-8B's 32 heads
    sc = parse_scenario(raw)
    chat = layouts(sc)[0].problems[0]
    cands = candidates(sc, chat)
    assert len(cands) == 4
    bad = [c for c in cands if c.status == "rejected"]
    assert len(bad) == 2 and all("tensor_parallel_size 3 must divide" in c.reason for c in bad)
    img = candidates(sc, layouts(sc)[0].problems[2])
    assert {c.label["tensor_parallel_size"] for c in img} == {1}  # TP does not apply to diffusion
    h100 = next(c for c in cands if c.label["gpu"] == "h100-sxm" and c.status == "pending")
    assert h100.usd_per_replica_hour == pytest.approx(6.16)
    priced = candidates(parse_scenario(mixed(prices={"h100-sxm": 3.0})), chat)
    assert next(c for c in priced if c.label["gpu"] == "h100-sxm").usd_per_replica_hour == 3.0


def test_throughput_bound_is_offered_work_over_one_replica():
    """With one request at a time and a constant step, a request holds a replica for
    OUTPUT x STEP_S seconds, so the offered load is rate x that (a utilisation of 1.6 at
    8 req/s) and the fewest replicas with utilisation < 1 is 2."""
    sc = parse_scenario(scenario(rate=8.0))
    prob = layouts(sc)[0].problems[0]
    cand = candidates(sc, prob)[0]
    assert bounds(sc, cand, prob.classes, Settings.of(sc), ROOT) is None
    assert cand.bounds["a/gpu_s_per_request"] == pytest.approx(OUTPUT * STEP_S)
    assert cand.bounds["offered_load"] == pytest.approx(8.0 * OUTPUT * STEP_S, rel=0.08)  # a Poisson count in 200 s
    assert cand.bounds["min_replicas"] == 2


def test_bounds_reject_what_no_replica_count_can_fix():
    raw = scenario()
    raw["classes"][0]["slo"] = {"e2e_s": 0.1, "percentile": 99}  # alone, a request takes 0.2 s
    sc = parse_scenario(raw)
    prob = layouts(sc)[0].problems[0]
    cand = candidates(sc, prob)[0]
    assert cand.status == "pending"
    raw = mixed(gpus=["l4"])
    raw["pools"][0]["model"] = raw["pools"][1]["model"] = "llama-3-70b"
    sc = parse_scenario(raw)
    prob = layouts(sc)[0].problems[0]
    cand = candidates(sc, prob)[0]
    why = bounds(sc, cand, prob.classes, Settings.of(sc), ROOT)
    assert why.startswith("does not fit: llama-3-70b does not fit l4")
    raw = mixed()
    raw["classes"][0]["slo"]["tpot_s"] = 0.001  # a batch of one takes several ms per token
    sc = parse_scenario(raw)
    prob = layouts(sc)[0].problems[0]
    cand = candidates(sc, prob)[0]
    why = bounds(sc, cand, prob.classes, Settings.of(sc), ROOT)
    assert "TPOT is at least" in why and "even on an idle replica" in why


# --------------------------------------------------------------------------- the search


@pytest.fixture(scope="module")
def mixed_plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan")
    sc = parse_scenario(mixed())
    result = plan_fleet(sc, ROOT, out_dir=out, workers=1)
    write_plan(result, out)
    return sc, result, out


def test_answer_is_the_cheapest_layout_and_every_chosen_pool_meets_its_slos(mixed_plan):
    sc, result, out = mixed_plan
    a = result.answer
    assert a["feasible"]
    costs = {row["name"]: row["cost_per_hour"] for row in result.layout_rows}
    assert a["cost_per_hour"] == pytest.approx(min(c for c in costs.values() if c is not None))
    for p in a["pools"]:
        assert all(c["met"] for c in p["checks"])
        assert p["cost_per_hour"] == pytest.approx(p["replicas"] * p["usd_per_replica_hour"])
        if p["one_fewer"] is not None:
            assert not p["one_fewer"]["meets"]
        # No feasible candidate of the same pool is cheaper.
        for cs in result.candidates.values():
            for c in cs:
                if c.problem == p["pool"] and c.status == "feasible":
                    assert c.cost(c.replicas) >= p["cost_per_hour"] - 1e-9
    assert {c["metric"] for p in a["pools"] for c in p["checks"]} >= {
        "ttft_s",
        "tpot_s",
        "e2e_s",
        "stable",
        "attainment",
    }
    plan = json.loads((out / "plan.json").read_text())
    assert plan["kind"] == "plan" and plan["answer"]["pools"] == json.loads(json.dumps(a["pools"]))
    assert plan["frontier"] and plan["frontier"][0]["cost_per_hour"] == pytest.approx(a["cost_per_hour"])
    margins = [pt["margin"] for pt in plan["frontier"]]
    assert margins == sorted(margins)  # a Pareto frontier: more margin costs more
    reasons = [c["reason"] for c in plan["candidates"] if c["status"] == "rejected"]
    assert all(reasons)


def test_fleet_yaml_reproduces_the_plans_figures_on_the_same_seeds(mixed_plan):
    """Common random numbers: a pool simulated alone in the plan sees the arrivals it sees in
    the whole fleet, so ``servesim run fleet.yaml`` gives the plan's percentiles exactly."""
    sc, result, out = mixed_plan
    fleet = parse_scenario(yaml.safe_load((out / "fleet.yaml").read_text()))
    assert fleet.plan is None
    run = run_scenario(fleet, ROOT)
    for p in result.answer["pools"]:
        if p["replications"] != fleet.replications:
            continue  # the run's mean covers more replications than this pool needed
        for c in p["checks"]:
            if c["metric"] in ("stable", "attainment"):
                continue
            got = run.summary["classes"][c["class"]][f"{c['metric']}_p{c['percentile']:g}"]["mean"]
            assert got == pytest.approx(c["value"], rel=1e-9)


def test_a_second_run_resumes_from_the_evaluations_file(mixed_plan, tmp_path):
    sc, result, out = mixed_plan
    again = plan_fleet(sc, ROOT, out_dir=out, workers=1)
    assert again.simulated == 0
    assert again.answer == result.answer
    # A cut last line (a killed plan) is skipped; everything before it is reused.
    lines = (out / EVALUATIONS_FILE).read_text().splitlines()
    part = tmp_path / "part"
    part.mkdir()
    (part / EVALUATIONS_FILE).write_text("\n".join(lines[:-3]) + "\n" + lines[-3][:25])
    resumed = plan_fleet(sc, ROOT, out_dir=part, workers=1)
    assert 0 < resumed.simulated <= 3
    assert resumed.answer == result.answer


def test_two_workers_give_the_same_answer(mixed_plan):
    sc, result, _ = mixed_plan
    par = plan_fleet(sc, ROOT, workers=2)
    assert par.answer == result.answer
    assert par.frontier == result.frontier


def test_trace_replay_needs_one_replication():
    raw = yaml.safe_load((ROOT / "scenarios/azure_conv_h100.yaml").read_text())
    raw["classes"][0]["trace"]["max_requests"] = 600
    raw["warmup_s"] = 5
    raw["plan"] = {"replications": 3}
    result = plan_fleet(parse_scenario(raw), ROOT, workers=1)
    assert result.answer["feasible"]
    assert all(e["replications"] == 1 for cs in result.candidates.values() for c in cs for e in c.evaluations)


def test_the_fleet_scenario_is_runnable_and_priced_as_planned(mixed_plan):
    sc, result, _ = mixed_plan
    raw = fleet_scenario(result)
    assert {p["name"] for p in raw["pools"]} == {p["pool"] for p in result.answer["pools"]}
    total = sum(p["replicas"] * p.get("tensor_parallel_size", 1) * p["price_per_gpu_hour"] for p in raw["pools"])
    assert total == pytest.approx(result.answer["cost_per_hour"])


def test_cli_plan_writes_outputs_and_prints_the_answer(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario(rate=4.0)))
    assert main(["plan", str(path), "-o", str(tmp_path / "out"), "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "cheapest fleet" in text and "candidates" in text
    assert {"plan.json", "fleet.yaml", EVALUATIONS_FILE} <= {p.name for p in (tmp_path / "out").iterdir()}


def test_infeasible_plan_exits_1_with_every_reason(tmp_path, capsys):
    raw = scenario(rate=30.0, max_replicas=2)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["plan", str(path), "--workers", "1", "-o", str(tmp_path / "out")]) == 1
    assert "no fleet meets every SLO" in capsys.readouterr().out
    plan = json.loads((tmp_path / "out/plan.json").read_text())
    assert not plan["answer"]["feasible"] and not (tmp_path / "out/fleet.yaml").exists()
    (cand,) = plan["candidates"]
    # 30 req/s x 0.2 s of work each: 6 replicas' worth of offered load (a Poisson count).
    assert (
        re.match(r"needs at least [67] replicas by its throughput bound", cand["reason"])
        and "max_replicas is 2" in cand["reason"]
    )


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "plan, message",
    [
        ({"gpus": ["h900"]}, "plan.gpus: unknown gpu 'h900'"),
        ({"replications": 1}, "plan.replications"),
        ({"replications": 5, "max_replications": 3}, "max_replications (3) must be >= replications (5)"),
        ({"layouts": [{"name": "x", "merge": {"m": ["p", "q"]}}]}, "unknown pool 'q'"),
        ({"layouts": [{"name": "x", "merge": {"m": ["p"]}}]}, "merge at least two pools"),
        ({"pools": {"zz": {"gpus": ["h100-sxm"]}}}, "plan.pools.zz: unknown pool"),
        ({"pools": {"p": {"models": ["gpt-9"]}}}, "unknown model 'gpt-9'"),
        ({"prices": {"h100-sxm": -1}}, "plan.prices.h100-sxm"),
        ({"max_replicas": 0}, "plan.max_replicas"),
        ({"surprise": 1}, "plan.surprise: unknown field"),
    ],
)
def test_bad_plan_blocks_are_one_line_errors(tmp_path, capsys, plan, message):
    raw = scenario()
    raw["plan"] = plan
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_merging_pools_of_different_models_is_refused(tmp_path, capsys):
    raw = mixed()
    raw["plan"]["layouts"] = [{"name": "bad", "merge": {"x": ["chat", "img"]}}]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["plan", str(path)]) == 2
    assert "merged pools must serve one model" in capsys.readouterr().err


def test_a_scenario_without_a_plan_block_is_refused(capsys):
    assert main(["plan", str(ROOT / "scenarios/quickstart.yaml")]) == 2
    assert "no 'plan' block" in capsys.readouterr().err


def test_plan_flags_are_checked(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario()))
    assert main(["plan", str(path), "--address", "1.2.3.4:6379"]) == 2
    assert "--address needs --backend ray" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["plan", str(path), "--workers", "0"])
    assert exc.value.code == 2


def test_attainment_slo_is_met_by_the_fraction_of_requests():
    raw = scenario(rate=2.0)
    raw["classes"][0]["slo"] = {"e2e_s": 0.25, "attainment": 0.5}
    raw.pop("plan")
    raw["replications"] = 2
    run = run_scenario(parse_scenario(raw))
    att = run.summary["classes"]["a"]["slo_attainment"]["mean"]
    assert run.summary["slo_met"]["a"] is bool(att >= 0.5)
    assert 0 < att < 1
    assert np.isfinite(att)


def test_ray_backend_gives_the_local_answer(tmp_path):
    """Candidate searches as Ray tasks; the driver writes the evaluations file for them."""
    ray = pytest.importorskip("ray")
    raw = scenario(rate=8.0, gpus=["a100-80gb", "h100-sxm", "h200"])
    sc = parse_scenario(raw)
    local = plan_fleet(sc, ROOT, workers=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = plan_fleet(sc, ROOT, out_dir=tmp_path, backend="ray")
    finally:
        ray.shutdown()
    assert remote.answer == local.answer
    assert len((tmp_path / EVALUATIONS_FILE).read_text().splitlines()) == remote.simulated > 0


def disaggregated(**plan) -> dict:
    """A long-prompt class on a prefill pool + decode pool pair (Llama-3-8B, roofline), with
    an aggregated layout to compare."""
    return {
        "name": "pd-plan-test",
        "seed": 5,
        "duration_s": 120,
        "warmup_s": 10,
        "pools": [
            {"name": "pre", "model": "llama-3-8b", "gpu": "h100-sxm", "router": "least_outstanding"},
            {
                "name": "dec",
                "model": "llama-3-8b",
                "gpu": "h100-sxm",
                "router": "least_outstanding",
                "disaggregation": {"prefill_pool": "pre"},
            },
        ],
        "classes": [
            {
                "name": "rag",
                "pool": "dec",
                "arrival": {"process": "poisson", "rate": 12},
                "prompt_tokens": {"dist": "lognormal", "mean": 3000, "cv": 0.5, "max": 7000},
                "output_tokens": {"dist": "lognormal", "mean": 150, "cv": 0.8, "max": 600},
                "slo": {"ttft_s": 0.5, "tpot_s": 0.0125, "percentile": 99},
            }
        ],
        "plan": {
            "replications": 3,
            "max_replications": 5,
            "max_replicas": 12,
            "pools": {"dec": {"pd_ratios": ["2:1", "1:1", "1:2"]}},
            "layouts": [{"name": "disaggregated"}, {"name": "aggregated", "merge": {"both": ["pre", "dec"]}}],
            **plan,
        },
    }


@pytest.fixture(scope="module")
def pd_plan(tmp_path_factory):
    sc = parse_scenario(disaggregated())
    out = tmp_path_factory.mktemp("pd-plan")
    result = plan_fleet(sc, ROOT, out_dir=out, workers=1)
    write_plan(result, out)
    return sc, result, out


def test_a_disaggregated_pool_is_sized_with_its_prefill_pool_in_units_of_a_ratio(pd_plan):
    sc, result, out = pd_plan
    lays = {lay.name: lay for lay in result.layouts}
    (dis,) = lays["disaggregated"].problems
    assert dis.prefill is not None and dis.prefill.name == "pre" and dis.pool.disaggregation is not None
    (agg,) = lays["aggregated"].problems
    assert agg.prefill is None and agg.pool.disaggregation is None  # merged: it prefills and decodes
    cands = result.candidates[dis.key]
    assert sorted(c.label["pd_ratio"] for c in cands) == ["1:1", "1:2", "2:1"]
    price = 6.16  # the catalog's H100 price
    for c in cands:
        p, d = c.ratio
        assert c.usd_per_replica_hour == pytest.approx((p + d) * price)
        pre, dec = c.fleet(3)
        assert (pre.replicas, dec.replicas) == (3 * p, 3 * d)
        # The throughput bound holds each side below full use.
        assert c.bounds["min_replicas"] * p > c.bounds["offered_load_prefill"]
        assert c.bounds["min_replicas"] * d > c.bounds["offered_load_decode"]
        for e in c.evaluations:
            assert e["replicas"] >= 1  # units


def test_plan_compares_disaggregated_with_aggregated_and_says_why_the_other_lost(pd_plan):
    sc, result, out = pd_plan
    a = result.answer
    assert a["feasible"]
    rows = {r["name"]: r for r in result.layout_rows}
    loser = rows["aggregated" if a["layout"] == "disaggregated" else "disaggregated"]
    assert loser["reason"]
    if loser["feasible"]:
        assert loser["reason"].startswith(f"${loser['cost_per_hour'] - a['cost_per_hour']:,.2f}/h")
    (pick,) = a["pools"]
    assert all(c["met"] for c in pick["checks"])
    if a["layout"] == "disaggregated":
        p, d = (int(x) for x in pick["pd_ratio"].split(":"))
        assert pick["replicas"] == pick["units"] * d and pick["prefill"]["replicas"] == pick["units"] * p
        assert a["gpus"] == pick["replicas"] + pick["prefill"]["replicas"]
        assert pick["cost_per_hour"] == pytest.approx(a["gpus"] * 6.16)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["answer"]["pools"] == json.loads(json.dumps(a["pools"]))


def test_the_disaggregated_fleet_yaml_reproduces_the_plans_figures(pd_plan):
    sc, result, out = pd_plan
    fleet = parse_scenario(yaml.safe_load((out / "fleet.yaml").read_text()))
    run = run_scenario(fleet, ROOT)
    (pick,) = result.answer["pools"]
    if pick["replications"] != fleet.replications:
        pytest.skip("the run covers more replications than the plan needed")
    for c in pick["checks"]:
        got = run.summary["classes"][c["class"]][f"{c['metric']}_p{c['percentile']:g}"]["mean"]
        assert got == pytest.approx(c["value"], rel=1e-9)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["plan"]["pools"]["dec"].update(pd_ratios=["1-2"]), "write prefill:decode replicas"),
        (lambda r: r["plan"]["pools"]["dec"].update(pd_ratios=["0:1"]), "from 1 to 64"),
    ],
)
def test_bad_pd_ratios_are_one_line(change, message):
    raw = disaggregated()
    change(raw)
    with pytest.raises(ConfigError, match=message) as exc:
        parse_scenario(raw)
    assert "\n" not in str(exc.value)


def test_a_prefill_pool_serving_classes_of_its_own_is_refused_by_the_plan():
    raw = disaggregated()
    raw["classes"].append({**raw["classes"][0], "name": "direct", "pool": "pre"})
    raw["plan"]["layouts"] = None
    with pytest.raises(ConfigError, match="prefills for 'dec' and also serves classes"):
        layouts(parse_scenario(raw))

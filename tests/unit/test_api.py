"""``import servesim``: the documented Python API, and the JSON Schema shipped for editors."""

import json
from pathlib import Path

import pytest
import yaml

import servesim

ROOT = Path(__file__).resolve().parents[2]
SHORT = ["duration_s=60", "warmup_s=10", "replications=2"]


def test_run_price_and_the_warmup_column():
    result = servesim.run(ROOT / "scenarios/pricing_study.yaml", overrides=SHORT)
    assert isinstance(result, servesim.RunResult)
    req = result.requests
    assert req["warmup"].dtype == bool
    assert (req.loc[req["warmup"], "arrival_s"] < 10).all() and (req.loc[~req["warmup"], "arrival_s"] >= 10).all()
    assert result.summary["classes"]["chat"]["ttft_s_p99"]["n"] == 2
    report = servesim.price(result, ROOT / "scenarios/prices/example.yaml")
    assert isinstance(report, servesim.PriceReport) and set(report.classes["class"]) == {"chat", "image"}


def test_a_scenario_built_in_python():
    raw = yaml.safe_load((ROOT / "scenarios/quickstart.yaml").read_text())
    raw["duration_s"], raw["warmup_s"], raw["replications"] = 40, 5, 1
    sc = servesim.scenario(raw)
    assert isinstance(sc, servesim.Scenario)
    assert servesim.run(sc, overrides=["seed=3"]).summary["seed"] == 3
    raw["pools"][0]["replicas"] = 0
    with pytest.raises(servesim.ConfigError, match=r"pools\.0\.replicas"):
        servesim.scenario(raw)
    assert servesim.load(ROOT / "scenarios/quickstart.yaml", ["duration_s=40"]).duration_s == 40


def test_plan_from_python():
    raw = yaml.safe_load((ROOT / "scenarios/plan_image_service.yaml").read_text())
    raw["plan"]["gpus"] = raw["plan"]["gpus"][:1]
    result = servesim.plan(servesim.scenario(raw), overrides=["duration_s=120"], workers=1)
    assert isinstance(result, servesim.PlanResult) and "feasible" in result.answer
    with pytest.raises(servesim.ConfigError, match="no 'plan' block"):
        servesim.plan(ROOT / "scenarios/quickstart.yaml")


def test_the_shipped_schema_is_the_one_the_definitions_give():
    from sim.docgen.schema import DEFAULT, schema_text

    assert DEFAULT.read_text() == schema_text(), "run `make schema` and commit docs/scenario.schema.json"
    schema = json.loads(DEFAULT.read_text())
    assert schema["title"] == "servesim scenario" and "pools" in schema["properties"]


def test_every_shipped_scenario_meets_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = servesim.schema()
    for path in sorted((ROOT / "scenarios").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if "pools" in (raw or {}):
            jsonschema.validate(raw, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "pools": "none"}, schema)

"""Every shipped scenario validates and parses back as it was written out. (That each one runs,
prices and reports, shortened, is tests/unit/test_report_html.py's.)"""

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize(
    "path", [p for p in SCENARIOS if "pools" in (yaml.safe_load(p.read_text()) or {})], ids=lambda p: p.stem
)
def test_a_scenario_written_out_parses_back_as_it_was(path):
    """scenario.json says what ran; it must also run again. A diffusion pool was written with the
    `engine` block it may not take (and an LLM pool with `batching: null`), so the file of any
    diffusion run failed to parse back, and so did a plan block's unset per-pool lists."""
    from sim.config import load_scenario, parse_scenario

    scenario, _ = load_scenario(path)
    assert parse_scenario(json.loads(scenario.model_dump_json())) == scenario
    assert parse_scenario(scenario.model_dump()) == scenario

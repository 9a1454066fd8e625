"""The generated reference (``sim/docgen/reference.py``, ``docs/reference/``) is complete and current.

* every field of every model reachable from ``sim.config.Scenario`` says what it means (its
  docstring, which pydantic makes its description), and every model has a docstring for its
  section;
* ``docs/reference/*.md`` equal a fresh generation (``make reference``);
* the scenario page has a section per model, a row per field with its default, and every
  allowed value of a ``Literal`` field; the CLI page names every sub-command and flag; the
  catalog page every shipped LLM, diffusion pipeline and GPU.
"""

from __future__ import annotations

import argparse
import functools
import re
import subprocess
import sys

import pytest

from sim.config import Scenario
from sim.docgen import reference

MODELS = reference.reachable_models(Scenario)
SHIPPED = {name: reference.DEFAULT_OUT / name for name in reference.PAGES}
fresh_pages = functools.cache(reference.pages)
"""The pages as generated now (once per session)."""


def test_the_walk_reaches_every_model_of_the_schema():
    names = {m.__name__ for m in MODELS}
    for expected in (
        "Scenario",
        "ScenarioCatalog",
        "PoolConfig",
        "EngineConfig",
        "DiffusionBatching",
        "FaultConfig",
        "RooflineCost",
        "ConstantCost",
        "ProfileCost",
        "RequestClass",
        "PoissonArrival",
        "GammaArrival",
        "ConstantArrival",
        "PiecewiseArrival",
        "FixedLength",
        "UniformLength",
        "LognormalLength",
        "ExponentialLength",
        "EmpiricalLength",
        "TraceSource",
        "ImageSpec",
        "Stage",
        "RetryPolicy",
        "SLO",
        "PlanConfig",
        "PlanPoolSpace",
        "PlanLayout",
    ):
        assert expected in names
    assert len(names) == len(MODELS), "a model is visited twice"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_says_what_it_means(model):
    missing = [name for name, f in model.model_fields.items() if not (f.description or "").strip()]
    assert not missing, (
        f"{model.__name__} field(s) {missing} have no description: write a docstring under each field in "
        "sim/config.py, then run `make reference`"
    )
    assert (model.__dict__.get("__doc__") or "").strip(), f"{model.__name__} has no docstring (its section's text)"


@pytest.mark.parametrize("name", reference.PAGES)
def test_the_shipped_page_is_current(name):
    shipped = SHIPPED[name]
    assert shipped.is_file(), f"docs/reference/{name} is missing: run `make reference`"
    fresh = fresh_pages()[name]
    assert shipped.read_text(encoding="utf-8") == fresh, f"docs/reference/{name} is stale: run `make reference`"


def _section(text: str, model) -> list[str]:
    """The lines under the heading that names `Model`, up to the next heading."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and f"`{model.__name__}`" in line)
    body = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        body.append(line)
    return body


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_the_scenario_page_has_a_row_per_field_with_its_default_and_allowed_values(model):
    text = fresh_pages()["scenario.md"]
    rows = {}
    for line in _section(text, model):
        m = re.match(r"^\| `(\w+)` \|", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in line.strip().strip("|").split(" | ")]
    assert list(rows) == list(model.model_fields), f"{model.__name__}: rows {list(rows)}"
    for name, field in model.model_fields.items():
        _, _type, default, allowed, meaning = rows[name]
        if field.is_required():
            assert default == "required"
        elif field.default is None:
            assert default == "`null`"
        for value in reference.literal_values(field.annotation):
            assert f"`{value}`" in allowed, f"{model.__name__}.{name}: allowed value `{value}` not listed"
        assert meaning, f"{model.__name__}.{name}: no meaning"


def _flags(parser: argparse.ArgumentParser, prog: str):
    """``(command, option string)`` of every flag of every sub-command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _flags(sub, f"{prog} {name}")
        elif not isinstance(action, argparse._HelpAction):
            for option in action.option_strings or [action.metavar or action.dest.upper()]:
                yield prog, option


def test_the_cli_page_names_every_command_and_flag():
    from sim.cli import build_parser

    text = fresh_pages()["cli.md"]
    sections = re.split(r"\n(?=#+ `servesim )", text)
    by_command = {re.match(r"#+ `([^`]+)`", s).group(1): s for s in sections[1:]}
    for prog, option in _flags(build_parser(), "servesim"):
        if prog == "servesim":
            continue  # --version: said in the introduction
        assert prog in by_command, f"no section for {prog}"
        assert f"`{option}`" in by_command[prog], f"{prog}: {option} is not in its table"


def test_the_catalog_page_lists_every_shipped_entry():
    from sim import catalog

    text = fresh_pages()["catalog.md"]
    for kind in ("models", "diffusion_models", "gpus"):
        for name in catalog.shipped(kind):
            assert f"| {name} |" in text, f"{kind} {name} is not in docs/reference/catalog.md"


def test_building_the_parser_imports_no_heavy_module():
    """The CLI reference is generated from the parser, and ``servesim --help`` stays fast: building
    it imports neither pydantic, pandas nor numpy."""
    code = (
        "import sys; from sim.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('pydantic', 'pandas', 'numpy', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

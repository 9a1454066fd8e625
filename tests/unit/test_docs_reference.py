"""The tutorial's scenario reference must stay in step with the schema in ``sim/config.py``.

Walks every pydantic model reachable from ``sim.config.Scenario`` (through lists, optionals and
discriminated unions) and checks ``docs/tutorial.md``:

* every field name appears in the document as ```field_name```;
* each model has a reference section: a heading that names the model's class in backticks
  (e.g. ``### Pools (`PoolConfig`)``), whose table has one row per field (``| `field` | ...``),
  no rows for fields that do not exist, the field's default in its default column (``required``
  for a required field, ```null```, ```8192```, ```continuous```... otherwise), and every allowed
  value of a ``Literal`` field in backticks.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from sim.config import Scenario

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
ROW = re.compile(r"^\|\s*`([A-Za-z_][A-Za-z0-9_]*)`\s*\|")


def _models_in(annotation: typing.Any) -> list[type[BaseModel]]:
    """Pydantic models inside a type annotation (Annotated, Union, Optional, list, tuple...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def reachable_models(root: type[BaseModel] = Scenario) -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    todo = [root]
    while todo:
        model = todo.pop(0)
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            todo += _models_in(field.annotation)
    return seen


MODELS = reachable_models()


def _doc() -> str:
    return TUTORIAL.read_text(encoding="utf-8")


def _section(text: str, model: type[BaseModel]) -> list[str]:
    """Lines under the heading naming `Model`, up to the next heading of the same or higher level."""
    lines = text.splitlines()
    tag = f"`{model.__name__}`"
    for i, line in enumerate(lines):
        m = HEADING.match(line)
        if m and tag in m.group(2):
            level = len(m.group(1))
            body = []
            for nxt in lines[i + 1 :]:
                h = HEADING.match(nxt)
                if h and len(h.group(1)) <= level:
                    break
                body.append(nxt)
            return body
    return []


def _rows(section: list[str]) -> dict[str, list[str]]:
    """Field-table rows of a section: field name -> the row's cells (field cell first)."""
    rows: dict[str, list[str]] = {}
    for line in section:
        m = ROW.match(line)
        if m:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[m.group(1)] = cells
    return rows


def _yaml_default(value: typing.Any) -> str | None:
    """How a scalar default is written in the reference (None for non-scalar defaults)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    return None


def _literal_values(annotation: typing.Any) -> list[typing.Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return list(typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        out: list[typing.Any] = []
        for arg in typing.get_args(annotation):
            out += _literal_values(arg)
        return out
    return []


def test_the_walk_reaches_every_model_of_the_schema():
    names = {m.__name__ for m in MODELS}
    # Spot checks that union members and nested models are found.
    for expected in (
        "Scenario",
        "PoolConfig",
        "EngineConfig",
        "RooflineCost",
        "ConstantCost",
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
        "SLO",
    ):
        assert expected in names


def test_tutorial_exists():
    assert TUTORIAL.is_file(), f"{TUTORIAL} is missing"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_name_appears_in_the_tutorial(model):
    text = _doc()
    missing = [name for name in model.model_fields if f"`{name}`" not in text]
    assert not missing, f"docs/tutorial.md never mentions {model.__name__} field(s) {missing} as `name`"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_reference_section_matches_the_model(model):
    section = _section(_doc(), model)
    assert section, f"docs/tutorial.md has no heading naming `{model.__name__}` (the reference section)"
    rows = _rows(section)
    fields = model.model_fields
    missing = [name for name in fields if name not in rows]
    assert not missing, f"the `{model.__name__}` table has no row for field(s) {missing}"
    stale = [name for name in rows if name not in fields]
    assert not stale, f"the `{model.__name__}` table documents field(s) {stale} that the schema does not have"
    for name, field in fields.items():
        cells = rows[name]
        assert len(cells) >= 5, (
            f"`{model.__name__}.{name}` row should be: field | type | default | allowed | what it does"
        )
        default_cell, row_text = cells[2], " | ".join(cells[1:])
        if field.is_required():
            assert "required" in default_cell, (
                f"`{model.__name__}.{name}` is required; its default cell says {default_cell!r}"
            )
        else:
            shown = _yaml_default(field.default)
            if shown is not None:
                assert f"`{shown}`" in default_cell, (
                    f"`{model.__name__}.{name}` defaults to {field.default!r}; its default cell should contain "
                    f"`{shown}` but says {default_cell!r}"
                )
        for value in _literal_values(field.annotation):
            assert f"`{value}`" in row_text, f"`{model.__name__}.{name}` row does not list allowed value `{value}`"

"""servesim's Python API: build or load a scenario, run it, price it, plan a fleet for it.

    import servesim

    result = servesim.run("scenarios/quickstart.yaml", overrides=["duration_s=120"])
    measured = result.requests[~result.requests["warmup"]]   # one row per request, all replications
    measured.groupby("class")["ttft_s"].quantile(0.99)
    result.summary["classes"]["chat"]["ttft_s_p99"]          # {'mean': ..., 'ci95': ..., 'n': ...}

    scenario = servesim.scenario({...})                      # a dict as a YAML file would hold it
    report = servesim.price(result, "scenarios/prices/example.yaml")
    answer = servesim.plan("scenarios/plan_mixed_chat_image.yaml").answer

Everything here is also what the ``servesim`` command does; ``servesim.schema()`` is the JSON
Schema of scenario files (shipped as ``docs/scenario.schema.json`` for editors).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sim import __version__
from sim.errors import ConfigError, ServesimError

__all__ = [
    "ConfigError",
    "ServesimError",
    "Scenario",
    "RunResult",
    "PriceReport",
    "PlanResult",
    "__version__",
    "load",
    "plan",
    "price",
    "run",
    "scenario",
    "schema",
]


def __getattr__(name: str) -> Any:
    """The result and scenario types, imported when first used (``import servesim`` stays light)."""
    if name == "Scenario":
        from sim.config import Scenario

        return Scenario
    if name == "RunResult":
        from sim.run import RunResult

        return RunResult
    if name == "PriceReport":
        from sim.price import PriceReport

        return PriceReport
    if name == "PlanResult":
        from sim.plan import PlanResult

        return PlanResult
    raise AttributeError(f"module 'servesim' has no attribute {name!r}")


def scenario(data: dict) -> Any:
    """A ``Scenario`` from a mapping shaped like a scenario file. Raises ``ConfigError`` (one
    line naming the field and what is allowed) when something is wrong."""
    from sim.config import parse_scenario

    return parse_scenario(data)


def load(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Any:
    """The ``Scenario`` in a YAML file, with ``--set``-style overrides (``"duration_s=60"``).
    Relative paths inside it (traces, profiles) are read relative to the file: pass ``path``
    itself to ``run`` or ``plan`` to keep that, or their ``base_dir``."""
    from sim.config import load_scenario

    return load_scenario(Path(path), tuple(overrides))[0]


def _scenario_and_dir(scenario: Any, overrides: Iterable[str], base_dir: str | os.PathLike | None):
    from sim.config import apply_overrides, load_scenario, parse_scenario

    if isinstance(scenario, str | os.PathLike):
        sc, found = load_scenario(Path(scenario), tuple(overrides))
        return sc, Path(base_dir) if base_dir is not None else found
    overrides = tuple(overrides)
    if overrides:
        scenario = parse_scenario(apply_overrides(scenario.model_dump(), overrides))
    return scenario, Path(base_dir) if base_dir is not None else Path(".")


def run(scenario: Any, *, overrides: Iterable[str] = (), base_dir: str | os.PathLike | None = None) -> Any:
    """Simulate every replication of a scenario (a ``Scenario`` or a file) and summarise: a
    ``RunResult`` with ``requests``, ``timeseries`` and ``replicas`` DataFrames and the
    ``summary`` dict ``servesim run`` prints."""
    from sim.run import run_scenario

    sc, where = _scenario_and_dir(scenario, overrides, base_dir)
    return run_scenario(sc, where)


def price(result: Any, prices: Any = None) -> Any:
    """Price a ``RunResult``: cost per request by class, $ per unit, revenue and margin at
    ``prices`` (a price-list file or ``sim.price.PriceList``; default: the illustrative list
    derived from the catalog), break-even utilisation. A ``PriceReport``."""
    from sim.price import load_price_list, price_scenario

    if isinstance(prices, str | os.PathLike):
        prices = load_price_list(Path(prices))
    return price_scenario(result, prices)


def plan(
    scenario: Any,
    *,
    overrides: Iterable[str] = (),
    base_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> Any:
    """The cheapest fleet that meets every SLO, searched over the scenario's ``plan:`` block: a
    ``PlanResult`` (``.answer``, ``.frontier``, ``.candidates``). With ``out_dir`` its
    evaluations are journalled there and an interrupted plan resumes."""
    from sim.plan import plan_fleet

    sc, where = _scenario_and_dir(scenario, overrides, base_dir)
    if sc.plan is None:
        raise ConfigError("the scenario has no 'plan' block: add one to say what the plan may choose")
    return plan_fleet(sc, where, out_dir=Path(out_dir) if out_dir is not None else None, workers=workers)


def schema() -> dict:
    """The JSON Schema of scenario files (draft 2020-12), from the same definitions that
    validate them."""
    from sim.config import Scenario

    out = Scenario.model_json_schema()
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["title"] = "servesim scenario"
    return out

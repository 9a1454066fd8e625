"""Step costs: the ``CostModel`` protocol, batch shapes, and its implementations.

The names below load on first use (PEP 562), so that importing ``sim.costs.base`` (which the
scheduler does, for ``StepShape``) does not import the profile model and with it pydantic,
yaml and the scenario schema: the scheduler stays importable where only numpy is.
"""

from __future__ import annotations

from importlib import import_module

_WHERE = {
    "CostModel": "base",
    "DiffusionCostModel": "base",
    "StepLine": "base",
    "StepShape": "base",
    "ConstantCostModel": "constant",
    "RooflineCostModel": "roofline",
    "Profile": "profile",
    "ProfileCostModel": "profile",
    "DiffusionProfileCost": "profile",
    "ProfileRangeError": "profile",
    "load_profile": "profile",
}
__all__ = list(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'sim.costs' has no attribute {name!r}")
    value = getattr(import_module(f"sim.costs.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

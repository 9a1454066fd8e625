"""Step costs: the ``CostModel`` protocol, batch shapes, and its implementations."""

from sim.costs.base import CostModel, DiffusionCostModel, StepLine, StepShape
from sim.costs.constant import ConstantCostModel
from sim.costs.profile import DiffusionProfileCost, Profile, ProfileCostModel, ProfileRangeError, load_profile
from sim.costs.roofline import RooflineCostModel

__all__ = [
    "CostModel",
    "DiffusionCostModel",
    "StepLine",
    "StepShape",
    "ConstantCostModel",
    "RooflineCostModel",
    "Profile",
    "ProfileCostModel",
    "DiffusionProfileCost",
    "ProfileRangeError",
    "load_profile",
]

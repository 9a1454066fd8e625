"""Which step cost model a pool gets: its ``cost_model`` block (roofline, profile or
constant) for an LLM pool or a diffusion pool, and the checks a run makes on profiles before
it simulates."""

from __future__ import annotations

from pathlib import Path

from sim import catalog
from sim.config import ConstantCost, PoolConfig, ProfileCost, Scenario
from sim.costs import ConstantCostModel, CostModel, ProfileCostModel, RooflineCostModel
from sim.costs.profile import DiffusionProfileCost, Profile, check_profile_for_pool, load_profile
from sim.diffusion.cost import DiffusionConstantCost, DiffusionRooflineCost
from sim.errors import ConfigError


def build_cost_model(pool: PoolConfig, base_dir: Path | None = None, gpu=None) -> CostModel:
    """``gpu``: the GPU the pool sees (a share of one, sim.fleet.sharing); default its catalog
    GPU."""
    cm = pool.cost_model
    if isinstance(cm, ConstantCost):
        return ConstantCostModel(cm.step_s, cm.prefill_token_s, cm.decode_seq_s)
    if isinstance(cm, ProfileCost):
        return ProfileCostModel(pool_profile(pool, base_dir))
    return RooflineCostModel(
        catalog.get_model(pool.model),
        gpu or catalog.get_gpu(pool.gpu),
        tp=pool.tensor_parallel_size,
        weight_bytes=pool.engine.weight_bytes_per_elem,
        kv_bytes=pool.engine.kv_bytes_per_elem,
        compute_efficiency=cm.compute_efficiency,
        bandwidth_efficiency=cm.bandwidth_efficiency,
        head_bytes=pool.engine.head_bytes_per_elem,
        fp8_compute=pool.engine.dtype == "fp8",
        expert_bytes=pool.engine.expert_bytes_per_elem,
        expert_parallel=pool.engine.expert_parallel,
        attention_dp=pool.engine.attention_data_parallel,
        expert_imbalance=pool.engine.expert_load_imbalance,
    )


def build_draft_cost(pool: PoolConfig) -> CostModel | None:
    """The speculative proposer's step cost (None: no proposer, or n-gram lookup): a roofline
    of the draft model (or EAGLE head) on the pool's GPU and TP degree, whatever the target's
    cost model."""
    from sim.llm.memory import draft_spec

    draft = draft_spec(catalog.get_model(pool.model), pool.engine)
    if draft is None:
        return None
    return DraftCost(
        RooflineCostModel(
            draft,
            catalog.get_gpu(pool.gpu),
            tp=pool.tensor_parallel_size,
            weight_bytes=pool.engine.weight_bytes_per_elem,
            kv_bytes=pool.engine.kv_bytes_per_elem,
            head_bytes=pool.engine.head_bytes_per_elem,
            fp8_compute=pool.engine.dtype == "fp8",
        ),
        catalog.get_gpu(pool.gpu).overheads.step_s,
    )


class DraftCost:
    """A proposer's forward pass: the roofline's step less the engine's host time per step
    (the proposals run inside the target's engine step, not as steps of their own)."""

    def __init__(self, roofline: RooflineCostModel, host_step_s: float):
        self.roofline = roofline
        self.host_step_s = host_step_s

    def step_s(self, shape) -> float:
        return max(0.0, self.roofline.step_s(shape) - self.host_step_s) if shape.num_tokens else 0.0


def build_diffusion_cost(pool: PoolConfig, base_dir: Path | None = None, gpu=None):
    cm = pool.cost_model
    if isinstance(cm, ConstantCost):
        return DiffusionConstantCost(cm.step_s, cm.per_row_s, cm.text_encode_s, cm.vae_decode_s)
    if isinstance(cm, ProfileCost):
        return DiffusionProfileCost(pool_profile(pool, base_dir))
    return DiffusionRooflineCost(
        catalog.get_diffusion_model(pool.model),
        gpu or catalog.get_gpu(pool.gpu),
        compute_efficiency=cm.compute_efficiency,
        bandwidth_efficiency=cm.bandwidth_efficiency,
        execution=cm.execution,
        dtype=pool.diffusion.dtype,
        gpus=pool.tensor_parallel_size,
        cfg_parallel=pool.diffusion.cfg_parallel,
    )


def pool_profile(pool: PoolConfig, base_dir: Path | None) -> Profile:
    """The profile a ``cost_model: {kind: profile}`` pool reads (path relative to the scenario
    file), checked against the pool's model, kind, TP degree and GPU. Raises ConfigError."""
    path = Path(pool.cost_model.path)
    profile = load_profile(path if path.is_absolute() else (base_dir or Path(".")) / path)
    check_profile_for_pool(profile, pool.name, pool.model, pool.gpu, pool.tensor_parallel_size, pool.is_diffusion)
    return profile


def check_cost_models(scenario: Scenario, base_dir: Path) -> None:
    """Raise ConfigError (one line, naming the field) if a pool's profile is missing, malformed
    or does not match its pool. Cheap: run before simulating."""
    for i, pool in enumerate(scenario.pools):
        if not isinstance(pool.cost_model, ProfileCost):
            continue
        path = Path(pool.cost_model.path)
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            what = "is a directory, not a profile file" if path.is_dir() else "profile file not found"
            raise ConfigError(f"pools.{i}.cost_model.path: {what}: {path}")
        pool_profile(pool, base_dir)

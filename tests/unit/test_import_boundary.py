"""The scheduler and its KV manager import with numpy alone: no pydantic, yaml or scenario
schema (issue 18: importing the scheduler used to load the whole config through sim.costs)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_scheduler_imports_without_the_config_stack():
    code = (
        "import sys\n"
        "import sim.llm.scheduler, sim.llm.static, sim.llm.kv_cache, sim.costs.base, sim.costs.constant\n"
        "heavy = [m for m in ('pydantic', 'yaml', 'sim.config', 'pandas', 'simpy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    got = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "", f"imported: {got.stdout.strip()}"


def test_the_package_still_offers_every_cost_model():
    import sim.costs as costs

    for name in costs.__all__:
        assert getattr(costs, name) is not None

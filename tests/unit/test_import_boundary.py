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


def test_the_parser_builds_without_the_heavy_libraries():
    """`servesim --help` answers at once: building the parser imports none of numpy, pandas,
    scipy, matplotlib, pydantic or rich (it used to take 1.7 s importing them); every flag
    has help, and --version answers."""
    code = (
        "import argparse, sys\n"
        "from sim.cli import build_parser\n"
        "parser = build_parser()\n"
        "heavy = [m for m in ('numpy', 'pandas', 'scipy', 'matplotlib', 'pydantic', 'rich', 'yaml') if m in sys.modules]\n"
        "missing = []\n"
        "def walk(p, name):\n"
        "    for a in p._actions:\n"
        "        if isinstance(a, argparse._SubParsersAction):\n"
        "            for n, sub in a.choices.items():\n"
        "                walk(sub, name + ' ' + n)\n"
        "        elif a.help is None:\n"
        "            missing.append((name, a.dest))\n"
        "walk(parser, 'servesim')\n"
        "print(heavy, missing)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[] []"
    version = subprocess.run([sys.executable, "-m", "sim", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("servesim ")

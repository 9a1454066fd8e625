"""Fixtures shared by the test folders."""

from pathlib import Path

import pytest


@pytest.fixture
def skip_without_traces():
    """``skip_without_traces(path)`` skips the test when the scenario at ``path`` replays a trace
    that is not here (one read from ../shared, absent on a clean clone)."""
    from sim.config import load_scenario
    from sim.errors import ConfigError
    from sim.workload.stream import check_trace_files

    def check(path: Path) -> None:
        scenario, base_dir = load_scenario(path)
        try:
            check_trace_files(scenario, base_dir)
        except ConfigError as exc:
            pytest.skip(f"{Path(path).name} reads a trace that is not here (../shared is absent): {exc}")

    return check

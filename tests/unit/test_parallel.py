"""The local pool's workers end when their driver is killed, also while the killed driver is
a zombie nobody has reaped yet (issue 19, item 11)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.parallel import _driver_alive

ROOT = Path(__file__).resolve().parents[2]


def test_a_zombie_driver_counts_as_gone():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _driver_alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        time.sleep(0.3)  # killed, not reaped: a zombie
        assert not _driver_alive(child.pid)
    finally:
        child.wait()
    assert not _driver_alive(child.pid)


DRIVER = """
import os, sys, time
from sim.parallel import run_local

def slow(task):
    time.sleep(120)
    return {"id": task[0]}

if __name__ == "__main__":
    failures = []
    gen = run_local([("a",), ("b",)], 2, failures, slow)
    try:
        next(gen)
    except StopIteration:
        pass
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to list the workers")
def test_workers_exit_after_their_driver_is_killed(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    mark = f"SERVESIM_TEST_DRIVER={tmp_path}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SERVESIM_TEST_DRIVER": str(tmp_path)}
    driver = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=env)

    def workers() -> list[int]:
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == driver.pid:
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                env = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if b"multiprocessing" in cmd and mark.encode() in env:
                found.append(int(pid))
        return found

    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(workers()) < 2:
            time.sleep(0.5)
        assert len(workers()) >= 2, "the pool did not start"
        os.kill(driver.pid, signal.SIGKILL)  # and do not reap it yet: a zombie driver
        deadline = time.time() + 20
        while time.time() < deadline and workers():
            time.sleep(0.5)
        assert not workers(), "workers outlived their killed driver"
    finally:
        driver.wait()

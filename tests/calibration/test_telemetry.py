"""Telemetry: clocks, power and temperature sampled beside the measurements. On a CPU it
samples /proc; with nvidia-smi on the PATH (here a stand-in script that prints what the real
one prints with -lms) it records each line the driver streams, with its time."""

import csv
import os
import stat
import time

from calibration.telemetry import CPU_FIELDS, GPU_FIELDS, Telemetry


def _rows(path):
    with path.open() as f:
        return list(csv.reader(f))


def test_a_cpu_run_samples_proc_until_stopped(tmp_path):
    path = tmp_path / "t.csv"
    with Telemetry(path, "cpu", every_s=0.05) as t:
        time.sleep(0.3)
    assert t.source == "proc"
    rows = _rows(path)
    assert rows[0] == ["t_s", *CPU_FIELDS] and len(rows) - 1 == t.rows >= 3
    times = [float(r[0]) for r in rows[1:]]
    assert times == sorted(times) and float(rows[1][1]) >= 0
    t.stop()  # idempotent
    n = t.rows
    time.sleep(0.1)
    assert t.rows == n  # nothing after stop


def test_a_gpu_run_records_what_nvidia_smi_streams(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    line = "1980, 2619, 301.52, 700.00, 41, 87, 0x0000000000000000"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/args\nwhile true; do echo '{line}'; sleep 0.05; done\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    path = tmp_path / "gpu.csv"
    with Telemetry(path, "cuda:1", every_s=0.05) as t:
        time.sleep(0.4)
    assert t.source == "nvidia-smi"
    rows = _rows(path)
    assert rows[0] == ["t_s", *(f.replace(".", "_") for f in GPU_FIELDS)]
    assert len(rows) - 1 == t.rows >= 3 and rows[1][1:] == [v.strip() for v in line.split(",")]
    args = (tmp_path / "args").read_text()
    assert "-i 1" in args and "-lms 50" in args and "--format=csv,noheader,nounits" in args


def test_the_sampler_imports_only_the_standard_library():
    import ast
    import sys
    from pathlib import Path

    import calibration.telemetry as mod

    tree = ast.parse(Path(mod.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names

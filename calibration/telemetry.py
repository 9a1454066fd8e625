"""What the device did while it was measured: clocks, power and temperature, sampled in the
background and written to a CSV as they come.

A GPU that throttles (clocks down under a power or thermal limit) changes every timing taken
during the throttle, and nothing in the timings themselves says so. ``Telemetry`` runs
``nvidia-smi --query-gpu=... -lms <period>`` (one long-running process, so sampling costs the
measurement nothing) and writes each line with the time since the start; on a machine without
``nvidia-smi`` (a CPU run) it samples the load average and the mean core clock from ``/proc``
instead, so every run leaves the same kind of file. Standard library only: it runs on a bare
GPU machine.

    with Telemetry(out / "telemetry.csv", device="cuda:0"):
        ...  # calibrate, serve
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

#: nvidia-smi query fields, in the CSV's column order after ``t_s``.
GPU_FIELDS = (
    "clocks.sm",
    "clocks.mem",
    "power.draw",
    "power.limit",
    "temperature.gpu",
    "utilization.gpu",
    "clocks_throttle_reasons.active",
)
CPU_FIELDS = ("loadavg_1m", "cpu_mhz_mean")


def _gpu_index(device: str) -> str:
    return device.split(":", 1)[1] if ":" in device else "0"


def _cpu_mhz() -> float | None:
    try:
        mhz = [
            float(line.split(":", 1)[1])
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("cpu MHz")
        ]
    except (OSError, ValueError):
        return None
    return round(sum(mhz) / len(mhz), 1) if mhz else None


class Telemetry:
    """Background sampling of the device into ``path`` (CSV: ``t_s`` and ``GPU_FIELDS`` or
    ``CPU_FIELDS``), every ``every_s`` seconds from ``start()`` until ``stop()``. ``source``
    says which: ``nvidia-smi`` or ``proc``. A sampler that cannot start or dies leaves the rows
    it wrote; it never raises into the measurement."""

    def __init__(self, path: Path, device: str = "cpu", every_s: float = 0.5):
        self.path = Path(path)
        self.device = device
        self.every_s = float(every_s)
        gpu = device.startswith("cuda") and shutil.which("nvidia-smi") is not None
        self.source = "nvidia-smi" if gpu else "proc"
        self.fields = GPU_FIELDS if gpu else CPU_FIELDS
        self.rows = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self._t0 = 0.0

    def __enter__(self) -> Telemetry:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> Telemetry:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(["t_s", *(f.replace(".", "_") for f in self.fields)])
        self._file.flush()
        self._t0 = time.monotonic()
        target = self._read_nvidia_smi if self.source == "nvidia-smi" else self._poll_proc
        if self.source == "nvidia-smi":
            cmd = [
                "nvidia-smi",
                f"--query-gpu={','.join(self.fields)}",
                "--format=csv,noheader,nounits",
                "-i",
                _gpu_index(self.device),
                "-lms",
                str(max(1, int(self.every_s * 1000))),
            ]
            try:
                self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            except OSError:
                self._proc = None
        self._thread = threading.Thread(target=target, name="telemetry", daemon=True)
        self._thread.start()
        return self

    def _write(self, values: list) -> None:
        self._writer.writerow([round(time.monotonic() - self._t0, 3), *values])
        self._file.flush()
        self.rows += 1

    def _read_nvidia_smi(self) -> None:
        if self._proc is None or self._proc.stdout is None:
            return
        for line in self._proc.stdout:
            if self._stop.is_set():
                break
            values = [v.strip() for v in line.strip().split(",")]
            if len(values) == len(self.fields):
                self._write(values)

    def _poll_proc(self) -> None:
        while not self._stop.is_set():
            try:
                load = round(os.getloadavg()[0], 2)
            except OSError:
                load = None
            self._write([load, _cpu_mhz()])
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        """Stop sampling and close the file (idempotent)."""
        if self._thread is None:
            return
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._thread.join(timeout=5)
        self._thread = None
        self._file.close()

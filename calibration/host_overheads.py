"""Fit the host's share of a step on the fidelity suite's calibration split.

    python -m calibration.host_overheads [--write]   # prints both fits; the GPU catalog holds them

Two terms of the GPU catalog's ``overheads`` are host time that CUDA-event kernel timings (the
source of every other roofline term) cannot see, so they are fitted on whole-engine
measurements, on the **calibration split only** (``fidelity/points.yaml``), the held-out
points never read:

* ``step_s``: an LLM engine's host time per step that the GPU does not hide (scheduling, input
  preparation, launches, sampling, detokenising and streaming), one figure for the engines the
  suite measured, fitted on the calibration split's LLM points;
* ``eager_op_s``: the host time to dispatch one op of an eager PyTorch denoiser (Python module
  calls, the dispatcher, the launch), fitted on the calibration split's eager diffusion points;
  with the op counts of ``calibration.eager_counts`` it sets the host side of an eager step,
  ``max(GPU + elementwise traffic, ops x eager_op_s)``.

Each minimises the mean |log(predicted / measured)| over its points (``scipy``'s bounded
scalar search). The device kit measures the LLM step's host time directly on a GPU
(``calibration.home``), which is how ``step_s`` is to be checked.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

FIT_PATH = Path(__file__).resolve().parents[1] / "fidelity" / "fits" / "host_overheads.json"
TERMS = {
    # term: (points it is fitted on, search bounds in seconds)
    "step_s": ("llm", (0.0, 6e-3)),
    "eager_op_s": ("eager diffusion", (0.0, 2e-4)),
}


@contextlib.contextmanager
def overheads(**values: float) -> Iterator[None]:
    """Every catalog GPU with these ``overheads`` fields set, inside the block."""
    from sim import catalog

    table = catalog.gpus()
    saved = dict(table)
    try:
        for name, spec in saved.items():
            table[name] = spec.model_copy(update={"overheads": spec.overheads.model_copy(update=values)})
        yield
    finally:
        table.clear()
        table.update(saved)


def calibration_points(term: str) -> list[dict]:
    from sim.fidelity import execution, load_points

    points = [p for p in load_points() if p["split"] == "calibrate" and p["servesim"]["expressible"]]
    if term == "step_s":
        return [p for p in points if p["shape"] == "llm"]
    return [p for p in points if p["shape"] == "diffusion" and execution(p) == "eager"]


def log_errors(points: list[dict], **values: float) -> np.ndarray:
    from sim.fidelity import predict

    with overheads(**values):
        return np.array([np.log(predict(p) / float(p["value"])) for p in points])


def fit_term(term: str) -> dict:
    from scipy.optimize import minimize_scalar

    points = calibration_points(term)
    objective = lambda v: float(np.mean(np.abs(log_errors(points, **{term: v}))))  # noqa: E731
    res = minimize_scalar(objective, bounds=TERMS[term][1], method="bounded", options={"xatol": 1e-7})
    value = float(f"{res.x:.3g}")
    errs = np.expm1(log_errors(points, **{term: value}))
    return {
        "value": value,
        "points": [p["id"] for p in points],
        "errors": [round(float(e), 4) for e in errs],
        "objective_mean_abs_log_error": round(objective(value), 5),
        "method": f"scipy minimize_scalar (bounded) of the mean |log(predicted/measured)| over the calibration split's {TERMS[term][0]} points",
    }


def fit() -> dict:
    return {term: fit_term(term) for term in TERMS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calibration.host_overheads", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write the fit to fidelity/fits/host_overheads.json")
    args = parser.parse_args(argv)
    result = fit()
    print(json.dumps(result, indent=2))
    if args.write:
        FIT_PATH.parent.mkdir(parents=True, exist_ok=True)
        FIT_PATH.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

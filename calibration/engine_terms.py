"""Fit the catalog's whole-engine terms on the fidelity suite's calibration split.

    python -m calibration.engine_terms [--write]   # prints the fits; the GPU catalog holds them

Three terms of the GPU catalog cannot be read off the per-kernel timings that set every other
roofline term, so they are fitted on published whole-engine measurements, on the **calibration
split only** (``fidelity/points.yaml``), the held-out points never read:

* ``overheads.step_s``: an LLM engine's host time per step that the GPU does not hide
  (scheduling, input preparation, launches, sampling, detokenising and streaming), one figure
  for the engines the suite measured, fitted on the calibration split's LLM points. CUDA-event
  kernel timings cannot see host time.
* ``overheads.eager_op_s``: the host time to dispatch one op of an eager PyTorch denoiser
  (Python module calls, the dispatcher, the launch), fitted on the calibration split's eager
  diffusion points; with the op counts of ``calibration.eager_counts`` it sets the host side of
  an eager step, ``max(GPU + elementwise traffic, ops x eager_op_s)``.
* ``efficiency.denoiser_8bit``: an FP8 or INT8 denoiser's compute efficiency at the 8-bit peak
  as a share of its bf16 efficiency at the bf16 peak, fitted on the calibration split's 8-bit
  diffusion points (TensorRT pipelines). No per-kernel 8-bit timings are shipped.

Each minimises the mean |log(predicted / measured)| over its points (``scipy``'s bounded
scalar search; the mean square for ``denoiser_8bit``, whose two points leave the mean |log|
flat between them) and sets the same figure on every catalog GPU. The device kit measures the LLM
step's host time directly on a GPU (``calibration.home``), which is how ``step_s`` is to be
checked.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

FIT_PATH = Path(__file__).resolve().parents[1] / "fidelity" / "fits" / "engine_terms.json"
TERMS = {
    # term: (the GPU catalog's section that holds it, points it is fitted on, search bounds, the
    # power of |log(predicted / measured)| whose mean is minimised)
    "step_s": ("overheads", "llm", (0.0, 6e-3), 1),
    "eager_op_s": ("overheads", "eager diffusion", (0.0, 2e-4), 1),
    # two points: the mean |log error| is flat between their own optima, the mean square is not
    "denoiser_8bit": ("efficiency", "8-bit diffusion", (0.05, 1.0), 2),
}


@contextlib.contextmanager
def terms(**values: float) -> Iterator[None]:
    """Every catalog GPU with these terms set (each in its section of the catalog), inside the
    block."""
    from sim import catalog

    table = catalog.gpus()
    saved = dict(table)
    try:
        for name, spec in saved.items():
            update = {}
            for section in {TERMS[t][0] for t in values}:
                mine = {t: v for t, v in values.items() if TERMS[t][0] == section}
                update[section] = getattr(spec, section).model_copy(update=mine)
            table[name] = spec.model_copy(update=update)
        yield
    finally:
        table.clear()
        table.update(saved)


def calibration_points(term: str) -> list[dict]:
    from sim.fidelity import denoiser_dtype, execution, load_points

    points = [p for p in load_points() if p["split"] == "calibrate" and p["servesim"]["expressible"]]
    if term == "step_s":
        return [p for p in points if p["shape"] == "llm"]
    diffusion = [p for p in points if p["shape"] == "diffusion"]
    if term == "eager_op_s":
        return [p for p in diffusion if execution(p) == "eager"]
    return [p for p in diffusion if denoiser_dtype(p) != "bfloat16"]


def log_errors(points: list[dict], **values: float) -> np.ndarray:
    from sim.fidelity import predict

    with terms(**values):
        return np.array([np.log(predict(p) / float(p["value"])) for p in points])


def fit_term(term: str) -> dict:
    from scipy.optimize import minimize_scalar

    points = calibration_points(term)
    power = TERMS[term][3]
    objective = lambda v: float(np.mean(np.abs(log_errors(points, **{term: v})) ** power))  # noqa: E731
    res = minimize_scalar(objective, bounds=TERMS[term][2], method="bounded", options={"xatol": 1e-7})
    value = float(f"{res.x:.3g}")
    errs = np.expm1(log_errors(points, **{term: value}))
    what = "abs" if power == 1 else "squared"
    shown = "|log(predicted/measured)|" if power == 1 else "log(predicted/measured)^2"
    return {
        "value": value,
        "points": [p["id"] for p in points],
        "errors": [round(float(e), 4) for e in errs],
        f"objective_mean_{what}_log_error": round(objective(value), 5),
        "method": f"scipy minimize_scalar (bounded) of the mean {shown} over the calibration split's {TERMS[term][1]} points",
    }


def fit() -> dict:
    return {term: fit_term(term) for term in TERMS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calibration.engine_terms", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write the fits to fidelity/fits/engine_terms.json")
    args = parser.parse_args(argv)
    result = fit()
    print(json.dumps(result, indent=2))
    if args.write:
        FIT_PATH.parent.mkdir(parents=True, exist_ok=True)
        FIT_PATH.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Writing a command's result files: each atomically, never through a link, nothing stale left.

* **Atomic.** Each file is written to a hidden temporary beside it and renamed over the old
  one, so a kill mid-write leaves the old file or the new one, never a truncated one.
* **No links followed.** A rename replaces a symbolic link that sits where an output goes; it
  never writes through it (a link ``summary.json -> ../victim.txt`` used to overwrite the victim).
* **Nothing stale.** What an earlier run of the same command wrote and this one does not
  (its plots after ``--no-plots``, a ``fleet.yaml`` after an infeasible plan, the
  ``report.html`` rendered from the old results) is removed, so a folder never mixes two runs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` for a hidden temporary beside ``path`` (same suffix, so writers
    that pick a format from it still do), then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        tmp.unlink(missing_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def clear_stale(out_dir: Path, names: Iterable[str], written: Iterable[Path]) -> list[Path]:
    """Remove each of ``names`` in ``out_dir`` that this run did not write (a link is removed,
    never what it points to). Returns what was removed."""
    keep = {Path(p).name for p in written}
    removed = []
    for name in names:
        path = Path(out_dir) / name
        if name not in keep and (path.is_symlink() or path.exists()) and not path.is_dir():
            path.unlink()
            removed.append(path)
    return removed


def jsonable(obj):
    """``obj`` with what JSON cannot hold made plain: keys as strings, tuples as lists, numpy
    scalars as Python ones, non-finite floats as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    return obj

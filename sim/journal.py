"""Durable JSON-lines journals: what a long job appends as each piece of work finishes, so that a
job killed at any moment resumes where it stopped and loses nothing it had finished.

One format and one set of rules for every journal servesim keeps (a plan's
``evaluations.jsonl``, a sweep's ``results.jsonl``, a calibration's ``raw.jsonl``):

* one JSON object per line, standard JSON only (a NaN or an infinity is written as null);
* ``append`` writes its lines in one write under an exclusive lock (several processes may
  append to one journal), then flushes and fsyncs before returning: a record that returned is
  on disk; a new journal's directory entry is fsynced too;
* a kill mid-write can leave a last line without its newline: ``cut_partial_line`` cuts it
  off before anything is appended again (its work was never recorded and runs again);
* ``read_records`` skips lines that are not whole JSON objects, and keeps the first record of
  each key;
* a journal is never read or written through a symbolic link (a link could point anywhere).

Standard library only: the device kit and the calibration harness use it on machines that have
neither pydantic nor the rest of servesim's dependencies.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

from sim.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer at a time is the caller's to ensure
    fcntl = None


def refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise ConfigError(f"{path}: is a symbolic link; servesim appends to its own journal, never through a link")


def _plain(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def append(path: Path, *records: dict) -> None:
    """Append ``records``, one line each, durably (see the module)."""
    refuse_link(path)
    data = b"".join(json.dumps(_plain(r), allow_nan=False, default=float).encode() + b"\n" for r in records)
    new = not path.exists()
    with path.open("ab") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if new:
        fsync_dir(path.parent)


def cut_partial_line(path: Path) -> None:
    """Cut a last line with no newline (a write cut short by a kill), so that the next append
    starts a line of its own."""
    if path.is_symlink() or not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("r+b") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        keep, pos = 0, end
        while pos > 0:  # back to the last newline, a block at a time
            start = max(0, pos - 65536)
            f.seek(start)
            block = f.read(pos - start)
            if (i := block.rfind(b"\n")) >= 0:
                keep = start + i + 1
                break
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


def read_records(path: Path, key: str) -> list[dict]:
    """The journal's records that are whole JSON objects holding ``key``, in file order, the
    first of each ``key`` value kept (none when there is no journal yet)."""
    refuse_link(path)
    if not path.is_file():
        return []
    records, seen = [], set()
    with path.open("rb") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and key in record and record[key] not in seen:
                seen.add(record[key])
                records.append(record)
    return records


def fsync_dir(path: Path) -> None:
    """Make a new file's directory entry durable (where the platform can open a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

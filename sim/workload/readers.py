"""Readers for the request files users already have, beside the published traces in
:mod:`sim.workload.traces`:

* ``burstgpt`` — BurstGPT (Wang et al., KDD'25) CSVs: ``Timestamp`` (seconds from the first
  day's midnight), ``Model``, ``Request tokens``, ``Response tokens``, ``Total tokens``,
  ``Log Type`` (and in later releases ``Session ID``, ``Elapsed time``). Rows with 0 response
  tokens are the trace's failed requests and are left out (the authors publish
  ``*_without_fails`` files that do the same).
* ``csv`` — any CSV: the user names the arrival, prompt and output columns (``columns``) and
  the arrival column's unit (``time_unit``: ``s``, ``ms``, ``us`` or ``datetime``). Without an
  arrival column the file gives (prompt, output) pairs only.
* ``vllm-bench`` — the JSON that ``vllm bench serve --save-result`` writes: ``input_lens`` and
  ``output_lens`` (one entry per request), ``errors`` (a request with an error or no output is
  left out) and, from vLLM versions that save it, ``start_times`` (arrivals). Without
  ``start_times`` the file gives pairs, and the message says which arrival process reproduces
  the benchmark's (``request_rate`` and ``burstiness``: a gamma process; ``max_concurrency``:
  closed-loop users).
* ``sharegpt`` — ShareGPT-style conversation files: a JSON list of objects with
  ``conversations``: ``[{"from": "human", "value": ...}, {"from": "gpt", "value": ...}, ...]``.
  Each human message answered by the model is one request (a turn). A turn's prompt is the
  whole conversation before the answer (every earlier message and the new one), so the turns of
  one conversation share a growing prefix: each turn carries prefix hash ids that equal those
  of the turns before it over their common tokens. Text becomes tokens with a local Hugging
  Face tokenizer (``tokenizer``, needs ``transformers``) or, by default, one token per
  ``chars_per_token`` characters (4: OpenAI's rule of thumb for English text). Conversations
  have no times: arrivals come from the class's arrival process.

``where`` keeps the rows of a CSV format whose columns hold the given values (e.g. BurstGPT's
``{"Model": "ChatGPT", "Log Type": "Conversation log"}``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.errors import TraceError

__all__ = ["Records", "ReadOptions", "read_records", "session_hashes"]

BURSTGPT_COLUMNS = ("Timestamp", "Request tokens", "Response tokens")
CSV_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
SESSION_BLOCK_TOKENS = 16
"""Tokens per prefix hash id of a conversation's turns (vLLM's default KV block size, so a
prefix hit is exact for any block size that is a multiple of it)."""
_SESSION_ID_BASE = 1 << 40  # session hash ids start here: apart from a trace's own small ids


@dataclass(frozen=True)
class ReadOptions:
    """How to read the user formats (the TraceSource fields that concern them)."""

    columns: dict[str, str] | None = None
    time_unit: str = "s"
    where: dict[str, tuple[str, ...]] | None = None
    chars_per_token: float = 4.0
    tokenizer: str | None = None


@dataclass(frozen=True)
class Records:
    """Requests of a file in file order: arrival seconds (None when the file has none),
    prompt and output tokens (>= 1), prefix hash ids per request and the session (conversation)
    each belongs to (None when the file has no conversations)."""

    arrival_s: np.ndarray | None
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prefix_hashes: list[tuple[int, ...]] | None = None
    hash_block_tokens: int | None = None
    session: np.ndarray | None = None
    hint: str = ""
    """What arrival process reproduces the file's own load (vllm-bench without start_times)."""


def read_records(path: str | os.PathLike[str], fmt: str, opts: ReadOptions, with_times: bool) -> Records:
    """Read a file of one of the user formats. ``with_times`` False reads pairs only (no arrival
    column needed); True raises a one-line TraceError when the file has no arrival times."""
    shown = os.fspath(path)
    if fmt == "burstgpt":
        rec = _burstgpt(path, opts, with_times)
    elif fmt == "csv":
        rec = _generic_csv(path, opts, with_times)
    elif fmt == "vllm-bench":
        rec = _vllm_bench(path)
    elif fmt == "sharegpt":
        rec = _sharegpt(path, opts)
    else:
        raise TraceError(f"{shown}: unknown format {fmt!r}")
    if with_times and rec.arrival_s is None:
        why = {
            "sharegpt": "a conversation file has no arrival times",
            "vllm-bench": "this vllm bench result has no start_times",
            "csv": "no arrival column is named (columns.arrival)",
        }.get(fmt, "the file has no arrival times")
        raise TraceError(
            f"{shown}: {why}; give the class an 'arrival' process next to 'trace' "
            f"(the file then supplies the requests' lengths){rec.hint}"
        )
    return rec


# --------------------------------------------------------------------------------------------
# CSV formats


def _filtered(frame: pd.DataFrame, path, where: dict[str, tuple[str, ...]] | None) -> pd.DataFrame:
    if not where:
        return frame
    shown = os.fspath(path)
    keep = np.ones(len(frame), dtype=bool)
    for column, values in where.items():
        if column not in frame.columns:
            raise TraceError(
                f"{shown}: where names column {column!r}, which the file does not have "
                f"(columns: {', '.join(frame.columns)})"
            )
        keep &= frame[column].str.strip().isin(values).to_numpy()
    if not keep.any():
        asked = "; ".join(f"{c} = {' or '.join(v)}" for c, v in where.items())
        column = next(iter(where))
        seen = sorted(set(frame[column].str.strip().unique().tolist()))
        shown_values = ", ".join(seen[:8]) + (f", ... {len(seen) - 8} more" if len(seen) > 8 else "")
        raise TraceError(f"{shown}: no row matches where {asked} (column {column!r} holds {shown_values})")
    return frame[keep]


def _seconds_column(frame: pd.DataFrame, path, column: str, unit: str) -> np.ndarray:
    from sim.workload.traces import show_value, timestamp_seconds

    if unit == "datetime":
        return timestamp_seconds(frame, path, column, example="2026-01-31 13:05:00.250")
    raw = frame[column]
    values = pd.to_numeric(raw.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(values)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        row = int(frame.index[bad]) + 1
        raise TraceError(
            f"{os.fspath(path)}: data row {row} (line {row + 1}), column {column}: "
            f"{show_value(raw.iloc[bad])} is not a number; arrival times must be finite numbers ({unit})"
        )
    return values * CSV_TIME_UNITS[unit]


def _burstgpt(path, opts: ReadOptions, with_times: bool) -> Records:
    from sim.workload.traces import read_csv, require_columns, token_column

    frame = _filtered(read_csv(path), path, opts.where)
    time_col, prompt_col, output_col = BURSTGPT_COLUMNS
    needed = BURSTGPT_COLUMNS if with_times else (prompt_col, output_col)
    require_columns(frame, path, "burstgpt", BURSTGPT_COLUMNS, needed)
    response = frame[output_col].str.strip()
    frame = frame[~response.isin(("0", "0.0"))]  # failed requests: no response
    if frame.empty:
        raise TraceError(f"{os.fspath(path)}: every row is a failed request (0 response tokens)")
    prompt = token_column(frame, path, prompt_col)
    output = token_column(frame, path, output_col)
    arrival = _seconds_column(frame, path, time_col, "s") if with_times else None
    return Records(arrival, prompt, output)


def _generic_csv(path, opts: ReadOptions, with_times: bool) -> Records:
    from sim.workload.traces import read_csv, require_columns, token_column

    cols = opts.columns or {}
    if "prompt" not in cols or "output" not in cols:
        raise TraceError(
            f"{os.fspath(path)}: the csv format needs columns: {{prompt: NAME, output: NAME}} "
            f"(and arrival: NAME for arrival times)"
        )
    frame = _filtered(read_csv(path), path, opts.where)
    named = tuple(cols[k] for k in ("arrival", "prompt", "output") if k in cols)
    needed = named if with_times else (cols["prompt"], cols["output"])
    require_columns(frame, path, "csv", named, needed, has="as named in 'columns' has")
    prompt = token_column(frame, path, cols["prompt"])
    output = token_column(frame, path, cols["output"])
    arrival = None
    if "arrival" in cols and with_times:
        arrival = _seconds_column(frame, path, cols["arrival"], opts.time_unit)
        arrival = arrival - arrival.min()
    return Records(arrival, prompt, output)


# --------------------------------------------------------------------------------------------
# JSON formats


def _load_json(path) -> object:
    shown = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{shown}: malformed JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{shown}: not UTF-8 text (byte {exc.start} cannot be decoded); JSON expected") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise TraceError(f"{shown}: cannot read as JSON: {exc}") from None


def _int_list(data: dict, key: str, path) -> list[int]:
    values = data.get(key)
    if not isinstance(values, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
    ):
        raise TraceError(
            f"{os.fspath(path)}: field {key} must be a list of whole numbers >= 0 "
            f"(vllm bench serve --save-result writes it; was the result saved with --save-detailed?)"
        )
    return values


def _vllm_bench(path) -> Records:
    shown = os.fspath(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise TraceError(f"{shown}: expected a JSON object (a vllm bench serve result), got {type(data).__name__}")
    prompt = _int_list(data, "input_lens", path)
    output = _int_list(data, "output_lens", path)
    if len(prompt) != len(output):
        raise TraceError(f"{shown}: input_lens has {len(prompt)} entries but output_lens has {len(output)}")
    errors = data.get("errors") or [""] * len(prompt)
    starts = data.get("start_times")
    if starts is not None and (
        not isinstance(starts, list)
        or len(starts) != len(prompt)
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in starts)
    ):
        raise TraceError(f"{shown}: start_times must be a list of {len(prompt)} numbers (seconds), one per request")
    ok = [i for i in range(len(prompt)) if output[i] > 0 and not (i < len(errors) and errors[i])]
    if not ok:
        raise TraceError(f"{shown}: no successful request (every entry has an error or no output)")
    p = np.maximum(np.array([prompt[i] for i in ok], np.int64), 1)
    o = np.array([output[i] for i in ok], np.int64)
    arrival = None
    if starts is not None:
        arrival = np.array([float(starts[i]) for i in ok])
        arrival = arrival - arrival.min()
    hint = ""
    rate, burst, users = data.get("request_rate"), data.get("burstiness"), data.get("max_concurrency")
    parts = []
    if isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate) and rate > 0:
        cv = 1.0 / math.sqrt(burst) if isinstance(burst, (int, float)) and burst and burst > 0 else 1.0
        parts.append(
            f"the benchmark sent at request_rate {rate:g}: arrival: {{process: gamma, rate: {rate:g}, cv: {cv:.3g}}}"
        )
    if isinstance(users, int) and not isinstance(users, bool) and users > 0:
        parts.append(f"it kept {users} requests in flight: arrival: {{process: closed, users: {users}}}")
    if parts:
        hint = "; " + "; ".join(parts)
    return Records(arrival, p, o, hint=hint)


def _tokenizer(opts: ReadOptions, path):
    if opts.tokenizer is None:
        per = opts.chars_per_token
        return lambda text: max(1, math.ceil(len(text) / per))
    try:
        from transformers import AutoTokenizer  # optional: only for a local tokenizer folder
    except ImportError:
        raise TraceError(
            f"{os.fspath(path)}: tokenizer {opts.tokenizer!r} needs the transformers package "
            f"(pip install transformers), or drop 'tokenizer' to count chars_per_token characters per token"
        ) from None
    try:
        tok = AutoTokenizer.from_pretrained(opts.tokenizer, local_files_only=True)
    except Exception as exc:  # transformers raises many kinds; one line for the user
        raise TraceError(
            f"{os.fspath(path)}: cannot load tokenizer {opts.tokenizer!r}: {str(exc).splitlines()[0]}"
        ) from None
    return lambda text: max(1, len(tok.encode(text, add_special_tokens=False)))


def _sharegpt(path, opts: ReadOptions) -> Records:
    shown = os.fspath(path)
    data = _load_json(path)
    if not isinstance(data, list):
        raise TraceError(f"{shown}: expected a JSON list of conversations, got {type(data).__name__}")
    count = _tokenizer(opts, path)
    prompts: list[int] = []
    outputs: list[int] = []
    sessions: list[int] = []
    for i, item in enumerate(data):
        turns = item.get("conversations") if isinstance(item, dict) else None
        if not isinstance(turns, list):
            raise TraceError(f"{shown}: conversation {i}: expected an object with a 'conversations' list")
        context = 0
        asked: int | None = None
        for j, msg in enumerate(turns):
            if not isinstance(msg, dict) or not isinstance(msg.get("value"), str):
                raise TraceError(f"{shown}: conversation {i}, message {j}: expected {{'from': ..., 'value': text}}")
            tokens = count(msg["value"])
            if msg.get("from") in ("gpt", "assistant", "chatgpt", "bard", "model"):
                if asked is not None:
                    prompts.append(context)
                    outputs.append(tokens)
                    sessions.append(i)
                asked = None
            else:
                asked = tokens
            context += tokens
    if not prompts:
        raise TraceError(f"{shown}: no answered turn (a human message followed by a gpt one)")
    prompt = np.array(prompts, np.int64)
    output = np.array(outputs, np.int64)
    session = np.array(sessions, np.int64)
    hashes = session_hashes(session, prompt, SESSION_BLOCK_TOKENS)
    return Records(None, prompt, output, hashes, SESSION_BLOCK_TOKENS, session)


def session_hashes(session: np.ndarray, prompt: np.ndarray, block_tokens: int) -> list[tuple[int, ...]]:
    """Prefix hash ids of turns whose prompt starts with their conversation so far: chunk ``c``
    of session ``s`` has the same id in every turn that reaches it, so a later turn's prompt
    matches an earlier turn's over their common chunks."""
    out = []
    for s, p in zip(session.tolist(), prompt.tolist()):
        base = _SESSION_ID_BASE + (s << 24)
        out.append(tuple(range(base, base + -(-p // block_tokens))))
    return out

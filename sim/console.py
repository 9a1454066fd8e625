"""How servesim writes numbers and user text for people: one module the commands and the HTML
report share, so that none imports another's private helpers.

* ``term``: user text (scenario, pool and class names) made safe for a rich console.
* ``number``, ``with_ci`` / ``fmt_estimate``: a value to significant figures of its own, with its
  95 % confidence half-width beside it (``WIDE`` and ``wide_note`` when the CI is wider than the
  value; ``thin_percentiles`` when a percentile rests on too few samples).
* ``yaml_text``: a value as ``--set`` reads it back; ``plain_number``: numpy scalars and
  non-finite floats made JSON- and table-friendly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def term(text: object) -> str:
    """``text`` for a rich console: no control characters, markup escaped.

    Rich reads ``[...]`` in printed strings as markup: a scenario named ``azure [/data/traces]``
    raised a MarkupError after the whole simulation, and ``[prod] chat`` lost its first word on
    screen. Control characters (escape sequences, carriage returns, bells) can rewrite or hide
    what a terminal shows."""
    from rich.markup import escape

    return escape(_CONTROL.sub("", str(text)))


WIDE = "†"
"""Marks a figure whose 95 % CI is wider than the figure itself (see ``wide_note``)."""


def number(x: float, digits: int = 3, whole: bool = True) -> str:
    """``x`` to ``digits`` significant figures, thousands separated; zero is '0'. With ``whole``
    an integer part is never rounded away (3,684, not 3,680)."""
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return "-" if x != x else ("∞" if x > 0 else "-∞")
    decimals = digits - 1 - math.floor(math.log10(abs(x)))
    if whole:
        decimals = max(decimals, 0)
    text = f"{round(x, decimals):,.{max(decimals, 0)}f}"
    return "0" if text.lstrip("-").strip("0.,") == "" else text


def _half_width(hw: float) -> str:
    """A CI half-width to two significant figures when its first digit is 1 or 2, else one
    (the usual convention for an uncertainty: enough to compare, no false precision)."""
    if hw == 0:
        return "0"
    lead = int(f"{hw:e}"[0])
    return number(hw, 2 if lead <= 2 else 1, whole=False)


def with_ci(
    mean: float, hw: float | None, digits: int = 3, bounds: tuple[float | None, float | None] = (None, None)
) -> str:
    """'3,684±16,000†', '1.99±0.034', '0.245 [0, 1]†', '48.8±0.6', '1.00±0', '0'.

    The mean to ``digits`` significant figures of its own, the 95 % half-width beside it to one
    or two; '±0' when the replications agree (to floating-point rounding), and a bare '0' when
    every one gave zero. A quantity that cannot leave ``bounds`` (a fraction: 0 to 1) shows its interval cut to
    them when the CI crosses one. ``WIDE`` marks a CI wider than the value: more replications
    are needed before the value means much."""
    shown = number(mean, digits)
    if hw is None or hw != hw:
        return shown
    if hw <= 1e-9 * abs(mean):
        hw = 0.0  # replications equal but for floating-point rounding
    if hw == 0 and mean == 0:
        return "0"  # every replication gave zero
    lo, hi = bounds
    mark = WIDE if hw > abs(mean) and hw > 0 else ""
    if (lo is not None and mean - hw < lo) or (hi is not None and mean + hw > hi):
        low = f"{lo:g}" if lo is not None and mean - hw <= lo else number(mean - hw, digits)
        high = f"{hi:g}" if hi is not None and mean + hw >= hi else number(mean + hw, digits)
        return f"{shown} [{low}, {high}]{mark}"
    return f"{shown}±{_half_width(hw)}{mark}"


def fmt_estimate(est: dict, scale: float = 1.0, digits: int = 3, *, fraction: bool = False) -> str:
    """A summary estimate ``{"mean", "ci95"}`` as ``with_ci`` writes it ('-' when undefined);
    a ``fraction`` (scaled: 0 to ``scale``) keeps its interval inside its range."""
    mean, hw = est["mean"], est["ci95"]
    if mean is None or mean != mean:
        return "-"
    bounds = (0.0, scale) if fraction else (None, None)
    return with_ci(mean * scale, None if hw is None or hw != hw else hw * scale, digits, bounds)


def wide_note(replications: int) -> str:
    """The line under a table or summary that holds a ``WIDE`` figure."""
    return f"{WIDE} 95 % CI wider than the value: add replications (now {replications}; --replications N)"


def thin_percentiles(
    samples_per_replication: float, percentiles: tuple[str, ...] = ("p50", "p90", "p99", "p99.9"), need: int = 10
) -> list[str]:
    """The percentiles that rest on fewer than ``need`` samples beyond them per replication
    (p99.9 from 2,000 requests rests on 2: it is little more than the largest one)."""
    return [p for p in percentiles if samples_per_replication * (1 - float(p[1:]) / 100) < need]


def yaml_text(value: Any) -> str:
    """A value as ``--set`` reads it back (YAML flow style, one line)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 30)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def plain_number(value: Any) -> Any:
    """A numpy scalar as a Python one, a non-finite float as None; anything else as it is."""
    if value is None or isinstance(value, bool | str):
        return value
    if hasattr(value, "item"):  # a numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------- tables and lines
#
# What a command shows is a list of blocks, built by the study modules (which print nothing):
# tables and lines of text. The terminal renders them with rich (``show``); the HTML report
# renders the same blocks as HTML (``sim.report.html``), so the page says what the CLI says.


@dataclass
class Column:
    header: str
    justify: str = "left"
    overflow: str = "ellipsis"
    """What a terminal does with a cell too wide for its column: "ellipsis" or "fold"."""


@dataclass
class Table:
    """A table with a title, columns and rows of text (rich markup allowed; user strings escaped
    with ``term``)."""

    title: str | None = None
    columns: list[Column] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    title_justify: str = "center"

    def add_column(self, header: str, justify: str = "left", overflow: str = "ellipsis") -> None:
        self.columns.append(Column(header, justify, overflow))

    def add_row(self, *cells: str) -> None:
        self.rows.append(list(cells))


@dataclass(frozen=True)
class Line:
    """A line of text (rich markup allowed), with how a terminal styles it."""

    markup: str
    highlight: bool | None = None
    """rich's highlighting of numbers and the like (None: the console's default, on)."""
    style: str | None = None


Block = Table | Line


def to_rich(table: Table):
    """``table`` as a rich Table."""
    from rich.table import Table as RichTable

    out = RichTable(title=table.title, title_justify=table.title_justify)
    for c in table.columns:
        out.add_column(c.header, justify=c.justify, overflow=c.overflow)
    for row in table.rows:
        out.add_row(*row)
    return out


PIPE_WIDTH = 4000
"""Columns of the console when standard output is not a terminal: wide enough that no table
cell is ever cut (a pipe or a file has no width; rich would otherwise assume 80 columns)."""


def stdout_console():
    """The rich console a command prints its results on: the terminal's width in a terminal,
    else ``PIPE_WIDTH`` (each table as wide as its cells; nothing cut or folded, no line wrapped)."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH)


def show(blocks: list[Block], console) -> None:
    """Print ``blocks`` on a rich console. Off a terminal a table's title is a line of its own:
    rich wraps a title at its table's width."""
    for block in blocks:
        if isinstance(block, Table):
            if console.is_terminal or not block.title:
                console.print(to_rich(block))
            else:
                console.print(block.title, highlight=False, style="italic")
                console.print(to_rich(replace(block, title=None)))
        else:
            console.print(block.markup, highlight=block.highlight, style=block.style)


def plain(markup: str) -> str:
    """The text a line of rich markup shows (markup that does not parse is shown as written)."""
    from rich.errors import MarkupError
    from rich.text import Text

    try:
        return Text.from_markup(str(markup)).plain
    except MarkupError:
        return str(markup)


class Ticker:
    """Progress for a long job as lines on stderr, for when stderr is not a terminal (a log, a
    pipe, CI): the first update at once, then at most one every ``every_s`` seconds, each with the
    time since the start, and ``done`` at the end. In a terminal, commands draw a bar instead."""

    def __init__(self, what: str, every_s: float = 5.0, stream=None, start: float | None = None):
        import sys
        import time

        self.what = what
        self.every_s = every_s
        self.stream = stream if stream is not None else sys.stderr
        self._clock = time.perf_counter
        self.t0 = self._clock() if start is None else start
        """When the job started (``time.perf_counter``): the times printed count from it."""
        self._last: float | None = None

    def __call__(self, text: str, force: bool = False) -> None:
        now = self._clock()
        if force or self._last is None or now - self._last >= self.every_s:
            self._last = now
            self.stream.write(f"{self.what}: {plain(text)} ({now - self.t0:.0f} s)\n")
            self.stream.flush()

    def done(self, text: str = "done") -> None:
        self(text, force=True)

"""How servesim writes numbers and user text for people: one module the commands and the HTML
report share, so that none imports another's private helpers.

* ``term``: user text (scenario, pool and class names) made safe for a rich console.
* ``with_ci`` / ``fmt_estimate``: a mean and its 95 % confidence half-width, rounded together.
* ``yaml_text``: a value as ``--set`` reads it back; ``plain_number``: numpy scalars and
  non-finite floats made JSON- and table-friendly.
"""

from __future__ import annotations

import math
import re
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


def fmt_estimate(est: dict, scale: float = 1.0, digits: int = 3) -> str:
    """A summary estimate ``{"mean", "ci95"}`` as ``with_ci`` writes it ('-' when undefined)."""
    mean, hw = est["mean"], est["ci95"]
    if mean is None or mean != mean:
        return "-"
    return with_ci(mean * scale, None if hw is None or hw != hw else hw * scale, digits)


def with_ci(mean: float, hw: float | None, digits: int = 3) -> str:
    """'152±5', '1.99±0.03', '30,400±6,000': the mean to ``digits`` significant digits, no finer
    than the CI's first significant digit; the CI to one significant digit."""

    def rounded(x: float, decimals: int) -> str:
        return f"{round(x, decimals):,.{max(decimals, 0)}f}"

    def decimals_for(x: float, sig: int) -> int:
        return sig - 1 - math.floor(math.log10(abs(x))) if x else 0

    if mean == 0 and not hw:
        return "0"
    dec = decimals_for(mean, digits) if mean else digits
    if hw:
        dec = min(dec, decimals_for(hw, 1))
        return f"{rounded(mean, dec)}±{rounded(hw, dec)}"
    return rounded(mean, dec) + ("±0" if hw == 0 else "")


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

"""User text on a terminal: names from a scenario are data, never markup or control codes.

Rich reads ``[...]`` in printed strings as markup: a scenario named ``azure [/data/traces]``
raised a MarkupError after the whole simulation, and ``[prod] chat`` lost its first word on
screen. Control characters (escape sequences, carriage returns, bells) can rewrite or hide what
a terminal shows. ``term`` makes a user string safe to print through rich: control characters
are dropped and markup brackets escaped.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def term(text: object) -> str:
    """``text`` for a rich console: no control characters, markup escaped."""
    from rich.markup import escape

    return escape(_CONTROL.sub("", str(text)))

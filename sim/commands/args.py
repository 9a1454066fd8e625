"""What the sub-commands share: a parser whose usage errors are one line with exit code 2, the
integer argument types every sub-command uses, and ``--seed``/``--replications`` as the
scenario overrides they stand for."""

from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"servesim: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= minimum, with a one-line message otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
        return value

    return parse


positive_int = int_at_least(1, "positive")
seed_int = int_at_least(0, "non-negative")


def scenario_overrides(args: argparse.Namespace) -> list[str]:
    """A command's ``--set`` overrides, then ``--seed`` and ``--replications`` as overrides of
    the scenario's ``seed`` and ``replications`` (when the command has them and they were given)."""
    extra = list(args.overrides)
    if getattr(args, "seed", None) is not None:
        extra.append(f"seed={args.seed}")
    if getattr(args, "replications", None) is not None:
        extra.append(f"replications={args.replications}")
    return extra

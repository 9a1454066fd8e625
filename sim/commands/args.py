"""What the sub-commands share: a parser whose usage errors are one line with exit code 2, the
integer argument types every sub-command uses, and ``--seed``/``--replications`` as the
scenario overrides they stand for."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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


def add_scenario_arguments(
    p: argparse.ArgumentParser,
    *,
    seed: bool = True,
    replications: bool = True,
    set_help: str = "change one scenario field, e.g. classes.chat.arrival.rate=12 (repeatable)",
) -> None:
    """The scenario file and its overrides: ``--set`` (repeatable), ``--seed`` and
    ``--replications`` (``scenario_overrides`` turns them into ``--set`` overrides)."""
    p.add_argument("scenario", type=Path, help="scenario YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE", help=set_help)
    if seed:
        p.add_argument(
            "--seed", type=seed_int, help="the seed every random draw derives from (default: the scenario's)"
        )
    if replications:
        p.add_argument("--replications", type=positive_int, help="seeded replications (default: the scenario's)")


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype`` of the commands that run real kernels (calibrate, validate)."""
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="default: bfloat16 on cuda, float32 on cpu"
    )

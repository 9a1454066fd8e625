"""The ``servesim`` command.

    servesim init --model NAME --gpu NAME [--rate R] [--replicas N] [-o FILE] [--force]
    servesim run SCENARIO [-o DIR] [--set key.path=value ...] [--seed N] [--replications K]
    servesim validate-scenario SCENARIO [--set ...]
    servesim catalog [models|gpus]
    servesim bench [--requests N ...]
    servesim calibrate [--model NAME] [--device cpu|cuda] [--quick] [-o PATH] [--from-raw DIR]
    servesim profile show FILE [-o PNG]
    servesim sweep SCENARIO --grid KEY.PATH=V1,V2,... [--grid-file FILE] -o DIR [--backend local|ray] [--address ADDR] [--workers N] [--set ...] [--extend]
    servesim price SCENARIO [--prices FILE] [--loads X1,X2,...] [--steps S1,S2,...] [-o DIR] [--set ...] [--seed N] [--replications K]
    servesim plan SCENARIO [-o DIR] [--set ...] [--seed N] [--workers N] [--backend local|ray] [--address ADDR]
    servesim report RESULTS_DIR [-o FILE]
    servesim validate [--model NAME] [--device cpu|cuda] [--quick] [--profile FILE] [--seed N] [-o DIR]
    servesim fidelity [--points FILE] [--split calibrate|held_out|all] [-o DIR]
    servesim completion bash|zsh|fish

Each sub-command is a module of ``sim.commands`` (its parser and its handler); this module
builds the parser and runs the handler. Bad input (scenario fields, traces, flags) prints one
line naming the problem and exits with code 2; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import os
import sys

from sim import __version__
from sim.commands import (
    bench,
    calibrate,
    catalog,
    completion,
    fidelity,
    init,
    plan,
    price,
    profile,
    report,
    run,
    sweep,
    validate,
    validate_scenario,
)
from sim.commands.args import EXIT_USAGE, Parser
from sim.errors import ServesimError

COMMANDS = (
    init,
    run,
    validate_scenario,
    catalog,
    bench,
    calibrate,
    validate,
    fidelity,
    profile,
    sweep,
    price,
    plan,
    report,
    completion,
)
"""In the order ``servesim --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="servesim", description="Simulate generative-AI inference serving.")
    parser.add_argument("--version", action="version", version=f"servesim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ServesimError as exc:
        sys.stderr.write(f"servesim: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("servesim: interrupted\n")
        return 130
    except BrokenPipeError:
        # the reader went away (`| head -1`): stop quietly, as a Unix tool does, and keep the
        # interpreter's final flush from raising again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``chipletc`` command: a thin layer that parses flags and calls the library.

Each sub-command lives in its own module of this package with two functions:
``register(parser)`` adds its flags to the parser ``build_parser`` made for it, and
``run(args) -> int`` does the work. Errors a user can cause (``ChipletcError``) print as
one line and exit with code 2.

Start-up is kept short: only the module of the command being run is imported (its
imports may pull in torch, OR-Tools or numpy); the others stand in as parsers with
their one-line help, which is all `chipletc --help` shows of them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Collection
from typing import NoReturn

from chipletc import __version__
from chipletc.ir.errors import ChipletcError

# Sub-commands and their one-line help, in the order `chipletc --help` lists them.
COMMANDS = {
    "models": "list the built-in models (zoo names for chipletc inspect/compile)",
    "inspect": "show a model's parameters, bytes, FLOPs per token, KV cache and ops",
    "compile": "find the best tp/pp/batch mapping of MODEL onto a target and write its plan",
    "simulate": "simulate MODEL under a given tp/pp/batch mapping, or the mapping of a plan.json",
    "serve": "serve a request workload on MODEL's mapping: latency percentiles, SLO capacity, "
    "$ per token",
    "targets": "list the hardware target presets (and technology nodes)",
    "cost": "print the die, package, server and TCO cost breakdowns of a target",
    "explore": "explore a chiplet design space for MODELs: Pareto front, best designs, baselines",
    "sensitivity": "vary each cost assumption: $ per token and ratio to baselines, break-evens",
    "compare": "MODEL on several targets side by side over a sweep of context lengths, batches or "
    "latency bounds",
    "schema": "print the JSON Schema of plan.json, schedule.json or a lowered model",
    "cache": "show or clear the cache of lowered models",
}


class OneLineParser(argparse.ArgumentParser):
    """Flag errors as one line, like every other error a user can cause."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("chipletc").strip()
        self.exit(2, f"chipletc: error: {where + ': ' if where else ''}{message}\n")


def build_parser(load: Collection[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The parser, with the flags of the commands in ``load`` (all by default)."""
    parser = OneLineParser(
        prog="chipletc",
        description="Map transformers onto SRAM-only chiplet systems and cost them per token.",
    )
    parser.add_argument("--version", action="version", version=f"chipletc {__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser
    )
    for name, text in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text + ".")
        if name in load:
            importlib.import_module(f"chipletc.cli.{name}").register(p)
    return parser


def requested(argv: list[str]) -> list[str]:
    """The command ``argv`` runs, if any: the first word that is not a flag (the
    top-level flags, --help and --version, take no value)."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return [word] if word in COMMANDS else []


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(requested(argv)).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ChipletcError as err:
        print(f"chipletc: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chipletc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader (e.g. `| head`) left early: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

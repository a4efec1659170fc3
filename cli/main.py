"""The ``chipletc`` command: a thin layer that parses flags and calls the library.

Each sub-command lives in its own module of this package with two functions:
``register(subparsers)`` adds its parser and ``run(args) -> int`` does the work.
Errors a user can cause (``ChipletcError``) print as one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from chipletc import __version__
from chipletc.ir.errors import ChipletcError

# Sub-command modules, in the order `chipletc --help` lists them.
COMMANDS = (
    "models",
    "inspect",
    "compile",
    "simulate",
    "serve",
    "targets",
    "cost",
    "explore",
    "schema",
)


class OneLineParser(argparse.ArgumentParser):
    """Flag errors as one line, like every other error a user can cause."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("chipletc").strip()
        self.exit(2, f"chipletc: error: {where + ': ' if where else ''}{message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="chipletc",
        description="Map transformers onto SRAM-only chiplet systems and cost them per token.",
    )
    parser.add_argument("--version", action="version", version=f"chipletc {__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser
    )
    for name in COMMANDS:
        importlib.import_module(f"chipletc.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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

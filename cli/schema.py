"""`chipletc schema`: print the JSON Schema of a document chipletc writes."""

from __future__ import annotations

import argparse

from chipletc.ir.schema import SCHEMA_KINDS, schema_text

HELP = "print the JSON Schema of plan.json or schedule.json"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help=HELP, description=HELP + ".")
    p.add_argument("kind", choices=SCHEMA_KINDS, help="the document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(schema_text(args.kind), end="")
    return 0

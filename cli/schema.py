"""`chipletc schema`: print the JSON Schema of a document chipletc writes."""

from __future__ import annotations

import argparse

from chipletc.ir.schema import SCHEMA_KINDS, schema_text


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=SCHEMA_KINDS, help="the document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(schema_text(args.kind), end="")
    return 0

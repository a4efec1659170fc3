"""The JSON Schemas shipped with chipletc for the documents it writes."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from .errors import UsageError

__all__ = ["SCHEMA_KINDS", "load_schema", "schema_text"]

SCHEMA_KINDS = ("plan", "schedule", "graph")


def schema_text(kind: str) -> str:
    if kind not in SCHEMA_KINDS:
        raise UsageError(f"schema: unknown document {kind!r}; use one of {', '.join(SCHEMA_KINDS)}")
    return files("chipletc.ir").joinpath(f"schemas/{kind}.schema.json").read_text(encoding="utf-8")


def load_schema(kind: str) -> dict[str, Any]:
    return json.loads(schema_text(kind))

"""Shipped JSON Schemas: documents validate against them, and they change only with a
version bump (each version's schema is pinned here by its hash)."""

from __future__ import annotations

import hashlib
import json

import jsonschema
import pytest

from chipletc.compiler.compile import compile_model
from chipletc.compiler.partition import SearchOptions
from chipletc.ir.graph_json import GRAPH_VERSION, graph_to_json
from chipletc.ir.plan import PLAN_VERSION
from chipletc.ir.schedule import SCHEDULE_VERSION
from chipletc.ir.schema import SCHEMA_KINDS, load_schema, schema_text

# A schema edit must bump the document's version and add its hash here.
PINNED = {
    ("plan", "1.0"): "e400d044d55d352436d16038d5ad70d768a0cc9079f62babe7b97dbed28d695c",
    ("schedule", "1.0"): "efcd3f0133cb4834b669af9ccdf1d33c878267cf102d0cbe0e480f9a20be9f47",
    ("graph", "1.0"): "fb835e9490d8f5ba14d83753c5249701f6b3ed14eed93c230920acaa3c54f9e2",
    # 1.1: the compute dtype recorded apart from storage (plan), act_dtype -> compute_dtype
    ("plan", "1.1"): "61bc8466795785b6eda6b19e276b18ef49f51264b75e493d738c976c0a2ffdec",
    ("schedule", "1.1"): "09229f770b912d5a613225445775d986af7ee6e03a9b58c82b16a69ec09c6024",
    # graph 1.1: how the structure was recognised, and the source tensors no op holds
    ("graph", "1.1"): "ea22ce05feb9811ffd6f89aab73c7fcd5fdcb82cc274bc60f5ed249e0d2fe802",
    # 1.2: the KV-cache layout of each stage (mapping.kv_layout)
    ("plan", "1.2"): "629cf9b27952de7ca8b85bc23ff54c5e5f5ee22c9ad4cce4b7e4ac32df0608db",
    # 1.3: target.weights "streamed" when a wafer streams its weights in
    ("plan", "1.3"): "5539988298fcdd7c72708f72337b2745b8711c31a2b8ea118d618bb8020afb7f",
}
VERSIONS = {"plan": PLAN_VERSION, "schedule": SCHEDULE_VERSION, "graph": GRAPH_VERSION}


@pytest.mark.parametrize("kind", SCHEMA_KINDS)
def test_schema_changes_only_with_a_version_bump(kind):
    schema = load_schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    version = VERSIONS[kind]
    assert schema["properties"]["version"]["const"] == version
    digest = hashlib.sha256(schema_text(kind).encode()).hexdigest()
    assert PINNED.get((kind, version)) == digest, (
        f"{kind} schema changed without a version bump: bump the version and pin {digest}"
    )


@pytest.mark.parametrize("name", ["gpt2-small", "mixtral-8x7b", "deepseek-v3"])
def test_lowered_graph_validates(zoo_graph, name):
    jsonschema.validate(json.loads(graph_to_json(zoo_graph(name))), load_schema("graph"))


def test_compiled_plan_validates(zoo_graph, default_target):
    plan = compile_model(zoo_graph("gpt2-small"), default_target, SearchOptions()).plan
    jsonschema.validate(json.loads(plan.to_json()), load_schema("plan"))


def test_a_plan_missing_a_field_does_not_validate(zoo_graph, default_target):
    doc = json.loads(
        compile_model(zoo_graph("gpt2-small"), default_target, SearchOptions()).plan.to_json()
    )
    del doc["chiplets"][0]["kv_bytes"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, load_schema("plan"))

"""The on-disk form of a lowered model: ``Graph`` <-> JSON (schema ``schemas/graph``).

A document holds the model's traits (``ModelInfo``), its KV-cache and activation
dtypes, and its ops in program order, each with the names of the ops it reads. That is
all a ``Graph`` is, so ``graph_from_json(graph_to_json(g))`` rebuilds ``g`` exactly:
the same ops (kind, dims, weights, block, role, shard, attrs, tied table) in the same
order with the same edges. Other tools may read it too (``chipletc schema graph``).

``graph_from_json`` trusts nothing: a document of another version, a malformed field
or a graph that fails ``Graph.verify()`` raises ``IRError``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from .dtypes import DType
from .errors import IRError
from .graph import Graph, ModelInfo
from .op import Op, OpKind, Role, Shard, Weight

__all__ = ["GRAPH_VERSION", "graph_from_json", "graph_to_json"]

GRAPH_VERSION = "1.1"


def _weight(w: Weight) -> dict[str, Any]:
    out: dict[str, Any] = {"name": w.name, "shape": list(w.shape), "dtype": w.dtype.value}
    if w.stored_bytes is not None:
        out["stored_bytes"] = w.stored_bytes
    return out


def _op(op: Op, inputs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": op.name,
        "kind": op.kind.value,
        "dims": dict(op.dims),
        "weights": [_weight(w) for w in op.weights],
        "block": op.block,
        "role": op.role.value,
        "shard": op.shard.value,
        "attrs": dict(op.attrs),
        "inputs": inputs,
    }
    if op.tied is not None:
        out["tied"] = _weight(op.tied)
    return out


def graph_to_json(graph: Graph) -> str:
    """The document of ``graph``: compact, keys in a fixed order, byte-stable."""
    doc = {
        "version": GRAPH_VERSION,
        "info": dataclasses.asdict(graph.info),
        "kv_dtype": graph.kv_dtype.value,
        "act_dtype": graph.act_dtype.value,
        "ops": [_op(op, [i.name for i in graph.inputs(op.name)]) for op in graph.ops],
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def _read_weight(d: Mapping[str, Any]) -> Weight:
    return Weight(
        name=d["name"],
        shape=tuple(d["shape"]),
        dtype=DType(d["dtype"]),
        stored_bytes=d.get("stored_bytes"),
    )


def graph_from_json(text: str) -> Graph:
    """The ``Graph`` a document describes, verified; ``IRError`` if it is not one."""
    try:
        doc = json.loads(text)
        if doc.get("version") != GRAPH_VERSION:
            raise IRError(f"graph document: version {doc.get('version')!r}, not {GRAPH_VERSION}")
        info = {**doc["info"], "unplaced": tuple(map(tuple, doc["info"].get("unplaced", ())))}
        graph = Graph(ModelInfo(**info), DType(doc["kv_dtype"]), DType(doc["act_dtype"]))
        for d in doc["ops"]:
            tied = d.get("tied")
            op = Op(
                name=d["name"],
                kind=OpKind(d["kind"]),
                dims=d["dims"],
                weights=tuple(_read_weight(w) for w in d["weights"]),
                block=d["block"],
                role=Role(d["role"]),
                shard=Shard(d["shard"]),
                attrs=d["attrs"],
                tied=None if tied is None else _read_weight(tied),
            )
            graph.add_op(op, d["inputs"])
    except IRError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise IRError(f"graph document: malformed ({type(err).__name__}: {err})") from None
    return graph.verify()

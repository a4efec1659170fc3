"""IR invariants: what ``Graph.verify`` promises, checked on small hand-built graphs."""

from __future__ import annotations

from dataclasses import replace

import pytest
from builders import make_graph

from chipletc.ir.errors import IRError
from chipletc.ir.graph import Graph, ModelInfo
from chipletc.ir.op import Op, OpKind, Role, Weight


def tiny_info() -> ModelInfo:
    return ModelInfo("tiny", 1, 8, 2, 2, 4, 10, 32)


def matmul(name: str, shape: tuple[int, int], block: int | None = 0) -> Op:
    weight = Weight(f"{name}.weight", shape)
    return Op(name, OpKind.MATMUL, {"in_features": 8, "out_features": 8}, (weight,), block, Role.Q)


def attention(name: str, block: int = 0) -> Op:
    dims = {"heads": 2, "kv_heads": 2, "head_dim": 4, "kv_elems": 8}
    return Op(name, OpKind.ATTN_SCORE, dims, (), block, Role.ATTN)


def test_builder_graph_verifies() -> None:
    g = make_graph(layers=3)
    assert g.verify() is g and g.num_blocks == 3


def test_cycle_raises() -> None:
    g = make_graph(layers=1)
    # The public API only adds edges into new ops, so a cycle needs the raw graph.
    g._g.add_edge("h0.fc2", "h0.ln1")
    with pytest.raises(IRError, match="cycle"):
        g.verify()


def test_duplicate_weight_owner_raises() -> None:
    g = Graph(tiny_info())
    g.add_op(matmul("a", (8, 8)))
    shared = replace(matmul("b", (8, 8)), weights=(Weight("a.weight", (8, 8)),))
    g.add_op(shared, ["a"])
    g.add_op(attention("s"), ["b"])
    with pytest.raises(IRError, match="already owned"):
        g.verify()


def test_wrong_weight_shape_raises() -> None:
    g = Graph(tiny_info())
    g.add_op(matmul("a", (8, 9)))
    g.add_op(attention("s"), ["a"])
    with pytest.raises(IRError, match="does not fit"):
        g.verify()


def test_block_reading_a_later_block_raises() -> None:
    g = Graph(tiny_info())
    g.add_op(matmul("late", (8, 8), block=1))
    g.add_op(attention("s0", block=0), ["late"])
    g.add_op(attention("s1", block=1), ["s0"])
    with pytest.raises(IRError, match="later block"):
        g.verify()


def test_missing_block_index_raises() -> None:
    g = Graph(tiny_info())
    g.add_op(matmul("a", (8, 8), block=0))
    g.add_op(attention("s", block=2), ["a"])
    with pytest.raises(IRError, match=r"not 0\.\.L-1"):
        g.verify()


def test_no_attention_raises() -> None:
    g = Graph(tiny_info())
    g.add_op(matmul("a", (8, 8)))
    with pytest.raises(IRError, match="no attention"):
        g.verify()


def test_heads_not_divisible_by_kv_heads_raises() -> None:
    g = Graph(tiny_info())
    g.add_op(matmul("a", (8, 8)))
    dims = {"heads": 3, "kv_heads": 2, "head_dim": 4, "kv_elems": 8}
    g.add_op(Op("s", OpKind.ATTN_SCORE, dims, (), 0, Role.ATTN), ["a"])
    with pytest.raises(IRError, match="not divisible"):
        g.verify()


def test_missing_dims_raise_at_construction() -> None:
    with pytest.raises(IRError, match="missing dims"):
        Op("m", OpKind.MATMUL, {"in_features": 8})

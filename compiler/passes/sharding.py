"""Tensor-parallel sharding of every op, decided from roles and dataflow alone.

``assign_sharding`` requires roles set by a frontend (Q/K/V/QKV/KV, PROJ, FC1/FC2,
GATE/UP/DOWN, HEAD, TOKEN, ...) and ensures every op carries a ``Shard``:

* matmuls that start a pair (Q, K, V, QKV, KV, FC1, GATE, UP), or whose output only
  attention reads (relative-position keys), split their output columns; the ones
  that consume them (PROJ, FC2, DOWN) split their input rows;
* attention ops split heads; the LM head and token embedding split the vocabulary;
  expert matmuls spread whole experts;
* an elementwise op or activation whose every input is split column-wise (or by
  heads) is split with it (WIDTH), one whose inputs are all expert-split stays with
  its experts (EXPERT); anything else, including norms, routers and low-rank (MLA)
  down-projections, is replicated.

It does not check that a tensor-parallel width divides heads or widths: the
partitioner owns that constraint.
"""

from __future__ import annotations

from dataclasses import replace

from chipletc.ir.graph import Graph
from chipletc.ir.op import OpKind, Role, Shard

__all__ = ["assign_sharding"]

_COLUMN_ROLES = frozenset({Role.Q, Role.K, Role.V, Role.QKV, Role.KV, Role.FC1, Role.GATE, Role.UP})
_ROW_ROLES = frozenset({Role.PROJ, Role.FC2, Role.DOWN})
_SPLIT_WIDTH = frozenset({Shard.COLUMN, Shard.HEADS, Shard.WIDTH})


def assign_sharding(graph: Graph) -> Graph:
    """A copy of ``graph`` with ``Op.shard`` set on every op (see the module docstring)."""
    out = graph.copy()
    shard: dict[str, Shard] = {}
    for op in graph.ops:
        kind = op.kind
        if kind is OpKind.MATMUL and (op.role in _COLUMN_ROLES or _feeds_attention(graph, op.name)):
            s = Shard.COLUMN
        elif kind is OpKind.MATMUL and op.role in _ROW_ROLES:
            s = Shard.ROW
        elif kind in (OpKind.ATTN_SCORE, OpKind.ATTN_CONTEXT):
            s = Shard.HEADS
        elif kind is OpKind.LM_HEAD or (kind is OpKind.EMBEDDING and op.role is Role.TOKEN):
            s = Shard.VOCAB
        elif kind is OpKind.EXPERT_MATMUL:
            s = Shard.EXPERT
        elif kind in (OpKind.ELEMENTWISE, OpKind.ACTIVATION):
            s = _follow_inputs([shard[i.name] for i in graph.inputs(op.name)])
        else:
            s = Shard.REPLICATED
        shard[op.name] = s
        if s is not op.shard:
            out.replace_op(replace(op, shard=s))
    return out


def _feeds_attention(graph: Graph, name: str) -> bool:
    """A projection read only by attention (e.g. relative-position keys) splits by heads."""
    users = graph.users(name)
    return bool(users) and all(u.kind in (OpKind.ATTN_SCORE, OpKind.ATTN_CONTEXT) for u in users)


def _follow_inputs(inputs: list[Shard]) -> Shard:
    if inputs and all(s in _SPLIT_WIDTH for s in inputs):
        return Shard.WIDTH
    if inputs and all(s is Shard.EXPERT for s in inputs):
        return Shard.EXPERT
    return Shard.REPLICATED

"""Tensor-parallel sharding of every op, decided from roles and dataflow alone.

``assign_sharding`` requires roles set by a frontend (Q/K/V/QKV/KV, PROJ, FC1/FC2,
GATE/UP/DOWN, HEAD, TOKEN, ...) and ensures every op carries a ``Shard``, chosen by
the shard rule of its kind in ``ir.op.KIND_RULES``:

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
from chipletc.ir.op import KIND_RULES, OpKind, Shard, ShardContext

__all__ = ["assign_sharding"]


def assign_sharding(graph: Graph) -> Graph:
    """A copy of ``graph`` with ``Op.shard`` set on every op by its kind's shard rule.

    Requires roles set by a frontend; ensures every op carries the ``Shard`` its
    ``KIND_RULES`` entry picks, given the shards of its inputs (decided first: ops are
    visited in topological order) and whether only attention reads it.
    """
    out = graph.copy()
    shard: dict[str, Shard] = {}
    for op in graph.ops:
        ctx = ShardContext(
            input_shards=tuple(shard[i.name] for i in graph.inputs(op.name)),
            only_attention_reads=_only_attention_reads(graph, op.name),
        )
        s = shard[op.name] = KIND_RULES[op.kind].shard(op, ctx)
        if s is not op.shard:
            out.replace_op(replace(op, shard=s))
    return out


def _only_attention_reads(graph: Graph, name: str) -> bool:
    """A projection read only by attention (e.g. relative-position keys) splits by heads."""
    users = graph.users(name)
    return bool(users) and all(u.kind in (OpKind.ATTN_SCORE, OpKind.ATTN_CONTEXT) for u in users)

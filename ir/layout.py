"""Where a mapping puts things: the one memory model and the one stage layout.

Every part that asks "what does a stage hold, and what crosses between stages" asks
here: the partitioner's integer tables, the placer, the schedule lowering, the
analytical model and explore. It lives in ``ir`` (not ``compiler``) because it is a
pure function of the graph, the mapping and the target, and ``backends.perf`` needs it
too: backends never import compiler.

Memory of one rank of a stage (``stage_memory``)
    weights   its shard of every op of the stage (``ir.sharding``), plus, on the last of
              several stages, its own copy of a tied LM head's table (``holds_tied_copy``:
              the head reads the embedding, which sits on the first stage);
    kv        the KV cache of its layers for the whole batch at the full context
              (prompt + generated tokens): its share by KV heads, and under
              ``KVLayout.BATCH`` only the sequences it holds where ranks share a
              KV head (``ir.sharding``; ``kv_batch_ranks`` of them split the batch);
    workspace two copies of one micro-batch's prefill residual stream
              (``workspace_bytes``): attention scores and FFN intermediates are tiled,
              flash-style, and not held whole.

Layout of chiplets: stage-major (stage s, rank r -> chiplet s * tp + r), laid in order
over chips, packages and servers, so a tp group sits on neighbouring chips and
consecutive stages on neighbouring groups.

Not checked here: that the mapping fits the target or splits the heads
(``compiler.schedule.check_mapping`` and the partitioner do that).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .graph import Graph
from .mapping import KVLayout, ModelMapping
from .op import Op
from .sharding import kv_sharing_ranks, rank_cost, rank_weight_bytes
from .target import LinkLevel, Target
from .workload import Workload

__all__ = [
    "StageMemory",
    "decode_context",
    "holds_tied_copy",
    "innermost_level",
    "kv_batch_ranks",
    "kv_bytes_per_token",
    "level_for",
    "neighbour_stage_level",
    "rank_weights",
    "stage_memory",
    "stage_ops",
    "stage_transfer_bytes",
    "stage_transfer_level",
    "tp_link_level",
    "workspace_bytes",
]


# -- what a stage runs -----------------------------------------------------------------


def stage_ops(graph: Graph, mapping: ModelMapping) -> list[list[Op]]:
    """The IR ops of each stage, in program order: "pre" on the first, "post" on the last."""
    groups = graph.groups()
    out = []
    for s, (first, last) in enumerate(mapping.stages):
        ops = [op for b in range(first, last + 1) for op in groups[b]]
        if s == 0:
            ops = groups["pre"] + ops
        if s == mapping.pp - 1:
            ops = ops + groups["post"]
        out.append(ops)
    return out


def holds_tied_copy(stage: int, pp: int) -> bool:
    """Whether ``stage`` keeps its own copy of a tied LM head's table: the last stage,
    unless it is also the first (which holds the embedding table itself)."""
    return pp > 1 and stage == pp - 1


def decode_context(prompt_len: int, gen_len: int) -> int:
    """Mean context length over the generated tokens (the cache grows by one a step)."""
    return prompt_len + (gen_len + 1) // 2


# -- memory of one rank ----------------------------------------------------------------


def rank_weights(
    graph: Graph, ops: Iterable[Op], tp: int, pad_heads: bool, tied_copy: bool = False
) -> int:
    """Bytes of weights one rank of a ``tp`` group stores for ``ops`` (with ``tied_copy``,
    a tied LM head's own share of the table: see ``holds_tied_copy``)."""
    info = graph.info
    return rank_weight_bytes(ops, tp, pad_heads, info.num_heads, info.num_kv_heads, tied_copy)


def kv_bytes_per_token(
    graph: Graph,
    ops: Iterable[Op],
    tp: int,
    pad_heads: bool,
    kv_layout: KVLayout = KVLayout.HEADS,
) -> float:
    """KV-cache bytes one rank keeps for ``ops`` per sequence and token of context
    (under ``KVLayout.BATCH``, averaged over the batch the sharing ranks split)."""
    info = graph.info
    one = Workload.decode(1, 1)
    total = 0.0
    for op in ops:
        whole = op.cost(one, graph.kv_dtype, graph.act_dtype)
        total += rank_cost(
            op, whole, tp, pad_heads, info.num_heads, info.num_kv_heads, kv_layout
        ).kv_write_bytes
    return total


def kv_batch_ranks(graph: Graph, tp: int) -> int:
    """How many ranks of a tp group share a KV cache of the model, at most (1: none
    do, so ``KVLayout.BATCH`` changes nothing). Under ``KVLayout.BATCH`` they split
    each micro-batch's sequences, so it must divide the micro-batch."""
    return max((kv_sharing_ranks(op, tp) for op in graph.ops), default=1)


def workspace_bytes(graph: Graph, micro_batch: int, prompt_len: int) -> int:
    """Two copies of one micro-batch's prefill residual stream (activation workspace)."""
    return math.ceil(2 * micro_batch * prompt_len * graph.info.d_model * graph.act_dtype.bits / 8)


@dataclass(frozen=True)
class StageMemory:
    """Bytes one rank of a stage holds, by what they are."""

    weight_bytes: int
    kv_bytes: int
    workspace_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes + self.workspace_bytes

    def held_bytes(self, weights_resident: bool) -> int:
        """What the rank's memory must hold: ``total_bytes``, less the weights when they
        stream in from off the wafer (``Target.weights_resident``)."""
        return self.total_bytes if weights_resident else self.kv_bytes + self.workspace_bytes


def stage_memory(
    graph: Graph, mapping: ModelMapping, prompt_len: int, gen_len: int
) -> tuple[StageMemory, ...]:
    """What one rank of each stage holds under ``mapping`` (see the module docstring)."""
    tp, pad, layout = mapping.tp, mapping.pad_heads, mapping.kv_layout
    work = workspace_bytes(graph, mapping.micro_batch, prompt_len)
    out = []
    for s, ops in enumerate(stage_ops(graph, mapping)):
        per_token = kv_bytes_per_token(graph, ops, tp, pad, layout)
        kv = per_token * mapping.batch * (prompt_len + gen_len)
        out.append(
            StageMemory(
                weight_bytes=rank_weights(graph, ops, tp, pad, holds_tied_copy(s, mapping.pp)),
                kv_bytes=math.ceil(kv),
                workspace_bytes=work,
            )
        )
    return tuple(out)


# -- links -----------------------------------------------------------------------------


def stage_transfer_bytes(graph: Graph, tokens: int) -> float:
    """Bytes one stage hands the next for ``tokens`` tokens: their residual stream
    (``micro_batch * prompt_len`` tokens in prefill, ``micro_batch`` in decode)."""
    return tokens * graph.info.d_model * (graph.act_dtype.bits / 8)


def innermost_level(levels: tuple[LinkLevel, ...], group_chips: int) -> LinkLevel:
    """The first of ``levels`` (innermost first) whose domain holds ``group_chips``."""
    for level in levels:
        if level.domain_chips >= group_chips:
            return level
    return levels[-1]


def level_for(target: Target, group_chips: int) -> LinkLevel:
    """The innermost link level whose domain holds ``group_chips`` chips."""
    return innermost_level(target.link_levels(), group_chips)


def tp_link_level(target: Target, tp: int) -> LinkLevel:
    """The link level a tp group's collectives run on: the innermost holding the group."""
    return level_for(target, tp)


def neighbour_stage_level(target: Target, tp: int) -> LinkLevel:
    """The link level between two consecutive stages inside one server: the innermost
    level whose domain holds both tp groups (``2 tp`` neighbouring chips)."""
    return level_for(target, 2 * tp)


def stage_transfer_level(target: Target, tp: int, stage: int) -> LinkLevel:
    """The link level between stage ``stage`` and the next, chiplets laid out in order:
    the cluster links where the two groups sit on different servers, else
    ``neighbour_stage_level``."""
    per_server = target.chips_per_server
    last_of_stage = (stage + 1) * tp - 1
    first_of_next = (stage + 1) * tp
    if last_of_stage // per_server != first_of_next // per_server:
        return target.link_levels()[-1]
    return neighbour_stage_level(target, tp)

"""Lower a mapping of a graph onto a target to per-stage schedules (``ir.Schedule``).

What a rank holds and computes, and which collectives follow an op, come from
``ir.sharding`` (``rank_cost``, ``collectives_after``): this pass only orders them and
adds what the pipeline needs (a receive at the head of every stage but the first, a
send at the tail of every stage but the last). Chiplets are numbered stage-major as in
``compiler.place`` (stage s, rank r -> s * tp + r), so the link levels here are the
ones the placement implies.

Requires a mapping that ``check_mapping`` accepts; ensures every op of the graph
appears once, on the stage that holds its block.
"""

from __future__ import annotations

from dataclasses import replace

from chipletc.ir.errors import InfeasibleError, UsageError
from chipletc.ir.graph import Graph
from chipletc.ir.layout import (
    decode_context,
    kv_batch_ranks,
    stage_memory,
    stage_ops,
    stage_transfer_bytes,
    stage_transfer_level,
    tp_link_level,
)
from chipletc.ir.mapping import KVLayout, ModelMapping
from chipletc.ir.op import Op, OpCost
from chipletc.ir.schedule import Schedule, ScheduleKind, ScheduleOp, StageSchedule
from chipletc.ir.sharding import check_tp, collectives_after, rank_cost
from chipletc.ir.target import Target
from chipletc.ir.workload import Workload

__all__ = ["check_mapping", "lower_schedule"]


def check_mapping(
    graph: Graph, target: Target, mapping: ModelMapping, prompt_len: int, gen_len: int
) -> None:
    """Raise a one-line ``UsageError`` / ``InfeasibleError`` for a mapping that cannot run.

    Checks: tp splits the heads (or pads them when the mapping says so); a batch-split
    KV cache is shared by ranks that divide the micro-batch (``kv_batch_ranks``); the
    stages cover the model's blocks; the replica fits the target's servers; one rank of every
    stage holds its weight shards (unless they stream in), the KV cache of the whole
    batch at the full context and the activation workspace (``ir.layout.stage_memory``)
    in its memory.
    """
    info = graph.info
    check_tp(info.num_heads, info.num_kv_heads, mapping.tp, mapping.pad_heads)
    if mapping.kv_layout is KVLayout.BATCH:
        ranks = kv_batch_ranks(graph, mapping.tp)
        if ranks == 1:
            raise UsageError(
                f"kv layout: batch needs ranks that share a KV cache; at tp {mapping.tp} "
                f"each rank of {info.name} holds KV heads of its own (use heads)"
            )
        if mapping.micro_batch % ranks:
            raise UsageError(
                f"kv layout: batch splits each micro-batch over the {ranks} ranks sharing a "
                f"KV cache; micro-batch {mapping.micro_batch} is not a multiple of {ranks}"
            )
    if mapping.pp > graph.num_blocks:
        raise UsageError(
            f"pp: {mapping.pp} stages for {graph.num_blocks} layers; use 1..{graph.num_blocks}"
        )
    if mapping.num_layers != graph.num_blocks:
        raise UsageError(
            f"stages: cover {mapping.num_layers} blocks but {info.name} has {graph.num_blocks}"
        )
    available = target.max_servers * target.chips_per_server
    if mapping.num_chiplets > available:
        raise InfeasibleError(
            f"mapping: tp {mapping.tp} x pp {mapping.pp} = {mapping.num_chiplets} chiplets, "
            f"target {target.name} has {available}; lower tp or pp"
        )
    cap = target.memory_capacity_bytes
    for s, mem in enumerate(stage_memory(graph, mapping, prompt_len, gen_len)):
        need, weights = mem.held_bytes(target.weights_resident), mem.weight_bytes
        if need > cap:
            raise InfeasibleError(
                f"mapping: stage {s} needs {need / 1e9:.3g} GB per chiplet (weights "
                f"{weights / 1e9:.3g} GB, KV cache of batch {mapping.batch}), over the "
                f"{cap / 1e9:.3g} GB of {target.name} by {(need - cap) / 1e9:.3g} GB; "
                "lower the batch or raise tp or pp"
            )


def _op_record(op: Op, whole: OpCost, mine: OpCost, group: tuple[int, ...]) -> ScheduleOp:
    return ScheduleOp(
        name=op.name,
        kind=ScheduleKind.COMPUTE,
        block=op.block,
        chiplets=group,
        flops=mine.flops,
        model_flops=whole.flops,
        weight_bytes=mine.weight_bytes,
        kv_bytes=mine.kv_read_bytes + mine.kv_write_bytes,
        act_bytes=mine.act_in_bytes + mine.act_out_bytes,
    )


def _program(
    graph: Graph,
    ops: list[Op],
    target: Target,
    mapping: ModelMapping,
    group: tuple[int, ...],
    wl: Workload,
    slope_wl: Workload | None,
) -> list[ScheduleOp]:
    """Compute ops and their collectives; with ``slope_wl`` (one more position of
    context) each op also carries its change per position."""
    info, tp, layout = graph.info, mapping.tp, mapping.kv_layout
    shard = (tp, mapping.pad_heads, info.num_heads, info.num_kv_heads, layout)
    out: list[ScheduleOp] = []
    for op in ops:
        whole = op.cost(wl, graph.kv_dtype, graph.act_dtype)
        mine = rank_cost(op, whole, *shard)
        rec = _op_record(op, whole, mine, group)
        if slope_wl is not None:
            w2 = op.cost(slope_wl, graph.kv_dtype, graph.act_dtype)
            m2 = rank_cost(op, w2, *shard)
            nxt = _op_record(op, w2, m2, group)
            rec = replace(
                rec,
                d_flops=nxt.flops - rec.flops,
                d_model_flops=nxt.model_flops - rec.model_flops,
                d_kv_bytes=nxt.kv_bytes - rec.kv_bytes,
                d_act_bytes=nxt.act_bytes - rec.act_bytes,
            )
        out.append(rec)
        for c in collectives_after(op, whole, tp, layout):
            ranks = group[: c.group or tp]  # the representative's (first) sub-group
            out.append(
                ScheduleOp(
                    name=f"{op.name}.{c.kind}",
                    kind=ScheduleKind.COLLECTIVE,
                    block=op.block,
                    chiplets=ranks,
                    link_bytes=c.bytes,
                    collective=c.kind,
                    level=tp_link_level(target, len(ranks)).name,
                )
            )
    return out


def lower_schedule(
    graph: Graph, target: Target, mapping: ModelMapping, prompt_len: int, gen_len: int
) -> Schedule:
    """Per-stage prefill and decode programs of one micro-batch under ``mapping``.

    Decode programs are evaluated at the mean context over the generated tokens (as the
    analytical model) and carry their slope per position of context.
    """
    check_mapping(graph, target, mapping, prompt_len, gen_len)
    tp, m = mapping.tp, mapping.micro_batch
    ctx = decode_context(prompt_len, gen_len)
    wl_pf = Workload.prefill(m, prompt_len)
    wl_dc = Workload.decode(m, ctx)
    wl_dc1 = Workload.decode(m, ctx + 1)
    per_stage = stage_ops(graph, mapping)
    groups = [tuple(range(s * tp, (s + 1) * tp)) for s in range(mapping.pp)]
    stages = []
    for s, ops in enumerate(per_stage):
        group = groups[s]
        programs = []
        for wl, slope, tokens in ((wl_pf, None, m * prompt_len), (wl_dc, wl_dc1, m)):
            prog = _program(graph, ops, target, mapping, group, wl, slope)
            hop_bytes = stage_transfer_bytes(graph, tokens)
            if s > 0:
                prog.insert(0, _hop(ScheduleKind.RECV, target, tp, s - 1, groups, hop_bytes))
            if s < mapping.pp - 1:
                prog.append(_hop(ScheduleKind.SEND, target, tp, s, groups, hop_bytes))
            programs.append(tuple(prog))
        stages.append(StageSchedule(s, mapping.stages[s], group, programs[0], programs[1]))
    return Schedule(
        model=graph.info.name,
        target=target.name,
        tp=tp,
        pp=mapping.pp,
        batch=mapping.batch,
        micro_batch=m,
        prompt_len=prompt_len,
        gen_len=gen_len,
        decode_context=ctx,
        compute_dtype=graph.compute_dtype,
        stages=tuple(stages),
    )


def _hop(
    kind: ScheduleKind,
    target: Target,
    tp: int,
    boundary: int,
    groups: list[tuple[int, ...]],
    nbytes: float,
) -> ScheduleOp:
    """The send (on stage ``boundary``) or receive (on ``boundary + 1``) between them."""
    src, dst = boundary, boundary + 1
    return ScheduleOp(
        name=f"{kind.value}.stage{src}->stage{dst}",
        kind=kind,
        block=None,
        chiplets=groups[src] + groups[dst],
        link_bytes=nbytes,
        level=stage_transfer_level(target, tp, boundary).name,
        peer_stage=dst if kind is ScheduleKind.SEND else src,
    )

"""The analytical performance model the partitioner searches with.

The physics lives here once; the simulator (``chipletc.backends.sim``) replays the same
per-op and per-collective times event by event, so the two agree wherever nothing
contends for a link.

* An op takes ``max(compute, memory) + efficiency.op_overhead_s`` (``op_time``):
  FLOPs over peak x ``efficiency.compute``, and the bytes it moves (weights, KV cache,
  activations) over the bandwidth of the memory that holds the weights x
  ``efficiency.memory``; the overhead is the fixed cost of launching one kernel or
  program step, which dominates small decode batches on GPUs. Compute runs at the
  rate of ``graph.compute_dtype`` (bf16 unless a W8A8-style fp8/int8 run is asked
  for): quantized weights alone save bytes, not FLOPs. Activations are read from and
  written to that same memory (HBM on a GPU or TPU, SRAM on a Chiplet Cloud design),
  scaled by ``efficiency.activation_traffic`` where a compiler fuses elementwise ops
  away.
* Tensor-parallel collectives and stage-to-stage sends are timed by
  ``backends.perf.collectives`` (ring, torus, multi-rail, hierarchical and tree
  algorithms, the fastest per message); up to ``efficiency.collective_overlap`` of a
  collective hides under the op that produces its input.
* A pipeline of ``pp`` stages and ``M`` micro-batches: prefill takes the sum of stage
  times plus ``(M - 1)`` times the slowest stage; one decode step (every sequence gets
  one token) takes ``max(sum of stage times, M x slowest stage)``, since a micro-batch
  cannot start its next token before its last one left the pipeline.
* Decode is evaluated at the mean context over the generated tokens: every cost is
  affine in the context, so this equals the mean of the steps wherever an op stays on
  one side of its roofline ridge.

Compute overlaps communication only through ``collective_overlap``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Protocol

from chipletc.backends.perf.collectives import (
    collective_time_s,
    exposed_collective_s,
    transfer_time_s,
)
from chipletc.backends.perf.metrics import RunMetrics, StageRun, run_metrics
from chipletc.ir.graph import Graph
from chipletc.ir.layout import decode_context, stage_ops, stage_transfer_bytes, stage_transfer_level
from chipletc.ir.mapping import KVLayout, ModelMapping
from chipletc.ir.op import Collective, Op, OpCost
from chipletc.ir.sharding import collectives_after, rank_cost
from chipletc.ir.target import Target
from chipletc.ir.workload import Workload

__all__ = [
    "GroupTime",
    "OpTime",
    "OpTimeModel",
    "PerfEstimate",
    "RankShare",
    "estimate",
    "group_shares",
    "group_time",
    "op_time",
    "shares_time",
]

@dataclass(frozen=True)
class OpTime:
    """One op's time on one rank, split the way the bottleneck attribution needs."""

    compute_s: float
    memory_s: float
    overhead_s: float

    @property
    def total_s(self) -> float:
        return max(self.compute_s, self.memory_s) + self.overhead_s

    @property
    def compute_bound(self) -> bool:
        return self.compute_s >= self.memory_s


def op_time(cost: OpCost, target: Target, peak_flops: float) -> OpTime:
    """Roofline time of one rank's share of an op (``cost``), plus the per-op overhead.

    ``peak_flops`` is the chip's peak at the graph's activation dtype (callers hoist it
    out of their loops). Weights streamed onto a wafer (``Target.weights_resident``
    false) arrive at ``Target.stream_bw_Bps`` while the KV cache and activations move
    in SRAM at the same time: the slower of the two is the op's memory time.
    """
    eff = target.efficiency
    moved = cost.memory_bytes + eff.activation_traffic * (cost.act_in_bytes + cost.act_out_bytes)
    stream_bw = target.stream_bw_Bps
    if stream_bw:
        memory_s = max((moved - cost.weight_bytes) / (target.memory_bw_Bps * eff.memory),
                       cost.weight_bytes / stream_bw)
    else:
        memory_s = moved / (target.memory_bw_Bps * eff.memory)
    return OpTime(
        compute_s=cost.flops / (peak_flops * eff.compute),
        memory_s=memory_s,
        overhead_s=eff.op_overhead_s,
    )


class OpTimeModel(Protocol):
    """How long one rank's share of an op (``cost``) takes on ``target``.

    The seam for per-op models other than the roofline (a table of measured kernels, a
    learned predictor): the analytical model (``group_time``, ``estimate``) and the
    simulator (``backends.sim``) both take one, ``op_time`` (roofline x efficiency) by
    default. Collectives have their own seam, ``collectives.collective_time_s``.
    """

    def __call__(self, cost: OpCost, target: Target, peak_flops: float) -> OpTime: ...


@dataclass(frozen=True)
class GroupTime:
    """Time of a group of ops (a block, a stage) on one rank, split as the run metrics
    need it (``metrics.StageRun``): the same parts as the simulator's ``PassTime``."""

    total_s: float = 0.0
    compute_s: float = 0.0  # compute-bound ops (roofline part)
    memory_s: float = 0.0  # memory-bound ops (roofline part)
    overhead_s: float = 0.0  # fixed per-op time
    link_s: float = 0.0  # collectives
    flops: float = 0.0  # per rank
    model_flops: float = 0.0  # the model's FLOPs done by the whole group
    memory_bytes: float = 0.0  # weights, KV cache and activations moved by the rank

    def __add__(self, other: GroupTime) -> GroupTime:
        return GroupTime(*(getattr(self, f) + getattr(other, f) for f in _GROUP_FIELDS))

    def scaled(self, k: float) -> GroupTime:
        return GroupTime(*(getattr(self, f) * k for f in _GROUP_FIELDS))


_GROUP_FIELDS = tuple(f.name for f in fields(GroupTime))


@dataclass(frozen=True)
class RankShare:
    """One op's share on one rank at a workload: what no target changes, so a search
    over many targets computes it once (``group_shares``) and times it per target."""

    whole: OpCost  # the whole op
    mine: OpCost  # this rank's part
    collectives: tuple[Collective, ...]  # after the op


def group_shares(
    graph: Graph,
    ops: Iterable[Op],
    tp: int,
    wl: Workload,
    pad_heads: bool,
    kv_layout: KVLayout = KVLayout.HEADS,
) -> tuple[RankShare, ...]:
    """Each op's ``RankShare`` at workload ``wl`` (one micro-batch)."""
    info = graph.info
    shard = (tp, pad_heads, info.num_heads, info.num_kv_heads, kv_layout)
    out = []
    for op in ops:
        whole = op.cost(wl, graph.kv_dtype, graph.act_dtype)
        mine = rank_cost(op, whole, *shard)
        out.append(RankShare(whole, mine, collectives_after(op, whole, tp, kv_layout)))
    return tuple(out)


def shares_time(
    graph: Graph,
    shares: Iterable[RankShare],
    target: Target,
    tp: int,
    op_model: OpTimeModel = op_time,
) -> GroupTime:
    """Time for one rank to run ``shares`` on ``target``."""
    peak = target.chiplet.peak_flops(graph.compute_dtype)
    eff = target.efficiency
    total_s = compute_s = memory_s = overhead_s = link_s = flops = model_flops = moved = 0.0
    for share in shares:
        mine = share.mine
        t = op_model(mine, target, peak)
        busy = t.total_s
        bound = max(t.compute_s, t.memory_s)
        t_l = sum(
            exposed_collective_s(
                collective_time_s(c.kind, c.bytes, c.group or tp, target), busy, eff
            )
            for c in share.collectives
        )
        total_s += busy + t_l
        if t.compute_bound:
            compute_s += bound
        else:
            memory_s += bound
        overhead_s += t.overhead_s
        link_s += t_l
        flops += mine.flops
        model_flops += share.whole.flops
        moved += mine.memory_bytes + mine.act_in_bytes + mine.act_out_bytes
    return GroupTime(total_s, compute_s, memory_s, overhead_s, link_s, flops, model_flops, moved)


def group_time(
    graph: Graph,
    ops: Iterable[Op],
    target: Target,
    tp: int,
    wl: Workload,
    pad_heads: bool,
    op_model: OpTimeModel = op_time,
    kv_layout: KVLayout = KVLayout.HEADS,
) -> GroupTime:
    """Time for one rank to run ``ops`` at workload ``wl`` (one micro-batch)."""
    shares = group_shares(graph, ops, tp, wl, pad_heads, kv_layout)
    return shares_time(graph, shares, target, tp, op_model)


@dataclass(frozen=True)
class PerfEstimate:
    prefill_s: float  # time to first token for the whole batch
    decode_s_per_token: float  # one decode step: every sequence gets one token
    tokens_per_s: float  # generated tokens per second of one replica, prefill included
    end_to_end_s: float  # prefill + all generated tokens
    stage_decode: tuple[GroupTime, ...]  # per stage, one micro-batch, mean context
    stage_prefill: tuple[GroupTime, ...]
    transfer_decode_s: float  # one stage-to-stage hop of a micro-batch
    transfer_prefill_s: float
    metrics: RunMetrics  # attribution, MFU, utilisation: the simulator's definitions

    @property
    def bottleneck(self) -> str:
        return self.metrics.bottleneck


def pipeline_times(
    stage_s: list[float], hops_s: list[float], micro_batches: int
) -> tuple[float, float]:
    """(prefill-style fill time, decode-step time) of a pipeline of stage times."""
    path = sum(stage_s) + sum(hops_s)
    slowest = max(stage_s)
    return path + (micro_batches - 1) * slowest, max(path, micro_batches * slowest)


def estimate(
    graph: Graph,
    target: Target,
    mapping: ModelMapping,
    prompt_len: int,
    gen_len: int,
    op_model: OpTimeModel = op_time,
) -> PerfEstimate:
    """Prefill, decode and throughput of one replica under ``mapping``, and the run's
    metrics: each stage's passes over the run (``num_micro_batches`` prefills and as
    many passes per decode step at the mean context) against the end-to-end time."""
    m, tp = mapping.micro_batch, mapping.tp
    wl_pf = Workload.prefill(m, prompt_len)
    wl_dc = Workload.decode(m, decode_context(prompt_len, gen_len))
    stage_pf, stage_dc = [], []
    shard = (mapping.pad_heads, op_model, mapping.kv_layout)
    for ops in stage_ops(graph, mapping):
        stage_pf.append(group_time(graph, ops, target, tp, wl_pf, *shard))
        stage_dc.append(group_time(graph, ops, target, tp, wl_dc, *shard))
    levels = [stage_transfer_level(target, tp, s) for s in range(mapping.pp - 1)]
    bytes_pf = stage_transfer_bytes(graph, m * prompt_len)
    bytes_dc = stage_transfer_bytes(graph, m)
    hop_pf = [transfer_time_s(bytes_pf, lv, target, tp) for lv in levels]
    hop_dc = [transfer_time_s(bytes_dc, lv, target, tp) for lv in levels]
    k = mapping.num_micro_batches
    prefill_s, _ = pipeline_times([g.total_s for g in stage_pf], hop_pf, k)
    _, step_s = pipeline_times([g.total_s for g in stage_dc], hop_dc, k)
    end_to_end = prefill_s + gen_len * step_s
    sends = [k * (pf + gen_len * dc) for pf, dc in zip(hop_pf, hop_dc, strict=True)] + [0.0]
    runs = []
    for pf, dc, send in zip(stage_pf, stage_dc, sends, strict=True):
        run = (pf + dc.scaled(gen_len)).scaled(k)
        runs.append(StageRun(
            busy_s=run.total_s,
            compute_s=run.compute_s,
            memory_s=run.memory_s,
            overhead_s=run.overhead_s,
            collective_s=run.link_s,
            send_s=send,
            flops=run.flops,
            model_flops=run.model_flops,
            memory_bytes=run.memory_bytes,
        ))
    return PerfEstimate(
        prefill_s=prefill_s,
        decode_s_per_token=step_s,
        tokens_per_s=mapping.batch * gen_len / end_to_end,
        end_to_end_s=end_to_end,
        stage_decode=tuple(stage_dc),
        stage_prefill=tuple(stage_pf),
        transfer_decode_s=max(hop_dc, default=0.0),
        transfer_prefill_s=max(hop_pf, default=0.0),
        metrics=run_metrics(runs, end_to_end, max(sends), target, tp, graph.compute_dtype),
    )

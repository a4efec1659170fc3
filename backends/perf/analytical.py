"""The analytical performance model the partitioner searches with.

The physics lives here once; the simulator (``chipletc.backends.sim``) replays the same
per-op and per-collective times event by event, so the two agree wherever nothing
contends for a link.

* An op takes ``max(compute, memory) + efficiency.op_overhead_s`` (``op_time``):
  FLOPs over peak x ``efficiency.compute``, and the bytes it moves (weights, KV cache,
  activations) over the bandwidth of the memory that holds the weights x
  ``efficiency.memory``; the overhead is the fixed cost of launching one kernel or
  program step, which dominates small decode batches on GPUs. Compute runs at the
  activation dtype's rate: quantized weights save bytes, not FLOPs (weight-only
  quantization). Activations are read from and written to that same memory (HBM on a
  GPU or TPU, SRAM on a Chiplet Cloud design), scaled by
  ``efficiency.activation_traffic`` where a compiler fuses elementwise ops away.
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
from dataclasses import dataclass

from chipletc.backends.perf.collectives import (
    collective_time_s,
    exposed_collective_s,
    transfer_time_s,
)
from chipletc.ir.graph import Graph
from chipletc.ir.layout import decode_context, stage_ops, stage_transfer_bytes, stage_transfer_level
from chipletc.ir.mapping import ModelMapping
from chipletc.ir.op import Op, OpCost
from chipletc.ir.sharding import collectives_after, rank_cost
from chipletc.ir.target import Target
from chipletc.ir.workload import Workload

__all__ = [
    "GroupTime",
    "OpTime",
    "PerfEstimate",
    "estimate",
    "group_time",
    "op_time",
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
    out of their loops).
    """
    eff = target.efficiency
    moved = cost.memory_bytes + eff.activation_traffic * (cost.act_in_bytes + cost.act_out_bytes)
    return OpTime(
        compute_s=cost.flops / (peak_flops * eff.compute),
        memory_s=moved / (target.memory_bw_Bps * eff.memory),
        overhead_s=eff.op_overhead_s,
    )


@dataclass(frozen=True)
class GroupTime:
    """Time of a group of ops (a block, a stage) on one rank, with its attribution."""

    total_s: float = 0.0
    compute_s: float = 0.0  # ops whose compute time exceeds their memory time
    memory_s: float = 0.0  # ops bound by memory bandwidth
    link_s: float = 0.0  # collectives
    flops: float = 0.0  # per rank

    def __add__(self, other: GroupTime) -> GroupTime:
        return GroupTime(
            self.total_s + other.total_s,
            self.compute_s + other.compute_s,
            self.memory_s + other.memory_s,
            self.link_s + other.link_s,
            self.flops + other.flops,
        )

    def scaled(self, k: float) -> GroupTime:
        return GroupTime(
            self.total_s * k, self.compute_s * k, self.memory_s * k, self.link_s * k, self.flops * k
        )

    @property
    def bottleneck(self) -> str:
        parts = {"compute": self.compute_s, "memory": self.memory_s, "links": self.link_s}
        return max(parts, key=parts.__getitem__)


def group_time(
    graph: Graph, ops: Iterable[Op], target: Target, tp: int, wl: Workload, pad_heads: bool
) -> GroupTime:
    """Time for one rank to run ``ops`` at workload ``wl`` (one micro-batch).

    The per-op overhead counts as compute or memory time, whichever bounds the op.
    """
    info = graph.info
    peak = target.chiplet.peak_flops(graph.act_dtype)
    total = GroupTime()
    for op in ops:
        whole = op.cost(wl, graph.kv_dtype, graph.act_dtype)
        mine = rank_cost(op, whole, tp, pad_heads, info.num_heads, info.num_kv_heads)
        t = op_time(mine, target, peak)
        busy = t.total_s
        t_l = sum(
            exposed_collective_s(
                collective_time_s(c.kind, c.bytes, tp, target),
                busy,
                target.efficiency,
            )
            for c in collectives_after(op, whole, tp)
        )
        total = total + GroupTime(
            total_s=busy + t_l,
            compute_s=busy if t.compute_bound else 0.0,
            memory_s=0.0 if t.compute_bound else busy,
            link_s=t_l,
            flops=mine.flops,
        )
    return total


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

    @property
    def bottleneck(self) -> str:
        slow = max(self.stage_decode, key=lambda g: g.total_s)
        return slow.bottleneck


def pipeline_times(
    stage_s: list[float], hops_s: list[float], micro_batches: int
) -> tuple[float, float]:
    """(prefill-style fill time, decode-step time) of a pipeline of stage times."""
    path = sum(stage_s) + sum(hops_s)
    slowest = max(stage_s)
    return path + (micro_batches - 1) * slowest, max(path, micro_batches * slowest)


def estimate(
    graph: Graph, target: Target, mapping: ModelMapping, prompt_len: int, gen_len: int
) -> PerfEstimate:
    """Prefill, decode and throughput of one replica under ``mapping``."""
    m, tp = mapping.micro_batch, mapping.tp
    wl_pf = Workload.prefill(m, prompt_len)
    wl_dc = Workload.decode(m, decode_context(prompt_len, gen_len))
    stage_pf, stage_dc = [], []
    for ops in stage_ops(graph, mapping):
        stage_pf.append(group_time(graph, ops, target, tp, wl_pf, mapping.pad_heads))
        stage_dc.append(group_time(graph, ops, target, tp, wl_dc, mapping.pad_heads))
    levels = [stage_transfer_level(target, tp, s) for s in range(mapping.pp - 1)]
    bytes_pf = stage_transfer_bytes(graph, m * prompt_len)
    bytes_dc = stage_transfer_bytes(graph, m)
    hop_pf = [transfer_time_s(bytes_pf, lv, target, tp) for lv in levels]
    hop_dc = [transfer_time_s(bytes_dc, lv, target, tp) for lv in levels]
    k = mapping.num_micro_batches
    prefill_s, _ = pipeline_times([g.total_s for g in stage_pf], hop_pf, k)
    _, step_s = pipeline_times([g.total_s for g in stage_dc], hop_dc, k)
    end_to_end = prefill_s + gen_len * step_s
    return PerfEstimate(
        prefill_s=prefill_s,
        decode_s_per_token=step_s,
        tokens_per_s=mapping.batch * gen_len / end_to_end,
        end_to_end_s=end_to_end,
        stage_decode=tuple(stage_dc),
        stage_prefill=tuple(stage_pf),
        transfer_decode_s=max(hop_dc, default=0.0),
        transfer_prefill_s=max(hop_pf, default=0.0),
    )

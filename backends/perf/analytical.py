"""The analytical performance model the partitioner searches with.

* An op takes ``max(compute, memory)``: FLOPs over peak x ``efficiency.compute``, and
  the bytes it moves (weights, KV cache, activations) over the bandwidth of the memory
  that holds the weights x ``efficiency.memory``. Compute runs at the activation
  dtype's rate: quantized weights save bytes, not FLOPs (weight-only quantization).
* Tensor-parallel collectives follow the alpha-beta model on the innermost link level
  whose domain holds the group: a ring all-reduce moves ``2 (g-1)/g`` of the buffer
  per rank in ``2 (g-1)`` steps; all-gather and all-to-all half of that. On a torus
  of ``k`` dimensions the multi-dimensional ring runs the dimensions at once: ``k``
  times the bandwidth and ``k (g^(1/k) - 1)`` steps per phase.
* A pipeline of ``pp`` stages and ``M`` micro-batches: prefill takes the sum of stage
  times plus ``(M - 1)`` times the slowest stage; one decode step (every sequence gets
  one token) takes ``max(sum of stage times, M x slowest stage)``, since a micro-batch
  cannot start its next token before its last one left the pipeline.
* Decode is evaluated at the mean context over the generated tokens.

Nothing here overlaps compute with communication; the simulator (which replays the
same costs event by event) is the place for finer effects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from chipletc.ir.graph import Graph
from chipletc.ir.mapping import ModelMapping
from chipletc.ir.op import Op
from chipletc.ir.sharding import collectives_after, rank_cost
from chipletc.ir.target import LinkLevel, Target
from chipletc.ir.workload import Workload

__all__ = [
    "GroupTime",
    "PerfEstimate",
    "collective_time_s",
    "estimate",
    "group_time",
    "level_for",
    "transfer_time_s",
]

_TORUS_DIMS = {"torus2d": 2, "torus3d": 3}


def level_for(target: Target, group_chips: int) -> LinkLevel:
    """The innermost link level whose domain holds ``group_chips`` chips."""
    levels = target.link_levels()
    for level in levels:
        if level.domain_chips >= group_chips:
            return level
    return levels[-1]


def collective_time_s(
    kind: str, nbytes: float, group: int, level: LinkLevel, link_eff: float
) -> float:
    """Alpha-beta time of one collective over ``group`` ranks; ``nbytes`` per rank."""
    if group <= 1 or nbytes <= 0:
        return 0.0
    dims = _TORUS_DIMS.get(level.topology, 1)
    bw = level.bw_Bps * link_eff * dims
    steps = dims * (group ** (1.0 / dims) - 1.0)
    share = (group - 1) / group
    if kind == "all_reduce":
        return 2.0 * share * nbytes / bw + 2.0 * steps * level.latency_s
    return share * nbytes / bw + steps * level.latency_s


def transfer_time_s(nbytes: float, level: LinkLevel, link_eff: float) -> float:
    """A point-to-point send between pipeline stages."""
    if nbytes <= 0:
        return 0.0
    return nbytes / (level.bw_Bps * link_eff) + level.latency_s


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
    """Time for one rank to run ``ops`` at workload ``wl`` (one micro-batch)."""
    info = graph.info
    peak = target.chiplet.peak_flops(graph.act_dtype) * target.efficiency.compute
    bw = target.memory_bw_Bps * target.efficiency.memory
    level = level_for(target, tp)
    total = GroupTime()
    for op in ops:
        whole = op.cost(wl, graph.kv_dtype, graph.act_dtype)
        mine = rank_cost(op, whole, tp, pad_heads, info.num_heads, info.num_kv_heads)
        t_c = mine.flops / peak
        t_m = (mine.memory_bytes + mine.act_in_bytes + mine.act_out_bytes) / bw
        t_l = sum(
            collective_time_s(c.kind, c.bytes, tp, level, target.efficiency.link)
            for c in collectives_after(op, whole, tp)
        )
        busy = max(t_c, t_m)
        total = total + GroupTime(
            total_s=busy + t_l,
            compute_s=busy if t_c >= t_m else 0.0,
            memory_s=busy if t_m > t_c else 0.0,
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


def decode_context(prompt_len: int, gen_len: int) -> int:
    """Mean context length over the generated tokens (the cache grows by one a step)."""
    return prompt_len + (gen_len + 1) // 2


def stage_transfer_level(target: Target, tp: int, stage: int) -> LinkLevel:
    """The link level between stage ``stage`` and the next, chiplets laid out in order."""
    per_server = target.chips_per_server
    last_of_stage = (stage + 1) * tp - 1
    first_of_next = (stage + 1) * tp
    if last_of_stage // per_server != first_of_next // per_server:
        return target.link_levels()[-1]
    return level_for(target, 2 * tp)


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
    groups = graph.groups()
    m, tp = mapping.micro_batch, mapping.tp
    wl_pf = Workload.prefill(m, prompt_len)
    wl_dc = Workload.decode(m, decode_context(prompt_len, gen_len))
    act = graph.act_dtype.bits / 8
    d = graph.info.d_model
    eff = target.efficiency.link
    stage_pf, stage_dc = [], []
    for s, (first, last) in enumerate(mapping.stages):
        ops = [op for b in range(first, last + 1) for op in groups[b]]
        if s == 0:
            ops = groups["pre"] + ops
        if s == mapping.pp - 1:
            ops = ops + groups["post"]
        stage_pf.append(group_time(graph, ops, target, tp, wl_pf, mapping.pad_heads))
        stage_dc.append(group_time(graph, ops, target, tp, wl_dc, mapping.pad_heads))
    levels = [stage_transfer_level(target, tp, s) for s in range(mapping.pp - 1)]
    hop_pf = [transfer_time_s(m * prompt_len * d * act, lv, eff) for lv in levels]
    hop_dc = [transfer_time_s(m * d * act, lv, eff) for lv in levels]
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

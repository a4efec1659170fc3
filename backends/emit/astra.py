"""ASTRA-sim inputs for the Chakra traces: network YAML, system JSON, communicator groups.

ASTRA-sim numbers its NPUs over a multi-dimensional network, innermost dimension
fastest, and reads one trace per NPU. The dimensions come from the target's link
levels (package, server, cluster, ``Target.link_levels``); the outermost level used is
cut to what the plan occupies, so the end of a partly used package or server has NPUs
without work (their traces hold no nodes).

An NPU is a chiplet (``ranks="all"``) or a whole tensor-parallel group standing for a
pipeline stage (``ranks="representative"``, over the levels whose domains hold whole
groups: 4 stages of tp 32 per server of 128 chips, then the servers; when a group tiles
no domain, the stages form one ring over the slowest level a stage-to-stage transfer
crosses). A representative NPU has the bandwidth of its tp chips (``Dimension.chips``),
so a stage-to-stage send takes what ``backends.perf.analytical.transfer_time_s`` gives
the group.

Stages are laid on the NPUs in reflected (Gray) order, not row-major: the analytical
backend routes a send over the innermost dimension in which the two NPUs differ, and
in Gray order consecutive stages differ in exactly one coordinate, by one step, along
the level their boundary really crosses (the last stage of a server sends to the next
server's first, over the cluster link, not back along the server ring). With
``ranks="all"`` rank ``i`` of a stage is NPU ``i`` of its group's block of tp NPUs;
when groups do not align with the dimensions, the order stays row-major (chiplet
``r`` is NPU ``r``, ``compiler.place``'s order).

What maps onto what (ASTRA-sim's analytical backend has no torus): ring and torus
levels become ``Ring``, switch levels ``Switch``; bandwidth is the level's per-chip
figure times ``efficiency.link``, or the NICs' between servers of GPUs (what
chipletc's own sends see, ``npu_bw_Bps``); latency is the level's, halved on a
``Switch``, which ASTRA-sim counts as two hops (NPU, switch, NPU). ASTRA-sim runs
every collective as a ring per dimension; chipletc picks the fastest of several
algorithms (``backends.perf.collectives``), so ``ranks="all"`` runs may differ there.
Dimensions of one NPU are dropped (ASTRA-sim needs none).

The runs were checked against ASTRA-sim ``ASTRA_SIM_COMMIT`` with its analytical
congestion-unaware backend (``ASTRA_SIM_BINARY``); its congestion-aware backend accepts
one-dimensional networks only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Literal

from chipletc.backends.perf.collectives import transfer_time_s
from chipletc.ir.plan import dumps_sections
from chipletc.ir.schedule import Schedule, ScheduleKind
from chipletc.ir.target import LEVELS, LinkLevel, Target

__all__ = [
    "ASTRA_SIM_BINARY",
    "ASTRA_SIM_COMMIT",
    "RANKS",
    "Dimension",
    "Ranks",
    "comm_groups_json",
    "involved_dims",
    "network_dims",
    "network_yaml",
    "rank_groups",
    "remote_memory_json",
    "system_json",
]

Ranks = Literal["representative", "all"]
RANKS: tuple[Ranks, ...] = ("representative", "all")

_TOPOLOGY = {"ring": "Ring", "mesh2d": "Ring", "torus2d": "Ring", "torus3d": "Ring",
             "switch": "Switch"}
_HOPS = {"Ring": 1, "Switch": 2}  # hops ASTRA-sim counts between neighbouring NPUs

ASTRA_SIM_COMMIT = "518bd51"
"""The ASTRA-sim commit the emitted sets were run on (see docs/astra-sim.md)."""

ASTRA_SIM_BINARY = "AstraSim_Analytical_Congestion_Unaware"
"""The backend that runs them: the congestion-aware one rejects multi-dimensional
networks ("only support 1-dim topology")."""


@dataclass(frozen=True)
class Dimension:
    """One dimension of ASTRA-sim's network: ``npus`` NPUs over one link level, each
    NPU ``chips`` chiplets wide (its bandwidth is theirs together)."""

    npus: int
    level: LinkLevel
    chips: int = 1


def network_dims(schedule: Schedule, target: Target, ranks: Ranks) -> tuple[Dimension, ...]:
    """The network the traces of ``ranks`` run on; the product of ``npus`` is the rank count.

    An NPU is a chiplet (``all``) or a tensor-parallel group (``representative``); each
    link level whose domain holds whole NPUs is a dimension of domain / inner domain
    NPUs, the outermost one needed cut to what the plan occupies.
    """
    unit = schedule.tp if ranks == "representative" else 1
    count = schedule.pp if ranks == "representative" else schedule.tp * schedule.pp
    levels = [lvl for lvl in target.link_levels() if lvl.domain_chips % unit == 0]
    if not levels:  # a group does not tile any domain: one ring over the slowest hop used
        sends = [op for st in schedule.stages for op in st.decode if op.kind is ScheduleKind.SEND]
        outer = max((LEVELS.index(op.level) for op in sends), default=0)
        return (Dimension(count, target.link_levels()[outer], unit),)
    dims, span = [], 1
    for level in levels:
        size = level.domain_chips // unit // span
        dims.append(Dimension(min(size, math.ceil(count / span)), level, unit))
        span *= dims[-1].npus
        if span >= count:
            break
    kept = tuple(d for d in dims if d.npus > 1)
    return kept or (dims[0],)


def rank_groups(
    schedule: Schedule, ranks: Ranks, dims: tuple[Dimension, ...]
) -> dict[int, list[int]]:
    """Group ``s + 1``: the NPUs of stage ``s`` over ``dims``, its tensor-parallel ranks
    in order (one NPU with ``ranks="representative"``); see the module docstring."""
    tp = 1 if ranks == "representative" else schedule.tp
    radices = _unit_radices(dims, tp)
    if radices is None:  # groups straddle a dimension: row-major, chiplet r is NPU r
        return {st.stage + 1: [st.stage * tp + i for i in range(tp)] for st in schedule.stages}
    return {
        st.stage + 1: [_gray(st.stage, radices) * tp + i for i in range(tp)]
        for st in schedule.stages
    }


def _unit_radices(dims: tuple[Dimension, ...], tp: int) -> list[int] | None:
    """The dimensions counted in blocks of ``tp`` NPUs, innermost first; None when a
    block does not fill whole inner dimensions inside one dimension."""
    span = 1
    for k, d in enumerate(dims):
        if span * d.npus >= tp:
            if tp % span or (span * d.npus) % tp:
                return None
            return [span * d.npus // tp] + [e.npus for e in dims[k + 1 :]]
        span *= d.npus
    return [1]


def _gray(x: int, radices: list[int]) -> int:
    """``x``'s place in the reflected mixed-radix Gray order over ``radices`` (innermost
    first): consecutive ``x`` differ in one coordinate, by one.

    >>> [_gray(x, [2, 2]) for x in range(4)]
    [0, 1, 3, 2]
    """
    if len(radices) <= 1:
        return x
    inner = math.prod(radices[:-1])
    outer, rest = divmod(x, inner)
    if outer % 2:
        rest = inner - 1 - rest
    return _gray(rest, radices[:-1]) + outer * inner


def involved_dims(members: list[int], dims: tuple[Dimension, ...]) -> list[bool]:
    """Per dimension, whether the NPUs ``members`` differ in their coordinate along it."""
    out, span = [], 1
    for d in dims:
        out.append(len({(m // span) % d.npus for m in members}) > 1)
        span *= d.npus
    return out


def npu_bw_Bps(dim: Dimension, target: Target) -> float:
    """What one NPU of ``dim`` sends at: its ``chips`` chiplets together, as chipletc's
    stage-to-stage sends see them (``transfer_time_s``: a chip's links inside a server,
    the NICs the group reaches between servers), efficiency applied."""
    nbytes = 1e12  # large enough that subtracting the latency loses no precision
    return nbytes / (transfer_time_s(nbytes, dim.level, target, dim.chips) - dim.level.latency_s)


def network_yaml(dims: tuple[Dimension, ...], target: Target) -> str:
    """ASTRA-sim analytical network config: topology, NPUs, GB/s and ns per dimension."""

    def row(values: list[str]) -> str:
        return "[ " + ", ".join(values) + " ]"

    kinds = [_TOPOLOGY[d.level.topology] for d in dims]
    bandwidth = [f"{npu_bw_Bps(d, target) / 1e9:.6g}" for d in dims]
    latency = [
        f"{d.level.latency_s * 1e9 / _HOPS[k]:.6g}" for d, k in zip(dims, kinds, strict=True)
    ]
    return (
        f"# {target.name}: link levels {', '.join(d.level.name for d in dims)}, innermost first"
        f"{'' if dims[0].chips == 1 else f'; an NPU is {dims[0].chips} chiplets'}\n"
        f"topology: {row(kinds)}\n"
        f"npus_count: {row([str(d.npus) for d in dims])}\n"
        f"bandwidth: {row(bandwidth)}  # GB/s\n"
        f"latency: {row(latency)}  # ns\n"
    )


def system_json(dims: tuple[Dimension, ...], target: Target, peak_flops: float) -> str:
    """ASTRA-sim system config. Compute nodes replay their durations (roofline off); the
    roofline figures (efficiency applied) are there for a run that turns it on."""
    eff = target.efficiency
    rings = ["ring"] * len(dims)
    doc = {
        "scheduling-policy": "FIFO",
        "endpoint-delay": 10,
        "active-chunks-per-dimension": 1,
        "preferred-dataset-splits": 1,
        "all-reduce-implementation": rings,
        "all-gather-implementation": rings,
        "reduce-scatter-implementation": rings,
        "all-to-all-implementation": rings,
        "collective-optimization": "localBWAware",
        "local-mem-bw": round(target.memory_bw_Bps * eff.memory / 1e9, 3),
        "boost-mode": 0,
        "roofline-enabled": 0,
        "peak-perf": round(peak_flops * eff.compute / 1e12, 6),
    }
    return json.dumps(doc, indent=2) + "\n"


def comm_groups_json(groups: dict[int, list[int]]) -> str:
    """Communicator groups of more than one NPU, id -> NPUs (``{}`` when every group is
    one NPU: no trace has a collective). Ids start at 1: ASTRA-sim reads 0 as every NPU."""
    many = {str(g): ranks for g, ranks in sorted(groups.items()) if len(ranks) > 1}
    return dumps_sections(many, listed=())


def remote_memory_json() -> str:
    """No memory expansion: weights and KV cache live in each chiplet's own memory."""
    return json.dumps({"memory-type": "NO_MEMORY_EXPANSION"}, indent=2) + "\n"

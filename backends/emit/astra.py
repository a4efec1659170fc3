"""ASTRA-sim inputs for the Chakra traces: network YAML, system JSON, communicator groups.

ASTRA-sim numbers its NPUs over a multi-dimensional network, innermost dimension
fastest, and reads one trace per NPU. The dimensions come from the target's link
levels (package, server, cluster, ``Target.link_levels``), so with ``ranks="all"`` NPU
``r`` is chiplet ``r`` of the plan (``compiler.place`` lays chiplets out in that same
order) and a tensor-parallel group is a run of neighbouring NPUs. The outermost level
used is cut to what the plan occupies; the end of a partly used package or server has
NPUs without work (their traces hold no nodes). With ``ranks="representative"`` NPU
``s`` is pipeline stage ``s``, its tensor-parallel group collapsed to one rank, over
the levels whose domains hold whole groups (4 stages of tp 32 per server of 128
chips, then the servers); when a group tiles no domain, the stages form one ring over
the slowest level a stage-to-stage transfer crosses.

What maps onto what (ASTRA-sim's analytical backend has no torus): ring and torus
levels become ``Ring``, switch levels ``Switch``; bandwidth is the level's per-chip
figure times ``efficiency.link`` (what chipletc's own collectives see), latency its
hop latency. Every collective is a ring, as ``backends.perf.analytical`` models it.
Dimensions of one NPU are dropped (ASTRA-sim needs none).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Literal

from chipletc.ir.plan import dumps_sections
from chipletc.ir.schedule import Schedule, ScheduleKind
from chipletc.ir.target import LEVELS, LinkLevel, Target

__all__ = [
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

_TOPOLOGY = {"ring": "Ring", "torus2d": "Ring", "torus3d": "Ring", "switch": "Switch"}


@dataclass(frozen=True)
class Dimension:
    """One dimension of ASTRA-sim's network: ``npus`` NPUs over one link level."""

    npus: int
    level: LinkLevel


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
        return (Dimension(count, target.link_levels()[outer]),)
    dims, span = [], 1
    for level in levels:
        size = level.domain_chips // unit // span
        dims.append(Dimension(min(size, math.ceil(count / span)), level))
        span *= dims[-1].npus
        if span >= count:
            break
    kept = tuple(d for d in dims if d.npus > 1)
    return kept or (dims[0],)


def rank_groups(schedule: Schedule, ranks: Ranks) -> dict[int, list[int]]:
    """Communicator group ``s + 1`` is stage ``s``'s tensor-parallel group (one rank with
    ``ranks="representative"``, rank ``s``)."""
    if ranks == "representative":
        return {st.stage + 1: [st.stage] for st in schedule.stages}
    return {st.stage + 1: list(st.chiplets) for st in schedule.stages}


def involved_dims(members: list[int], dims: tuple[Dimension, ...]) -> list[bool]:
    """Per dimension, whether the NPUs ``members`` differ in their coordinate along it."""
    out, span = [], 1
    for d in dims:
        out.append(len({(m // span) % d.npus for m in members}) > 1)
        span *= d.npus
    return out


def network_yaml(dims: tuple[Dimension, ...], target: Target) -> str:
    """ASTRA-sim analytical network config: topology, NPUs, GB/s and ns per dimension."""

    def row(values: list[str]) -> str:
        return "[ " + ", ".join(values) + " ]"

    eff = target.efficiency.link
    return (
        f"# {target.name}: link levels {', '.join(d.level.name for d in dims)}, innermost first\n"
        f"topology: {row([_TOPOLOGY[d.level.topology] for d in dims])}\n"
        f"npus_count: {row([str(d.npus) for d in dims])}\n"
        f"bandwidth: {row([f'{d.level.bw_Bps * eff / 1e9:.6g}' for d in dims])}  # GB/s\n"
        f"latency: {row([f'{d.level.latency_s * 1e9:.6g}' for d in dims])}  # ns\n"
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
    """Communicator groups, id -> NPUs. Ids start at 1: ASTRA-sim reads 0 as every NPU."""
    return dumps_sections({str(g): ranks for g, ranks in sorted(groups.items())}, listed=())


def remote_memory_json() -> str:
    """No memory expansion: weights and KV cache live in each chiplet's own memory."""
    return json.dumps({"memory-type": "NO_MEMORY_EXPANSION"}, indent=2) + "\n"

"""Collectives as the communication libraries run them: one model for every caller.

The analytical model, the simulator and explore all time tensor-parallel collectives
and stage-to-stage sends here. Each algorithm is alpha-beta: bytes over the bandwidth
of its bottleneck link plus a per-step latency for each of its steps; the fastest
applicable algorithm is chosen per message, as NCCL's tuner does
(``collective_time_s``). ``nbytes`` is the buffer each rank holds: the whole buffer
of an all-reduce, the gathered result of an all-gather, the input of an all-to-all.

Algorithms, for ``g`` ranks (``phases`` = 2 for an all-reduce, a reduce-scatter then
an all-gather, and 1 for the other collectives):

* ``ring`` (inside one link level): ``phases x [(g-1)/g x nbytes / bw + (g-1) alpha]``.
  Inside an NVSwitch server NCCL's tree is a chain, never faster than the ring, so a
  server runs rings.
* ``torus`` (a 2D/3D torus level, TPU ICI): dimension-ordered rings, one per dimension
  order, each carrying ``1/k`` of the buffer, so all ``k`` dimensions' links work at
  once (``LinkLevel.bw_Bps`` sums them) in ``k (g^(1/k) - 1)`` steps per phase.
* ``mesh`` (a 2D mesh level: a torus without its wrap-around links): the same
  dimension-ordered rings, each embedded in a line of the mesh, its closing edge
  riding the opposite direction of the line's links back across ``g^(1/2) - 1`` hops,
  so the bytes move as on the torus but each ring step costs two hops of latency:
  ``2 x 2 (g^(1/2) - 1)`` per phase.
* A ``switch`` level runs the ring, as NCCL does on an NVSwitch server (its tree is a
  chain there): no in-switch reduction is modelled.
* Across servers that reach each other through NICs (``rails`` per server, one per
  GPU on a DGX; ``server.server_link_count`` in a target):

  - ``multirail_ring``: one flat ring over all ranks per rail (NCCL's channels), the
    rails in parallel, so the server boundary carries every byte at all rails' rate:
    ``phases x [(g-1)/g x nbytes / min(bw_server, rails x bw_nic) + (g-1) alpha_nic]``.
  - ``hierarchical``: reduce-scatter inside each server (``l`` ranks), all-reduce of
    each rank's ``1/l`` slice across the ``n`` servers (the slices leave on all rails
    at once), then all-gather inside: ``phases x [(l-1)/l x nbytes / bw_server + (l-1) alpha_server
    + (n-1)/n x nbytes / (rails x bw_nic) + (n-1) alpha_nic]``.
  - ``tree`` (all-reduce only): NCCL's double binary tree across servers with a chain
    inside each: ``2 x [nbytes / min(bw_server, rails x bw_nic) + (l-1) alpha_server
    + ceil(log2 n) alpha_nic]``; its few steps win for small messages.
  - ``pairwise`` (all-to-all only): every rank sends ``1/g`` of its buffer to each
    other rank; the bytes that leave a server share its rails.

Every collective adds ``efficiency.collective_overhead_s`` of software time. Groups
are laid out on consecutive chips, so a group larger than a server holds whole servers.
Not modelled: NVLink SHARP (NVLS) in-switch reductions and contention with other
traffic on the same links.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from chipletc.ir.layout import innermost_level as _level_for
from chipletc.ir.layout import level_for
from chipletc.ir.target import Efficiency, LinkLevel, Target

__all__ = [
    "ALGORITHMS",
    "Fabric",
    "algorithm_times_s",
    "bus_bw_Bps",
    "collective_key",
    "collective_time_s",
    "exposed_collective_s",
    "fabric",
    "level_for",
    "transfer_time_s",
]

ALGORITHMS = ("ring", "torus", "mesh", "multirail_ring", "hierarchical", "tree", "pairwise")
_TORUS_DIMS = {"torus2d": 2, "torus3d": 3, "mesh2d": 2}
_HOPS_PER_STEP = {"mesh2d": 2}  # a mesh's rings close over the line's return direction


@dataclass(frozen=True)
class Fabric:
    """What the collective model reads of a target.

    ``rails`` is the number of NICs per server that carry traffic between servers (0
    where chips reach other servers over their own links, as TPU ICI does; then the
    cluster level is one more link level). ``link_eff`` and ``rail_eff`` are the
    achievable fractions of the chips' links and of the NICs' line rate.
    """

    levels: tuple[LinkLevel, ...]
    chips_per_server: int
    rails: int
    rail_bw_Bps: float
    rail_latency_s: float
    link_eff: float
    rail_eff: float
    overhead_s: float


@lru_cache(maxsize=256)
def fabric(target: Target) -> Fabric:
    """The target's fabric (memoized: targets are immutable)."""
    srv, eff = target.server, target.efficiency
    by_nic = target.system.bw_Bps_per_chip is None and srv.server_link_count > 0
    return Fabric(
        levels=target.link_levels(),
        chips_per_server=target.chips_per_server,
        rails=srv.server_link_count if by_nic else 0,
        rail_bw_Bps=srv.server_link_bw_Bps,
        rail_latency_s=srv.server_link_latency_s,
        link_eff=eff.link,
        rail_eff=eff.network_fraction,
        overhead_s=eff.collective_overhead_s,
    )


def collective_key(target: Target, group: int) -> tuple[object, ...]:
    """What ``collective_time_s`` reads of ``target`` for a group of ``group`` chips,
    for memo keys: designs that differ elsewhere share their collective times."""
    fab = fabric(target)
    if fab.rails > 0 and group > fab.chips_per_server:
        return (fab,)
    level = _level_for(fab.levels, group)
    return (level.bw_Bps, level.latency_s, level.topology, fab.link_eff, fab.overhead_s)


def _ring(nbytes: float, g: int, bw: float, alpha: float) -> float:
    return (g - 1) / g * nbytes / bw + (g - 1) * alpha


def algorithm_times_s(kind: str, nbytes: float, group: int, fab: Fabric) -> dict[str, float]:
    """Wire time of each algorithm that applies to this collective (no overhead)."""
    phases = 2 if kind == "all_reduce" else 1
    g = group
    spans_servers = fab.rails > 0 and g > fab.chips_per_server
    if not spans_servers:
        level = _level_for(fab.levels, g)
        bw = level.bw_Bps * fab.link_eff
        dims = _TORUS_DIMS.get(level.topology)
        if dims is None:
            return {"ring": phases * _ring(nbytes, g, bw, level.latency_s)}
        steps = dims * (g ** (1.0 / dims) - 1.0) * _HOPS_PER_STEP.get(level.topology, 1)
        name = "mesh" if level.topology == "mesh2d" else "torus"
        return {name: phases * ((g - 1) / g * nbytes / bw + steps * level.latency_s)}
    server = fab.levels[1]
    local = fab.chips_per_server
    n = math.ceil(g / local)
    bw_s = server.bw_Bps * fab.link_eff
    bw_n = fab.rails * fab.rail_bw_Bps * fab.rail_eff  # a server's egress on all rails
    a_s, a_n = server.latency_s, fab.rail_latency_s
    if kind == "all_to_all":
        inside = (local - 1) / g * nbytes / bw_s
        leaving = local * (g - local) / g * nbytes / bw_n
        return {"pairwise": max(inside, leaving) + (g - 1) * a_n}
    out = {
        "multirail_ring": phases * _ring(nbytes, g, min(bw_s, bw_n), a_n),
        "hierarchical": phases * (_ring(nbytes, local, bw_s, a_s) + _ring(nbytes, n, bw_n, a_n)),
    }
    if kind == "all_reduce":
        out["tree"] = 2.0 * (
            nbytes / min(bw_s, bw_n) + (local - 1) * a_s + math.ceil(math.log2(n)) * a_n
        )
    return out


def collective_time_s(kind: str, nbytes: float, group: int, target: Target) -> float:
    """Time of one collective over ``group`` ranks: the fastest algorithm, plus the
    fixed software time."""
    if group <= 1 or nbytes <= 0:
        return 0.0
    fab = fabric(target)
    return min(algorithm_times_s(kind, nbytes, group, fab).values()) + fab.overhead_s


def bus_bw_Bps(nbytes: float, group: int, target: Target, algorithm: str | None = None) -> float:
    """All-reduce bus bandwidth as nccl-tests reports it: ``2 (g-1)/g x nbytes / time``.

    ``algorithm`` forces one (as ``NCCL_ALGO`` does); None takes the fastest.
    """
    fab = fabric(target)
    times = algorithm_times_s("all_reduce", nbytes, group, fab)
    wire = times[algorithm] if algorithm is not None else min(times.values())
    return 2.0 * (group - 1) / group * nbytes / (wire + fab.overhead_s)


def exposed_collective_s(collective_s: float, producer_s: float, eff: Efficiency) -> float:
    """What a collective adds after the op producing its input: up to
    ``eff.collective_overlap`` of it hides under that op."""
    return collective_s - min(eff.collective_overlap * collective_s, producer_s)


def transfer_time_s(nbytes: float, level: LinkLevel, target: Target, senders: int) -> float:
    """A send between pipeline stages by a group of ``senders`` chips.

    Every rank of the group holds the activation, so each sends its 1/senders slice at
    once: inside a server over its own links, between servers over every rail the group
    reaches (at least one NIC; ``LinkLevel.bw_Bps`` of the cluster level is a chip's
    share of its server's rails).
    """
    if nbytes <= 0:
        return 0.0
    fab = fabric(target)
    if level.name == "cluster" and fab.rails > 0:
        rails = max(1.0, senders * fab.rails / fab.chips_per_server)
        return nbytes / (rails * fab.rail_bw_Bps * fab.rail_eff) + level.latency_s
    return nbytes / (level.bw_Bps * senders * fab.link_eff) + level.latency_s

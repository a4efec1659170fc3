"""Chiplet Cloud's two ways to define an SRAM-only chiplet, as cheap pure functions.

By performance (TOPS, SRAM MiB, SRAM bandwidth): the core holds the MAC arrays, the
SRAM macros and the chip-to-chip IO, each at the node's density; the die adds the pad
ring on every side: area = (sqrt(core) + 2 pad)^2.

By area (die area, MAC-area ratio, operational intensity): the core left inside the
pad ring, minus the IO, is split between MACs (``mac_ratio``) and SRAM; SRAM bandwidth
is set so that ``ops_per_sram_read`` operations run per byte read from SRAM at peak
(the paper's "operational intensity", 1-32). The two are exact inverses.

Power is the node's W/TOPS plus the IO links' power.

Either form may carry ``stacks`` stacks of a ``MemoryTech`` (HBM2e/3/3e) beside the die:
each takes its PHY area from the core (before the MAC/SRAM split, like the IO links)
and ``shoreline_mm`` of die edge on two opposite edges (more stacks than the edges hold
is refused), adds its capacity, bandwidth, price and peak power, and then holds the
weights and KV cache (``Target.weights_in``), the SRAM serving as buffers. Or it may
carry ``layers`` SRAM dies of a ``BondedMemory`` (3D V-Cache style) hybrid-bonded on
it: no PHY or edge, each layer the die's area of SRAM at the node (``layer_bytes``),
together read through the bonded face (``bw_Bps_per_mm2`` x die area). The layers add
no TDP: their reads replace reads of the die's own SRAM, which the node's W/TOPS
already covers (an assumption; AMD gives no V-Cache power figure).

The node's MAC density is a bf16 figure; the same array runs narrower types faster
(``NARROW_RATE``): fp8 and int8 at twice and int4 at four times the bf16 rate, the
ratios NVIDIA's tensor cores give on one array (A100 datasheet: 312 bf16 / 624 int8 /
1248 int4 dense TOPS; H100 SXM datasheet: 989 bf16 / 1979 fp8 and int8).
Explore calls these thousands of times: no YAML, no I/O, no cost model here. They
live with the target loader (which builds a YAML's ``chiplet: {by_area: ...}`` with
them), not in ``backends.cost``: they construct hardware, they do not price it.
"""

from __future__ import annotations

import math

from chipletc.ir.dtypes import DType
from chipletc.ir.target import MAX_BW_BPS, MAX_COUNT, MAX_LATENCY_S, ChipletSpec
from chipletc.ir.tech import (
    MIB,
    BondedMemory,
    MemoryTech,
    TechNode,
    fail,
    require_count,
    require_nonnegative,
    require_positive,
)

__all__ = [
    "CC_LINK_BW_BPS",
    "CC_LINK_COUNT",
    "CC_LINK_LATENCY_S",
    "CC_LINK_MM2",
    "CC_LINK_W",
    "NARROW_RATE",
    "chiplet_by_area",
    "chiplet_by_performance",
    "max_stacks",
]

# Chip-to-chip IO of the Chiplet Cloud design space (Chiplet Cloud, arXiv 2307.02666):
CC_LINK_COUNT = 16  # links per chiplet
CC_LINK_BW_BPS = 12.5e9  # per link, one direction
CC_LINK_MM2 = 0.3  # die area per link
CC_LINK_W = 0.125  # power per link
CC_LINK_LATENCY_S = 100e-9  # assumption: SerDes PHY + link layer on both ends, per hop
TERA = 1e12


NARROW_RATE = {DType.BF16: 1, DType.FP16: 1, DType.FP8: 2, DType.INT8: 2, DType.INT4: 4}
"""Peak rate per dtype relative to bf16 on one MAC array (see the module docstring)."""


def _spec(
    area_mm2: float,
    tops: float,
    sram_mib: float,
    sram_bw_Bps: float,
    tech: TechNode,
    link_count: int,
    link_bw_Bps: float,
    link_latency_s: float,
    link_w: float,
    name: str,
    memory: MemoryTech | BondedMemory | None = None,
    stacks: int = 0,
    layers: int = 0,
) -> ChipletSpec:
    rate = tops * TERA
    hbm: dict = {}
    if isinstance(memory, BondedMemory):
        hbm = {"bonded_layers": layers,
               "bonded_bytes": layers * memory.layer_bytes(area_mm2, tech),
               "bonded_bw_Bps": memory.bw_Bps_per_mm2 * area_mm2,
               "bond_yield": memory.bond_yield}
    elif memory is not None and stacks:
        hbm = {"hbm_bytes": stacks * memory.stack_bytes,
               "hbm_bw_Bps": stacks * memory.stack_bw_Bps, "hbm_stacks": stacks,
               "hbm_stack_usd": memory.stack_usd, "hbm_power_w": stacks * memory.stack_w}
    return ChipletSpec(
        area_mm2=area_mm2,
        flops_per_s={d: k * rate for d, k in NARROW_RATE.items()},
        sram_bytes=round(sram_mib * MIB),
        sram_bw_Bps=sram_bw_Bps,
        link_count=link_count,
        link_bw_Bps=link_bw_Bps,
        link_latency_s=link_latency_s,
        link_energy_J_per_B=link_w / link_bw_Bps if link_count else 0.0,
        power_w=tops * tech.w_per_TOPS + link_count * link_w + hbm.get("hbm_power_w", 0.0),
        name=name,
        **hbm,
    )


def max_stacks(area_mm2: float, memory: MemoryTech) -> int:
    """The most stacks a square die of ``area_mm2`` holds on two opposite edges."""
    return 2 * math.floor(math.sqrt(area_mm2) / memory.shoreline_mm)


def _require_memory(memory: MemoryTech | BondedMemory | None, stacks: int,
                    layers: int) -> float:
    """The die area the stacks' PHYs take; checks that stacks come with a stacked memory
    and layers with a bonded one."""
    require_count("stacks", stacks, minimum=0, maximum=64)
    require_count("layers", layers, minimum=0, maximum=64)
    if isinstance(memory, BondedMemory):
        if stacks or not 1 <= layers <= memory.max_layers:
            raise fail("layers", f"{memory.name} needs layers (and no stacks)", layers,
                       f"1..{memory.max_layers}")
        return 0.0
    if layers:
        raise fail("layers", "layers need a bonded memory", layers,
                   "0, or memory: a bonded preset such as 3d-sram")
    if (memory is None) != (stacks == 0):
        raise fail("stacks", "stacks and a memory technology go together", stacks,
                   ">= 1 with a memory, 0 without")
    return stacks * memory.phy_mm2 if memory is not None else 0.0


def _require_shoreline(area_mm2: float, memory: MemoryTech | BondedMemory | None,
                       stacks: int) -> None:
    if isinstance(memory, MemoryTech) and stacks > max_stacks(area_mm2, memory):
        raise fail("stacks", f"more {memory.name} stacks than the die edges hold", stacks,
                   f"<= {max_stacks(area_mm2, memory)} on {area_mm2:.4g} mm2 "
                   f"({memory.shoreline_mm:g} mm of edge each, two edges)")


def _require_links(count: int, bw_Bps: float, latency_s: float, mm2: float, w: float) -> None:
    require_count("link_count", count, minimum=0, maximum=MAX_COUNT)
    require_nonnegative("link_bw_Bps", bw_Bps, MAX_BW_BPS)
    require_nonnegative("link_latency_s", latency_s, MAX_LATENCY_S)
    require_nonnegative("link_mm2", mm2, 1e3)
    require_nonnegative("link_w", w, 1e3)


def chiplet_by_performance(
    tops: float,
    sram_mib: float,
    sram_bw_Bps: float,
    tech: TechNode,
    *,
    link_count: int = CC_LINK_COUNT,
    link_bw_Bps: float = CC_LINK_BW_BPS,
    link_latency_s: float = CC_LINK_LATENCY_S,
    link_mm2: float = CC_LINK_MM2,
    link_w: float = CC_LINK_W,
    name: str = "",
    memory: MemoryTech | BondedMemory | None = None,
    stacks: int = 0,
    layers: int = 0,
) -> ChipletSpec:
    """The smallest die with ``tops`` bf16 TOPS and ``sram_mib`` MiB of SRAM (and the
    PHYs of ``stacks`` stacks of ``memory``, and the edge they sit on)."""
    require_positive("tops", tops, high=1e6)
    require_positive("sram_mib", sram_mib, high=1e9)  # 1 PiB
    require_positive("sram_bw_Bps", sram_bw_Bps, high=MAX_BW_BPS)
    _require_links(link_count, link_bw_Bps, link_latency_s, link_mm2, link_w)
    phy_mm2 = _require_memory(memory, stacks, layers)
    core = (tops * tech.mac_mm2_per_TOPS + sram_mib * tech.sram_mm2_per_MiB
            + link_count * link_mm2 + phy_mm2)
    area = (math.sqrt(core) + 2 * tech.pad_ring_mm) ** 2
    if isinstance(memory, MemoryTech):  # grow the die until two of its edges hold the stacks
        area = max(area, (math.ceil(stacks / 2) * memory.shoreline_mm) ** 2)
    return _spec(area, tops, sram_mib, sram_bw_Bps, tech, link_count, link_bw_Bps,
                 link_latency_s, link_w, name, memory, stacks, layers)


def chiplet_by_area(
    area_mm2: float,
    mac_ratio: float,
    ops_per_sram_read: float,
    tech: TechNode,
    *,
    link_count: int = CC_LINK_COUNT,
    link_bw_Bps: float = CC_LINK_BW_BPS,
    link_latency_s: float = CC_LINK_LATENCY_S,
    link_mm2: float = CC_LINK_MM2,
    link_w: float = CC_LINK_W,
    name: str = "",
    memory: MemoryTech | BondedMemory | None = None,
    stacks: int = 0,
    layers: int = 0,
) -> ChipletSpec:
    """A die of ``area_mm2`` whose core (less IO and memory PHYs) is ``mac_ratio`` MACs
    and the rest SRAM, carrying ``stacks`` stacks (or ``layers`` bonded layers) of
    ``memory``."""
    require_positive("area_mm2", area_mm2, high=1e5)
    require_positive("ops_per_sram_read", ops_per_sram_read, high=1e6)
    if not 0 < mac_ratio < 1:
        raise fail("mac_ratio", "out of range", mac_ratio, "(0, 1): the rest is SRAM")
    _require_links(link_count, link_bw_Bps, link_latency_s, link_mm2, link_w)
    phy_mm2 = _require_memory(memory, stacks, layers)
    _require_shoreline(area_mm2, memory, stacks)
    side = math.sqrt(area_mm2) - 2 * tech.pad_ring_mm
    core = side * side - link_count * link_mm2 - phy_mm2 if side > 0 else 0.0
    if core <= 0:
        floor_mm2 = (math.sqrt(link_count * link_mm2 + phy_mm2) + 2 * tech.pad_ring_mm) ** 2
        raise fail("area_mm2", f"no room inside the pad ring, {link_count} IO links and "
                   f"{stacks} memory PHYs", area_mm2, f"> {floor_mm2:.3g}")
    tops = mac_ratio * core / tech.mac_mm2_per_TOPS
    sram_mib = (1 - mac_ratio) * core / tech.sram_mm2_per_MiB
    return _spec(area_mm2, tops, sram_mib, tops * TERA / ops_per_sram_read, tech, link_count,
                 link_bw_Bps, link_latency_s, link_w, name, memory, stacks, layers)

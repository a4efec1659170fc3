"""Average power of a run: what a server draws at the utilisation the performance model
reports, beside its power at TDP.

A chip's TDP is split into what its links, its memory and its compute draw at full use:
links at ``link_energy_J_per_B`` x their total bandwidth, memory at the energy per byte
of the memory that holds the weights x its bandwidth, compute the rest. Over a run each
part draws in proportion to its use (``RunMetrics``): compute by the executed FLOPs over
peak, memory by the bytes moved over bandwidth, links by the chips' share of time in
collectives and stage-to-stage sends. The host and the fans draw their full power all
the time, and the DC-DC and PSU losses follow the chips' power (``server_power``).

Not modelled: a chip's static (leakage) power apart from its use, so an idle chip draws
nothing here; the average is a lower estimate for a chip whose leakage is large.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chipletc.ir.target import Target

from .server import server_power

if TYPE_CHECKING:
    from chipletc.backends.perf.metrics import RunMetrics

__all__ = ["HBM_J_PER_B", "SRAM_J_PER_B", "average_server_power_w", "chip_power_parts_w"]

SRAM_J_PER_B = 1.25e-12  # on-chip SRAM read, 7 nm: the Chiplet Cloud authors' energy table
HBM_J_PER_B = 31e-12  # HBM2e, ~3.9 pJ/bit at the stack: the Chiplet Cloud authors' code


def chip_power_parts_w(target: Target) -> dict[str, float]:
    """One chip's TDP split into links, memory and compute at full use (they sum to it)."""
    chip = target.chiplet
    per_byte = SRAM_J_PER_B if target.weights_in == "sram" else HBM_J_PER_B
    links = min(chip.power_w, chip.link_total_bw_Bps * chip.link_energy_J_per_B)
    memory = min(chip.power_w - links, target.memory_bw_Bps * per_byte)
    return {"links_w": links, "memory_w": memory, "compute_w": chip.power_w - links - memory}


def average_server_power_w(target: Target, metrics: RunMetrics) -> float:
    """Wall power of one server averaged over the run ``metrics`` describes."""
    (use,) = metrics.utilisation.values()
    parts = chip_power_parts_w(target)
    chip_w = (parts["compute_w"] * use["flops"] + parts["memory_w"] * use["memory_bw"]
              + parts["links_w"] * metrics.attribution["links"])
    return sum(server_power(target, chip_w).values())

"""``cost_report``: every cost figure of a target with its breakdown, as plain data.

The CLI prints it and serialises it to JSON unchanged, so keys are stable: ``die``,
``package``, ``server`` (``cost_usd``, ``power_w``, ``tco_usd``, ``life_years`` ...),
``thermal``, ``memory``, ``assumptions`` (the economic knobs) and ``rent_usd_per_hour``
for rented targets. With no run to average over, the server draws its TDP here
whatever ``power_basis`` says. For a rented target ``server.tco_usd`` is the rent over
the server life and ``server.fabricated`` holds what owning the same bill of materials
would cost (the revised paper's "fabricated GPU/TPU" comparison); ``server.cost_usd`` is
always the bill of materials.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from chipletc.ir.target import Target

from .server import server_cost, thermal_check
from .tco import (
    HOURS_PER_YEAR,
    cost_rate_usd_per_s,
    owned_cost_rate_usd_per_s,
    rent_usd,
    server_tco,
    tco_breakdown,
)

__all__ = ["assumptions", "cost_report"]

_RENTED_KNOBS = ("rent_usd_per_hour", "utilization")


def assumptions(target: Target) -> dict[str, Any]:
    """The economic knobs (``Economics`` fields with a flag) a cost of ``target`` rests
    on, by field name: the rent for rented hardware, every owned-TCO input otherwise."""
    econ = target.economics
    out: dict[str, Any] = {}
    for f in dataclasses.fields(econ):
        if "flag" not in f.metadata or (econ.rented and f.name not in _RENTED_KNOBS):
            continue
        if not econ.rented and f.name == "rent_usd_per_hour":
            continue
        value = getattr(econ, f.name)
        out[f.name] = value.value if hasattr(value, "value") else value
    return out


def cost_report(target: Target) -> dict[str, Any]:
    """Die, package, server, TCO, thermal and memory figures of one ``target``."""
    econ = target.economics
    sc = server_cost(target)
    die, pkg = sc.die, sc.package
    thermal = thermal_check(target)
    life_h = econ.server_life_years * HOURS_PER_YEAR
    # no run here: the server draws its TDP (the cost command refuses another basis)
    owned = tco_breakdown(sc.cost_usd, sc.power_w, econ, sc.power_w)
    owned_tco = server_tco(sc.cost_usd, sc.power_w, econ, sc.power_w)
    server: dict[str, Any] = {
        "chips": target.chips_per_server,
        "packages": target.packages_per_server,
        "lanes": target.server.lanes,
        "cost_usd": sc.cost_usd,
        "power_w": sc.power_w,
        "life_years": econ.server_life_years,
        "cost_breakdown": sc.breakdown,
        "power_breakdown": sc.power_breakdown,
    }
    if econ.rent_usd_per_hour is not None:
        server["tco_usd"] = rent_usd(econ, life_h)
        server["cost_rate_usd_per_s"] = cost_rate_usd_per_s(target)
        server["fabricated"] = {
            "tco_usd": owned_tco,
            "tco_breakdown": owned,
            "cost_rate_usd_per_s": owned_cost_rate_usd_per_s(sc.cost_usd, sc.power_w, econ,
                                                             sc.power_w),
        }
    else:
        server["tco_usd"] = owned_tco
        server["cost_rate_usd_per_s"] = cost_rate_usd_per_s(target, sc.power_w)
        server["tco_breakdown"] = owned
    report: dict[str, Any] = {
        "target": target.name,
        "description": target.description,
        "tech": target.tech.name,
        "ownership": "rented" if econ.rented else "owned",
        "assumptions": assumptions(target),
        "die": {
            "area_mm2": die.area_mm2,
            "dies_per_wafer": die.dies_per_wafer,
            "yield": die.yield_,
            "wafer_cost_usd": die.wafer_cost_usd,
            "cost_usd": die.cost_usd,
            "breakdown": die.breakdown,
        },
        "package": {
            "chiplets": pkg.chiplets,
            "substrate": pkg.substrate,
            "hbm_stacks": pkg.hbm_stacks,
            "area_mm2": pkg.area_mm2,
            "bond_yield": pkg.bond_yield,
            "cost_usd": pkg.cost_usd,
            "breakdown": pkg.breakdown,
        },
        "server": server,
        "thermal": {
            "ok": thermal.ok,
            "violations": list(thermal.violations),
            "die_w_per_mm2": thermal.die_w_per_mm2,
            "package_w": thermal.package_w,
            "lane_w": thermal.lane_w,
            "lane_budget_w": thermal.lane_budget_w,
            "hottest_die_c": thermal.hottest_die_c,
            "power_cap_w": thermal.power_cap_w,
        },
        "memory": {
            "weights_in": target.weights_in,
            "per_chip_bytes": target.memory_capacity_bytes,
            "per_chip_bw_Bps": target.memory_bw_Bps,
            "per_server_bytes": target.memory_capacity_bytes * target.chips_per_server,
            "max_servers": target.max_servers,
            "system_bytes": target.memory_capacity_bytes * target.chips_per_server
            * target.max_servers,
        },
    }
    if econ.rent_usd_per_hour is not None:
        report["rent_usd_per_hour"] = econ.rent_usd_per_hour
    if econ.carbon_kg_per_kWh is not None:
        energy_kwh = sc.power_w * econ.pue * life_h / 1000
        report["carbon"] = {
            "energy_kWh": energy_kwh,
            "operational_kg_co2": energy_kwh * econ.carbon_kg_per_kWh,
        }
    return report

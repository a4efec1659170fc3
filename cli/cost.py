"""`chipletc cost`: die, package, server and TCO breakdowns of one target."""

from __future__ import annotations

import argparse
import json
from typing import Any

from chipletc.backends.cost import cost_report
from chipletc.backends.targets import DEFAULT_TARGET, load_target

from .common import add_economics_flags, economics_from, require_tdp_basis
from .output import assumption_lines


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", default=DEFAULT_TARGET, metavar="TARGET",
                   help=f"preset name (chipletc targets) or YAML file (default {DEFAULT_TARGET})")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    add_economics_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = economics_from(args, load_target(args.target))
    require_tdp_basis(target, "cost", "it runs no model, so there is no average power")
    report = cost_report(target)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _usd(x: float) -> str:
    return f"${x:,.2f}"


def _items(items: dict[str, float], unit: str) -> str:
    def label(key: str) -> str:
        return key.rsplit("_", 1)[0].replace("_", " ")

    if unit == "$":
        return ", ".join(f"{label(k)} {_usd(v)}" for k, v in items.items() if v)
    return ", ".join(f"{label(k)} {v:,.0f} W" for k, v in items.items() if v)


def format_report(r: dict[str, Any]) -> str:
    """The text form of ``cost_report``: one block per level, breakdowns indented."""
    die, pkg, srv, th, mem = r["die"], r["package"], r["server"], r["thermal"], r["memory"]
    lines = [
        f"target   {r['target']} ({r['ownership']}, tech {r['tech']})",
        f"         {' '.join(r['description'].split())}",
        *assumption_lines(r["assumptions"]),
        f"die      {die['area_mm2']:.1f} mm2, {die['dies_per_wafer']} dies/wafer, yield "
        f"{die['yield']:.1%}: {_usd(die['cost_usd'])} per good die",
        f"           {_items(die['breakdown'], '$')} (wafer {_usd(die['wafer_cost_usd'])})",
        f"package  {pkg['chiplets']} chiplet(s) + {pkg['hbm_stacks']} HBM stack(s) on "
        f"{pkg['substrate']} ({pkg['area_mm2']:.0f} mm2, bond yield {pkg['bond_yield']:.1%}): "
        f"{_usd(pkg['cost_usd'])}",
        f"           {_items(pkg['breakdown'], '$')}",
        f"server   {srv['chips']} chips, {srv['packages']} packages, {srv['lanes']} lanes: "
        f"{_usd(srv['cost_usd'])}, {srv['power_w']:,.0f} W at the wall",
        f"           cost: {_items(srv['cost_breakdown'], '$')}",
        f"           power: {_items(srv['power_breakdown'], 'W')}",
    ]
    life = f"over {srv['life_years']:g} years ({_usd(srv['cost_rate_usd_per_s'] * 3600)}/hour)"
    if "rent_usd_per_hour" in r:
        fab = srv["fabricated"]
        lines += [
            f"TCO      {_usd(srv['tco_usd'])} rented at {_usd(r['rent_usd_per_hour'])}/hour "
            f"{life}",
            f"           if fabricated and owned: {_usd(fab['tco_usd'])} "
            f"({_usd(fab['cost_rate_usd_per_s'] * 3600)}/hour): "
            f"{_items(fab['tco_breakdown'], '$')}",
        ]
    else:
        lines += [
            f"TCO      {_usd(srv['tco_usd'])} {life}",
            f"           {_items(srv['tco_breakdown'], '$')}",
        ]
    if th["lane_budget_w"] is None:
        cooling = "liquid-cooled"
    else:
        cooling = (f"lane {th['lane_w']:,.0f} W of a {th['lane_budget_w']:,.0f} W air budget "
                   f"(last die {th['hottest_die_c']:.0f} C)")
    lines.append(
        f"thermal  {'ok' if th['ok'] else 'VIOLATED'}: die {th['die_w_per_mm2']:.3f} W/mm2, "
        f"{cooling}, wall {srv['power_w']:,.0f} of {th['power_cap_w']:,.0f} W"
    )
    lines += [f"           {v}" for v in th["violations"]]
    per_chip = mem["per_chip_bytes"]
    per_chip_text = (f"{per_chip / 2**30:.3g} GiB" if per_chip >= 2**30
                     else f"{per_chip / 2**20:.4g} MiB")
    lines.append(
        f"memory   weights in {mem['weights_in'].upper()}: {per_chip_text} per chip, "
        f"{mem['per_server_bytes'] / 1e9:,.1f} GB per server, up to "
        f"{mem['max_servers']} servers ({mem['system_bytes'] / 1e9:,.0f} GB)"
    )
    if "carbon" in r:
        c = r["carbon"]
        lines.append(f"carbon   {c['operational_kg_co2']:,.0f} kg CO2 from {c['energy_kWh']:,.0f} "
                     "kWh over the life")
    return "\n".join(lines)

"""Server bill of materials, wall power and the thermal feasibility report.

Power path (ASIC Clouds, as in the Chiplet Cloud authors' code): the chips and the host
draw through DC-DC converters (``dcdc_efficiency``), the fans hang on the PSU output,
and the PSU (``psu_efficiency``) draws from the wall:

    wall = ((chips + host) / dcdc_eff + fans) / psu_eff.

DC-DC converters are priced per ampere delivered to the chips at their core voltage,
PSUs per wall watt, each up to a cap.

Thermal budget of an air-cooled lane: each lane is a duct whose fan moves Q m3/s of
air; packages sit in series along it, so the last package breathes air warmed by all
the others. Air carries rho*c_p*Q watts per kelvin of temperature rise (about 11 W/K
for the default 20 CFM), and the die sits R (heat sink, K/W) times its power above the
air it breathes:

    T_die(last) = T_ambient + (P_lane - P_pkg) / (rho c_p Q) + P_pkg R  <=  T_die_max,

i.e. P_lane <= (T_die_max - T_ambient - P_pkg R) rho c_p Q + P_pkg. Liquid-cooled
servers skip this; every server is held to its power cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chipletc.ir.errors import TargetError
from chipletc.ir.target import Target

from .die import DieCost, bonded_die_usd, die_cost
from .package import PackageCost, package_cost
from .wafer import wafer_engine_cost

__all__ = [
    "AIR_RHO_CP_J_PER_M3_K",
    "LimitViolation",
    "ServerCost",
    "ThermalReport",
    "require_within_limits",
    "server_cost",
    "server_power",
    "switch_ports",
    "thermal_check",
]

AIR_DENSITY_KG_PER_M3 = 1.16  # dry air at 30 C, 1 atm (ideal gas: p / (R_air T))
AIR_CP_J_PER_KG_K = 1007.0  # dry air near room temperature
AIR_RHO_CP_J_PER_M3_K = AIR_DENSITY_KG_PER_M3 * AIR_CP_J_PER_KG_K


@dataclass(frozen=True)
class ServerCost:
    """A server's bill (``cost_usd``) and wall power, each with items that sum to it."""

    cost_usd: float
    power_w: float
    breakdown: dict[str, float]
    power_breakdown: dict[str, float]
    die: DieCost
    package: PackageCost


def switch_ports(target: Target) -> int:
    """Ports of the server's switch: every chip link, when the server is switched."""
    if target.server.topology != "switch":
        return 0
    return target.chips_per_server * target.chiplet.link_count


def server_power(target: Target, chip_w: float | None = None) -> dict[str, float]:
    """Wall power items of one server (chips, host, switch, DC-DC loss, fans, PSU loss)
    with each chip drawing ``chip_w`` (default its TDP); host, switch and fans always
    draw their full power."""
    parts = target.server.parts
    chips = target.chips_per_server * (target.chiplet.power_w if chip_w is None else chip_w)
    switch = switch_ports(target) * parts.switch_w_per_port
    dcdc_in = (chips + parts.host_w + switch) / parts.dcdc_efficiency
    fans = target.server.lanes * parts.fan_w_per_lane
    wall = (dcdc_in + fans) / parts.psu_efficiency
    return {
        "chips_w": chips,
        "host_w": parts.host_w,
        "switch_w": switch,
        "dcdc_loss_w": dcdc_in - chips - parts.host_w - switch,
        "fans_w": fans,
        "psu_loss_w": wall - dcdc_in - fans,
    }


def server_cost(target: Target) -> ServerCost:
    """Bill of materials and wall power of one server of ``target``."""
    chip, srv, parts = target.chiplet, target.server, target.server.parts
    if target.package.substrate == "wafer":
        die, pkg = wafer_engine_cost(target)
    else:
        die = die_cost(chip.area_mm2, target.tech)
        pkg = package_cost(
            bonded_die_usd(die.cost_usd, chip.bonded_layers, chip.bond_yield),
            chip.area_mm2,
            chiplets=target.chips_per_package,
            substrate=target.package.substrate,
            hbm_stacks=target.chips_per_package * chip.hbm_stacks,
            hbm_stack_usd=chip.hbm_stack_usd,
            packaging=target.tech.packaging,
        )
    power = server_power(target)
    wall = sum(power.values())
    packages = target.packages_per_server
    econ = target.economics
    nre = 0.0
    if econ.nre_deployment_servers is not None:
        total_nre = econ.nre_usd if econ.nre_usd is not None else target.tech.nre_usd
        nre = total_nre / econ.nre_deployment_servers
    breakdown = {
        "packages_usd": packages * pkg.cost_usd,
        "heatsinks_usd": packages * parts.heatsink_usd_per_package,
        "fans_usd": srv.lanes * parts.fan_usd_per_lane,
        "dcdc_usd": min(parts.dcdc_max_usd, parts.dcdc_usd_per_A * power["chips_w"]
                        / parts.chip_vdd_v),
        "psu_usd": min(parts.psu_max_usd, parts.psu_usd_per_W * wall),
        "pcb_usd": parts.pcb_count * parts.pcb_usd + parts.pcb_parts_usd,
        "chassis_usd": parts.chassis_usd,
        "nic_usd": srv.server_link_count * parts.nic_usd_per_link,
        "host_usd": parts.host_usd,
        "switch_usd": switch_ports(target) * parts.switch_usd_per_port,
        "nre_usd": nre,
    }
    return ServerCost(
        cost_usd=sum(breakdown.values()),
        power_w=wall,
        breakdown=breakdown,
        power_breakdown=power,
        die=die,
        package=pkg,
    )


@dataclass(frozen=True)
class LimitViolation:
    """One broken physical limit: which, by how much, and the nearest change that fixes it.

    ``limit`` is the name explore counts it under ("lane thermal", "server power").
    """

    limit: str
    what: str
    over: float  # how far past the limit, in ``unit``
    unit: str
    fix: str

    def __str__(self) -> str:
        return f"{self.limit}: {self.what}, {self.over:,.0f} {self.unit} over; {self.fix}"


@dataclass(frozen=True)
class ThermalReport:
    """Thermal and power feasibility; ``limits`` holds each broken limit."""

    limits: tuple[LimitViolation, ...]
    die_w_per_mm2: float
    package_w: float
    lane_w: float
    lane_budget_w: float | None  # None when liquid-cooled
    hottest_die_c: float | None  # None when liquid-cooled
    server_power_w: float
    power_cap_w: float

    @property
    def ok(self) -> bool:
        return not self.limits

    @property
    def violations(self) -> tuple[str, ...]:
        """Each broken limit as one sentence."""
        return tuple(map(str, self.limits))


def thermal_check(target: Target) -> ThermalReport:
    """The physical limits of a target, the one check of all of them: the die within the
    node's reticle and power density, the air-cooled lane budget and the server power cap.

    ``compile``, ``simulate`` (through ``require_within_limits``), ``cost`` and explore's
    screen all ask this function; ``Target`` only checks that each field is in range.
    """
    chip, srv, tech = target.chiplet, target.server, target.tech
    cool = srv.cooling
    limits: list[LimitViolation] = []
    if chip.area_mm2 > tech.max_reticle_mm2:
        limits.append(LimitViolation(
            "reticle",
            f"die of {chip.area_mm2:,g} mm2 larger than the {tech.name} reticle of "
            f"{tech.max_reticle_mm2:,g} mm2", chip.area_mm2 - tech.max_reticle_mm2, "mm2",
            f"a die of at most {tech.max_reticle_mm2:,g} mm2 (chiplet.area_mm2)"))
    density = chip.die_power_w / chip.area_mm2  # the HBM stacks' power is not the die's
    if density > tech.max_w_per_mm2:
        most_w = tech.max_w_per_mm2 * chip.area_mm2
        split = (f" ({most_w:,.4g} W on the die, {chip.hbm_power_w:,.4g} W of HBM)"
                 if chip.hbm_power_w else "")
        limits.append(LimitViolation(
            "power density",
            f"die of {chip.die_power_w:,.4g} W on {chip.area_mm2:,g} mm2 is {density:.3g} "
            f"W/mm2, above the {tech.name} limit of {tech.max_w_per_mm2:g} W/mm2",
            chip.die_power_w - most_w, "W",
            f"chiplet.power_w of at most {most_w + chip.hbm_power_w:,.4g} W{split} or a "
            "larger die"))
    pkg_w = target.chips_per_package * chip.power_w
    lane_w = srv.packages_per_lane * pkg_w
    budget = hottest = None
    if cool.kind == "air":
        w_per_k = AIR_RHO_CP_J_PER_M3_K * cool.airflow_m3_per_s_per_lane
        hottest = cool.ambient_c + (lane_w - pkg_w) / w_per_k + pkg_w * cool.heatsink_K_per_W
        headroom_k = cool.die_max_c - cool.ambient_c - pkg_w * cool.heatsink_K_per_W
        budget = headroom_k * w_per_k + pkg_w if headroom_k > 0 else 0.0
        if hottest > cool.die_max_c:
            if headroom_k > 0:
                # T(n) = ambient + (n - 1) P_pkg / (rho c_p Q) + P_pkg R <= T_max
                most = 1 + math.floor(headroom_k * w_per_k / pkg_w)
                fix = (f"at most {most} packages per lane (server.packages_per_lane), more "
                       "airflow (server.cooling.airflow_m3_per_s_per_lane) or cooling.kind: "
                       "liquid")
            else:
                most_w = (cool.die_max_c - cool.ambient_c) / cool.heatsink_K_per_W
                fix = (f"packages of at most {most_w:.0f} W (now {pkg_w:.0f} W), a better heat "
                       "sink (server.cooling.heatsink_K_per_W) or cooling.kind: liquid")
            limits.append(LimitViolation(
                "lane thermal",
                f"lane of {lane_w:,.0f} W against its air-cooled budget of {budget:,.0f} W "
                f"(last die at {hottest:.0f} C, limit {cool.die_max_c:g} C)",
                lane_w - budget, "W", fix))
    wall = sum(server_power(target).values())
    if wall > srv.power_cap_w:
        limits.append(LimitViolation(
            "server power",
            f"server wall power {wall:,.0f} W against its cap of {srv.power_cap_w:,g} W",
            wall - srv.power_cap_w, "W",
            "fewer or cooler chips per server (server.packages_per_lane, server.lanes) or "
            f"server.power_cap_w >= {math.ceil(wall)}"))
    return ThermalReport(
        limits=tuple(limits),
        die_w_per_mm2=chip.die_power_w / chip.area_mm2,
        package_w=pkg_w,
        lane_w=lane_w,
        lane_budget_w=budget,
        hottest_die_c=hottest,
        server_power_w=wall,
        power_cap_w=srv.power_cap_w,
    )


def require_within_limits(target: Target) -> None:
    """Refuse a target that breaks a thermal or power limit, naming each and its fix.

    Raises ``TargetError`` (one line): what compile and simulate say instead of mapping
    hardware that could not run. ``chipletc cost`` reports the same limits and goes on.
    """
    report = thermal_check(target)
    if not report.ok:
        raise TargetError(f"target {target.name}: " + "; also ".join(report.violations))

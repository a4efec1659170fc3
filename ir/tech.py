"""Technology node and economics: the constants a cost model starts from.

Plain data. Each constructor checks its own ranges and raises ``TargetError`` whose
message starts with the field name ("wafer_cost_usd: must be > 0 (-3.0); allowed > 0");
the YAML loader prefixes the file and section. Derived values (dies per wafer, yield,
TCO) are computed by pure functions in ``chipletc.backends.cost``, never here.

Units: ``MiB`` in ``sram_mm2_per_MiB`` is 2**20 bytes (SRAM macros come in powers of
two); ``TOPS`` is 1e12 operations per second, one multiply-accumulate counting as two
operations, at the node's native matmul type (bf16 for the Chiplet Cloud figures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from .errors import TargetError

__all__ = ["MIB", "BondedMemory", "Economics", "MemoryTech", "Packaging", "PowerBasis", "TechNode"]

MIB = 1 << 20
"""Bytes in a MiB: the unit of SRAM densities and chiplet builders."""

# Upper bounds of input fields, set far beyond real hardware: they catch typos and
# values (1e30) that would overflow the solver's integers, not unusual designs.
MAX_WAFER_DIAMETER_MM = 450.0  # the largest wafer size ever standardised (SEMI M1)
MAX_USD = 1e11  # any single price or NRE
MAX_SERVERS = 100_000  # servers in one system


def fail(field: str, what: str, value: object, allowed: str) -> TargetError:
    """The one message shape of every target check: "field: what (value); allowed ..."."""
    return TargetError(f"{field}: {what} ({value!r}); allowed {allowed}")


def require_number(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise fail(field, "must be a number", value, "a finite number")
    return float(value)


def _range(low: str, high: float | None) -> str:
    return low if high is None else f"{low} and <= {high:,g}"


def require_positive(field: str, value: object, high: float | None = None) -> None:
    v = require_number(field, value)
    allowed = _range("> 0", high)
    if v <= 0:
        raise fail(field, "must be positive", value, allowed)
    if math.isinf(v) or (high is not None and v > high):
        raise fail(field, "too large", value, allowed)


def require_nonnegative(field: str, value: object, high: float | None = None) -> None:
    v = require_number(field, value)
    allowed = _range(">= 0", high)
    if v < 0:
        raise fail(field, "must not be negative", value, allowed)
    if math.isinf(v) or (high is not None and v > high):
        raise fail(field, "too large", value, allowed)


def require_between(field: str, value: object, low: float, high: float) -> None:
    v = require_number(field, value)
    if not low <= v <= high:
        raise fail(field, "out of range", value, f"[{low:,g}, {high:,g}]")


def require_fraction(field: str, value: object, *, allow_zero: bool = False) -> None:
    """A fraction in (0, 1] (or [0, 1] with ``allow_zero``)."""
    v = require_number(field, value)
    low_ok = v >= 0 if allow_zero else v > 0
    if not (low_ok and v <= 1):
        raise fail(field, "out of range", value, "[0, 1]" if allow_zero else "(0, 1]")


def require_count(field: str, value: object, *, minimum: int = 1,
                  maximum: int | None = None) -> None:
    allowed = _range(f">= {minimum}", maximum)
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(field, "must be a whole number", value, f"an integer {allowed}")
    if value < minimum:
        raise fail(field, "too small", value, allowed)
    if maximum is not None and value > maximum:
        raise fail(field, "too large", value, allowed)


@dataclass(frozen=True)
class Packaging:
    """Package cost constants: organic substrate, silicon interposer, bonding yields.

    Chiplet Actuary's (Feng and Ma, DAC 2022) as the Chiplet Cloud authors' code sets
    them (its ``PackageConstants``); a tech YAML overrides any of them under
    ``packaging:``. ``chipletc.backends.cost.package_cost`` says how they combine.
    """

    organic_area_factor: float = 4.0  # organic substrate area / die area (authors' code)
    organic_usd_per_mm2: float = 0.005  # organic substrate $ per mm2 (authors' code)
    organic_layer_factor: float = 1.5  # several dies: substrate layers x (Chiplet Actuary)
    organic_layer_factor_above_289mm2: float = 1.75  # substrate above 17 x 17 mm
    organic_layer_factor_above_900mm2: float = 2.0  # substrate above 30 x 30 mm
    organic_bond_yield: float = 0.99  # per die, C4 bumps to an organic substrate
    c4_usd_per_mm2: float = 0.005  # C4 bumps per mm2 of die or interposer (authors' code)
    interposer_area_factor: float = 1.1  # interposer area / (dies + HBM stacks)
    interposer_wafer_usd: float = 1937.0  # one 55 nm wafer (authors' code)
    interposer_wafer_diameter_mm: float = 300.0
    interposer_scribe_mm: float = 0.1  # authors' code (wafer_dicing_gap)
    interposer_defect_density_per_cm2: float = 0.07  # authors' code si_D0 = 0.0007 /mm2
    interposer_cluster_alpha: float = 6.0  # negative binomial alpha (authors' code)
    interposer_bond_yield: float = 0.95  # per die or HBM stack, micro-bumps (authors' code)
    hbm_stack_mm2: float = 7.75 * 11.87  # HBM2e footprint, 7.75 x 11.87 mm (authors' code)

    def __post_init__(self) -> None:
        for f in ("organic_area_factor", "organic_layer_factor",
                  "organic_layer_factor_above_289mm2", "organic_layer_factor_above_900mm2",
                  "interposer_area_factor"):
            require_positive(f, getattr(self, f), high=100)
        require_positive("interposer_wafer_diameter_mm", self.interposer_wafer_diameter_mm,
                         high=MAX_WAFER_DIAMETER_MM)
        require_positive("interposer_cluster_alpha", self.interposer_cluster_alpha, high=1e3)
        require_positive("hbm_stack_mm2", self.hbm_stack_mm2, high=1e4)
        for f in ("organic_usd_per_mm2", "c4_usd_per_mm2"):
            require_nonnegative(f, getattr(self, f), high=100)
        require_nonnegative("interposer_wafer_usd", self.interposer_wafer_usd, high=1e6)
        require_nonnegative("interposer_scribe_mm", self.interposer_scribe_mm, high=10)
        require_nonnegative("interposer_defect_density_per_cm2",
                            self.interposer_defect_density_per_cm2, high=100)
        for f in ("organic_bond_yield", "interposer_bond_yield"):
            require_fraction(f, getattr(self, f))


@dataclass(frozen=True)
class TechNode:
    """A silicon technology node: wafer economics, yield and density constants.

    The yield model is negative binomial, Y = (1 + D0*A/alpha)^-alpha, with ``A`` in
    cm2; dies per wafer count whole dies inside the usable circle (wafer diameter
    minus twice the edge loss) on a pitch of sqrt(area) + scribe.
    """

    name: str
    wafer_cost_usd: float
    wafer_diameter_mm: float
    scribe_mm: float
    edge_loss_mm: float
    defect_density_per_cm2: float
    cluster_alpha: float
    sram_mm2_per_MiB: float
    mac_mm2_per_TOPS: float
    w_per_TOPS: float
    max_w_per_mm2: float
    pad_ring_mm: float
    max_reticle_mm2: float
    test_cost_frac: float
    nre_usd: float
    source: str = ""
    packaging: Packaging = field(default_factory=Packaging)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise fail("name", "must be a non-empty string", self.name, "e.g. '7nm'")
        # Upper bounds: far beyond any real node, so that a typo (1e30) is refused.
        for f, high in (
            ("wafer_cost_usd", 1e6),
            ("wafer_diameter_mm", MAX_WAFER_DIAMETER_MM),
            ("cluster_alpha", 1e3),
            ("sram_mm2_per_MiB", 1e3),
            ("mac_mm2_per_TOPS", 1e4),
            ("w_per_TOPS", 1e3),
            ("max_w_per_mm2", 100),
            ("max_reticle_mm2", 1e5),  # a whole 300 mm wafer is 70,686 mm2
        ):
            require_positive(f, getattr(self, f), high)
        for f, high in (("scribe_mm", 10), ("edge_loss_mm", MAX_WAFER_DIAMETER_MM / 2),
                        ("defect_density_per_cm2", 100), ("pad_ring_mm", 10)):
            require_nonnegative(f, getattr(self, f), high)
        require_fraction("test_cost_frac", self.test_cost_frac, allow_zero=True)
        require_nonnegative("nre_usd", self.nre_usd, MAX_USD)
        if 2 * self.edge_loss_mm >= self.wafer_diameter_mm:
            raise fail(
                "edge_loss_mm",
                "leaves no usable wafer",
                self.edge_loss_mm,
                f"< {self.wafer_diameter_mm / 2:g} (half the wafer diameter)",
            )

    @property
    def usable_diameter_mm(self) -> float:
        return self.wafer_diameter_mm - 2 * self.edge_loss_mm


class PowerBasis(str, Enum):
    """Which power the per-watt items of an owned server's TCO are charged at.

    ``tdp``: all of them (datacentre capex, its interest and opex, electricity) at the
    server's wall power at TDP, the conservative reading. ``split``: the datacentre is
    provisioned for TDP, electricity is paid at the run's simulated average wall power.
    ``simulated``: all of them at the simulated average power, as the Chiplet Cloud
    authors' code charges them (its TCO is per watt of the power it is given).
    """

    TDP = "tdp"
    SPLIT = "split"
    SIMULATED = "simulated"


def _knob(flag: str, metavar: str, help: str) -> dict[str, str]:
    """A field's command-line flag (every command takes it over the target's value)."""
    return {"flag": flag, "metavar": metavar, "help": help}


@dataclass(frozen=True)
class MemoryTech:
    """A stacked-DRAM generation a chiplet can carry beside its die (HBM2e, HBM3, ...).

    Per stack: capacity, peak bandwidth, access energy, price, the logic-die area its
    PHY and controller take, and the die edge ("shoreline") it needs; stacks sit on
    two opposite die edges, on a silicon interposer whose area and yield the package
    model prices (``Packaging.hbm_stack_mm2``). ``bw_efficiency`` is the achievable
    fraction of peak bandwidth, applied by explore to designs carrying this memory.
    Presets live in ``backends/targets/memory/`` with the source of every figure.
    """

    name: str
    stack_bytes: int
    stack_bw_Bps: float
    energy_J_per_B: float
    stack_usd: float
    phy_mm2: float
    shoreline_mm: float
    bw_efficiency: float
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name == "sram":
            raise fail("name", "must be a non-empty string other than sram", self.name,
                       "e.g. 'hbm3'")
        require_count("stack_bytes", self.stack_bytes, maximum=1 << 44)
        require_positive("stack_bw_Bps", self.stack_bw_Bps, high=1e14)
        require_nonnegative("energy_J_per_B", self.energy_J_per_B, high=1e-6)
        require_nonnegative("stack_usd", self.stack_usd, high=1e6)
        require_nonnegative("phy_mm2", self.phy_mm2, high=1e3)
        require_positive("shoreline_mm", self.shoreline_mm, high=1e3)
        require_fraction("bw_efficiency", self.bw_efficiency)

    @property
    def stack_w(self) -> float:
        """Power of one stack at its peak bandwidth."""
        return self.stack_bw_Bps * self.energy_J_per_B


@dataclass(frozen=True)
class BondedMemory:
    """SRAM dies hybrid-bonded face to face on the logic die (AMD's 3D V-Cache on TSMC
    SoIC), ``layers`` of them, each covering the die.

    A layer is an SRAM die of the chiplet's node and area: ``sram_fill`` of it is SRAM
    macros at the node's ``sram_mm2_per_MiB`` (the rest TSV arrays and control), it
    is priced as a die of that node, and each bond succeeds with ``bond_yield`` (a
    failed bond scraps the stack). The bonded face carries ``bw_Bps_per_mm2`` of the
    die's area, shared by all layers (upper layers reach the logic through the TSVs of
    the ones below): layers add capacity, not bandwidth. It is on-die-class memory:
    weights and KV cache fill the die's SRAM and the layers together
    (``Target.memory_capacity_bytes``). Presets in ``backends/targets/memory/`` say
    ``kind: bonded`` and cite every figure.
    """

    name: str
    sram_fill: float
    bw_Bps_per_mm2: float
    bond_yield: float
    max_layers: int
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name == "sram":
            raise fail("name", "must be a non-empty string other than sram", self.name,
                       "e.g. '3d-sram'")
        require_fraction("sram_fill", self.sram_fill)
        require_positive("bw_Bps_per_mm2", self.bw_Bps_per_mm2, high=1e13)
        require_fraction("bond_yield", self.bond_yield)
        require_count("max_layers", self.max_layers, maximum=64)

    def layer_bytes(self, area_mm2: float, tech: TechNode) -> int:
        """SRAM bytes of one layer over a die of ``area_mm2`` at ``tech``."""
        return math.floor(area_mm2 * self.sram_fill / tech.sram_mm2_per_MiB * MIB)


@dataclass(frozen=True)
class Economics:
    """Who pays what over a server's life; defaults from the authors' code (docs/constants.md).

    Owned hardware uses the ASIC-Cloud style TCO of the Chiplet Cloud authors' code:
    server capex with monthly-amortized loan interest, a one-off server opex of
    ``server_opex_frac`` x cost over the life (as the reference formula applies it),
    datacenter capex per watt amortized with interest, datacenter opex per watt-month,
    and electricity with PUE, each per-watt item at the power ``power_basis`` names.
    Rented hardware sets ``rent_usd_per_hour`` (per server), which replaces all of
    that. ``utilization`` is the share of the time the servers serve at the modelled
    throughput (the rest they stand idle, still paid for). NRE is left out of the
    per-token figure unless ``nre_deployment_servers`` says over how many servers to
    spread it. Fields with flag metadata are the economic knobs every command takes.
    """

    electricity_usd_per_kWh: float = field(default=0.067, metadata=_knob(  # authors' code
        "--electricity-usd-per-kwh", "USD", "electricity price, $ per kWh"))
    pue: float = field(default=1.5, metadata=_knob(  # authors' code (TCO.PUE)
        "--pue", "X", "datacentre power usage effectiveness (facility / IT power)"))
    dc_capex_usd_per_W: float = field(default=10.0, metadata=_knob(  # authors' code
        "--dc-capex-usd-per-w", "USD", "datacentre construction, $ per provisioned watt"))
    dc_amortization_years: float = field(default=12.0, metadata=_knob(  # authors' code
        "--dc-life-years", "Y", "years the datacentre capex is amortized over"))
    dc_interest_rate: float = field(default=0.08, metadata=_knob(  # authors' code
        "--dc-interest-rate", "R", "annual interest on the datacentre capex"))
    dc_opex_usd_per_W_month: float = field(default=0.04, metadata=_knob(  # authors' code
        "--dc-opex-usd-per-w-month", "USD", "datacentre opex, $ per watt-month"))
    server_interest_rate: float = field(default=0.08, metadata=_knob(  # authors' code
        "--interest-rate", "R", "annual interest on the server capex"))
    server_life_years: float = field(default=1.5, metadata=_knob(  # authors' code
        "--life-years", "Y", "server life in years: its capex is spread over it"))
    server_opex_frac: float = field(default=0.05, metadata=_knob(  # authors' code
        "--server-opex-frac", "F", "server opex over its life, a fraction of its cost"))
    rent_usd_per_hour: float | None = field(default=None, metadata=_knob(
        "--rent-usd-per-hour", "USD",
        "rent per server-hour; makes the target rented (replaces the owned TCO)"))
    power_basis: PowerBasis = field(default=PowerBasis.TDP, metadata=_knob(
        "--power-basis", "B", "power the per-watt TCO items are charged at: tdp, split "
        "(datacentre at TDP, electricity at simulated average power) or simulated (all at "
        "simulated average power, the authors' convention)"))
    utilization: float = field(default=1.0, metadata=_knob(
        "--utilization", "U", "share of the time the servers serve at the modelled "
        "throughput; $ per token grow as 1/U"))
    nre_usd: float | None = None  # None = the tech node's NRE
    nre_deployment_servers: int | None = None  # None = NRE not charged
    carbon_kg_per_kWh: float | None = None  # grid intensity; None = no carbon figure

    def __post_init__(self) -> None:
        for f, high in (("electricity_usd_per_kWh", 100), ("dc_capex_usd_per_W", 1e3),
                        ("dc_opex_usd_per_W_month", 100)):
            require_nonnegative(f, getattr(self, f), high)
        for f in ("dc_amortization_years", "server_life_years"):
            # the loans are repaid monthly (``loan_interest``): a life under one month has
            # no repayment and divides by zero
            if not 1 / 12 <= require_number(f, getattr(self, f)) <= 100:
                raise fail(f, "out of range", getattr(self, f), "one month to 100 years "
                           "[0.0833, 100]")
        for f in ("dc_interest_rate", "server_interest_rate"):
            require_fraction(f, getattr(self, f), allow_zero=True)
        require_fraction("server_opex_frac", self.server_opex_frac, allow_zero=True)
        require_between("pue", self.pue, 1, 10)  # facility power / IT power
        try:
            object.__setattr__(self, "power_basis", PowerBasis(self.power_basis))
        except ValueError:
            raise fail("power_basis", "unknown value", self.power_basis,
                       "one of " + ", ".join(b.value for b in PowerBasis)) from None
        require_fraction("utilization", self.utilization)
        if self.rent_usd_per_hour is not None:
            require_positive("rent_usd_per_hour", self.rent_usd_per_hour, high=1e6)
        if self.nre_usd is not None:
            require_nonnegative("nre_usd", self.nre_usd, MAX_USD)
        if self.nre_deployment_servers is not None:
            require_count("nre_deployment_servers", self.nre_deployment_servers,
                          maximum=MAX_SERVERS * 10_000)
        if self.carbon_kg_per_kWh is not None:
            require_nonnegative("carbon_kg_per_kWh", self.carbon_kg_per_kWh, high=10)

    @property
    def rented(self) -> bool:
        return self.rent_usd_per_hour is not None

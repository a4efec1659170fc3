"""Hardware targets: chiplet, package, server, system, economics, as plain data.

A ``Target`` composes the parts the way LLMCompass composes a device and TVM names a
target: a technology node (``TechNode``), one chiplet design (``ChipletSpec``), how
chiplets sit in a package (``PackageSpec``), how packages sit on the lanes of a server
(``ServerSpec``, with its parts bill and cooling), how many servers a system may use
(``SystemSpec``), who pays (``Economics``) and how close to peak the hardware runs
(``Efficiency``). Presets live in ``chipletc.backends.targets`` as YAML.

Constructors check ranges and cross-field invariants (an SRAM-only design has SRAM,
HBM sits on an interposer). They do no physics: area from densities, cost, yield and
thermal budgets are pure functions in ``chipletc.backends.cost``.

Not checked here: whether a model fits (the partitioner's job) and the physical limits
(die within the reticle and the node's power density, the air-cooled lane budget, the
server power cap): ``chipletc.backends.cost.thermal_check`` is the one check of those.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property

from .dtypes import DType
from .errors import TargetError
from .tech import (
    MAX_SERVERS,
    Economics,
    TechNode,
    fail,
    require_between,
    require_count,
    require_fraction,
    require_nonnegative,
    require_positive,
)

__all__ = [
    "LEVELS",
    "SUBSTRATES",
    "TOPOLOGIES",
    "ChipletSpec",
    "Cooling",
    "Economics",
    "Efficiency",
    "LinkLevel",
    "PackageSpec",
    "ServerParts",
    "ServerSpec",
    "SystemSpec",
    "Target",
    "TechNode",
    "WaferSpec",
]

TOPOLOGIES = ("ring", "mesh2d", "torus2d", "torus3d", "switch")
"""How the chips of one link level are wired; the simulator picks its collective from it
(``backends/perf/collectives.py``). A server-level switch is priced per port
(``ServerParts.switch_usd_per_port``)."""
LEVELS = ("package", "server", "cluster")
"""Link levels, innermost first."""
SUBSTRATES = ("organic", "interposer", "wafer")
COOLING_KINDS = ("air", "liquid")

# What a dtype's matmuls run at when the chip has no native rate for it: narrower
# integer/float types fall back to the next wider native type (weights are
# dequantized in registers), bf16 and fp16 share one rate.
_FALLBACK: dict[DType, tuple[DType, ...]] = {
    DType.FP32: (DType.FP32,),
    DType.BF16: (DType.BF16, DType.FP16),
    DType.FP16: (DType.FP16, DType.BF16),
    DType.FP8: (DType.FP8, DType.BF16, DType.FP16),
    DType.INT8: (DType.INT8, DType.BF16, DType.FP16),
    DType.INT4: (DType.INT4, DType.INT8, DType.BF16, DType.FP16),
}
FP32_EMULATION_PASSES = 3
"""fp32 matmul on a bf16-only array: three bf16 passes (the "bf16x3" scheme of JAX's
``precision=HIGH`` on TPUs), so a third of the bf16 rate."""


def _one_of(fieldname: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise fail(fieldname, "unknown value", value, "one of " + ", ".join(allowed))


# Upper bounds of the fields below: far beyond real hardware, so that only typos and
# overflowing values (1e30) are refused.
MAX_BW_BPS = 1e16  # bytes/s of any memory or link (HBM3e is ~5e12 per chip)
MAX_LATENCY_S = 1.0
MAX_BYTES = 1 << 50  # 1 PiB of memory per chip
MAX_FLOPS = 1e18  # FLOP/s per chip (an H100 is ~1e15 dense)
MAX_COUNT = 10_000  # links, lanes, packages per lane, chiplets per package


def _optional_positive(fieldname: str, value: float | None, high: float) -> None:
    if value is not None:
        require_positive(fieldname, value, high)


def _optional_nonnegative(fieldname: str, value: float | None, high: float) -> None:
    if value is not None:
        require_nonnegative(fieldname, value, high)


@dataclass(frozen=True)
class LinkLevel:
    """One level of the interconnect hierarchy, as the collective model sees it.

    ``bw_Bps`` is what one chip can send at this level, one direction, summed over the
    links it uses here (NVLink3: 12 links x 25 GB/s = 300 GB/s); the simulator turns it
    into a collective time according to ``topology``. At the cluster level of a
    Chiplet Cloud or GPU server the server's links are shared by all its chips, so the
    per-chip figure is the server's total divided by its chip count.
    """

    name: str
    domain_chips: int
    bw_Bps: float
    latency_s: float
    topology: str


@dataclass(frozen=True)
class ChipletSpec:
    """One die (plus its HBM stacks, if any) as the compiler and cost model see it.

    ``flops_per_s`` holds peak dense rates per dtype where the hardware has them; see
    ``peak_flops`` for the fallback. ``power_w`` is the TDP of the die and its HBM;
    ``hbm_power_w`` is the part of it burnt in the stacks, off the die (0 where a
    preset gives only the total), so the die's power density leaves it out.
    ``bonded_layers`` SRAM dies hybrid-bonded on the die (``ir.tech.BondedMemory``) hold
    ``bonded_bytes`` more on-die-class memory at ``bonded_bw_Bps`` through the bonded
    face, each bond succeeding with ``bond_yield``.
    """

    area_mm2: float
    flops_per_s: Mapping[DType, float] = field(hash=False)
    sram_bytes: int
    sram_bw_Bps: float
    link_count: int
    link_bw_Bps: float
    link_latency_s: float
    link_energy_J_per_B: float
    power_w: float
    hbm_bytes: int = 0
    hbm_bw_Bps: float = 0.0
    hbm_stacks: int = 0
    hbm_stack_usd: float = 0.0
    hbm_power_w: float = 0.0
    bonded_layers: int = 0
    bonded_bytes: int = 0
    bonded_bw_Bps: float = 0.0
    bond_yield: float = 1.0
    name: str = ""

    def __post_init__(self) -> None:
        require_positive("area_mm2", self.area_mm2, high=1e5)
        rates: dict[DType, float] = {}
        if not isinstance(self.flops_per_s, Mapping) or not self.flops_per_s:
            raise fail("flops_per_s", "must map dtypes to FLOP/s", self.flops_per_s,
                       "e.g. {bf16: 3.12e14}")
        for key, rate in self.flops_per_s.items():
            try:
                dtype = DType(key)
            except ValueError:
                allowed = ", ".join(d.value for d in DType)
                raise fail("flops_per_s", "unknown dtype", key, "one of " + allowed) from None
            require_positive(f"flops_per_s.{dtype.value}", rate, MAX_FLOPS)
            rates[dtype] = float(rate)
        if DType.BF16 not in rates and DType.FP16 not in rates:
            raise fail("flops_per_s", "needs a bf16 or fp16 rate", sorted(map(str, rates)),
                       "a mapping with bf16 or fp16")
        object.__setattr__(self, "flops_per_s", rates)
        require_count("sram_bytes", self.sram_bytes, minimum=0, maximum=MAX_BYTES)
        require_count("hbm_bytes", self.hbm_bytes, minimum=0, maximum=MAX_BYTES)
        require_count("hbm_stacks", self.hbm_stacks, minimum=0, maximum=64)
        require_count("link_count", self.link_count, minimum=0, maximum=MAX_COUNT)
        for f, high in (("sram_bw_Bps", MAX_BW_BPS), ("hbm_bw_Bps", MAX_BW_BPS),
                        ("link_bw_Bps", MAX_BW_BPS), ("link_latency_s", MAX_LATENCY_S),
                        ("link_energy_J_per_B", 1e-6), ("hbm_stack_usd", 1e6)):
            require_nonnegative(f, getattr(self, f), high)
        require_positive("power_w", self.power_w, high=1e5)  # a wafer-scale die is ~2e4 W
        require_nonnegative("hbm_power_w", self.hbm_power_w, high=self.power_w)
        if self.sram_bytes > 0:
            require_positive("sram_bw_Bps", self.sram_bw_Bps)
        if self.hbm_bytes > 0:
            require_positive("hbm_bw_Bps", self.hbm_bw_Bps)
            if self.hbm_stacks == 0:
                raise fail("hbm_stacks", "HBM capacity given without stacks", 0, ">= 1")
        elif self.hbm_stacks > 0 or self.hbm_bw_Bps > 0:
            raise fail("hbm_bytes", "HBM stacks or bandwidth given without capacity", 0, "> 0")
        if self.link_count > 0:
            require_positive("link_bw_Bps", self.link_bw_Bps)
        require_count("bonded_layers", self.bonded_layers, minimum=0, maximum=64)
        require_count("bonded_bytes", self.bonded_bytes, minimum=0, maximum=MAX_BYTES)
        require_nonnegative("bonded_bw_Bps", self.bonded_bw_Bps, MAX_BW_BPS)
        require_fraction("bond_yield", self.bond_yield)
        if (self.bonded_layers > 0) != (self.bonded_bytes > 0) or (
                self.bonded_bytes > 0 and self.bonded_bw_Bps <= 0):
            raise fail("bonded_bytes", "bonded layers, their capacity and bandwidth go "
                       "together", self.bonded_bytes, "all > 0 or all 0")
        if self.bonded_layers > 0 and (self.hbm_bytes > 0 or self.sram_bytes == 0):
            raise fail("bonded_layers", "bonded SRAM layers extend the die's SRAM, not HBM",
                       self.bonded_layers, "0 with HBM; with SRAM on the die")

    def peak_flops(self, dtype: DType) -> float:
        """Peak dense FLOP/s for matmuls in ``dtype``.

        Without a native rate: int4 -> int8 -> bf16/fp16, fp8 -> bf16/fp16 (a chip
        without fp8 units dequantizes to bf16), int8 -> bf16/fp16, bf16 <-> fp16, and
        fp32 -> bf16 / ``FP32_EMULATION_PASSES``.
        """
        for candidate in _FALLBACK[DType(dtype)]:
            if candidate in self.flops_per_s:
                return self.flops_per_s[candidate]
        half = self.flops_per_s.get(DType.BF16) or self.flops_per_s[DType.FP16]
        return half / FP32_EMULATION_PASSES

    @property
    def die_power_w(self) -> float:
        """Power burnt on the die itself (``power_w`` less the HBM stacks')."""
        return self.power_w - self.hbm_power_w

    @property
    def link_total_bw_Bps(self) -> float:
        """All chip-to-chip links together, one direction."""
        return self.link_count * self.link_bw_Bps


@dataclass(frozen=True)
class WaferSpec:
    """A whole-wafer engine's redundancy and the parts around the wafer.

    The wafer's tiles (its "chiplets") are built of ``regions`` x (``cores_per_region``
    + ``spares_per_region``) cores; a region works while at most its spares are
    defective (``backends.cost.wafer.spared_yield``). ``engine_usd`` is what the
    wafer needs to run beyond its silicon: package, power delivery and cold plate.

    ``stream_bw_Bps`` > 0 keeps the weights off the wafer (Cerebras's MemoryX) and
    streams them in at that bandwidth per wafer, shared by its tiles; the KV cache and
    activations stay in SRAM, which also reserves ``stream_buffer_bytes`` per wafer for
    the weights in flight (``Target.weights_resident``).
    """

    regions: int
    cores_per_region: int
    spares_per_region: int
    engine_usd: float
    stream_bw_Bps: float = 0.0
    stream_buffer_bytes: int = 0

    def __post_init__(self) -> None:
        require_count("regions", self.regions, maximum=10_000_000)
        require_count("cores_per_region", self.cores_per_region, maximum=1_000_000)
        require_count("spares_per_region", self.spares_per_region, minimum=0,
                      maximum=self.cores_per_region)
        require_nonnegative("engine_usd", self.engine_usd, high=1e9)
        require_nonnegative("stream_bw_Bps", self.stream_bw_Bps, MAX_BW_BPS)
        require_count("stream_buffer_bytes", self.stream_buffer_bytes, minimum=0,
                      maximum=MAX_BYTES)
        if (self.stream_bw_Bps > 0) != (self.stream_buffer_bytes > 0):
            raise fail("stream_buffer_bytes", "streamed weights need a buffer in SRAM, and "
                       "a buffer needs stream_bw_Bps", self.stream_buffer_bytes,
                       "> 0 with stream_bw_Bps > 0, else 0")


@dataclass(frozen=True)
class PackageSpec:
    """Chiplets in one package: on an organic substrate, a silicon interposer, or a
    whole wafer (``substrate: wafer``, its tiles being the chiplets, with ``wafer``).

    ``bw_Bps_per_chip`` and ``latency_s`` describe the package link level; None means
    the chiplet's own links (all of them, at their latency).
    """

    chiplets_per_package: int = 1
    substrate: str = "organic"
    topology: str = "ring"
    bw_Bps_per_chip: float | None = None
    latency_s: float | None = None
    wafer: WaferSpec | None = None

    def __post_init__(self) -> None:
        require_count("chiplets_per_package", self.chiplets_per_package, maximum=MAX_COUNT)
        _one_of("substrate", self.substrate, SUBSTRATES)
        _one_of("topology", self.topology, TOPOLOGIES)
        _optional_positive("bw_Bps_per_chip", self.bw_Bps_per_chip, MAX_BW_BPS)
        _optional_nonnegative("latency_s", self.latency_s, MAX_LATENCY_S)
        if (self.substrate == "wafer") != (self.wafer is not None):
            raise fail("wafer", "a wafer spec goes with substrate: wafer, and only with it",
                       self.substrate, "substrate: wafer with wafer: {regions, ...}")


@dataclass(frozen=True)
class ServerParts:
    """The non-silicon bill of a server; defaults are the Chiplet Cloud authors' code
    (from ASIC Clouds, Magaki et al., ISCA 2016). The switch fields are charged only
    when ``ServerSpec.topology`` is "switch", for every chip link of the server; they
    default to 0 because the GPU presets carry their NVSwitches in ``host_usd``."""

    pcb_usd: float = 50.0  # per board; Server.PCBCost
    pcb_count: int = 2  # x2 boards when chips have IO (authors' code)
    pcb_parts_usd: float = 50.0  # Server.PCBPartsCost
    dcdc_usd_per_A: float = 0.33  # Server.DCDCCostPerAmp
    dcdc_max_usd: float = 300.0  # Server.MaxDCDCCost
    dcdc_efficiency: float = 0.95  # Server.DCDCEfficiency
    chip_vdd_v: float = 0.8  # core voltage the DC-DC converters deliver (authors' lgc_vdd)
    psu_usd_per_W: float = 0.13  # Server.PSUCostPerW
    psu_max_usd: float = 100.0  # Server.MaxPSUCost
    psu_efficiency: float = 0.95  # Server.PSUEfficiency
    fan_w_per_lane: float = 7.4  # Server.FanPower
    fan_usd_per_lane: float = 15.0  # Server.FanCost
    chassis_usd: float = 30.0  # Server.ChassisCost
    nic_usd_per_link: float = 450.0  # Server.EthernetCost, one 100 GbE port per link
    host_w: float = 50.0  # Server.APPPower: host CPU + DRAM
    host_usd: float = 200.0  # Server.APPCost
    heatsink_usd_per_package: float = 2.0  # assumption, see Cooling
    switch_usd_per_port: float = 0.0  # a server.topology: switch, per chip link; see YAML notes
    switch_w_per_port: float = 0.0  # the same switch's power per port

    def __post_init__(self) -> None:
        for f in ("pcb_usd", "pcb_parts_usd", "dcdc_usd_per_A", "dcdc_max_usd", "psu_usd_per_W",
                  "psu_max_usd", "fan_w_per_lane", "fan_usd_per_lane", "chassis_usd",
                  "nic_usd_per_link", "host_w", "host_usd", "heatsink_usd_per_package",
                  "switch_usd_per_port", "switch_w_per_port"):
            require_nonnegative(f, getattr(self, f), 1e6)  # $ or W per part
        require_count("pcb_count", self.pcb_count, minimum=0, maximum=MAX_COUNT)
        require_positive("chip_vdd_v", self.chip_vdd_v, high=10)
        require_fraction("dcdc_efficiency", self.dcdc_efficiency)
        require_fraction("psu_efficiency", self.psu_efficiency)


@dataclass(frozen=True)
class Cooling:
    """How heat leaves a lane; ``thermal_check`` turns it into a power budget.

    Air: each lane is a duct with its own fan moving ``airflow_m3_per_s_per_lane``;
    packages sit in series, so the last one breathes air already warmed by the
    others, and its die sits ``heatsink_K_per_W`` x its power above that air. Liquid:
    only the die power density and the server power cap apply.
    """

    kind: str = "air"
    ambient_c: float = 30.0  # ASIC Clouds (Magaki et al., ISCA 2016)
    die_max_c: float = 90.0  # ASIC Clouds (Magaki et al., ISCA 2016)
    airflow_m3_per_s_per_lane: float = 0.0094  # 20 CFM, see backends/targets YAML notes
    heatsink_K_per_W: float = 0.5  # die-to-air, one package; see YAML notes

    def __post_init__(self) -> None:
        _one_of("kind", self.kind, COOLING_KINDS)
        require_between("ambient_c", self.ambient_c, -50, 100)
        require_between("die_max_c", self.die_max_c, -50, 200)
        require_positive("airflow_m3_per_s_per_lane", self.airflow_m3_per_s_per_lane, high=100)
        require_positive("heatsink_K_per_W", self.heatsink_K_per_W, high=1e3)
        if self.die_max_c <= self.ambient_c:
            raise fail("die_max_c", "not above ambient", self.die_max_c,
                       f"> ambient_c ({self.ambient_c:g})")


@dataclass(frozen=True)
class ServerSpec:
    """Packages on lanes, the server-to-server links, the power cap and the parts bill.

    ``topology``, ``bw_Bps_per_chip`` and ``latency_s`` describe the server link level
    (all chips of one server); None means the chiplet's own links.
    """

    packages_per_lane: int
    lanes: int
    server_link_count: int
    server_link_bw_Bps: float
    server_link_latency_s: float
    power_cap_w: float
    topology: str = "ring"
    bw_Bps_per_chip: float | None = None
    latency_s: float | None = None
    parts: ServerParts = field(default_factory=ServerParts)
    cooling: Cooling = field(default_factory=Cooling)

    def __post_init__(self) -> None:
        require_count("packages_per_lane", self.packages_per_lane, maximum=MAX_COUNT)
        require_count("lanes", self.lanes, maximum=MAX_COUNT)
        require_count("server_link_count", self.server_link_count, minimum=0,
                      maximum=MAX_COUNT)
        require_nonnegative("server_link_bw_Bps", self.server_link_bw_Bps, MAX_BW_BPS)
        if self.server_link_count > 0:
            require_positive("server_link_bw_Bps", self.server_link_bw_Bps, MAX_BW_BPS)
        require_nonnegative("server_link_latency_s", self.server_link_latency_s, MAX_LATENCY_S)
        require_positive("power_cap_w", self.power_cap_w, high=1e7)
        _one_of("topology", self.topology, TOPOLOGIES)
        _optional_positive("bw_Bps_per_chip", self.bw_Bps_per_chip, MAX_BW_BPS)
        _optional_nonnegative("latency_s", self.latency_s, MAX_LATENCY_S)


@dataclass(frozen=True)
class SystemSpec:
    """How many servers: a fixed count, an upper bound for the partitioner, or both.

    The cluster link level defaults to the server-to-server links shared by every
    chip of a server; ``bw_Bps_per_chip`` overrides that (a TPU pod's ICI torus).
    """

    servers: int | None = None
    max_servers: int | None = None
    topology: str = "ring"
    bw_Bps_per_chip: float | None = None
    latency_s: float | None = None

    def __post_init__(self) -> None:
        if self.servers is None and self.max_servers is None:
            raise fail("max_servers", "neither servers nor max_servers given", None, ">= 1")
        if self.servers is not None:
            require_count("servers", self.servers, maximum=MAX_SERVERS)
        if self.max_servers is not None:
            require_count("max_servers", self.max_servers, maximum=MAX_SERVERS)
            if self.servers is not None and self.servers > self.max_servers:
                raise fail("servers", "above max_servers", self.servers,
                           f"<= {self.max_servers}")
        _one_of("topology", self.topology, TOPOLOGIES)
        _optional_positive("bw_Bps_per_chip", self.bw_Bps_per_chip, MAX_BW_BPS)
        _optional_nonnegative("latency_s", self.latency_s, MAX_LATENCY_S)

    @property
    def server_bound(self) -> int:
        """The most servers a mapping may use (``max_servers``, else ``servers``)."""
        for bound in (self.max_servers, self.servers):
            if bound is not None:
                return bound
        raise AssertionError("unreachable: __post_init__ requires servers or max_servers")


@dataclass(frozen=True)
class Efficiency:
    """How close to peak the hardware runs, as a few physically meaningful numbers.

    ``compute``, ``memory`` and ``link`` are achievable fractions of peak matmul FLOP/s,
    memory bandwidth and link bandwidth. ``op_overhead_s`` is the fixed time every op
    costs on top of its roofline time (a GPU kernel launch, a TPU program step);
    ``collective_overhead_s`` the fixed software time of one collective on top of its
    alpha-beta time (NCCL's launch and synchronisation). Both default to 0, the ideal
    of a statically scheduled SRAM design. ``collective_overlap`` is the fraction of a
    collective that can run under the op producing its input (TPU's looped collective
    matmuls; 0 for kernels that finish before NCCL starts). ``activation_traffic`` is
    the fraction of activation bytes that reach the weight memory (1: every op reads
    and writes them there, as separate GPU kernels do; less when a compiler fuses
    elementwise ops into matmuls). ``network`` is the achievable fraction of the NICs'
    line rate between servers (RDMA reaches ~96 %; None: the same as ``link``).
    Calibrated values and their sources are in each preset's YAML and in
    docs/accuracy.md.
    """

    compute: float
    memory: float
    link: float
    op_overhead_s: float = 0.0
    collective_overhead_s: float = 0.0
    collective_overlap: float = 0.0
    activation_traffic: float = 1.0
    network: float | None = None

    def __post_init__(self) -> None:
        for f in ("compute", "memory", "link"):
            require_fraction(f, getattr(self, f))
        if self.network is not None:
            require_fraction("network", self.network)
        for f in ("op_overhead_s", "collective_overhead_s"):
            require_nonnegative(f, getattr(self, f), MAX_LATENCY_S)
        for f in ("collective_overlap", "activation_traffic"):
            require_fraction(f, getattr(self, f), allow_zero=True)

    @property
    def network_fraction(self) -> float:
        """Achievable fraction of NIC line rate (``network``, else ``link``)."""
        return self.link if self.network is None else self.network


@dataclass(frozen=True)
class Target:
    """A complete hardware target. See the module docstring for what is checked."""

    name: str
    tech: TechNode
    chiplet: ChipletSpec
    package: PackageSpec
    server: ServerSpec
    system: SystemSpec
    economics: Economics
    efficiency: Efficiency
    description: str = ""
    tp_domain: str = "server"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise fail("name", "must be a non-empty string", self.name, "e.g. 'cc-7nm-gpt3'")
        _one_of("tp_domain", self.tp_domain, LEVELS)
        chip, tech = self.chiplet, self.tech
        if chip.hbm_bytes == 0 and chip.sram_bytes == 0:
            raise fail("chiplet.sram_bytes", "an SRAM-only design (no HBM) has no SRAM", 0,
                       "> 0, or give hbm_bytes")
        if self.package.substrate == "wafer":
            usable = math.pi * (tech.usable_diameter_mm / 2) ** 2
            tiles = self.chips_per_package * chip.area_mm2
            if tiles > usable:
                raise fail("package.chiplets_per_package",
                           f"tiles of {chip.area_mm2:g} mm2 beyond the usable wafer",
                           self.chips_per_package,
                           f"<= {math.floor(usable / chip.area_mm2)} ({usable:,.0f} mm2)")
        wafer = self.package.wafer
        if wafer is not None and not self.weights_resident and self.memory_capacity_bytes <= 0:
            raise fail("package.wafer.stream_buffer_bytes", "leaves no SRAM for the KV cache",
                       wafer.stream_buffer_bytes,
                       f"< {chip.sram_bytes * self.chips_per_package:,} (the wafer's SRAM)")
        if chip.hbm_stacks > 0 and self.package.substrate != "interposer":
            raise fail("package.substrate", "HBM stacks need a silicon interposer",
                       self.package.substrate, "interposer")
        if (self.system.server_bound > 1 and self.system.bw_Bps_per_chip is None
                and self.server.server_link_count == 0):
            raise fail("server.server_link_count", "several servers but no server links", 0,
                       ">= 1, or set system.bw_Bps_per_chip")
        if self.server.cooling.kind == "air" and self.server.parts.fan_w_per_lane == 0:
            raise TargetError("server.parts.fan_w_per_lane: air cooling without fans (0); "
                              "allowed > 0, or cooling.kind: liquid")

    @property
    def weights_in(self) -> str:
        """Where weights and KV cache live: "hbm" when the chip has HBM, else "sram"."""
        return "hbm" if self.chiplet.hbm_bytes > 0 else "sram"

    @property
    def weights_resident(self) -> bool:
        """False when a wafer streams its weights in from external memory (``WaferSpec``)."""
        wafer = self.package.wafer
        return wafer is None or wafer.stream_bw_Bps == 0

    @property
    def stream_bw_Bps(self) -> float:
        """Per chiplet, the bandwidth streamed weights arrive at (0: weights resident)."""
        wafer = self.package.wafer
        return 0.0 if wafer is None else wafer.stream_bw_Bps / self.chips_per_package

    @property
    def memory_capacity_bytes(self) -> int:
        """Per chiplet, the memory that holds weights and KV cache (the die's SRAM and its
        bonded layers together, when it has them); with streamed weights, the SRAM left
        for the KV cache and activations beside the stream buffer."""
        c = self.chiplet
        if self.weights_in == "hbm":
            return c.hbm_bytes
        wafer = self.package.wafer
        if not self.weights_resident and wafer is not None:
            return c.sram_bytes - wafer.stream_buffer_bytes // self.chips_per_package
        return c.sram_bytes + c.bonded_bytes

    @property
    def memory_bw_Bps(self) -> float:
        """Per chiplet, the bandwidth of ``memory_capacity_bytes``'s memory.

        With bonded layers, weights and KV cache fill the die's SRAM and the layers in
        proportion to their capacity and both are read at once, so reading them all
        takes the longer of the two: capacity / max(SRAM / its bandwidth, layers / the
        bonded face's bandwidth), never more than the two bandwidths' sum.
        """
        c = self.chiplet
        if self.weights_in == "hbm":
            return c.hbm_bw_Bps
        if c.bonded_bytes == 0:
            return c.sram_bw_Bps
        slowest_s = max(c.sram_bytes / c.sram_bw_Bps, c.bonded_bytes / c.bonded_bw_Bps)
        return (c.sram_bytes + c.bonded_bytes) / slowest_s

    @property
    def chips_per_package(self) -> int:
        return self.package.chiplets_per_package

    @property
    def packages_per_server(self) -> int:
        return self.server.packages_per_lane * self.server.lanes

    @property
    def chips_per_server(self) -> int:
        return self.chips_per_package * self.packages_per_server

    @property
    def max_servers(self) -> int:
        return self.system.server_bound

    def level(self, name: str) -> LinkLevel:
        """The link level called ``name`` ("package", "server" or "cluster")."""
        for lvl in self.link_levels():
            if lvl.name == name:
                return lvl
        raise fail("level", "unknown link level", name, "one of " + ", ".join(LEVELS))

    # A search reads the link levels and hashes the target (memo keys) for every op of
    # every design: both are computed once. Pickles carry the fields only, since a
    # string's hash differs between processes.

    def __hash__(self) -> int:
        return self._hash

    def __getstate__(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @cached_property
    def _hash(self) -> int:
        return hash(tuple(getattr(self, f.name) for f in fields(self)))

    def link_levels(self) -> tuple[LinkLevel, ...]:
        """Package, server and cluster link levels, innermost first."""
        return self._link_levels

    @cached_property
    def _link_levels(self) -> tuple[LinkLevel, ...]:
        chip, pkg, srv, sys_ = self.chiplet, self.package, self.server, self.system
        own_bw = chip.link_total_bw_Bps
        server_links_bw = srv.server_link_count * srv.server_link_bw_Bps
        return (
            LinkLevel(
                "package",
                self.chips_per_package,
                pkg.bw_Bps_per_chip if pkg.bw_Bps_per_chip is not None else own_bw,
                pkg.latency_s if pkg.latency_s is not None else chip.link_latency_s,
                pkg.topology,
            ),
            LinkLevel(
                "server",
                self.chips_per_server,
                srv.bw_Bps_per_chip if srv.bw_Bps_per_chip is not None else own_bw,
                srv.latency_s if srv.latency_s is not None else chip.link_latency_s,
                srv.topology,
            ),
            LinkLevel(
                "cluster",
                self.chips_per_server * self.max_servers,
                sys_.bw_Bps_per_chip
                if sys_.bw_Bps_per_chip is not None
                else server_links_bw / self.chips_per_server,
                sys_.latency_s if sys_.latency_s is not None else srv.server_link_latency_s,
                sys_.topology,
            ),
        )

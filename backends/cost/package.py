"""Package cost: organic substrate or silicon interposer, with bonding yields.

The model is Chiplet Actuary's (Feng and Ma, DAC 2022) as the Chiplet Cloud authors'
code applies it (chip-last assembly):

- organic substrate: area = 4 x die area; $/mm2 x a layer factor (1 for one die; for
  several dies 1.5, 1.75 above 17 x 17 mm, 2 above 30 x 30 mm); C4 bumps per mm2 of
  die; every die bonds with yield 0.99, and a failed bond scraps the whole package;
- silicon interposer: area = 1.1 x (dies + HBM stacks); a 55 nm wafer diced into
  interposers with its own negative-binomial yield; C4 bumps per mm2 of interposer;
  micro-bump bonding yield 0.95 per die or HBM stack, then 0.99 to the substrate.

Dies lost to failed bonds are charged to the package (``bonding_loss_usd``), so
``cost_usd`` is the cost of one good packaged part including its dies and HBM.
"""

from __future__ import annotations

from dataclasses import dataclass

from chipletc.ir.target import SUBSTRATES
from chipletc.ir.tech import fail, require_count, require_nonnegative, require_positive

from .die import die_yield, expected_dies_per_wafer

__all__ = ["HBM_STACK_MM2", "PackageCost", "package_cost"]

# Chiplet Actuary constants (Feng and Ma, DAC 2022; authors' code PackageConstants).
OS_AREA_FACTOR = 4.0  # organic substrate area / die area
OS_USD_PER_MM2 = 0.005
OS_LAYER_FACTORS = ((30 * 30, 2.0), (17 * 17, 1.75), (0, 1.5))  # (area above mm2, factor)
OS_BOND_YIELD = 0.99  # per die (C4 to organic substrate)
C4_USD_PER_MM2 = 0.005
SI_AREA_FACTOR = 1.1  # interposer area / (dies + HBM)
SI_WAFER_USD = 1937.0  # 55 nm wafer
SI_WAFER_DIAMETER_MM = 300.0
SI_SCRIBE_MM = 0.1  # authors' code (wafer_dicing_gap)
SI_DEFECT_DENSITY_PER_CM2 = 0.07  # authors' code si_D0 = 0.0007 /mm2
SI_ALPHA = 6.0
SI_BOND_YIELD = 0.95  # per die or HBM stack (micro-bumps)
HBM_STACK_MM2 = 7.75 * 11.87  # HBM2e footprint (authors' code)


@dataclass(frozen=True)
class PackageCost:
    """One good packaged part; the breakdown items sum to ``cost_usd``."""

    cost_usd: float
    substrate: str
    chiplets: int
    hbm_stacks: int
    area_mm2: float
    bond_yield: float
    breakdown: dict[str, float]


def _layer_factor(chiplets: int, area_mm2: float) -> float:
    if chiplets == 1:
        return 1.0
    return next(f for above, f in OS_LAYER_FACTORS if area_mm2 > above)


def package_cost(
    die_cost_usd: float,
    die_area_mm2: float,
    chiplets: int = 1,
    substrate: str = "organic",
    hbm_stacks: int = 0,
    hbm_stack_usd: float = 0.0,
) -> PackageCost:
    """Cost of one package of ``chiplets`` good dies (and ``hbm_stacks`` HBM stacks)."""
    require_nonnegative("die_cost_usd", die_cost_usd)
    require_positive("die_area_mm2", die_area_mm2)
    require_count("chiplets", chiplets)
    require_count("hbm_stacks", hbm_stacks, minimum=0)
    if substrate not in SUBSTRATES:
        raise fail("substrate", "unknown value", substrate, "one of " + ", ".join(SUBSTRATES))
    if hbm_stacks and substrate != "interposer":
        raise fail("substrate", "HBM stacks need a silicon interposer", substrate, "interposer")
    dies = chiplets * die_cost_usd
    hbm = hbm_stacks * hbm_stack_usd
    silicon_mm2 = chiplets * die_area_mm2
    if substrate == "organic":
        area = OS_AREA_FACTOR * silicon_mm2
        bond = OS_BOND_YIELD**chiplets
        items = {
            "substrate_usd": area * OS_USD_PER_MM2 * _layer_factor(chiplets, area) / bond,
            "interposer_usd": 0.0,
            "bumps_usd": silicon_mm2 * C4_USD_PER_MM2 / bond,
        }
    else:
        area = SI_AREA_FACTOR * (silicon_mm2 + hbm_stacks * HBM_STACK_MM2)
        per_wafer = expected_dies_per_wafer(area, SI_WAFER_DIAMETER_MM, SI_SCRIBE_MM)
        if per_wafer < 1:
            raise fail("interposer", "larger than a 300 mm wafer can hold", round(area, 1),
                       "fewer or smaller dies")
        si_yield = die_yield(area, SI_DEFECT_DENSITY_PER_CM2, SI_ALPHA)
        bond = SI_BOND_YIELD ** (chiplets + hbm_stacks) * OS_BOND_YIELD
        items = {
            "substrate_usd": area * OS_USD_PER_MM2 / OS_BOND_YIELD,
            "interposer_usd": SI_WAFER_USD / int(per_wafer) / si_yield / bond,
            "bumps_usd": area * C4_USD_PER_MM2 / si_yield / bond,
        }
    breakdown = {
        "dies_usd": dies,
        "hbm_usd": hbm,
        **items,
        "bonding_loss_usd": (dies + hbm) * (1 / bond - 1),
    }
    return PackageCost(
        cost_usd=sum(breakdown.values()),
        substrate=substrate,
        chiplets=chiplets,
        hbm_stacks=hbm_stacks,
        area_mm2=area,
        bond_yield=bond,
        breakdown=breakdown,
    )

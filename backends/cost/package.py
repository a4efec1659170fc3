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
``cost_usd`` is the cost of one good packaged part including its dies and HBM. The
numbers above are the defaults of ``chipletc.ir.tech.Packaging`` (sources beside each
field); a tech YAML sets its own under ``packaging:``.
"""

from __future__ import annotations

from dataclasses import dataclass

from chipletc.ir.target import SUBSTRATES
from chipletc.ir.tech import Packaging, fail, require_count, require_nonnegative, require_positive

from .die import die_yield, expected_dies_per_wafer

__all__ = ["PackageCost", "package_cost"]


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


def _layer_factor(chiplets: int, area_mm2: float, k: Packaging) -> float:
    if chiplets == 1:
        return 1.0
    if area_mm2 > 30 * 30:
        return k.organic_layer_factor_above_900mm2
    if area_mm2 > 17 * 17:
        return k.organic_layer_factor_above_289mm2
    return k.organic_layer_factor


def package_cost(
    die_cost_usd: float,
    die_area_mm2: float,
    chiplets: int = 1,
    substrate: str = "organic",
    hbm_stacks: int = 0,
    hbm_stack_usd: float = 0.0,
    *,
    packaging: Packaging,
) -> PackageCost:
    """Cost of one package of ``chiplets`` good dies (and ``hbm_stacks`` HBM stacks), with
    the constants of ``packaging`` (the tech node's)."""
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
    k = packaging
    if substrate == "organic":
        area = k.organic_area_factor * silicon_mm2
        bond = k.organic_bond_yield**chiplets
        items = {
            "substrate_usd": area * k.organic_usd_per_mm2 * _layer_factor(chiplets, area, k)
            / bond,
            "interposer_usd": 0.0,
            "bumps_usd": silicon_mm2 * k.c4_usd_per_mm2 / bond,
        }
    else:
        area = k.interposer_area_factor * (silicon_mm2 + hbm_stacks * k.hbm_stack_mm2)
        per_wafer = expected_dies_per_wafer(area, k.interposer_wafer_diameter_mm,
                                            k.interposer_scribe_mm)
        if per_wafer < 1:
            raise fail("interposer", f"larger than a {k.interposer_wafer_diameter_mm:g} mm "
                       "wafer can hold", round(area, 1), "fewer or smaller dies")
        si_yield = die_yield(area, k.interposer_defect_density_per_cm2,
                             k.interposer_cluster_alpha)
        bond = k.interposer_bond_yield ** (chiplets + hbm_stacks) * k.organic_bond_yield
        items = {
            "substrate_usd": area * k.organic_usd_per_mm2 / k.organic_bond_yield,
            "interposer_usd": k.interposer_wafer_usd / int(per_wafer) / si_yield / bond,
            "bumps_usd": area * k.c4_usd_per_mm2 / si_yield / bond,
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

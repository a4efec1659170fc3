"""Wafer-scale yield with spare cores, and the cost of one good wafer-scale engine.

A whole-wafer engine cannot throw a die away for one defect: it is built of many small
cores in ``regions`` (rows of the on-wafer mesh), each of ``cores`` working cores plus
``spares``; a region works while at most ``spares`` of its cores are defective (the
mesh routes around them), and the wafer works when every region does. A defect costs
a core, not the wafer.

Defects follow the negative-binomial model of ``die.die_yield`` read as a mixture: the
wafer's defect density is Gamma-distributed with mean D0 and shape alpha (clustering
across wafers), and given it, each core of area ``a`` is defective independently with
probability ``p = 1 - exp(-density a)``. So

    Y = E_density[ B(spares; cores + spares, p)^regions ],

B the binomial CDF. With no spares this is E[exp(-density x area)], the negative
binomial (1 + D0 A / alpha)^-alpha of the whole area: ``die_yield``, exactly. The
expectation is a Simpson sum over the Gamma density on a fine grid. Not modelled:
defects in the shared wiring between cores (they are folded into the cores' area) and
partial-region repair across rows.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from chipletc.ir.errors import TargetError
from chipletc.ir.target import Target

from .die import DieCost
from .package import PackageCost

if TYPE_CHECKING:
    import numpy as np

__all__ = ["region_yield", "spared_yield", "wafer_engine_cost"]

_GRID = 8001  # Simpson points over the Gamma density (odd)
_TAIL = 40.0  # the grid covers mean x (1 + 40 / sqrt(alpha)): far past 1e-15 of the mass


def region_yield(p: np.ndarray | float, cores: int, spares: int) -> np.ndarray:
    """P(at most ``spares`` of ``cores + spares`` cores are defective), each with
    probability ``p`` (the binomial CDF, summed term by term in log space)."""
    import numpy as np  # here, not at the top: `chipletc cost` starts without numpy

    p = np.asarray(p, dtype=float)
    n = cores + spares
    with np.errstate(divide="ignore"):
        log_p, log_q = np.log(p), np.log1p(-p)
    total = np.zeros_like(p)
    for k in range(spares + 1):
        log_c = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        term = log_c + (k * log_p if k else 0.0) + (n - k) * log_q
        total = total + np.exp(term)
    return np.minimum(total, 1.0)


def spared_yield(core_mm2: float, cores: int, spares: int, regions: int,
                 defect_density_per_cm2: float, alpha: float) -> float:
    """Yield of ``regions`` regions of ``cores`` + ``spares`` cores of ``core_mm2`` each
    (the module docstring's mixture)."""
    import numpy as np

    a_cm2 = core_mm2 / 100
    if defect_density_per_cm2 == 0:
        return 1.0
    theta = defect_density_per_cm2 / alpha  # Gamma scale: mean alpha x theta = D0
    top = alpha + _TAIL * math.sqrt(alpha)
    x = np.linspace(0.0, top, _GRID)
    with np.errstate(divide="ignore"):
        log_pdf = (alpha - 1) * np.log(x) - x - math.lgamma(alpha)
    pdf = np.exp(log_pdf)
    p = -np.expm1(-theta * x * a_cm2)
    log_region = np.log(np.maximum(region_yield(p, cores, spares), 1e-300))
    f = pdf * np.exp(regions * log_region)
    h = top / (_GRID - 1)
    weights = np.ones(_GRID)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return float(min(1.0, h / 3 * np.dot(weights, f)))


def wafer_engine_cost(target: Target) -> tuple[DieCost, PackageCost]:
    """One good wafer-scale engine of ``target`` (``package.substrate: wafer``): the
    wafer over its spared yield plus test, as a die of all its tiles, and the package
    that adds the engine's parts (``WaferSpec.engine_usd``)."""
    spec, tech = target.package.wafer, target.tech
    if spec is None:
        raise TargetError(f"package.substrate: not a wafer-scale target "
                          f"({target.package.substrate!r}); allowed wafer")
    area = target.chips_per_package * target.chiplet.area_mm2
    per_region = spec.cores_per_region + spec.spares_per_region
    y = spared_yield(area / (spec.regions * per_region), spec.cores_per_region,
                     spec.spares_per_region, spec.regions, tech.defect_density_per_cm2,
                     tech.cluster_alpha)
    silicon = tech.wafer_cost_usd / y
    test = silicon * tech.test_cost_frac
    die = DieCost(area_mm2=area, dies_per_wafer=1, yield_=y, wafer_cost_usd=tech.wafer_cost_usd,
                  silicon_usd=silicon, test_usd=test, cost_usd=silicon + test)
    breakdown = {"dies_usd": die.cost_usd, "hbm_usd": 0.0, "substrate_usd": spec.engine_usd,
                 "interposer_usd": 0.0, "bumps_usd": 0.0, "bonding_loss_usd": 0.0}
    pkg = PackageCost(cost_usd=sum(breakdown.values()), substrate="wafer",
                      chiplets=target.chips_per_package, hbm_stacks=0, area_mm2=area,
                      bond_yield=1.0, breakdown=breakdown)
    return die, pkg

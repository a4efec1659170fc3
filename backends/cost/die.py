"""Dies per wafer, yield and the cost of one good, tested die.

Dies per wafer is the closed form for the expected number of whole dies, over
uniformly random grid placements, inside the usable circle (radius r = wafer diameter /
2 - edge loss) on a square pitch a = sqrt(area) + scribe: a die fits when its centre
lies in the intersection of the four disks of radius r around the die's corners, so

    N = [pi r^2 - 4 r^2 asin(a / 2r) - 2 a sqrt(r^2 - a^2/4) + a^2] / a^2.

It matches an exact count of whole dies averaged over grid offsets to 0.2 % from 20 to
900 mm2 (tests/test_cost.py counts them). The common textbook formula,
pi (d/2)^2 / a^2 - pi d / sqrt(2 a^2), subtracts about 11 % too many edge dies and
undercounts by up to 5 % at 800 mm2, so it is not used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chipletc.ir.errors import TargetError
from chipletc.ir.tech import TechNode

__all__ = ["DieCost", "bonded_die_usd", "die_cost", "die_yield", "dies_per_wafer",
           "expected_dies_per_wafer"]


def expected_dies_per_wafer(area_mm2: float, usable_diameter_mm: float, scribe_mm: float) -> float:
    """The closed form of the module docstring, as a real number (0 when none fits)."""
    if area_mm2 <= 0:
        raise TargetError(f"area_mm2: die area must be positive ({area_mm2!r}); allowed > 0")
    a = math.sqrt(area_mm2) + scribe_mm
    r = usable_diameter_mm / 2
    if a >= r * math.sqrt(2):
        return 0.0
    eroded = math.pi * r * r - 4 * r * r * math.asin(a / (2 * r)) - 2 * a * math.sqrt(
        r * r - a * a / 4
    ) + a * a
    return max(eroded, 0.0) / (a * a)


def dies_per_wafer(area_mm2: float, tech: TechNode) -> int:
    """Whole dies of ``area_mm2`` per wafer of ``tech`` (the closed form, rounded down)."""
    return math.floor(expected_dies_per_wafer(area_mm2, tech.usable_diameter_mm, tech.scribe_mm))


def die_yield(area_mm2: float, defect_density_per_cm2: float, alpha: float) -> float:
    """Negative-binomial yield (1 + D0 A / alpha)^-alpha, A in cm2 (Chiplet Actuary)."""
    return (1 + defect_density_per_cm2 * (area_mm2 / 100) / alpha) ** -alpha


@dataclass(frozen=True)
class DieCost:
    """One good, tested die: ``cost_usd`` = wafer / (dies x yield) x (1 + test overhead)."""

    area_mm2: float
    dies_per_wafer: int
    yield_: float
    wafer_cost_usd: float
    silicon_usd: float
    test_usd: float
    cost_usd: float

    @property
    def breakdown(self) -> dict[str, float]:
        """Dollars per good die: silicon (wafer share over yield) + test = cost_usd."""
        return {"silicon_usd": self.silicon_usd, "test_usd": self.test_usd}


def die_cost(area_mm2: float, tech: TechNode) -> DieCost:
    """Cost of one good die of ``area_mm2`` in technology node ``tech``.

    A node by name ("7nm") is ``chipletc.backends.targets.load_tech``'s job: the cost
    model takes data and never reads files.
    """
    n = dies_per_wafer(area_mm2, tech)
    if n < 1:
        raise TargetError(
            f"area_mm2: no whole die fits the usable {tech.usable_diameter_mm:g} mm wafer "
            f"({area_mm2!r}); allowed <= {tech.max_reticle_mm2:g} (the {tech.name} reticle)"
        )
    y = die_yield(area_mm2, tech.defect_density_per_cm2, tech.cluster_alpha)
    silicon = tech.wafer_cost_usd / (n * y)
    test = silicon * tech.test_cost_frac
    return DieCost(
        area_mm2=area_mm2,
        dies_per_wafer=n,
        yield_=y,
        wafer_cost_usd=tech.wafer_cost_usd,
        silicon_usd=silicon,
        test_usd=test,
        cost_usd=silicon + test,
    )


def bonded_die_usd(die_usd: float, layers: int, bond_yield: float) -> float:
    """One good logic die of ``die_usd`` with ``layers`` SRAM layers hybrid-bonded on it.

    A layer is an SRAM die of the same node and area, so it costs what the logic die
    costs (``die_cost`` of the same area); each bond succeeds with ``bond_yield`` and a
    failed one scraps the stack, so the good stack costs (1 + layers) dies over
    ``bond_yield ** layers``. 0 layers: ``die_usd``.
    """
    return die_usd * (1 + layers) / bond_yield**layers

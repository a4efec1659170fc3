"""Total cost of ownership of one server, and its cost per second.

Owned hardware (the Chiplet Cloud authors' code, after ASIC Clouds): for a server
of cost C and wall power P over a life of L years,

    TCO = C + I(C, r_srv, L) + opex_frac C
        + P [capex_W L / T_dc + I(capex_W, r_dc, T_dc) L / T_dc + opex_W_month 12 L
             + price_kWh / 1000 x HOURS_PER_YEAR x L x PUE],

with the monthly-amortized loan interest I(B, r, T) = B (m (1+m)^N / ((1+m)^N - 1) N - 1),
m = r / 12, N = 12 T. The year is 12 months of 30 days (``HOURS_PER_YEAR`` = 8640 h), as
in the reference formula's electricity term; life seconds use the same year, so the
electricity share of the cost per second is exactly P x PUE x the kWh price.

Each per-watt item is charged at the power ``Economics.power_basis`` names: TDP, or the
run's simulated average wall power (``energy.average_server_power_w``), or TDP for the
datacentre and the average for electricity. Rented hardware costs its hourly rent.
``cost_rate_usd_per_s`` is the one place a server's dollars per second are computed;
the partitioner multiplies it by servers and divides by tokens per second. Nothing
here divides by batch.
"""

from __future__ import annotations

from chipletc.ir.target import Target
from chipletc.ir.tech import Economics, PowerBasis

from .server import server_cost, server_power

__all__ = [
    "HOURS_PER_YEAR",
    "cost_rate_usd_per_s",
    "life_seconds",
    "loan_interest",
    "owned_cost_rate_usd_per_s",
    "rent_usd",
    "server_energy_J_per_s",
    "server_tco",
    "tco_breakdown",
    "tco_power_w",
]

HOURS_PER_YEAR = 24 * 30 * 12


def loan_interest(principal_usd: float, annual_rate: float, years: float) -> float:
    """Interest paid on ``principal_usd`` repaid monthly over ``years``."""
    if annual_rate == 0:
        return 0.0
    m = annual_rate / 12
    n = 12 * years
    growth = (1 + m) ** n
    return principal_usd * (m * growth / (growth - 1) * n - 1)


def life_seconds(economics: Economics) -> float:
    return economics.server_life_years * HOURS_PER_YEAR * 3600


def tco_power_w(
    power_w: float, economics: Economics, average_power_w: float | None
) -> tuple[float, float]:
    """(datacentre watts, electricity watts) charged under ``economics.power_basis``:
    ``power_w`` is the server's wall power at TDP, ``average_power_w`` over the run."""
    basis = economics.power_basis
    if basis is PowerBasis.TDP:
        return power_w, power_w
    if average_power_w is None:
        raise ValueError(f"power_basis {basis.value} needs the run's average power")
    if basis is PowerBasis.SPLIT:
        return power_w, average_power_w
    return average_power_w, average_power_w


def tco_breakdown(
    cost_usd: float, power_w: float, economics: Economics, average_power_w: float | None = None
) -> dict[str, float]:
    """Owned-hardware TCO items over the server's life; they sum to ``server_tco``."""
    e = economics
    life = e.server_life_years
    share = life / e.dc_amortization_years
    dc_w, energy_w = tco_power_w(power_w, e, average_power_w)
    return {
        "server_capex_usd": cost_usd,
        "server_interest_usd": loan_interest(cost_usd, e.server_interest_rate, life),
        "server_opex_usd": e.server_opex_frac * cost_usd,
        "dc_capex_usd": dc_w * e.dc_capex_usd_per_W * share,
        "dc_interest_usd": dc_w
        * loan_interest(e.dc_capex_usd_per_W, e.dc_interest_rate, e.dc_amortization_years)
        * share,
        "dc_opex_usd": dc_w * e.dc_opex_usd_per_W_month * 12 * life,
        "electricity_usd": energy_w / 1000 * e.electricity_usd_per_kWh * HOURS_PER_YEAR * life
        * e.pue,
    }


def server_tco(
    cost_usd: float, power_w: float, economics: Economics, average_power_w: float | None = None
) -> float:
    """Dollars to own and run one server of ``cost_usd`` and ``power_w`` over its life.

    >>> round(server_tco(10_000, 1_000, Economics()), 2)
    15116.15
    """
    return sum(tco_breakdown(cost_usd, power_w, economics, average_power_w).values())


def rent_usd(economics: Economics, hours: float) -> float:
    """Rent of one server for ``hours``."""
    if economics.rent_usd_per_hour is None:
        raise ValueError("rent_usd: economics describe owned hardware (no rent_usd_per_hour)")
    return economics.rent_usd_per_hour * hours


def owned_cost_rate_usd_per_s(
    cost_usd: float, power_w: float, economics: Economics, average_power_w: float | None = None
) -> float:
    """Dollars per second to own and run one server: its TCO over its life seconds."""
    return server_tco(cost_usd, power_w, economics, average_power_w) / life_seconds(economics)


def cost_rate_usd_per_s(target: Target, average_power_w: float | None = None) -> float:
    """Dollars per second of ONE server: rent / 3600, or owned TCO / life seconds
    (``average_power_w``: the server's average wall power over the run, which a
    ``power_basis`` other than tdp needs)."""
    econ = target.economics
    if econ.rent_usd_per_hour is not None:
        return econ.rent_usd_per_hour / 3600
    sc = server_cost(target)
    return owned_cost_rate_usd_per_s(sc.cost_usd, sc.power_w, econ, average_power_w)


def server_energy_J_per_s(target: Target, *, facility: bool = False) -> float:
    """Energy one server draws per second at TDP: wall power, times PUE if ``facility``."""
    wall = sum(server_power(target).values())
    return wall * target.economics.pue if facility else wall

"""What generated tokens cost: ``TokenCost`` and ``cost_per_1k_tokens``.

The only place a token's cost is computed: servers x dollars per server-second
(``tco.cost_rate_usd_per_s``), divided by generated tokens per second (throughput
already counts the batch) times the share of time they serve (``utilization``). Energy
is the servers' wall power at TDP over the serving time, and beside it at the run's
simulated average power when that is known (``energy.average_server_power_w``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chipletc.ir.target import Target

from .server import server_cost
from .tco import cost_rate_usd_per_s, life_seconds, server_energy_J_per_s, tco_breakdown

__all__ = ["TokenCost", "cost_per_1k_tokens"]


@dataclass(frozen=True)
class TokenCost:
    """Dollars and joules per 1K generated tokens on ``num_servers`` servers.

    Field names are the keys of ``to_dict`` (compile's JSON summary and plan.json).
    ``breakdown_per_1k_tokens_usd`` sums to ``tco_per_1k_tokens_usd``: the rent, or the
    owned-hardware TCO items of ``tco.tco_breakdown``. ``server_cost_usd`` and
    ``server_power_w`` (at TDP) are None for rented hardware; ``average_power_w`` and
    ``average_energy_per_1k_tokens_J`` are None when the run's utilisation is unknown.
    """

    tco_per_1k_tokens_usd: float
    usd_per_server_hour: float
    num_servers: int
    energy_per_1k_tokens_J: float
    breakdown_per_1k_tokens_usd: Mapping[str, float] = field(hash=False)
    power_basis: str = "tdp"
    server_cost_usd: float | None = None
    server_power_w: float | None = None
    average_power_w: float | None = None
    average_energy_per_1k_tokens_J: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data in a fixed key order (the server's bill only when owned)."""
        out: dict[str, Any] = {
            "tco_per_1k_tokens_usd": self.tco_per_1k_tokens_usd,
            "usd_per_server_hour": self.usd_per_server_hour,
            "num_servers": self.num_servers,
            "energy_per_1k_tokens_J": self.energy_per_1k_tokens_J,
        }
        if self.average_power_w is not None:
            out["average_energy_per_1k_tokens_J"] = self.average_energy_per_1k_tokens_J
            out["average_power_w"] = self.average_power_w
        if self.server_cost_usd is not None:
            out["power_basis"] = self.power_basis
            out["server_cost_usd"] = self.server_cost_usd
            out["server_power_w"] = self.server_power_w
        out["breakdown_per_1k_tokens_usd"] = dict(self.breakdown_per_1k_tokens_usd)
        return out


def cost_per_1k_tokens(
    target: Target, num_servers: int, tokens_per_s: float, average_power_w: float | None = None
) -> TokenCost:
    """Dollars and joules per 1K generated tokens, with the dollars broken down.

    ``average_power_w`` is one server's average wall power over the run
    (``energy.average_server_power_w``); a ``power_basis`` other than tdp needs it.
    """
    econ = target.economics
    rate = cost_rate_usd_per_s(target, average_power_w)
    serving_s_per_1k = 1000.0 / tokens_per_s
    seconds_per_1k = serving_s_per_1k / econ.utilization
    usd = num_servers * rate * seconds_per_1k
    common: dict[str, Any] = {
        "tco_per_1k_tokens_usd": usd,
        "usd_per_server_hour": rate * 3600,
        "num_servers": num_servers,
        "energy_per_1k_tokens_J": num_servers * server_energy_J_per_s(target) * serving_s_per_1k,
        "power_basis": econ.power_basis.value,
        "average_power_w": average_power_w,
        "average_energy_per_1k_tokens_J": None if average_power_w is None
        else num_servers * average_power_w * serving_s_per_1k,
    }
    if econ.rent_usd_per_hour is not None:
        return TokenCost(**common, breakdown_per_1k_tokens_usd={"rent_usd": usd})
    sc = server_cost(target)
    life = life_seconds(econ)
    items = tco_breakdown(sc.cost_usd, sc.power_w, econ, average_power_w)
    return TokenCost(
        **common,
        breakdown_per_1k_tokens_usd={
            k: num_servers * v / life * seconds_per_1k for k, v in items.items()
        },
        server_cost_usd=sc.cost_usd,
        server_power_w=sc.power_w,
    )

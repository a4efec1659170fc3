"""The cost model: die, package, server bill, wall power, thermal budget and TCO.

Pure functions of ``chipletc.ir`` data; every figure comes with its breakdown. See
each module's docstring for its model and sources (docs/model.md, docs/constants.md).
"""

from .die import DieCost, die_cost, die_yield, dies_per_wafer, expected_dies_per_wafer
from .energy import HBM_J_PER_B, SRAM_J_PER_B, average_server_power_w, chip_power_parts_w
from .package import PackageCost, package_cost
from .per_token import TokenCost, cost_per_1k_tokens
from .report import assumptions, cost_report
from .server import (
    LimitViolation,
    ServerCost,
    ThermalReport,
    require_within_limits,
    server_cost,
    server_power,
    thermal_check,
)
from .tco import (
    HOURS_PER_YEAR,
    cost_rate_usd_per_s,
    life_seconds,
    loan_interest,
    owned_cost_rate_usd_per_s,
    rent_usd,
    server_energy_J_per_s,
    server_tco,
    tco_breakdown,
    tco_power_w,
)
from .wafer import region_yield, spared_yield, wafer_engine_cost

__all__ = [
    "HBM_J_PER_B",
    "HOURS_PER_YEAR",
    "SRAM_J_PER_B",
    "DieCost",
    "LimitViolation",
    "PackageCost",
    "ServerCost",
    "ThermalReport",
    "TokenCost",
    "assumptions",
    "average_server_power_w",
    "chip_power_parts_w",
    "cost_per_1k_tokens",
    "cost_rate_usd_per_s",
    "cost_report",
    "die_cost",
    "die_yield",
    "dies_per_wafer",
    "expected_dies_per_wafer",
    "life_seconds",
    "loan_interest",
    "owned_cost_rate_usd_per_s",
    "package_cost",
    "region_yield",
    "rent_usd",
    "require_within_limits",
    "server_cost",
    "server_energy_J_per_s",
    "server_power",
    "server_tco",
    "spared_yield",
    "tco_breakdown",
    "tco_power_w",
    "thermal_check",
    "wafer_engine_cost",
]

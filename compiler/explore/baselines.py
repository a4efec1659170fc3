"""Rented GPU and TPU clouds beside the chiplet designs, with user-overridable numbers.

Each baseline preset is mapped like a design (``run.map_model``: the optimal mapping
under the same options, its simulated throughput, ``cost_per_1k_tokens`` at the
preset's rent). An override replaces the two numbers the public debate about the
paper's 94x turns on, both **per chip** (per GPU or TPU chip), the way they are quoted:
the rent per chip-hour (the presets rent whole servers, so it is multiplied by the
chips of a server) and the achieved generated tokens per second per chip (multiplied
by the chips of the servers the mapping uses). ``a100:price=0.87,tokens_per_s=211``
is the public critique's A100 (docs/constants.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chipletc.backends.cost import cost_per_1k_tokens
from chipletc.backends.targets import load_target
from chipletc.compiler.partition import SearchOptions
from chipletc.compiler.partition.problem import ProblemBuilder
from chipletc.ir.errors import UsageError
from chipletc.ir.graph import Graph
from chipletc.ir.target import Target

from .run import map_model

__all__ = ["BASELINES", "EXPLORE_BASELINES", "BaselineOverride", "baseline_name",
           "baseline_rows", "override_row", "parse_override"]

BASELINES = {
    "a100": "a100-80gb-x8",
    "h100": "h100-x8",
    "h200": "h200-x8",
    "tpu-v4": "tpu-v4",
    "rtx4090": "rtx4090-x8",
    "l40s": "l40s-x8",
    "mi300x": "mi300x-x8",
    "b200": "b200-x8",
    "tpu-v5e": "tpu-v5e",
}
"""Short name -> rented target preset."""
EXPLORE_BASELINES = ("a100", "h100", "h200", "tpu-v4")
"""The baselines explore puts beside its designs unless told otherwise."""

_FIELDS = {"price": "usd_per_chip_hour", "tokens_per_s": "tokens_per_s_per_chip"}
# Upper bounds far past any real chip, so the factors stay finite (1e400 is inf): a
# whole server's rent limit (``Economics.rent_usd_per_hour``) per chip-hour, and twice
# what a chip at ``ChipletSpec``'s 1e18 FLOP/s limit reaches on a 1-billion-parameter
# model (2e9 FLOPs a token: 5e8 tokens/s).
_HIGH = {"price": 1e6, "tokens_per_s": 1e9}


@dataclass(frozen=True)
class BaselineOverride:
    name: str
    usd_per_chip_hour: float | None = None
    tokens_per_s_per_chip: float | None = None


def baseline_name(text: str) -> str:
    """The baseline a ``--baseline`` word names (``a100`` of ``a100:price=0.87``), one of
    ``BASELINES``."""
    name = text.partition(":")[0]
    if name not in BASELINES:
        raise UsageError(f"--baseline {text}: unknown baseline ({name!r}); use one of "
                         f"{', '.join(BASELINES)}")
    return name


def parse_override(text: str) -> BaselineOverride:
    """``"a100:price=0.87,tokens_per_s=211"`` -> an override (price per chip-hour)."""
    where = f"--baseline {text}"
    name = baseline_name(text)
    _, sep, rest = text.partition(":")
    values: dict[str, float] = {}
    for item in filter(None, rest.split(",")) if sep else ():
        key, eq, raw = item.partition("=")
        if key not in _FIELDS or not eq:
            raise UsageError(f"{where}: bad item ({item!r}); use price=USD_PER_CHIP_HOUR "
                             "and/or tokens_per_s=PER_CHIP")
        try:
            value = float(raw)
        except ValueError:
            raise UsageError(f"--baseline {name}:{key}: must be a number ({raw!r})") from None
        if not (math.isfinite(value) and value > 0):
            raise UsageError(f"--baseline {name}:{key}: must be a finite positive number "
                             f"({raw!r})")
        if value > _HIGH[key]:
            raise UsageError(f"--baseline {name}:{key}: too large ({raw!r}); allowed <= "
                             f"{_HIGH[key]:,g}")
        values[_FIELDS[key]] = value
    if not values:
        raise UsageError(f"{where}: nothing to override; e.g. a100:price=0.87,tokens_per_s=211")
    return BaselineOverride(name, **values)


def baseline_rows(
    graph: Graph,
    options: SearchOptions,
    overrides: Sequence[BaselineOverride] = (),
    names: Sequence[str] = EXPLORE_BASELINES,
) -> list[dict[str, Any]]:
    """One row per baseline: simulated figures at the preset's rent, then any override."""
    by_name = {o.name: o for o in overrides}
    builder = ProblemBuilder(graph, options)
    rows = []
    for name in names:
        target = load_target(BASELINES[name])
        row: dict[str, Any] = {"model": graph.info.name, "baseline": name,
                               "target": target.name, "source": "simulated"}
        row.update(map_model(graph, builder, target))
        chips_per_server = target.chips_per_server
        rent = target.economics.rent_usd_per_hour
        row["usd_per_chip_hour"] = None if rent is None else rent / chips_per_server
        if row["status"] == "ok":
            row["tokens_per_s_per_chip"] = row["tokens_per_s"] / (
                row["servers"] * chips_per_server)
        rows.append(row)
        override = by_name.get(name)
        if override is not None and row["status"] == "ok":
            rows.append(override_row(target, row, override))
    return rows


def override_row(target: Target, row: dict[str, Any], override: BaselineOverride) -> dict[str, Any]:
    """The baseline ``row`` (its preset ``target``'s mapping and servers) at the price
    and per-chip throughput ``override`` gives, the others kept."""
    chips_per_server = target.chips_per_server
    price = override.usd_per_chip_hour or row["usd_per_chip_hour"]
    per_chip = override.tokens_per_s_per_chip or row["tokens_per_s_per_chip"]
    rented = dataclasses.replace(target, economics=dataclasses.replace(
        target.economics, rent_usd_per_hour=price * chips_per_server))
    tokens_per_s = per_chip * row["servers"] * chips_per_server
    cost = cost_per_1k_tokens(rented, row["servers"], tokens_per_s)
    return {
        **{k: v for k, v in row.items() if not k.startswith("average_")},  # no run measured
        "source": "override",
        "usd_per_chip_hour": price,
        "tokens_per_s_per_chip": per_chip,
        "tokens_per_s": tokens_per_s,
        "usd_per_1k_tokens": cost.tco_per_1k_tokens_usd,
        "J_per_1k_tokens": None,
    }

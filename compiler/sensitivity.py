"""Which assumption moves the answer most: one-at-a-time sensitivity of $ per 1K tokens.

Each assumption (a ``Knob``) is set to the low and the high end of its range while all
others keep the target's values; at every point the mapping is solved again (a cheaper
or denser chip may change the best tp/pp/batch: ``explore.map_model``, compile's
optimum) and the design's $ per 1K tokens is compared with each rented baseline's. The
knobs are sorted by how far they move the ratio to the first baseline. Where the ratio
crosses 1 inside a knob's wider search bracket, the crossing (the break-even value) is
found by bisection, re-solving at every step.

Design knobs change the chiplet target: the wafer price and defect density of its
node, its SRAM and MAC densities and W/TOPS (which rebuild a ``by_area`` or
``by_performance`` chiplet, so they apply to targets defined that way), the economics
and the efficiency factors. Baseline knobs change one baseline: its rent per chip-hour
and its generated tokens/s per chip (the two numbers the public debate about the
paper's 94x turns on), over the ranges ``baseline_knobs`` states.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chipletc.backends.cost import require_within_limits
from chipletc.backends.targets import load_target
from chipletc.compiler.explore.baselines import (
    BASELINES,
    BaselineOverride,
    baseline_name,
    override_row,
    parse_override,
)
from chipletc.compiler.explore.run import map_model
from chipletc.compiler.partition import SearchOptions
from chipletc.compiler.partition.problem import ProblemBuilder
from chipletc.ir.errors import InfeasibleError, TargetError
from chipletc.ir.graph import Graph
from chipletc.ir.target import Target

__all__ = ["BREAK_EVEN_STATUSES", "Knob", "SensitivityResult", "baseline_knobs",
           "design_knobs", "mapping_text", "parse_baselines", "sensitivity", "tornado_png"]

BISECTION_STEPS = 20
"""Bisection steps for a break-even value: the bracket shrinks a million-fold."""

# Published A100 throughputs for GPT-3 175B, per GPU (docs/constants.md): the paper's
# baseline (Chiplet Cloud, arXiv 2307.02666) and DeepSpeed-Inference's, which the public
# critique of the paper quotes. They bound the A100's throughput knob on that model only.
A100_GPT3_TOKENS_PER_S = (18.0, 211.0)
A100_GPT3_MODEL = "gpt3-175b"
BREAK_EVEN_STATUSES = ("found", "one side", "no fit in bracket")
"""A break-even search's outcome: the ratio crosses 1 at the value found; it stays on
one side of 1 wherever the design fits; or it crosses 1 across values where nothing fits
(a bisection step found no mapping), so there is no single value to give."""


@dataclass(frozen=True)
class Knob:
    """One assumption: its value in the target, the range it is varied over, and the
    wider bracket a break-even value is looked for in. ``side`` is "design" or the
    baseline it belongs to."""

    name: str
    label: str
    unit: str
    side: str
    value: float
    low: float
    high: float
    bracket: tuple[float, float]


@dataclass(frozen=True)
class SensitivityResult:
    model: str
    target: str
    options: SearchOptions
    base: dict[str, Any]  # the design's and each baseline's $ per 1K tokens at the base point
    rows: tuple[dict[str, Any], ...]  # one per knob, by impact, largest first

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "target": self.target,
            "workload": {"prompt_len": self.options.prompt_len,
                         "gen_len": self.options.gen_len},
            "base": self.base,
            "knobs": list(self.rows),
        }


def _scaled(value: float, low: float, high: float, floor: float = 0.0,
            ceiling: float = float("inf")) -> tuple[float, float, tuple[float, float]]:
    """(low, high, bracket) as factors of ``value``: the range x low..x high, the bracket
    ten times wider on each side, clipped to [floor, ceiling]."""
    clip = lambda x: min(ceiling, max(floor, x))  # noqa: E731
    return (clip(value * low), clip(value * high),
            (clip(value * low / 10), clip(value * high * 10)))


def design_knobs(target: Target) -> list[Knob]:
    """The design-side assumptions of ``target`` with their ranges.

    Factor ranges (x0.5 to x2) where no published spread is at hand; absolute ranges
    where one is: server life 1-5 years (the authors' 1.5 years against the 4-6 years
    clouds depreciate servers over), interest 0-15 %, electricity $0.03-0.20 per kWh
    (US industrial to European retail), PUE 1.1 (hyperscale) to 2.0, datacentre capex
    $5-20 per W, efficiency factors 0.5-1, utilization 0.3-1.
    """
    t, e, f = target.tech, target.economics, target.efficiency
    knobs = [] if e.rented else [  # a rent replaces what the silicon costs
        Knob("wafer_cost_usd", "wafer price", "$", "design", t.wafer_cost_usd,
             *_scaled(t.wafer_cost_usd, 0.5, 2.0, ceiling=1e6)),
        Knob("defect_density_per_cm2", "defect density", "/cm2", "design",
             t.defect_density_per_cm2, *_scaled(t.defect_density_per_cm2, 0.5, 2.0, ceiling=100)),
    ]
    if target.weights_in == "sram":
        knobs += [
            Knob("sram_mm2_per_MiB", "SRAM density", "mm2/MiB", "design", t.sram_mm2_per_MiB,
                 *_scaled(t.sram_mm2_per_MiB, 0.5, 2.0, floor=1e-3, ceiling=1e3)),
            Knob("mac_mm2_per_TOPS", "MAC density", "mm2/TOPS", "design", t.mac_mm2_per_TOPS,
                 *_scaled(t.mac_mm2_per_TOPS, 0.5, 2.0, floor=1e-3, ceiling=1e4)),
            Knob("w_per_TOPS", "power per TOPS", "W/TOPS", "design", t.w_per_TOPS,
                 *_scaled(t.w_per_TOPS, 0.5, 2.0, floor=1e-3, ceiling=1e3)),
        ]
    if not e.rented:
        knobs += [
            Knob("server_life_years", "server life", "years", "design", e.server_life_years,
                 1.0, 5.0, (0.25, 20.0)),
            Knob("interest_rate", "interest (server and DC)", "/year", "design",
                 e.server_interest_rate, 0.0, 0.15, (0.0, 1.0)),
            Knob("electricity_usd_per_kWh", "electricity price", "$/kWh", "design",
                 e.electricity_usd_per_kWh, 0.03, 0.20, (0.0, 2.0)),
            Knob("pue", "PUE", "", "design", e.pue, 1.1, 2.0, (1.0, 10.0)),
            Knob("dc_capex_usd_per_W", "datacentre capex", "$/W", "design",
                 e.dc_capex_usd_per_W, 5.0, 20.0, (0.0, 200.0)),
        ]
    else:
        knobs.append(Knob("rent_usd_per_hour", "rent", "$/server-hour", "design",
                          e.rent_usd_per_hour or 0.0,
                          *_scaled(e.rent_usd_per_hour or 0.0, 0.5, 2.0, floor=1e-6)))
    knobs += [
        Knob("utilization", "utilization", "", "design", e.utilization, 0.3, 1.0, (0.01, 1.0)),
        Knob("efficiency.compute", "compute efficiency", "", "design", f.compute, 0.5, 1.0,
             (0.05, 1.0)),
        Knob("efficiency.memory", "memory efficiency", "", "design", f.memory, 0.5, 1.0,
             (0.05, 1.0)),
    ]
    return knobs


def baseline_knobs(name: str, row: dict[str, Any]) -> list[Knob]:
    """The rent and the throughput of the baseline ``row`` (``baseline_rows``' row: the
    simulated one, or the override's), each x0.5 to x2 around the row's value, except
    the A100's simulated throughput on GPT-3 175B, which spans the published pair
    (``A100_GPT3_TOKENS_PER_S``): the spread those figures are quoted over is that
    model's, and an override states its own value to vary around."""
    price, per_chip = row["usd_per_chip_hour"], row["tokens_per_s_per_chip"]
    low, high, bracket = _scaled(per_chip, 0.5, 2.0, floor=1e-6)
    if name == "a100" and row["model"] == A100_GPT3_MODEL and row["source"] == "simulated":
        low, high = A100_GPT3_TOKENS_PER_S
    return [
        Knob("price", f"{name} rent", "$/chip-hour", name, price,
             *_scaled(price, 0.5, 2.0, floor=1e-6)),
        Knob("tokens_per_s", f"{name} throughput", "tokens/s/chip", name, per_chip,
             low, high, bracket),
    ]


class _Evaluator:
    """The design's $ per 1K tokens at a knob's value, with the mapping re-solved."""

    def __init__(self, graph: Graph, target_spec: str, target: Target,
                 options: SearchOptions) -> None:
        self.graph = graph
        self.spec = target_spec
        self.target = target
        self.builder = ProblemBuilder(graph, options)
        self.options = options

    def target_at(self, knob: Knob, value: float) -> Target:
        t = self.target
        section, _, field = knob.name.rpartition(".")
        if section == "efficiency":
            return dataclasses.replace(t, efficiency=dataclasses.replace(
                t.efficiency, **{field: value}))
        if knob.name in ("wafer_cost_usd", "defect_density_per_cm2"):
            return dataclasses.replace(t, tech=dataclasses.replace(t.tech, **{field: value}))
        if knob.name in ("sram_mm2_per_MiB", "mac_mm2_per_TOPS", "w_per_TOPS"):
            return dataclasses.replace(
                load_target(self.spec, {"tech": {knob.name: value}}), economics=t.economics)
        econ = {"interest_rate": {"server_interest_rate": value, "dc_interest_rate": value}}
        return dataclasses.replace(t, economics=dataclasses.replace(
            t.economics, **econ.get(knob.name, {knob.name: value})))

    def row(self, target: Target) -> dict[str, Any]:
        return map_model(self.graph, self.builder, target)


def mapping_text(row: dict[str, Any]) -> str:
    """A solved row's mapping in a few characters ("tp 32 x pp 96, batch 32, 24 servers"),
    or its status when nothing fits."""
    if row["status"] != "ok":
        return row["status"]
    return (f"tp {row['tp']} x pp {row['pp']}, batch {row['batch']}, "
            f"{row['servers']} servers")


def _baseline_usd(target: Target, row: dict[str, Any], knob: Knob, value: float) -> float:
    over = BaselineOverride(knob.side, **{
        "price": {"usd_per_chip_hour": value},
        "tokens_per_s": {"tokens_per_s_per_chip": value},
    }[knob.name])
    return override_row(target, row, over)["usd_per_1k_tokens"]


def sensitivity(
    graph: Graph,
    target_spec: str,
    target: Target,
    options: SearchOptions,
    baselines: Sequence[dict[str, Any]],
) -> SensitivityResult:
    """Vary every knob of ``target`` (loaded from ``target_spec``, its economics perhaps
    overridden) and of each baseline row (``baseline_rows``: the simulated rows and any
    override rows; the last row of each baseline is its base)."""
    ev = _Evaluator(graph, target_spec, target, options)
    base_row = ev.row(ev.target)
    if base_row["status"] != "ok":
        raise InfeasibleError(f"sensitivity: {graph.info.name} does not fit {ev.target.name} "
                              f"at the base point ({base_row['status']}); see chipletc compile")
    design_usd = base_row["usd_per_1k_tokens"]
    base_mapping = mapping_text(base_row)
    rows_by_name: dict[str, dict[str, Any]] = {}
    for row in baselines:
        if row["status"] == "ok":
            rows_by_name[row["baseline"]] = row  # an override row follows and wins
    names = list(rows_by_name)
    targets = {n: load_target(BASELINES[n]) for n in names}
    base_usd = {n: r["usd_per_1k_tokens"] for n, r in rows_by_name.items()}

    def ratios(design: float | None, baseline: dict[str, float]) -> dict[str, float | None]:
        return {n: None if design is None else baseline[n] / design for n in names}

    mappings: dict[tuple[str, float], str] = {}
    points: dict[tuple[str, str, float], tuple[float | None, dict[str, float | None]]] = {}

    def point(knob: Knob, value: float) -> tuple[float | None, dict[str, float | None]]:
        key = (knob.side, knob.name, value)
        if key not in points:
            points[key] = solve(knob, value)
        return points[key]

    def solve(knob: Knob, value: float) -> tuple[float | None, dict[str, float | None]]:
        if knob.side == "design":
            try:  # a chip past the die, thermal or power limits is no design (compile refuses it)
                target = ev.target_at(knob, value)
                require_within_limits(target)
            except TargetError:
                mappings[knob.name, value] = "past a physical limit"
                return None, ratios(None, base_usd)
            row = ev.row(target)
            mappings[knob.name, value] = mapping_text(row)
            usd = row["usd_per_1k_tokens"] if row["status"] == "ok" else None
            return usd, ratios(usd, base_usd)
        moved = {**base_usd, knob.side: _baseline_usd(
            targets[knob.side], rows_by_name[knob.side], knob, value)}
        return design_usd, ratios(design_usd, moved)

    knobs = design_knobs(ev.target)
    for n in names:
        knobs += baseline_knobs(n, rows_by_name[n])
    out = []
    for knob in knobs:
        lo_usd, lo_ratio = point(knob, knob.low)
        hi_usd, hi_ratio = point(knob, knob.high)
        entry: dict[str, Any] = {
            "name": knob.name, "label": knob.label, "unit": knob.unit, "side": knob.side,
            "value": knob.value, "low": knob.low, "high": knob.high,
            "usd_per_1k_tokens": {"low": lo_usd, "high": hi_usd},
            "mapping": {"low": mappings.get((knob.name, knob.low), base_mapping),
                        "high": mappings.get((knob.name, knob.high), base_mapping)},
            "ratio": {n: {"low": lo_ratio[n], "high": hi_ratio[n]} for n in names},
        }
        searched = {n: _break_even(knob, n, point) for n in names
                    if knob.side in ("design", n)}
        entry["break_even"] = {n: value for n, (value, _) in searched.items()}
        entry["break_even_status"] = {n: status for n, (_, status) in searched.items()}
        # the spread of the ratio to the first baseline (or of $, relative) over the ends
        # that map and the base point; an end past a limit or without a mapping is left
        # out (the table says "no fit")
        first = names[0] if names else None
        if first is not None:
            ends = [r for r in (lo_ratio[first], hi_ratio[first], base_usd[first] / design_usd)
                    if r is not None]
            entry["impact"] = max(ends) - min(ends)
        else:
            ends = [u / design_usd for u in (lo_usd, hi_usd, design_usd) if u is not None]
            entry["impact"] = max(ends) - min(ends)
        out.append(entry)
    out.sort(key=lambda e: (-e["impact"], e["side"], e["name"]))
    base = {"design_usd_per_1k_tokens": design_usd,
            "mapping": base_mapping,
            "baselines": {n: {"usd_per_1k_tokens": base_usd[n],
                              "usd_per_chip_hour": rows_by_name[n]["usd_per_chip_hour"],
                              "tokens_per_s_per_chip": rows_by_name[n]["tokens_per_s_per_chip"],
                              "ratio": base_usd[n] / design_usd} for n in names}}
    return SensitivityResult(graph.info.name, ev.target.name, options, base, tuple(out))


def _break_even(
    knob: Knob, baseline: str,
    point: Callable[[Knob, float], tuple[float | None, dict[str, float | None]]],
) -> tuple[float | None, str]:
    """(the knob's value in its bracket where the ratio to ``baseline`` is 1, "found"),
    or (None, the reason: ``BREAK_EVEN_STATUSES``). The bracket's ends, the range's
    ends and the target's value are tried in order; the first pair of neighbours on
    either side of 1 is bisected."""

    def gap(x: float) -> float | None:
        r = point(knob, x)[1][baseline]
        return None if r is None else r - 1.0

    xs = sorted({knob.bracket[0], knob.low, knob.value, knob.high, knob.bracket[1]})
    known = [(x, g) for x in xs if (g := gap(x)) is not None]
    pairs = [(a, b) for a, b in itertools.pairwise(known) if a[1] * b[1] <= 0]
    if not pairs:
        return None, "one side"
    (a, ga), (b, _) = pairs[0]
    for _ in range(BISECTION_STEPS):
        mid = (a + b) / 2
        gm = gap(mid)
        if gm is None:
            return None, "no fit in bracket"
        if ga * gm <= 0:
            b = mid
        else:
            a, ga = mid, gm
    return (a + b) / 2, "found"


def parse_baselines(texts: Sequence[str]) -> tuple[list[str], list[BaselineOverride]]:
    """``--baseline`` words: a name (``a100``) or an override (``a100:price=0.87``)."""
    names, overrides = [], []
    for text in texts:
        name = baseline_name(text)
        if name not in names:
            names.append(name)
        if ":" in text:
            overrides.append(parse_override(text))
    return names, overrides


def tornado_png(result: SensitivityResult) -> bytes:
    """The tornado chart: per knob, the ratio to the first baseline (or, without one,
    the design's $ per 1K tokens) at the low and the high end, largest swing on top."""
    from chipletc.backends.emit.png import new_figure, png_bytes

    names = list(result.base["baselines"])
    first = names[0] if names else None
    if first is not None:
        centre = result.base["baselines"][first]["ratio"]
        xlabel = f"{first} $ per 1K tokens / design's (> 1: the design is cheaper)"
    else:
        centre = result.base["design_usd_per_1k_tokens"]
        xlabel = "design's $ per 1K generated tokens"
    rows = list(reversed(result.rows))
    fig = new_figure(8.0, 0.35 * len(rows) + 1.5)
    ax = fig.subplots()
    for y, row in enumerate(rows):
        ends = row["ratio"][first] if first is not None else row["usd_per_1k_tokens"]
        for end, colour in (("low", "tab:blue"), ("high", "tab:orange")):
            value = ends[end]
            if value is None:
                continue
            ax.barh(y, value - centre, left=centre, color=colour, height=0.6,
                    label=f"{end} end" if y == 0 else None)
    ax.set_yticks(range(len(rows)), [f"{r['label']} ({_fmt(r['low'])}..{_fmt(r['high'])})"
                                     for r in rows], fontsize="small")
    ax.axvline(centre, color="black", linewidth=0.8)
    if first is not None:
        ax.axvline(1.0, color="tab:red", linestyle="--", linewidth=0.8, label="break-even")
    ax.set_xlabel(xlabel)
    ax.set_title(f"{result.model} on {result.target}: sensitivity")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(True, axis="x", alpha=0.3)
    return png_bytes(fig)


def _fmt(x: float) -> str:
    return f"{x:.3g}"

"""One model on several targets, side by side, over a sweep of context lengths, batches
or latency bounds.

For every target and every value of the sweep (a prompt length, a pinned batch or a
bound on the decode time per token: ``SWEEPS``), the mapping is solved for the
objective (``explore.map_model``: compile's optimum and its analytical figures, the
run's average power included), so each row is what ``chipletc compile`` would print
for that target with that prompt length, ``--batch`` or ``--max-latency-ms``. A rented
baseline may be shown again at another price or throughput per chip
(``explore.baselines.override_row``), beside its simulated row.
Lengths a model cannot take (beyond a learned position table) and targets that cannot
hold it give rows with a status instead of figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chipletc.backends.cost import assumptions
from chipletc.compiler.explore.baselines import BASELINES, BaselineOverride, override_row
from chipletc.compiler.explore.run import map_model
from chipletc.compiler.partition import SearchOptions
from chipletc.compiler.partition.problem import ProblemBuilder
from chipletc.ir.errors import UsageError
from chipletc.ir.graph import Graph
from chipletc.ir.target import Target

__all__ = ["DEFAULT_CONTEXTS", "SWEEPS", "CompareResult", "compare", "compare_png",
           "parse_values"]

DEFAULT_CONTEXTS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
SWEEPS = {
    # axis: (SearchOptions field, factor from the value given to the field, x label,
    # the swept value's column in compare.csv)
    "context": ("prompt_len", 1, "prompt length, tokens", "prompt_len"),
    "batch": ("batch", 1, "batch (pinned)", "pinned_batch"),
    "latency": ("max_latency_s", 1e-3, "bound on decode time per token, ms",
                "latency_bound_ms"),
}
"""What a sweep varies: the prompt length, the batch pin or the latency bound (ms)."""
BEYOND_POSITIONS = "beyond positions"
"""Status of a row whose prompt is longer than the model's learned position table."""


@dataclass(frozen=True)
class CompareResult:
    model: str
    options: SearchOptions
    sweep: str
    values: tuple[float, ...]
    assumptions: dict[str, dict[str, Any]]  # target -> its economic knobs
    rows: tuple[dict[str, Any], ...]  # target-major, then the swept value

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "objective": self.options.objective.value,
            "prompt_len": self.options.prompt_len,
            "gen_len": self.options.gen_len,
            "sweep": self.sweep,
            "values": list(self.values),
            "assumptions": self.assumptions,
            "rows": list(self.rows),
        }


def parse_values(text: str, flag: str, whole: bool = True) -> tuple[float, ...]:
    """``"256,1K,32K"`` -> the values of a sweep (K = 1024 when ``whole``), increasing,
    distinct and positive; ``flag`` names them in errors."""
    out: list[float] = []
    for item in text.split(","):
        word = item.strip().upper()
        scale = 1024 if whole and word.endswith("K") else 1
        try:
            value = (int if whole else float)(word.removesuffix("K") if whole else word) * scale
        except ValueError:
            example = "256,1K,32K" if whole else "5,10,50"
            raise UsageError(f"{flag}: not a {'whole ' if whole else ''}number ({item!r}); "
                             f"e.g. {example}") from None
        if not value > 0:
            raise UsageError(f"{flag}: values must be positive ({item!r})")
        out.append(value)
    if sorted(set(out)) != out:
        raise UsageError(f"{flag}: give increasing, distinct values ({text!r})")
    return tuple(out)


def compare(
    graph: Graph,
    targets: Sequence[Target],
    options: SearchOptions,
    values: Sequence[float] = DEFAULT_CONTEXTS,
    overrides: Sequence[BaselineOverride] = (),
    sweep: str = "context",
) -> CompareResult:
    """Every target at every value of ``sweep`` (``SWEEPS``: the option it sets replaced
    by each); each override adds a row after its preset's row."""
    field, factor, _, _ = SWEEPS[sweep]
    by_name = {t.name: t for t in targets}
    for o in overrides:
        if BASELINES[o.name] not in by_name:
            raise UsageError(f"--baseline {o.name}: its target {BASELINES[o.name]} is not "
                             "among --targets; add it")
    rows: list[dict[str, Any]] = []
    builders = {}
    for target in targets:
        for value in values:
            opts = dataclasses.replace(options, **{field: value * factor})
            row: dict[str, Any] = {"target": target.name, "value": value,
                                   "source": "simulated"}
            try:
                graph.check_context(opts.prompt_len, "--prompt-len")
            except UsageError:
                rows.append({**row, "status": BEYOND_POSITIONS})
                continue
            builder = builders.setdefault(value, ProblemBuilder(graph, opts))
            row.update(map_model(graph, builder, target, with_average=True))
            rent = target.economics.rent_usd_per_hour
            row["usd_per_chip_hour"] = None if rent is None else rent / target.chips_per_server
            if row["status"] == "ok":
                row["tokens_per_s_per_chip"] = row["tokens_per_s"] / (
                    row["servers"] * target.chips_per_server)
            rows.append(row)
            for o in overrides:
                if BASELINES[o.name] == target.name and row["status"] == "ok":
                    rows.append({**override_row(target, row, o),
                                 "target": f"{target.name} ({o.name} override)"})
    return CompareResult(
        graph.info.name, options, sweep, tuple(values),
        {t.name: assumptions(t) for t in targets}, tuple(rows))


def compare_png(result: CompareResult) -> bytes:
    """$ per 1K generated tokens against the swept value, one line per target."""
    from chipletc.backends.emit.png import new_figure, png_bytes

    fig = new_figure(8.0, 5.0)
    ax = fig.subplots()
    names = list(dict.fromkeys(r["target"] for r in result.rows))
    for name in names:
        mine = [r for r in result.rows if r["target"] == name and r["status"] == "ok"]
        if not mine:
            continue
        style = "--" if name.endswith("override)") else "-"
        ax.plot([r["value"] for r in mine], [r["usd_per_1k_tokens"] for r in mine],
                style, marker="o", markersize=4, label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(SWEEPS[result.sweep][2])
    ax.set_ylabel("$ per 1K generated tokens")
    ax.set_title(f"{result.model}: cost per token against {result.sweep} (prompt "
                 f"{result.options.prompt_len}, {result.options.gen_len} generated)"
                 if result.sweep != "context" else
                 f"{result.model}: cost per token against context "
                 f"({result.options.gen_len} generated)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return png_bytes(fig)

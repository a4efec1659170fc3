"""One model on several targets, side by side, over a sweep of context lengths.

For every target and every prompt length of the sweep, the mapping is solved for the
objective (``explore.map_model``: compile's optimum and its analytical figures, the
run's average power included), so each row is what ``chipletc compile`` would print
for that target and length. A rented baseline may be shown again at another price or
throughput per chip (``explore.baselines.override_row``), beside its simulated row.
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

__all__ = ["DEFAULT_CONTEXTS", "CompareResult", "compare", "compare_png", "parse_contexts"]

DEFAULT_CONTEXTS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
BEYOND_POSITIONS = "beyond positions"
"""Status of a row whose prompt is longer than the model's learned position table."""


@dataclass(frozen=True)
class CompareResult:
    model: str
    options: SearchOptions
    contexts: tuple[int, ...]
    assumptions: dict[str, dict[str, Any]]  # target -> its economic knobs
    rows: tuple[dict[str, Any], ...]  # target-major, then context

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "objective": self.options.objective.value,
            "gen_len": self.options.gen_len,
            "contexts": list(self.contexts),
            "assumptions": self.assumptions,
            "rows": list(self.rows),
        }


def parse_contexts(text: str) -> tuple[int, ...]:
    """``"256,1024,4K,32K"`` -> prompt lengths (K = 1024), increasing and distinct."""
    out = []
    for item in text.split(","):
        word = item.strip().upper()
        scale = 1024 if word.endswith("K") else 1
        try:
            value = int(word.removesuffix("K")) * scale
        except ValueError:
            raise UsageError(f"--contexts: not a length ({item!r}); e.g. 256,1K,32K") from None
        if value < 1:
            raise UsageError(f"--contexts: lengths must be at least 1 ({item!r})")
        out.append(value)
    if sorted(set(out)) != out:
        raise UsageError(f"--contexts: give increasing, distinct lengths ({text!r})")
    return tuple(out)


def compare(
    graph: Graph,
    targets: Sequence[Target],
    options: SearchOptions,
    contexts: Sequence[int] = DEFAULT_CONTEXTS,
    overrides: Sequence[BaselineOverride] = (),
) -> CompareResult:
    """Every target at every prompt length in ``contexts`` (``options.prompt_len`` is
    replaced by each); each override adds a row after its preset's row."""
    by_name = {t.name: t for t in targets}
    for o in overrides:
        if BASELINES[o.name] not in by_name:
            raise UsageError(f"--baseline {o.name}: its target {BASELINES[o.name]} is not "
                             "among --targets; add it")
    rows: list[dict[str, Any]] = []
    builders = {}
    for target in targets:
        for context in contexts:
            opts = dataclasses.replace(options, prompt_len=context)
            row: dict[str, Any] = {"target": target.name, "context": context,
                                   "source": "simulated"}
            try:
                graph.check_context(context, "--contexts")
            except UsageError:
                rows.append({**row, "status": BEYOND_POSITIONS})
                continue
            builder = builders.setdefault(context, ProblemBuilder(graph, opts))
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
        graph.info.name, options, tuple(contexts),
        {t.name: assumptions(t) for t in targets}, tuple(rows))


def compare_png(result: CompareResult) -> bytes:
    """$ per 1K generated tokens against context length, one line per target."""
    from chipletc.backends.emit.png import new_figure, png_bytes

    fig = new_figure(8.0, 5.0)
    ax = fig.subplots()
    names = list(dict.fromkeys(r["target"] for r in result.rows))
    for name in names:
        mine = [r for r in result.rows if r["target"] == name and r["status"] == "ok"]
        if not mine:
            continue
        style = "--" if name.endswith("override)") else "-"
        ax.plot([r["context"] for r in mine], [r["usd_per_1k_tokens"] for r in mine],
                style, marker="o", markersize=4, label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(f"prompt length, tokens (then {result.options.gen_len} generated)")
    ax.set_ylabel("$ per 1K generated tokens")
    ax.set_title(f"{result.model}: cost per token against context")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return png_bytes(fig)

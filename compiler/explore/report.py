"""Pure emitters of an exploration: CSV, Pareto front, the paper's table, PNG, HTML, JSON.

Each takes data and returns text or bytes; ``write_outputs`` (CLI) writes them. Same
inputs, same bytes: rows are sorted, nothing carries a date or a wall time.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .run import NO_MAPPING, ExploreResult

__all__ = [
    "TABLE_COLUMNS",
    "best_designs",
    "group_axes",
    "improvement",
    "mark_fronts",
    "pareto_front",
    "rows_csv",
    "summary",
    "to_csv",
    "to_html",
    "to_json",
    "to_png",
]

COST, LATENCY = "usd_per_1k_tokens", "decode_s_per_token"

TABLE_COLUMNS = (
    ("die_mm2", "die mm2", "{:.0f}"),
    ("sram_mib", "SRAM MiB/chip", "{:.0f}"),
    ("tops", "TOPS/chip", "{:.1f}"),
    ("chips_per_server", "chips/server", "{}"),
    ("servers", "servers", "{}"),
    ("tp", "TP", "{}"),
    ("pp", "PP", "{}"),
    ("batch", "batch", "{}"),
    ("micro_batch", "micro-batch", "{}"),
    (LATENCY, "latency ms/token", "{:.3g}"),
    ("J_per_1k_tokens", "J/1K tokens", "{:,.0f}"),
    (COST, "$/1K tokens", "{:.3g}"),
)
"""The columns of the paper's table of optimal designs: key, heading, format."""


def _ok(points: Sequence[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    return [p for p in points if p["model"] == model and p["status"] == "ok"]


def pareto_front(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points no other point beats on both $ per 1K tokens and decode latency, by cost.

    Give points of one model. Among equal (cost, latency) pairs the lowest design
    number stands for them all.
    """
    ranked = sorted((p for p in points if p["status"] == "ok"),
                    key=lambda p: (p[COST], p[LATENCY], p["design"]))
    front: list[dict[str, Any]] = []
    for p in ranked:
        if not front or p[LATENCY] < front[-1][LATENCY]:
            front.append(p)
    return front


def group_axes(result: ExploreResult) -> tuple[str, ...]:
    """The space's categorical axes with more than one value (``node``,
    ``chiplet.memory``, topologies): each gets a Pareto front per value."""
    space = result.space
    nodes = ("node",) if len(space.nodes) > 1 else ()
    return nodes + tuple(name for name, values in space.axes
                         if len(values) > 1 and all(isinstance(v, str) for v in values))


def _fronts(points: Sequence[dict[str, Any]], axis: str) -> dict[str, list[dict[str, Any]]]:
    values = sorted({p[axis] for p in points if p["status"] == "ok"})
    return {v: pareto_front([p for p in points if p[axis] == v]) for v in values}


def mark_fronts(points: Sequence[dict[str, Any]], result: ExploreResult) -> list[dict[str, Any]]:
    """``points`` with a column ``front.<axis>`` per group axis: True where the point is on
    its model's Pareto front among designs of the same value of that axis."""
    axes = group_axes(result)
    on: set[tuple[str, str, int]] = set()
    for axis in axes:
        for model in result.models:
            for front in _fronts([p for p in points if p["model"] == model], axis).values():
                on.update((axis, model, p["design"]) for p in front)
    return [{**p, **{f"front.{a}": (a, p["model"], p["design"]) in on for a in axes}}
            for p in points]


def best_designs(points: Sequence[dict[str, Any]], model: str) -> dict[str, dict[str, Any]]:
    """The TCO-optimal and the latency-optimal point of ``model`` (ties: lower design)."""
    mine = _ok(points, model)
    return {
        "tco": min(mine, key=lambda p: (p[COST], p[LATENCY], p["design"])),
        "latency": min(mine, key=lambda p: (p[LATENCY], p[COST], p["design"])),
    }


def improvement(best_usd: float, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each baseline row with ``factor`` = its $ per 1K tokens / the best design's."""
    out = []
    for r in rows:
        factor = r[COST] / best_usd if r.get("status") == "ok" else None
        out.append({**r, "factor": factor})
    return out


def rows_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as CSV under the header ``columns``: a missing cell is empty, a key not
    among ``columns`` is left out, a float is written in full (``repr``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n", restval="",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return buf.getvalue()


def to_csv(points: Sequence[dict[str, Any]]) -> str:
    """Every evaluated point, one row each, sorted by model then design."""
    columns = list(dict.fromkeys(k for p in points for k in p))
    return rows_csv(sorted(points, key=lambda p: (p["model"], p["design"])), columns)


def summary(result: ExploreResult, baselines: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The JSON document of a run: counts, best designs, fronts and baselines per model."""
    models = {}
    for model in result.models:
        mine = [p for p in result.points if p["model"] == model]
        statuses: dict[str, int] = {}
        for p in mine:
            statuses[p["status"]] = statuses.get(p["status"], 0) + 1
        entry: dict[str, Any] = {"evaluated": statuses}
        reasons = Counter(p["reason"] for p in mine if p["status"] == NO_MAPPING)
        if reasons:
            # why nothing mapped, commonest first (diagnose.REASONS says what each means)
            entry["no_mapping_reasons"] = dict(
                sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
            )
        if statuses.get("ok"):
            best = best_designs(result.points, model)
            entry["best"] = best
            entry["pareto"] = [p["design"] for p in pareto_front(mine)]
            fronts = {axis: {value: {"tco": front[0], "pareto": [p["design"] for p in front]}
                             for value, front in _fronts(mine, axis).items()}
                      for axis in group_axes(result)}
            if fronts:
                entry["fronts"] = fronts
            entry["baselines"] = improvement(best["tco"][COST], baselines.get(model, []))
        models[model] = entry
    return {
        "space": result.space.name,
        "options": {
            "objective": result.options.objective.value,
            "prompt_len": result.options.prompt_len,
            "gen_len": result.options.gen_len,
            "max_batch": result.options.max_batch,
            "max_latency_s": result.options.max_latency_s,
        },
        "designs": result.designs,
        "removed_by_constraint": dict(sorted(result.removed.items())),
        "survivors": result.survivors,
        "complete": result.complete,
        "models": models,
    }


def to_png(points: Sequence[dict[str, Any]], models: Sequence[str]) -> bytes:
    """The design cloud and Pareto front of each model, one panel each, as PNG bytes."""
    from chipletc.backends.emit.png import new_figure, png_bytes

    fig = new_figure(6.4 * len(models), 4.8)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models, strict=True):
        mine = _ok(points, model)
        front = pareto_front(mine)
        ax.scatter([p[COST] for p in mine], [p[LATENCY] * 1e3 for p in mine], s=6,
                   alpha=0.35, color="tab:blue", label=f"designs ({len(mine)})")
        ax.plot([p[COST] for p in front], [p[LATENCY] * 1e3 for p in front], "o-",
                color="tab:red", markersize=4, label=f"Pareto front ({len(front)})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("$ per 1K generated tokens")
        ax.set_ylabel("decode latency, ms per token")
        ax.set_title(model)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    return png_bytes(fig)


def _table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in TABLE_COLUMNS)
    body = []
    for label, p in rows:
        cells = "".join(
            f"<td>{html.escape(fmt.format(p[k]) if k != LATENCY else fmt.format(p[k] * 1e3))}"
            "</td>" for k, _, fmt in TABLE_COLUMNS)
        body.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>"


def _baseline_table(rows: Sequence[dict[str, Any]]) -> str:
    head = ("<tr><th>baseline</th><th>source</th><th>$/chip-hour</th><th>tokens/s/chip</th>"
            "<th>$/1K tokens</th><th>best design is</th></tr>")
    body = []
    for r in rows:
        if r["status"] != "ok":
            body.append(f"<tr><td>{html.escape(r['baseline'])}</td><td colspan=5>"
                        f"{html.escape(r['status'])}</td></tr>")
            continue
        body.append(
            f"<tr><td>{html.escape(r['baseline'])} ({html.escape(r['target'])})</td>"
            f"<td>{r['source']}</td><td>{r['usd_per_chip_hour']:.3g}</td>"
            f"<td>{r['tokens_per_s_per_chip']:.4g}</td><td>{r[COST]:.4g}</td>"
            f"<td>{r['factor']:.3g}x cheaper</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def to_html(doc: dict[str, Any], png: bytes) -> str:
    """One self-contained page: the summary's tables and the PNG as a data: URI."""
    from chipletc.backends.emit.html import html_page, png_img

    parts = [
        f"<h1>Design-space exploration: {html.escape(doc['space'])}</h1>",
        f"<p>{doc['designs']:,} designs; {doc['survivors']:,} meet the constraints "
        f"(removed: {html.escape(_removed(doc['removed_by_constraint']))}). "
        f"Objective {html.escape(doc['options']['objective'])}, prompt "
        f"{doc['options']['prompt_len']}, generate {doc['options']['gen_len']} tokens.</p>",
        png_img(png, "design cloud and Pareto front per model"),
    ]
    if "assumptions" in doc:
        parts.append("<p>Assumptions (economics of every design): " + html.escape(", ".join(
            f"{k} {v}" for k, v in doc["assumptions"].items())) + ".</p>")
    for model, entry in doc["models"].items():
        parts.append(f"<h2>{html.escape(model)}</h2>")
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(entry["evaluated"].items()))
        parts.append(f"<p>evaluated designs: {html.escape(counts)}</p>")
        if "best" not in entry:
            continue
        best = entry["best"]
        parts.append(_table([("TCO-optimal", best["tco"]), ("latency-optimal", best["latency"])]))
        parts.append(f"<p>Pareto front: {len(entry['pareto'])} designs.</p>")
        for axis, groups in entry.get("fronts", {}).items():
            parts.append(f"<h3>Front per {html.escape(axis)}</h3>")
            parts.append(_table([(f"{value}: TCO-optimal", g["tco"]) for value, g in
                                 groups.items()]))
            parts.append("<p>" + "; ".join(
                f"{html.escape(value)}: {len(g['pareto'])} designs on its front (designs "
                f"{html.escape(', '.join(map(str, g['pareto'])))})"
                for value, g in groups.items()) + ".</p>")
        if entry["baselines"]:
            parts.append("<h3>Baselines (rented)</h3>")
            parts.append(_baseline_table(entry["baselines"]))
    return html_page(f"chipletc explore: {doc['space']}", parts)


def _removed(removed: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in removed.items()) or "none"


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, sort_keys=False) + "\n"

"""report.html: the plan you can see, as one self-contained page.

The mapping, a chiplet map (servers side by side, each drawn as its lanes x the packages
along them, coloured by pipeline stage, and beside it the same map shaded by the SRAM
or HBM each chiplet uses), the cost per 1K tokens broken down as a chart, and the
timeline of one decode step in the middle of the run (past the prefill's stagger), one
row per stage. Everything comes from the
arguments (``to_report_md``'s), so the same inputs give the same bytes.
"""

from __future__ import annotations

import html
import math

from chipletc.backends.cost import TokenCost
from chipletc.backends.sim import SimResult
from chipletc.ir.plan import Plan

from .html import html_page, html_table, png_img
from .png import new_figure, png_bytes
from .report import format_usd

__all__ = ["chiplet_map_png", "cost_png", "decode_step_png", "to_report_html"]

SERVERS_PER_ROW = 8
"""Servers drawn side by side in the chiplet map before a new row starts."""


def _grid(plan: Plan) -> tuple[list[list[float]], list[list[float]]]:
    """(stage, memory use) per cell of the map; NaN where no chiplet sits."""
    lanes = 1 + max(c.lane for c in plan.chiplets)
    width = (1 + max(c.package for c in plan.chiplets)) * (1 + max(c.chip for c in plan.chiplets))
    chips = 1 + max(c.chip for c in plan.chiplets)
    servers = 1 + max(c.server for c in plan.chiplets)
    cols = min(servers, SERVERS_PER_ROW)
    rows = math.ceil(servers / cols)
    h, w = rows * (lanes + 1) - 1, cols * (width + 1) - 1
    stage = [[math.nan] * w for _ in range(h)]
    use = [[math.nan] * w for _ in range(h)]
    for c in plan.chiplets:
        y = (c.server // cols) * (lanes + 1) + c.lane
        x = (c.server % cols) * (width + 1) + c.package * chips + c.chip
        stage[y][x] = c.stage
        use[y][x] = plan.held_bytes(c) / c.capacity_bytes
    return stage, use


def chiplet_map_png(plan: Plan) -> bytes:
    """Two panels: chiplets coloured by stage, and shaded by the memory they use."""
    import numpy as np

    stage, use = (np.array(a, dtype=float) for a in _grid(plan))
    h, w = stage.shape
    fig = new_figure(min(16.0, 2.0 + w * 0.12), 2 * (1.2 + h * 0.12) + 0.8)
    ax_stage, ax_use = fig.subplots(2, 1)
    ax_stage.imshow(np.ma.masked_invalid(stage % 20), cmap="tab20", vmin=0, vmax=19,
                    interpolation="nearest", aspect="equal")
    ax_stage.set_title(f"{len(plan.chiplets)} chiplets by pipeline stage "
                       f"({plan.mapping['pp']} stages; colours repeat every 20)")
    shade = ax_use.imshow(np.ma.masked_invalid(use * 100), cmap="viridis", vmin=0, vmax=100,
                          interpolation="nearest", aspect="equal")
    memory = plan.target["memory"].upper()
    ax_use.set_title(f"{memory} used, % of each chiplet's")
    fig.colorbar(shade, ax=ax_use, fraction=0.03, pad=0.01)
    for ax in (ax_stage, ax_use):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"servers side by side ({SERVERS_PER_ROW} a row), each its packages "
                      "along a lane")
        ax.set_ylabel("lanes")
    return png_bytes(fig)


def cost_png(cost: TokenCost) -> bytes:
    """The $ per 1K tokens broken down into its items, as horizontal bars."""
    items = [(k.removesuffix("_usd").replace("_", " "), v)
             for k, v in cost.breakdown_per_1k_tokens_usd.items()]
    fig = new_figure(7.0, 0.4 * len(items) + 1.2)
    ax = fig.subplots()
    ax.barh(range(len(items)), [v for _, v in items], color="tab:blue")
    ax.set_yticks(range(len(items)), [k for k, _ in items])
    ax.invert_yaxis()
    ax.set_xlabel("$ per 1K generated tokens")
    ax.set_title(f"{format_usd(cost.tco_per_1k_tokens_usd)} per 1K tokens "
                 f"(power basis {cost.power_basis})")
    ax.grid(True, axis="x", alpha=0.3)
    return png_bytes(fig)


def decode_step_png(result: SimResult, pp: int) -> bytes:
    """The decode step in the middle of the run: each stage's passes (one colour per
    micro-batch) and its outgoing transfers (black), against time from the step's start."""
    step = len(result.decode_step_s) // 2
    records = [r for r in result.timeline(range(step, step + 1)) if r.step == step]
    fig = new_figure(9.0, min(12.0, 1.5 + 0.12 * pp))
    ax = fig.subplots()
    if records:
        start = min(r.start_s for r in records)
        by_stage: dict[tuple[int, str], list[tuple[float, float, int]]] = {}
        for r in records:
            by_stage.setdefault((r.stage, r.category), []).append(
                ((r.start_s - start) * 1e3, (r.end_s - r.start_s) * 1e3, r.micro_batch))
        colours = [f"C{i}" for i in range(10)]
        for (stage, category), spans in sorted(by_stage.items()):
            if category == "send":
                ax.broken_barh([(a, d) for a, d, _ in spans], (stage + 0.3, 0.4), color="black")
            else:
                ax.broken_barh([(a, d) for a, d, _ in spans], (stage - 0.4, 0.8),
                               color=[colours[m % 10] for _, _, m in spans])
    ax.set_ylim(pp - 0.5, -0.5)
    ax.set_xlabel(f"ms from the start of decode step {step}")
    ax.set_ylabel("pipeline stage")
    ax.set_title(f"decode step {step} of {len(result.decode_step_s)}: passes by micro-batch "
                 "(colour), transfers (black)")
    ax.grid(True, axis="x", alpha=0.3)
    return png_bytes(fig)


def to_report_html(plan: Plan, result: SimResult, cost: TokenCost) -> str:
    """The page: ``plan`` and ``cost`` as compile reports them, ``result`` its replay."""
    m, w = plan.mapping, plan.workload
    servers = len({c.server for c in plan.chiplets})
    title = f"{plan.model['name']} on {plan.target['name']}"
    power = ""
    if cost.server_power_w is not None and cost.average_power_w is not None:
        power = (f" Each server draws {cost.server_power_w:,.0f} W at TDP and "
                 f"{cost.average_power_w:,.0f} W on average over the run; the per-watt "
                 f"costs are charged at {cost.power_basis}.")
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Prompt {w['prompt_len']} tokens, generate {w['gen_len']}: "
        f"{format_usd(cost.tco_per_1k_tokens_usd)} per 1K generated tokens, "
        f"{result.tokens_per_s:,.1f} tokens/s simulated, decode "
        f"{result.decode_s_per_token * 1e3:.4g} ms per token.{html.escape(power)}</p>",
        "<h2>Mapping</h2>",
        html_table(["tp", "pp", "batch", "micro-batch", "chiplets", "servers"],
                   [[m["tp"], m["pp"], m["batch"], m["micro_batch"], len(plan.chiplets),
                     servers]]),
        "<h2>Chiplet map</h2>",
        png_img(chiplet_map_png(plan), "chiplets by stage and by memory use"),
        "<h2>Cost</h2>",
        png_img(cost_png(cost), "cost per 1K tokens by item"),
        html_table(["item", "$ per 1K tokens"],
                   [[k, f"{v:.4g}"] for k, v in cost.breakdown_per_1k_tokens_usd.items()]),
        "<h2>One decode step</h2>",
        png_img(decode_step_png(result, m["pp"]), "timeline of a decode step"),
    ]
    return html_page(f"chipletc: {title}", body)

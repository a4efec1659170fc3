"""report.md: a human summary of a plan, its performance and its cost.

Everything in it comes from its arguments (the plan, the simulation, the analytical
estimate, the cost, the solver's facts), never from a clock, so the same inputs give
the same bytes.
"""

from __future__ import annotations

from typing import Any

from chipletc import __version__
from chipletc.backends.cost import TokenCost
from chipletc.backends.perf import PerfEstimate
from chipletc.backends.sim import SimResult
from chipletc.ir.plan import Plan

__all__ = ["format_usd", "to_report_md"]


def format_usd(usd: float, digits: int = 4) -> str:
    """Dollars to ``digits`` significant digits, so tiny costs keep their precision.

    >>> format_usd(0.000002034), format_usd(0.0005626), format_usd(12.5)
    ('$2.034e-06', '$0.0005626', '$12.5')
    """
    return f"${usd:.{digits}g}"


def to_report_md(
    plan: Plan,
    simulated: SimResult,
    analytical: PerfEstimate,
    cost: TokenCost,
    solver: dict[str, Any] | None,
    files: list[str],
) -> str:
    """The report. ``cost`` is ``backends.cost.cost_per_1k_tokens`` at the analytical
    throughput (as `chipletc compile` reports it); ``solver`` the facts of the search
    (``Plan.extra["solver"]``), None when none ran (`chipletc simulate`); ``files``
    describes the other outputs, one markdown line each."""
    m, w = plan.mapping, plan.workload
    memory = plan.target["memory"].upper()
    servers = len({c.server for c in plan.chiplets})
    lines = [
        f"# {plan.model['name']} on {plan.target['name']}",
        "",
        f"chipletc {__version__}; prompt {w['prompt_len']} tokens, generate {w['gen_len']}; "
        f"{plan.model['params'] / 1e9:.3g} B parameters, {plan.model['weight_bytes'] / 1e9:.3g} GB "
        f"of weights ({plan.model.get('weights_dtype', '')}), "
        f"KV cache in {plan.model['kv_dtype']}, matmuls at the "
        f"{plan.model.get('compute_dtype', 'bf16')} rate.",
        "",
        "## Mapping",
        "",
        "| tp | pp | batch | micro-batch | chiplets | servers | heads padded | KV layout |",
        "|---:|---:|---:|---:|---:|---:|:---|:---|",
        f"| {m['tp']} | {m['pp']} | {m['batch']} | {m['micro_batch']} | {len(plan.chiplets)} "
        f"| {servers} | {'yes' if m['pad_heads'] else 'no'} | {plan.kv_layout.value} |",
        "",
        f"Per stage, one chiplet of its tensor-parallel group ({memory} of "
        f"{_mb(plan.target['capacity_bytes'])} each; the KV cache is the whole batch's "
        "at the full context):",
        "",
        f"| stage | blocks | chiplets | weights | KV cache | workspace | {memory} used |",
        "|---:|:---|:---|---:|---:|---:|---:|",
    ]
    by_stage: dict[int, list[Any]] = {}
    for c in plan.chiplets:
        by_stage.setdefault(c.stage, []).append(c)
    for s, group in sorted(by_stage.items()):
        c = group[0]
        extra = " + embedding" if c.holds_pre else ""
        extra += " + LM head" if c.holds_post else ""
        lines.append(
            f"| {s} | {c.layers[0]}-{c.layers[1]}{extra} | {group[0].id}-{group[-1].id} "
            f"| {_mb(c.weight_bytes)} | {_mb(c.kv_bytes)} | {_mb(c.activation_bytes)} "
            f"| {plan.held_bytes(c) / c.capacity_bytes:.1%} |"
        )
    lines += _replication(plan)
    sim, an = simulated, analytical
    usd = cost.tco_per_1k_tokens_usd
    lines += [
        "",
        "## Performance",
        "",
        "| | analytical | simulated |",
        "|:---|---:|---:|",
        f"| prefill (whole batch) | {_s(an.prefill_s)} | {_s(sim.prefill_s)} |",
        f"| decode per token | {_s(an.decode_s_per_token)} | {_s(sim.decode_s_per_token)} |",
        f"| end to end | {_s(an.end_to_end_s)} | {_s(sim.end_to_end_s)} |",
        f"| tokens/s | {an.tokens_per_s:,.1f} | {sim.tokens_per_s:,.1f} |",
        f"| bottleneck | {an.bottleneck} | {sim.bottleneck} |",
        "",
        f"Simulated MFU {sim.mfu:.1%}; time of the chiplets: "
        + ", ".join(f"{k} {v:.1%}" for k, v in sim.attribution.items())
        + ".",
        "",
        "## Cost",
        "",
        f"{format_usd(usd)} per 1K generated tokens at the analytical throughput "
        f"({format_usd(usd * an.tokens_per_s / sim.tokens_per_s)} at the simulated one), "
        f"{cost.energy_per_1k_tokens_J:,.0f} J per 1K tokens, "
        f"{cost.num_servers} server(s) at ${cost.usd_per_server_hour:.4f} an hour.",
        *_power(cost),
        "",
        "| item | $ per 1K tokens | share |",
        "|:---|---:|---:|",
    ]
    for k, v in cost.breakdown_per_1k_tokens_usd.items():
        share = v / usd if usd else 0.0
        lines.append(f"| {k.removesuffix('_usd').replace('_', ' ')} | {v:.4g} | {share:.1%} |")
    lines += ["", "## Solver", ""]
    if solver is None:
        lines.append("None ran: `chipletc simulate` replays the mapping it was given.")
    else:
        gap = "n/a" if solver.get("gap") is None else f"{solver['gap']:.2%}"
        lines.append(
            f"{solver['name']} {solver['status']}, objective {solver['objective']}, "
            f"bound {solver['bound']}, gap {gap}."
        )
    lines += ["", "## Files", ""] + [f"- {f}" for f in files]
    return "\n".join(lines) + "\n"


def _power(cost: TokenCost) -> list[str]:
    """A server's power at TDP and on average over the run, and what is charged."""
    if cost.server_power_w is None or cost.average_power_w is None:
        return []
    return ["", f"Each server draws {cost.server_power_w:,.0f} W at TDP and "
            f"{cost.average_power_w:,.0f} W on average over the run "
            f"({cost.average_energy_per_1k_tokens_J:,.0f} J per 1K tokens); the per-watt "
            f"costs are charged at {cost.power_basis} (`--power-basis`)."]


def _replication(plan: Plan) -> list[str]:
    """What the plan replicates, from its tensor table: tensors every rank of a stage
    holds whole, and K/V projections shared by the ranks of one KV head."""
    tp = int(plan.mapping["tp"])
    if tp == 1:
        return []
    whole = sorted(t.name for t in plan.tensors if t.copies == tp)
    shared = sorted(t.name for t in plan.tensors if 1 < t.copies < tp)
    held = set(whole)
    per_chip = max(sum(s.bytes for s in c.shards if s.tensor in held and not s.tied)
                   for c in plan.chiplets)
    named = ", ".join(whole[:3]) + (", ..." if len(whole) > 3 else "")
    text = (f"Replicated: {len(whole)} tensors held whole by every rank of their stage, at "
            f"most {_mb(per_chip)} per chiplet" + (f" ({named})" if whole else ""))
    if shared:
        text += f"; {len(shared)} K/V projections shared by the ranks of each KV head"
    return ["", text + "; every other tensor is split over the tp ranks (token embedding "
            "and LM head by vocabulary, learned position table by hidden columns)."]


def _mb(n: float) -> str:
    """Megabytes throughout, so the columns of the stage table compare at a glance."""
    return f"{n / 1e6:,.1f} MB"


def _s(seconds: float) -> str:
    return f"{seconds * 1e3:.4g} ms" if seconds < 1 else f"{seconds:.4g} s"

"""Say why nothing fits, and by how much, in one line.

A latency or throughput bound that nothing meets is explained by re-solving without
it (objective: that figure): the message gives the best the model reaches there, the
nearest bound that works.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from chipletc.ir.graph import Graph
from chipletc.ir.target import Target

from .cpsat import solve_cpsat
from .problem import Objective, PartitionProblem, build_problem, candidate_tps

__all__ = ["explain_infeasible"]


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.3g} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.3g} MB"


def _fullest_stage_bytes(p: PartitionProblem, ti: int, pp: int) -> int:
    """Bytes on the fullest chiplet at the smallest batch, micro-batch 1, even stages."""
    base, extra = divmod(p.num_layers, pp)
    worst, first = 0, 0
    for s in range(pp):
        n = base + (1 if s < extra else 0)
        kc = p.kind_counts(first, first + n)
        first += n
        b = p.workspace[0] + sum(
            c * (p.block_weight[ti][k] + p.block_kv[ti][0][k]) for k, c in enumerate(kc)
        )
        b += p.pre_weight[ti] if s == 0 else 0
        if s == pp - 1:
            b += p.tail_weight(ti, pp)
        worst = max(worst, b)
    return worst


def explain_infeasible(graph: Graph, target: Target, p: PartitionProblem) -> str:
    o = p.options
    name = f"{graph.info.name} on {target.name}"
    cap = p.capacity_bytes
    allowed = min(p.max_servers * p.chips_per_server, o.max_chiplets or 10**12)
    # 1. Does the model fit at all, with as many stages as there are layers?
    ti = len(p.tps) - 1
    pp_all = p.num_layers if o.pp is None else o.pp
    need = _fullest_stage_bytes(p, ti, pp_all)
    if need > cap:
        return (
            f"{name}: does not fit: at tp={p.tps[ti]}, pp={pp_all}, batch {p.batches[0]} the "
            f"fullest chiplet needs {_gb(need)} of {target.weights_in.upper()} but has "
            f"{_gb(cap)} (short by {_gb(need - cap)}); {_padding_hint(graph, target, p)}"
            "use a larger target, smaller --weights-dtype/--kv-dtype or shorter "
            "--prompt-len/--gen-len"
        )
    # 2. It fits with enough chiplets: how many does it need against how many are allowed?
    fewest = None
    for i, tp in enumerate(p.tps):
        for pp in range(1, p.num_layers + 1):
            if _fullest_stage_bytes(p, i, pp) <= cap:
                if fewest is None or tp * pp < fewest[0]:
                    fewest = (tp * pp, tp, pp)
                break
    if fewest is not None and fewest[0] > allowed:
        chips, tp, pp = fewest
        return (
            f"{name}: needs at least {chips} chiplets (tp={tp}, pp={pp}) but {allowed} are "
            f"allowed ({p.max_servers} servers x {p.chips_per_server}"
            f"{'' if o.max_chiplets is None else f', --max-chiplets {o.max_chiplets}'}); "
            f"short by {chips - allowed}"
        )
    best = _best_without_bound(graph, target, p)
    if best is not None:
        return f"{name}: {best}"
    bounds = []
    if o.max_latency_s is not None:
        bounds.append(f"--max-latency-ms {o.max_latency_s * 1e3:g}")
    if o.min_tokens_per_s is not None:
        bounds.append(f"--min-throughput {o.min_tokens_per_s:g}")
    pins = [
        f"--{k.replace('_', '-')} {getattr(o, k)}"
        for k in ("tp", "pp", "batch", "micro_batch")
        if getattr(o, k) is not None
    ]
    what = " and ".join(bounds + pins) or "the constraints"
    return f"{name}: no mapping meets {what}; relax them (without them compile shows the best)"


def _padding_hint(graph: Graph, target: Target, p: PartitionProblem) -> str:
    """When the head count, not the target, caps tp (Falcon-7B's 71 heads, Qwen2.5-7B's
    28 on a 128-chiplet server): padding the heads allows a wider tp."""
    o = p.options
    if o.pad_heads or o.tp is not None:
        return ""
    padded = candidate_tps(graph, target, replace(o, pad_heads=True))
    if max(padded) <= max(p.tps):
        return ""
    return (
        f"the {graph.info.num_heads} heads split over tp {max(p.tps)} at most here: "
        f"--pad-heads pads them to allow tp {max(padded)}; or "
    )


def _best_without_bound(graph: Graph, target: Target, p: PartitionProblem) -> str | None:
    """What the binding latency or throughput bound allows at best, found by solving
    without it (the other constraints and pins kept); None when that does not help."""
    o = p.options
    for flag, field, objective in (
        ("--max-latency-ms", "max_latency_s", Objective.LATENCY),
        ("--min-throughput", "min_tokens_per_s", Objective.THROUGHPUT),
    ):
        if getattr(o, field) is None:
            continue
        free = build_problem(graph, target, replace(o, objective=objective, **{field: None}))
        ev = solve_cpsat(free).best
        if ev is None:
            continue
        unit_s = free.time_unit_ns * 1e-9
        batch = free.batches[ev.bi]
        where = f"(tp={free.tps[ev.ti]}, pp={ev.pp}, batch {batch})"
        if objective is Objective.LATENCY:
            best_ms = _four_digits(ev.step * unit_s * 1e3, math.ceil)
            return (
                f"no mapping meets {flag} {o.max_latency_s * 1e3:g}: the fastest decodes a "
                f"token in {best_ms:.4g} ms {where}; raise {flag} to at least {best_ms:.4g}"
            )
        best_tps = _four_digits(batch * o.gen_len / (ev.e2e * unit_s), math.floor)
        return (
            f"no mapping meets {flag} {o.min_tokens_per_s:g}: the highest is "
            f"{best_tps:.4g} tokens/s {where}; lower {flag} to at most {best_tps:.4g}"
        )
    return None


def _four_digits(x: float, rounding: Callable[[float], int]) -> float:
    """``x`` to four significant digits, rounded the safe way (up for a bound to raise,
    down for one to lower), so the suggested bound works as printed."""
    scale = 10.0 ** (math.floor(math.log10(x)) - 3)
    return rounding(x / scale) * scale

"""Say why nothing fits, by how much, and the nearest change that works, in one line.

Three causes, checked in this order (``binding_reason`` names them; explore counts its
"no mapping" designs by them, with ``HEADS`` where no problem could be built because no
tp splits the heads):

``MEMORY``   even one block per stage at the widest tp overflows the fullest chiplet;
             the message gives its bytes against the capacity, what caps tp (the heads,
             the chiplets per server or tp domain, --max-chiplets, a --tp pin) and the
             bytes of the embedding tables or the LM head where they sit on that chiplet;
``SERVERS``  it fits on enough chiplets, but on more than the servers (and
             --max-chiplets) allow;
``BOUNDS``   a latency or throughput bound, or a pin, that no mapping meets.

The nearest change that works is found by re-solving with one constraint relaxed:
``--pad-heads`` where the heads cap tp, the fewest servers that fit, the best latency or
throughput without the bound. ``binding_reason`` alone never re-solves (explore asks it
for thousands of designs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from chipletc.ir.errors import ChipletcError, UsageError
from chipletc.ir.graph import Graph
from chipletc.ir.layout import rank_weights
from chipletc.ir.op import Role
from chipletc.ir.sharding import check_tp
from chipletc.ir.target import Target
from chipletc.ir.tech import MAX_SERVERS

from .cpsat import solve_cpsat
from .evaluate import Evaluation
from .problem import Objective, PartitionProblem, SearchOptions, build_problem, candidate_tps

__all__ = ["BOUNDS", "HEADS", "MEMORY", "REASONS", "SERVERS", "binding_reason",
           "explain_infeasible"]

MEMORY, SERVERS, BOUNDS, HEADS = "chiplet memory", "servers", "bounds", "heads"
REASONS = {
    HEADS: "no tensor-parallel width splits the heads within a server (try --pad-heads)",
    MEMORY: "one block per stage at the widest tp overflows a chiplet's memory",
    SERVERS: "it fits only on more chiplets than the servers allowed hold",
    BOUNDS: "no mapping meets the latency or throughput bound or the pins",
}
"""What each binding reason means, for people."""

_TABLE_NAMES = {Role.TOKEN: "token embedding", Role.POS: "position table"}


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.3g} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.3g} MB"


@dataclass(frozen=True)
class _Fullest:
    """The fullest chiplet of an even split: its bytes and stage."""

    bytes: int
    stage: int


def _block_bytes_before(p: PartitionProblem, ti: int) -> list[int]:
    """Entry b: the bytes of blocks 0..b-1 at tp index ``ti`` and the smallest batch, so a
    stage's blocks cost one subtraction (explore asks this for every stage count)."""
    out = [0]
    for k in p.kind_of_block:
        out.append(out[-1] + p.block_weight[ti][k] + p.block_kv[ti][0][k])
    return out


def _fullest_stage(p: PartitionProblem, ti: int, pp: int, before: list[int]) -> _Fullest:
    """The fullest chiplet at the smallest batch, micro-batch 1, even stages (``before``:
    ``_block_bytes_before(p, ti)``)."""
    base, extra = divmod(p.num_layers, pp)
    worst, first = _Fullest(0, 0), 0
    for s in range(pp):
        n = base + (1 if s < extra else 0)
        b = p.workspace[0] + before[first + n] - before[first]
        first += n
        b += p.pre_weight[ti] if s == 0 else 0
        if s == pp - 1:
            b += p.tail_weight(ti, pp)
        if b > worst.bytes:
            worst = _Fullest(b, s)
    return worst


def _all_stages(p: PartitionProblem) -> int:
    return p.num_layers if p.options.pp is None else p.options.pp


def _allowed_chiplets(p: PartitionProblem) -> int:
    return min(p.max_servers * p.chips_per_server, p.options.max_chiplets or 10**12)


def _fewest_chiplets(p: PartitionProblem) -> tuple[int, int, int] | None:
    """(chiplets, tp, pp) of the fewest chiplets whose fullest one fits, if any."""
    fewest = None
    for i, tp in enumerate(p.tps):
        before = _block_bytes_before(p, i)
        for pp in range(1, p.num_layers + 1):
            if _fullest_stage(p, i, pp, before).bytes <= p.capacity_bytes:
                if fewest is None or tp * pp <= fewest[0]:  # ties: the wider tp
                    fewest = (tp * pp, tp, pp)
                break
    return fewest


def binding_reason(p: PartitionProblem) -> str:
    """Why ``p`` has no solution: ``MEMORY``, ``SERVERS`` or ``BOUNDS`` (no re-solve)."""
    widest = len(p.tps) - 1
    full = _fullest_stage(p, widest, _all_stages(p), _block_bytes_before(p, widest))
    if full.bytes > p.capacity_bytes:
        return MEMORY
    fewest = _fewest_chiplets(p)
    if fewest is not None and fewest[0] > _allowed_chiplets(p):
        return SERVERS
    return BOUNDS


def explain_infeasible(graph: Graph, target: Target, p: PartitionProblem) -> str:
    o = p.options
    name = f"{graph.info.name} on {target.name}"
    cap = p.capacity_bytes
    reason = binding_reason(p)
    if reason == MEMORY:
        ti = len(p.tps) - 1
        pp_all = _all_stages(p)
        full = _fullest_stage(p, ti, pp_all, _block_bytes_before(p, ti))
        fixes = _relaxed_fixes(graph, target, p, reason)
        return (
            f"{name}: does not fit: at tp={p.tps[ti]}, pp={pp_all}, batch {p.batches[0]} the "
            f"fullest chiplet needs {_gb(full.bytes)} of {target.weights_in.upper()} but has "
            f"{_gb(cap)} (short by {_gb(full.bytes - cap)})"
            f"{_tables_on(graph, p, ti, pp_all, full, full.bytes - cap)}; "
            f"{_tp_cap(graph, target, p)}; "
            + (fixes or "use a larger target, smaller --weights-dtype/--kv-dtype or shorter "
               "--prompt-len/--gen-len")
        )
    if reason == SERVERS:
        chips, tp, pp = _fewest_chiplets(p) or (0, 0, 0)
        allowed = _allowed_chiplets(p)
        fixes = _relaxed_fixes(graph, target, p, reason)
        return (
            f"{name}: needs at least {chips} chiplets (tp={tp}, pp={pp}; "
            f"{_tp_cap(graph, target, p)}) but {allowed} are "
            f"allowed ({p.max_servers} servers x {p.chips_per_server}"
            f"{'' if o.max_chiplets is None else f', --max-chiplets {o.max_chiplets}'}); "
            f"short by {chips - allowed}" + (f"; {fixes}" if fixes else "")
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


def _tables_on(
    graph: Graph, p: PartitionProblem, ti: int, pp: int, full: _Fullest, short: int
) -> str:
    """The embedding tables' (first stage) or LM head's (last stage) bytes on the fullest
    chiplet, each table by name, and whether they are more than the shortfall."""
    tp, pad = p.tps[ti], p.options.pad_heads
    groups = graph.groups()
    parts: list[tuple[str, int]] = []
    if full.stage == 0:
        parts += [
            (_TABLE_NAMES.get(op.role, op.name), rank_weights(graph, [op], tp, pad))
            for op in groups["pre"]
            if op.weights
        ]
    if full.stage == pp - 1 and p.tail_weight(ti, pp):
        tied = p.tail_weight(ti, pp) > p.post_weight[ti]
        head = "LM head with its copy of the tied embedding" if tied else "LM head"
        parts.append((head, p.tail_weight(ti, pp)))
    parts = [(n, b) for n, b in parts if b > 0]
    total = sum(b for _, b in parts)
    if not total:
        return ""
    each = ", ".join(f"{n} {_gb(b)}" for n, b in parts)
    tail = ", more than the shortfall" if total >= short else ""
    return f", of which the tables take {_gb(total)} ({each}){tail}"


def _tp_cap(graph: Graph, target: Target, p: PartitionProblem) -> str:
    """What caps tp at the widest candidate: the heads, the chiplets a tp group may
    span (per server, per tp domain, --max-chiplets), or both together."""
    o, info = p.options, graph.info
    top = max(p.tps)
    if o.tp is not None:
        return f"tp is pinned at {o.tp} (--tp)"
    domain = target.level(target.tp_domain).domain_chips
    per_server = target.chips_per_server
    limit = min(domain, o.max_chiplets or domain)

    def heads_ok(t: int) -> bool:
        try:
            check_tp(info.num_heads, info.num_kv_heads, t, o.pad_heads)
        except UsageError:
            return False
        return True

    by_heads = max(t for t in range(1, min(limit, 1 << 16) + 1) if heads_ok(t))
    if limit >= per_server:
        by_chips = limit // per_server * per_server
    else:
        by_chips = max(t for t in range(1, limit + 1) if per_server % t == 0)
    kv = ""
    if info.num_kv_heads < info.num_heads:
        kv = f" and {info.num_kv_heads} KV head{'s' if info.num_kv_heads > 1 else ''}"
    why = []
    if by_heads == top or by_chips > top:
        why.append(f"the {info.num_heads} attention heads{kv}")
    if by_chips == top or by_heads > top:
        if o.max_chiplets is not None and limit == o.max_chiplets < domain:
            why.append(f"--max-chiplets {o.max_chiplets}")
        elif domain != per_server:
            why.append(f"the {domain} chiplets of its {target.tp_domain} domain "
                       f"({per_server} per server)")
        else:
            why.append(f"the {per_server} chiplets per server")
    return f"tp is capped at {top} by " + " together with ".join(why)


def _where(p: PartitionProblem, ev: Evaluation) -> str:
    return f"tp={p.tps[ev.ti]} x pp={ev.pp}"


def _solve(graph: Graph, target: Target, options: SearchOptions) -> _Solved | None:
    """The problem and best mapping with ``options`` on ``target``; None if none fits."""
    try:
        relaxed = build_problem(graph, target, options)
    except ChipletcError:
        return None
    best = solve_cpsat(relaxed).best
    return _Solved(relaxed, best)


@dataclass(frozen=True)
class _Solved:
    problem: PartitionProblem
    best: Evaluation | None


def _relaxed_fixes(graph: Graph, target: Target, p: PartitionProblem, reason: str) -> str:
    """The nearest change that works, found by re-solving with it: ``--pad-heads`` (when
    padding widens tp), the fewest servers that fit, or both."""
    o = p.options
    more = _more_servers(graph, target, p) if reason == SERVERS else ""
    if not o.pad_heads and o.tp is None:
        padded = replace(o, pad_heads=True)
        if max(candidate_tps(graph, target, padded), default=0) > max(p.tps):
            found = _solve(graph, target, padded)
            if found is not None and found.best is not None:
                pad = f"--pad-heads fits ({_where(found.problem, found.best)})"
                return pad + (f"; or {more}" if more else "")
            if not more and found is not None and binding_reason(found.problem) == SERVERS:
                padded_more = _more_servers(graph, target, found.problem)
                if padded_more:
                    return f"--pad-heads and {padded_more}"
            if not more:
                return (f"--pad-heads pads the {graph.info.num_heads} heads to allow tp "
                        f"{max(candidate_tps(graph, target, padded))}, though no mapping "
                        "fits with it either")
    return more


def _more_servers(graph: Graph, target: Target, p: PartitionProblem) -> str:
    """The fewest servers on which ``p``'s options fit, by re-solving from the lower
    bound the fewest chiplets give, doubling; "" when none up to the limit does."""
    o = p.options
    chips = (_fewest_chiplets(p) or (0,))[0]
    n = max(1, -(-chips // p.chips_per_server))
    for _ in range(6):  # the lower bound, then doubling: a handful of solves at most
        wider = replace(target, system=replace(target.system, servers=None,
                                               max_servers=max(n, target.max_servers)))
        found = _solve(graph, wider, replace(o, max_servers=n, max_chiplets=None))
        if found is not None and found.best is not None:
            how = (f"--max-servers {n}" if n <= target.max_servers else
                   f"system.max_servers: {n} in the target (it allows {target.max_servers})")
            chiplets = "" if o.max_chiplets is None else " without --max-chiplets"
            return f"{n} servers fit ({_where(found.problem, found.best)}): {how}{chiplets}"
        if n >= MAX_SERVERS:
            break
        n = min(2 * n, MAX_SERVERS)
    return ""


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

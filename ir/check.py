"""An independent check of a placement plan against its graph and target.

In the spirit of jax's ``check_jaxpr``: ``check_plan`` recomputes what every chiplet
must hold from the graph's ops and the plan's own shard list, without the placer's
(``compiler.place``) or the memory model's (``ir.layout``, ``ir.sharding``) code, and
lists every invariant it finds broken. Invariants, numbered as in the messages:

1. tensors: the plan's tensor table is the graph's weights (names, shapes, bytes);
2. home: a shard lies on a chiplet of the stage that runs its op ("pre" ops on the
   first stage, "post" ops on the last, block b on the stage whose layers hold b); a
   tied shard is a tied LM head's table, on the last of several stages;
3. copies: each weight element is placed once per replica, or on every rank of its
   stage (tp copies, each rank the whole tensor), or, for the K/V projections of
   grouped attention when tp exceeds the KV heads, once per rank sharing a KV head
   (tp / kv_heads copies); the shards tile each tensor that many times
   (``Plan.validate``);
4. bytes: a rank's KV cache (its share of every attention op's cache, for the whole
   batch at the full context) and workspace (two copies of one micro-batch's prefill
   residual stream) equal the plan's; its weight bytes, from its shards plus the
   room padded heads take, never exceed the plan's, and the fullest rank of a stage
   is within rounding of the plan's figure;
5. capacity: the plan's capacity is the target's, and no chiplet's recomputed bytes
   exceed it;
6. layout: every stage has one KV layout, the same; a ``batch`` layout splits the
   sequences of each micro-batch over the ranks that share a KV cache (tp / kv_heads
   for grouped or multi-query attention, tp for a cache not kept per head), so those
   exist and divide the micro-batch; each such rank keeps the cache of its sequences
   only (invariant 4 counts it so).

Not checked: the plan's performance and cost figures, and whether the mapping is a
good one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from fractions import Fraction

from .errors import PlanError
from .graph import Graph
from .mapping import KVLayout
from .op import Op, OpKind, Role
from .plan import Plan
from .target import Target

__all__ = ["check_plan"]

_KV_ROLES = frozenset({Role.K, Role.V, Role.KV})
_PADDED_ROLES = frozenset({Role.Q, Role.K, Role.V, Role.QKV, Role.KV, Role.PROJ})


def _home_stages(graph: Graph, plan: Plan) -> dict[str, tuple[Op, int]]:
    """Each weight (and tied table) name -> (its op, the stage that runs the op)."""
    stages = [tuple(s) for s in plan.mapping["stages"]]
    pp = len(stages)
    home: dict[str, tuple[Op, int]] = {}
    blocks = {op.name: op.block for op in graph.ops}
    pre_done = False
    for op in graph.ops:
        b = blocks[op.name]
        if b is None:
            # before the first block's op: "pre"; after: "post"
            stage = 0 if not pre_done else pp - 1
        else:
            pre_done = True
            stage = next(s for s, (lo, hi) in enumerate(stages) if lo <= b <= hi)
        for w in op.weights:
            home[w.name] = (op, stage)
    return home


def _sharing_ranks(op: Op, tp: int) -> int:
    """Ranks that would hold the same KV cache of attention op ``op`` split by heads."""
    d = op.dims
    if tp == 1 or op.shard.value == "replicated":
        return 1
    if d["kv_elems"] != d["kv_heads"] * d["head_dim"]:
        return tp  # not per head (MLA's latent): every rank needs all of it
    if d["kv_heads"] < d["heads"] and d["kv_heads"] < tp:
        return tp // d["kv_heads"]
    return 1


def _kv_bytes(op: Op, graph: Graph, tp: int, layout: KVLayout) -> Fraction:
    """KV bytes per sequence and token one rank keeps for ``op``, averaged over the
    batch: per-head caches are split by KV heads (whole heads, rounded up per rank),
    other caches kept whole; under the batch layout the ranks sharing a cache split the
    sequences."""
    if op.kind not in (OpKind.ATTN_SCORE, OpKind.ATTN_CONTEXT):
        return Fraction(0)
    d = op.dims
    whole = Fraction(graph.kv_dtype.bits * d["kv_elems"], 8)
    sharing = _sharing_ranks(op, tp)
    split = sharing if layout is KVLayout.BATCH else 1
    if tp == 1 or op.shard.value == "replicated" or d["kv_elems"] != d["kv_heads"] * d["head_dim"]:
        return whole / split
    return whole * math.ceil(d["kv_heads"] / tp) / d["kv_heads"] / split


def check_plan(plan: Plan, graph: Graph, target: Target) -> list[str]:
    """The invariants (module docstring) ``plan`` breaks, one line each; [] if none."""
    out: list[str] = []
    tp, pp = int(plan.mapping["tp"]), int(plan.mapping["pp"])
    batch, mb = int(plan.mapping["batch"]), int(plan.mapping["micro_batch"])
    pad = bool(plan.mapping.get("pad_heads", False))
    prompt, gen = int(plan.workload["prompt_len"]), int(plan.workload["gen_len"])
    info = graph.info
    weights = {w.name: w for _, w in graph.weights()}
    try:
        plan.validate()
    except PlanError as err:
        out.append(f"3. copies: {err}")
    try:
        layout = plan.kv_layout
    except PlanError as err:
        out.append(f"6. layout: {err}")
        layout = KVLayout.HEADS
    if layout is KVLayout.BATCH:
        attention = [op for op in graph.ops if op.kind in (OpKind.ATTN_SCORE, OpKind.ATTN_CONTEXT)]
        sharing = max((_sharing_ranks(op, tp) for op in attention), default=1)
        if sharing == 1:
            out.append(f"6. layout: batch, but no ranks share a KV cache at tp {tp}")
        elif mb % sharing:
            out.append(
                f"6. layout: batch splits micro-batch {mb} over {sharing} ranks sharing a KV "
                "cache; it does not divide"
            )

    # 1. tensors
    table = {t.name: t for t in plan.tensors}
    for name in sorted(set(weights) ^ set(table)):
        where = "the plan" if name in weights else "the graph"
        out.append(f"1. tensors: {name} is missing from {where}")
    for name in sorted(set(weights) & set(table)):
        w, t = weights[name], table[name]
        if tuple(t.shape) != tuple(w.shape) or t.bytes != w.nbytes:
            out.append(
                f"1. tensors: {name} is {list(t.shape)}, {t.bytes} B in the plan, "
                f"{list(w.shape)}, {w.nbytes} B in the graph"
            )

    # 2. home and 3. allowed copies
    home = _home_stages(graph, plan)
    tied_tables = {op.tied.name for op in graph.ops if op.tied is not None}
    by_rank: dict[tuple[int, int], list] = defaultdict(list)
    for c in plan.chiplets:
        for s in c.shards:
            by_rank[c.stage, c.tp_rank].append(s)
            if s.tied:
                if s.tensor not in tied_tables or pp == 1 or c.stage != pp - 1:
                    out.append(
                        f"2. home: chiplet {c.id} (stage {c.stage}) holds a tied copy of "
                        f"{s.tensor}; only the last of several stages copies a tied table"
                    )
            elif s.tensor in home and home[s.tensor][1] != c.stage:
                out.append(
                    f"2. home: chiplet {c.id} holds {s.tensor} on stage {c.stage}; its op "
                    f"runs on stage {home[s.tensor][1]}"
                )
    kv_heads, heads = info.num_kv_heads, info.num_heads
    for t in plan.tensors:
        if t.name not in home:
            continue
        op = home[t.name][0]
        allowed = {1, tp}
        if op.role in _KV_ROLES and kv_heads < heads and kv_heads < tp:
            allowed.add(tp // kv_heads)
        if t.copies not in allowed:
            out.append(
                f"3. copies: {t.name} is held {t.copies} times per replica; expected one of "
                f"{sorted(allowed)}"
            )
        elif t.copies == tp > 1:
            stage = home[t.name][1]
            for r in range(tp):
                held = sum(
                    math.prod(b - a for a, b in s.slice)
                    for s in by_rank[stage, r]
                    if s.tensor == t.name and not s.tied
                )
                if held != math.prod(t.shape):
                    out.append(
                        f"3. copies: {t.name} is replicated, but rank {r} of stage {stage} "
                        f"holds {held} of its {math.prod(t.shape)} elements"
                    )

    # 4. bytes and 5. capacity
    cap = target.memory_capacity_bytes
    if int(plan.target.get("capacity_bytes", cap)) != cap:
        out.append(f"5. capacity: the plan says {plan.target['capacity_bytes']} B, target {cap} B")
    groups = graph.groups()
    work = math.ceil(Fraction(2 * mb * prompt * info.d_model * graph.act_dtype.bits, 8))
    every = {**weights, **{op.tied.name: op.tied for op in graph.ops if op.tied is not None}}
    padded = pad and heads % tp != 0
    fullest: dict[int, Fraction] = defaultdict(Fraction)
    rows: dict[int, Fraction] = defaultdict(Fraction)  # one row of every cut shard
    reported: dict[int, int] = {}
    kv_of: dict[tuple[int, int, int], int] = {}  # (stage, first, last) -> a rank's KV bytes
    for c in plan.chiplets:
        first, last = c.layers
        if (c.stage, first, last) not in kv_of:
            ops = [op for b in range(first, last + 1) for op in groups[b]]
            ops += groups["pre"] if c.stage == 0 else []
            ops += groups["post"] if c.stage == pp - 1 else []
            per_token = sum(_kv_bytes(op, graph, tp, layout) for op in ops)
            kv_of[c.stage, first, last] = math.ceil(per_token * batch * (prompt + gen))
        kv = kv_of[c.stage, first, last]
        held = Fraction(0)
        for s in by_rank[c.stage, c.tp_rank]:
            w = every[s.tensor]
            held += Fraction(w.nbytes * math.prod(b - a for a, b in s.slice), max(w.numel, 1))
            cut = any(b - a < n for (a, b), n in zip(s.slice, w.shape, strict=True))
            if padded and cut and s.tensor in home and home[s.tensor][0].role in _PADDED_ROLES:
                # the rank stores ceil(heads / tp) heads of it, real or zero
                room = Fraction(w.nbytes * math.ceil(heads / tp), heads)
                held += max(Fraction(0), room - Fraction(w.nbytes * s.numel, max(w.numel, 1)))
            if cut:
                rows[c.stage] += sum(
                    Fraction(w.nbytes, n)
                    for (a, b), n in zip(s.slice, w.shape, strict=True)
                    if b - a < n
                )
        fullest[c.stage] = max(fullest[c.stage], held)
        reported[c.stage] = c.weight_bytes
        if held > c.weight_bytes:
            out.append(
                f"4. bytes: chiplet {c.id} holds {math.ceil(held)} B of weights, the plan "
                f"says {c.weight_bytes} B"
            )
        if kv != c.kv_bytes:
            out.append(
                f"4. bytes: chiplet {c.id} keeps {kv} B of KV cache, the plan says {c.kv_bytes} B"
            )
        if work != c.activation_bytes:
            out.append(
                f"4. bytes: chiplet {c.id} needs {work} B of workspace, the plan says "
                f"{c.activation_bytes} B"
            )
        need = (math.ceil(held) if target.weights_resident else 0) + kv + work
        if need > cap:
            out.append(f"5. capacity: chiplet {c.id} needs {need} B, over its {cap} B")
    for s, most in fullest.items():
        # the plan's figure sums each tensor's largest slice: uneven splits may put the
        # extra row of different tensors on different ranks, one row each at most
        if reported[s] - most > rows[s] / tp + 1:
            out.append(
                f"4. bytes: stage {s} reports {reported[s]} B of weights per rank, its "
                f"fullest rank holds {math.ceil(most)} B"
            )
    return out


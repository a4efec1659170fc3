"""Turn a mapping into a placement plan: which chiplet holds which weight shard.

Chiplets are numbered stage-major (stage s, rank r -> id s * tp + r) and laid out in
that order over chips, packages, lanes and servers, so a tp group sits on neighbouring
chips and consecutive stages on neighbouring groups.
"""

from __future__ import annotations

import math
from typing import Any

from chipletc import __version__
from chipletc.ir.graph import Graph
from chipletc.ir.layout import holds_tied_copy, stage_memory, stage_ops
from chipletc.ir.mapping import ModelMapping
from chipletc.ir.op import Op, Role, Shard, Weight
from chipletc.ir.plan import ChipletPlacement, Plan, TensorInfo, WeightShard
from chipletc.ir.sharding import kv_replicated, split_dim, split_range
from chipletc.ir.target import Target

__all__ = ["build_plan"]


def _full(w: Weight) -> tuple[tuple[int, int], ...]:
    return tuple((0, n) for n in w.shape)


def _bytes(w: Weight, slc: tuple[tuple[int, int], ...]) -> int:
    frac = math.prod(b - a for a, b in slc) / max(w.numel, 1)
    return math.ceil(w.nbytes * frac)


def _shape_key(op: Op) -> tuple:
    """All ``_op_shards`` and ``_bytes`` read of an op (``split_dim`` reads its shard,
    role, output features and, for a width-split op, its width)."""
    return (
        op.shard,
        op.role,
        op.dims.get("out_features"),
        op.dims.get("width"),
        tuple((w.shape, w.nbytes) for w in op.weights),
    )


def _op_shards(
    op: Op, rank: int, tp: int, heads: int, kv_heads: int
) -> list[tuple[int, tuple, int]]:
    """(index in ``op.weights``, slice, copies) for what rank ``rank`` holds of ``op``'s
    weights."""
    out = []
    # Position among the expert matrices, by identity: a checkpoint's experts are hundreds
    # of separate tensors, and list.index would compare them pairwise.
    expert_index = {id(w): i for i, w in enumerate(x for x in op.weights if len(x.shape) >= 2)}
    for i, w in enumerate(op.weights):
        full = _full(w)
        if tp == 1 or op.shard in (Shard.REPLICATED, Shard.HEADS):
            out.append((i, full, tp))
            continue
        if op.shard is Shard.EXPERT and len(w.shape) == 2:
            idx = expert_index[id(w)]
            lo, hi = split_range(len(expert_index), tp, rank)
            if lo <= idx < hi:
                out.append((i, full, 1))
            continue
        if op.shard is Shard.ROW and len(w.shape) == 1:
            if rank == 0:
                out.append((i, full, 1))  # the bias is added once, after the all-reduce
            continue
        dim = split_dim(op, w)
        if dim is None:
            out.append((i, full, tp))
            continue
        if op.role in (Role.K, Role.V, Role.KV) and kv_replicated(tp, heads, kv_heads):
            group = tp // kv_heads  # ranks sharing one KV head
            lo, hi = split_range(w.shape[dim], kv_heads, rank // group)
            copies = group
        else:
            lo, hi = split_range(w.shape[dim], tp, rank)
            copies = 1
        slc = tuple((lo, hi) if d == dim else (0, n) for d, n in enumerate(w.shape))
        if hi > lo:
            out.append((i, slc, copies))
    return out


def build_plan(
    graph: Graph,
    target: Target,
    mapping: ModelMapping,
    prompt_len: int,
    gen_len: int,
    extra: dict[str, Any] | None = None,
) -> Plan:
    info = graph.info
    tp, pp = mapping.tp, mapping.pp
    cpp = target.chips_per_package
    per_lane = target.server.packages_per_lane * cpp
    cps = target.chips_per_server
    memory = stage_memory(graph, mapping, prompt_len, gen_len)
    copies: dict[str, int] = {}
    chiplets = []
    # Ops of one shape (every block of a uniform model) are cut alike on each rank: the
    # slices, bytes and copies are found once per shape and rank, then named per op.
    cuts: dict[tuple, list[tuple[int, tuple, int, int]]] = {}
    for s, ops in enumerate(stage_ops(graph, mapping)):
        first, last = mapping.stages[s]
        shapes = [_shape_key(op) for op in ops]
        for r in range(tp):
            cid = s * tp + r
            shards = []
            for op, shape in zip(ops, shapes, strict=True):
                cut = cuts.get((shape, r))
                if cut is None:
                    cut = [
                        (i, slc, _bytes(op.weights[i], slc), n_copies)
                        for i, slc, n_copies in _op_shards(
                            op, r, tp, info.num_heads, info.num_kv_heads
                        )
                    ]
                    cuts[shape, r] = cut
                for i, slc, nbytes, n_copies in cut:
                    name = op.weights[i].name
                    shards.append(WeightShard(name, slc, nbytes))
                    copies[name] = n_copies
                if op.tied is not None and holds_tied_copy(s, pp):
                    w = op.tied
                    vocab = w.shape[0]
                    lo, hi = split_range(vocab, tp, r) if op.shard is Shard.VOCAB else (0, vocab)
                    slc = ((lo, hi), *((0, n) for n in w.shape[1:]))
                    shards.append(WeightShard(w.name, slc, _bytes(w, slc), tied=True))
            j = cid % cps
            chiplets.append(
                ChipletPlacement(
                    id=cid,
                    server=cid // cps,
                    lane=j // per_lane,
                    package=(j % per_lane) // cpp,
                    chip=j % cpp,
                    stage=s,
                    tp_rank=r,
                    layers=(first, last),
                    holds_pre=s == 0,
                    holds_post=s == pp - 1,
                    shards=tuple(shards),
                    # padded heads take room no tensor slice shows: count as the solver does
                    weight_bytes=memory[s].weight_bytes,
                    kv_bytes=memory[s].kv_bytes,
                    activation_bytes=memory[s].workspace_bytes,
                    capacity_bytes=target.memory_capacity_bytes,
                )
            )
    tensors = tuple(
        TensorInfo(w.name, tuple(w.shape), w.dtype.value, w.nbytes, copies.get(w.name, 1))
        for _, w in graph.weights()
    )
    return Plan(
        model={
            "name": info.name,
            "frontend": info.frontend,
            "params": graph.params,
            "weight_bytes": graph.weight_bytes,
            "weights_dtype": ",".join(graph.weight_bytes_by_dtype()),
            "kv_dtype": graph.kv_dtype.value,
            "compute_dtype": graph.compute_dtype.value,
            "num_layers": graph.num_blocks,
        },
        target={
            "name": target.name,
            "memory": target.weights_in,
            "chips_per_server": cps,
            "capacity_bytes": target.memory_capacity_bytes,
            **({} if target.weights_resident else {"weights": "streamed"}),
        },
        workload={"prompt_len": prompt_len, "gen_len": gen_len},
        mapping={
            "tp": tp,
            "pp": pp,
            "batch": mapping.batch,
            "micro_batch": mapping.micro_batch,
            "stages": [list(st) for st in mapping.stages],
            "pad_heads": mapping.pad_heads,
            "kv_layout": [mapping.kv_layout.value] * pp,
        },
        tensors=tensors,
        chiplets=tuple(chiplets),
        extra={"chipletc_version": __version__, **(extra or {})},
    )

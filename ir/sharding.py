"""What one tensor-parallel rank holds and does for an op.

Sharding follows the ``Shard`` the sharding pass set from the model's structure. With
``pad_heads`` a head count that tp does not divide is padded up to the next multiple
(PaLM serving pads 48 heads to 64): the padded heads cost compute and storage.

A KV cache that several ranks share (``kv_sharing_ranks``: tp beyond the KV heads of
grouped or multi-query attention, or a cache not kept per head) is replicated on them
under ``KVLayout.HEADS``. Under ``KVLayout.BATCH`` the ``r`` sharing ranks split the
sequences instead (Pope et al. 2022, section 3.3): each rank computes the attention of
its KV group's query heads for ``1/r`` of the sequences and keeps only their cache, so
its attention work and cache are ``1/tp`` of the op's. The queries reach the rank
holding their sequence in an all-to-all over the ``r`` ranks, and the attention output
returns to head sharding (for the output projection) in another.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from .errors import UsageError
from .mapping import KVLayout
from .op import KIND_RULES, Collective, Op, OpCost, OpKind, Role, Shard, Weight

__all__ = [
    "Collective",
    "check_tp",
    "collectives_after",
    "head_factor",
    "kv_replicated",
    "kv_sharing_ranks",
    "rank_cost",
    "rank_weight_bytes",
    "rank_weight_fraction",
    "split_dim",
    "split_range",
]

# Roles whose weights are laid out by heads: padding heads pads these too.
_HEAD_ROLES = frozenset({Role.Q, Role.K, Role.V, Role.QKV, Role.KV, Role.PROJ})


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def check_tp(heads: int, kv_heads: int, tp: int, pad_heads: bool) -> None:
    """Raise ``UsageError`` unless tp can split the attention heads."""
    if tp < 1:
        raise UsageError(f"tp: must be at least 1 ({tp})")
    if heads % tp and not pad_heads:
        raise UsageError(
            f"tp: {tp} does not divide the {heads} attention heads; "
            f"choose a divisor of {heads} or allow --pad-heads"
        )
    # Padding pads query heads (and the K/V heads of multi-head attention with them);
    # the few K/V heads of grouped or multi-query attention are split or replicated.
    grouped = kv_heads < heads
    if (grouped or not pad_heads) and kv_heads % tp and tp % kv_heads:
        raise UsageError(f"tp: {tp} and the {kv_heads} KV heads do not divide one another")


def kv_replicated(tp: int, heads: int, kv_heads: int) -> bool:
    """Whether each rank keeps whole K/V heads shared with other ranks (tp > KV heads of
    grouped or multi-query attention); multi-head K/V split, or pad, like the queries."""
    return kv_heads < heads and kv_heads < tp


def kv_sharing_ranks(op: Op, tp: int) -> int:
    """How many ranks of a tp group hold the same KV cache of attention op ``op`` when it
    is split by KV heads: ``tp / kv_heads`` for grouped or multi-query attention with
    fewer KV heads than tp, ``tp`` for a cache that is not kept per head (MLA's
    latent), else 1 (nothing shared; also for ops without a KV cache)."""
    if tp == 1 or op.shard is not Shard.HEADS or not KIND_RULES[op.kind].kv_cached:
        return 1
    d = op.dims
    if d["kv_elems"] != d["kv_heads"] * d["head_dim"]:
        return tp
    if kv_replicated(tp, d["heads"], d["kv_heads"]):
        return tp // d["kv_heads"]
    return 1


def _batch_split(op: Op, tp: int, kv_layout: KVLayout) -> bool:
    """Whether ``op``'s sequences are split over the ranks sharing its KV cache."""
    return kv_layout is KVLayout.BATCH and kv_sharing_ranks(op, tp) > 1


def head_factor(heads: int, tp: int, pad_heads: bool) -> float:
    """Work per rank relative to an even 1/tp split: >1 when heads are padded."""
    if not pad_heads or heads % tp == 0:
        return 1.0
    return _ceil_div(heads, tp) * tp / heads


def _kv_fraction(op: Op, tp: int) -> float:
    """Fraction of the op's KV cache one rank keeps.

    Per-head caches split by KV heads and are replicated once tp exceeds them; a cache
    that is not per head (MLA's latent) is replicated on every rank.
    """
    d = op.dims
    per_head = d["kv_elems"] == d["kv_heads"] * d["head_dim"]
    if not per_head:
        return 1.0
    return _ceil_div(d["kv_heads"], tp) / d["kv_heads"]


def rank_weight_fraction(op: Op, tp: int, pad_heads: bool, heads: int, kv_heads: int) -> float:
    """Fraction of the op's stored weight bytes one rank holds."""
    if not op.weights and op.tied is None:
        return 1.0
    if tp == 1 or op.shard in (Shard.REPLICATED, Shard.WIDTH, Shard.HEADS):
        return 1.0 if op.shard is Shard.REPLICATED or tp == 1 else 1.0 / tp
    if op.shard is Shard.EXPERT:
        experts = op.dims["num_experts"]
        return _ceil_div(experts, tp) / experts
    if op.role in (Role.K, Role.V, Role.KV) and kv_replicated(tp, heads, kv_heads):
        return 1.0 / kv_heads  # each rank keeps a whole KV head: they are replicated
    factor = head_factor(heads, tp, pad_heads) if op.role in _HEAD_ROLES else 1.0
    return factor / tp


def split_dim(op: Op, w: Weight) -> int | None:
    """The dimension tensor parallelism cuts ``w`` along, or None when a rank holds it
    whole (a row-parallel bias, added once after the all-reduce, sits on rank 0). A
    width-split op cuts its weights along their last (hidden) dimension: a position
    table's columns, a per-channel scale's entries."""
    if op.shard is Shard.WIDTH:
        return len(w.shape) - 1 if w.shape and w.shape[-1] == op.dims.get("width") else None
    if op.shard in (Shard.REPLICATED, Shard.HEADS):
        return None
    if len(w.shape) == 1:
        # a bias follows its matmul's output features: split for column, whole for row
        return 0 if op.shard in (Shard.COLUMN, Shard.VOCAB) else None
    if op.shard is Shard.EXPERT:
        return 0 if len(w.shape) == 3 else None  # stacked (E, out, in); else whole experts
    out_features = op.dims.get("out_features")
    out_dim = 0 if (out_features is None or w.shape[0] == out_features) else 1
    if op.shard in (Shard.COLUMN, Shard.VOCAB):
        return out_dim
    if op.shard is Shard.ROW:
        return 1 - out_dim
    return None


def split_range(n: int, parts: int, i: int) -> tuple[int, int]:
    """The i-th of ``parts`` near-equal contiguous ranges of ``range(n)``."""
    return (n * i // parts, n * (i + 1) // parts)


def _fullest_share(op: Op, w: Weight, tp: int, pad_heads: bool, heads: int, kv_heads: int) -> float:
    """Fraction of ``w`` the fullest rank stores: a split dimension that tp does not
    divide leaves some ranks one more row (``split_range``); whole tensors are whole."""
    if tp == 1 or op.shard is Shard.REPLICATED:
        return 1.0
    if op.shard is Shard.EXPERT:
        experts = op.dims["num_experts"]
        return _ceil_div(experts, tp) / experts
    dim = split_dim(op, w)
    if dim is None:
        return 1.0
    if op.role in (Role.K, Role.V, Role.KV) and kv_replicated(tp, heads, kv_heads):
        return 1.0 / kv_heads  # each rank keeps a whole KV head: they are replicated
    n = w.shape[dim]
    share = _ceil_div(n, tp) / n
    if op.role in _HEAD_ROLES:
        share = max(share, head_factor(heads, tp, pad_heads) / tp)
    return share


def rank_weight_bytes(
    ops: Iterable[Op], tp: int, pad_heads: bool, heads: int, kv_heads: int, tied_copy: bool
) -> int:
    """Bytes of weights the fullest rank of a tp group stores for ``ops``: the sum over
    tensors of the largest slice any rank holds (an upper bound on every rank's bytes;
    equal to the fullest rank's where the uneven remainders fall on one rank).

    With ``tied_copy`` a tied LM head among ``ops`` keeps its own (vocabulary-sharded)
    copy of the embedding table: the head sits on another stage than the embedding.
    """
    total = 0.0
    for op in ops:
        for w in op.weights:
            total += w.nbytes * _fullest_share(op, w, tp, pad_heads, heads, kv_heads)
        if tied_copy and op.tied is not None:
            n = op.tied.shape[0]
            share = _ceil_div(n, tp) / n if op.shard is Shard.VOCAB and tp > 1 else 1.0
            total += op.tied.nbytes * share
    return math.ceil(total)


def rank_cost(
    op: Op,
    cost: OpCost,
    tp: int,
    pad_heads: bool,
    heads: int,
    kv_heads: int,
    kv_layout: KVLayout = KVLayout.HEADS,
) -> OpCost:
    """One rank's share of an op's cost (``cost`` is the whole op's at the workload)."""
    if tp == 1 or op.shard is Shard.REPLICATED:
        return cost
    if _batch_split(op, tp, kv_layout):  # its KV group's heads for 1/r of the sequences
        return OpCost(
            flops=cost.flops / tp,
            kv_read_bytes=cost.kv_read_bytes / tp,
            kv_write_bytes=cost.kv_write_bytes / tp,
            act_in_bytes=cost.act_in_bytes / tp,
            act_out_bytes=cost.act_out_bytes / tp,
        )
    if op.shard is Shard.HEADS:  # attention: heads split, the KV cache by KV heads
        f = head_factor(op.dims["heads"], tp, pad_heads) / tp
        kv = _kv_fraction(op, tp)
        return OpCost(
            flops=cost.flops * f,
            kv_read_bytes=cost.kv_read_bytes * kv,
            kv_write_bytes=cost.kv_write_bytes * kv,
            act_in_bytes=cost.act_in_bytes * f,
            act_out_bytes=cost.act_out_bytes * f,
        )
    w = rank_weight_fraction(op, tp, pad_heads, heads, kv_heads)
    factor = head_factor(heads, tp, pad_heads) if op.role in _HEAD_ROLES else 1.0
    f = factor / tp
    return OpCost(
        flops=cost.flops * f,
        weight_bytes=cost.weight_bytes * w,
        kv_read_bytes=cost.kv_read_bytes * f,
        kv_write_bytes=cost.kv_write_bytes * f,
        act_in_bytes=cost.act_in_bytes * (1.0 if op.shard is Shard.COLUMN else f),
        act_out_bytes=cost.act_out_bytes * (1.0 if op.shard is Shard.ROW else f),
    )


def collectives_after(
    op: Op, cost: OpCost, tp: int, kv_layout: KVLayout = KVLayout.HEADS
) -> tuple[Collective, ...]:
    """Collectives the sharding implies after ``op``; ``cost`` is the whole op's.

    The op's kind rule says which (``KIND_RULES``): row-parallel matmuls all-reduce
    their partial outputs; a vocabulary-parallel head all-gathers the logits;
    expert-parallel matmuls exchange their tokens all-to-all (counted on the up side in
    and on the down side out). Attention with its sequences split over the ranks sharing
    a KV cache (``KVLayout.BATCH``) exchanges each rank's head-sharded queries (after
    the score op, where they are timed) and the attention output (after the context op)
    all-to-all over those ranks.
    """
    if tp == 1:
        return ()
    if _batch_split(op, tp, kv_layout):
        share = cost.act_in_bytes if op.kind is OpKind.ATTN_SCORE else cost.act_out_bytes
        return (Collective("all_to_all", share / tp, kv_sharing_ranks(op, tp)),)
    return KIND_RULES[op.kind].collectives(op, cost)

"""The exhaustive reference: every mapping of the problem's space, scored in Python.

It enumerates tp, batch, micro-batch, pipeline depth and the layer -> stage split. When
all blocks are alike, middle stages are interchangeable, so a split is fixed by the
first and last stage sizes with the middle balanced (any other middle split has a
larger slowest stage and the same memory or more): a numpy grid over (first, last)
covers the space exactly. Models with unlike blocks enumerate every composition of
the layers, which only small models afford.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from chipletc.ir.errors import UsageError

from .evaluate import Evaluation, e2e_bound, evaluate, latency_bound, score
from .problem import PartitionProblem, plausible
from .result import SolveResult

__all__ = ["solve_exhaustive"]

MAX_LAYERS_UNLIKE_BLOCKS = 14


def solve_exhaustive(p: PartitionProblem) -> SolveResult:
    start = time.perf_counter()
    best: Evaluation | None = None
    for ti, bi, mi in itertools.product(
        range(len(p.tps)), range(len(p.batches)), range(len(p.micro_batches))
    ):
        if not plausible(p, ti, bi, mi):
            continue
        if p.num_kinds == 1:
            found = _best_uniform(p, ti, bi, mi)
        else:
            found = _best_compositions(p, ti, bi, mi)
        if found is not None and (best is None or found.objective < best.objective):
            best = found
    wall = time.perf_counter() - start
    if best is None:
        return SolveResult("INFEASIBLE", None, None, None, wall, None, "exhaustive")
    return SolveResult("OPTIMAL", best.objective, best.objective, 0.0, wall, best, "exhaustive")


def _pp_range(p: PartitionProblem) -> range:
    if p.options.pp is not None:
        return range(p.options.pp, p.options.pp + 1)
    return range(1, p.max_stages + 1)


def _best_compositions(p: PartitionProblem, ti: int, bi: int, mi: int) -> Evaluation | None:
    L = p.num_layers
    if L > MAX_LAYERS_UNLIKE_BLOCKS:
        raise UsageError(
            f"--solver exhaustive: {L} layers of unlike blocks are too many to enumerate "
            f"(limit {MAX_LAYERS_UNLIKE_BLOCKS}); use --solver cpsat"
        )
    best = None
    for pp in _pp_range(p):
        for cuts in itertools.combinations(range(1, L), pp - 1):
            bounds = (0, *cuts, L)
            counts = tuple(bounds[i + 1] - bounds[i] for i in range(pp))
            found = evaluate(p, ti, bi, mi, counts)
            if found is not None and (best is None or found.objective < best.objective):
                best = found
    return best


def _best_uniform(p: PartitionProblem, ti: int, bi: int, mi: int) -> Evaluation | None:
    o = p.options
    L = p.num_layers
    tp, b = p.tps[ti], p.batches[bi]
    micro = b // p.micro_batches[mi]
    w = p.block_weight[ti][0] + p.block_kv[ti][bi][0]
    room = p.capacity_bytes - p.workspace[mi]
    pre_w, post_alone = p.pre_weight[ti], p.tail_weight(ti, pp=1)
    post_w = p.tail_weight(ti, pp=2)  # the last of several stages
    td, tpf = p.block_decode[ti][mi][0], p.block_prefill[ti][mi][0]
    pre_d, post_d = p.pre_decode[ti][mi], p.post_decode[ti][mi]
    pre_p, post_p = p.pre_prefill[ti][mi], p.post_prefill[ti][mi]
    sum_d = L * td + pre_d + post_d
    sum_p = L * tpf + pre_p + post_p
    (hd_srv, hd_cl), (hp_srv, hp_cl) = p.hop_decode[ti][mi], p.hop_prefill[ti][mi]
    scale = max(p.batches) // b
    best_obj, best_counts = None, None
    n = np.arange(1, L + 1, dtype=np.int64)
    for pp in _pp_range(p):
        chips = tp * pp
        servers = p.servers_for(chips)
        if servers > p.max_servers or (o.max_chiplets is not None and chips > o.max_chiplets):
            continue
        cross = p.cluster_hops(tp, pp)
        pipe_d = sum_d + (pp - 1) * hd_srv + cross * (hd_cl - hd_srv)
        pipe_p = sum_p + (pp - 1) * hp_srv + cross * (hp_cl - hp_srv)
        if pp == 1:
            if L * w + pre_w + post_alone > room:
                continue
            max_d, max_p = np.array([sum_d]), np.array([sum_p])
            grid = [(L,)]
        else:
            n0 = n[:, None]
            nl = n[None, :]
            rest = L - n0 - nl
            if pp == 2:
                ok = rest == 0
                mid = np.zeros_like(rest)
            else:
                ok = rest >= pp - 2
                mid = -(-np.maximum(rest, 0) // (pp - 2))
            ok &= (n0 * w + pre_w <= room) & (nl * w + post_w <= room) & (mid * w <= room)
            if not ok.any():
                continue
            max_d = np.maximum(np.maximum(n0 * td + pre_d, nl * td + post_d), mid * td)
            max_p = np.maximum(np.maximum(n0 * tpf + pre_p, nl * tpf + post_p), mid * tpf)
            grid = ok
        step = np.maximum(pipe_d, micro * max_d)
        prefill = pipe_p + (micro - 1) * max_p
        e2e = prefill + o.gen_len * step
        feasible = grid if pp > 1 else np.array([True])
        if o.max_latency_s is not None:
            feasible = feasible & (step <= latency_bound(p))
        if o.min_tokens_per_s is not None:
            feasible = feasible & (e2e <= e2e_bound(p, b))
        if not np.any(feasible):
            continue
        obj = np.where(
            feasible, score(o.objective, servers, step, e2e, scale), np.iinfo(np.int64).max
        )
        idx = int(np.argmin(obj))
        value = int(obj.flat[idx])
        if best_obj is None or value < best_obj:
            best_obj = value
            if pp == 1:
                best_counts = (L,)
            else:
                i, j = np.unravel_index(idx, obj.shape)
                best_counts = _counts(L, pp, int(i) + 1, int(j) + 1)
    if best_counts is None:
        return None
    found = evaluate(p, ti, bi, mi, best_counts)
    assert found is not None and found.objective == best_obj, (best_counts, found, best_obj)
    return found


def _counts(L: int, pp: int, first: int, last: int) -> tuple[int, ...]:
    """Stage sizes with the middle balanced, larger stages first."""
    if pp == 2:
        return (first, last)
    q, r = divmod(L - first - last, pp - 2)
    return (first, *([q + 1] * r), *([q] * (pp - 2 - r)), last)

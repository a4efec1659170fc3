"""The exact optimum of a ``PartitionProblem`` of alike blocks, fast enough for thousands.

``solve_exhaustive`` scores, for every (tp, batch, micro-batch) and depth, a grid of
every first x last stage size: ~1e6 cells per triple, 0.1-3 s per design. This solver
returns the same optimum (equal objective; ties may pick another mapping) from far
fewer cells, by two exact reductions:

* For a depth ``pp`` and a cap ``q`` on the middle stages, the objective only grows with
  each stage's size, so the first and last stages together hold exactly what the middle
  cannot: ``s = max(2, L - (pp-2) q)`` blocks (a larger sum is dominated by shrinking it).
* Splitting ``s`` between the first and last stage, the slowest of the two is a V-shaped
  function of the first stage's size whose bottom lies at the crossing of the two stage
  times. Decode and prefill cross at different points; only sizes between the two
  crossings are not dominated, usually one or two values.

The (tp, batch, micro-batch) triples are visited by a lower bound (fewest servers that
hold the model, times the pipeline without its hops) and the search stops when the
bound reaches the best objective found. Problems with unlike blocks go to the
reference solvers.
"""

from __future__ import annotations

import itertools

import numpy as np

from chipletc.compiler.partition.cpsat import solve_cpsat
from chipletc.compiler.partition.evaluate import (
    Evaluation,
    e2e_bound,
    evaluate,
    latency_bound,
    score,
)
from chipletc.compiler.partition.exhaustive import MAX_LAYERS_UNLIKE_BLOCKS, solve_exhaustive
from chipletc.compiler.partition.problem import Objective, PartitionProblem, plausible

__all__ = ["solve_optimal"]

_NONE = np.iinfo(np.int64).max


def solve_optimal(p: PartitionProblem) -> Evaluation | None:
    """The optimal mapping of ``p`` (the objective ``solve_exhaustive`` finds), or None."""
    if p.num_kinds > 1:
        small = p.num_layers <= MAX_LAYERS_UNLIKE_BLOCKS
        return (solve_exhaustive(p) if small else solve_cpsat(p)).best
    triples = []
    for ti, bi, mi in itertools.product(
        range(len(p.tps)), range(len(p.batches)), range(len(p.micro_batches))
    ):
        if plausible(p, ti, bi, mi):
            bound = _lower_bound(p, ti, bi, mi)
            if bound is not None:
                triples.append((bound, ti, bi, mi))
    best: tuple[int, int, int, int, tuple[int, ...]] | None = None
    for bound, ti, bi, mi in sorted(triples):
        if best is not None and bound >= best[0]:
            break
        found = _best_triple(p, ti, bi, mi)
        if found is not None and (best is None or found[0] < best[0]):
            best = (found[0], ti, bi, mi, found[1])
    if best is None:
        return None
    objective, ti, bi, mi, counts = best
    result = evaluate(p, ti, bi, mi, counts)
    assert result is not None and result.objective == objective, (result, objective)
    return result


def _pp_limits(p: PartitionProblem) -> tuple[int, int]:
    if p.options.pp is not None:
        return p.options.pp, p.options.pp
    return 1, p.max_stages


def _lower_bound(p: PartitionProblem, ti: int, bi: int, mi: int) -> int | None:
    """No mapping with this (tp, batch, micro-batch) scores below this; None: none fits."""
    o, L = p.options, p.num_layers
    room = p.capacity_bytes - p.workspace[mi]
    need = L * (p.block_weight[ti][0] + p.block_kv[ti][bi][0]) + p.pre_weight[ti]
    need += p.tail_weight(ti, pp=1)  # a lower bound: no tied copy
    if room <= 0:
        return None
    lo, hi = _pp_limits(p)
    pp = max(lo, -(-need // room))
    if pp > hi:
        return None
    td, tpf = p.block_decode[ti][mi][0], p.block_prefill[ti][mi][0]
    sum_d = L * td + p.pre_decode[ti][mi] + p.post_decode[ti][mi]
    sum_p = L * tpf + p.pre_prefill[ti][mi] + p.post_prefill[ti][mi]
    micro = p.batches[bi] // p.micro_batches[mi]
    scale = max(p.batches) // p.batches[bi]
    tp = p.tps[ti]
    # The slowest stage holds at least L / pp blocks: step >= micro L td / pp, and the
    # prefill tail (micro - 1) L tpf / pp; pp is at most hi, and servers >= tp pp / chips.
    deep_d, deep_p = micro * L * td, (micro - 1) * L * tpf
    if o.objective is Objective.TCO:
        shallow = p.servers_for(tp * pp) * (sum_p + o.gen_len * sum_d)
        deep = tp * (pp * sum_p + deep_p + o.gen_len * deep_d) // p.chips_per_server
        return max(shallow, deep) * scale
    step = max(sum_d, deep_d // hi)
    if o.objective is Objective.LATENCY:
        return step
    return (sum_p + deep_p // hi + o.gen_len * step) * scale

def _most_blocks(room: int, w: int, limit: int) -> int:
    """How many blocks of ``w`` bytes fit in ``room`` (at most ``limit``; -1: not even 0)."""
    if room < 0:
        return -1
    return min(limit, room // w) if w > 0 else limit


def _best_triple(
    p: PartitionProblem, ti: int, bi: int, mi: int
) -> tuple[int, tuple[int, ...]] | None:
    """(objective, blocks per stage) of the best mapping with this triple, or None."""
    L, b = p.num_layers, p.batches[bi]
    micro = b // p.micro_batches[mi]
    w = p.block_weight[ti][0] + p.block_kv[ti][bi][0]
    room = p.capacity_bytes - p.workspace[mi]
    td, tpf = p.block_decode[ti][mi][0], p.block_prefill[ti][mi][0]
    pre_d, post_d = p.pre_decode[ti][mi], p.post_decode[ti][mi]
    pre_p, post_p = p.pre_prefill[ti][mi], p.post_prefill[ti][mi]
    lo, hi = _pp_limits(p)
    k_first = _most_blocks(room - p.pre_weight[ti], w, L)
    k_last = _most_blocks(room - p.tail_weight(ti, pp=2), w, L)  # the last of several
    k_mid = _most_blocks(room, w, L)

    # Candidate rows: (pp, first + last blocks, middle stage size) for every depth >= 3
    # and middle cap q, flattened; pp = 2 has no middle; pp = 1 is scored apart.
    gaps = np.arange(max(3, lo), min(hi, L) + 1, dtype=np.int64) - 2
    q_lo = np.maximum(1, -(-(L - k_first - k_last) // gaps))
    q_hi = np.minimum(k_mid, -(-(L - 2) // gaps))
    n_q = np.maximum(0, q_hi - q_lo + 1)
    row_gaps = np.repeat(gaps, n_q)
    starts = np.cumsum(n_q) - n_q
    q = np.repeat(q_lo, n_q) + np.arange(row_gaps.size, dtype=np.int64) - np.repeat(starts, n_q)
    s_rows = np.maximum(2, L - row_gaps * q)
    rows_pp = [row_gaps + 2]
    rows_s = [s_rows]
    rows_mid = [-(-(L - s_rows) // np.maximum(row_gaps, 1))]
    if hi >= 2 and lo <= 2:
        rows_pp.insert(0, np.array([2], dtype=np.int64))
        rows_s.insert(0, np.array([L], dtype=np.int64))
        rows_mid.insert(0, np.array([0], dtype=np.int64))
    best: tuple[int, tuple[int, ...]] | None = None
    if lo <= 1 and L * w + p.pre_weight[ti] + p.tail_weight(ti, pp=1) <= room:
        found = _score(p, ti, mi, micro, b, np.array([1]), np.array([L]), np.array([0]),
                       np.array([[L]]), np.array([[True]]))
        if found is not None:
            best = found
    pps, s, mid = np.concatenate(rows_pp), np.concatenate(rows_s), np.concatenate(rows_mid)
    if pps.size:
        n_lo = np.maximum(1, s - k_last)
        n_hi = np.minimum(k_first, s - 1)
        # Crossings of first- and last-stage times, decode and prefill, clipped; a phase
        # whose blocks take no time is flat in the split and has no say.
        xs = [(s * t + post - pre) // (2 * t)
              for t, pre, post in ((td, pre_d, post_d), (tpf, pre_p, post_p)) if t > 0]
        x_lo = np.minimum.reduce(xs) if xs else n_lo
        x_hi = np.maximum.reduce(xs) + 1 if xs else n_lo
        c_lo = np.clip(x_lo, n_lo, n_hi)
        c_hi = np.clip(x_hi, n_lo, n_hi)
        live = (n_lo <= n_hi) & (mid * w <= room)
        if live.any():
            pps, s, mid, c_lo, c_hi = pps[live], s[live], mid[live], c_lo[live], c_hi[live]
            width = int((c_hi - c_lo).max()) + 1
            n0 = c_lo[:, None] + np.arange(width, dtype=np.int64)[None, :]
            ok = n0 <= c_hi[:, None]
            found = _score(p, ti, mi, micro, b, pps, s, mid, np.minimum(n0, c_hi[:, None]), ok)
            if found is not None and (best is None or found[0] < best[0]):
                best = found
    return best


def _score(
    p: PartitionProblem,
    ti: int,
    mi: int,
    micro: int,
    b: int,
    pps: np.ndarray,
    s: np.ndarray,
    mid: np.ndarray,
    n0: np.ndarray,
    ok: np.ndarray,
) -> tuple[int, tuple[int, ...]] | None:
    """The objective of ``evaluate`` over rows (pp, s, mid) x columns (first stage size)."""
    o, L, tp = p.options, p.num_layers, p.tps[ti]
    td, tpf = p.block_decode[ti][mi][0], p.block_prefill[ti][mi][0]
    pre_d, post_d = p.pre_decode[ti][mi], p.post_decode[ti][mi]
    pre_p, post_p = p.pre_prefill[ti][mi], p.post_prefill[ti][mi]
    (hd_srv, hd_cl), (hp_srv, hp_cl) = p.hop_decode[ti][mi], p.hop_prefill[ti][mi]
    chips = tp * pps
    servers = -(-chips // p.chips_per_server)
    cross = np.where(tp >= p.chips_per_server, pps - 1, servers - 1)
    rows_ok = servers <= p.max_servers
    if o.max_chiplets is not None:
        rows_ok &= chips <= o.max_chiplets
    sum_d = L * td + pre_d + post_d
    sum_p = L * tpf + pre_p + post_p
    pipe_d = (sum_d + (pps - 1) * hd_srv + cross * (hd_cl - hd_srv))[:, None]
    pipe_p = (sum_p + (pps - 1) * hp_srv + cross * (hp_cl - hp_srv))[:, None]
    single = pps[:, None] == 1
    nl = s[:, None] - n0
    mid2 = mid[:, None]
    max_d = np.where(single, sum_d, np.maximum(np.maximum(n0 * td + pre_d, nl * td + post_d),
                                               mid2 * td))
    max_p = np.where(single, sum_p, np.maximum(np.maximum(n0 * tpf + pre_p, nl * tpf + post_p),
                                               mid2 * tpf))
    step = np.maximum(pipe_d, micro * max_d)
    e2e = pipe_p + (micro - 1) * max_p + o.gen_len * step
    feasible = ok & rows_ok[:, None]
    if o.max_latency_s is not None:
        feasible &= step <= latency_bound(p)
    if o.min_tokens_per_s is not None:
        feasible &= e2e <= e2e_bound(p, b)
    obj = np.where(feasible, score(o.objective, servers[:, None], step, e2e,
                                   max(p.batches) // b), _NONE)
    idx = int(np.argmin(obj))
    value = int(obj.flat[idx])
    if value == _NONE:
        return None
    r, c = np.unravel_index(idx, obj.shape)
    pp, first = int(pps[r]), int(n0[r, c])
    if pp == 1:
        return value, (L,)
    last = int(s[r]) - first
    if pp == 2:
        return value, (first, last)
    q, extra = divmod(L - first - last, pp - 2)
    return value, (first, *([q + 1] * extra), *([q] * (pp - 2 - extra)), last)


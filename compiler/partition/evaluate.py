"""Score one candidate mapping on a ``PartitionProblem``: the objective both solvers share.

In problem units (time units, bytes), with ``M = batch / micro_batch`` and ``G`` the
generated tokens per sequence:

    pipe      = sum of stage times + (pp - 1) server hops, the ones crossing servers at
                the cluster links instead
    step      = max(pipe_decode, M * slowest decode stage)          # one token for everyone
    prefill   = pipe_prefill + (M - 1) * slowest prefill stage
    e2e       = prefill + G * step
    tco        -> servers * e2e * (max_batch / batch)   ~ dollars per generated token
    latency    -> step
    throughput -> e2e * (max_batch / batch)             ~ 1 / tokens per second
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from .problem import Objective, PartitionProblem

__all__ = ["Evaluation", "evaluate", "score"]

T = TypeVar("T")


@dataclass(frozen=True)
class Evaluation:
    ti: int
    bi: int
    mi: int
    counts: tuple[int, ...]  # blocks per stage
    servers: int
    stage_bytes: tuple[int, ...]
    stage_decode: tuple[int, ...]
    stage_prefill: tuple[int, ...]
    step: int
    prefill: int
    e2e: int
    objective: int

    @property
    def pp(self) -> int:
        return len(self.counts)


def stage_ranges(counts: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    out, first = [], 0
    for n in counts:
        out.append((first, first + n - 1))
        first += n
    return tuple(out)


def evaluate(
    p: PartitionProblem, ti: int, bi: int, mi: int, counts: tuple[int, ...]
) -> Evaluation | None:
    """The candidate's figures, or ``None`` when it breaks a constraint."""
    o = p.options
    tp, b, m = p.tps[ti], p.batches[bi], p.micro_batches[mi]
    pp = len(counts)
    if b % m or pp > p.max_stages or min(counts) < 1 or sum(counts) != p.num_layers:
        return None
    chips = tp * pp
    servers = p.servers_for(chips)
    if servers > p.max_servers or (o.max_chiplets is not None and chips > o.max_chiplets):
        return None
    mem, td, tpf = [], [], []
    first = 0
    for s, n in enumerate(counts):
        kc = p.kind_counts(first, first + n)
        first += n
        bytes_ = p.workspace[mi] + sum(
            c * (p.block_weight[ti][k] + p.block_kv[ti][bi][k]) for k, c in enumerate(kc)
        )
        dec = sum(c * p.block_decode[ti][mi][k] for k, c in enumerate(kc))
        pre = sum(c * p.block_prefill[ti][mi][k] for k, c in enumerate(kc))
        if s == 0:
            bytes_ += p.pre_weight[ti]
            dec += p.pre_decode[ti][mi]
            pre += p.pre_prefill[ti][mi]
        if s == pp - 1:
            bytes_ += p.tail_weight(ti, pp)
            dec += p.post_decode[ti][mi]
            pre += p.post_prefill[ti][mi]
        if bytes_ > p.capacity_bytes:
            return None
        mem.append(bytes_)
        td.append(dec)
        tpf.append(pre)
    micro = b // m
    hd_srv, hd_cl = p.hop_decode[ti][mi]
    hp_srv, hp_cl = p.hop_prefill[ti][mi]
    cross = p.cluster_hops(tp, pp)
    pipe_d = sum(td) + (pp - 1) * hd_srv + cross * (hd_cl - hd_srv)
    pipe_p = sum(tpf) + (pp - 1) * hp_srv + cross * (hp_cl - hp_srv)
    step = max(pipe_d, micro * max(td))
    prefill = pipe_p + (micro - 1) * max(tpf)
    e2e = prefill + o.gen_len * step
    if o.max_latency_s is not None and step > latency_bound(p):
        return None
    if o.min_tokens_per_s is not None and e2e > e2e_bound(p, b):
        return None
    objective = score(o.objective, servers, step, e2e, max(p.batches) // b)
    return Evaluation(
        ti,
        bi,
        mi,
        tuple(counts),
        servers,
        tuple(mem),
        tuple(td),
        tuple(tpf),
        step,
        prefill,
        e2e,
        objective,
    )


def score(objective: Objective, servers: int, step: T, e2e: T, scale: int) -> T:
    """The integer objective (lower is better); works on numbers and numpy arrays alike."""
    if objective is Objective.TCO:
        return servers * e2e * scale
    if objective is Objective.LATENCY:
        return step
    return e2e * scale


def latency_bound(p: PartitionProblem) -> int:
    """The largest decode step (time units) that meets ``max_latency_s``."""
    assert p.options.max_latency_s is not None
    return int(p.options.max_latency_s * 1e9 // p.time_unit_ns)


def e2e_bound(p: PartitionProblem, batch: int) -> int:
    """The largest end-to-end time (time units) that meets ``min_tokens_per_s``."""
    thr = p.options.min_tokens_per_s
    assert thr is not None
    return int(batch * p.options.gen_len * 1e9 / (thr * p.time_unit_ns))

"""How long one serving iteration takes on a mapped replica: the per-op physics of
``backends.perf.analytical``, evaluated at a batch that mixes prefill chunks and decode
tokens at their own context lengths.

An iteration's work is summed over its sequences into four numbers (``Batch``): new
tokens ``T``, attention products ``A = sum(q * ctx)`` (queries times the positions they
attend to), cached positions read ``R`` and sequences ``S``. Every op's FLOPs and bytes
(``Op.cost``) are affine in these four — weight bytes aside, which are read once per
pass, or for experts and embeddings depend on the tokens alone — so each op's compute
and memory time on one rank is a linear form in ``(1, T, A, R, S)``. The forms are
measured once by probing the real cost, sharding and roofline functions at six small
workloads and checked at three others (a formula that is not affine is refused, not
approximated). An iteration then costs a few small numpy products instead of a walk
over the graph, which is what lets ``serve`` replay millions of tokens in seconds.

Collective and stage-to-stage transfer times are not linear in their bytes for every
algorithm, so they are computed by the analytical model's own functions at each
iteration's bytes. The batch is cut into ``M`` equal micro-batches that flow through
the stages; from an idle pipeline an iteration takes ``path + (M - 1) x slowest`` (the
prefill formula), otherwise ``max(path, M x slowest)`` (the decode step), exactly as
``estimate`` and ``simulate`` time a static batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chipletc.backends.perf.analytical import op_time
from chipletc.backends.perf.collectives import (
    collective_time_s,
    exposed_collective_s,
    transfer_time_s,
)
from chipletc.ir.errors import IRError
from chipletc.ir.graph import Graph
from chipletc.ir.layout import (
    kv_bytes_per_token,
    stage_ops,
    stage_transfer_bytes,
    stage_transfer_level,
)
from chipletc.ir.mapping import ModelMapping
from chipletc.ir.op import Op, OpCost, OpKind
from chipletc.ir.sharding import collectives_after, rank_cost
from chipletc.ir.target import Target
from chipletc.ir.workload import Workload

__all__ = ["Batch", "IterationModel"]


@dataclass(frozen=True)
class Batch:
    """One micro-batch's work in an iteration, summed over its sequences."""

    tokens: float  # T: new tokens (1 per decoding sequence, the chunk for a prefill)
    attended: float  # A: sum of new tokens x positions they attend to
    cached: float  # R: cached positions read
    seqs: float  # S: sequences (each emits logits for its last position)

    def vector(self) -> np.ndarray:
        return np.array([1.0, self.tokens, self.attended, self.cached, self.seqs])


def _features(wl: Workload) -> np.ndarray:
    b = wl.batch
    return np.array(
        [1.0, wl.tokens, b * wl.query_len * wl.attended_len, b * wl.cached_len, float(b)]
    )


_PROBES = (
    Workload.decode(1, 1),
    Workload.decode(1, 2),
    Workload.decode(2, 1),
    Workload.prefill(1, 2),
    Workload.chunk(1, 1, 1),
    Workload.prefill(2, 3),
)
_CHECKS = (Workload.decode(3, 7), Workload.chunk(2, 5, 11), Workload.prefill(4, 9))
# kinds whose weight reads depend on the tokens (experts touched, table rows gathered)
_TOKEN_WEIGHTS = (OpKind.EXPERT_MATMUL, OpKind.EMBEDDING)


def _signature(op: Op) -> tuple:
    return (
        op.kind,
        tuple(sorted(op.dims.items())),
        op.role,
        op.shard,
        op.read_weight_bytes,
        repr(sorted((k, v) for k, v in op.attrs.items() if k != "source")),
    )


class IterationModel:
    """Iteration times of one replica (graph, target, mapping)."""

    def __init__(self, graph: Graph, target: Target, mapping: ModelMapping) -> None:
        self.graph, self.target, self.mapping = graph, target, mapping
        info = graph.info
        self._shard = (
            mapping.tp, mapping.pad_heads, info.num_heads, info.num_kv_heads, mapping.kv_layout
        )
        self._peak = target.chiplet.peak_flops(graph.compute_dtype)
        distinct: dict[tuple, int] = {}
        ops: list[Op] = []
        stages = stage_ops(graph, mapping)
        rows: list[dict[int, int]] = []
        for stage in stages:
            row: dict[int, int] = {}
            for op in stage:
                j = distinct.setdefault(_signature(op), len(ops))
                if j == len(ops):
                    ops.append(op)
                row[j] = row.get(j, 0) + 1
            rows.append(row)
        counts = np.zeros((mapping.pp, len(ops)))
        for s, row in enumerate(rows):
            for j, c in row.items():
                counts[s, j] = c
        self._ops = ops
        # stages with the same ops (every middle stage of an even split) are timed once
        kinds, self._stage_kind = np.unique(counts, axis=0, return_inverse=True)
        self._stage_kind = self._stage_kind.reshape(-1)
        self._kind_counts = kinds
        self._kind_stages = np.bincount(self._stage_kind, minlength=len(kinds)).astype(float)
        n = len(ops)
        self._compute = np.zeros((n, 5))
        self._memory = np.zeros((n, 5))
        self._overhead = np.zeros(n)
        self._token_weights = [j for j, op in enumerate(ops) if op.kind in _TOKEN_WEIGHTS]
        self._collectives: list[tuple[int, str, int, np.ndarray]] = []
        self._token_weight_memo: dict[tuple[int, int], float] = {}
        for j, op in enumerate(ops):
            self._fit(j, op)
        self._stage_kv = np.array(
            [
                kv_bytes_per_token(graph, ops, mapping.tp, mapping.pad_heads, mapping.kv_layout)
                for ops in stages
            ]
        )
        self._coef = np.vstack([self._compute, self._memory])

        # columns 2 and 3 of a form are the attention products and cached positions
        def by_tokens(form: np.ndarray) -> bool:
            return bool(np.all(np.abs(form[2:4]) <= 1e-12 * (np.abs(form).max() + 1e-300)))

        self._collectives_by_tokens = all(
            by_tokens(self._compute[j]) and by_tokens(self._memory[j]) and by_tokens(coef)
            for j, _, _, coef in self._collectives
        )
        self._collective_memo: dict[tuple[float, float], np.ndarray] = {}
        self._hop_memo: dict[float, float] = {}
        levels = [stage_transfer_level(target, mapping.tp, s) for s in range(mapping.pp - 1)]
        self._levels = [(lv, levels.count(lv)) for lv in dict.fromkeys(levels)]

    # -- measuring the linear forms ----------------------------------------------------

    def _rank(self, op: Op, wl: Workload) -> tuple[OpCost, OpCost]:
        g = self.graph
        whole = op.cost(wl, g.kv_dtype, g.act_dtype)
        return whole, rank_cost(op, whole, *self._shard)

    def _weight_memory_s(self, mine: OpCost) -> float:
        return op_time(OpCost(weight_bytes=mine.weight_bytes), self.target, self._peak).memory_s

    def _fit(self, j: int, op: Op) -> None:
        token_weights = op.kind in _TOKEN_WEIGHTS
        x, comp, mem, colls = [], [], [], []
        for wl in _PROBES + _CHECKS:
            whole, mine = self._rank(op, wl)
            t = op_time(mine, self.target, self._peak)
            x.append(_features(wl))
            comp.append(t.compute_s)
            mem.append(t.memory_s - (self._weight_memory_s(mine) if token_weights else 0.0))
            after = collectives_after(op, whole, self.mapping.tp, self.mapping.kv_layout)
            colls.append([c.bytes for c in after])
            if wl == _PROBES[0]:
                self._overhead[j] = t.overhead_s
                kinds = [(c.kind, c.group or self.mapping.tp) for c in after]
        xs = np.array(x)
        fit_rows = len(_PROBES)
        self._compute[j] = self._solve(op, xs, np.array(comp), fit_rows)
        self._memory[j] = self._solve(op, xs, np.array(mem), fit_rows)
        for c, (kind, group) in enumerate(kinds):
            ys = np.array([row[c] for row in colls])
            self._collectives.append((j, kind, group, self._solve(op, xs, ys, fit_rows)))

    @staticmethod
    def _solve(op: Op, xs: np.ndarray, ys: np.ndarray, fit_rows: int) -> np.ndarray:
        coef, *_ = np.linalg.lstsq(xs[:fit_rows], ys[:fit_rows], rcond=None)
        err = np.abs(xs @ coef - ys)
        if np.any(err > 1e-9 * np.maximum(np.abs(ys), 1e-12) + 1e-18):
            raise IRError(
                f"serve: op {op.name!r} ({op.kind.value}): its cost is not affine in the "
                "batch's tokens and contexts; the iteration model cannot time it"
            )
        return coef

    # -- what the scheduler asks -------------------------------------------------------

    @property
    def stage_kv_bytes_per_token(self) -> np.ndarray:
        """KV-cache bytes one token of one sequence takes on one rank of each stage."""
        return self._stage_kv

    def stage_seconds(self, mb: Batch) -> np.ndarray:
        """Each stage's time for one micro-batch ``mb`` (seconds, one per stage)."""
        return self._kind_seconds(mb)[self._stage_kind]

    def _kind_seconds(self, mb: Batch) -> np.ndarray:
        """The time of each distinct stage (``self._kind_counts`` rows)."""
        x = mb.vector()
        n = len(self._ops)
        both = self._coef @ x
        compute, memory = both[:n], both[n:]
        for j in self._token_weights:
            memory[j] += self._token_weight_s(j, max(1, round(mb.tokens)))
        busy = np.maximum(compute, memory) + self._overhead  # OpTime.total_s, per op
        return self._kind_counts @ (busy + self._collective_seconds(mb, busy))

    def _collective_seconds(self, mb: Batch, busy: np.ndarray) -> np.ndarray:
        """What each op's collectives add after it. Collectives follow matmuls, whose
        time and output depend on the tokens and sequences alone (checked when the
        forms were measured), so the result is memoized on those two."""
        key = (mb.tokens, mb.seqs)
        found = self._collective_memo.get(key) if self._collectives_by_tokens else None
        if found is not None:
            return found
        x = mb.vector()
        added = np.zeros(len(self._ops))
        eff = self.target.efficiency
        for j, kind, group, coef in self._collectives:
            t = collective_time_s(kind, float(coef @ x), group, self.target)
            added[j] += exposed_collective_s(t, float(busy[j]), eff)
        if self._collectives_by_tokens and len(self._collective_memo) < 100_000:
            self._collective_memo[key] = added
        return added

    def _token_weight_s(self, j: int, tokens: int) -> float:
        """Memory time of the weights ``tokens`` tokens touch (experts, table rows)."""
        found = self._token_weight_memo.get((j, tokens))
        if found is None:
            _, mine = self._rank(self._ops[j], Workload.decode(tokens, 1))
            found = self._token_weight_memo[j, tokens] = self._weight_memory_s(mine)
        return found

    def _hops_s(self, tokens: float) -> float:
        """The stage-to-stage sends of one micro-batch of ``tokens`` new tokens."""
        found = self._hop_memo.get(tokens)
        if found is None:
            nbytes = stage_transfer_bytes(self.graph, tokens)
            tp = self.mapping.tp
            found = sum(n * transfer_time_s(nbytes, lv, self.target, tp) for lv, n in self._levels)
            if len(self._hop_memo) < 100_000:
                self._hop_memo[tokens] = found
        return found

    def iteration_s(
        self, groups: Sequence[tuple[Batch, int]], from_idle: bool
    ) -> tuple[float, list[float]]:
        """One iteration whose micro-batches are ``count`` copies of each ``Batch``:
        (when the pipeline takes the next iteration, when each group's last micro-batch
        leaves the pipeline), seconds from the iteration's start.

        Micro-batch ``k`` has a path ``P_k`` (its stages and hops) and a slowest stage
        ``W_k``; all enter one behind the other, so the pipeline is busy for
        ``sum W = sum_k W_k``. A group leaves at ``max(P_k, sum W)`` when the previous
        iteration kept the pipeline busy, and at ``P_k + sum W - W_k`` from idle (it
        may be the last to enter); the next iteration starts when every group has left
        or, for a caller that does not wait for them (prompt chunks in flight), after
        ``sum W``. For equal micro-batches these are ``pipeline_times``'s decode step and
        prefill.
        """
        paths, slowest = [], []
        for mb, _ in groups:
            kinds = self._kind_seconds(mb)
            paths.append(float(self._kind_stages @ kinds) + self._hops_s(mb.tokens))
            slowest.append(float(kinds.max()))
        busy = sum(w * count for w, (_, count) in zip(slowest, groups, strict=True))
        if from_idle:
            leave = [p + busy - w for p, w in zip(paths, slowest, strict=True)]
        else:
            leave = [max(p, busy) for p in paths]
        return busy, leave

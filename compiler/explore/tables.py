"""``build_problem`` for thousands of targets and one (model, options).

``build_problem`` spends its time on what no target changes (weight and KV bytes per
tensor-parallel width, block signatures) and on ``group_time`` calls whose result
depends on the target only through the chip's peak rate and memory bandwidth, the
efficiency factors and the link level the tp group talks over. ``ProblemBuilder``
computes the first once and memoizes the second on exactly those inputs, then fills
the same tables in the same order: ``build(target) == build_problem(graph, target,
options)`` (tests/test_explore.py holds it to that). The physics stays in
``backends.perf.analytical``; nothing here times an op.

``figures`` turns a solved mapping into the analytical estimate ``compile`` reports,
from the same memoized stage times and ``analytical``'s pipeline and hop functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chipletc.backends.cost import cost_rate_usd_per_s
from chipletc.backends.perf.analytical import (
    decode_context,
    group_time,
    level_for,
    pipeline_times,
    stage_transfer_level,
    transfer_time_s,
)
from chipletc.compiler.partition.evaluate import Evaluation
from chipletc.compiler.partition.problem import (
    PartitionProblem,
    SearchOptions,
    _ns,
    _pow2_upto,
    _signature,
    candidate_tps,
)
from chipletc.ir.errors import InfeasibleError, UsageError
from chipletc.ir.graph import Graph
from chipletc.ir.op import Op
from chipletc.ir.sharding import rank_cost, rank_weight_bytes
from chipletc.ir.target import Target
from chipletc.ir.workload import Workload

__all__ = ["Figures", "ProblemBuilder"]


@dataclass(frozen=True)
class _Row:
    """Seconds of one (tp, micro-batch) on one chip physics: per kind, pre, post."""

    bd: tuple[float, ...]
    bp: tuple[float, ...]
    prd: float
    prp: float
    pod: float
    pop: float
    whole_d: float  # a stage holding everything, as build_problem's bound sums it
    whole_p: float


@dataclass(frozen=True)
class _TpTables:
    block_weight: tuple[int, ...]
    pre_weight: int
    post_weight: int
    tied_weight: int
    block_kv: tuple[tuple[int, ...], ...]  # [batch][kind]
    blocks_total0: int  # all blocks at the smallest batch
    blocks_max0: int


@dataclass(frozen=True)
class Figures:
    """What ``compile`` reports for a mapping: analytical times, then the cost."""

    prefill_s: float
    decode_s_per_token: float
    end_to_end_s: float
    tokens_per_s: float


class ProblemBuilder:
    """Partition problems of one graph and options over many targets."""

    def __init__(self, graph: Graph, options: SearchOptions) -> None:
        self.graph, self.opts = graph, options
        info = graph.info
        self.groups = graph.groups()
        L = graph.num_blocks
        if L == 0:
            raise InfeasibleError(f"model {info.name}: no transformer blocks to place")
        sigs: dict[tuple, int] = {}
        self.kind_of_block = tuple(
            sigs.setdefault(_signature(self.groups[b]), len(sigs)) for b in range(L)
        )
        reps: dict[int, int] = {}
        for b, k in enumerate(self.kind_of_block):
            reps.setdefault(k, b)
        self.reps = reps
        self.kinds = sorted(reps)
        opts = options
        self.batches = [opts.batch] if opts.batch is not None else _pow2_upto(opts.max_batch)
        if opts.micro_batch is not None:
            if all(b % opts.micro_batch for b in self.batches):
                raise UsageError(f"--micro-batch: {opts.micro_batch} divides no allowed batch")
            self.mbs = [opts.micro_batch]
        else:
            self.mbs = sorted({m for b in self.batches for m in _pow2_upto(b) if b % m == 0})
        if opts.pp is not None and opts.pp > L:
            raise UsageError(f"--pp: {opts.pp} stages for {L} layers; use 1..{L}")
        self.act_b = graph.act_dtype.bits / 8
        self.workspace = tuple(
            math.ceil(2 * m * opts.prompt_len * info.d_model * self.act_b) for m in self.mbs
        )
        self._tp: dict[int, _TpTables] = {}
        self._tps: dict[tuple[int, int], tuple[int, ...]] = {}
        self._rows: dict[tuple, _Row] = {}

    # --- what no target changes -------------------------------------------------------

    def _tp_tables(self, tp: int) -> _TpTables:
        found = self._tp.get(tp)
        if found is not None:
            return found
        g, opts, groups = self.graph, self.opts, self.groups
        heads, kvh = g.info.num_heads, g.info.num_kv_heads
        ctx_max = opts.prompt_len + opts.gen_len

        def weight_bytes(ops: list[Op], tied_copy: bool = False) -> int:
            return rank_weight_bytes(ops, tp, opts.pad_heads, heads, kvh, tied_copy)

        def kv_per_seq_token(ops: list[Op]) -> float:
            wl = Workload.decode(1, 1)
            total = 0.0
            for op in ops:
                whole = op.cost(wl, g.kv_dtype, g.act_dtype)
                total += rank_cost(op, whole, tp, opts.pad_heads, heads, kvh).kv_write_bytes
            return total

        block_weight = tuple(weight_bytes(groups[self.reps[k]]) for k in self.kinds)
        post = weight_bytes(groups["post"])
        kv_tok = [kv_per_seq_token(groups[self.reps[k]]) for k in self.kinds]
        block_kv = tuple(
            tuple(math.ceil(b * ctx_max * kv_tok[k]) for k in self.kinds) for b in self.batches
        )
        blocks0 = [block_weight[k] + block_kv[0][k] for k in self.kind_of_block]
        found = _TpTables(
            block_weight=block_weight,
            pre_weight=weight_bytes(groups["pre"]),
            post_weight=post,
            tied_weight=weight_bytes(groups["post"], True) - post,
            block_kv=block_kv,
            blocks_total0=sum(blocks0),
            blocks_max0=max(blocks0),
        )
        self._tp[tp] = found
        return found

    def _candidate_tps(self, target: Target) -> tuple[int, ...]:
        key = (target.level(target.tp_domain).domain_chips, target.chips_per_server)
        found = self._tps.get(key)
        if found is None:
            found = tuple(candidate_tps(self.graph, target, self.opts))
            self._tps[key] = found
        return found

    # --- what a target changes, memoized on what it depends on -------------------------

    def _row(self, target: Target, tp: int, m: int) -> _Row:
        """``group_time`` of each kind, pre and post at (tp, m); see the module docstring."""
        chip = target.chiplet
        level = level_for(target, tp)
        key = (tp, m, chip.peak_flops(self.graph.act_dtype), target.memory_bw_Bps,
               target.efficiency, level.bw_Bps, level.latency_s, level.topology)
        found = self._rows.get(key)
        if found is not None:
            return found
        opts, groups = self.opts, self.groups
        wl_d = Workload.decode(m, decode_context(opts.prompt_len, opts.gen_len))
        wl_p = Workload.prefill(m, opts.prompt_len)

        def t(ops: list[Op], wl: Workload) -> float:
            return group_time(self.graph, ops, target, tp, wl, opts.pad_heads).total_s

        bd = tuple(t(groups[self.reps[k]], wl_d) for k in self.kinds)
        bp = tuple(t(groups[self.reps[k]], wl_p) for k in self.kinds)
        prd, prp = t(groups["pre"], wl_d), t(groups["pre"], wl_p)
        pod, pop = t(groups["post"], wl_d), t(groups["post"], wl_p)
        found = _Row(
            bd, bp, prd, prp, pod, pop,
            whole_d=sum(bd[k] for k in self.kind_of_block) + prd + pod,
            whole_p=sum(bp[k] for k in self.kind_of_block) + prp + pop,
        )
        self._rows[key] = found
        return found

    def build(self, target: Target, cost_rate_usd_s: float | None = None) -> PartitionProblem:
        """``build_problem(graph, target, options)``; ``cost_rate_usd_s`` if known."""
        g, opts = self.graph, self.opts
        info = g.info
        tps = self._candidate_tps(target)
        if not tps:
            raise InfeasibleError(
                f"target {target.name}: no tensor-parallel width splits {info.num_heads} heads "
                f"({info.num_kv_heads} KV heads) within a server of "
                f"{target.chips_per_server} chiplets"
            )
        tabs = [self._tp_tables(tp) for tp in tps]
        L = g.num_blocks
        max_servers = min(
            target.max_servers,
            opts.max_servers or target.max_servers,
            -(-(opts.max_chiplets or 10**9) // target.chips_per_server),
        )
        chip_limit = min(opts.max_chiplets or 10**9, max_servers * target.chips_per_server)
        max_stages = min(opts.pp or L, max(1, chip_limit // min(tps)))
        cap = target.memory_capacity_bytes
        ws_min = min(self.workspace)
        tp_ok = []
        for tp, tab in zip(tps, tabs, strict=True):
            stages = min(max_stages, chip_limit // tp)
            total = tab.blocks_total0 + tab.pre_weight + tab.post_weight
            tp_ok.append(
                stages >= 1
                and total + stages * ws_min <= stages * cap
                and tab.blocks_max0 + ws_min + max(tab.pre_weight,
                                                   tab.post_weight + tab.tied_weight) <= cap
            )
        smallest_block = min(
            tab.block_weight[k] + tab.block_kv[0][k] for tab in tabs for k in self.kinds
        )
        mb_ok = [w + smallest_block <= cap for w in self.workspace]

        nk = len(self.kinds)
        zero_row = _Row((0.0,) * nk, (0.0,) * nk, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        zero_hop = (0.0, 0.0)
        rows: list[list[_Row]] = []
        hops_d: list[list[tuple[float, float]]] = []
        hops_p: list[list[tuple[float, float]]] = []
        cluster = target.link_levels()[-1]
        eff = target.efficiency.link
        bmax = max(self.batches)
        stage_ub_s, e2e_ub_s = 0.0, 0.0
        for i, tp in enumerate(tps):
            server_level = level_for(target, 2 * tp)
            r_row, d_row, p_row = [], [], []
            for j, m in enumerate(self.mbs):
                if not (tp_ok[i] and mb_ok[j]):
                    r_row.append(zero_row)
                    d_row.append(zero_hop)
                    p_row.append(zero_hop)
                    continue
                row = self._row(target, tp, m)
                bytes_d = m * info.d_model * self.act_b
                bytes_p = m * opts.prompt_len * info.d_model * self.act_b
                hd = (transfer_time_s(bytes_d, server_level, eff),
                      transfer_time_s(bytes_d, cluster, eff))
                hp = (transfer_time_s(bytes_p, server_level, eff),
                      transfer_time_s(bytes_p, cluster, eff))
                r_row.append(row)
                d_row.append(hd)
                p_row.append(hp)
                # build_problem's bounds, summed in its order (plausible pairs only: the
                # others are zero and leave the maxima alone).
                stage_ub_s = max(stage_ub_s, row.whole_d)
                stage_ub_s = max(stage_ub_s, row.whole_p)
                pipe_d = row.whole_d + (max_stages - 1) * max(hd)
                pipe_p = row.whole_p + (max_stages - 1) * max(hp)
                micro = bmax // m if bmax >= m else 1
                e2e_ub_s = max(e2e_ub_s, micro * pipe_p + opts.gen_len * micro * pipe_d)
            rows.append(r_row)
            hops_d.append(d_row)
            hops_p.append(p_row)
        unit_ns = max(1, math.ceil(e2e_ub_s * 1e9 * max_servers * bmax / 2**52))

        def q(x: float) -> int:
            return _ns(x, unit_ns)

        def table(field: str) -> tuple:
            return tuple(tuple(tuple(q(x) for x in getattr(r, field)) for r in rs)
                         for rs in rows)

        def column(field: str) -> tuple:
            return tuple(tuple(q(getattr(r, field)) for r in rs) for rs in rows)

        def hop(hops: list[list[tuple[float, float]]]) -> tuple:
            return tuple(tuple((q(a), q(b)) for a, b in hs) for hs in hops)

        rate = cost_rate_usd_s if cost_rate_usd_s is not None else cost_rate_usd_per_s(target)
        return PartitionProblem(
            options=opts,
            num_layers=L,
            kind_of_block=self.kind_of_block,
            tps=tps,
            batches=tuple(self.batches),
            micro_batches=tuple(self.mbs),
            capacity_bytes=cap,
            chips_per_server=target.chips_per_server,
            max_servers=max_servers,
            max_stages=max_stages,
            time_unit_ns=unit_ns,
            stage_ub=q(stage_ub_s) + 1,
            e2e_ub=q(e2e_ub_s) + 1,
            tp_ok=tuple(tp_ok),
            mb_ok=tuple(mb_ok),
            cost_per_server_unit=rate * unit_ns * 1e-9,
            block_weight=tuple(t.block_weight for t in tabs),
            pre_weight=tuple(t.pre_weight for t in tabs),
            post_weight=tuple(t.post_weight for t in tabs),
            tied_weight=tuple(t.tied_weight for t in tabs),
            block_kv=tuple(t.block_kv for t in tabs),
            workspace=self.workspace,
            block_decode=table("bd"),
            block_prefill=table("bp"),
            pre_decode=column("prd"),
            pre_prefill=column("prp"),
            post_decode=column("pod"),
            post_prefill=column("pop"),
            hop_decode=hop(hops_d),
            hop_prefill=hop(hops_p),
        )

    def figures(self, target: Target, p: PartitionProblem, best: Evaluation) -> Figures:
        """``estimate``'s figures for the mapping ``best``, from the memoized stage times."""
        opts, info = self.opts, self.graph.info
        tp, m = p.tps[best.ti], p.micro_batches[best.mi]
        batch = p.batches[best.bi]
        row = self._row(target, tp, m)
        first = 0
        stage_d, stage_p = [], []
        for s, n in enumerate(best.counts):
            kinds = self.kind_of_block[first:first + n]
            first += n
            dec = sum(row.bd[k] for k in kinds)
            pre = sum(row.bp[k] for k in kinds)
            if s == 0:
                dec, pre = row.prd + dec, row.prp + pre
            if s == best.pp - 1:
                dec, pre = dec + row.pod, pre + row.pop
            stage_d.append(dec)
            stage_p.append(pre)
        eff = target.efficiency.link
        levels = [stage_transfer_level(target, tp, s) for s in range(best.pp - 1)]
        hop_p = [transfer_time_s(m * opts.prompt_len * info.d_model * self.act_b, lv, eff)
                 for lv in levels]
        hop_d = [transfer_time_s(m * info.d_model * self.act_b, lv, eff) for lv in levels]
        k = batch // m
        prefill_s, _ = pipeline_times(stage_p, hop_p, k)
        _, step_s = pipeline_times(stage_d, hop_d, k)
        end_to_end = prefill_s + opts.gen_len * step_s
        return Figures(prefill_s, step_s, end_to_end, batch * opts.gen_len / end_to_end)


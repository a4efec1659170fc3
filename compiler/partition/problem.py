"""The partitioning problem as integer data, shared by the CP-SAT and exhaustive solvers.

Both solvers read only this: the candidate tp, batch and micro-batch values, and for
each the per-rank bytes and nanoseconds of every kind of block (blocks with equal op
signatures share a kind), of what precedes the blocks ("pre": embeddings) and what
follows them ("post": final norm, LM head). All numbers are integers: bytes, and time
in units of ``time_unit_ns`` nanoseconds, rounded up.

A candidate is a tp width with a KV-cache layout (``tps[i]``, ``kv_layouts[i]``):
where ranks of a tp group would share a KV cache (``ir.layout.kv_batch_ranks`` > 1:
tp beyond the KV heads of grouped or multi-query attention, or MLA's latent), tp comes
twice, replicating the shared cache (``heads``) or splitting the batch over the
sharing ranks (``batch``, which those ranks must divide the micro-batch for); the
solver picks one candidate, so CP-SAT chooses the layout with tp.

Memory of a stage on one rank is ``ir.layout``'s: weight shards + KV cache of its
layers for the whole batch at the full context + the activation workspace, and a tied
LM head's table copy on the last of several stages. Here it is cut into per-block,
"pre" and "post" pieces, each rounded up to whole bytes, so a stage's sum may exceed
``ir.layout.stage_memory`` by a few bytes (never fall short of it).

Time unit: times are integers of ``time_unit_ns`` nanoseconds, rounded up, so that
servers x end-to-end time x (max batch / batch) stays below 2**52, where CP-SAT's
floating-point LP still represents every integer exactly; with a unit of 1 the problem
is exact in whole nanoseconds (the user's units) and an OPTIMAL answer is optimal in
them. Relaxing a bound must never worsen the answer, so the unit depends on physics,
not on how loose a bound is: before the unit is chosen, the candidate batches are cut
to those whose KV cache fits the chips at all, and the server bound to the most servers
a replica can use (its widest tp over one stage per block). A ``--max-batch`` or
``max_servers`` beyond those limits gives the very same problem. Within them a looser
bound may still coarsen the unit; ``partition`` then reports FEASIBLE, not OPTIMAL
(tests/test_partition_bounds.py checks, against an exhaustive search in whole
nanoseconds, that the zoo's small models keep a unit of 1 and never get dearer when a
bound is relaxed).

Time: one micro-batch's pass through a stage, prefill at the prompt length and decode
at the mean context (``backends.perf.analytical``). tp groups tile servers (tp divides
a server's chips, or spans whole servers), so stage-to-stage hops cross the cluster
links once per server boundary the replica spans (every hop, when a tp group spans
servers) and the server links otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from chipletc.backends.perf.analytical import RankShare, group_shares, shares_time
from chipletc.backends.perf.collectives import collective_key, transfer_time_s
from chipletc.ir.errors import InfeasibleError, UsageError
from chipletc.ir.graph import Graph
from chipletc.ir.layout import (
    decode_context,
    holds_tied_copy,
    kv_batch_ranks,
    kv_bytes_per_token,
    neighbour_stage_level,
    rank_weights,
    stage_transfer_bytes,
    workspace_bytes,
)
from chipletc.ir.mapping import KVLayout
from chipletc.ir.op import Op
from chipletc.ir.sharding import check_tp
from chipletc.ir.target import Target
from chipletc.ir.workload import Workload

__all__ = [
    "Objective",
    "PartitionProblem",
    "ProblemBuilder",
    "SearchOptions",
    "StageSeconds",
    "build_problem",
    "candidate_shardings",
    "plausible",
]


class Objective(str, Enum):
    TCO = "tco"  # min dollars per generated token
    LATENCY = "latency"  # min decode time per token
    THROUGHPUT = "throughput"  # max generated tokens per second of a replica


@dataclass(frozen=True)
class SearchOptions:
    """What to search for. Field metadata is the command line's: ``flag`` where it is not
    ``--`` + the field's name, ``help``, ``metavar``, and ``divide_by`` where the flag's
    unit differs (``chipletc.cli.common.add_option_flags`` builds the flags from it)."""

    objective: Objective = field(
        default=Objective.TCO,
        metadata={
            "help": "tco: min $ per 1K generated tokens; latency: min decode time per token; "
            "throughput: max generated tokens/s"
        },
    )
    prompt_len: int = field(default=1024, metadata={"help": "prompt tokens", "metavar": "P"})
    gen_len: int = field(default=1024, metadata={"help": "generated tokens", "metavar": "G"})
    max_batch: int = field(
        default=1024,
        metadata={"help": "largest batch tried; batches are powers of two", "metavar": "B"},
    )
    max_latency_s: float | None = field(
        default=None,
        metadata={
            "flag": "--max-latency-ms",
            "divide_by": 1e3,
            "help": "bound on decode time per token",
            "metavar": "MS",
        },
    )
    min_tokens_per_s: float | None = field(
        default=None,
        metadata={
            "flag": "--min-throughput",
            "help": "bound on generated tokens/s of one replica",
            "metavar": "TOK_S",
        },
    )
    max_chiplets: int | None = field(
        default=None, metadata={"help": "use at most N chiplets", "metavar": "N"}
    )
    max_servers: int | None = field(
        default=None,
        metadata={"help": "use at most N servers (the target's max_servers bounds it too)",
                  "metavar": "N"},
    )
    tp: int | None = field(default=None, metadata={"help": "pin tp", "metavar": "N"})
    pp: int | None = field(default=None, metadata={"help": "pin pp", "metavar": "N"})
    batch: int | None = field(default=None, metadata={"help": "pin batch", "metavar": "N"})
    micro_batch: int | None = field(
        default=None, metadata={"help": "pin micro-batch", "metavar": "N"}
    )
    kv_layout: KVLayout | None = field(
        default=None,
        metadata={
            "help": "pin how ranks that share a KV cache (tp beyond the KV heads of GQA/MQA, "
            "or MLA's latent) hold it: heads (replicated) or batch (sequences split over "
            "them); default: the solver chooses",
            "metavar": "L",
        },
    )
    pad_heads: bool = field(
        default=False,
        metadata={
            "help": "allow tp that does not divide the heads, padding them (as PaLM pads 48 "
            "to 64)"
        },
    )
    # CP-SAT deterministic time (its own work unit, roughly seconds on a fast core;
    # not wall time): a run stopped by it repeats exactly
    deterministic_time_limit: float = field(
        default=20.0,
        metadata={
            "flag": "--time-limit",
            "help": "solver limit in CP-SAT deterministic seconds",
            "metavar": "S",
        },
    )

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "objective", Objective(self.objective))
        except ValueError:
            allowed = ", ".join(o.value for o in Objective)
            raise UsageError(
                f"--objective: unknown objective {self.objective!r}; use {allowed}"
            ) from None
        if self.kv_layout is not None:
            try:
                object.__setattr__(self, "kv_layout", KVLayout(self.kv_layout))
            except ValueError:
                allowed = ", ".join(k.value for k in KVLayout)
                raise UsageError(
                    f"--kv-layout: unknown layout {self.kv_layout!r}; use {allowed}"
                ) from None
        for name in ("prompt_len", "gen_len", "max_batch"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')}: must be at least 1")
        for name in ("tp", "pp", "batch", "micro_batch", "max_chiplets", "max_servers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')}: must be at least 1 ({value})")


@dataclass(frozen=True)
class PartitionProblem:
    """Integer tables indexed by candidate position (``tps[i]``, ``batches[j]`` ...)."""

    options: SearchOptions
    num_layers: int
    kind_of_block: tuple[int, ...]  # block -> kind index
    tps: tuple[int, ...]  # a candidate's tp (a tp appears once per KV layout it allows)
    kv_layouts: tuple[KVLayout, ...]  # [candidate]
    kv_ranks: tuple[int, ...]  # [candidate] ranks that split the batch (1: heads layout)
    batches: tuple[int, ...]
    micro_batches: tuple[int, ...]
    capacity_bytes: int
    chips_per_server: int
    max_servers: int
    max_stages: int
    time_unit_ns: int
    stage_ub: int  # no stage takes longer (time units)
    e2e_ub: int  # no run takes longer (time units)
    tp_ok: tuple[bool, ...]  # tp values that could hold the model at all
    mb_ok: tuple[bool, ...]  # micro-batches whose workspace leaves room for a block
    # memory per rank, bytes: [tp][kind]; pre/post [tp]; kv per block [tp][batch][kind]
    block_weight: tuple[tuple[int, ...], ...]
    pre_weight: tuple[int, ...]
    post_weight: tuple[int, ...]
    tied_weight: tuple[int, ...]  # [tp] a tied head's table copy, on the last stage if pp > 1
    block_kv: tuple[tuple[tuple[int, ...], ...], ...]
    workspace: tuple[int, ...]  # [micro_batch]
    # time per micro-batch, time units: [tp][mb][kind]; pre/post [tp][mb]
    block_decode: tuple[tuple[tuple[int, ...], ...], ...]
    block_prefill: tuple[tuple[tuple[int, ...], ...], ...]
    pre_decode: tuple[tuple[int, ...], ...]
    pre_prefill: tuple[tuple[int, ...], ...]
    post_decode: tuple[tuple[int, ...], ...]
    post_prefill: tuple[tuple[int, ...], ...]
    # stage-to-stage hop per micro-batch, time units: [tp][mb] (server, cluster level)
    hop_decode: tuple[tuple[tuple[int, int], ...], ...]
    hop_prefill: tuple[tuple[tuple[int, int], ...], ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def num_kinds(self) -> int:
        return max(self.kind_of_block) + 1

    def kind_counts(self, first: int, end: int) -> list[int]:
        """How many blocks of each kind lie in blocks ``first .. end-1``."""
        counts = [0] * self.num_kinds
        for b in range(first, end):
            counts[self.kind_of_block[b]] += 1
        return counts

    def tail_weight(self, ti: int, pp: int) -> int:
        """Bytes the last of ``pp`` stages holds beyond its blocks (tp ``tps[ti]``): what
        follows them, and a tied head's table copy (``ir.layout.holds_tied_copy``)."""
        tied = self.tied_weight[ti] if holds_tied_copy(pp - 1, pp) else 0
        return self.post_weight[ti] + tied

    def servers_for(self, chips: int) -> int:
        return -(-chips // self.chips_per_server)

    def cluster_hops(self, tp: int, pp: int) -> int:
        """Stage-to-stage hops that cross a server boundary."""
        if tp >= self.chips_per_server:
            return pp - 1
        return self.servers_for(tp * pp) - 1


def _signature(ops: list[Op]) -> tuple:
    return tuple(
        (op.kind, tuple(sorted(op.dims.items())), op.role, op.shard, op.weight_bytes) for op in ops
    )


def _pow2_upto(limit: int) -> list[int]:
    out, v = [], 1
    while v <= limit:
        out.append(v)
        v *= 2
    return out


def candidate_tps(graph: Graph, target: Target, opts: SearchOptions) -> list[int]:
    """tp values that split the heads (or pad them) and stay inside the tp link domain."""
    info = graph.info
    domain = target.level(target.tp_domain).domain_chips
    per_server = target.chips_per_server
    limit = min(domain, opts.max_chiplets or domain)
    pool = set(_pow2_upto(limit)) | {d for d in range(1, limit + 1) if info.num_heads % d == 0}
    out = []
    for tp in sorted(pool):
        if per_server % tp and tp % per_server:
            continue  # tp groups tile servers: within one, or over whole servers
        try:
            check_tp(info.num_heads, info.num_kv_heads, tp, opts.pad_heads)
        except UsageError:
            continue
        out.append(tp)
    if opts.tp is not None:
        if opts.tp not in out:
            check_tp(info.num_heads, info.num_kv_heads, opts.tp, opts.pad_heads)
            raise UsageError(
                f"--tp: {opts.tp} does not fit target {target.name}: tp must divide the "
                f"{per_server} chiplets of a server (or be a multiple of it) and stay within "
                f"the {target.tp_domain} domain ({domain} chiplets)"
            )
        out = [opts.tp]
    return out


def candidate_shardings(
    graph: Graph, target: Target, opts: SearchOptions
) -> list[tuple[int, KVLayout]]:
    """(tp, KV layout) candidates: every candidate tp with the heads layout, and with the
    batch layout too where ranks share a KV cache; ``opts.kv_layout`` keeps one."""
    out = []
    for tp in candidate_tps(graph, target, opts):
        for layout in KVLayout:
            shared = kv_batch_ranks(graph, tp) > 1
            if (layout is KVLayout.HEADS or shared) and opts.kv_layout in (None, layout):
                out.append((tp, layout))
    if not out and opts.kv_layout is KVLayout.BATCH:
        raise UsageError(
            f"--kv-layout: batch needs ranks that share a KV cache; no candidate tp of "
            f"{graph.info.name} exceeds its {graph.info.num_kv_heads} KV heads"
        )
    return out


def plausible(p: PartitionProblem, ti: int, bi: int, mi: int) -> bool:
    """Whether a (candidate, batch, micro-batch) choice is worth scoring at all."""
    m = p.micro_batches[mi]
    return p.tp_ok[ti] and p.mb_ok[mi] and p.batches[bi] % m == 0 and m % p.kv_ranks[ti] == 0


def _ns(seconds: float, unit_ns: int) -> int:
    return max(0, math.ceil(seconds * 1e9 / unit_ns - 1e-9))


@dataclass(frozen=True)
class StageSeconds:
    """Seconds of one micro-batch at one tp: per block kind, pre and post, both phases."""

    block_decode: tuple[float, ...]  # [kind]
    block_prefill: tuple[float, ...]
    pre_decode: float
    pre_prefill: float
    post_decode: float
    post_prefill: float
    whole_decode: float  # a stage holding everything: the bound of any stage
    whole_prefill: float


@dataclass(frozen=True)
class _TpTables:
    block_weight: tuple[int, ...]
    pre_weight: int
    post_weight: int
    tied_weight: int
    block_kv: tuple[tuple[int, ...], ...]  # [batch][kind]
    blocks_total0: int  # all blocks at the smallest batch
    blocks_max0: int


class ProblemBuilder:
    """Partition problems of one graph and options over many targets."""

    def __init__(self, graph: Graph, options: SearchOptions) -> None:
        self.graph, self.opts = graph, options
        info = graph.info
        self.groups = graph.groups()
        self.num_blocks = L = graph.num_blocks
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
        self.workspace = tuple(workspace_bytes(graph, m, opts.prompt_len) for m in self.mbs)
        self._tp: dict[tuple[int, KVLayout], _TpTables] = {}
        self._tps: dict[tuple[int, int], tuple[tuple[int, KVLayout], ...]] = {}
        self._rows: dict[tuple, StageSeconds] = {}
        self._shares: dict[tuple, tuple[RankShare, ...]] = {}
        self._kv_ranks: dict[int, int] = {}
        self.weight_bytes = graph.weight_bytes  # explore prunes by it on every design

    # --- what no target changes -------------------------------------------------------

    def _tp_tables(self, tp: int, layout: KVLayout) -> _TpTables:
        found = self._tp.get((tp, layout))
        if found is not None:
            return found
        g, opts, groups = self.graph, self.opts, self.groups
        ctx_max = opts.prompt_len + opts.gen_len

        def weight_bytes(ops: list[Op], tied_copy: bool = False) -> int:
            return rank_weights(g, ops, tp, opts.pad_heads, tied_copy)

        block_weight = tuple(weight_bytes(groups[self.reps[k]]) for k in self.kinds)
        post = weight_bytes(groups["post"])
        kv_tok = [
            kv_bytes_per_token(g, groups[self.reps[k]], tp, opts.pad_heads, layout)
            for k in self.kinds
        ]
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
        self._tp[tp, layout] = found
        return found

    def _streamed(self, tab: _TpTables) -> _TpTables:
        """``tab`` with no weights held: a wafer that streams them keeps only the KV
        cache and the workspace in SRAM (its stream buffer is off the capacity)."""
        blocks0 = [tab.block_kv[0][k] for k in self.kind_of_block]
        return _TpTables(
            block_weight=(0,) * len(tab.block_weight),
            pre_weight=0,
            post_weight=0,
            tied_weight=0,
            block_kv=tab.block_kv,
            blocks_total0=sum(blocks0),
            blocks_max0=max(blocks0),
        )

    def _candidates(self, target: Target) -> tuple[tuple[int, KVLayout], ...]:
        key = (target.level(target.tp_domain).domain_chips, target.chips_per_server)
        found = self._tps.get(key)
        if found is None:
            found = tuple(candidate_shardings(self.graph, target, self.opts))
            self._tps[key] = found
        return found

    def kv_ranks(self, tp: int) -> int:
        """``kv_batch_ranks`` of the graph at ``tp``, memoized."""
        found = self._kv_ranks.get(tp)
        if found is None:
            found = self._kv_ranks[tp] = kv_batch_ranks(self.graph, tp)
        return found

    # --- what a target changes, memoized on what it depends on -------------------------

    def row(
        self, target: Target, tp: int, m: int, layout: KVLayout = KVLayout.HEADS
    ) -> StageSeconds:
        """``group_time`` of each kind, pre and post at (tp, m) under the KV layout,
        memoized on what it reads of the target: peak rate, memory bandwidth,
        efficiencies, the fabric."""
        chip = target.chiplet
        key = (
            tp,
            m,
            layout,
            chip.peak_flops(self.graph.compute_dtype),
            target.memory_bw_Bps,
            target.stream_bw_Bps,
            target.efficiency,
            collective_key(target, tp),
            # a batch-split KV cache exchanges among the ranks sharing it
            collective_key(target, self.kv_ranks(tp)) if layout is KVLayout.BATCH else None,
        )
        found = self._rows.get(key)
        if found is not None:
            return found
        opts, groups = self.opts, self.groups
        wl_d = Workload.decode(m, decode_context(opts.prompt_len, opts.gen_len))
        wl_p = Workload.prefill(m, opts.prompt_len)

        def t(group: int | str, wl: Workload) -> float:
            # each op's share depends on (tp, layout, workload) only: once for every target
            shares = self._shares.get((group, tp, layout, wl))
            if shares is None:
                shares = group_shares(self.graph, groups[group], tp, wl, opts.pad_heads, layout)
                self._shares[group, tp, layout, wl] = shares
            return shares_time(self.graph, shares, target, tp).total_s

        block_d = tuple(t(self.reps[k], wl_d) for k in self.kinds)
        block_p = tuple(t(self.reps[k], wl_p) for k in self.kinds)
        pre_d, pre_p = t("pre", wl_d), t("pre", wl_p)
        post_d, post_p = t("post", wl_d), t("post", wl_p)
        found = StageSeconds(
            block_decode=block_d,
            block_prefill=block_p,
            pre_decode=pre_d,
            pre_prefill=pre_p,
            post_decode=post_d,
            post_prefill=post_p,
            whole_decode=sum(block_d[k] for k in self.kind_of_block) + pre_d + post_d,
            whole_prefill=sum(block_p[k] for k in self.kind_of_block) + pre_p + post_p,
        )
        self._rows[key] = found
        return found

    def build(self, target: Target, time_unit_ns: int | None = None) -> PartitionProblem:
        """The problem on ``target``; ``time_unit_ns`` forces the time unit (1: whole
        nanoseconds, the exact reference the tests solve exhaustively)."""
        g, opts = self.graph, self.opts
        info = g.info
        candidates = self._candidates(target)
        tps = tuple(tp for tp, _ in candidates)
        layouts = tuple(layout for _, layout in candidates)
        kv_ranks = tuple(
            self.kv_ranks(tp) if layout is KVLayout.BATCH else 1 for tp, layout in candidates
        )
        if not tps:
            raise InfeasibleError(
                f"target {target.name}: no tensor-parallel width splits {info.num_heads} heads "
                f"({info.num_kv_heads} KV heads) within a server of "
                f"{target.chips_per_server} chiplets"
            )
        tabs = [self._tp_tables(tp, layout) for tp, layout in candidates]
        if not target.weights_resident:  # streamed in: SRAM holds KV cache and workspace
            tabs = [self._streamed(tab) for tab in tabs]
        L = self.num_blocks
        # no replica uses more servers than its widest tp over one stage per block: a
        # larger bound changes nothing (and must not coarsen the time unit below)
        max_servers = min(
            target.max_servers,
            opts.max_servers or target.max_servers,
            -(-(opts.max_chiplets or 10**9) // target.chips_per_server),
            -(-(max(tps) * min(opts.pp or L, L)) // target.chips_per_server),
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
                and tab.blocks_max0
                + ws_min
                + max(tab.pre_weight, tab.post_weight + tab.tied_weight)
                <= cap
            )
        # batches whose KV cache fits some tp's chips at all (a block on a stage, and the
        # whole replica); larger ones (a --max-batch far beyond memory) are dropped before
        # the time unit is chosen, so such a bound changes nothing
        counts = [self.kind_of_block.count(k) for k in self.kinds]

        def batch_fits(j: int) -> bool:
            for tp, tab, ok in zip(tps, tabs, tp_ok, strict=True):
                per_block = [tab.block_weight[k] + tab.block_kv[j][k] for k in self.kinds]
                stages = min(max_stages, chip_limit // tp)
                whole = sum(c * b for c, b in zip(counts, per_block, strict=True))
                whole += tab.pre_weight + tab.post_weight + stages * ws_min
                if ok and min(per_block) + ws_min <= cap and whole <= stages * cap:
                    return True
            return False

        nb = max((j + 1 for j in range(len(self.batches)) if batch_fits(j)), default=1)
        batches = self.batches[:nb]
        nm = max(1, sum(1 for m in self.mbs if m <= max(batches)))
        mbs, workspace = self.mbs[:nm], self.workspace[:nm]
        smallest_block = min(
            tab.block_weight[k] + tab.block_kv[0][k] for tab in tabs for k in self.kinds
        )
        mb_ok = [w + smallest_block <= cap for w in workspace]

        nk = len(self.kinds)
        zero_row = StageSeconds((0.0,) * nk, (0.0,) * nk, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        zero_hop = (0.0, 0.0)
        rows: list[list[StageSeconds]] = []
        hops_d: list[list[tuple[float, float]]] = []
        hops_p: list[list[tuple[float, float]]] = []
        cluster = target.link_levels()[-1]
        bmax = max(batches)
        stage_ub_s, e2e_ub_s = 0.0, 0.0
        micro_max = 1  # the most micro-batches of a plausible pair
        for i, tp in enumerate(tps):
            server_level = neighbour_stage_level(target, tp)
            r_row, d_row, p_row = [], [], []
            for j, m in enumerate(mbs):
                if not (tp_ok[i] and mb_ok[j]) or m % kv_ranks[i]:
                    r_row.append(zero_row)
                    d_row.append(zero_hop)
                    p_row.append(zero_hop)
                    continue
                row = self.row(target, tp, m, layouts[i])
                bytes_d = stage_transfer_bytes(g, m)
                bytes_p = stage_transfer_bytes(g, m * opts.prompt_len)
                hd = (
                    transfer_time_s(bytes_d, server_level, target, tp),
                    transfer_time_s(bytes_d, cluster, target, tp),
                )
                hp = (
                    transfer_time_s(bytes_p, server_level, target, tp),
                    transfer_time_s(bytes_p, cluster, target, tp),
                )
                r_row.append(row)
                d_row.append(hd)
                p_row.append(hp)
                # bounds of a stage and of a whole run over the plausible pairs; the time
                # unit keeps servers x end-to-end x (max batch / batch) below 2**52, where
                # CP-SAT's floating-point LP still represents every integer exactly
                stage_ub_s = max(stage_ub_s, row.whole_decode)
                stage_ub_s = max(stage_ub_s, row.whole_prefill)
                pipe_d = row.whole_decode + (max_stages - 1) * max(hd)
                pipe_p = row.whole_prefill + (max_stages - 1) * max(hp)
                micro = bmax // m if bmax >= m else 1
                micro_max = max(micro_max, micro)
                e2e_ub_s = max(e2e_ub_s, micro * pipe_p + opts.gen_len * micro * pipe_d)
            rows.append(r_row)
            hops_d.append(d_row)
            hops_p.append(p_row)
        unit_ns = time_unit_ns or max(1, math.ceil(e2e_ub_s * 1e9 * max_servers * bmax / 2**52))

        def q(x: float) -> int:
            return _ns(x, unit_ns)

        def table(field: str) -> tuple:
            return tuple(tuple(tuple(q(x) for x in getattr(r, field)) for r in rs) for rs in rows)

        def column(field: str) -> tuple:
            return tuple(tuple(q(getattr(r, field)) for r in rs) for rs in rows)

        def hop(hops: list[list[tuple[float, float]]]) -> tuple:
            return tuple(tuple((q(a), q(b)) for a, b in hs) for hs in hops)

        return PartitionProblem(
            options=opts,
            num_layers=L,
            kind_of_block=self.kind_of_block,
            tps=tps,
            kv_layouts=layouts,
            kv_ranks=kv_ranks,
            batches=tuple(batches),
            micro_batches=tuple(mbs),
            capacity_bytes=cap,
            chips_per_server=target.chips_per_server,
            max_servers=max_servers,
            max_stages=max_stages,
            time_unit_ns=unit_ns,
            # each table entry is rounded up on its own: a stage sums up to L + 2 of them,
            # a pipeline also max_stages hops, and e2e (1 + gen_len) x micro pipelines
            stage_ub=q(stage_ub_s) + L + 3,
            e2e_ub=q(e2e_ub_s) + (L + 3 + max_stages) * micro_max * (1 + opts.gen_len),
            tp_ok=tuple(tp_ok),
            mb_ok=tuple(mb_ok),
            block_weight=tuple(t.block_weight for t in tabs),
            pre_weight=tuple(t.pre_weight for t in tabs),
            post_weight=tuple(t.post_weight for t in tabs),
            tied_weight=tuple(t.tied_weight for t in tabs),
            block_kv=tuple(t.block_kv[:nb] for t in tabs),
            workspace=workspace,
            block_decode=table("block_decode"),
            block_prefill=table("block_prefill"),
            pre_decode=column("pre_decode"),
            pre_prefill=column("pre_prefill"),
            post_decode=column("post_decode"),
            post_prefill=column("post_prefill"),
            hop_decode=hop(hops_d),
            hop_prefill=hop(hops_p),
        )


def build_problem(graph: Graph, target: Target, opts: SearchOptions) -> PartitionProblem:
    return ProblemBuilder(graph, opts).build(target)

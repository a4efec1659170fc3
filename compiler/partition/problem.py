"""The partitioning problem as integer data, shared by the CP-SAT and exhaustive solvers.

Both solvers read only this: the candidate tp, batch and micro-batch values, and for
each the per-rank bytes and nanoseconds of every kind of block (blocks with equal op
signatures share a kind), of what precedes the blocks ("pre": embeddings) and what
follows them ("post": final norm, LM head). All numbers are integers: bytes, and time
in units of ``time_unit_ns`` nanoseconds, rounded up.

Memory of a stage on one rank = weight shards + KV cache of its layers for the whole
batch at the full context (prompt + generated) + an activation workspace: two copies
of one micro-batch's prefill residual stream (attention scores and FFN intermediates are
tiled, flash-style, and not held whole).

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

from chipletc.backends.cost import cost_rate_usd_per_s
from chipletc.backends.perf.analytical import (
    decode_context,
    group_time,
    level_for,
    transfer_time_s,
)
from chipletc.ir.errors import InfeasibleError, UsageError
from chipletc.ir.graph import Graph
from chipletc.ir.op import Op
from chipletc.ir.sharding import check_tp, rank_cost, rank_weight_bytes
from chipletc.ir.target import Target
from chipletc.ir.workload import Workload

__all__ = ["Objective", "PartitionProblem", "SearchOptions", "build_problem", "plausible"]


class Objective(str, Enum):
    TCO = "tco"  # min dollars per generated token
    LATENCY = "latency"  # min decode time per token
    THROUGHPUT = "throughput"  # max generated tokens per second of a replica


@dataclass(frozen=True)
class SearchOptions:
    objective: Objective = Objective.TCO
    prompt_len: int = 1024
    gen_len: int = 1024
    max_batch: int = 1024
    max_latency_s: float | None = None  # bound on decode time per token
    min_tokens_per_s: float | None = None  # bound on generated tokens/s of a replica
    max_chiplets: int | None = None
    max_servers: int | None = None
    tp: int | None = None
    pp: int | None = None
    batch: int | None = None
    micro_batch: int | None = None
    pad_heads: bool = False
    time_limit_s: float = 20.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "objective", Objective(self.objective))
        except ValueError:
            allowed = ", ".join(o.value for o in Objective)
            raise UsageError(
                f"--objective: unknown objective {self.objective!r}; use {allowed}"
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
    tps: tuple[int, ...]
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
    cost_per_server_unit: float  # dollars per server per time unit
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


_ZERO_ROW: dict[str, object] = {
    "bd": None,
    "bp": None,
    "prd": 0.0,
    "prp": 0.0,
    "pod": 0.0,
    "pop": 0.0,
    "hd": (0.0, 0.0),
    "hp": (0.0, 0.0),
}


def plausible(p: PartitionProblem, ti: int, bi: int, mi: int) -> bool:
    """Whether a (tp, batch, micro-batch) choice is worth scoring at all."""
    return p.tp_ok[ti] and p.mb_ok[mi] and p.batches[bi] % p.micro_batches[mi] == 0


def _ns(seconds: float, unit_ns: int) -> int:
    return max(0, math.ceil(seconds * 1e9 / unit_ns - 1e-9))


def build_problem(graph: Graph, target: Target, opts: SearchOptions) -> PartitionProblem:
    info = graph.info
    groups = graph.groups()
    L = graph.num_blocks
    if L == 0:
        raise InfeasibleError(f"model {info.name}: no transformer blocks to place")
    sigs: dict[tuple, int] = {}
    kind_of_block = tuple(sigs.setdefault(_signature(groups[b]), len(sigs)) for b in range(L))
    reps: dict[int, int] = {}  # kind -> its first block, which stands for all of them
    for b, k in enumerate(kind_of_block):
        reps.setdefault(k, b)
    kinds = sorted(reps)

    tps = candidate_tps(graph, target, opts)
    if not tps:
        raise InfeasibleError(
            f"target {target.name}: no tensor-parallel width splits {info.num_heads} heads "
            f"({info.num_kv_heads} KV heads) within a server of {target.chips_per_server} chiplets"
        )
    batches = [opts.batch] if opts.batch is not None else _pow2_upto(opts.max_batch)
    if opts.micro_batch is not None:
        if all(b % opts.micro_batch for b in batches):
            raise UsageError(f"--micro-batch: {opts.micro_batch} divides no allowed batch")
        mbs = [opts.micro_batch]
    else:
        mbs = sorted({m for b in batches for m in _pow2_upto(b) if b % m == 0})

    ctx_max = opts.prompt_len + opts.gen_len
    heads, kvh = info.num_heads, info.num_kv_heads
    act_b = graph.act_dtype.bits / 8

    def weight_bytes(ops: list[Op], tp: int, tied_copy: bool = False) -> int:
        return rank_weight_bytes(ops, tp, opts.pad_heads, heads, kvh, tied_copy)

    def kv_per_seq_token(ops: list[Op], tp: int) -> float:
        """KV bytes one token of one sequence adds on one rank (attention's own rule)."""
        wl = Workload.decode(1, 1)
        total = 0.0
        for op in ops:
            whole = op.cost(wl, graph.kv_dtype, graph.act_dtype)
            total += rank_cost(op, whole, tp, opts.pad_heads, heads, kvh).kv_write_bytes
        return total

    block_weight = tuple(tuple(weight_bytes(groups[reps[k]], tp) for k in kinds) for tp in tps)
    pre_weight = tuple(weight_bytes(groups["pre"], tp) for tp in tps)
    post_weight = tuple(weight_bytes(groups["post"], tp) for tp in tps)
    tied_weight = tuple(
        weight_bytes(groups["post"], tp, True) - post
        for tp, post in zip(tps, post_weight, strict=True)
    )
    block_kv = tuple(
        tuple(
            tuple(math.ceil(b * ctx_max * kv_per_seq_token(groups[reps[k]], tp)) for k in kinds)
            for b in batches
        )
        for tp in tps
    )
    workspace = tuple(math.ceil(2 * m * opts.prompt_len * info.d_model * act_b) for m in mbs)

    max_servers = min(
        target.max_servers,
        opts.max_servers or target.max_servers,
        -(-(opts.max_chiplets or 10**9) // target.chips_per_server),
    )
    chip_limit = min(opts.max_chiplets or 10**9, max_servers * target.chips_per_server)
    if opts.pp is not None and opts.pp > L:
        raise UsageError(f"--pp: {opts.pp} stages for {L} layers; use 1..{L}")
    max_stages = min(opts.pp or L, max(1, chip_limit // min(tps)))

    # Prune what cannot hold the model at any batch (necessary conditions only, so both
    # solvers keep the same optimum): tp values whose chiplets cannot hold all blocks at
    # the smallest batch, micro-batches whose workspace leaves no room for one block.
    cap = target.memory_capacity_bytes
    ws_min = min(workspace)
    tp_ok = []
    for i, tp in enumerate(tps):
        stages = min(max_stages, chip_limit // tp)
        blocks = [block_weight[i][k] + block_kv[i][0][k] for k in kind_of_block]
        total = sum(blocks) + pre_weight[i] + post_weight[i]  # (+ tied copy if pp > 1)
        biggest = max(blocks)
        tp_ok.append(
            stages >= 1
            and total + stages * ws_min <= stages * cap
            and biggest + ws_min + max(pre_weight[i], post_weight[i] + tied_weight[i]) <= cap
        )
    smallest_block = min(
        block_weight[i][k] + block_kv[i][0][k] for i in range(len(tps)) for k in kinds
    )
    mb_ok = [w + smallest_block <= cap for w in workspace]

    # Times in seconds for the plausible (tp, micro-batch) pairs; zero elsewhere.
    ctx_dc = decode_context(opts.prompt_len, opts.gen_len)
    sec: dict[str, list] = {k: [] for k in ("bd", "bp", "prd", "prp", "pod", "pop", "hd", "hp")}
    cluster = target.link_levels()[-1]
    eff = target.efficiency.link
    for i, tp in enumerate(tps):
        rows: dict[str, list] = {k: [] for k in sec}
        server_level = level_for(target, 2 * tp)
        for j, m in enumerate(mbs):
            if not (tp_ok[i] and mb_ok[j]):
                for key, zero in _ZERO_ROW.items():
                    rows[key].append([0.0] * len(kinds) if key in ("bd", "bp") else zero)
                continue
            wl_d = Workload.decode(m, ctx_dc)
            wl_p = Workload.prefill(m, opts.prompt_len)

            def t(ops: list[Op], wl: Workload, tp: int = tp) -> float:
                return group_time(graph, ops, target, tp, wl, opts.pad_heads).total_s

            rows["bd"].append([t(groups[reps[k]], wl_d) for k in kinds])
            rows["bp"].append([t(groups[reps[k]], wl_p) for k in kinds])
            rows["prd"].append(t(groups["pre"], wl_d))
            rows["prp"].append(t(groups["pre"], wl_p))
            rows["pod"].append(t(groups["post"], wl_d))
            rows["pop"].append(t(groups["post"], wl_p))
            bytes_d = m * info.d_model * act_b
            bytes_p = m * opts.prompt_len * info.d_model * act_b
            rows["hd"].append(
                (
                    transfer_time_s(bytes_d, server_level, eff),
                    transfer_time_s(bytes_d, cluster, eff),
                )
            )
            rows["hp"].append(
                (
                    transfer_time_s(bytes_p, server_level, eff),
                    transfer_time_s(bytes_p, cluster, eff),
                )
            )
        for k in sec:
            sec[k].append(rows[k])

    # Upper bounds of a stage and of a whole run, in seconds, over the plausible pairs;
    # the time unit keeps servers x end-to-end x (max batch / batch) below 2**52, where
    # CP-SAT's floating-point LP still represents every integer exactly.
    bmax = max(batches)
    stage_ub_s, e2e_ub_s = 0.0, 0.0
    for i in range(len(tps)):
        for j, m in enumerate(mbs):
            pipe = {}
            for phase, blk, a, b, hop in (
                ("d", "bd", "prd", "pod", "hd"),
                ("p", "bp", "prp", "pop", "hp"),
            ):
                whole = sum(sec[blk][i][j][k] for k in kind_of_block) + sec[a][i][j] + sec[b][i][j]
                stage_ub_s = max(stage_ub_s, whole)
                pipe[phase] = whole + (max_stages - 1) * max(sec[hop][i][j])
            micro = bmax // m if bmax >= m else 1
            e2e_ub_s = max(e2e_ub_s, micro * pipe["p"] + opts.gen_len * micro * pipe["d"])
    unit_ns = max(1, math.ceil(e2e_ub_s * 1e9 * max_servers * bmax / 2**52))

    def q(x: float) -> int:
        return _ns(x, unit_ns)

    def q2(pair: tuple[float, float]) -> tuple[int, int]:
        return (q(pair[0]), q(pair[1]))

    return PartitionProblem(
        options=opts,
        num_layers=L,
        kind_of_block=kind_of_block,
        tps=tuple(tps),
        batches=tuple(batches),
        micro_batches=tuple(mbs),
        capacity_bytes=target.memory_capacity_bytes,
        chips_per_server=target.chips_per_server,
        max_servers=max_servers,
        max_stages=max_stages,
        time_unit_ns=unit_ns,
        stage_ub=q(stage_ub_s) + 1,
        e2e_ub=q(e2e_ub_s) + 1,
        tp_ok=tuple(tp_ok),
        mb_ok=tuple(mb_ok),
        cost_per_server_unit=cost_rate_usd_per_s(target) * unit_ns * 1e-9,
        block_weight=block_weight,
        pre_weight=pre_weight,
        post_weight=post_weight,
        tied_weight=tied_weight,
        block_kv=block_kv,
        workspace=workspace,
        block_decode=tuple(tuple(tuple(q(x) for x in r) for r in rows) for rows in sec["bd"]),
        block_prefill=tuple(tuple(tuple(q(x) for x in r) for r in rows) for rows in sec["bp"]),
        pre_decode=tuple(tuple(q(x) for x in rows) for rows in sec["prd"]),
        pre_prefill=tuple(tuple(q(x) for x in rows) for rows in sec["prp"]),
        post_decode=tuple(tuple(q(x) for x in rows) for rows in sec["pod"]),
        post_prefill=tuple(tuple(q(x) for x in rows) for rows in sec["pop"]),
        hop_decode=tuple(tuple(q2(x) for x in rows) for rows in sec["hd"]),
        hop_prefill=tuple(tuple(q2(x) for x in rows) for rows in sec["hp"]),
    )

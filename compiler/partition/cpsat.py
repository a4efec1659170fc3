"""The CP-SAT model of the partitioning problem.

Read top to bottom: data (a ``PartitionProblem``), variables, constraints (choices,
stages, servers, memory, time, user bounds), objective, hints, solve, extract; one
function per concern, in the order ``solve_cpsat`` calls them (the order fixes the
model CP-SAT sees, hence its deterministic answer). Names match the solver's (``n[s]``
is ``"n_s"``).

Variables
    use_tp[i], use_b[j], use_m[k]   one-hot choices of the (tp, KV layout) candidate,
                                    batch, micro-batch
    on[s]                           stage slot s is used; pp = sum(on)
    n[s]                            blocks in stage s (contiguous, in order)
    cnt[s, kind]                    blocks of each kind in stage s (element constraints on
                                    prefix counts; only when blocks are unlike)
    servers                         ceil(tp * pp / chips per server)
    dec[s], pre[s]                  stage times; dec_max, pre_max their maxima
    step, prefill, e2e              the pipeline figures of ``evaluate``

The products the figures need (tp x pp, blocks x per-block cost, M x slowest stage)
become linear once a one-hot pair is fixed, so each is written once per pair and
enforced by that pair's literal. Only tco keeps one true product, servers x e2e.
Middle stages of alike blocks are interchangeable: they are ordered by size (symmetry
breaking). The solver runs on one worker with a fixed seed, so results repeat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from .evaluate import e2e_bound, evaluate, latency_bound
from .problem import Objective, PartitionProblem
from .result import SolveResult
from .seed import greedy_seed

__all__ = ["solve_cpsat"]

_STATUS = {
    cp_model.OPTIMAL: "OPTIMAL",
    cp_model.FEASIBLE: "FEASIBLE",
    cp_model.INFEASIBLE: "INFEASIBLE",
    cp_model.MODEL_INVALID: "MODEL_INVALID",
    cp_model.UNKNOWN: "UNKNOWN",
}


@dataclass
class _Vars:
    """The model and its variables, filled in by the functions below in order."""

    m: cp_model.CpModel
    use_tp: list[cp_model.IntVar]
    use_b: list[cp_model.IntVar]
    use_m: list[cp_model.IntVar]
    on: list[cp_model.IntVar]
    n: list[cp_model.IntVar]
    last: list[cp_model.IntVar]
    servers: cp_model.IntVar
    T: list[int]  # tp positions the problem allows
    M: list[int]  # micro-batch positions the problem allows
    z_tb: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    z_tm: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    z_bm: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    cnt: list[list[cp_model.LinearExprT]] = field(default_factory=list)
    step: cp_model.IntVar | None = None
    e2e: cp_model.IntVar | None = None

    @property
    def pp(self) -> cp_model.LinearExprT:
        return sum(self.on)


def solve_cpsat(p: PartitionProblem) -> SolveResult:
    start = time.perf_counter()
    v = _variables(p)
    _choices(p, v)
    _stages(p, v)
    _servers(p, v)
    _memory(p, v)
    _time(p, v)
    _user_bounds(p, v)
    objective = _objective(p, v)
    _hints(p, v)
    return _solve_and_extract(p, v, objective, start)


def _variables(p: PartitionProblem) -> _Vars:
    """The decision variables of the module docstring (the pair literals come later)."""
    L, S = p.num_layers, p.max_stages
    m = cp_model.CpModel()
    return _Vars(
        m=m,
        use_tp=[m.new_bool_var(f"use_tp_{i}") for i in range(len(p.tps))],
        use_b=[m.new_bool_var(f"use_b_{j}") for j in range(len(p.batches))],
        use_m=[m.new_bool_var(f"use_m_{k}") for k in range(len(p.micro_batches))],
        on=[m.new_bool_var(f"on_{s}") for s in range(S)],
        n=[m.new_int_var(0, L, f"n_{s}") for s in range(S)],
        last=[m.new_bool_var(f"last_{s}") for s in range(S)],
        servers=m.new_int_var(1, p.max_servers, "servers"),
        T=[i for i in range(len(p.tps)) if p.tp_ok[i]],
        M=[k for k in range(len(p.micro_batches)) if p.mb_ok[k]],
    )


def _choices(p: PartitionProblem, v: _Vars) -> None:
    """Exactly one tp, batch, micro-batch; micro-batch divides batch; pair literals."""
    m = v.m
    m.add_exactly_one(v.use_tp)
    m.add_exactly_one(v.use_b)
    m.add_exactly_one(v.use_m)
    # choices the problem ruled out (they cannot hold the model at any batch)
    for i, ok in enumerate(p.tp_ok):
        if not ok:
            m.add(v.use_tp[i] == 0)
    for k, ok in enumerate(p.mb_ok):
        if not ok:
            m.add(v.use_m[k] == 0)
    B = range(len(p.batches))
    for j in B:
        for k in v.M:
            if p.batches[j] % p.micro_batches[k]:
                m.add_bool_or([v.use_b[j].Not(), v.use_m[k].Not()])
    # a batch-split KV cache: the sharing ranks divide the micro-batch
    for i in v.T:
        for k in v.M:
            if p.micro_batches[k] % p.kv_ranks[i]:
                m.add_bool_or([v.use_tp[i].Not(), v.use_m[k].Not()])

    def pair(a: cp_model.IntVar, b: cp_model.IntVar, name: str) -> cp_model.IntVar:
        """z = a and b: products with one choice fixed become linear under z."""
        z = m.new_bool_var(name)
        m.add_bool_and([a, b]).only_enforce_if(z)
        m.add_bool_or([a.Not(), b.Not(), z])
        return z

    v.z_tb = {(i, j): pair(v.use_tp[i], v.use_b[j], f"z_tb_{i}_{j}") for i in v.T for j in B}
    v.z_tm = {(i, k): pair(v.use_tp[i], v.use_m[k], f"z_tm_{i}_{k}") for i in v.T for k in v.M}
    v.z_bm = {
        (j, k): pair(v.use_b[j], v.use_m[k], f"z_bm_{j}_{k}")
        for j in B
        for k in v.M
        if p.batches[j] % p.micro_batches[k] == 0
    }


def _stages(p: PartitionProblem, v: _Vars) -> None:
    """on[0]; used slots come first; sum n = L; n[s] >= 1 iff on[s]; last[s] = on[s] and
    not on[s+1]; cnt[s][kind] = prefix_kind[end_s] - prefix_kind[start_s]."""
    m, on, n, last = v.m, v.on, v.n, v.last
    L, S, K = p.num_layers, p.max_stages, p.num_kinds
    m.add(on[0] == 1)
    for s in range(S - 1):
        m.add_implication(on[s + 1], on[s])
    for s in range(S):
        m.add(n[s] >= 1).only_enforce_if(on[s])
        m.add(n[s] == 0).only_enforce_if(on[s].Not())
        nxt = on[s + 1] if s + 1 < S else None
        if nxt is None:
            m.add(last[s] == on[s])
        else:
            m.add_bool_and([on[s], nxt.Not()]).only_enforce_if(last[s])
            m.add_bool_or([on[s].Not(), nxt, last[s]])
    m.add(sum(n) == L)
    if p.options.pp is not None:
        m.add(v.pp == p.options.pp)

    if K == 1:
        v.cnt = [[n[s]] for s in range(S)]
        # symmetry breaking: middle stages (not first, not last) of alike blocks are
        # interchangeable, so take them in non-increasing size
        for s in range(1, S - 1):
            if s + 2 <= S - 1:
                m.add(n[s] >= n[s + 1]).only_enforce_if(on[s + 2])
        return
    prefix = [[0] * (L + 1) for _ in range(K)]
    for b, kind in enumerate(p.kind_of_block):
        for k in range(K):
            prefix[k][b + 1] = prefix[k][b] + (1 if kind == k else 0)
    offset: cp_model.LinearExprT = 0
    for s in range(S):
        end = offset + n[s]
        start_v = m.new_int_var(0, L, f"start_{s}")
        end_v = m.new_int_var(0, L, f"end_{s}")
        m.add(start_v == offset)
        m.add(end_v == end)
        row = []
        for k in range(K):
            a = m.new_int_var(0, L, f"pa_{s}_{k}")
            b_ = m.new_int_var(0, L, f"pb_{s}_{k}")
            m.add_element(start_v, prefix[k], a)
            m.add_element(end_v, prefix[k], b_)
            row.append(b_ - a)
        v.cnt.append(row)
        offset = end


def _servers(p: PartitionProblem, v: _Vars) -> None:
    """servers = ceil(tp * pp / chips per server); tp * pp <= max chiplets."""
    cps, pp = p.chips_per_server, v.pp
    for i in v.T:
        tp = p.tps[i]
        v.m.add(v.servers * cps >= tp * pp).only_enforce_if(v.use_tp[i])
        v.m.add(v.servers * cps <= tp * pp + cps - 1).only_enforce_if(v.use_tp[i])
        if p.options.max_chiplets is not None:
            v.m.add(tp * pp <= p.options.max_chiplets).only_enforce_if(v.use_tp[i])


def _memory(p: PartitionProblem, v: _Vars) -> None:
    """Each stage's bytes on one rank fit the chiplet, for the chosen (tp, batch):
    sum_kind cnt[s,kind] (weight + kv) + (s == 0) pre + last[s] tail + workspace <= cap."""
    K, S = p.num_kinds, p.max_stages
    workspace = sum(p.workspace[k] * v.use_m[k] for k in v.M)
    for (i, j), z in v.z_tb.items():
        per_kind = [p.block_weight[i][k] + p.block_kv[i][j][k] for k in range(K)]
        for s in range(S):
            used = sum(c * w for c, w in zip(v.cnt[s], per_kind, strict=True))
            extra = p.pre_weight[i] if s == 0 else 0
            # when stage s is the last, pp = s + 1: its tail (with a tied table's copy
            # unless it is also the first stage) is the problem's for that depth
            tail = p.tail_weight(i, pp=s + 1)
            used_all = used + extra + tail * v.last[s] + workspace
            v.m.add(used_all <= p.capacity_bytes).only_enforce_if(z)


def _time(p: PartitionProblem, v: _Vars) -> None:
    """Stage maxima, pipeline sums with hops, then step and e2e as ``evaluate``'s."""
    m, S, cps = v.m, p.max_stages, p.chips_per_server
    # dec_max, pre_max >= every stage's time (decode, prefill):
    #   stage s = sum_kind cnt[s,kind] t_block + (s == 0) t_pre + last[s] t_post
    dec_max = m.new_int_var(0, p.stage_ub, "dec_max")
    pre_max = m.new_int_var(0, p.stage_ub, "pre_max")
    for (i, k), z in v.z_tm.items():
        for s in range(S):
            d_blocks = sum(c * t for c, t in zip(v.cnt[s], p.block_decode[i][k], strict=True))
            p_blocks = sum(c * t for c, t in zip(v.cnt[s], p.block_prefill[i][k], strict=True))
            d0 = p.pre_decode[i][k] if s == 0 else 0
            p0 = p.pre_prefill[i][k] if s == 0 else 0
            m.add(dec_max >= d_blocks + d0 + p.post_decode[i][k] * v.last[s]).only_enforce_if(z)
            m.add(pre_max >= p_blocks + p0 + p.post_prefill[i][k] * v.last[s]).only_enforce_if(z)

    # pipe = all stage times (the same for any split) + hops, cluster ones dearer
    big, pp = p.e2e_ub, v.pp
    pipe_d = m.new_int_var(0, big, "pipe_d")
    pipe_p = m.new_int_var(0, big, "pipe_p")
    sum_d, sum_p = {}, {}
    for (i, k), z in v.z_tm.items():
        sum_d[i, k] = _all_stages(p, p.block_decode[i][k], p.pre_decode[i][k], p.post_decode[i][k])
        sum_p[i, k] = _all_stages(
            p, p.block_prefill[i][k], p.pre_prefill[i][k], p.post_prefill[i][k]
        )
        hd_srv, hd_cl = p.hop_decode[i][k]
        hp_srv, hp_cl = p.hop_prefill[i][k]
        # hops crossing servers: servers - 1, or all of them when tp spans servers
        cross = pp - 1 if p.tps[i] >= cps else v.servers - 1
        hops_d = (pp - 1) * hd_srv + cross * (hd_cl - hd_srv)
        hops_p = (pp - 1) * hp_srv + cross * (hp_cl - hp_srv)
        m.add(pipe_d >= sum_d[i, k] + hops_d).only_enforce_if(z)
        m.add(pipe_p >= sum_p[i, k] + hops_p).only_enforce_if(z)
    # the same without hops, as cuts without big-M: they tighten the LP bound
    m.add(pipe_d >= sum(z * sum_d[key] for key, z in v.z_tm.items()))
    m.add(pipe_p >= sum(z * sum_p[key] for key, z in v.z_tm.items()))

    # step >= max(pipe_d, M dec_max); prefill >= pipe_p + (M - 1) pre_max; M = b / m
    step = m.new_int_var(0, big, "step")
    prefill = m.new_int_var(0, big, "prefill")
    m.add(step >= pipe_d)
    m.add(prefill >= pipe_p)
    for (j, k), z in v.z_bm.items():
        micro = p.batches[j] // p.micro_batches[k]
        m.add(step >= micro * dec_max).only_enforce_if(z)
        m.add(prefill >= pipe_p + (micro - 1) * pre_max).only_enforce_if(z)
    e2e = m.new_int_var(0, big, "e2e")
    m.add(e2e == prefill + p.options.gen_len * step)
    v.step, v.e2e = step, e2e


def _user_bounds(p: PartitionProblem, v: _Vars) -> None:
    """step <= the latency bound; e2e <= the throughput bound of the batch; pins."""
    o, m = p.options, v.m
    assert v.step is not None and v.e2e is not None
    if o.max_latency_s is not None:
        m.add(v.step <= latency_bound(p))
    if o.min_tokens_per_s is not None:
        for j, lit in enumerate(v.use_b):
            m.add(v.e2e <= e2e_bound(p, p.batches[j])).only_enforce_if(lit)
    for name, values, lits in (
        ("tp", p.tps, v.use_tp),
        ("batch", p.batches, v.use_b),
        ("micro_batch", p.micro_batches, v.use_m),
    ):
        pin = getattr(o, name)
        if pin is not None:
            for value, lit in zip(values, lits, strict=True):
                if value != pin:
                    m.add(lit == 0)


def _objective(p: PartitionProblem, v: _Vars) -> cp_model.IntVar:
    """``evaluate.score``: step, or (max batch / batch) x [servers x] e2e."""
    o, m = p.options, v.m
    assert v.step is not None and v.e2e is not None
    big, bmax = p.e2e_ub, max(p.batches)
    if o.objective is Objective.LATENCY:
        objective = v.step
    else:
        if o.objective is Objective.TCO:
            cost = m.new_int_var(0, p.max_servers * big, "servers_x_e2e")
            m.add_multiplication_equality(cost, [v.servers, v.e2e])
        else:
            cost = v.e2e
        # objective = (max batch / batch) x cost, as a product: the same relation
        # written as one equality per batch, each enforced by its batch literal, led
        # CP-SAT's presolve to drop feasible batches
        scale = m.new_int_var(1, bmax, "scale")
        m.add(scale == sum((bmax // b) * lit for b, lit in zip(p.batches, v.use_b, strict=True)))
        objective = m.new_int_var(0, p.max_servers * big * bmax, "objective")
        m.add_multiplication_equality(objective, [scale, cost])
    m.minimize(objective)
    return objective


def _hints(p: PartitionProblem, v: _Vars) -> None:
    """A greedy mapping, so the search starts from a good incumbent."""
    seed = greedy_seed(p)
    if seed is None:
        return
    m = v.m
    for i, lit in enumerate(v.use_tp):
        m.add_hint(lit, i == seed.ti)
    for j, lit in enumerate(v.use_b):
        m.add_hint(lit, j == seed.bi)
    for k, lit in enumerate(v.use_m):
        m.add_hint(lit, k == seed.mi)
    for s in range(p.max_stages):
        m.add_hint(v.on[s], s < seed.pp)
        m.add_hint(v.n[s], seed.counts[s] if s < seed.pp else 0)
    m.add_hint(v.servers, seed.servers)


def _solve_and_extract(
    p: PartitionProblem, v: _Vars, objective: cp_model.IntVar, start: float
) -> SolveResult:
    """One worker, a fixed seed and a deterministic limit, so that a run stopped by the
    limit still repeats exactly; the solution is re-scored by ``evaluate``."""
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    solver.parameters.max_deterministic_time = p.options.deterministic_time_limit
    code = solver.solve(v.m)
    wall = time.perf_counter() - start
    status = _STATUS.get(code, "UNKNOWN")
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return SolveResult(status, None, None, None, wall, None, "cpsat")

    ti = next(i for i, lit in enumerate(v.use_tp) if solver.value(lit))
    bi = next(j for j, lit in enumerate(v.use_b) if solver.value(lit))
    mi = next(k for k, lit in enumerate(v.use_m) if solver.value(lit))
    counts = tuple(solver.value(v.n[s]) for s in range(p.max_stages) if solver.value(v.on[s]))
    best = evaluate(p, ti, bi, mi, counts)
    # The model bounds maxima from below only, so it may overstate a solution stopped
    # early; evaluate() scores it exactly, and at the optimum the two agree.
    model_value = solver.value(objective)
    if best is None or best.objective > model_value:
        raise AssertionError(
            f"cpsat: solution {counts} scores {best and best.objective} in evaluate, "
            f"{model_value} in the model"
        )
    bound = round(solver.best_objective_bound)
    gap = 0.0 if best.objective == 0 else max(0.0, (best.objective - bound) / best.objective)
    return SolveResult(status, best.objective, bound, gap, wall, best, "cpsat")


def _all_stages(p: PartitionProblem, per_kind: tuple[int, ...], pre: int, post: int) -> int:
    """Every block and both ends once: the sum of stage times for any split."""
    return sum(per_kind[kind] for kind in p.kind_of_block) + pre + post

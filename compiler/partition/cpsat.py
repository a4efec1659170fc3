"""The CP-SAT model of the partitioning problem.

Read top to bottom: data (a ``PartitionProblem``), variables, constraints, objective,
solve, extract. Names match the solver's (``n[s]`` is ``"n_s"``).

Variables
    use_tp[i], use_b[j], use_m[k]   one-hot choices of tp, batch, micro-batch
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


def solve_cpsat(p: PartitionProblem) -> SolveResult:
    start = time.perf_counter()
    o = p.options
    L, S, K = p.num_layers, p.max_stages, p.num_kinds
    T: list[int] = list(range(len(p.tps)))
    B: list[int] = list(range(len(p.batches)))
    M: list[int] = list(range(len(p.micro_batches)))
    m = cp_model.CpModel()

    # -- variables -------------------------------------------------------------------
    use_tp = [m.new_bool_var(f"use_tp_{i}") for i in T]
    use_b = [m.new_bool_var(f"use_b_{j}") for j in B]
    use_m = [m.new_bool_var(f"use_m_{k}") for k in M]
    on = [m.new_bool_var(f"on_{s}") for s in range(S)]
    n = [m.new_int_var(0, L, f"n_{s}") for s in range(S)]
    last = [m.new_bool_var(f"last_{s}") for s in range(S)]
    pp = sum(on)
    servers = m.new_int_var(1, p.max_servers, "servers")

    # -- choices: exactly one tp, batch, micro-batch; micro-batch divides batch ---------
    m.add_exactly_one(use_tp)
    m.add_exactly_one(use_b)
    m.add_exactly_one(use_m)
    # choices the problem ruled out (they cannot hold the model at any batch)
    for i in T:
        if not p.tp_ok[i]:
            m.add(use_tp[i] == 0)
    for k in M:
        if not p.mb_ok[k]:
            m.add(use_m[k] == 0)
    T = [i for i in T if p.tp_ok[i]]
    M = [k for k in M if p.mb_ok[k]]
    for j in B:
        for k in M:
            if p.batches[j] % p.micro_batches[k]:
                m.add_bool_or([use_b[j].Not(), use_m[k].Not()])

    def pair(a: cp_model.IntVar, b: cp_model.IntVar, name: str) -> cp_model.IntVar:
        """z = a and b."""
        z = m.new_bool_var(name)
        m.add_bool_and([a, b]).only_enforce_if(z)
        m.add_bool_or([a.Not(), b.Not(), z])
        return z

    z_tb = {(i, j): pair(use_tp[i], use_b[j], f"z_tb_{i}_{j}") for i in T for j in B}
    z_tm = {(i, k): pair(use_tp[i], use_m[k], f"z_tm_{i}_{k}") for i in T for k in M}
    z_bm = {
        (j, k): pair(use_b[j], use_m[k], f"z_bm_{j}_{k}")
        for j in B
        for k in M
        if p.batches[j] % p.micro_batches[k] == 0
    }

    # -- stages: on[0]; used slots come first; sum n = L; n[s] >= 1 iff on[s] -----------
    m.add(on[0] == 1)
    for s in range(S - 1):
        m.add_implication(on[s + 1], on[s])
    for s in range(S):
        m.add(n[s] >= 1).only_enforce_if(on[s])
        m.add(n[s] == 0).only_enforce_if(on[s].Not())
        nxt = on[s + 1] if s + 1 < S else None
        # last[s] = on[s] and not on[s+1]
        if nxt is None:
            m.add(last[s] == on[s])
        else:
            m.add_bool_and([on[s], nxt.Not()]).only_enforce_if(last[s])
            m.add_bool_or([on[s].Not(), nxt, last[s]])
    m.add(sum(n) == L)
    if o.pp is not None:
        m.add(pp == o.pp)

    # blocks of each kind per stage: cnt[s][k] = prefix_k[end_s] - prefix_k[start_s]
    if K == 1:
        cnt = [[n[s]] for s in range(S)]
    else:
        prefix = [[0] * (L + 1) for _ in range(K)]
        for b, kind in enumerate(p.kind_of_block):
            for k in range(K):
                prefix[k][b + 1] = prefix[k][b] + (1 if kind == k else 0)
        cnt = []
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
            cnt.append(row)
            offset = end
    if K == 1:
        # symmetry breaking: middle stages (not first, not last) in non-increasing size
        for s in range(1, S - 1):
            if s + 2 <= S - 1:
                m.add(n[s] >= n[s + 1]).only_enforce_if(on[s + 2])

    # -- servers = ceil(tp * pp / chips per server); chiplet bound ------------------
    cps = p.chips_per_server
    for i in T:
        tp = p.tps[i]
        m.add(servers * cps >= tp * pp).only_enforce_if(use_tp[i])
        m.add(servers * cps <= tp * pp + cps - 1).only_enforce_if(use_tp[i])
        if o.max_chiplets is not None:
            m.add(tp * pp <= o.max_chiplets).only_enforce_if(use_tp[i])

    # -- memory: each stage's bytes on one rank fit the chiplet ---------------------------
    workspace = sum(p.workspace[k] * use_m[k] for k in M)
    for (i, j), z in z_tb.items():
        per_kind = [p.block_weight[i][k] + p.block_kv[i][j][k] for k in range(K)]
        for s in range(S):
            used = sum(c * w for c, w in zip(cnt[s], per_kind, strict=True))
            extra = p.pre_weight[i] if s == 0 else 0
            # the last stage holds what follows the blocks, and a tied table's copy
            # unless it is also the first stage (which holds the table itself)
            post = p.post_weight[i] + (p.tied_weight[i] if s > 0 else 0)
            m.add(used + extra + post * last[s] + workspace <= p.capacity_bytes).only_enforce_if(z)

    # -- stage times: dec_max, pre_max >= every stage's time (decode, prefill) ----------
    #    stage s: sum_kind cnt[s,kind] * t_block + (s == 0) t_pre + last[s] t_post
    dec_max = m.new_int_var(0, p.stage_ub, "dec_max")
    pre_max = m.new_int_var(0, p.stage_ub, "pre_max")
    for (i, k), z in z_tm.items():
        for s in range(S):
            d_blocks = sum(c * t for c, t in zip(cnt[s], p.block_decode[i][k], strict=True))
            p_blocks = sum(c * t for c, t in zip(cnt[s], p.block_prefill[i][k], strict=True))
            d0 = p.pre_decode[i][k] if s == 0 else 0
            p0 = p.pre_prefill[i][k] if s == 0 else 0
            m.add(dec_max >= d_blocks + d0 + p.post_decode[i][k] * last[s]).only_enforce_if(z)
            m.add(pre_max >= p_blocks + p0 + p.post_prefill[i][k] * last[s]).only_enforce_if(z)

    # -- pipeline: every block once, plus hops; step and prefill with M micro-batches ---
    #    pipe = all stage times (the same for any split) + hops, cluster ones dearer
    big = p.e2e_ub
    pipe_d = m.new_int_var(0, big, "pipe_d")
    pipe_p = m.new_int_var(0, big, "pipe_p")
    sum_d, sum_p = {}, {}
    for (i, k), z in z_tm.items():
        sum_d[i, k] = _all_stages(p, p.block_decode[i][k], p.pre_decode[i][k], p.post_decode[i][k])
        sum_p[i, k] = _all_stages(
            p, p.block_prefill[i][k], p.pre_prefill[i][k], p.post_prefill[i][k]
        )
        hd_srv, hd_cl = p.hop_decode[i][k]
        hp_srv, hp_cl = p.hop_prefill[i][k]
        # hops crossing servers: servers - 1, or all of them when tp spans servers
        cross = pp - 1 if p.tps[i] >= cps else servers - 1
        hops_d = (pp - 1) * hd_srv + cross * (hd_cl - hd_srv)
        hops_p = (pp - 1) * hp_srv + cross * (hp_cl - hp_srv)
        m.add(pipe_d >= sum_d[i, k] + hops_d).only_enforce_if(z)
        m.add(pipe_p >= sum_p[i, k] + hops_p).only_enforce_if(z)
    # the same without hops, as cuts without big-M: they tighten the LP bound
    m.add(pipe_d >= sum(z * sum_d[key] for key, z in z_tm.items()))
    m.add(pipe_p >= sum(z * sum_p[key] for key, z in z_tm.items()))
    step = m.new_int_var(0, big, "step")
    prefill = m.new_int_var(0, big, "prefill")
    m.add(step >= pipe_d)
    m.add(prefill >= pipe_p)
    for (j, k), z in z_bm.items():
        micro = p.batches[j] // p.micro_batches[k]
        m.add(step >= micro * dec_max).only_enforce_if(z)
        m.add(prefill >= pipe_p + (micro - 1) * pre_max).only_enforce_if(z)
    e2e = m.new_int_var(0, big, "e2e")
    m.add(e2e == prefill + o.gen_len * step)

    # -- user bounds -----------------------------------------------------------------
    if o.max_latency_s is not None:
        m.add(step <= latency_bound(p))
    if o.min_tokens_per_s is not None:
        for j in B:
            m.add(e2e <= e2e_bound(p, p.batches[j])).only_enforce_if(use_b[j])
    for name, values, lits in (
        ("tp", p.tps, use_tp),
        ("batch", p.batches, use_b),
        ("micro_batch", p.micro_batches, use_m),
    ):
        pin = getattr(o, name)
        if pin is not None:
            for v, lit in zip(values, lits, strict=True):
                if v != pin:
                    m.add(lit == 0)

    # -- objective ---------------------------------------------------------------------
    bmax = max(p.batches)
    if o.objective is Objective.LATENCY:
        objective = step
    else:
        if o.objective is Objective.TCO:
            cost = m.new_int_var(0, p.max_servers * big, "servers_x_e2e")
            m.add_multiplication_equality(cost, [servers, e2e])
        else:
            cost = e2e
        # objective = (max batch / batch) x cost, as a product: the same relation
        # written as one equality per batch, each enforced by its batch literal, led
        # CP-SAT's presolve to drop feasible batches
        scale = m.new_int_var(1, bmax, "scale")
        m.add(scale == sum((bmax // p.batches[j]) * use_b[j] for j in B))
        objective = m.new_int_var(0, p.max_servers * big * bmax, "objective")
        m.add_multiplication_equality(objective, [scale, cost])
    m.minimize(objective)

    # -- hint: a greedy mapping, so the search starts from a good incumbent --------------
    seed = greedy_seed(p)
    if seed is not None:
        for i, lit in enumerate(use_tp):
            m.add_hint(lit, i == seed.ti)
        for j, lit in enumerate(use_b):
            m.add_hint(lit, j == seed.bi)
        for k, lit in enumerate(use_m):
            m.add_hint(lit, k == seed.mi)
        for s in range(S):
            m.add_hint(on[s], s < seed.pp)
            m.add_hint(n[s], seed.counts[s] if s < seed.pp else 0)
        m.add_hint(servers, seed.servers)

    # -- solve -------------------------------------------------------------------------
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    # a deterministic limit, so that a run stopped by it still repeats exactly
    solver.parameters.max_deterministic_time = o.time_limit_s
    code = solver.solve(m)
    wall = time.perf_counter() - start
    status = _STATUS.get(code, "UNKNOWN")
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return SolveResult(status, None, None, None, wall, None, "cpsat")

    # -- extract -----------------------------------------------------------------------
    ti = next(i for i, lit in enumerate(use_tp) if solver.value(lit))
    bi = next(j for j, lit in enumerate(use_b) if solver.value(lit))
    mi = next(k for k, lit in enumerate(use_m) if solver.value(lit))
    counts = tuple(solver.value(n[s]) for s in range(S) if solver.value(on[s]))
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

"""`chipletc serve`: the iteration model against the analytical model, the schedulers
against `simulate`, queueing laws, and invariants of every run."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chipletc.backends.perf.analytical import estimate, group_time, stage_ops
from chipletc.backends.serve import (
    Batch,
    Deployment,
    IterationModel,
    Request,
    SchedulerConfig,
    find_capacity,
    load_requests,
    parse_slo,
    parse_workload,
    run_replica,
    serve,
    write_trace,
)
from chipletc.backends.serve.outputs import requests_csv
from chipletc.backends.sim import simulate
from chipletc.backends.targets import load_target
from chipletc.compiler.schedule import lower_schedule
from chipletc.ir.errors import UsageError
from chipletc.ir.mapping import ModelMapping, even_stages
from chipletc.ir.op import OpKind
from chipletc.ir.workload import Workload

# (model, target, tp, pp, batch, micro-batch): a deep chiplet pipeline with micro-batches,
# and a GPU server at tp 8 (HBM, kernel overheads, NCCL)
CASES = [
    ("gpt2-medium", "cc-7nm-gpt3", 4, 6, 8, 2),
    ("gpt2-medium", "a100-80gb-x8", 8, 1, 8, 8),
]


def _setup(zoo_graph, model: str, target: str, tp: int, pp: int, b: int, m: int):
    g = zoo_graph(model)
    t = load_target(target)
    mapping = ModelMapping(tp, pp, even_stages(g.num_blocks, pp), b, m)
    return g, t, mapping, IterationModel(g, t, mapping)


def _config(policy: str, max_batch: int, kv_blocks: int = 10**6, budget: int = 4096):
    return SchedulerConfig(policy, max_batch, budget, budget, 16, kv_blocks)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_affine_forms_reproduce_the_analytical_stage_times(zoo_graph, case) -> None:
    g, t, mapping, model = _setup(zoo_graph, *case)
    stages = stage_ops(g, mapping)
    for wl in (Workload.decode(3, 777), Workload.prefill(2, 300), Workload.chunk(1, 64, 500)):
        b = wl.batch
        mb = Batch(wl.tokens, b * wl.query_len * wl.attended_len, b * wl.cached_len, b)
        mine = model.stage_seconds(mb)
        want = [group_time(g, ops, t, mapping.tp, wl, False).total_s for ops in stages]
        assert mine == pytest.approx(want, rel=1e-9)


def test_a_chunk_after_a_prefix_costs_the_prefill_minus_the_prefix(zoo_graph) -> None:
    """Two chunks of a prompt do the work of the whole prompt but for the square score
    matrix (the first chunk does not see the second) and one more row of logits (each
    chunk's LM head computes its last position)."""
    g = zoo_graph("gpt2-medium")
    p = 256
    whole = g.cost(Workload.prefill(1, p))
    first = g.cost(Workload.prefill(1, p // 2))
    second = g.cost(Workload.chunk(1, p // 2, p // 2))
    assert first.kv_write_bytes + second.kv_write_bytes == pytest.approx(whole.kv_write_bytes)
    assert second.kv_read_bytes == pytest.approx(whole.kv_write_bytes / 2)
    # the square score matrix: p*p for the whole, (p/2)^2 + (p/2)*p for the chunks
    attn = [op for op in g.ops if op.kind in (OpKind.ATTN_SCORE, OpKind.ATTN_CONTEXT)]
    one = Workload.prefill(1, 1)  # one query against one position
    per_pair = sum(op.cost(one, g.kv_dtype, g.act_dtype).flops for op in attn)
    head = [op for op in g.ops if op.kind is OpKind.LM_HEAD]
    logits_row = sum(op.cost(one, g.kv_dtype, g.act_dtype).flops for op in head)
    extra = per_pair * (p * p - ((p // 2) ** 2 + (p // 2) * p)) - logits_row
    assert first.flops + second.flops + extra == pytest.approx(whole.flops, rel=1e-9)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_static_batch_reproduces_simulate(zoo_graph, case) -> None:
    g, t, mapping, model = _setup(zoo_graph, *case)
    prompt, gen = 200, 24
    # simulate's G decode steps after the prefill are serve's tokens 2..G+1
    reqs = [Request(i, 0.0, prompt, gen + 1) for i in range(mapping.batch)]
    log, _ = run_replica(model, _config("static", mapping.batch), reqs)
    sim = simulate(lower_schedule(g, t, mapping, prompt, gen), t)
    ttft = log.first_token_s[0]
    assert ttft == pytest.approx(sim.prefill_s, rel=0.01)
    tpot = (max(log.finish_s) - ttft) / gen
    assert tpot == pytest.approx(sim.decode_s_per_token, rel=0.01)


@pytest.mark.parametrize("policy", ["vllm", "sarathi"])
def test_low_load_ttft_is_the_batch_of_one_prefill(zoo_graph, policy) -> None:
    g, t, mapping, model = _setup(zoo_graph, *CASES[0])
    one = ModelMapping(mapping.tp, mapping.pp, mapping.stages, 1, 1)
    want = estimate(g, t, one, 300, 20).prefill_s
    reqs = parse_workload("poisson:qps=0.05,prompt=fixed:300,gen=fixed:20,n=200,seed=3").sample()
    log, _ = run_replica(model, _config(policy, mapping.batch, budget=512), reqs)
    ttft = statistics.median(log.first_token_s[r.id] - r.arrival_s for r in reqs)
    assert ttft == pytest.approx(want, rel=0.02)


def test_littles_law_holds_on_a_long_stable_run(zoo_graph) -> None:
    _, _, _, model = _setup(zoo_graph, *CASES[1])
    spec = "poisson:qps=40,prompt=uniform:100:400,gen=uniform:20:200,n=6000,seed=1"
    reqs = parse_workload(spec).sample()
    run = serve(Deployment(model, _config("sarathi", 64, budget=1024)), reqs)
    m = run.metrics
    assert m.e2e_s.p99 < 60  # stable: latency does not grow without bound
    little = m.requests_per_s * m.e2e_s.mean  # lambda x W
    assert m.mean_in_system == pytest.approx(little, rel=0.02)


def test_same_seed_same_requests_csv(zoo_graph) -> None:
    _, _, _, model = _setup(zoo_graph, *CASES[0])
    spec = "gamma:qps=30,cv=3,prompt=lognormal:mean=300:sd=200,gen=uniform:5:60,n=300,seed=7"
    texts = {
        requests_csv(serve(Deployment(model, _config("vllm", 8)), parse_workload(spec).sample()))
        for _ in range(2)
    }
    assert len(texts) == 1
    other = spec.replace("seed=7", "seed=8")
    run = serve(Deployment(model, _config("vllm", 8)), parse_workload(other).sample())
    assert requests_csv(run) not in texts


@settings(max_examples=25, deadline=None)
@given(
    policy=st.sampled_from(["vllm", "sarathi", "static"]),
    qps=st.floats(1.0, 400.0),
    n=st.integers(1, 60),
    prompt_hi=st.integers(1, 700),
    gen_hi=st.integers(1, 120),
    blocks=st.integers(60, 400),
    max_batch=st.integers(1, 16),
    budget=st.integers(32, 2048),
    seed=st.integers(0, 10**6),
)
def test_every_run_respects_time_memory_and_completes(
    zoo_graph, policy, qps, n, prompt_hi, gen_hi, blocks, max_batch, budget, seed
) -> None:
    _, _, _, model = _setup(zoo_graph, *CASES[0])
    spec = (
        f"poisson:qps={qps},prompt=uniform:1:{prompt_hi},gen=uniform:1:{gen_hi},n={n},seed={seed}"
    )
    reqs = parse_workload(spec).sample()
    reqs = [r for r in reqs if r.prompt_len + r.gen_len <= blocks * 16]
    reqs = [Request(i, r.arrival_s, r.prompt_len, r.gen_len) for i, r in enumerate(reqs)]
    if not reqs:
        return
    config = SchedulerConfig(policy, max_batch, budget, budget, 16, blocks)
    log, iters = run_replica(model, config, reqs)
    first = np.frombuffer(log.first_token_s, dtype=np.float64)
    finish = np.frombuffer(log.finish_s, dtype=np.float64)
    assert not np.isnan(finish).any(), "every request completes"
    fastest = min(iters.duration_s)
    for r in reqs:
        assert first[r.id] > r.arrival_s, "no token before the request arrives"
        # the later tokens take one iteration each at least
        assert finish[r.id] - first[r.id] >= (r.gen_len - 1) * fastest * (1 - 1e-9)
    assert max(iters.kv_blocks_used) <= blocks, "KV blocks in use never exceed the pool"
    assert max(np.add(iters.decode_seqs, iters.prefill_seqs)) <= max_batch


def test_preemption_recomputes_and_still_completes(zoo_graph) -> None:
    _, _, _, model = _setup(zoo_graph, *CASES[0])
    reqs = [Request(i, 0.0, 64, 400) for i in range(8)]
    log, iters = run_replica(model, _config("vllm", 8, kv_blocks=80), reqs)
    assert sum(log.preemptions) > 0
    assert all(math.isfinite(x) for x in log.finish_s)
    assert max(iters.kv_blocks_used) <= 80


def test_capacity_meets_the_slo_and_the_next_rate_does_not(zoo_graph) -> None:
    _, _, _, model = _setup(zoo_graph, *CASES[1])
    spec = parse_workload("poisson:qps=5,prompt=fixed:256,gen=fixed:64,n=400,seed=2")
    slo = parse_slo("ttft_p99=300ms,tpot_p99=40ms")
    cap = find_capacity(Deployment(model, _config("sarathi", 32, budget=1024)), spec, slo)
    assert cap.qps > 0 and cap.run.metrics.slo_met
    failing = [q for q, m in cap.probes if not m.slo_met]
    assert failing and min(failing) <= cap.qps * 1.03  # the bisection closed in on it
    assert all(q > cap.qps for q in failing)


def test_disaggregated_pools_serve_every_request(zoo_graph) -> None:
    _, _, _, model = _setup(zoo_graph, *CASES[1])
    reqs = parse_workload("poisson:qps=20,prompt=fixed:512,gen=uniform:1:64,n=300,seed=4").sample()
    d = Deployment(model, _config("vllm", 32), disaggregate=(1, 2))
    run = serve(d, reqs)
    assert run.metrics.requests == 300
    assert all(math.isfinite(x) for x in run.log.finish_s)
    assert d.kv_transfer_s(512) > 0
    # a decode pool never prefills: its iterations hold decodes only
    for label, it in run.iterations:
        if label.startswith("decode"):
            assert sum(it.prefill_tokens) == 0


def test_trace_file_round_trip_and_errors(tmp_path) -> None:
    reqs = parse_workload("poisson:qps=3,prompt=fixed:10,gen=fixed:5,n=20,seed=0").sample()
    path = tmp_path / "t.jsonl"
    path.write_text(write_trace(reqs))
    back = load_requests(str(path))
    assert [(r.prompt_len, r.gen_len) for r in back] == [(r.prompt_len, r.gen_len) for r in reqs]
    assert [r.arrival_s for r in back] == pytest.approx([r.arrival_s for r in reqs], abs=1e-6)
    path.write_text('{"arrival_s": 1, "prompt_len": 0, "gen_len": 3}\n')
    with pytest.raises(UsageError, match=r"t.jsonl:1: prompt_len must be"):
        load_requests(str(path))
    for bad in ("poisson:n=3", "poisson:qps=1,prompt=zipf:3", "poisson:qps=-1", "x:qps=1"):
        with pytest.raises(UsageError, match="--workload"):
            parse_workload(bad)


def test_cli_writes_every_output_and_refuses_bad_input(tmp_path, cli) -> None:
    out = tmp_path / "o"
    mapping = ("--tp", "4", "--pp", "6", "--batch", "8", "--micro-batch", "2")
    work = "poisson:qps=20,prompt=fixed:100,gen=fixed:20,n=50"
    code, stdout, _ = cli(
        "serve",
        "gpt2-medium",
        *mapping,
        "-w",
        work,
        "--slo",
        "ttft_p99=1s",
        "-o",
        str(out),
        "--json",
    )
    assert code == 0
    doc = json.loads(stdout)
    assert doc["metrics"]["requests"] == 50 and doc["tco_per_1k_tokens_usd"] > 0
    assert doc["scheduler"]["max_batch"] == doc["mapping"]["batch"] == 8  # the plan's
    assert sorted(p.name for p in out.iterdir()) == [
        "requests.csv",
        "serve.png",
        "summary.json",
        "trace.json",
    ]
    assert (out / "serve.png").read_bytes()[:4] == b"\x89PNG"
    bad_flags = (
        ["--slo", "ttft_p42=1s"],
        ["--find-capacity"],
        ["-w", "poisson:qps=0"],
        ["-w", "trace:nope"],
    )
    for bad in bad_flags:
        code, _, err = cli("serve", "gpt2-medium", "-o", str(tmp_path / "never"), *bad)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("chipletc: error:")
        assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("name", ["chat", "bursty"])
def test_shipped_traces_are_what_their_specs_draw(name) -> None:
    from chipletc.backends.serve import traces

    assert traces.path(name).read_text(encoding="utf-8") == traces.render(name)
    assert len(load_requests(str(traces.path(name)))) == 500


def test_an_slo_no_rate_meets_is_reported_as_zero_capacity(zoo_graph) -> None:
    _, _, _, model = _setup(zoo_graph, *CASES[1])
    spec = parse_workload("poisson:qps=50,prompt=fixed:256,gen=fixed:16,n=100,seed=2")
    cap = find_capacity(Deployment(model, _config("vllm", 32)), spec, parse_slo("ttft_p50=1ms"))
    assert cap.qps == 0.0 and not cap.run.metrics.slo_met
    assert cap.run.metrics.mean_in_system <= 1.0  # it gave up only once all but idle
    assert len(cap.probes) < 20


def test_explore_ranks_front_designs_by_cost_at_the_slo(tmp_path, cli) -> None:
    import yaml

    space = {
        "name": "tiny",
        "base": "cc-7nm-gpt3",
        "chiplet": {"area_mm2": [100, 200], "mac_ratio": [0.02], "ops_per_sram_read": [2, 8]},
        "server": {"packages_per_lane": [4]},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(space), encoding="utf-8")
    out = tmp_path / "out"
    work = "poisson:qps=5,prompt=fixed:256,gen=fixed:32,n=60,seed=0"
    code, stdout, err = cli(
        "explore",
        "gpt2-xl",
        "--space",
        str(path),
        "--no-baselines",
        "--slo",
        "ttft_p99=2s,tpot_p99=200ms",
        "--workload",
        work,
        "--slo-designs",
        "2",
        "-o",
        str(out),
    )
    assert code == 0, err
    doc = json.loads((out / "summary.json").read_text())
    rows = doc["models"]["gpt2-xl"]["slo"]["designs"]
    assert 1 <= len(rows) <= 2 and "at the SLO" in stdout
    costs = [r["slo_usd_per_1k_tokens"] for r in rows if r["slo_usd_per_1k_tokens"] is not None]
    assert costs == sorted(costs)
    for r in rows:
        # serving at the SLO never costs less than the static batch it was solved for
        assert r["slo_qps"] <= r["slo_qps_bound"] * 1.05
        if r["slo_usd_per_1k_tokens"] is not None:
            assert r["slo_usd_per_1k_tokens"] >= r["static_usd_per_1k_tokens"] * 0.95
    assert (out / "slo.csv").read_text().count("\n") == len(rows) + 1
    code, _, err = cli("explore", "gpt2-xl", "--space", str(path), "--workload", work)
    assert code == 2 and "goes with --slo" in err


def test_cli_compares_disaggregation_with_colocated_replicas(cli) -> None:
    mapping = ("--tp", "8", "--target", "a100-80gb-x8")
    work = "poisson:qps=30,prompt=fixed:400,gen=fixed:30,n=80"
    code, out, err = cli(
        "serve", "gpt2-medium", *mapping, "-w", work, "--disaggregate", "prefill=1,decode=1"
    )
    assert code == 0, err
    assert "vs colocated: 2 replicas" in out and "disaggregation" in out

"""Serving 10,000 and 100,000 requests on GPT-3 175B's compile plan (default target).

Targets (2 cores): 10,000 requests in under 10 s, 100,000 in under 60 s, both with the
default scheduler at a load the plan holds (the arrival rate is set to 80 % of the
plan's static throughput in requests/s). Building the plan (lowering and the search)
is outside the timing; the run, its metrics and requests.csv are inside.
"""

from __future__ import annotations

import time

from chipletc.backends.perf.analytical import estimate
from chipletc.backends.serve import Deployment, IterationModel, SchedulerConfig, parse_workload
from chipletc.backends.serve import serve as run_serve
from chipletc.backends.serve.outputs import requests_csv
from chipletc.backends.targets import DEFAULT_TARGET, load_target
from chipletc.compiler.frontends import load_model
from chipletc.compiler.partition import SearchOptions, partition

PROMPT = "lognormal:mean=600:sd=400"
GEN = "uniform:50:500"


def test_serve_gpt3_requests() -> None:
    graph = load_model("gpt3-175b")
    target = load_target(DEFAULT_TARGET)
    mapping = partition(graph, target, SearchOptions(prompt_len=600, gen_len=275)).mapping
    perf = estimate(graph, target, mapping, 600, 275)
    qps = 0.8 * perf.tokens_per_s / 275
    model = IterationModel(graph, target, mapping)
    config = SchedulerConfig("sarathi", mapping.batch, 512, 512, 16, 10**7)
    print(
        f"\ngpt3-175b on {target.name}: tp {mapping.tp} x pp {mapping.pp}, batch "
        f"{mapping.batch}; arrivals at {qps:.2f} requests/s (80 % of static throughput)"
    )
    for n, goal_s in ((10_000, 10.0), (100_000, 60.0)):
        spec = parse_workload(f"poisson:qps={qps},prompt={PROMPT},gen={GEN},n={n},seed=0")
        requests = spec.sample()
        start = time.perf_counter()
        run = run_serve(Deployment(model, config), requests)
        requests_csv(run)
        seconds = time.perf_counter() - start
        iterations = sum(len(it) for _, it in run.iterations)
        print(
            f"  {n:>7,} requests: {seconds:6.2f} s (target < {goal_s:g} s), "
            f"{iterations:,} iterations, {seconds / iterations * 1e6:.1f} us each; "
            f"TTFT p50 {run.metrics.ttft_s.p50 * 1e3:.0f} ms, TPOT p50 "
            f"{run.metrics.tpot_s.p50 * 1e3:.1f} ms, mean batch {run.metrics.mean_batch:.1f}"
        )

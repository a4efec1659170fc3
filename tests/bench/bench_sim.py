"""Simulating GPT-3 175B on ~2,000 chiplets and Llama-3 405B's compile plan.

Targets (2 cores): lowering plus replay of GPT-3 (2,048-token prompt, 256 generated
tokens) under 1 s with the default scan engine; the event engine, the reference, is
timed beside it. Llama-3 405B is replayed as ``chipletc compile`` does (default search
options on the default target: 126 stages x 128 micro-batches x 1,024 decode steps,
16.5 M stage passes), where ``simulate`` must leave the command room to finish in
15 s. Loading the model, the search and checking the mapping are outside the timing;
the median of three runs is reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from chipletc.backends.sim import SimResult, simulate
from chipletc.backends.targets import DEFAULT_TARGET, load_target
from chipletc.compiler.frontends import load_model
from chipletc.compiler.partition import SearchOptions, partition
from chipletc.compiler.schedule import lower_schedule
from chipletc.ir.mapping import ModelMapping, even_stages


def median_time(run: Callable[[], SimResult], repeat: int = 3) -> tuple[float, SimResult]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def test_simulate_gpt3_on_2000_chiplets() -> None:
    graph = load_model("gpt3-175b")
    target = load_target("cc-7nm-gpt3")
    # the embedding's stage gets one block, the rest split evenly (as compile chooses)
    stages = ((0, 0), *((a + 1, b + 1) for a, b in even_stages(graph.num_blocks - 1, 63)))
    mapping = ModelMapping(32, 64, stages, batch=8, micro_batch=1)
    seconds = {}
    for engine in ("scan", "events"):
        seconds[engine], result = median_time(
            lambda engine=engine: simulate(
                lower_schedule(graph, target, mapping, 2048, 256), target, engine=engine
            )
        )
    print(
        f"\ngpt3-175b on {mapping.num_chiplets} chiplets (tp 32 x pp 64, batch 8, micro-batch 1), "
        f"prompt 2048, generate 256, {result.events} stage passes: lowered and simulated in "
        f"{seconds['scan']:.3f} s (scan), {seconds['events']:.3f} s (events); "
        f"TTFT {result.prefill_s:.2f} s, {result.decode_s_per_token * 1e3:.2f} ms/token"
    )
    assert seconds["scan"] < 1.0


def test_simulate_llama3_405b_compile_plan() -> None:
    graph = load_model("llama3-405b")
    target = load_target(DEFAULT_TARGET)
    options = SearchOptions()
    mapping = partition(graph, target, options).mapping
    schedule = lower_schedule(graph, target, mapping, options.prompt_len, options.gen_len)
    seconds, result = median_time(lambda: simulate(schedule, target))
    print(
        f"\nllama3-405b compile plan on {DEFAULT_TARGET} (tp {mapping.tp} x pp {mapping.pp}, "
        f"batch {mapping.batch}, micro-batch {mapping.micro_batch}), prompt "
        f"{options.prompt_len}, generate {options.gen_len}, {result.events} stage passes: "
        f"simulated in {seconds:.3f} s (scan); TTFT {result.prefill_s:.2f} s, "
        f"{result.decode_s_per_token * 1e3:.2f} ms/token"
    )
    assert seconds < 5.0

"""Simulating GPT-3 175B on ~2,000 chiplets, 2,048-token prompt, 256 generated tokens.

Target: lowering plus replay under 1 s on 2 cores. Loading the model and checking the
mapping are outside the timing; the median of three runs is reported.
"""

from __future__ import annotations

import statistics
import time

from chipletc.backends.sim import simulate
from chipletc.backends.targets import load_target
from chipletc.compiler.frontends import load_model
from chipletc.compiler.schedule import lower_schedule
from chipletc.ir.mapping import ModelMapping, even_stages


def test_simulate_gpt3_on_2000_chiplets() -> None:
    graph = load_model("gpt3-175b")
    target = load_target("cc-7nm-gpt3")
    # the embedding's stage gets one block, the rest split evenly (as compile chooses)
    stages = ((0, 0), *((a + 1, b + 1) for a, b in even_stages(graph.num_blocks - 1, 63)))
    mapping = ModelMapping(32, 64, stages, batch=8, micro_batch=1)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        result = simulate(lower_schedule(graph, target, mapping, 2048, 256), target)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    print(
        f"\ngpt3-175b on {mapping.num_chiplets} chiplets (tp 32 x pp 64, batch 8, micro-batch 1), "
        f"prompt 2048, generate 256: simulated in {seconds:.3f} s ({result.events} events); "
        f"TTFT {result.prefill_s:.2f} s, {result.decode_s_per_token * 1e3:.2f} ms/token"
    )
    assert seconds < 1.0

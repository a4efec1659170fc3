"""Exploring GPT-3 175B over the paper's 7 nm space on 2 processes (target: under 60 s).

Times ``explore`` alone (screening every design, then the optimal mapping of every
survivor); lowering the model and the baselines are outside the timing.
"""

from __future__ import annotations

import time

from chipletc.compiler.explore import ExploreOptions, explore, load_space

TARGET_S = 60.0


def test_explore_gpt3_paper_space_on_two_workers(zoo_graph) -> None:
    graph = zoo_graph("gpt3-175b")
    space = load_space()
    assert space.size >= 5000
    start = time.perf_counter()
    result = explore([graph], space, ExploreOptions(workers=2))
    seconds = time.perf_counter() - start
    ok = sum(p["status"] == "ok" for p in result.points)
    print(
        f"\nexplore gpt3-175b, {space.name}: {space.size:,} designs in {seconds:.1f} s on 2 "
        f"workers = {space.size / seconds:,.0f} designs/s; {result.survivors:,} met the "
        f"constraints and were mapped ({result.survivors / seconds:,.0f}/s), {ok:,} hold "
        "the model"
    )
    assert result.complete and ok > 0
    assert seconds < TARGET_S

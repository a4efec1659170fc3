"""Exploring GPT-3 175B with the memory and topology axes (target: at most 2x
the time per design of the SRAM-only ring space).

Runs the same 7 nm chiplet grid twice on one process: as today (SRAM-only chiplets on
rings) and over {sram, hbm3 with 2 or 4 stacks} x {ring, torus2d} servers, and prints
the seconds per design that met the constraints and were mapped. Both runs lift the
lane-thermal and 2 kW limits, which would screen out nearly every HBM design, so that
both time the mapping of comparable numbers of designs.
"""

from __future__ import annotations

import time

from chipletc.compiler.explore import ExploreOptions, explore, parse_space

GRID = {
    "base": "cc-7nm-gpt3",
    "chiplet": {"area_mm2": {"from": 100, "to": 600, "step": 100},
                "mac_ratio": [0.05, 0.1, 0.2, 0.4], "ops_per_sram_read": [1, 8]},
    "server": {"packages_per_lane": [4, 8, 16]},
    "constraints": {"lane_thermal": False, "server_power_w": 20000},
}
AXES = {"chiplet": {"memory": ["sram", "hbm3"], "stacks": [2, 4]},
        "server": {"topology": ["ring", "torus2d"]}}


def per_design_s(graph, data: dict) -> tuple[float, int]:
    space = parse_space(data, "bench.yaml")
    start = time.perf_counter()
    result = explore([graph], space, ExploreOptions())
    return (time.perf_counter() - start) / result.survivors, result.survivors


def test_bench_memory_and_topology_axes(zoo_graph) -> None:
    graph = zoo_graph("gpt3-175b")
    today, n_today = per_design_s(graph, {"name": "today", **GRID})
    wide = {"name": "axes", **GRID,
            "chiplet": {**GRID["chiplet"], **AXES["chiplet"]},
            "server": {**GRID["server"], **AXES["server"]}}
    axes, n_axes = per_design_s(graph, wide)
    print(f"\nexplore gpt3-175b: today {today * 1e3:.2f} ms per design ({n_today} designs), "
          f"{{sram, hbm3}} x {{ring, torus2d}} {axes * 1e3:.2f} ms per design ({n_axes} "
          f"designs): {axes / today:.2f}x (target <= 2x)")

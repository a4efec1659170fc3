"""Design axes beyond SRAM-only rings: memory technology per chiplet (HBM stacks, one
memory model with the GPUs), chip-to-chip topology, and the paper space held at today."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from chipletc.backends.cost import server_cost
from chipletc.backends.perf.analytical import estimate
from chipletc.backends.perf.collectives import algorithm_times_s, fabric
from chipletc.backends.targets import list_memories, load_memory, load_target, load_tech
from chipletc.backends.targets.chiplet import chiplet_by_area, chiplet_by_performance
from chipletc.compiler.explore import (
    ExploreOptions,
    explore,
    load_space,
    mark_fronts,
    parse_space,
    summary,
)
from chipletc.compiler.explore.space import DEFAULT_SPACE, screen
from chipletc.ir.dtypes import DType
from chipletc.ir.errors import TargetError
from chipletc.ir.mapping import ModelMapping, even_stages
from chipletc.ir.tech import MIB, MemoryTech


def test_memory_presets_load_with_published_per_stack_figures():
    assert set(list_memories()) >= {"hbm2e", "hbm3", "hbm3e"}
    # JEDEC pin rates x 1024 pins: 3.6, 6.4 Gb/s; Micron HBM3E 9.2 Gb/s
    for name, gbps in (("hbm2e", 3.6), ("hbm3", 6.4), ("hbm3e", 9.2)):
        assert load_memory(name).stack_bw_Bps == pytest.approx(gbps * 1e9 * 1024 / 8)
    assert load_memory("hbm3e").stack_bytes == 24 << 30


def as_memory(preset: str) -> MemoryTech:
    """A stacked memory that gives a GPU preset's HBM figures per stack."""
    chip = load_target(preset).chiplet
    return MemoryTech(name=f"{preset}-hbm", stack_bytes=chip.hbm_bytes // chip.hbm_stacks,
                      stack_bw_Bps=chip.hbm_bw_Bps / chip.hbm_stacks, energy_J_per_B=0.0,
                      stack_usd=chip.hbm_stack_usd, phy_mm2=10, shoreline_mm=7.75,
                      bw_efficiency=1.0)


@pytest.mark.parametrize("preset", ["a100-80gb-x8", "h100-x8"])
def test_hbm_chiplet_reproduces_the_gpu_presets_decode(zoo_graph, preset):
    """One memory model: a chiplet built with ``memory`` stacks and the GPU's compute,
    L2 and links decodes GPT-3 175B (TP 8) within 5 % of the hand-written preset."""
    gpu = load_target(preset)
    chip = gpu.chiplet
    built = chiplet_by_performance(
        chip.peak_flops(DType.BF16) / 1e12,
        chip.sram_bytes / MIB, chip.sram_bw_Bps, gpu.tech, link_count=chip.link_count,
        link_bw_Bps=chip.link_bw_Bps, link_latency_s=chip.link_latency_s,
        memory=as_memory(preset), stacks=chip.hbm_stacks)
    assert built.hbm_bytes == chip.hbm_bytes and built.hbm_stacks == chip.hbm_stacks
    # area and TDP from the GPU (the chiplet densities give 989 TOPS far more watts)
    twin = dataclasses.replace(gpu, chiplet=dataclasses.replace(
        built, area_mm2=chip.area_mm2, power_w=chip.power_w))
    assert twin.weights_in == gpu.weights_in == "hbm"
    graph = zoo_graph("gpt3-175b")
    mapping = ModelMapping(8, 1, even_stages(graph.num_blocks, 1), 8, 8)
    want = estimate(graph, gpu, mapping, 512, 32).decode_s_per_token
    got = estimate(graph, twin, mapping, 512, 32).decode_s_per_token
    assert got == pytest.approx(want, rel=0.05)


def test_stacks_take_phy_area_and_shoreline_and_add_capacity_power_price():
    tech, hbm3 = load_tech("7nm"), load_memory("hbm3")
    bare = chiplet_by_area(400, 0.3, 8, tech)
    with4 = chiplet_by_area(400, 0.3, 8, tech, memory=hbm3, stacks=4)
    core = (400 ** 0.5 - 2 * tech.pad_ring_mm) ** 2 - 16 * 0.3  # 16 links of 0.3 mm2
    assert with4.sram_bytes / bare.sram_bytes == pytest.approx((core - 40) / core, rel=1e-6)
    assert with4.hbm_bytes == 4 * hbm3.stack_bytes
    assert with4.hbm_bw_Bps == pytest.approx(4 * 819.2e9)
    assert with4.hbm_power_w == pytest.approx(4 * hbm3.stack_w)
    assert with4.die_power_w == pytest.approx(with4.power_w - 4 * hbm3.stack_w)
    # a 400 mm2 die has 20 mm edges: two stacks of 7.75 mm per edge, on two edges
    with pytest.raises(TargetError, match="stacks: more hbm3 stacks than the die edges hold"):
        chiplet_by_area(400, 0.3, 8, tech, memory=hbm3, stacks=6)
    with pytest.raises(TargetError, match="stacks and a memory technology go together"):
        chiplet_by_area(400, 0.3, 8, tech, stacks=2)


def test_hbm_package_prices_stacks_and_interposer():
    base = load_target("cc-7nm-gpt3")
    chip = chiplet_by_area(400, 0.3, 8, base.tech, memory=load_memory("hbm3"), stacks=4)
    with pytest.raises(TargetError, match="HBM stacks need a silicon interposer"):
        dataclasses.replace(base, chiplet=chip)
    t = dataclasses.replace(base, chiplet=chip,
                            package=dataclasses.replace(base.package, substrate="interposer"))
    sc = server_cost(t)
    assert t.weights_in == "hbm" and t.memory_bw_Bps == chip.hbm_bw_Bps
    assert sc.package.breakdown["hbm_usd"] == 4 * 240
    assert sc.package.breakdown["interposer_usd"] > 0


MEMORY_SPACE = {
    "name": "mem",
    "base": "cc-7nm-gpt3",
    "chiplet": {"area_mm2": [200, 400], "mac_ratio": [0.1, 0.3], "ops_per_sram_read": [8],
                "memory": ["sram", "hbm3"], "stacks": [2, 4]},
    "server": {"packages_per_lane": [4, 8]},
    "constraints": {"lane_thermal": False, "server_power_w": 20000},
}


def test_explore_sweeps_memory_and_reports_a_front_per_technology(zoo_graph):
    space = parse_space(MEMORY_SPACE, "mem.yaml")
    graph = zoo_graph("gpt3-175b")
    result = explore([graph], space, ExploreOptions(chunk_size=8))
    # an SRAM-only design is the same for every stacks value: kept once
    assert result.removed["same design"] == 2 * 2 * 2
    for d in space.designs():
        target, _ = screen(space, d)
        if target is not None and space.as_dict(d)["chiplet.memory"] == "hbm3":
            assert target.weights_in == "hbm" and target.package.substrate == "interposer"
            assert target.efficiency.memory == load_memory("hbm3").bw_efficiency
    doc = summary(result, {})
    fronts = doc["models"]["gpt3-175b"]["fronts"]["chiplet.memory"]
    assert set(fronts) == {"sram", "hbm3"}
    marked = mark_fronts(result.points, result)
    for memory, group in fronts.items():
        mine = [p for p in marked if p["chiplet.memory"] == memory and p["status"] == "ok"]
        assert group["tco"]["usd_per_1k_tokens"] == min(p["usd_per_1k_tokens"] for p in mine)
        assert sorted(p["design"] for p in mine if p["front.chiplet.memory"]) == sorted(
            group["pareto"])


def test_space_refuses_stacks_without_a_stacked_memory_and_unknown_memories():
    bad = {**MEMORY_SPACE, "chiplet": {**MEMORY_SPACE["chiplet"], "memory": ["sram"]}}
    with pytest.raises(TargetError, match=r"chiplet\.stacks: given without a stacked memory"):
        parse_space(bad, "bad.yaml")
    bad["chiplet"] = {k: v for k, v in MEMORY_SPACE["chiplet"].items() if k != "stacks"}
    with pytest.raises(TargetError, match=r"chiplet\.stacks: missing"):
        parse_space(bad, "bad.yaml")
    bad["chiplet"] = {**MEMORY_SPACE["chiplet"], "memory": ["sram", "hbm9"]}
    with pytest.raises(TargetError, match=r"chiplet\.memory: memory: unknown preset"):
        parse_space(bad, "bad.yaml")


# --- topology -----------------------------------------------------------------------


def with_server_topology(topology: str):
    base = load_target("cc-7nm-gpt3")
    return dataclasses.replace(base, server=dataclasses.replace(base.server, topology=topology))


def test_mesh_moves_the_torus_bytes_with_twice_its_hops():
    """A 2D mesh embeds each dimension's ring in a line: the bytes of the torus, but
    2 x 2 (sqrt(g) - 1) link hops per phase instead of 2 (sqrt(g) - 1)."""
    g, nbytes = 64, 1e6
    ring, mesh, torus = (fabric(with_server_topology(t)) for t in ("ring", "mesh2d", "torus2d"))
    level = ring.levels[1]
    bw, alpha = level.bw_Bps * ring.link_eff, level.latency_s
    wire = 2 * (g - 1) / g * nbytes / bw
    assert algorithm_times_s("all_reduce", nbytes, g, ring) == {
        "ring": pytest.approx(wire + 2 * (g - 1) * alpha)}
    assert algorithm_times_s("all_reduce", nbytes, g, torus) == {
        "torus": pytest.approx(wire + 2 * 2 * 7 * alpha)}
    assert algorithm_times_s("all_reduce", nbytes, g, mesh) == {
        "mesh": pytest.approx(wire + 2 * 2 * 2 * 7 * alpha)}


def test_a_switched_server_pays_its_ports():
    ring, switch = with_server_topology("ring"), with_server_topology("switch")
    ports = switch.chips_per_server * switch.chiplet.link_count
    a, b = server_cost(ring), server_cost(switch)
    parts = switch.server.parts
    assert b.breakdown["switch_usd"] == ports * parts.switch_usd_per_port > 0
    assert a.breakdown["switch_usd"] == 0 and a.power_breakdown["switch_w"] == 0
    assert b.power_breakdown["switch_w"] == pytest.approx(ports * parts.switch_w_per_port)
    assert b.power_w > a.power_w


TOPOLOGY_SPACE = {
    "name": "topo",
    "base": "cc-7nm-gpt3",
    "chiplet": {"area_mm2": [200, 400], "mac_ratio": [0.05], "ops_per_sram_read": [4]},
    "server": {"packages_per_lane": [8, 16], "topology": ["ring", "torus2d", "switch"]},
}


def test_torus_never_decodes_slower_than_the_ring_on_the_same_design(zoo_graph):
    """Same links, fewer latency steps: each design's optimum on a torus decodes no
    slower per dollar than on a ring, and the torus front is reported beside it."""
    space = parse_space(TOPOLOGY_SPACE, "topo.yaml")
    result = explore([zoo_graph("gpt3-175b")], space, ExploreOptions(chunk_size=4))
    ok = [p for p in result.points if p["status"] == "ok"]
    key = ("chiplet.area_mm2", "server.packages_per_lane")
    by = {(p["server.topology"], *(p[k] for k in key)): p for p in ok}
    pairs = [(p, by[("torus2d", *(p[k] for k in key))]) for p in ok
             if p["server.topology"] == "ring" and ("torus2d", *(p[k] for k in key)) in by]
    assert pairs
    for ring, torus in pairs:
        assert torus["usd_per_1k_tokens"] <= ring["usd_per_1k_tokens"] * (1 + 1e-9)
    fronts = summary(result, {})["models"]["gpt3-175b"]["fronts"]["server.topology"]
    assert set(fronts) == {"ring", "torus2d", "switch"}
    with pytest.raises(TargetError, match=r"server\.topology: unknown value \('hypercube'\)"):
        parse_space({**TOPOLOGY_SPACE, "server": {"topology": ["ring", "hypercube"]}}, "t.yaml")


# --- the paper space at today's values ------------------------------------------------


def test_paper_space_is_unchanged_with_the_new_axes_at_todays_values(zoo_graph):
    """node 7 nm (the base's), chiplet.memory sram, package and server topology ring:
    every one of the 13,440 designs screens to the same target, and a slice maps to the
    same points."""
    data = yaml.safe_load(DEFAULT_SPACE.read_text(encoding="utf-8"))
    today = parse_space(data, "paper-7nm.yaml")

    def held(d: dict) -> dict:
        return {**d, "node": [today.base.tech.name],
                "chiplet": {**d["chiplet"], "memory": "sram"},
                "package": {**d["package"], "topology": "ring"},
                "server": {**d["server"], "topology": "ring"}}

    same = parse_space(held(data), "paper-7nm.yaml")
    assert same.size == today.size
    cache_a: dict = {}
    cache_b: dict = {}
    for design in today.designs():
        assert screen(today, design, cache_a) == screen(same, same.design(design.index),
                                                        cache_b)
    part = {**data, "chiplet": {**data["chiplet"], "area_mm2": [200, 400],
                                "mac_ratio": [0.03, 0.1], "ops_per_sram_read": [4]},
            "server": {**data["server"], "packages_per_lane": [8, 16]}}
    graph = zoo_graph("gpt3-175b")
    a = explore([graph], parse_space(part, "p.yaml"), ExploreOptions())
    b = explore([graph], parse_space(held(part), "p.yaml"), ExploreOptions())
    added = {"chiplet.memory", "package.topology", "server.topology"}
    assert [p for p in a.points if p["status"] == "ok"]
    assert a.points == tuple({k: v for k, v in p.items() if k not in added} for p in b.points)


def test_shipped_spaces_parse_and_a_node_sweep_gets_a_front_per_node(zoo_graph):
    spaces = DEFAULT_SPACE.parent
    beyond = load_space(spaces / "beyond-sram.yaml")
    assert {n for n, _ in beyond.axes} >= {"chiplet.memory", "chiplet.stacks",
                                            "server.topology"}
    nodes = load_space(spaces / "nodes-sram.yaml")
    assert [n.name for n in nodes.nodes] == ["7nm", "5nm", "3nm", "2nm"]
    tiny = {"name": "n", "base": "cc-7nm-gpt3", "node": ["7nm", "2nm"],
            "chiplet": {"area_mm2": [400], "mac_ratio": [0.05], "ops_per_sram_read": [4]},
            "server": {"packages_per_lane": [3]}}
    result = explore([zoo_graph("gpt3-175b")], parse_space(tiny, "n.yaml"), ExploreOptions())
    fronts = summary(result, {})["models"]["gpt3-175b"]["fronts"]
    assert set(fronts) == {"node"} and set(fronts["node"]) == {"7nm", "2nm"}

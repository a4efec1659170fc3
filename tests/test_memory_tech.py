"""Memory technology per chiplet: HBM stacks beside a die, one memory model with the GPUs."""

from __future__ import annotations

import dataclasses

import pytest

from chipletc.backends.cost import server_cost
from chipletc.backends.perf.analytical import estimate
from chipletc.backends.targets import list_memories, load_memory, load_target, load_tech
from chipletc.backends.targets.chiplet import chiplet_by_area, chiplet_by_performance
from chipletc.compiler.explore import ExploreOptions, explore, mark_fronts, parse_space, summary
from chipletc.compiler.explore.space import screen
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
    with pytest.raises(TargetError, match="chiplet.stacks: given without a stacked memory"):
        parse_space(bad, "bad.yaml")
    bad["chiplet"] = {k: v for k, v in MEMORY_SPACE["chiplet"].items() if k != "stacks"}
    with pytest.raises(TargetError, match="chiplet.stacks: missing"):
        parse_space(bad, "bad.yaml")
    bad["chiplet"] = {**MEMORY_SPACE["chiplet"], "memory": ["sram", "hbm9"]}
    with pytest.raises(TargetError, match="chiplet.memory: memory: unknown preset"):
        parse_space(bad, "bad.yaml")

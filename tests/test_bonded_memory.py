"""3D-stacked SRAM (hybrid-bonded layers, AMD 3D V-Cache style) as a chiplet memory:
capacity from the die area, bandwidth through the bonded face, cost per layer and bond
yield, one memory path with the die's own SRAM, and the explore axis."""

from __future__ import annotations

import dataclasses

import pytest

from chipletc.backends.cost import die_cost, server_cost
from chipletc.backends.perf.analytical import estimate
from chipletc.backends.targets import list_memories, load_memory, load_target, load_tech
from chipletc.backends.targets.chiplet import chiplet_by_area
from chipletc.compiler.explore import ExploreOptions, explore, parse_space, summary
from chipletc.compiler.explore.space import screen
from chipletc.ir.errors import TargetError
from chipletc.ir.mapping import ModelMapping, even_stages
from chipletc.ir.tech import MIB, BondedMemory

SEVEN = load_tech("7nm")


def bonded() -> BondedMemory:
    mem = load_memory("3d-sram")
    assert isinstance(mem, BondedMemory)
    return mem


def test_a_layer_of_the_v_cache_die_area_holds_64_mib_at_2_tbps():
    """AMD's 3D V-Cache: 64 MB of 7 nm SRAM on ~41 mm2, 2 TB/s between the dies."""
    assert "3d-sram" in list_memories()
    mem = bonded()
    assert mem.layer_bytes(41, SEVEN) / MIB == pytest.approx(64, rel=0.005)
    assert mem.bw_Bps_per_mm2 * 41 == pytest.approx(2e12, rel=0.005)


@pytest.mark.parametrize("layers", [1, 2, 4])
def test_capacity_is_layers_times_a_layer_and_the_face_bandwidth_is_shared(layers):
    mem = bonded()
    plain = chiplet_by_area(300, 0.1, 8, SEVEN)
    chip = chiplet_by_area(300, 0.1, 8, SEVEN, memory=mem, layers=layers)
    assert chip.bonded_bytes == layers * mem.layer_bytes(300, SEVEN)
    # the layers take no logic area: the die's own SRAM and compute are unchanged
    assert (chip.sram_bytes, chip.flops_per_s) == (plain.sram_bytes, plain.flops_per_s)
    assert chip.bonded_bw_Bps == pytest.approx(mem.bw_Bps_per_mm2 * 300)
    target = dataclasses.replace(load_target("cc-7nm-gpt3"), chiplet=chip)
    assert target.weights_in == "sram"
    assert target.memory_capacity_bytes == chip.sram_bytes + chip.bonded_bytes
    # both tiers filled by capacity and read at once: the slower tier sets the time
    read_s = max(chip.sram_bytes / chip.sram_bw_Bps, chip.bonded_bytes / chip.bonded_bw_Bps)
    assert target.memory_bw_Bps == pytest.approx(target.memory_capacity_bytes / read_s)
    assert min(chip.sram_bw_Bps, chip.bonded_bw_Bps) < target.memory_bw_Bps
    assert target.memory_bw_Bps <= chip.sram_bw_Bps + chip.bonded_bw_Bps


def test_decode_reads_the_stack_through_the_one_memory_path(zoo_graph):
    """A bonded design decodes exactly as an SRAM-only chiplet holding the same bytes at
    the two tiers' combined bandwidth, and faster than the die without its layers when
    the layers' face is faster than the die's SRAM (memory-bound decode, batch 1)."""
    base = load_target("cc-7nm-gpt3")
    chip = chiplet_by_area(400, 0.2, 32, SEVEN, memory=bonded(), layers=2)
    stacked = dataclasses.replace(base, chiplet=chip)
    flat = dataclasses.replace(base, chiplet=dataclasses.replace(
        chip, sram_bytes=stacked.memory_capacity_bytes, sram_bw_Bps=stacked.memory_bw_Bps,
        bonded_layers=0, bonded_bytes=0, bonded_bw_Bps=0.0))
    alone = dataclasses.replace(base, chiplet=chiplet_by_area(400, 0.2, 32, SEVEN))
    graph = zoo_graph("gpt3-175b")
    mapping = ModelMapping(8, 8, even_stages(graph.num_blocks, 8), 1, 1)
    got = estimate(graph, stacked, mapping, 512, 32).decode_s_per_token
    assert got == pytest.approx(estimate(graph, flat, mapping, 512, 32).decode_s_per_token,
                                rel=1e-12)
    assert chip.bonded_bw_Bps > chip.sram_bw_Bps
    assert got < estimate(graph, alone, mapping, 512, 32).decode_s_per_token


def test_each_layer_costs_a_die_of_the_node_over_the_bond_yield():
    mem = bonded()
    base = load_target("cc-7nm-gpt3")
    plain = dataclasses.replace(base, chiplet=chiplet_by_area(200, 0.05, 4, SEVEN))
    die = die_cost(200, plain.tech).cost_usd * plain.chips_per_package
    for layers in (1, 3):
        chip = chiplet_by_area(200, 0.05, 4, SEVEN, memory=mem, layers=layers)
        sc = server_cost(dataclasses.replace(plain, chiplet=chip))
        want = die * (1 + layers) / mem.bond_yield**layers
        assert sc.package.breakdown["dies_usd"] == pytest.approx(want)
        assert sc.package.substrate == "organic"  # on-die memory: no interposer
    assert server_cost(plain).package.breakdown["dies_usd"] == pytest.approx(die)


def test_layers_are_checked_against_the_memory():
    with pytest.raises(TargetError, match="layers"):
        chiplet_by_area(200, 0.05, 4, SEVEN, memory=bonded(), layers=0)
    with pytest.raises(TargetError, match="layers"):
        chiplet_by_area(200, 0.05, 4, SEVEN, memory=bonded(), layers=5)  # max_layers 4
    with pytest.raises(TargetError, match="layers need a bonded memory"):
        chiplet_by_area(200, 0.05, 4, SEVEN, memory=load_memory("hbm3"), stacks=2, layers=1)


SPACE = {
    "name": "bonded",
    "base": "cc-7nm-gpt3",
    "chiplet": {"area_mm2": [200, 400], "mac_ratio": [0.1], "ops_per_sram_read": [8],
                "memory": ["sram", "3d-sram"], "layers": [1, 2]},
    "server": {"packages_per_lane": [4, 8]},
}


def test_explore_sweeps_layers_beside_sram_with_a_front_each(zoo_graph):
    space = parse_space(SPACE, "bonded.yaml")
    result = explore([zoo_graph("gpt3-175b")], space, ExploreOptions(chunk_size=8))
    assert result.removed["same design"] == 2 * 2  # an SRAM-only die kept at layers 1
    layer = bonded().layer_bytes
    for d in space.designs():
        target, _ = screen(space, d)
        p = space.as_dict(d)
        if target is not None and p["chiplet.memory"] == "3d-sram":
            chip = target.chiplet
            assert chip.bonded_layers == p["chiplet.layers"]
            assert target.memory_capacity_bytes == chip.sram_bytes + p["chiplet.layers"] * (
                layer(p["chiplet.area_mm2"], SEVEN))
            assert target.package.substrate == "organic"
            assert target.efficiency == space.base.efficiency
    fronts = summary(result, {})["models"]["gpt3-175b"]["fronts"]["chiplet.memory"]
    assert set(fronts) == {"sram", "3d-sram"}


def test_space_refuses_layers_without_a_bonded_memory_and_the_reverse():
    bad = {**SPACE, "chiplet": {**SPACE["chiplet"], "memory": ["sram"]}}
    with pytest.raises(TargetError, match=r"chiplet\.layers: given without a bonded memory"):
        parse_space(bad, "bad.yaml")
    bad["chiplet"] = {k: v for k, v in SPACE["chiplet"].items() if k != "layers"}
    with pytest.raises(TargetError, match=r"chiplet\.layers: missing"):
        parse_space(bad, "bad.yaml")

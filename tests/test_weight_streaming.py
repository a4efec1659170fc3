"""Weights streamed onto a wafer-scale engine from external memory (MemoryX-style): the
time model reads weights at the stream bandwidth, the fit counts only the KV cache, the
workspace and the stream buffer in SRAM."""

from __future__ import annotations

import dataclasses

import pytest

from chipletc.backends.perf.analytical import estimate
from chipletc.backends.targets import load_target
from chipletc.compiler.partition.problem import SearchOptions, build_problem
from chipletc.compiler.place import build_plan
from chipletc.compiler.schedule import check_mapping
from chipletc.ir.check import check_plan
from chipletc.ir.errors import InfeasibleError, TargetError
from chipletc.ir.mapping import ModelMapping, even_stages
from chipletc.ir.target import WaferSpec


def test_the_preset_streams_at_its_stated_bandwidth_beside_a_buffer():
    resident, streaming = load_target("wse-3"), load_target("wse-3-stream")
    assert resident.weights_resident and resident.stream_bw_Bps == 0
    assert not streaming.weights_resident
    wafer = streaming.package.wafer
    assert wafer.stream_bw_Bps == 150e9  # the CS-3's 12 x 100 GbE system I/O
    tiles = streaming.chips_per_package
    assert streaming.stream_bw_Bps * tiles == pytest.approx(150e9)
    assert streaming.memory_capacity_bytes == (
        resident.chiplet.sram_bytes - wafer.stream_buffer_bytes // tiles)


def test_streaming_decode_is_the_weights_over_the_stream_bandwidth(zoo_graph):
    """GPT-3 175B at batch 1 on one streaming WSE-3 (tp 96): every weight byte crosses
    the wafer's 150 GB/s once per token, so decode takes weights / 150 GB/s (2.33 s)
    within 2 % (the rest: compute and the tensor-parallel all-reduces, ~1000x faster)."""
    graph = zoo_graph("gpt3-175b")
    target = load_target("wse-3-stream")
    mapping = ModelMapping(96, 1, even_stages(graph.num_blocks, 1), 1, 1)
    got = estimate(graph, target, mapping, 1024, 1024).decode_s_per_token
    want = graph.weight_bytes / target.package.wafer.stream_bw_Bps
    assert got == pytest.approx(want, rel=0.02)
    # the same mapping with the weights resident would read them at 21 PB/s of SRAM
    resident = estimate(graph, load_target("wse-3"), mapping, 1024, 1024).decode_s_per_token
    assert resident < got / 100


def test_the_fit_counts_kv_workspace_and_buffer_not_the_weights(zoo_graph):
    """350 GB of GPT-3 weights on one wafer of 44 GB: refused with the weights resident,
    mapped when they stream; the plan and its schedule pass their capacity checks."""
    graph = zoo_graph("gpt3-175b")
    one = SearchOptions(max_servers=1)
    assert not any(build_problem(graph, load_target("wse-3"), one).tp_ok)
    target = load_target("wse-3-stream")
    problem = build_problem(graph, target, one)
    assert any(problem.tp_ok)
    mapping = ModelMapping(96, 1, even_stages(graph.num_blocks, 1), 2, 2)
    plan = build_plan(graph, target, mapping, 1024, 1024)
    plan.validate()
    assert plan.weights_streamed and check_plan(plan, graph, target) == []
    for c in plan.chiplets:
        assert c.used_bytes > c.capacity_bytes >= plan.held_bytes(c) == (
            c.kv_bytes + c.activation_bytes)
    check_mapping(graph, target, mapping, 1024, 1024)
    # a batch whose KV cache overflows what the buffer leaves is refused
    with pytest.raises(InfeasibleError, match="over the"):
        check_mapping(graph, target, dataclasses.replace(mapping, batch=8, micro_batch=8),
                      1024, 1024)


def test_a_stream_needs_a_buffer_that_leaves_sram():
    with pytest.raises(TargetError, match="stream_buffer_bytes"):
        WaferSpec(regions=1, cores_per_region=1, spares_per_region=0, engine_usd=0,
                  stream_bw_Bps=1e11)
    base = load_target("wse-3-stream")
    wafer = dataclasses.replace(base.package.wafer, stream_buffer_bytes=50_000_000_000)
    with pytest.raises(TargetError, match="leaves no SRAM"):
        dataclasses.replace(base, package=dataclasses.replace(base.package, wafer=wafer))

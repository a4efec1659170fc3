"""The placement plan: its invariants hold for every zoo model that fits, and break
when a plan is corrupted; the same inputs give the same bytes."""

from __future__ import annotations

import dataclasses
import json

import pytest
from builders import make_graph, make_target

from chipletc.compiler.partition import SearchOptions, partition
from chipletc.compiler.place import build_plan
from chipletc.ir.check import check_plan
from chipletc.ir.errors import InfeasibleError, PlanError
from chipletc.ir.plan import Plan
from chipletc.models.zoo import list_models


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_is_placed_or_explained(zoo_graph, default_target, name):
    graph = zoo_graph(name)
    opts = SearchOptions(prompt_len=512, gen_len=512)
    try:
        part = partition(graph, default_target, opts)
    except InfeasibleError as err:
        # heads that no tp of the server divides (PaLM's 48, BLOOM's 112) need padding
        assert "short by" in str(err)
        opts = dataclasses.replace(opts, pad_heads=True)
        part = partition(graph, default_target, opts)
    plan = build_plan(graph, default_target, part.mapping, opts.prompt_len, opts.gen_len)
    plan.validate()
    assert check_plan(plan, graph, default_target) == []
    held = sum(s.bytes for c in plan.chiplets for s in c.shards if not s.tied)
    replicated = sum(t.bytes * (t.copies - 1) for t in plan.tensors)
    assert held == pytest.approx(graph.weight_bytes + replicated, rel=1e-6)
    assert all(c.used_bytes <= c.capacity_bytes for c in plan.chiplets)


def test_padded_heads_over_more_ranks_than_heads(zoo_graph, default_target):
    """40 heads (and 40 K/V heads) padded to 64 ranks: each rank holds at most one."""
    graph = zoo_graph("llama2-13b")
    part = partition(graph, default_target, SearchOptions(tp=64, pad_heads=True, max_batch=16))
    build_plan(graph, default_target, part.mapping, 1024, 1024).validate()


def test_tables_are_split_over_tp_not_replicated(zoo_graph, default_target):
    """GPT-3's tables on its first stage: the token embedding vocabulary-parallel (each
    rank 1/32 of its rows), the 2048 x 12288 learned position table split over the hidden
    width (each rank 384 columns, 1.57 MB instead of the whole 50.3 MB), each held once;
    the only tensors every rank holds whole are the 1-D norm scales and biases."""
    graph = zoo_graph("gpt3-175b")
    opts = SearchOptions(tp=32, pp=96, batch=32, micro_batch=1)
    part = partition(graph, default_target, opts)
    plan = build_plan(graph, default_target, part.mapping, opts.prompt_len, opts.gen_len)
    assert check_plan(plan, graph, default_target) == []
    table = {t.name: t for t in plan.tensors}
    assert table["tok.weight"].copies == table["pos.weight"].copies == 1
    replicated = [t for t in plan.tensors if t.copies == 32]
    assert replicated and all(len(t.shape) == 1 for t in replicated)
    first = [c for c in plan.chiplets if c.stage == 0]
    for c in first:
        (pos,) = [s for s in c.shards if s.tensor == "pos.weight"]
        lo, hi = pos.slice[1]
        assert tuple(pos.slice[0]) == (0, 2048)
        assert hi - lo == 12288 // 32 and pos.bytes == 2048 * 384 * 2
    block = next(c for c in plan.chiplets if 0 < c.stage < 95)
    tables = table["tok.weight"].bytes / 32 + table["pos.weight"].bytes / 32
    # the first stage holds one block, as the middle ones do, plus its 1/32 of the tables
    assert first[0].weight_bytes - block.weight_bytes == pytest.approx(tables, abs=2 * 12288 * 2)


SMALL_GRAPH = dict(layers=4, d=128, heads=8, kv_heads=2, vocab=1000)
SMALL_TARGET = dict(sram_mb=2, max_servers=2)


@pytest.fixture(scope="module")
def small_plan() -> Plan:
    graph = make_graph(**SMALL_GRAPH)
    target = make_target(**SMALL_TARGET)
    part = partition(graph, target, SearchOptions(prompt_len=32, gen_len=32, max_batch=8, tp=4))
    assert part.mapping.tp == 4  # 2 KV heads over 4 ranks: KV weights replicated twice
    plan = build_plan(graph, target, part.mapping, 32, 32).validate()
    assert check_plan(plan, graph, target) == []
    return plan


@pytest.mark.parametrize(
    ("change", "invariant"),
    [
        ("understate_weights", "4. bytes"),
        ("understate_kv", "4. bytes"),
        ("shard_on_wrong_stage", "2. home"),
        ("drop_replica", "3. copies"),
        ("over_capacity", "5. capacity"),
    ],
)
def test_check_plan_names_each_broken_invariant(small_plan, change, invariant):
    graph, target = make_graph(**SMALL_GRAPH), make_target(**SMALL_TARGET)
    plan = small_plan
    c0 = plan.chiplets[0]
    if change == "understate_weights":
        plan = _replace_chiplet(plan, 0, weight_bytes=c0.weight_bytes - 1000)
    elif change == "understate_kv":
        plan = _replace_chiplet(plan, 0, kv_bytes=c0.kv_bytes - 1)
    elif change == "shard_on_wrong_stage":
        last = next(c for c in plan.chiplets if c.stage == int(plan.mapping["pp"]) - 1)
        assert last.stage > 0
        plan = _replace_chiplet(plan, last.id, shards=(*last.shards, c0.shards[0]))
    elif change == "drop_replica":
        norm = next(t for t in plan.tensors if t.copies == 4)  # replicated on all 4 ranks
        shards = tuple(s for s in c0.shards if s.tensor != norm.name)
        plan = _replace_chiplet(plan, 0, shards=shards)
    else:
        target = make_target(sram_mb=0.5, max_servers=2)
    problems = check_plan(plan, graph, target)
    assert any(p.startswith(invariant) for p in problems), problems


def _replace_chiplet(plan: Plan, i: int, **changes) -> Plan:
    chiplets = list(plan.chiplets)
    chiplets[i] = dataclasses.replace(chiplets[i], **changes)
    return dataclasses.replace(plan, chiplets=tuple(chiplets))


def test_missing_shard_fails(small_plan):
    c = small_plan.chiplets[0]
    with pytest.raises(PlanError, match=r"hold|placed nowhere"):
        _replace_chiplet(small_plan, 0, shards=c.shards[1:]).validate()


def test_duplicated_shard_fails(small_plan):
    c = small_plan.chiplets[1]
    sharded = next(s for s in c.shards if s.slice[0] != (0, 1000) and len(s.slice) == 2)
    with pytest.raises(PlanError, match=r"elements|overlap"):
        _replace_chiplet(small_plan, 1, shards=(*c.shards, sharded)).validate()


def test_overlap_balanced_by_a_gap_fails(small_plan):
    c = small_plan.chiplets[0]
    i, s = next((i, s) for i, s in enumerate(c.shards) if s.slice[0][0] == 0 and s.slice[0][1] < 64)
    rows = s.slice[0][1]
    moved = dataclasses.replace(s, slice=((1, rows + 1), *s.slice[1:]))
    shards = (*c.shards[:i], moved, *c.shards[i + 1 :])
    with pytest.raises(PlanError, match=r"overlap or leave a gap|outside"):
        _replace_chiplet(small_plan, 0, shards=shards).validate()


def test_over_capacity_fails(small_plan):
    c = small_plan.chiplets[2]
    with pytest.raises(PlanError, match="over its capacity"):
        _replace_chiplet(small_plan, 2, kv_bytes=c.capacity_bytes).validate()


def test_round_trip_through_json(small_plan):
    again = Plan.from_dict(json.loads(small_plan.to_json()))
    assert again.to_json() == small_plan.to_json()
    again.validate()


def test_unreadable_plan_is_a_plan_error():
    with pytest.raises(PlanError, match="malformed"):
        Plan.from_dict({"version": "1.0"})
    with pytest.raises(PlanError, match="version 9"):
        Plan.from_dict({"version": "9.0"})

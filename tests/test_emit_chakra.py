"""Chakra traces and ASTRA-sim configs, read back with Chakra's own decoder: node counts,
acyclic dependencies on existing nodes, communication sizes against the schedule,
matching sends and receives, the metadata version, and networks whose NPU count is
the number of traces."""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from graphlib import TopologicalSorter
from math import prod

import pytest
import yaml
from builders import make_graph, make_target
from chakra.schema.protobuf import et_def_pb2 as et
from chakra.src.third_party.utils.protolib import decodeMessage

from chipletc.backends.emit.astra import (
    comm_groups_json,
    network_dims,
    network_yaml,
    rank_groups,
    system_json,
)
from chipletc.backends.emit.chakra import CHAKRA_VERSION, TOKEN_BYTES, to_chakra
from chipletc.compiler.schedule import lower_schedule
from chipletc.ir.mapping import ModelMapping, even_stages
from chipletc.ir.schedule import ScheduleKind

STEPS = 2
COMM_TYPES = {"all_reduce": et.ALL_REDUCE, "all_gather": et.ALL_GATHER}


def decode(data: bytes) -> tuple[et.GlobalMetadata, list[et.Node]]:
    """Chakra's reader: one GlobalMetadata, then Nodes until the end of the stream."""
    stream = io.BytesIO(data)
    meta = et.GlobalMetadata()
    assert decodeMessage(stream, meta)
    nodes = []
    while True:
        node = et.Node()
        if not decodeMessage(stream, node):
            return meta, nodes
        nodes.append(node)


def attrs(node: et.Node) -> dict:
    return {a.name: getattr(a, a.WhichOneof("value")) for a in node.attr}


def make_schedule(tp=2, pp=6, batch=4, micro=2):
    graph, target = make_graph(layers=6), make_target()  # 8 chips per server
    mapping = ModelMapping(tp, pp, even_stages(graph.num_blocks, pp), batch, micro)
    return lower_schedule(graph, target, mapping, 16, 8), target


@pytest.fixture(scope="module", params=["representative", "all"])
def traces(request):
    schedule, target = make_schedule()
    files = to_chakra(schedule, target, request.param, STEPS)
    return request.param, schedule, target, {k: decode(v) for k, v in files.items()}


def by_stage(traces) -> dict[int | None, list[list[et.Node]]]:
    """Stage -> the node lists of its ranks; None: NPUs past the plan's chiplets."""
    ranks, schedule, _, files = traces
    out = defaultdict(list)
    for name, (_, nodes) in files.items():
        rank = int(name.split(".")[1])
        if ranks == "representative":
            out[rank if rank < schedule.pp else None].append(nodes)
        else:
            out[rank // schedule.tp if rank < schedule.tp * schedule.pp else None].append(nodes)
    return out


def test_metadata_names_the_version_astra_sim_reads(traces):
    for meta, _ in traces[3].values():
        assert meta.version == CHAKRA_VERSION == "0.0.4"


def test_node_counts_are_the_window_of_each_stage_program(traces):
    schedule = traces[1]
    m = schedule.num_micro_batches
    staged = by_stage(traces)
    assert all(nodes == [] for nodes in staged.pop(None, []))
    for s, lists in staged.items():
        st = schedule.stages[s]
        expected = m * (len(st.prefill) + STEPS * len(st.decode))
        if s == 0:
            expected += m * STEPS  # token receives before each decode step
        if s == schedule.pp - 1:
            expected += m * STEPS  # token sends after prefill and all but the last step
        assert [len(nodes) for nodes in lists] == [expected] * len(lists)


def test_dependencies_are_acyclic_and_name_existing_nodes(traces):
    for _, nodes in traces[3].values():
        ids = {n.id for n in nodes}
        assert len(ids) == len(nodes)
        graph = {n.id: set(n.data_deps) | set(n.ctrl_deps) for n in nodes}
        assert all(deps <= ids for deps in graph.values())
        assert len(list(TopologicalSorter(graph).static_order())) == len(nodes)


def test_collective_sizes_are_the_schedule_link_bytes(traces):
    schedule = traces[1]
    m = schedule.num_micro_batches
    for s, lists in by_stage(traces).items():
        if s is None:
            continue
        want: Counter = Counter()
        st = schedule.stages[s]
        for program, times in ((st.prefill, 1), (st.decode, STEPS)):
            for op in program:
                if op.kind is ScheduleKind.COLLECTIVE:
                    want[COMM_TYPES[op.collective]] += m * times * round(op.link_bytes)
        assert sum(want.values()) > 0
        for nodes in lists:
            got: Counter = Counter()
            for n in nodes:
                if n.type == et.COMM_COLL_NODE:
                    a = attrs(n)
                    got[a["comm_type"]] += a["comm_size"]
                    assert a["pg_name"] == str(s + 1) and a["is_cpu_op"] is False
            assert got == want


def test_sends_and_receives_match_and_carry_the_schedule_bytes(traces):
    ranks, schedule, _, files = traces
    sends, recvs = Counter(), Counter()
    moved = 0
    for _, nodes in files.values():
        for n in nodes:
            a = attrs(n)
            key = (a.get("comm_src"), a.get("comm_dst"), a.get("comm_tag"), a.get("comm_size"))
            if n.type == et.COMM_SEND_NODE:
                sends[key] += 1
                moved += 0 if n.name.endswith(".token") else a["comm_size"]
            elif n.type == et.COMM_RECV_NODE:
                recvs[key] += 1
    assert sends == recvs and max(sends.values()) == 1
    m, width = schedule.num_micro_batches, schedule.tp if ranks == "all" else 1
    want = sum(
        round(st.prefill[-1].link_bytes) + STEPS * round(st.decode[-1].link_bytes)
        for st in schedule.stages[:-1]
    )
    assert moved == m * width * want
    tokens = [k for k in sends if k[3] == schedule.micro_batch * TOKEN_BYTES]
    assert len(tokens) == m * width * STEPS


def test_collectives_involve_the_dimensions_their_group_spans(traces):
    ranks, schedule, target, files = traces
    dims = network_dims(schedule, target, ranks)
    assert len(files) == prod(d.npus for d in dims)
    for _, nodes in files.values():
        for n in nodes:
            if n.type == et.COMM_COLL_NODE:
                involved = list(attrs(n)["involved_dim"].values)
                assert len(involved) == len(dims)
                assert any(involved) == (ranks == "all")


def test_ranks_lay_the_plan_over_servers():
    schedule, target = make_schedule()  # 6 stages of 2 chiplets on servers of 8
    dims = network_dims(schedule, target, "all")
    assert [(d.npus, d.level.name) for d in dims] == [(8, "server"), (2, "cluster")]
    dims = network_dims(schedule, target, "representative")
    assert [(d.npus, d.level.name) for d in dims] == [(4, "server"), (2, "cluster")]
    groups = rank_groups(schedule, "all")
    assert groups == {s + 1: [2 * s, 2 * s + 1] for s in range(6)}
    assert json.loads(comm_groups_json(groups)) == {str(g): r for g, r in groups.items()}


@pytest.mark.parametrize("ranks", ["representative", "all"])
def test_network_and_system_configs_have_one_entry_per_dimension(ranks):
    schedule, target = make_schedule()
    dims = network_dims(schedule, target, ranks)
    net = yaml.safe_load(network_yaml(dims, target))
    assert set(net) == {"topology", "npus_count", "bandwidth", "latency"}
    assert all(len(v) == len(dims) for v in net.values())
    assert net["npus_count"] == [d.npus for d in dims]
    assert all(t in ("Ring", "Switch", "FullyConnected") for t in net["topology"])
    assert all(b > 0 for b in net["bandwidth"]) and all(x > 0 for x in net["latency"])
    system = json.loads(system_json(dims, target, 1e12))
    assert len(system["all-reduce-implementation"]) == len(dims)
    assert system["local-mem-bw"] > 0


def test_traces_repeat_byte_for_byte():
    schedule, target = make_schedule()
    assert to_chakra(schedule, target, "all", STEPS) == to_chakra(schedule, target, "all", STEPS)


def test_representative_traces_are_one_per_stage_and_read_from_disk(tmp_path):
    from chakra.src.third_party.utils.protolib import openFileRd

    schedule, target = make_schedule(pp=3)
    files = to_chakra(schedule, target, "representative", STEPS)
    assert sorted(files) == [f"chipletc.{s}.et" for s in range(3)]
    kinds = defaultdict(int)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        with openFileRd(str(tmp_path / name)) as stream:
            meta = et.GlobalMetadata()
            assert decodeMessage(stream, meta)
            node = et.Node()
            while decodeMessage(stream, node):
                kinds[node.type] += 1
                node = et.Node()
    assert kinds[et.COMP_NODE] and kinds[et.COMM_COLL_NODE]
    assert kinds[et.COMM_SEND_NODE] == kinds[et.COMM_RECV_NODE] > 0

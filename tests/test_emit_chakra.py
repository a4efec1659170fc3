"""Chakra traces and ASTRA-sim configs, read back with Chakra's own decoder: the
structural checker (``chakra_check``) on both rank modes and its own failures, node
counts, communication sizes against the schedule, sends split per rank, the metadata
version, networks whose NPU count is the number of traces, stages in Gray order so a
send crosses the level its boundary does, and the group's bandwidth on a
representative NPU."""

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
from chakra.src.third_party.utils.protolib import decodeMessage, encodeMessage
from chakra_check import attrs, check_chakra_set, decode, npu_of

from chipletc.backends.emit.astra import (
    comm_groups_json,
    involved_dims,
    network_dims,
    network_yaml,
    rank_groups,
    system_json,
)
from chipletc.backends.emit.chakra import CHAKRA_VERSION, TOKEN_BYTES, to_chakra
from chipletc.backends.sim.timing import hop_time_s
from chipletc.compiler.schedule import lower_schedule
from chipletc.ir.mapping import ModelMapping, even_stages
from chipletc.ir.schedule import ScheduleKind

STEPS = 2
COMM_TYPES = {"all_reduce": et.ALL_REDUCE, "all_gather": et.ALL_GATHER}


def make_schedule(tp=2, pp=6, batch=4, micro=2):
    graph, target = make_graph(layers=max(6, pp)), make_target()  # 8 chips per server
    mapping = ModelMapping(tp, pp, even_stages(graph.num_blocks, pp), batch, micro)
    return lower_schedule(graph, target, mapping, 16, 8), target


@pytest.fixture(scope="module", params=["representative", "all"])
def traces(request):
    schedule, target = make_schedule()
    files = to_chakra(schedule, target, request.param, STEPS)
    return request.param, schedule, target, {k: decode(v) for k, v in files.items()}


def by_stage(traces) -> dict[int | None, list[list[et.Node]]]:
    """Stage -> the node lists of its ranks in tp order; None: NPUs without work."""
    out = defaultdict(list)
    for meta, nodes in sorted(traces[3].values(), key=lambda t: attrs(t[0]).get("tp_rank", 0)):
        out[attrs(meta).get("stage")].append(nodes)
    return out


def test_every_set_passes_the_structural_checker(traces):
    ranks, schedule, target, _ = traces
    check_chakra_set(to_chakra(schedule, target, ranks, STEPS), schedule, target, ranks, STEPS)


def test_the_checker_rejects_a_broken_set():
    """Defects the checker must catch: a one-NPU collective, an unmatched send, a gap in
    the ids, a dependency ahead, a short send."""
    schedule, target = make_schedule(pp=2)
    files = to_chakra(schedule, target, "representative", STEPS)

    def broken(edit) -> dict[str, bytes]:
        meta, nodes = decode(files["chipletc.0.et"])
        edit(nodes)
        buf = io.BytesIO()
        for message in (meta, *nodes):
            encodeMessage(buf, message)
        return {**files, "chipletc.0.et": buf.getvalue()}

    def one_npu_collective(nodes):
        comp = next(n for n in nodes if "comm_type" in attrs(n))
        comp.type = et.COMM_COLL_NODE
        comp.attr.add(name="pg_name", string_val="1")

    def size(nodes, delta):
        send = next(n for n in nodes if n.type == et.COMM_SEND_NODE)
        next(a for a in send.attr if a.name == "comm_size").int64_val += delta

    edits = {
        "collective on one NPU": one_npu_collective,
        "unmatched": lambda nodes: size(nodes, 1),
        "ids": lambda nodes: setattr(nodes[-1], "id", len(nodes)),
        "dep ahead": lambda nodes: nodes[0].data_deps.append(1),
        "unmatched send": lambda nodes: nodes.remove(
            next(n for n in nodes if n.type == et.COMM_SEND_NODE)
        ),
    }
    check_chakra_set(files, schedule, target, "representative", STEPS)
    for edit in edits.values():
        with pytest.raises(AssertionError):
            check_chakra_set(broken(edit), schedule, target, "representative", STEPS)


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
        if traces[0] == "all":  # each collective's launch overhead is a node of its own
            expected += m * sum(
                op.kind is ScheduleKind.COLLECTIVE for op in (*st.prefill, *STEPS * st.decode)
            )
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
        kind = et.COMM_COLL_NODE if traces[0] == "all" else et.COMP_NODE
        for nodes in lists:
            got: Counter = Counter()
            for n in nodes:
                a = attrs(n)
                if "comm_type" in a:
                    assert n.type == kind and a["is_cpu_op"] is False
                    got[a["comm_type"]] += a["comm_size"]
                    assert a.get("pg_name", str(s + 1)) == str(s + 1)
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
    assert moved == m * want  # each rank of a group sends its slice
    tokens = [k for k in sends if k[3] == schedule.micro_batch * TOKEN_BYTES]
    assert len(tokens) == m * width * STEPS


def test_collectives_involve_the_dimensions_their_group_spans(traces):
    ranks, schedule, target, files = traces
    dims = network_dims(schedule, target, ranks)
    assert len(files) == prod(d.npus for d in dims)
    colls = [n for _, nodes in files.values() for n in nodes if n.type == et.COMM_COLL_NODE]
    assert bool(colls) == (ranks == "all")  # representative: replayed as compute
    for n in colls:
        involved = list(attrs(n)["involved_dim"].values)
        assert len(involved) == len(dims) and any(involved)


@pytest.mark.parametrize("ranks", ["representative", "all"])
@pytest.mark.parametrize(("tp", "pp"), [(2, 6), (2, 12), (4, 7), (1, 19)])
def test_a_send_crosses_the_one_level_its_boundary_crosses(ranks, tp, pp):
    """ASTRA-sim routes a send over the innermost dimension its NPUs differ in: in Gray
    order that is the only one, one step apart, and the level the schedule names."""
    schedule, target = make_schedule(tp=tp, pp=pp, batch=2, micro=2)
    dims = network_dims(schedule, target, ranks)
    groups = rank_groups(schedule, ranks, dims)
    levels = [d.level.name for d in dims]
    for s in range(pp - 1):
        send = next(op for op in schedule.stages[s].decode if op.kind is ScheduleKind.SEND)
        for a, b in zip(groups[s + 1], groups[s + 2], strict=True):
            differ = involved_dims([a, b], dims)
            assert differ.count(True) == 1 and levels[differ.index(True)] == send.level


@pytest.mark.parametrize(("tp", "pp"), [(2, 6), (4, 7), (2, 12)])
def test_a_representative_send_takes_chipletcs_time_in_astra_sims_model(tp, pp):
    """ASTRA-sim's congestion-unaware send: hops x latency + bytes / bandwidth of the
    dimension it crosses (a Ring neighbour 1 hop, a Switch 2); chipletc's: hop_time_s."""
    schedule, target = make_schedule(tp=tp, pp=pp, batch=2, micro=2)
    dims = network_dims(schedule, target, "representative")
    net = yaml.safe_load(network_yaml(dims, target))
    groups = rank_groups(schedule, "representative", dims)
    for s in range(pp - 1):
        send = next(op for op in schedule.stages[s].decode if op.kind is ScheduleKind.SEND)
        k = involved_dims([*groups[s + 1], *groups[s + 2]], dims).index(True)
        hops = {"Ring": 1, "Switch": 2}[net["topology"][k]]
        astra_s = hops * net["latency"][k] * 1e-9 + send.link_bytes / (net["bandwidth"][k] * 1e9)
        assert astra_s == pytest.approx(hop_time_s(send, target), rel=1e-5)


def test_ranks_lay_the_plan_over_servers():
    schedule, target = make_schedule()  # 6 stages of 2 chiplets on servers of 8
    dims = network_dims(schedule, target, "all")
    assert [(d.npus, d.level.name) for d in dims] == [(8, "server"), (2, "cluster")]
    groups = rank_groups(schedule, "all", dims)  # server 1 in reverse (Gray) order
    assert groups == {1: [0, 1], 2: [2, 3], 3: [4, 5], 4: [6, 7], 5: [14, 15], 6: [12, 13]}
    assert json.loads(comm_groups_json(groups)) == {str(g): r for g, r in groups.items()}
    dims = network_dims(schedule, target, "representative")
    assert [(d.npus, d.level.name) for d in dims] == [(4, "server"), (2, "cluster")]
    groups = rank_groups(schedule, "representative", dims)
    assert groups == {1: [0], 2: [1], 3: [2], 4: [3], 5: [7], 6: [6]}
    assert json.loads(comm_groups_json(groups)) == {}  # no collective: no group


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
    assert sorted(files, key=npu_of) == [f"chipletc.{s}.et" for s in range(3)]
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
    assert kinds[et.COMP_NODE] and not kinds[et.COMM_COLL_NODE]
    assert kinds[et.COMM_SEND_NODE] == kinds[et.COMM_RECV_NODE] > 0

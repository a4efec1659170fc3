"""A structural checker for a set of Chakra traces (``backends.emit.chakra.to_chakra``).

``check_chakra_set`` reads every trace back with Chakra's own decoder and asserts what
ASTRA-sim needs to run the set to the end and what chipletc's plan fixes, from the
traces alone (each trace's metadata names its stage and tensor-parallel rank):

* every trace is one GlobalMetadata then Nodes; node ids are 0, 1, 2, ... in file
  order and every dependency names an earlier node (so the graph is acyclic);
* no collective over one NPU (ASTRA-sim never completes one): a COMM_COLL_NODE names
  its stage's group, which has at least two NPUs, and only ``ranks="all"`` has any;
* every send is issued by its ``comm_src`` and matched by exactly one receive on its
  ``comm_dst`` with the same tag and size, and no two messages share a key;
* bytes per stage equal the plan's: the ranks of a stage together send, per pass, the
  stage's outgoing activation (``ScheduleOp.link_bytes``), each rank's collectives
  carry the schedule's buffers, and its compute nodes the schedule's FLOPs, over the
  window (prefill of every micro-batch, then ``steps`` decode steps);
* a rank's durations add up to the simulator's pass times, each pass rounded to 1 us.

The test suite runs it on every set it emits (``conftest.py`` wraps ``to_chakra``).
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict

from chakra.schema.protobuf import et_def_pb2 as et
from chakra.src.third_party.utils.protolib import decodeMessage

from chipletc.backends.emit.window import pass_ops, window_steps
from chipletc.ir.schedule import Schedule, ScheduleKind
from chipletc.ir.target import Target


def decode(data: bytes) -> tuple[et.GlobalMetadata, list[et.Node]]:
    """Chakra's reader: one GlobalMetadata, then Nodes until the end of the stream."""
    stream = io.BytesIO(data)
    meta = et.GlobalMetadata()
    assert decodeMessage(stream, meta), "a trace starts with its GlobalMetadata"
    nodes = []
    while True:
        node = et.Node()
        if not decodeMessage(stream, node):
            return meta, nodes
        nodes.append(node)


def attrs(message: et.Node | et.GlobalMetadata) -> dict:
    return {a.name: getattr(a, a.WhichOneof("value")) for a in message.attr}


def npu_of(name: str) -> int:
    """``<prefix>.<npu>.et`` -> npu."""
    return int(name.rsplit(".", 2)[1])


def check_chakra_set(
    files: dict[str, bytes], schedule: Schedule, target: Target, ranks: str, steps: int
) -> None:
    """Assert the invariants of the module docstring; a failure names the trace and node."""
    decoded = {npu_of(name): decode(data) for name, data in files.items()}
    assert sorted(decoded) == list(range(len(decoded))), "one trace per NPU 0..n-1"
    place = {}
    for npu, (meta, nodes) in decoded.items():
        a = attrs(meta)
        assert a["ranks"] == ranks
        if "stage" in a:
            place[npu] = (a["stage"], a["tp_rank"])
        else:
            assert nodes == [], f"NPU {npu}: an idle NPU has no nodes"
    members = defaultdict(list)
    for npu, (stage, _) in sorted(place.items()):
        members[stage].append(npu)
    width = 1 if ranks == "representative" else schedule.tp
    assert sorted(members) == list(range(schedule.pp))
    assert all(len(m) == width for m in members.values()), "a stage has tp NPUs (all) or one"

    sends, recvs = Counter(), Counter()
    sent = defaultdict(int)  # stage -> activation bytes its ranks send
    for npu, (_, nodes) in decoded.items():
        for i, n in enumerate(nodes):
            where = f"NPU {npu} node {i} ({n.name})"
            assert n.id == i, f"{where}: ids count from 0 in file order"
            assert all(d < i for d in [*n.data_deps, *n.ctrl_deps]), f"{where}: a dep ahead"
            a = attrs(n)
            if n.type == et.COMM_COLL_NODE:
                group = members[place[npu][0]]
                assert a["pg_name"] == str(place[npu][0] + 1), where
                assert len(group) >= 2 and npu in group, f"{where}: a collective on one NPU"
            elif n.type in (et.COMM_SEND_NODE, et.COMM_RECV_NODE):
                key = (a["comm_src"], a["comm_dst"], a["comm_tag"], a["comm_size"])
                if n.type == et.COMM_SEND_NODE:
                    assert a["comm_src"] == npu != a["comm_dst"], f"{where}: sent by another"
                    sends[key] += 1
                    if not n.name.endswith(".token"):
                        sent[place[npu][0]] += a["comm_size"]
                else:
                    assert a["comm_dst"] == npu != a["comm_src"], f"{where}: received by another"
                    recvs[key] += 1
    assert sends == recvs, f"unmatched messages: {(sends - recvs) + (recvs - sends)}"
    assert all(c == 1 for c in sends.values()), "two messages share (src, dst, tag, size)"

    m_count, n_steps = schedule.num_micro_batches, window_steps(schedule, steps)
    passes = pass_ops(schedule, target, steps)
    for s in range(schedule.pp):
        st = schedule.stages[s]
        outgoing = [op.link_bytes for op in st.prefill if op.kind is ScheduleKind.SEND]
        outgoing += n_steps * [op.link_bytes for op in st.decode if op.kind is ScheduleKind.SEND]
        assert sent[s] == m_count * sum(round(b) for b in outgoing), f"stage {s}: bytes sent"
        ops = [op for step in range(-1, n_steps) for op, _ in passes[s, step]]
        flops = m_count * sum(round(op.flops) for op in ops if op.kind is ScheduleKind.COMPUTE)
        coll = m_count * sum(
            round(op.link_bytes) for op in ops if op.kind is ScheduleKind.COLLECTIVE
        )
        total_us = m_count * sum(
            round(sum(t.total_s for _, t in passes[s, step]) * 1e6) for step in range(-1, n_steps)
        )
        for npu in members[s]:
            nodes = decoded[npu][1]
            got = [attrs(n) for n in nodes]
            assert sum(a.get("num_ops", 0) for a in got) == flops, f"NPU {npu}: FLOPs"
            assert sum(a["comm_size"] for a in got if "comm_type" in a) == coll, f"NPU {npu}"
            assert sum(n.duration_micros for n in nodes) == total_us, f"NPU {npu}: time"

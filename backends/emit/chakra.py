"""MLCommons Chakra execution traces of a schedule, one per rank, for ASTRA-sim.

Each trace (``<prefix>.<npu>.et``) is a GlobalMetadata message (naming the rank's stage
and tensor-parallel rank) then Nodes, encoded with the ``mlc-chakra`` package's own
protobuf module and varint framing. A rank runs its stage's passes of the window
(``backends.emit.window``: the prefill of every micro-batch, then decode steps
``0 .. steps - 1`` of each) in the order chipletc's simulator serves them, (step,
micro-batch), one node per op of the stage's program; node ids count from 0 in file
order and every dependency names an earlier node:

* compute ops are COMP_NODEs with ``num_ops`` (FLOPs of the rank), ``tensor_size``
  (bytes it moves: weights, KV cache, activations) and ``duration_micros``, the time
  the simulator gives the op in Chakra's whole microseconds, rounded so that the
  durations of a pass add up to the pass (the rounding error does not build up);
* a collective with ``ranks="all"`` is a COMM_COLL_NODE with ``comm_type``,
  ``comm_size`` (the buffer per rank, as ``ScheduleOp.link_bytes``), ``pg_name``
  (communicator group ``s + 1``, the stage's tensor-parallel group, see
  ``astra.rank_groups``) and ``involved_dim``, after a COMP_NODE ``<op>.launch`` for
  the collective's fixed software time, which ASTRA-sim's network does not add
  (``efficiency.collective_overhead_s``). The all-to-alls of a batch-split KV cache
  run among the ``r`` ranks sharing a KV head (``ScheduleOp.chiplets``); ASTRA-sim
  has one communicator per stage, so there they span the stage's group, exact only
  where ``r = tp`` (multi-query attention, MLA). With ``ranks="representative"`` a group
  is one NPU, and ASTRA-sim never completes a collective over one NPU (it builds one
  with no phase and waits forever); a group of tp NPUs would stand for one stage with
  tp traces. So there a collective is a COMP_NODE replaying the time chipletc gives it
  (its exposed time: ``backends.sim.timing`` lets part of it hide under the op before),
  keeping ``comm_type`` and ``comm_size`` as attributes;
* a stage-to-stage transfer is a COMM_SEND_NODE on the sender and a COMM_RECV_NODE on
  the receiver with the same ``comm_src``, ``comm_dst``, ``comm_tag`` and ``comm_size``.
  With ``ranks="all"`` rank ``i`` of a group sends its ``1/tp`` slice of the activation
  to rank ``i`` of the next group, as ``backends.perf.analytical.transfer_time_s``
  counts it; a representative NPU sends the whole activation at its group's bandwidth
  (``astra.Dimension.chips``);
* the sampled tokens of a micro-batch go back from the last stage to stage 0 before its
  next decode step (``micro_batch x 4`` bytes; chipletc's simulator lets them through
  at no cost): without them ASTRA-sim would start a step before the previous one ended.
  These sends and receives are named ``token...``.

Dependencies are all ``data_deps`` (ASTRA-sim enables those by default): each node
waits for the rank's node before it, except that a send is a leaf, so the stage goes
on while its message travels, as in chipletc's simulator. ASTRA-sim runs one send or
collective at a time per NPU (receives do not count), so every send and collective
also waits for the rank's previous send: the traces say what ASTRA-sim does rather
than rely on a send overlapping the next one. chipletc's simulator queues the sends of
one boundary the same way, but lets a group's collectives overlap its outgoing send
(``ranks="all"`` only; the send of a slice is short).
"""

from __future__ import annotations

import io
from math import prod

from chipletc import __version__
from chipletc.ir.errors import UsageError
from chipletc.ir.schedule import Schedule, ScheduleKind, ScheduleOp
from chipletc.ir.target import Target

from .astra import Ranks, involved_dims, network_dims, rank_groups
from .window import PassOps, pass_ops, window_steps

try:
    from chakra.schema.protobuf import et_def_pb2 as et
    from chakra.src.third_party.utils.protolib import encodeMessage
except ImportError:  # installed apart (pip install --no-deps mlc-chakra): only -o needs it
    et = None

__all__ = ["CHAKRA_VERSION", "TOKEN_BYTES", "chakra_bytes", "to_chakra"]

CHAKRA_VERSION = "0.0.4"
"""GlobalMetadata version of the traces: the schema version ASTRA-sim's examples and
Chakra's trace generators write (its feeder reads the message without rejecting any)."""

TOKEN_BYTES = 4
"""One sampled token id (int32), sent back to stage 0 per sequence and decode step."""

_COMM_TYPE = {"all_reduce": "ALL_REDUCE", "all_gather": "ALL_GATHER", "all_to_all": "ALL_TO_ALL"}

Work = dict[tuple[int, int], list["list[tuple[str, et.Node]] | None"]]


def to_chakra(
    schedule: Schedule,
    target: Target,
    ranks: Ranks = "representative",
    steps: int = 2,
    prefix: str = "chipletc",
) -> dict[str, bytes]:
    """``{"<prefix>.<npu>.et": trace}`` for every NPU of ``astra.network_dims``."""
    work, groups, npus = _prepare(schedule, target, ranks, steps)
    where = {r: (g - 1, i) for g, members in groups.items() for i, r in enumerate(members)}
    n_steps = window_steps(schedule, steps)
    out = {}
    for npu in range(npus):
        buf = io.BytesIO()
        encodeMessage(buf, _metadata(schedule, ranks, n_steps, where.get(npu)))
        if npu in where:
            nodes = _rank_nodes(
                schedule, work, groups, *where[npu], n_steps, schedule.num_micro_batches
            )
            for node in nodes:
                encodeMessage(buf, node)
        out[f"{prefix}.{npu}.et"] = buf.getvalue()
    return out


def chakra_bytes(
    schedule: Schedule, target: Target, ranks: Ranks = "representative"
) -> tuple[float, float]:
    """About how many bytes ``to_chakra`` writes: ``(window without decode steps, each
    decode step)``, from one micro-batch of each stage's first rank encoded in full
    (other micro-batches and ranks differ only in ids; a few bytes). For refusing an
    output before building it (``backends.emit.output_files``)."""
    work, groups, npus = _prepare(schedule, target, ranks, 1)
    m_count = schedule.num_micro_batches
    base = npus * len(_metadata(schedule, ranks, 0, (0, 0)).SerializeToString()) + 2 * npus
    per_step = 0.0
    for g, members in groups.items():
        size = []
        for k in (0, 1):
            buf = io.BytesIO()
            for node in _rank_nodes(schedule, work, groups, g - 1, 0, k, 1):
                encodeMessage(buf, node)
            size.append(buf.tell())
        base += len(members) * m_count * size[0]
        per_step += len(members) * m_count * (size[1] - size[0])
    return base, per_step


def _prepare(
    schedule: Schedule, target: Target, ranks: Ranks, steps: int
) -> tuple[Work, dict[int, list[int]], int]:
    """The node templates of each pass, the NPUs of each stage and the NPU count."""
    if et is None:
        raise UsageError(
            "chakra: the mlc-chakra package is missing; install it with "
            "`pip install --no-deps mlc-chakra`"
        )
    dims = network_dims(schedule, target, ranks)
    groups = rank_groups(schedule, ranks, dims)
    # compute and collective nodes differ between micro-batches and ranks of a stage
    # only by id, name and dependencies: build each once, copy it per use
    work = {
        key: _pass_work(ops, target, ranks, key[0] + 1, involved_dims(groups[key[0] + 1], dims))
        for key, ops in pass_ops(schedule, target, steps).items()
    }
    return work, groups, prod(d.npus for d in dims)


def _metadata(
    schedule: Schedule, ranks: Ranks, n_steps: int, place: tuple[int, int] | None
) -> et.GlobalMetadata:
    A = et.AttributeProto
    attr = [
        A(name="generator", string_val=f"chipletc {__version__}"),
        A(name="model", string_val=schedule.model),
        A(name="ranks", string_val=ranks),
        A(name="decode_steps", int64_val=n_steps),
    ]
    if place is not None:
        attr += [A(name="stage", int64_val=place[0]), A(name="tp_rank", int64_val=place[1])]
    return et.GlobalMetadata(version=CHAKRA_VERSION, attr=attr)


def _pass_work(
    ops: PassOps, target: Target, ranks: Ranks, group: int, dims: list[bool]
) -> list[list[tuple[str, et.Node]] | None]:
    """One pass's compute and collective nodes, per op ``(name suffix, node)`` (None for
    sends and receives), each lasting its op's time rounded so that the pass's
    durations add up to the pass. With ``ranks="all"`` a collective's fixed software
    time (``efficiency.collective_overhead_s``, which no network model has) comes
    first as a compute node ``<op>.launch``; the network time is ASTRA-sim's."""
    out, start_s = [], 0.0
    overhead_s = target.efficiency.collective_overhead_s

    def micros(seconds: float) -> int:
        nonlocal start_s
        end_s = start_s + seconds
        span = round(end_s * 1e6) - round(start_s * 1e6)
        start_s = end_s
        return span

    for op, t in ops:
        if op.kind in (ScheduleKind.SEND, ScheduleKind.RECV):
            out.append(None)
        elif op.kind is ScheduleKind.COLLECTIVE and ranks == "all":
            launch_s = min(overhead_s, t.total_s)
            launch = et.Node(
                type=et.COMP_NODE,
                duration_micros=micros(launch_s),
                attr=[et.AttributeProto(name="is_cpu_op", bool_val=False)],
            )
            node = _work(op, micros(t.total_s - launch_s), ranks, group, dims)
            out.append([(".launch", launch), ("", node)])
        else:
            out.append([("", _work(op, micros(t.total_s), ranks, group, dims))])
    return out


def _rank_nodes(
    schedule: Schedule,
    work: Work,
    groups: dict[int, list[int]],
    stage: int,
    index: int,
    n_steps: int,
    m_count: int,
) -> list[et.Node]:
    """Rank ``index`` of stage ``stage``'s group: its passes of the window (the first
    ``m_count`` micro-batches), in order."""
    pp, tp = schedule.pp, len(groups[stage + 1])
    st = schedule.stages[stage]
    rank, first, last_stage = groups[stage + 1][index], groups[1][index], groups[pp][index]
    nodes: list[et.Node] = []
    deps: list[int] = []  # what the next node waits for: the last node but a send
    sent: list[int] = []  # the rank's last send, which the next send or collective waits for

    def add(node: et.Node, name: str) -> None:
        node.id, node.name = len(nodes), name
        node.data_deps.extend(deps)
        if node.type in (et.COMM_SEND_NODE, et.COMM_COLL_NODE):
            node.data_deps.extend(sent)
        nodes.append(node)
        if node.type == et.COMM_SEND_NODE:
            sent[:] = [node.id]
        else:
            deps[:] = [node.id]

    def tag(step: int, mb: int, boundary: int) -> int:
        """Unique per message of the window; boundary ``pp - 1`` carries tokens."""
        return ((step + 1) * schedule.num_micro_batches + mb) * pp + boundary

    token = schedule.micro_batch * TOKEN_BYTES
    for step in range(-1, n_steps):
        label = "prefill" if step < 0 else f"decode{step}"
        program = st.prefill if step < 0 else st.decode
        for mb in range(m_count):
            at = f"{label}.mb{mb}"
            if pp > 1 and stage == 0 and step >= 0:
                recv = _p2p(et.COMM_RECV_NODE, last_stage, rank, token, tag(step, mb, pp - 1))
                add(recv, f"{at}.token")
            for op, templates in zip(program, work[stage, step], strict=True):
                if templates is not None:
                    for suffix, template in templates:
                        node = et.Node()
                        node.CopyFrom(template)
                        add(node, f"{at}.{op.name}{suffix}")
                    continue
                if op.kind is ScheduleKind.SEND:
                    peer = groups[stage + 2][index]
                    size = _slice(op.link_bytes, tp, index)
                    node = _p2p(et.COMM_SEND_NODE, rank, peer, size, tag(step, mb, stage))
                else:
                    peer = groups[stage][index]
                    size = _slice(op.link_bytes, tp, index)
                    node = _p2p(et.COMM_RECV_NODE, peer, rank, size, tag(step, mb, stage - 1))
                add(node, f"{at}.{op.name}")
            if pp > 1 and stage == pp - 1 and step + 1 < n_steps:
                send = _p2p(et.COMM_SEND_NODE, rank, first, token, tag(step + 1, mb, pp - 1))
                add(send, f"{at}.token")
    return nodes


def _slice(nbytes: float, tp: int, index: int) -> int:
    """Rank ``index``'s share of a message of ``nbytes`` split over ``tp`` ranks; the
    shares add up to the message."""
    total = round(nbytes)
    return (index + 1) * total // tp - index * total // tp


def _work(op: ScheduleOp, micros: int, ranks: Ranks, group: int, dims: list[bool]) -> et.Node:
    """A compute op or a collective, without id, name or dependencies."""
    A = et.AttributeProto
    kind = et.COMP_NODE
    if op.kind is ScheduleKind.COMPUTE:
        attrs = [
            A(name="num_ops", int64_val=round(op.flops)),
            A(name="tensor_size", uint64_val=round(op.memory_bytes)),
        ]
    else:
        attrs = [
            A(name="comm_type", int64_val=getattr(et, _COMM_TYPE[op.collective])),
            A(name="comm_size", int64_val=round(op.link_bytes)),
        ]
        if ranks == "all":
            kind = et.COMM_COLL_NODE
            attrs += [
                A(name="pg_name", string_val=str(group)),
                A(name="involved_dim", bool_list=et.BoolList(values=dims)),
            ]
    return et.Node(
        type=kind, duration_micros=micros, attr=[A(name="is_cpu_op", bool_val=False), *attrs]
    )


def _p2p(kind: int, src: int, dst: int, nbytes: int, tag: int) -> et.Node:
    A = et.AttributeProto
    return et.Node(
        type=kind,
        attr=[
            A(name="is_cpu_op", bool_val=False),
            A(name="comm_src", int32_val=src),
            A(name="comm_dst", int32_val=dst),
            A(name="comm_size", int64_val=nbytes),
            A(name="comm_tag", int32_val=tag),
        ],
    )

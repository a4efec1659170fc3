"""MLCommons Chakra execution traces of a schedule, one per rank, for ASTRA-sim.

Each trace (``<prefix>.<rank>.et``) is a GlobalMetadata message then Nodes, encoded
with the ``mlc-chakra`` package's own protobuf module and varint framing. A rank runs
its stage's passes of the window (``backends.emit.window``: the prefill of every
micro-batch, then decode steps ``0 .. steps - 1`` of each) in the order chipletc's
simulator serves them, (step, micro-batch), one node per op of the stage's program:

* compute ops are COMP_NODEs with ``num_ops`` (FLOPs of the rank), ``tensor_size``
  (bytes it moves: weights, KV cache, activations) and ``duration_micros`` (the time
  the simulator gives the op, rounded to whole microseconds, Chakra's unit);
* collectives are COMM_COLL_NODEs with ``comm_type``, ``comm_size`` (the buffer per
  rank, as ``ScheduleOp.link_bytes``), ``pg_name`` (communicator group ``s + 1``, the
  stage's tensor-parallel group, see ``astra.rank_groups``) and ``involved_dim``;
* a stage-to-stage transfer is a COMM_SEND_NODE on the sender and a COMM_RECV_NODE on
  the receiver with the same ``comm_src``, ``comm_dst``, ``comm_tag`` and ``comm_size``.
  With ``ranks="all"`` rank ``i`` of a group sends the whole activation to rank ``i``
  of the next group (every rank needs all of it).
* the sampled tokens of a micro-batch go back from the last stage to stage 0 before its
  next decode step (``micro_batch x 4`` bytes; chipletc's simulator lets them through
  at no cost): without them ASTRA-sim would start a step before the previous one ended.
  These sends and receives are named ``token...``.

Dependencies are all ``data_deps`` (ASTRA-sim enables those by default): each node
waits for the rank's node before it, except that a send is a leaf, so the stage goes
on while its message travels, as in chipletc's simulator.

With ``ranks="representative"`` the tensor-parallel groups collapse to one rank per
stage: collectives keep their sizes but involve one rank (ASTRA-sim spends no network
time on them; use ``ranks="all"`` for that, tp times the files).
"""

from __future__ import annotations

import io
from math import prod

from chipletc import __version__
from chipletc.ir.errors import UsageError
from chipletc.ir.schedule import Schedule, ScheduleKind, ScheduleOp
from chipletc.ir.target import Target

from .astra import Ranks, involved_dims, network_dims, rank_groups
from .window import pass_ops, window_steps

try:
    from chakra.schema.protobuf import et_def_pb2 as et
    from chakra.src.third_party.utils.protolib import encodeMessage
except ImportError:  # installed apart (pip install --no-deps mlc-chakra): only -o needs it
    et = None

__all__ = ["CHAKRA_VERSION", "TOKEN_BYTES", "to_chakra"]

CHAKRA_VERSION = "0.0.4"
"""GlobalMetadata version of the traces: the schema version ASTRA-sim's examples and
Chakra's trace generators write (its feeder reads the message without rejecting any)."""

TOKEN_BYTES = 4
"""One sampled token id (int32), sent back to stage 0 per sequence and decode step."""

_COMM_TYPE = {"all_reduce": "ALL_REDUCE", "all_gather": "ALL_GATHER", "all_to_all": "ALL_TO_ALL"}
_NODE_TYPE = {ScheduleKind.COMPUTE: "COMP_NODE", ScheduleKind.COLLECTIVE: "COMM_COLL_NODE"}


def to_chakra(
    schedule: Schedule,
    target: Target,
    ranks: Ranks = "representative",
    steps: int = 2,
    prefix: str = "chipletc",
) -> dict[str, bytes]:
    """``{"<prefix>.<rank>.et": trace}`` for every NPU of ``astra.network_dims``."""
    if et is None:
        raise UsageError(
            "chakra: the mlc-chakra package is missing; install it with "
            "`pip install --no-deps mlc-chakra`"
        )
    dims = network_dims(schedule, target, ranks)
    groups = rank_groups(schedule, ranks)
    n_steps = window_steps(schedule, steps)
    # compute and collective nodes differ between micro-batches and ranks of a stage
    # only by id, name and dependencies: build each once, copy it per use
    work = {
        key: [
            None
            if op.kind in (ScheduleKind.SEND, ScheduleKind.RECV)
            else _work(op, t.total_s, key[0] + 1, involved_dims(groups[key[0] + 1], dims))
            for op, t in ops
        ]
        for key, ops in pass_ops(schedule, target, steps).items()
    }
    where = {r: (g - 1, i) for g, members in groups.items() for i, r in enumerate(members)}
    A = et.AttributeProto
    meta = et.GlobalMetadata(
        version=CHAKRA_VERSION,
        attr=[
            A(name="generator", string_val=f"chipletc {__version__}"),
            A(name="model", string_val=schedule.model),
            A(name="ranks", string_val=ranks),
            A(name="decode_steps", int64_val=n_steps),
        ],
    )
    out = {}
    for rank in range(prod(d.npus for d in dims)):
        buf = io.BytesIO()
        encodeMessage(buf, meta)
        if rank in where:
            for node in _rank_nodes(schedule, work, groups, *where[rank], n_steps):
                encodeMessage(buf, node)
        out[f"{prefix}.{rank}.et"] = buf.getvalue()
    return out


def _rank_nodes(
    schedule: Schedule,
    work: dict[tuple[int, int], list[et.Node | None]],
    groups: dict[int, list[int]],
    stage: int,
    index: int,
    n_steps: int,
) -> list[et.Node]:
    """Rank ``index`` of stage ``stage``'s group: its passes of the window, in order."""
    pp, m_count = schedule.pp, schedule.num_micro_batches
    st = schedule.stages[stage]
    rank, first, last_stage = groups[stage + 1][index], groups[1][index], groups[pp][index]
    nodes: list[et.Node] = []
    deps: list[int] = []  # what the next node waits for: the last node but a send

    def add(node: et.Node, name: str) -> None:
        node.id, node.name = len(nodes), name
        node.data_deps.extend(deps)
        nodes.append(node)
        if node.type != et.COMM_SEND_NODE:
            deps[:] = [node.id]

    def tag(step: int, mb: int, boundary: int) -> int:
        """Unique per message of the window; boundary ``pp - 1`` carries tokens."""
        return ((step + 1) * m_count + mb) * pp + boundary

    token = schedule.micro_batch * TOKEN_BYTES
    for step in range(-1, n_steps):
        label = "prefill" if step < 0 else f"decode{step}"
        program = st.prefill if step < 0 else st.decode
        for mb in range(m_count):
            at = f"{label}.mb{mb}"
            if pp > 1 and stage == 0 and step >= 0:
                recv = _p2p(et.COMM_RECV_NODE, last_stage, rank, token, tag(step, mb, pp - 1))
                add(recv, f"{at}.token")
            for op, template in zip(program, work[stage, step], strict=True):
                if template is not None:
                    node = et.Node()
                    node.CopyFrom(template)
                elif op.kind is ScheduleKind.SEND:
                    peer = groups[stage + 2][index]
                    node = _p2p(et.COMM_SEND_NODE, rank, peer, op.link_bytes, tag(step, mb, stage))
                else:
                    peer = groups[stage][index]
                    node = _p2p(
                        et.COMM_RECV_NODE, peer, rank, op.link_bytes, tag(step, mb, stage - 1)
                    )
                add(node, f"{at}.{op.name}")
            if pp > 1 and stage == pp - 1 and step + 1 < n_steps:
                send = _p2p(et.COMM_SEND_NODE, rank, first, token, tag(step + 1, mb, pp - 1))
                add(send, f"{at}.token")
    return nodes


def _work(op: ScheduleOp, time_s: float, group: int, dims: list[bool]) -> et.Node:
    """A compute op or a collective, without id, name or dependencies."""
    A = et.AttributeProto
    if op.kind is ScheduleKind.COMPUTE:
        attrs = [
            A(name="num_ops", int64_val=round(op.flops)),
            A(name="tensor_size", uint64_val=round(op.memory_bytes)),
        ]
    else:
        attrs = [
            A(name="comm_type", int64_val=getattr(et, _COMM_TYPE[op.collective])),
            A(name="comm_size", int64_val=round(op.link_bytes)),
            A(name="pg_name", string_val=str(group)),
            A(name="involved_dim", bool_list=et.BoolList(values=dims)),
        ]
    return et.Node(
        type=getattr(et, _NODE_TYPE[op.kind]),
        duration_micros=round(time_s * 1e6),
        attr=[A(name="is_cpu_op", bool_val=False), *attrs],
    )


def _p2p(kind: int, src: int, dst: int, nbytes: float, tag: int) -> et.Node:
    A = et.AttributeProto
    return et.Node(
        type=kind,
        attr=[
            A(name="is_cpu_op", bool_val=False),
            A(name="comm_src", int32_val=src),
            A(name="comm_dst", int32_val=dst),
            A(name="comm_size", int64_val=round(nbytes)),
            A(name="comm_tag", int32_val=tag),
        ],
    )

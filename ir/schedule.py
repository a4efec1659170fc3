"""Schedules: what each pipeline stage does, in order, for one micro-batch.

A ``Schedule`` is the lowered form of a plan. For every stage it lists the ops one
representative rank of the stage's tensor-parallel group runs in a prefill step and in
a decode step of one micro-batch: compute ops, the collectives the sharding implies
(all-reduce after a row-parallel matmul, all-gather after a vocabulary-parallel head,
all-to-all around experts) and the send to the next stage / receive from the previous
one. All ranks of a group do the same work (symmetry), so one stands for all.

Every ``ScheduleOp`` carries its FLOPs and bytes by memory level for one rank. Decode
ops are evaluated at ``Schedule.decode_context`` and carry their change per extra
position of context (``d_*`` fields), so the simulator can move along the growing KV
cache without lowering again: every op cost is affine in the context.

``TimelineRecord`` is what a simulation leaves behind for emitters: one interval of
one representative chiplet (or link) doing one thing.

``Schedule.to_json`` writes the versioned schedule.json (schema
``ir/schemas/schedule.schema.json``): one line per stage and one per op, ops in
program order with their stage and phase. An op's chiplets are not repeated there: it
runs on its stage's group (a send or receive also on ``peer_stage``'s).

Not checked here: that the ops of a stage are those of its blocks (the lowering's job,
tested by conservation of FLOPs and collective bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from .dtypes import DType
from .errors import IRError
from .plan import dumps_sections
from .workload import Phase

__all__ = [
    "SCHEDULE_VERSION",
    "Schedule",
    "ScheduleKind",
    "ScheduleOp",
    "StageSchedule",
    "TimelineRecord",
]

SCHEDULE_VERSION = "1.1"


class ScheduleKind(str, Enum):
    COMPUTE = "compute"
    COLLECTIVE = "collective"
    SEND = "send"
    RECV = "recv"


@dataclass(frozen=True)
class ScheduleOp:
    """One step of a stage's program on one representative rank.

    Bytes are split by where they live: ``weight_bytes`` and ``kv_bytes`` (read plus
    written) in the memory that holds weights and KV cache, ``act_bytes`` activations in
    and out, ``link_bytes`` on a link: a collective's buffer per rank (the ring moves a
    multiple of it; see ``backends.perf.analytical.collective_time_s``), or a message.
    ``model_flops`` is the op's share of the model's FLOPs done by the whole group (no
    replicated or padded work), which conservation tests add up.
    """

    name: str
    kind: ScheduleKind
    block: int | None
    chiplets: tuple[int, ...]  # every chiplet taking part (a send: both groups)
    flops: float = 0.0
    model_flops: float = 0.0
    weight_bytes: float = 0.0
    kv_bytes: float = 0.0
    act_bytes: float = 0.0
    link_bytes: float = 0.0
    collective: str = ""  # all_reduce | all_gather | all_to_all, for collectives
    level: str = ""  # link level name, for collectives, sends and receives
    peer_stage: int | None = None  # the other stage of a send or receive
    # change per extra position of decode context (attention ops only)
    d_flops: float = 0.0
    d_model_flops: float = 0.0
    d_kv_bytes: float = 0.0
    d_act_bytes: float = 0.0

    @property
    def memory_bytes(self) -> float:
        return self.weight_bytes + self.kv_bytes + self.act_bytes

    @property
    def context_dependent(self) -> bool:
        return bool(self.d_flops or self.d_kv_bytes or self.d_act_bytes)

    def shifted(self, positions: int) -> ScheduleOp:
        """This op with ``positions`` more (or fewer) positions of decode context."""
        if not self.context_dependent or positions == 0:
            return self
        return replace(
            self,
            flops=self.flops + positions * self.d_flops,
            model_flops=self.model_flops + positions * self.d_model_flops,
            kv_bytes=self.kv_bytes + positions * self.d_kv_bytes,
            act_bytes=self.act_bytes + positions * self.d_act_bytes,
        )


@dataclass(frozen=True)
class StageSchedule:
    """One pipeline stage: its group of chiplets and its two programs."""

    stage: int
    blocks: tuple[int, int]  # first and last block, inclusive
    chiplets: tuple[int, ...]  # the tensor-parallel group, representative first
    prefill: tuple[ScheduleOp, ...]
    decode: tuple[ScheduleOp, ...]

    @property
    def representative(self) -> int:
        return self.chiplets[0]

    def program(self, phase: Phase) -> tuple[ScheduleOp, ...]:
        return self.prefill if phase is Phase.PREFILL else self.decode


@dataclass(frozen=True)
class Schedule:
    """Per-stage programs of one replica for one micro-batch, prefill and decode."""

    model: str
    target: str
    tp: int
    pp: int
    batch: int
    micro_batch: int
    prompt_len: int
    gen_len: int
    decode_context: int  # context length the decode programs are evaluated at
    compute_dtype: DType  # sets the peak FLOP/s compute runs at
    stages: tuple[StageSchedule, ...]

    def __post_init__(self) -> None:
        if len(self.stages) != self.pp:
            raise IRError(f"schedule: {len(self.stages)} stage programs for pp {self.pp}")
        for s, st in enumerate(self.stages):
            if st.stage != s or len(st.chiplets) != self.tp:
                raise IRError(f"schedule: stage {s} is not a group of {self.tp} chiplets")

    @property
    def num_micro_batches(self) -> int:
        return self.batch // self.micro_batch

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SCHEDULE_VERSION,
            "model": self.model,
            "target": self.target,
            "tp": self.tp,
            "pp": self.pp,
            "batch": self.batch,
            "micro_batch": self.micro_batch,
            "prompt_len": self.prompt_len,
            "gen_len": self.gen_len,
            "decode_context": self.decode_context,
            "compute_dtype": self.compute_dtype.value,
            "stages": [
                {"stage": st.stage, "blocks": list(st.blocks), "chiplets": list(st.chiplets)}
                for st in self.stages
            ],
            "ops": [
                _op_dict(st.stage, phase, op)
                for st in self.stages
                for phase in Phase
                for op in st.program(phase)
            ],
        }

    def to_json(self) -> str:
        """Diffable like plan.json: one line per section, per stage and per op."""
        return dumps_sections(self.to_dict(), listed=("stages", "ops"))


def _op_dict(stage: int, phase: Phase, op: ScheduleOp) -> dict[str, Any]:
    return {
        "stage": stage,
        "phase": phase.value,
        "name": op.name,
        "kind": op.kind.value,
        "block": op.block,
        "flops": op.flops,
        "model_flops": op.model_flops,
        "weight_bytes": op.weight_bytes,
        "kv_bytes": op.kv_bytes,
        "act_bytes": op.act_bytes,
        "link_bytes": op.link_bytes,
        "collective": op.collective,
        "level": op.level,
        "peer_stage": op.peer_stage,
        "d_flops": op.d_flops,
        "d_model_flops": op.d_model_flops,
        "d_kv_bytes": op.d_kv_bytes,
        "d_act_bytes": op.d_act_bytes,
    }


@dataclass(frozen=True)
class TimelineRecord:
    """One interval on one representative chiplet or link, in seconds from the start.

    ``category`` is "prefill" or "decode" for a stage pass of a micro-batch, "send" for
    a stage-to-stage transfer (``resource`` names the link), ``step`` is -1 for prefill
    and the decode step (0-based) otherwise. A pass's op-level breakdown follows from
    the stage's program (``StageSchedule.program``) in order.
    """

    resource: str  # "chiplet:<id>" or "link:<name>"
    stage: int
    micro_batch: int
    step: int
    category: str
    start_s: float
    end_s: float

"""How long one stage pass and one stage-to-stage transfer take, from a schedule.

The physics is ``backends.perf``'s (``analytical.op_time``,
``collectives.collective_time_s`` and ``collectives.transfer_time_s``): this module
only adds it up per pass, so the simulator and the analytical model cannot drift
apart. A decode pass is re-evaluated at every step's context: ops whose cost does not
depend on the context are summed once per stage, and the context-dependent ones
(attention) once per distinct op and step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from chipletc.backends.perf.analytical import OpTimeModel, op_time
from chipletc.backends.perf.collectives import (
    collective_time_s,
    exposed_collective_s,
    transfer_time_s,
)
from chipletc.ir.op import OpCost
from chipletc.ir.schedule import Schedule, ScheduleKind, ScheduleOp
from chipletc.ir.target import Target

__all__ = [
    "PASS_FIELDS",
    "PassTime",
    "hop_time_s",
    "op_times",
    "pass_tables",
    "pass_time",
    "step_program",
]


@dataclass(frozen=True)
class PassTime:
    """One micro-batch through one stage on its representative rank."""

    total_s: float = 0.0
    compute_s: float = 0.0  # compute-bound ops (roofline part)
    memory_s: float = 0.0  # memory-bound ops (roofline part)
    overhead_s: float = 0.0  # fixed per-op time
    collective_s: float = 0.0
    flops: float = 0.0  # executed by the representative rank
    model_flops: float = 0.0  # the model's FLOPs done by the whole group
    memory_bytes: float = 0.0  # moved by the representative rank
    collective_bytes: float = 0.0  # buffers per rank

    def __add__(self, o: PassTime) -> PassTime:
        return PassTime(
            self.total_s + o.total_s,
            self.compute_s + o.compute_s,
            self.memory_s + o.memory_s,
            self.overhead_s + o.overhead_s,
            self.collective_s + o.collective_s,
            self.flops + o.flops,
            self.model_flops + o.model_flops,
            self.memory_bytes + o.memory_bytes,
            self.collective_bytes + o.collective_bytes,
        )

    def scaled(self, k: float) -> PassTime:
        return PassTime(*(getattr(self, f) * k for f in PASS_FIELDS))


PASS_FIELDS = tuple(PassTime.__dataclass_fields__)


def _one(
    op: ScheduleOp,
    target: Target,
    tp: int,
    peak: float,
    producer_s: float,
    op_model: OpTimeModel = op_time,
) -> PassTime:
    """One op's time; ``producer_s`` is the time of the op before it (a collective may
    hide under it)."""
    if op.kind is ScheduleKind.COLLECTIVE:
        eff = target.efficiency
        t = collective_time_s(op.collective, op.link_bytes, len(op.chiplets) or tp, target)
        t = exposed_collective_s(t, producer_s, eff)
        return PassTime(total_s=t, collective_s=t, collective_bytes=op.link_bytes)
    if op.kind is not ScheduleKind.COMPUTE:
        return PassTime()  # sends and receives run on links, see hop_time_s
    cost = OpCost(
        flops=op.flops,
        weight_bytes=op.weight_bytes,
        kv_read_bytes=op.kv_bytes,
        act_in_bytes=op.act_bytes,
    )
    t = op_model(cost, target, peak)
    bound = max(t.compute_s, t.memory_s)
    return PassTime(
        total_s=t.total_s,
        compute_s=bound if t.compute_bound else 0.0,
        memory_s=0.0 if t.compute_bound else bound,
        overhead_s=t.overhead_s,
        flops=op.flops,
        model_flops=op.model_flops,
        memory_bytes=op.memory_bytes,
    )


def op_times(
    ops: Iterable[ScheduleOp],
    target: Target,
    tp: int,
    peak: float,
    op_model: OpTimeModel = op_time,
) -> list[PassTime]:
    """Each op's share of ``pass_time``, in order: emitters draw a pass op by op with
    exactly the times the simulator added up (sends and receives take none here)."""
    out, prev = [], 0.0
    for op in ops:
        t = _one(op, target, tp, peak, prev, op_model)
        if op.kind is ScheduleKind.COMPUTE:
            prev = t.total_s
        out.append(t)
    return out


def pass_time(
    ops: Iterable[ScheduleOp],
    target: Target,
    tp: int,
    peak: float,
    op_model: OpTimeModel = op_time,
) -> PassTime:
    """Ops run one after the other on the representative; a collective overlaps only
    the op producing its input (as the analytical model)."""
    return sum(op_times(ops, target, tp, peak, op_model), PassTime())


def pass_tables(
    schedule: Schedule, target: Target, op_model: OpTimeModel = op_time
) -> list[np.ndarray]:
    """Per stage, pass times as a ``(gen_len + 1, len(PASS_FIELDS))`` array: row 0
    prefill, row ``i`` decode step ``i - 1``; columns are ``PassTime``'s fields.

    Decode step ``i`` (0-based) attends over ``prompt_len + i + 1`` positions. Blocks
    of one kind repeat the same attention costs, so each distinct op is timed once per
    step, whatever stage or block it sits in. A step's row is the stage's
    context-independent ops plus each attention op's time x its count, added in the
    same order as ``PassTime.__add__`` would (numpy adds column by column).
    """
    peak = target.chiplet.peak_flops(schedule.compute_dtype)
    tp = schedule.tp
    memo: dict[tuple[ScheduleOp, ...], np.ndarray] = {}
    tables = []
    for stage in schedule.stages:
        static, units = _split_by_context(stage.decode)
        # the ops' costs without names or chiplet ids: equal units of different blocks
        # and stages share a key (a collective keeps its group's size)
        dynamic = Counter(
            tuple(
                replace(op, name="", block=None, chiplets=tuple(range(len(op.chiplets))))
                if op.kind is ScheduleKind.COLLECTIVE
                else replace(op, name="", block=None, chiplets=())
                for op in unit
            )
            for unit in units
        )
        table = np.empty((schedule.gen_len + 1, len(PASS_FIELDS)))
        table[0] = _row(pass_time(stage.prefill, target, tp, peak, op_model))
        decode = table[1:]
        decode[:] = _row(pass_time(static, target, tp, peak, op_model))
        for unit, count in dynamic.items():
            if unit not in memo:
                memo[unit] = np.array([
                    _row(pass_time([op.shifted(_decode_shift(schedule, step)) for op in unit],
                                   target, tp, peak, op_model))
                    for step in range(schedule.gen_len)
                ]).reshape(schedule.gen_len, len(PASS_FIELDS))
            decode += memo[unit] * count
        tables.append(table)
    return tables


def _split_by_context(
    program: tuple[ScheduleOp, ...],
) -> tuple[list[ScheduleOp], list[tuple[ScheduleOp, ...]]]:
    """(ops whose time no step changes, units of a context-dependent op with the
    collectives right after it): a collective hides under the op before it, so one that
    follows an attention op is timed with it, step by step."""
    static: list[ScheduleOp] = []
    units: list[tuple[ScheduleOp, ...]] = []
    i = 0
    while i < len(program):
        j = i + 1
        if program[i].context_dependent:
            while j < len(program) and program[j].kind is ScheduleKind.COLLECTIVE:
                j += 1
            units.append(program[i:j])
        else:
            static.append(program[i])
        i = j
    return static, units


def _row(t: PassTime) -> list[float]:
    return [getattr(t, f) for f in PASS_FIELDS]


def step_program(schedule: Schedule, stage: int, step: int) -> tuple[ScheduleOp, ...]:
    """Stage ``stage``'s program at ``step`` (-1: prefill), decode ops moved to the
    step's context: what ``pass_tables`` times for that pass."""
    st = schedule.stages[stage]
    if step < 0:
        return st.prefill
    shift = _decode_shift(schedule, step)
    return tuple(op.shifted(shift) for op in st.decode)


def _decode_shift(schedule: Schedule, step: int) -> int:
    """Decode step ``step`` attends over ``prompt_len + step + 1`` positions."""
    return schedule.prompt_len + step + 1 - schedule.decode_context


def hop_time_s(op: ScheduleOp, target: Target) -> float:
    """A send between stages, alone on its link, by the sending group (half of the
    chiplets the op names: both groups take part)."""
    senders = len(op.chiplets) // 2
    return transfer_time_s(op.link_bytes, target.level(op.level), target, senders)

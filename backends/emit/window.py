"""The window of a run that traces cover, and each of its passes op by op.

A full run has ``pp x micro-batches x (1 + gen_len)`` stage passes (800k for GPT-3
175B on the default target), too many to draw or to hand to ASTRA-sim. Traces cover
the prefill of every micro-batch and the first ``steps`` decode steps of each; the
passes of that window are listed with the time of each op as the simulator counts it
(``backends.sim.timing.op_times``), so a pass's ops add up to the pass.
"""

from __future__ import annotations

from chipletc.backends.sim.timing import PassTime, op_times, step_program
from chipletc.ir.schedule import Schedule, ScheduleOp
from chipletc.ir.target import Target

__all__ = ["PassOps", "pass_ops", "window_steps"]

PassOps = tuple[tuple[ScheduleOp, PassTime], ...]


def window_steps(schedule: Schedule, steps: int) -> int:
    """Decode steps in the window: ``steps``, at most the run's."""
    return max(0, min(steps, schedule.gen_len))


def pass_ops(schedule: Schedule, target: Target, steps: int) -> dict[tuple[int, int], PassOps]:
    """``(stage, step) -> ((op, time), ...)`` for every pass of the window; step -1 is
    prefill. Every micro-batch of a step runs the same program."""
    peak = target.chiplet.peak_flops(schedule.compute_dtype)
    out = {}
    for s in range(schedule.pp):
        for step in range(-1, window_steps(schedule, steps)):
            program = step_program(schedule, s, step)
            out[s, step] = tuple(
                zip(program, op_times(program, target, schedule.tp, peak), strict=True)
            )
    return out

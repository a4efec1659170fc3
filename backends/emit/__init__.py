"""Emitters: what downstream tools read, as pure functions of a plan, its schedule and
its simulation (each returns a str, bytes or a dict; ``cli.output`` writes).

``output_files`` gathers them into the layout `chipletc compile|simulate -o DIR` writes:

    plan.json, schedule.json     versioned, with JSON Schemas (`chipletc schema ...`)
    trace.json                   Chrome / Perfetto timeline of a window of the run
    report.md                    plan, performance and cost for people
    chakra/<prefix>.<rank>.et    Chakra execution traces, one per ASTRA-sim NPU
    chakra/network.yml, system.json, comm_groups.json, remote_memory.json
                                 ASTRA-sim's other inputs

The timeline and the traces cover the same window: the prefill of every micro-batch,
then the first ``steps`` decode steps (``window``).
"""

from __future__ import annotations

import json
from typing import Any

from chipletc.backends.cost import TokenCost
from chipletc.backends.perf import PerfEstimate
from chipletc.backends.sim import SimResult
from chipletc.ir.plan import Plan
from chipletc.ir.schedule import Schedule
from chipletc.ir.target import Target

from .astra import (
    RANKS,
    Ranks,
    comm_groups_json,
    network_dims,
    network_yaml,
    rank_groups,
    remote_memory_json,
    system_json,
)
from .chakra import to_chakra
from .chrome import to_chrome_trace
from .report import to_report_md
from .window import window_steps

__all__ = [
    "DEFAULT_STEPS",
    "RANKS",
    "Ranks",
    "output_files",
    "to_chakra",
    "to_chrome_trace",
    "to_report_md",
]

DEFAULT_STEPS = 2
"""Decode steps in the trace window by default (after the prefill of every micro-batch)."""

PREFIX = "chipletc"
"""Chakra trace prefix: ASTRA-sim's --workload-configuration is chakra/<PREFIX>."""


def output_files(
    plan: Plan,
    schedule: Schedule,
    result: SimResult,
    target: Target,
    analytical: PerfEstimate,
    cost: TokenCost,
    solver: dict[str, Any] | None,
    steps: int = DEFAULT_STEPS,
    ranks: Ranks = "representative",
) -> dict[str, str | bytes]:
    """Every output file, path relative to DIR -> content; see the module docstring.
    ``analytical``, ``cost`` and ``solver`` are as ``to_report_md`` takes them."""
    n_steps = window_steps(schedule, steps)
    timeline = result.timeline(range(-1, n_steps))
    trace = to_chrome_trace(schedule, timeline, target, plan, steps)
    dims = network_dims(schedule, target, ranks)
    peak = target.chiplet.peak_flops(schedule.act_dtype)
    ets = to_chakra(schedule, target, ranks, steps, PREFIX)
    files: dict[str, str | bytes] = {
        "plan.json": plan.to_json(),
        "schedule.json": schedule.to_json(),
        "trace.json": json.dumps(trace, separators=(",", ":")),
        **{f"chakra/{name}": data for name, data in ets.items()},
        "chakra/network.yml": network_yaml(dims, target),
        "chakra/system.json": system_json(dims, target, peak),
        "chakra/comm_groups.json": comm_groups_json(rank_groups(schedule, ranks)),
        "chakra/remote_memory.json": remote_memory_json(),
    }
    listed = [
        "`plan.json`, `schedule.json`: the placement and the per-stage programs "
        "(`chipletc schema plan|schedule` prints their JSON Schemas)",
        f"`trace.json`: Chrome/Perfetto timeline, {trace['otherData']['window']}",
        f"`chakra/{PREFIX}.{{0..{len(ets) - 1}}}.et`: Chakra traces of the same window, "
        f"ranks {ranks}; run them with `AstraSim_Analytical_Congestion_Aware "
        f"--workload-configuration=chakra/{PREFIX} --system-configuration=chakra/system.json "
        "--network-configuration=chakra/network.yml "
        "--remote-memory-configuration=chakra/remote_memory.json "
        "--comm-group-configuration=chakra/comm_groups.json`",
    ]
    files["report.md"] = to_report_md(plan, result, analytical, cost, solver, listed)
    return files

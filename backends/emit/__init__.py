"""Emitters: what downstream tools read, as pure functions of a plan, its schedule and
its simulation (each returns a str, bytes or a dict; ``cli.output`` writes).

``output_files`` gathers them into the layout `chipletc compile|simulate -o DIR` writes:

    plan.json, schedule.json     versioned, with JSON Schemas (`chipletc schema ...`)
    trace.json                   Chrome / Perfetto timeline of a window of the run
    report.md                    plan, performance and cost for people
    report.html                  the same as a page: chiplet map, cost chart, a decode step
    chakra/<prefix>.<rank>.et    Chakra execution traces, one per ASTRA-sim NPU
    chakra/network.yml, system.json, comm_groups.json, remote_memory.json
                                 ASTRA-sim's other inputs

The timeline and the traces cover the same window: the prefill of every micro-batch,
then the first ``steps`` decode steps (``window``). Their size grows with stages x
micro-batches x steps (x tp for ``ranks="all"``), so ``output_files`` first estimates
it (``output_bytes``) and refuses, before building anything, a set over
``max_output_mb``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from chipletc.backends.cost import TokenCost
from chipletc.backends.perf import PerfEstimate
from chipletc.backends.sim import SimResult
from chipletc.ir.errors import UsageError
from chipletc.ir.plan import Plan
from chipletc.ir.schedule import Schedule
from chipletc.ir.target import Target

from .astra import (
    ASTRA_SIM_BINARY,
    ASTRA_SIM_COMMIT,
    RANKS,
    Ranks,
    comm_groups_json,
    network_dims,
    network_yaml,
    rank_groups,
    remote_memory_json,
    system_json,
)
from .chakra import chakra_bytes, to_chakra
from .chrome import to_chrome_trace
from .plan_html import to_report_html
from .report import format_usd, to_report_md
from .window import window_steps

__all__ = [
    "DEFAULT_MAX_OUTPUT_MB",
    "DEFAULT_STEPS",
    "RANKS",
    "Ranks",
    "format_usd",
    "output_bytes",
    "output_files",
    "to_chakra",
    "to_chrome_trace",
    "to_report_html",
    "to_report_md",
]

DEFAULT_STEPS = 2
"""Decode steps in the trace window by default (after the prefill of every micro-batch)."""

DEFAULT_MAX_OUTPUT_MB = 1000.0
"""Largest output set `-o` writes unless told otherwise (SI MB): 1 GB."""

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
    max_output_mb: float = DEFAULT_MAX_OUTPUT_MB,
) -> dict[str, str | bytes]:
    """Every output file, path relative to DIR -> content; see the module docstring.
    ``analytical``, ``cost`` and ``solver`` are as ``to_report_md`` takes them. A set of
    more than about ``max_output_mb`` MB is a ``UsageError`` raised before any of it
    is built, naming the ``--trace-steps`` that fits."""
    n_steps = window_steps(schedule, steps)
    files: dict[str, str | bytes] = {
        "plan.json": plan.to_json(),
        "schedule.json": schedule.to_json(),
    }
    base, per_step = output_bytes(plan, schedule, result, target, ranks)
    base += sum(len(v) for v in files.values())
    _refuse_over(base, per_step, n_steps, ranks, max_output_mb)
    records = list(result.timeline(range(-1, n_steps)))
    trace = to_chrome_trace(schedule, records, target, plan, steps)
    dims = network_dims(schedule, target, ranks)
    peak = target.chiplet.peak_flops(schedule.compute_dtype)
    ets = to_chakra(schedule, target, ranks, steps, PREFIX)
    files |= {
        "trace.json": json.dumps(trace, separators=(",", ":")),
        **{f"chakra/{name}": data for name, data in ets.items()},
        "chakra/network.yml": network_yaml(dims, target),
        "chakra/system.json": system_json(dims, target, peak),
        "chakra/comm_groups.json": comm_groups_json(rank_groups(schedule, ranks, dims)),
        "chakra/remote_memory.json": remote_memory_json(),
    }
    end_s = max((r.end_s for r in records), default=0.0)
    listed = [
        "`plan.json`, `schedule.json`: the placement and the per-stage programs "
        "(`chipletc schema plan|schedule` prints their JSON Schemas)",
        f"`trace.json`: Chrome/Perfetto timeline, {trace['otherData']['window']}",
        f"`chakra/{PREFIX}.{{0..{len(ets) - 1}}}.et`: Chakra traces of the same window, "
        f"ranks {ranks}, which chipletc's simulator ends at {end_s * 1e3:.6g} ms; run them "
        f"with ASTRA-sim's analytical backend (checked with ASTRA-sim {ASTRA_SIM_COMMIT}; "
        f"it prints each NPU's end in ns): `{ASTRA_SIM_BINARY} "
        f"--workload-configuration=chakra/{PREFIX} --system-configuration=chakra/system.json "
        "--network-configuration=chakra/network.yml "
        "--remote-memory-configuration=chakra/remote_memory.json "
        "--comm-group-configuration=chakra/comm_groups.json`",
    ]
    files["report.md"] = to_report_md(plan, result, analytical, cost, solver, listed)
    files["report.html"] = to_report_html(plan, result, cost)
    return files


def output_bytes(
    plan: Plan, schedule: Schedule, result: SimResult, target: Target, ranks: Ranks
) -> tuple[float, float]:
    """About how many bytes trace.json and chakra/ take: ``(window without decode
    steps, each decode step)``. Both grow by whole passes, so one micro-batch's prefill
    and first decode step are built and scaled by the micro-batches (and, for Chakra,
    the ranks); a decode step later in the run differs only in its numbers."""
    m_count = schedule.num_micro_batches
    one = [r for r in result.timeline(range(-1, min(1, schedule.gen_len))) if r.micro_batch == 0]
    chrome = [
        len(json.dumps(to_chrome_trace(schedule, one, target, plan, k), separators=(",", ":")))
        for k in (0, 1)
    ]
    base, per_step = chakra_bytes(schedule, target, ranks)
    return base + m_count * chrome[0], per_step + m_count * (chrome[1] - chrome[0])


def _refuse_over(
    base: float, per_step: float, n_steps: int, ranks: Ranks, max_output_mb: float
) -> None:
    total, cap = base + n_steps * per_step, max_output_mb * 1e6
    if total <= cap:
        return
    fits = math.floor((cap - base) / per_step) if per_step > 0 else 0
    hint = (
        f"--trace-steps {fits} fits"
        if fits >= 1
        else f"even one decode step takes about {(base + per_step) / 1e6:,.1f} MB"
    )
    if ranks == "all":
        hint += " (--ranks representative writes 1/tp of the Chakra traces)"
    raise UsageError(
        f"-o: the outputs would take about {total / 1e6:,.1f} MB ({n_steps} decode steps, "
        f"ranks {ranks}), over --max-output-mb {max_output_mb:g}; {hint}, "
        "or raise --max-output-mb"
    )

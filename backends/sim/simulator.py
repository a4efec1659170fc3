"""Replay of a schedule: micro-batches through stages, prefill then decode.

One representative chiplet stands for each stage's tensor-parallel group (its ranks
do the same work at the same time), so a plan of thousands of chiplets replays as
``pp`` servers of work. Two engines compute the same replay:

* ``"events"``, the reference: a heap of events whose handlers return new events, in
  the manner of vidur's ``simulator.py``; all state lives on the ``Simulation`` object.
  One event per stage pass, so 16 M events for a 126-stage plan with 128 micro-batches
  and 1,024 decode steps (tens of seconds).
* ``"scan"``, the default: the same FIFO queues solved as max-plus prefix scans with
  numpy, one per server (or micro-batch) and step (``scan.py`` says why it is exact).
  It needs every link resource to belong to one boundary; ``simulate`` falls back to
  the events where boundaries share server ports.

The model both engines replay:

* Event: a micro-batch arrives at a stage for one step (prefill, or decode step i).
  The stage serves arrivals first come, first served: a pass starts when both the
  micro-batch and the stage are ready and lasts the stage's pass time at that step's
  context (``timing.pass_tables``, the analytical model's physics).
* A pass that leaves a stage other than the last is sent to the next stage over a
  link. Links are resources: a transfer starts when its data and every link it uses
  are free, so transfers that share a link (micro-batches crossing the same stage
  boundary, or boundaries sharing a server's network ports) queue. A transfer
  leaving a server uses that server's outbound ports and the next server's inbound
  ones; a transfer inside a server has its own path.
* The last stage's pass produces the micro-batch's next token; its next decode step
  enters stage 0 at once (sampled token ids are a few bytes: no return transfer).
* Ties are broken by (time, step, micro-batch, stage): earlier steps first, then the
  lower micro-batch.

Not modelled: overlap of compute with communication inside a pass, contention of a
stage's tensor-parallel collectives with transfers of other stages (a group's
collectives own their links during its pass), and a return transfer of sampled tokens.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from chipletc.backends.perf.analytical import OpTimeModel, op_time
from chipletc.backends.perf.metrics import RunMetrics, StageRun, run_metrics
from chipletc.ir.errors import IRError, UsageError
from chipletc.ir.schedule import Schedule, ScheduleKind, TimelineRecord
from chipletc.ir.target import Target

from .scan import finish_times, route_times, step_matrices
from .timing import PASS_FIELDS, PassTime, hop_time_s, pass_tables

__all__ = ["ENGINES", "TIMELINE_STEPS", "SimResult", "Simulation", "simulate"]

ENGINES = ("scan", "events")
_TOTAL = PASS_FIELDS.index("total_s")
TIMELINE_STEPS = 16  # decode steps in the default timeline window (after prefill)

Engine = Literal["scan", "events"]
Replay = Callable[[range], Iterator[TimelineRecord]]


@dataclass(frozen=True)
class SimResult:
    """What a replay measured, for one replica and the whole batch.

    ``prefill_s`` is the time to first token of the whole batch (the last micro-batch's
    prefill done); ``decode_s`` the rest of the run, ``decode_step_s[i]`` the time
    between the batch completing decode step ``i - 1`` and step ``i``. ``metrics``
    holds the attribution, bottleneck, MFU and utilisation, defined once in
    ``backends.perf.metrics`` for the simulator and the analytical model alike (its
    figures are also properties here). ``events`` counts the stage
    passes replayed. ``replay`` recomputes the timeline of a window of steps on demand
    (see ``timeline``): a whole run of a large plan is tens of millions of intervals.
    """

    prefill_s: float
    decode_s: float
    decode_s_per_token: float
    decode_step_s: tuple[float, ...]
    end_to_end_s: float
    tokens_per_s: float
    collective_bytes: float  # buffers per rank, summed over stages, passes and collectives
    transfer_bytes: float  # stage-to-stage messages, summed
    metrics: RunMetrics
    stage_busy_s: tuple[float, ...]
    events: int
    replay: Replay = field(repr=False, compare=False)

    @property
    def bottleneck(self) -> str:
        return self.metrics.bottleneck

    @property
    def mfu(self) -> float:
        return self.metrics.mfu

    @property
    def attribution(self) -> dict[str, float]:
        return self.metrics.attribution

    @property
    def utilisation(self) -> dict[str, dict[str, float]]:
        return self.metrics.utilisation

    @property
    def model_flops(self) -> float:
        return self.metrics.model_flops

    @property
    def executed_flops(self) -> float:
        return self.metrics.executed_flops

    def timeline(self, steps: range | None = None) -> Iterator[TimelineRecord]:
        """Every stage pass and transfer of the steps in ``steps``, lazily.

        Step -1 is prefill, ``i >= 0`` decode step ``i``; steps outside the run are
        ignored. The default is prefill and the first ``TIMELINE_STEPS`` decode steps;
        ``range(-1, len(self.decode_step_s))`` is the whole run. Records come step by
        step; within a step by stage, then micro-batch, a pass before its outgoing
        transfer. Each call replays again: the scans up to the window's last step, or
        the whole event replay for ``engine="events"``.
        """
        if steps is None:
            steps = range(-1, TIMELINE_STEPS)
        return self.replay(steps)

    def to_dict(self) -> dict[str, Any]:
        """The figures ``chipletc simulate --json`` prints (no timeline)."""
        return {
            "prefill_s": self.prefill_s,
            "decode_s": self.decode_s,
            "decode_s_per_token": self.decode_s_per_token,
            "end_to_end_s": self.end_to_end_s,
            "tokens_per_s": self.tokens_per_s,
            "mfu": self.mfu,
            "bottleneck": self.bottleneck,
            "attribution": self.attribution,
            "utilisation": self.utilisation,
            "decode_step_s": {
                "first": self.decode_step_s[0] if self.decode_step_s else 0.0,
                "last": self.decode_step_s[-1] if self.decode_step_s else 0.0,
            },
            "model_flops": self.model_flops,
            "executed_flops": self.executed_flops,
            "collective_bytes": self.collective_bytes,
            "transfer_bytes": self.transfer_bytes,
            "events": self.events,
        }


@dataclass(frozen=True)
class _Route:
    """What both engines replay: pass times per stage and step, the boundaries' hops."""

    passes: list[np.ndarray]  # per stage: prefill, then decode step 0, 1, ... (pass_tables)
    pass_s: list[list[float]]
    hops: list[tuple[float, float]]  # (prefill, decode) per boundary
    hop_bytes: list[tuple[float, float]]
    links: list[tuple[str, ...]]  # link resources per boundary
    chip_names: list[str]
    link_names: list[str]

    @property
    def shares_links(self) -> bool:
        """Whether a link resource serves more than one boundary (scan cannot replay it)."""
        uses = Counter(r for rs in self.links for r in rs)
        return any(n > 1 for n in uses.values())


def _route(schedule: Schedule, target: Target, op_model: OpTimeModel = op_time) -> _Route:
    passes = pass_tables(schedule, target, op_model)
    per_server = target.chips_per_server
    hops, hop_bytes, links = [], [], []
    for s in range(schedule.pp - 1):
        st = schedule.stages[s]
        send_pf, send_dc = st.prefill[-1], st.decode[-1]
        if send_pf.kind is not ScheduleKind.SEND or send_dc.kind is not ScheduleKind.SEND:
            raise IRError(f"schedule: stage {s} does not end with a send to stage {s + 1}")
        hops.append((hop_time_s(send_pf, target), hop_time_s(send_dc, target)))
        hop_bytes.append((send_pf.link_bytes, send_dc.link_bytes))
        src = st.representative // per_server
        dst = schedule.stages[s + 1].representative // per_server
        if send_dc.level == "cluster" and src != dst:
            links.append((f"server{src}.out", f"server{dst}.in"))
        else:
            links.append((f"stage{s}->stage{s + 1}",))
    return _Route(
        passes=passes,
        pass_s=[table[:, _TOTAL].tolist() for table in passes],
        hops=hops,
        hop_bytes=hop_bytes,
        links=links,
        chip_names=[f"chiplet:{st.representative}" for st in schedule.stages],
        link_names=[f"link:{rs[0]}" for rs in links],
    )


class Simulation:
    """The state of one event replay; ``run()`` drains the event heap and returns the
    result. Intervals of the steps in ``record`` are kept in ``rows`` (none by default)."""

    def __init__(
        self,
        schedule: Schedule,
        target: Target,
        record: range = range(0),
        route: _Route | None = None,
    ) -> None:
        self.schedule = schedule
        self.target = target
        self.route = route or _route(schedule, target)
        self.record = record
        pp = schedule.pp
        self.stage_free = [0.0] * pp
        self.link_free: dict[str, float] = {r: 0.0 for rs in self.route.links for r in rs}
        self.link_busy: dict[str, float] = dict.fromkeys(self.link_free, 0.0)
        self.heap: list[tuple[float, int, int, int]] = []
        self.prefill_done = [0.0] * schedule.num_micro_batches
        self.step_done = [0.0] * schedule.gen_len
        self.rows: list[tuple[str, int, int, int, str, float, float]] = []
        self.events = 0

    # -- events ---------------------------------------------------------------------

    def _arrive(self, now: float, step: int, mb: int, s: int) -> list[tuple[float, int, int, int]]:
        """A micro-batch reaches stage ``s`` for ``step`` (-1: prefill); returns what follows."""
        route = self.route
        start = max(now, self.stage_free[s])
        end = start + route.pass_s[s][step + 1]
        self.stage_free[s] = end
        keep = step in self.record
        if keep:
            phase = "prefill" if step < 0 else "decode"
            self.rows.append((route.chip_names[s], s, mb, step, phase, start, end))
        if s < self.schedule.pp - 1:
            links = route.links[s]
            t0 = end
            for r in links:
                t0 = max(t0, self.link_free[r])
            dur = route.hops[s][0 if step < 0 else 1]
            t1 = t0 + dur
            for r in links:
                self.link_free[r] = t1
                self.link_busy[r] += dur
            if keep:
                self.rows.append((route.link_names[s], s, mb, step, "send", t0, t1))
            return [(t1, step, mb, s + 1)]
        if step < 0:
            self.prefill_done[mb] = end
        else:
            self.step_done[step] = max(self.step_done[step], end)
        if step + 1 < self.schedule.gen_len:
            return [(end, step + 1, mb, 0)]
        return []

    def _drain(self) -> None:
        for mb in range(self.schedule.num_micro_batches):
            heapq.heappush(self.heap, (0.0, -1, mb, 0))
        heap = self.heap
        while heap:
            now, step, mb, s = heapq.heappop(heap)
            self.events += 1
            for ev in self._arrive(now, step, mb, s):
                heapq.heappush(heap, ev)

    def run(self) -> SimResult:
        self._drain()
        sch, target, route = self.schedule, self.target, self.route
        slim = replace(route, passes=[])  # the replay needs no op-level tables

        def replay(steps: range) -> Iterator[TimelineRecord]:
            sim = Simulation(sch, target, steps, slim)
            sim._drain()
            # the scan engine's order: step, stage, micro-batch, a pass before its send
            sim.rows.sort(key=lambda r: (r[3], r[1], r[2], r[4] == "send"))
            return (TimelineRecord(*row) for row in sim.rows)

        return _summarise(
            sch,
            target,
            route,
            max(self.prefill_done),
            self.step_done,
            max(self.link_busy.values(), default=0.0),
            self.events,
            replay,
        )


def _scan(schedule: Schedule, target: Target, route: _Route) -> SimResult:
    """The replay by max-plus scans (``scan.py``); every link serves one boundary."""
    m_count, gen = schedule.num_micro_batches, schedule.gen_len
    pass_s = np.array(route.pass_s, dtype=float).reshape(schedule.pp, gen + 1)
    hop_s = np.array(route.hops, dtype=float).reshape(schedule.pp - 1, 2)
    tau = route_times(pass_s, hop_s)
    prefill_done, step_done = finish_times(tau, m_count)
    busiest = max((m_count * (pf + gen * dc) for pf, dc in route.hops), default=0.0)
    chips, links = route.chip_names, route.link_names

    def replay(steps: range) -> Iterator[TimelineRecord]:
        return _scan_records(chips, links, m_count, tau, steps)

    return _summarise(
        schedule,
        target,
        route,
        float(prefill_done.max()),
        step_done.tolist(),
        busiest,
        m_count * (gen + 1) * schedule.pp,
        replay,
    )


def _scan_records(
    chips: list[str], links: list[str], m_count: int, tau: np.ndarray, steps: range
) -> Iterator[TimelineRecord]:
    """The timeline of ``steps`` from the scans' finish times, in ``SimResult.timeline``'s
    order."""
    pp = len(chips)
    for step, arrive, free, d in step_matrices(tau, m_count, steps):
        # a pass starts when its input is there and its server is free
        before = np.vstack([arrive[None, :], d[:-1]])
        queue = np.hstack([free[:, None], d[:, :-1]])
        start, end = np.maximum(before, queue).tolist(), d.tolist()
        phase = "prefill" if step < 0 else "decode"
        for s in range(pp):
            k, chip = 2 * s, chips[s]
            for j in range(m_count):
                yield TimelineRecord(chip, s, j, step, phase, start[k][j], end[k][j])
                if s < pp - 1:
                    link = links[s]
                    yield TimelineRecord(link, s, j, step, "send", start[k + 1][j], end[k + 1][j])


def _summarise(
    sch: Schedule,
    target: Target,
    route: _Route,
    prefill: float,
    step_done: list[float],
    link_busy: float,
    events: int,
    replay: Replay,
) -> SimResult:
    """The figures of a replay from its finish times; the rest follows from the route."""
    m_count = sch.num_micro_batches
    end = max(step_done[-1] if sch.gen_len else prefill, prefill)
    steps, prev = [], prefill
    for t in step_done:
        steps.append(t - prev)
        prev = t
    # each stage's passes added in step order (cumsum adds one row at a time, as sum())
    stage_totals = [
        PassTime(*np.cumsum(table, axis=0)[-1].tolist()).scaled(m_count) for table in route.passes
    ]
    sends = [0.0] * sch.pp
    for s, (h_pf, h_dc) in enumerate(route.hops):
        sends[s] = m_count * (h_pf + sch.gen_len * h_dc)
    transfer_bytes = m_count * sum(b_pf + sch.gen_len * b_dc for b_pf, b_dc in route.hop_bytes)
    runs = [
        StageRun(
            busy_s=t.total_s,
            compute_s=t.compute_s,
            memory_s=t.memory_s,
            overhead_s=t.overhead_s,
            collective_s=t.collective_s,
            send_s=send,
            flops=t.flops,
            model_flops=t.model_flops,
            memory_bytes=t.memory_bytes,
        )
        for t, send in zip(stage_totals, sends, strict=True)
    ]
    span = end or 1.0
    return SimResult(
        prefill_s=prefill,
        decode_s=end - prefill,
        decode_s_per_token=(end - prefill) / sch.gen_len if sch.gen_len else 0.0,
        decode_step_s=tuple(steps),
        end_to_end_s=end,
        tokens_per_s=sch.batch * sch.gen_len / span,
        collective_bytes=sum(t.collective_bytes for t in stage_totals),
        transfer_bytes=transfer_bytes,
        metrics=run_metrics(runs, end, link_busy, target, sch.tp, sch.compute_dtype),
        stage_busy_s=tuple(t.total_s for t in stage_totals),
        events=events,
        replay=replay,
    )


def simulate(
    schedule: Schedule, target: Target, engine: Engine = "scan", op_model: OpTimeModel = op_time
) -> SimResult:
    """Replay ``schedule`` on ``target``: prefill of every micro-batch, then its decode.

    ``engine="scan"`` (default) is exact and vectorised (``scan.py``). It cannot order
    transfers of different boundaries on one link, so where two boundaries share a
    server's ports it replays with the events instead. That never happens with
    ``lower_schedule``'s stage-major numbering (a boundary leaving a server is the only
    one leaving it, and the only one entering the next), only with hand-made
    schedules. ``engine="events"`` is the reference, one heap event per stage pass.
    ``op_model`` times each op (``backends.perf.OpTimeModel``; the roofline by default).
    """
    if engine not in ENGINES:
        raise UsageError(f"simulate: unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    route = _route(schedule, target, op_model)
    if engine == "events" or route.shares_links:
        return Simulation(schedule, target, route=route).run()
    return _scan(schedule, target, route)

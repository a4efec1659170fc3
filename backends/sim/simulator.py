"""Discrete-event replay of a schedule: micro-batches through stages, prefill then decode.

One representative chiplet stands for each stage's tensor-parallel group (its ranks
do the same work at the same time), so a plan of thousands of chiplets replays as
``pp`` servers of work. The simulation is a heap of events whose handlers return new
events, in the manner of vidur's ``simulator.py``; all state lives on the
``Simulation`` object.

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
from dataclasses import dataclass, field
from typing import Any

from chipletc.ir.errors import IRError
from chipletc.ir.schedule import Schedule, ScheduleKind, TimelineRecord
from chipletc.ir.target import Target

from .timing import PassTime, hop_time_s, pass_tables

__all__ = ["SimResult", "Simulation", "simulate"]

_ATTRIBUTION = ("compute", "memory", "overhead", "links", "bubble")


@dataclass(frozen=True)
class SimResult:
    """What a replay measured, for one replica and the whole batch.

    ``prefill_s`` is the time to first token of the whole batch (the last micro-batch's
    prefill done); ``decode_s`` the rest of the run, ``decode_step_s[i]`` the time
    between the batch completing decode step ``i - 1`` and step ``i``. ``attribution``
    splits the chiplets' time (mean over stages) into compute- and memory-bound op
    time, fixed per-op overhead, links (collectives and the stage's outgoing
    transfers) and pipeline bubble (idle); it sums to 1.
    """

    prefill_s: float
    decode_s: float
    decode_s_per_token: float
    decode_step_s: tuple[float, ...]
    end_to_end_s: float
    tokens_per_s: float
    mfu: float
    model_flops: float
    executed_flops: float
    collective_bytes: float  # buffers per rank, summed over stages, passes and collectives
    transfer_bytes: float  # stage-to-stage messages, summed
    attribution: dict[str, float]
    utilisation: dict[str, dict[str, float]]
    stage_busy_s: tuple[float, ...]
    events: int
    rows: tuple[tuple[str, int, int, int, str, float, float], ...] = field(repr=False)

    @property
    def bottleneck(self) -> str:
        return max(self.attribution, key=self.attribution.__getitem__)

    def timeline(self) -> list[TimelineRecord]:
        """Every stage pass and transfer as a ``TimelineRecord``, in event order."""
        return [TimelineRecord(*row) for row in self.rows]

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


class Simulation:
    """The state of one replay; ``run()`` drains the event heap and returns the result."""

    def __init__(self, schedule: Schedule, target: Target) -> None:
        self.schedule = schedule
        self.target = target
        self.passes: list[list[PassTime]] = pass_tables(schedule, target)
        pp, per_server = schedule.pp, target.chips_per_server
        self.hops: list[tuple[float, float]] = []  # (prefill, decode) per boundary
        self.links: list[tuple[str, ...]] = []  # link resources per boundary
        self.hop_bytes: list[tuple[float, float]] = []
        for s in range(pp - 1):
            st = schedule.stages[s]
            send_pf, send_dc = st.prefill[-1], st.decode[-1]
            if send_pf.kind is not ScheduleKind.SEND or send_dc.kind is not ScheduleKind.SEND:
                raise IRError(f"schedule: stage {s} does not end with a send to stage {s + 1}")
            self.hops.append((hop_time_s(send_pf, target), hop_time_s(send_dc, target)))
            self.hop_bytes.append((send_pf.link_bytes, send_dc.link_bytes))
            src = st.representative // per_server
            dst = schedule.stages[s + 1].representative // per_server
            if send_dc.level == "cluster" and src != dst:
                self.links.append((f"server{src}.out", f"server{dst}.in"))
            else:
                self.links.append((f"stage{s}->stage{s + 1}",))
        self.pass_s = [[p.total_s for p in table] for table in self.passes]
        self.chip_names = [f"chiplet:{st.representative}" for st in schedule.stages]
        self.link_names = [f"link:{rs[0]}" for rs in self.links]
        self.stage_free = [0.0] * pp
        self.link_free: dict[str, float] = {r: 0.0 for rs in self.links for r in rs}
        self.link_busy: dict[str, float] = dict.fromkeys(self.link_free, 0.0)
        self.heap: list[tuple[float, int, int, int]] = []
        self.prefill_done = [0.0] * schedule.num_micro_batches
        self.step_done = [0.0] * schedule.gen_len
        self.rows: list[tuple[str, int, int, int, str, float, float]] = []
        self.events = 0

    # -- events ---------------------------------------------------------------------

    def _arrive(self, now: float, step: int, mb: int, s: int) -> list[tuple[float, int, int, int]]:
        """A micro-batch reaches stage ``s`` for ``step`` (-1: prefill); returns what follows."""
        start = max(now, self.stage_free[s])
        end = start + self.pass_s[s][step + 1]
        self.stage_free[s] = end
        phase = "prefill" if step < 0 else "decode"
        self.rows.append((self.chip_names[s], s, mb, step, phase, start, end))
        if s < self.schedule.pp - 1:
            links = self.links[s]
            t0 = end
            for r in links:
                t0 = max(t0, self.link_free[r])
            dur = self.hops[s][0 if step < 0 else 1]
            t1 = t0 + dur
            for r in links:
                self.link_free[r] = t1
                self.link_busy[r] += dur
            self.rows.append((self.link_names[s], s, mb, step, "send", t0, t1))
            return [(t1, step, mb, s + 1)]
        if step < 0:
            self.prefill_done[mb] = end
        else:
            self.step_done[step] = max(self.step_done[step], end)
        if step + 1 < self.schedule.gen_len:
            return [(end, step + 1, mb, 0)]
        return []

    def run(self) -> SimResult:
        for mb in range(self.schedule.num_micro_batches):
            heapq.heappush(self.heap, (0.0, -1, mb, 0))
        heap = self.heap
        while heap:
            now, step, mb, s = heapq.heappop(heap)
            self.events += 1
            for ev in self._arrive(now, step, mb, s):
                heapq.heappush(heap, ev)
        return self._result()

    # -- results ----------------------------------------------------------------------

    def _result(self) -> SimResult:
        sch, target = self.schedule, self.target
        m_count = sch.num_micro_batches
        prefill = max(self.prefill_done)
        end = max(self.step_done[-1] if sch.gen_len else prefill, prefill)
        steps, prev = [], prefill
        for t in self.step_done:
            steps.append(t - prev)
            prev = t
        stage_totals = [sum(table[1:], table[0]).scaled(m_count) for table in self.passes]
        sends = [0.0] * sch.pp
        for s, (h_pf, h_dc) in enumerate(self.hops):
            sends[s] = m_count * (h_pf + sch.gen_len * h_dc)
        transfer_bytes = m_count * sum(b_pf + sch.gen_len * b_dc for b_pf, b_dc in self.hop_bytes)
        parts = dict.fromkeys(_ATTRIBUTION, 0.0)
        for tot, send in zip(stage_totals, sends, strict=True):
            parts["compute"] += tot.compute_s
            parts["memory"] += tot.memory_s
            parts["overhead"] += tot.overhead_s
            parts["links"] += tot.collective_s + send
            parts["bubble"] += max(0.0, end - tot.total_s - send)
        whole = sum(parts.values()) or 1.0
        attribution = {k: v / whole for k, v in parts.items()}
        chips = sch.tp * sch.pp
        peak = target.chiplet.peak_flops(sch.act_dtype)
        model_flops = sum(t.model_flops for t in stage_totals)
        executed = sch.tp * sum(t.flops for t in stage_totals)
        busy = tuple(t.total_s for t in stage_totals)
        moved = sum(t.memory_bytes for t in stage_totals)
        link_busy = max(self.link_busy.values(), default=0.0)
        span = end or 1.0
        util = {
            target.chiplet.name or "chiplet": {
                "count": float(chips),
                "busy": sum(busy) / (sch.pp * span),
                "flops": executed / (chips * peak * span),
                "memory_bw": moved / (sch.pp * target.memory_bw_Bps * span),
                "busiest_link": link_busy / span,
            }
        }
        return SimResult(
            prefill_s=prefill,
            decode_s=end - prefill,
            decode_s_per_token=(end - prefill) / sch.gen_len if sch.gen_len else 0.0,
            decode_step_s=tuple(steps),
            end_to_end_s=end,
            tokens_per_s=sch.batch * sch.gen_len / span,
            mfu=model_flops / (chips * peak * span),
            model_flops=model_flops,
            executed_flops=executed,
            collective_bytes=sum(t.collective_bytes for t in stage_totals),
            transfer_bytes=transfer_bytes,
            attribution=attribution,
            utilisation=util,
            stage_busy_s=busy,
            events=self.events,
            rows=tuple(self.rows),
        )


def simulate(schedule: Schedule, target: Target) -> SimResult:
    """Replay ``schedule`` on ``target``: prefill of every micro-batch, then its decode."""
    return Simulation(schedule, target).run()

"""A simulated run as a Chrome trace (the JSON Perfetto and chrome://tracing open).

Layout, in the manner of vidur's ``to_chrome_trace``: ``ts`` and ``dur`` are in
microseconds from the start of the run; ``pid`` is the pipeline stage (its process is
named "stage s (blocks a-b)") and ``tid`` the stage's representative chiplet (its
tensor-parallel group runs the same ops at the same time). Process ``pp`` holds the
links, one thread per link the simulator queues transfers on.

* Complete events ("X"): one per stage pass (cat "pass", named for its phase and
  micro-batch) and, nested in it, one per op of the stage's program laid back to back
  from the pass's start with the time the simulator gives it
  (``backends.sim.timing.op_times``); a collective's duration is its exposed time,
  sends and receives take none on the chiplet. The op events of a pass add up to the
  pass. Args: the op's FLOPs and bytes (weights, KV cache, activations, link) on the
  representative, its block, micro-batch and step (-1: prefill).
* Each stage-to-stage transfer: an "X" event on its link, and a flow ("s" at the end
  of the sending pass, "f" at the start of the receiving one, bound to those slices).
* Counters ("C"): per stage, SRAM (or HBM) use of the representative in MB (weights,
  KV cache of the sequences so far, activation workspace; from the plan, the KV cache
  growing after each pass); per link, MB in flight.

Only a window of the run is drawn (``backends.emit.window``); ``otherData`` says which.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from chipletc import __version__
from chipletc.ir.plan import ChipletPlacement, Plan
from chipletc.ir.schedule import Schedule, TimelineRecord
from chipletc.ir.target import Target

from .window import pass_ops, window_steps

__all__ = ["to_chrome_trace"]

_US = 1e6
_MB = 1e6


def to_chrome_trace(
    schedule: Schedule,
    timeline: Iterable[TimelineRecord],
    target: Target,
    plan: Plan,
    steps: int,
) -> dict[str, Any]:
    """The records of ``timeline`` in the window of ``steps`` decode steps (others are
    skipped) as a ``{"traceEvents": [...], "otherData": {...}}`` document."""
    n_steps = window_steps(schedule, steps)
    records = [r for r in timeline if r.step < n_steps]
    runs = {(r.stage, r.micro_batch, r.step): r for r in records if r.category != "send"}
    sends = [r for r in records if r.category == "send"]
    links = sorted({r.resource for r in sends})
    reps = [st.representative for st in schedule.stages]
    events: list[dict[str, Any]] = []
    for st in schedule.stages:
        a, b = st.blocks
        events.append(_process(st.stage, f"stage {st.stage} (blocks {a}-{b})"))
        events.append(_thread(st.stage, reps[st.stage], f"chiplet {reps[st.stage]}"))
    if links:
        events.append(_process(schedule.pp, "links"))
        events += [_thread(schedule.pp, i, x.removeprefix("link:")) for i, x in enumerate(links)]
    events += _passes(schedule, runs.values(), target, plan, n_steps)
    for flow, r in enumerate(sends):
        events += _transfer(schedule, r, links.index(r.resource), flow, runs)
    events += _in_flight(schedule, sends, links)
    window = f"prefill of all {schedule.num_micro_batches} micro-batches"
    if n_steps:
        window += f", decode steps 0-{n_steps - 1} of {schedule.gen_len}"
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "generator": f"chipletc {__version__}",
            "model": schedule.model,
            "target": schedule.target,
            "mapping": f"tp {schedule.tp} x pp {schedule.pp}, batch {schedule.batch}, "
            f"micro-batch {schedule.micro_batch}",
            "window": window,
            "decode_steps": n_steps,
            "units": "ts and dur in microseconds; pid: pipeline stage (pid pp: links); "
            "tid: representative chiplet",
        },
    }


def _passes(
    schedule: Schedule, runs: Iterable[TimelineRecord], target: Target, plan: Plan, steps: int
) -> list[dict[str, Any]]:
    """Each pass, its ops nested in it, and the SRAM counter of its stage after it."""
    ops = pass_ops(schedule, target, steps)
    chiplets = {c.id: c for c in plan.chiplets}
    positions = schedule.batch * (schedule.prompt_len + schedule.gen_len)
    held = [0] * schedule.pp  # context positions cached so far, all micro-batches
    out = [_sram(st.stage, 0.0, chiplets[st.representative], 0.0) for st in schedule.stages]
    for r in runs:
        s, mb, step = r.stage, r.micro_batch, r.step
        rep = chiplets[schedule.stages[s].representative]
        phase = "prefill" if step < 0 else f"decode {step}"
        where = {"micro_batch": mb, "step": step}
        out.append(
            _slice(s, rep.id, "pass", f"{phase} mb {mb}", r.start_s, r.end_s - r.start_s, where)
        )
        t = r.start_s
        for op, time in ops[s, step]:
            args = {
                "block": op.block,
                **where,
                "flops": op.flops,
                "weight_bytes": op.weight_bytes,
                "kv_bytes": op.kv_bytes,
                "act_bytes": op.act_bytes,
                "link_bytes": op.link_bytes,
            }
            if op.collective:
                args["collective"] = op.collective
            out.append(_slice(s, rep.id, op.kind.value, op.name, t, time.total_s, args))
            t += time.total_s
        held[s] += schedule.micro_batch * (schedule.prompt_len if step < 0 else 1)
        out.append(_sram(s, r.end_s, rep, rep.kv_bytes * held[s] / positions))
    return out


def _transfer(
    schedule: Schedule,
    r: TimelineRecord,
    tid: int,
    flow: int,
    runs: dict[tuple[int, int, int], TimelineRecord],
) -> list[dict[str, Any]]:
    """A send on its link, and a flow from the sending pass to the receiving one."""
    src, dst = r.stage, r.stage + 1
    key = (r.micro_batch, r.step)
    args = {"link_bytes": _send_bytes(schedule, r), "micro_batch": r.micro_batch, "step": r.step}
    ident = {"cat": "transfer", "name": "activations", "id": flow}
    return [
        _slice(
            schedule.pp,
            tid,
            "transfer",
            f"stage {src} -> {dst}",
            r.start_s,
            r.end_s - r.start_s,
            args,
        ),
        {
            **ident,
            "ph": "s",
            "pid": src,
            "tid": schedule.stages[src].representative,
            "ts": runs[(src, *key)].end_s * _US,
        },
        {
            **ident,
            "ph": "f",
            "bp": "e",
            "pid": dst,
            "tid": schedule.stages[dst].representative,
            "ts": runs[(dst, *key)].start_s * _US,
        },
    ]


def _in_flight(
    schedule: Schedule, sends: list[TimelineRecord], links: list[str]
) -> list[dict[str, Any]]:
    """Per link, MB in flight: a step up at each transfer's start, down at its end
    unless the next one starts then (a link carries one transfer at a time)."""
    out = []
    for link in links:
        spans = sorted(
            (r.start_s, r.end_s, _send_bytes(schedule, r)) for r in sends if r.resource == link
        )
        name = f"{link.removeprefix('link:')} MB in flight"
        for i, (start, end, nbytes) in enumerate(spans):
            out.append(_counter(schedule.pp, name, start, {"MB": nbytes / _MB}))
            if i + 1 == len(spans) or spans[i + 1][0] > end:
                out.append(_counter(schedule.pp, name, end, {"MB": 0.0}))
    return out


def _send_bytes(schedule: Schedule, r: TimelineRecord) -> float:
    """The message of a send record: the last op of the sending stage's program."""
    st = schedule.stages[r.stage]
    return (st.prefill if r.step < 0 else st.decode)[-1].link_bytes


def _process(pid: int, name: str) -> dict[str, Any]:
    return {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": name}}


def _thread(pid: int, tid: int, name: str) -> dict[str, Any]:
    return {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}}


def _slice(
    pid: int, tid: int, cat: str, name: str, start_s: float, dur_s: float, args: dict[str, Any]
) -> dict[str, Any]:
    return {
        "ph": "X",
        "cat": cat,
        "name": name,
        "pid": pid,
        "tid": tid,
        "ts": start_s * _US,
        "dur": dur_s * _US,
        "args": args,
    }


def _counter(pid: int, name: str, t_s: float, values: dict[str, float]) -> dict[str, Any]:
    return {"ph": "C", "name": name, "pid": pid, "tid": 0, "ts": t_s * _US, "args": values}


def _sram(pid: int, t_s: float, chiplet: ChipletPlacement, kv_bytes: float) -> dict[str, Any]:
    values = {
        "weights": chiplet.weight_bytes / _MB,
        "kv_cache": kv_bytes / _MB,
        "workspace": chiplet.activation_bytes / _MB,
    }
    return _counter(pid, "memory used (MB)", t_s, values)

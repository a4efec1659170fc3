"""What ``chipletc serve -o DIR`` writes, as pure functions of a run.

* ``requests.csv``: one row per request (seconds): arrival, lengths, first token,
  finish, TTFT, TPOT, E2E, preemptions.
* ``summary.json``: the metrics, the deployment and, with ``--find-capacity``, every
  rate tried.
* ``trace.json`` (Chrome/Perfetto): one process per replica, one slice per iteration
  (microseconds) with its tokens and sequences, and counters of batch size and KV
  occupancy. Long runs keep the first ``TRACE_ITERATIONS`` iterations of each replica.
* ``serve.png``: latency CDFs and, with ``--find-capacity``, p99 latency against rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from .deploy import ServeRun
from .metrics import ServeMetrics

__all__ = ["TRACE_ITERATIONS", "metrics_dict", "requests_csv", "serve_png", "serve_trace"]

TRACE_ITERATIONS = 20_000


def _num(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.9g}"


def requests_csv(run: ServeRun) -> str:
    head = "id,arrival_s,prompt_len,gen_len,first_token_s,finish_s,ttft_s,tpot_s,e2e_s,preemptions"
    rows = [head]
    log = run.log
    for r in run.requests:
        first, finish = log.first_token_s[r.id], log.finish_s[r.id]
        tpot = (finish - first) / (r.gen_len - 1) if r.gen_len > 1 else float("nan")
        rows.append(
            ",".join(
                (
                    str(r.id),
                    _num(r.arrival_s),
                    str(r.prompt_len),
                    str(r.gen_len),
                    _num(first),
                    _num(finish),
                    _num(first - r.arrival_s),
                    _num(tpot),
                    _num(finish - r.arrival_s),
                    str(log.preemptions[r.id]),
                )
            )
        )
    return "\n".join(rows) + "\n"


def metrics_dict(m: ServeMetrics) -> dict[str, Any]:
    """The metrics as JSON-ready data (nan becomes null)."""

    def clean(x: Any) -> Any:
        if isinstance(x, float) and math.isnan(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return x

    return clean(asdict(m))


def serve_trace(run: ServeRun) -> dict[str, Any]:
    events: list[dict[str, Any]] = []
    for pid, (label, it) in enumerate(run.iterations):
        events.append({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": label}})
        for i in range(min(len(it), TRACE_ITERATIONS)):
            ts = it.start_s[i] * 1e6
            pre, dec = it.prefill_tokens[i], it.decode_seqs[i]
            name = "mixed" if pre and dec else ("prefill" if pre else "decode")
            seqs = it.prefill_seqs[i] + dec
            events.append(
                {
                    "ph": "X",
                    "name": name,
                    "pid": pid,
                    "tid": 0,
                    "ts": round(ts, 3),
                    "dur": round(it.duration_s[i] * 1e6, 3),
                    "args": {"prefill_tokens": pre, "decode_seqs": dec},
                }
            )
            events.append(
                {
                    "ph": "C",
                    "name": "batch",
                    "pid": pid,
                    "ts": round(ts, 3),
                    "args": {"sequences": seqs, "kv_blocks": it.kv_blocks_used[i]},
                }
            )
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def serve_png(run: ServeRun, probes: Sequence[tuple[float, ServeMetrics]] = ()) -> bytes:
    from chipletc.backends.emit.png import new_figure, png_bytes

    panels = 2 if probes else 1
    fig = new_figure(6.4 * panels, 4.8)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    arrival = np.array([r.arrival_s for r in run.requests])
    first = np.frombuffer(run.log.first_token_s, dtype=np.float64)
    finish = np.frombuffer(run.log.finish_s, dtype=np.float64)
    gen = np.array([r.gen_len for r in run.requests], dtype=np.float64)
    many = gen > 1
    series = {
        "TTFT": first - arrival,
        "TPOT": (finish[many] - first[many]) / (gen[many] - 1),
        "E2E": finish - arrival,
    }
    ax = axes[0]
    for label, values in series.items():
        if values.size:
            xs = np.sort(values) * 1e3
            ax.plot(xs, np.arange(1, xs.size + 1) / xs.size, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms")
    ax.set_ylabel("share of requests")
    ax.set_title("latency CDFs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    if probes:
        ax = axes[1]
        pts = sorted(probes, key=lambda p: p[0])
        qps = [q for q, _ in pts]
        for label, attr in (("TTFT p99", "ttft_s"), ("TPOT p99", "tpot_s")):
            ax.plot(qps, [getattr(m, attr).p99 * 1e3 for _, m in pts], "o-", label=label)
        ax.set_yscale("log")
        ax.set_xlabel("arrival rate, requests/s")
        ax.set_ylabel("p99 latency, ms")
        ax.set_title("latency against load")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
    return png_bytes(fig)

"""What a serving run measured: latency percentiles, throughput, goodput, SLO.

Time to first token (TTFT) runs from arrival to the end of the iteration that finished
the prompt; time per output token (TPOT) is the rest of the request's time over its
``gen_len - 1`` later tokens (requests of one token have none); end to end (E2E) is
arrival to last token. Rates are over the span from the first arrival to the last
finish. Goodput counts the requests that meet every bound of the SLO themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from chipletc.ir.errors import UsageError

from .engine import IterationLog, RequestLog
from .requests import Request

__all__ = ["SLO", "Percentiles", "ServeMetrics", "measure", "parse_slo"]

_METRICS = ("ttft", "tpot", "e2e")
_QUANTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0}


@dataclass(frozen=True)
class SLO:
    """Bounds in seconds, keyed ``(metric, quantile)``: ``("ttft", "p99") -> 2.0``."""

    bounds: tuple[tuple[str, str, float], ...]

    def describe(self) -> str:
        return ", ".join(f"{m} {q} <= {_fmt_s(v)}" for m, q, v in self.bounds)


def parse_slo(text: str) -> SLO:
    """``ttft_p99=2s,tpot_p99=100ms`` (units s or ms; a bare number is seconds)."""
    bounds = []
    for part in filter(None, text.split(",")):
        key, eq, value = part.partition("=")
        metric, _, quantile = key.partition("_")
        if not eq or metric not in _METRICS or quantile not in _QUANTILES:
            raise UsageError(
                f"--slo: bad bound {part!r}; use METRIC_Q=TIME with METRIC in "
                f"{', '.join(_METRICS)}, Q in {', '.join(_QUANTILES)} (ttft_p99=2s)"
            )
        scale = 1e-3 if value.endswith("ms") else 1.0
        number = value.removesuffix("ms").removesuffix("s")
        try:
            seconds = float(number) * scale
        except ValueError:
            raise UsageError(f"--slo: {part!r}: {value!r} is not a time (2s, 100ms)") from None
        if not (math.isfinite(seconds) and seconds > 0):
            raise UsageError(f"--slo: {part!r}: the bound must be a positive time")
        bounds.append((metric, quantile, seconds))
    if not bounds:
        raise UsageError("--slo: give at least one bound, e.g. ttft_p99=2s,tpot_p99=100ms")
    return SLO(tuple(bounds))


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: np.ndarray) -> Percentiles:
        if values.size == 0:
            return cls(*(float("nan"),) * 5)
        p = np.percentile(values, [50, 90, 99, 100])
        return cls(*(float(x) for x in p), float(values.mean()))


@dataclass(frozen=True)
class ServeMetrics:
    requests: int
    span_s: float
    ttft_s: Percentiles
    tpot_s: Percentiles
    e2e_s: Percentiles
    requests_per_s: float
    tokens_per_s: float  # generated
    goodput_requests_per_s: float | None
    slo_met: bool | None
    preemptions: int
    mean_batch: float  # sequences per iteration, time-weighted
    max_batch: int
    mean_kv_occupancy: float  # share of the KV pool in use, time-weighted
    max_kv_occupancy: float
    mean_in_system: float  # time-weighted over the span, from the engine's own count

    def percentile(self, metric: str, quantile: str) -> float:
        return float(getattr(getattr(self, f"{metric}_s"), quantile))


def _fmt_s(s: float) -> str:
    return f"{s * 1e3:.4g} ms" if s < 1 else f"{s:.4g} s"


def measure(
    requests: Sequence[Request],
    log: RequestLog,
    iterations: Sequence[IterationLog],
    kv_blocks: int,
    slo: SLO | None,
) -> ServeMetrics:
    """The metrics of a finished run (``iterations``: one log per replica)."""
    arrival = np.array([r.arrival_s for r in requests])
    gen = np.array([r.gen_len for r in requests], dtype=np.float64)
    first = np.frombuffer(log.first_token_s, dtype=np.float64)
    finish = np.frombuffer(log.finish_s, dtype=np.float64)
    ttft = first - arrival
    e2e = finish - arrival
    many = gen > 1
    tpot = (finish[many] - first[many]) / (gen[many] - 1)
    span = float(finish.max() - arrival.min()) if len(requests) else 0.0
    span = span if span > 0 else float("nan")
    goodput, met = None, None
    if slo is not None:
        ok = np.ones(len(requests), dtype=bool)
        per = {"ttft": ttft, "e2e": e2e}
        tpot_all = np.zeros(len(requests))
        tpot_all[many] = tpot
        per["tpot"] = tpot_all
        for metric, _, bound in slo.bounds:
            ok &= per[metric] <= bound
        goodput = float(ok.sum() / span)
    # time-weighted over the iterations (busy time) of every replica; the count in the
    # system over the whole span, idle gaps (nobody in it) included
    busy = batch_w = kv_w = in_sys_w = 0.0
    max_batch = max_kv = 0
    for it in iterations:
        if not len(it):
            continue
        d = np.frombuffer(it.duration_s, dtype=np.float64)
        seqs = np.add(it.decode_seqs, it.prefill_seqs)
        busy += float(d.sum())
        batch_w += float(d @ seqs)
        kv_w += float(d @ np.asarray(it.kv_blocks_used))
        in_sys_w += float(d @ np.asarray(it.in_system))
        max_batch = max(max_batch, int(seqs.max()))
        max_kv = max(max_kv, int(max(it.kv_blocks_used)))
    metrics = ServeMetrics(
        requests=len(requests),
        span_s=span,
        ttft_s=Percentiles.of(ttft),
        tpot_s=Percentiles.of(tpot),
        e2e_s=Percentiles.of(e2e),
        requests_per_s=len(requests) / span,
        tokens_per_s=float(gen.sum() / span),
        goodput_requests_per_s=goodput,
        slo_met=None,
        preemptions=int(np.sum(np.frombuffer(log.preemptions, dtype=np.int64))),
        mean_batch=batch_w / busy if busy else 0.0,
        max_batch=max_batch,
        mean_kv_occupancy=kv_w / busy / kv_blocks if busy else 0.0,
        max_kv_occupancy=max_kv / kv_blocks,
        mean_in_system=in_sys_w / span,
    )
    if slo is not None:
        met = all(metrics.percentile(m, q) <= bound for m, q, bound in slo.bounds)
        metrics = replace(metrics, slo_met=met)
    return metrics

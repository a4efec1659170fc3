"""One definition of a run's figures, filled by the analytical model and the simulator.

Both describe a run of one replica (prefill of every micro-batch, then every decode
step) as what each stage's representative chiplet did over it (``StageRun``), and
``run_metrics`` turns that into the figures compile, simulate and the reports print:

* ``attribution``: the chiplets' time from the start of the run to its end, summed over
  stages, split into compute- and memory-bound op time (the roofline part), fixed
  per-op overhead, links (tensor-parallel collectives and the stage's outgoing
  transfers) and pipeline bubble (idle); the shares sum to 1.
* ``bottleneck``: the largest share of the attribution.
* ``mfu``: the model's FLOPs over the run / (chiplets x peak FLOP/s x run time).
* ``utilisation``: per chiplet type, busy share, FLOP/s, memory bandwidth, and the
  busiest link's share of the run.

The analytical model fills ``StageRun`` from its per-stage times at the mean decode
context, the simulator from every step's pass; where no transfer waits for a link the
two agree (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chipletc.ir.dtypes import DType
from chipletc.ir.target import Target

__all__ = ["ATTRIBUTION", "RunMetrics", "StageRun", "run_metrics"]

ATTRIBUTION = ("compute", "memory", "overhead", "links", "bubble")


@dataclass(frozen=True)
class StageRun:
    """One stage's representative chiplet over a whole run."""

    busy_s: float  # its passes: op time, overhead and collectives
    compute_s: float  # compute-bound ops (roofline part)
    memory_s: float  # memory-bound ops (roofline part)
    overhead_s: float  # fixed per-op time
    collective_s: float
    send_s: float  # its outgoing stage-to-stage transfers
    flops: float  # executed by the representative
    model_flops: float  # the model's FLOPs done by the whole group
    memory_bytes: float  # moved by the representative


@dataclass(frozen=True)
class RunMetrics:
    attribution: dict[str, float]
    mfu: float
    model_flops: float
    executed_flops: float
    utilisation: dict[str, dict[str, float]]

    @property
    def bottleneck(self) -> str:
        return max(self.attribution, key=self.attribution.__getitem__)


def run_metrics(
    stages: Sequence[StageRun],
    end_s: float,
    busiest_link_s: float,
    target: Target,
    tp: int,
    compute_dtype: DType,
) -> RunMetrics:
    """The figures of a run that ends at ``end_s``; ``busiest_link_s`` is the busy time
    of the most used stage-to-stage link; MFU is against the peak for ``compute_dtype``."""
    parts = dict.fromkeys(ATTRIBUTION, 0.0)
    for st in stages:
        parts["compute"] += st.compute_s
        parts["memory"] += st.memory_s
        parts["overhead"] += st.overhead_s
        parts["links"] += st.collective_s + st.send_s
        parts["bubble"] += max(0.0, end_s - st.busy_s - st.send_s)
    whole = sum(parts.values()) or 1.0
    pp = len(stages)
    chips = tp * pp
    peak = target.chiplet.peak_flops(compute_dtype)
    model_flops = sum(st.model_flops for st in stages)
    executed = tp * sum(st.flops for st in stages)
    span = end_s or 1.0
    util = {
        target.chiplet.name or "chiplet": {
            "count": float(chips),
            "busy": sum(st.busy_s for st in stages) / (pp * span),
            "flops": executed / (chips * peak * span),
            "memory_bw": sum(st.memory_bytes for st in stages)
            / (pp * target.memory_bw_Bps * span),
            "busiest_link": busiest_link_s / span,
        }
    }
    return RunMetrics(
        attribution={k: v / whole for k, v in parts.items()},
        mfu=model_flops / (chips * peak * span),
        model_flops=model_flops,
        executed_flops=executed,
        utilisation=util,
    )

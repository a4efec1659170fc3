"""Analytical performance: roofline op times, alpha-beta collectives, pipeline fill,
and the run metrics it shares with the simulator."""

from .analytical import (
    GroupTime,
    OpTime,
    OpTimeModel,
    PerfEstimate,
    estimate,
    group_time,
    op_time,
)
from .collectives import bus_bw_Bps, collective_time_s, level_for, transfer_time_s
from .metrics import ATTRIBUTION, RunMetrics, StageRun, run_metrics

__all__ = [
    "ATTRIBUTION",
    "GroupTime",
    "OpTime",
    "OpTimeModel",
    "PerfEstimate",
    "RunMetrics",
    "StageRun",
    "bus_bw_Bps",
    "collective_time_s",
    "estimate",
    "group_time",
    "level_for",
    "op_time",
    "run_metrics",
    "transfer_time_s",
]

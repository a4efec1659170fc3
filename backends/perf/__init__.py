"""Analytical performance: roofline op times, alpha-beta collectives, pipeline fill."""

from .analytical import GroupTime, PerfEstimate, estimate, group_time
from .collectives import bus_bw_Bps, collective_time_s, level_for, transfer_time_s

__all__ = [
    "GroupTime",
    "PerfEstimate",
    "bus_bw_Bps",
    "collective_time_s",
    "estimate",
    "group_time",
    "level_for",
    "transfer_time_s",
]

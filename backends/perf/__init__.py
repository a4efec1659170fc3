"""Analytical performance: roofline op times, alpha-beta collectives, pipeline fill."""

from .analytical import (
    GroupTime,
    PerfEstimate,
    collective_time_s,
    estimate,
    group_time,
    level_for,
    transfer_time_s,
)

__all__ = [
    "GroupTime",
    "PerfEstimate",
    "collective_time_s",
    "estimate",
    "group_time",
    "level_for",
    "transfer_time_s",
]

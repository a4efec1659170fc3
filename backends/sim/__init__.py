"""The simulator: a replay of a schedule over stages and micro-batches (``simulate``),
by max-plus scans or, as the reference, by discrete events."""

from .simulator import ENGINES, TIMELINE_STEPS, SimResult, Simulation, simulate
from .timing import PassTime, hop_time_s, pass_tables

__all__ = [
    "ENGINES",
    "TIMELINE_STEPS",
    "PassTime",
    "SimResult",
    "Simulation",
    "hop_time_s",
    "pass_tables",
    "simulate",
]

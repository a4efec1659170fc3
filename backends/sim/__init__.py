"""The simulator: a discrete-event replay of a schedule over stages and micro-batches."""

from .simulator import SimResult, Simulation, simulate
from .timing import PassTime, hop_time_s, pass_tables

__all__ = ["PassTime", "SimResult", "Simulation", "hop_time_s", "pass_tables", "simulate"]

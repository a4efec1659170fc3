"""What a solver returns: never printed, always a value."""

from __future__ import annotations

from dataclasses import dataclass

from .evaluate import Evaluation

__all__ = ["SolveResult"]


@dataclass(frozen=True)
class SolveResult:
    status: str  # "OPTIMAL" | "FEASIBLE" | "INFEASIBLE" | "UNKNOWN"
    objective: int | None
    bound: int | None
    gap: float | None  # relative: (objective - bound) / objective
    wall_s: float
    best: Evaluation | None
    solver: str

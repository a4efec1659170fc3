"""Choose tp, pp, the layer -> stage split, batch and micro-batch for a model on a target.

``partition`` builds the integer problem (``problem.py``), solves it with CP-SAT
(``cpsat.py``) or by enumeration (``exhaustive.py``), and returns the mapping with the
solver's report. When nothing fits, ``InfeasibleError`` says what fails and by how much.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from chipletc.ir.errors import InfeasibleError, UsageError
from chipletc.ir.graph import Graph
from chipletc.ir.mapping import ModelMapping
from chipletc.ir.target import Target

from .cpsat import solve_cpsat
from .diagnose import explain_infeasible
from .evaluate import Evaluation, stage_ranges
from .exhaustive import solve_exhaustive
from .problem import Objective, PartitionProblem, SearchOptions, build_problem
from .result import SolveResult

__all__ = [
    "SOLVERS",
    "Objective",
    "Partition",
    "PartitionProblem",
    "SearchOptions",
    "SolveResult",
    "build_problem",
    "mapping_of",
    "partition",
]

SOLVERS = {"cpsat": solve_cpsat, "exhaustive": solve_exhaustive}


@dataclass(frozen=True)
class Partition:
    mapping: ModelMapping
    num_servers: int
    result: SolveResult
    problem: PartitionProblem

    @property
    def best(self) -> Evaluation:
        assert self.result.best is not None
        return self.result.best


def partition(
    graph: Graph, target: Target, options: SearchOptions, solver: str = "cpsat"
) -> Partition:
    if solver not in SOLVERS:
        raise UsageError(f"--solver: unknown solver {solver!r}; use one of {', '.join(SOLVERS)}")
    problem = build_problem(graph, target, options)
    result = SOLVERS[solver](problem)
    if result.best is None:
        if result.status == "UNKNOWN":
            raise InfeasibleError(
                f"{solver}: no mapping found within the solver's work limit (--time-limit "
                f"{options.deterministic_time_limit:g}, CP-SAT deterministic time, not seconds); "
                "raise --time-limit or pin --tp/--pp"
            )
        raise InfeasibleError(explain_infeasible(graph, target, problem))
    if result.status == "OPTIMAL" and problem.time_unit_ns > 1:
        # optimal in units of time_unit_ns, which may hide a better mapping in whole
        # nanoseconds (see problem.py): do not claim more than that
        result = replace(result, status="FEASIBLE")
    best = result.best
    return Partition(mapping_of(problem, best), best.servers, result, problem)


def mapping_of(problem: PartitionProblem, best: Evaluation) -> ModelMapping:
    """The ``ModelMapping`` a solved point ``best`` of ``problem`` stands for."""
    return ModelMapping(
        tp=problem.tps[best.ti],
        pp=best.pp,
        stages=stage_ranges(best.counts),
        batch=problem.batches[best.bi],
        micro_batch=problem.micro_batches[best.mi],
        pad_heads=problem.options.pad_heads,
        kv_layout=problem.kv_layouts[best.ti],
    )

"""Design-space exploration: thousands of chiplet servers, each mapped optimally.

``load_space`` reads a grid of chiplet, package and server parameters with its
constraints (the shipped default is the Chiplet Cloud paper's 7 nm space);
``explore`` screens every design, costs each survivor once and gives it, for each
model, the optimal mapping ``compile`` would find, on 1..N processes or a Ray
cluster, resumable from a journal; ``baseline_rows`` puts rented GPUs and TPUs beside
them; ``report`` turns the points into a CSV, a Pareto front, the paper's table, a
PNG and one self-contained HTML page.
"""


from .baselines import (
    BASELINES,
    EXPLORE_BASELINES,
    BaselineOverride,
    baseline_rows,
    override_row,
    parse_override,
)
from .report import (
    best_designs,
    group_axes,
    improvement,
    mark_fronts,
    pareto_front,
    summary,
    to_csv,
    to_html,
    to_json,
    to_png,
)
from .run import CAPACITY, EXECUTORS, NO_MAPPING, ExploreOptions, ExploreResult, explore
from .solve import solve_optimal
from .space import CONSTRAINTS, DEFAULT_SPACE, Design, Space, load_space, parse_space

__all__ = [
    "BASELINES",
    "CAPACITY",
    "CONSTRAINTS",
    "DEFAULT_SPACE",
    "EXECUTORS",
    "EXPLORE_BASELINES",
    "NO_MAPPING",
    "BaselineOverride",
    "Design",
    "ExploreOptions",
    "ExploreResult",
    "Space",
    "baseline_rows",
    "best_designs",
    "explore",
    "group_axes",
    "improvement",
    "load_space",
    "mark_fronts",
    "override_row",
    "pareto_front",
    "parse_override",
    "parse_space",
    "solve_optimal",
    "summary",
    "to_csv",
    "to_html",
    "to_json",
    "to_png",
]

"""A quick greedy mapping that seeds CP-SAT's search with a good first solution.

For every plausible (tp, batch, micro-batch) it finds the fewest evenly split stages
that fit, scores that depth and a few deeper ones, and keeps the best. It proves
nothing; it only gives the solver a strong incumbent to prune against.
"""

from __future__ import annotations

import itertools
from functools import cache

from chipletc.ir.mapping import even_stages

from .evaluate import Evaluation, evaluate
from .problem import PartitionProblem, plausible

__all__ = ["greedy_seed"]


@cache  # the same few depths for every (tp, batch, micro-batch)
def _even(num_layers: int, pp: int) -> tuple[int, ...]:
    return tuple(last - first + 1 for first, last in even_stages(num_layers, pp))


def greedy_seed(p: PartitionProblem) -> Evaluation | None:
    best: Evaluation | None = None
    depths = range(1, p.max_stages + 1) if p.options.pp is None else (p.options.pp,)
    for ti, bi, mi in itertools.product(
        range(len(p.tps)), range(len(p.batches)), range(len(p.micro_batches))
    ):
        if not plausible(p, ti, bi, mi):
            continue
        first_fit = None
        for pp in depths:
            found = evaluate(p, ti, bi, mi, _even(p.num_layers, pp))
            if found is None:
                if first_fit is not None and pp > 4 * first_fit:
                    break
                continue
            first_fit = first_fit or pp
            if best is None or found.objective < best.objective:
                best = found
            if pp > 4 * first_fit:
                break
    return best

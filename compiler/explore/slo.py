"""Designs ranked by what a token costs at the load each can serve within an SLO.

Every design's static figures give a cheap analytical bound first: no replica serves
more requests per second than its static batch's throughput over the mean generated
length (``slo_qps_bound``), so its $ per 1K tokens at the SLO is at least the static
one. Then the event simulation of ``chipletc serve`` runs on the designs of each
model's Pareto front, cheapest static cost first (``designs`` of them): each gets its
mapping again (CP-SAT finds the same optimum explore did), its KV pool from the plan,
and the highest arrival rate of ``spec`` that meets ``slo`` (``find_capacity``); the
cost at that rate ranks them.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from chipletc.backends.cost import cost_per_1k_tokens
from chipletc.backends.serve import (
    SLO,
    Deployment,
    IterationModel,
    SchedulerConfig,
    WorkloadSpec,
    find_capacity,
    kv_pool_tokens,
)
from chipletc.compiler.partition import SearchOptions, partition
from chipletc.ir.graph import Graph

from .space import Space, screen

__all__ = ["slo_bounds", "slo_ranking"]

BLOCK_TOKENS = 16


def slo_bounds(points: Sequence[dict[str, Any]], spec: WorkloadSpec) -> list[dict[str, Any]]:
    """The points, ok ones with ``slo_qps_bound`` (requests/s no replica exceeds)."""
    mean_gen = statistics.fmean(r.gen_len for r in spec.sample())
    return [
        {**p, "slo_qps_bound": p["tokens_per_s"] / mean_gen} if p.get("status") == "ok" else p
        for p in points
    ]


def slo_ranking(
    graph: Graph,
    space: Space,
    search: SearchOptions,
    front: Sequence[dict[str, Any]],
    spec: WorkloadSpec,
    slo: SLO,
    policy: str,
    designs: int,
) -> list[dict[str, Any]]:
    """The cheapest ``designs`` of ``front`` (one model's points), each with its SLO
    capacity and $ per 1K tokens there, cheapest at the SLO first (designs no rate
    serves within the SLO last)."""
    rows = []
    for point in sorted(front, key=lambda p: (p["usd_per_1k_tokens"], p["design"]))[:designs]:
        target, _ = screen(space, space.design(point["design"]), {})
        assert target is not None  # a front design passed the screen
        mapping = partition(graph, target, search).mapping
        model = IterationModel(graph, target, mapping)
        budget = 512 if policy == "sarathi" else 8192
        config = SchedulerConfig(
            policy,
            mapping.batch,
            budget,
            budget,
            BLOCK_TOKENS,
            kv_pool_tokens(model, search.prompt_len) // BLOCK_TOKENS,
        )
        cap = find_capacity(Deployment(model, config), spec, slo, tolerance=0.05)
        served = cap.run.metrics.tokens_per_s if cap.qps > 0 else 0.0
        usd = (
            cost_per_1k_tokens(target, point["servers"], served).tco_per_1k_tokens_usd
            if served > 0
            else None
        )
        rows.append(
            {
                "design": point["design"],
                "static_usd_per_1k_tokens": point["usd_per_1k_tokens"],
                "slo_qps_bound": point.get("slo_qps_bound"),
                "slo_qps": cap.qps,
                "slo_usd_per_1k_tokens": usd,
                "ttft_p99_s": cap.run.metrics.ttft_s.p99,
                "tpot_p99_s": cap.run.metrics.tpot_s.p99,
            }
        )
    rows.sort(key=lambda r: (r["slo_usd_per_1k_tokens"] is None, r["slo_usd_per_1k_tokens"] or 0))
    return rows

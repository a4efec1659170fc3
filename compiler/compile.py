"""The main job: a model and a target in, a solved mapping, its plan and its cost out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chipletc.backends.cost import (
    TokenCost,
    average_server_power_w,
    cost_per_1k_tokens,
    require_within_limits,
)
from chipletc.backends.perf import PerfEstimate, estimate
from chipletc.backends.sim import SimResult, simulate
from chipletc.ir.graph import Graph
from chipletc.ir.plan import Plan
from chipletc.ir.schedule import Schedule
from chipletc.ir.target import Target

from .partition import Partition, SearchOptions, partition
from .place import build_plan
from .schedule import lower_schedule

__all__ = ["CompileResult", "compile_model"]


@dataclass(frozen=True)
class CompileResult:
    graph: Graph
    target: Target
    options: SearchOptions
    partition: Partition
    perf: PerfEstimate
    cost: TokenCost  # at the analytical throughput
    plan: Plan
    schedule: Schedule  # the mapping lowered to per-stage programs
    sim: SimResult  # their replay (backends.sim)

    @property
    def simulated(self) -> dict[str, Any]:
        """The simulated figures compile reports next to the analytical ones."""
        keys = ("prefill_s", "decode_s_per_token", "end_to_end_s", "tokens_per_s", "mfu")
        return {
            **{k: v for k, v in self.sim.to_dict().items() if k in keys},
            "bottleneck": self.sim.bottleneck,
        }

    def summary(self) -> dict[str, Any]:
        """The JSON summary `chipletc compile --json` prints (also stored in plan.json)."""
        out = _summary(
            self.graph, self.target, self.options, self.partition, self.perf, self.cost, self.plan
        )
        return {**out, "simulated": self.simulated}


def compile_model(
    graph: Graph, target: Target, options: SearchOptions, solver: str = "cpsat"
) -> CompileResult:
    """Map ``graph`` onto ``target``; a target past a thermal or power limit is refused."""
    require_within_limits(target)
    graph.check_context(options.prompt_len, "--prompt-len")
    part = partition(graph, target, options, solver)
    perf = estimate(graph, target, part.mapping, options.prompt_len, options.gen_len)
    cost = cost_per_1k_tokens(target, part.num_servers, perf.tokens_per_s,
                              average_server_power_w(target, perf.metrics))
    plan = build_plan(graph, target, part.mapping, options.prompt_len, options.gen_len)
    plan.validate()
    summary = _summary(graph, target, options, part, perf, cost, plan)
    # plan.json must repeat byte for byte: everything but the solver's wall time.
    solver_facts = {k: v for k, v in summary["solver"].items() if k != "wall_s"}
    extra = {k: summary[k] for k in ("system", "performance", "cost")}
    plan = Plan(
        plan.model,
        plan.target,
        plan.workload,
        plan.mapping,
        plan.tensors,
        plan.chiplets,
        extra={**plan.extra, **extra, "solver": solver_facts},
    )
    schedule = lower_schedule(graph, target, part.mapping, options.prompt_len, options.gen_len)
    sim = simulate(schedule, target)
    return CompileResult(graph, target, options, part, perf, cost, plan, schedule, sim)


def _summary(
    graph: Graph,
    target: Target,
    options: SearchOptions,
    part: Partition,
    perf: PerfEstimate,
    cost: TokenCost,
    plan: Plan,
) -> dict[str, Any]:
    m = part.mapping
    r = part.result
    used = [plan.held_bytes(c) / c.capacity_bytes for c in plan.chiplets]
    return {
        "model": graph.info.name,
        "target": target.name,
        "objective": options.objective.value,
        "workload": {"prompt_len": options.prompt_len, "gen_len": options.gen_len},
        "mapping": {
            "tp": m.tp,
            "pp": m.pp,
            "batch": m.batch,
            "micro_batch": m.micro_batch,
            "stages": [list(s) for s in m.stages],
            "pad_heads": m.pad_heads,
            "kv_layout": m.kv_layout.value,
        },
        "system": {
            "num_chiplets": m.num_chiplets,
            "num_servers": part.num_servers,
            "chips_per_server": target.chips_per_server,
            "memory": target.weights_in,
            "memory_utilization_max": max(used),
            "memory_utilization_mean": sum(used) / len(used),
        },
        "performance": {
            "prefill_s": perf.prefill_s,
            "decode_s_per_token": perf.decode_s_per_token,
            "end_to_end_s": perf.end_to_end_s,
            "tokens_per_s": perf.tokens_per_s,
            "bottleneck": perf.bottleneck,
        },
        "cost": cost.to_dict(),
        "solver": {
            "name": r.solver,
            "status": r.status,
            "objective": r.objective,
            "bound": r.bound,
            "gap": r.gap,
            "wall_s": r.wall_s,
        },
        "chiplets": [
            {
                "id": c.id,
                "stage": c.stage,
                "tp_rank": c.tp_rank,
                "sram_capacity_bytes": c.capacity_bytes,
                "weight_bytes": c.weight_bytes,
                "kv_bytes": c.kv_bytes,
                "activation_bytes": c.activation_bytes,
            }
            for c in plan.chiplets
        ],
    }

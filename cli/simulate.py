"""`chipletc simulate`: replay a given mapping (no search) event by event."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from chipletc.backends.cost import (
    TokenCost,
    assumptions,
    average_server_power_w,
    cost_per_1k_tokens,
    require_within_limits,
)
from chipletc.backends.emit import format_usd, output_files
from chipletc.backends.perf import estimate
from chipletc.backends.sim import SimResult, simulate
from chipletc.compiler.place import build_plan
from chipletc.compiler.schedule import lower_schedule
from chipletc.ir.dtypes import parse_dtype
from chipletc.ir.errors import PlanError, UsageError
from chipletc.ir.graph import Graph
from chipletc.ir.mapping import KVLayout, ModelMapping, even_stages
from chipletc.ir.plan import Plan
from chipletc.ir.target import Target

from .common import (
    add_cache_arg,
    add_economics_flags,
    add_model_or_plan_args,
    add_storage_args,
    economics_from,
    load_graph,
    plan_sources,
    positive_int,
    with_sources,
)
from .compile import add_output_args, power_lines
from .output import assumption_lines, shown_dir, write_outputs


def register(p: argparse.ArgumentParser) -> None:
    add_model_or_plan_args(p, "simulate")
    p.add_argument("--tp", type=positive_int, default=1, metavar="N", help="tensor-parallel width")
    p.add_argument("--pp", type=positive_int, default=1, metavar="N", help="pipeline stages")
    p.add_argument(
        "--stages",
        metavar="A-B,...",
        help="blocks per stage, inclusive ranges (default: an even split)",
    )
    p.add_argument("--batch", type=positive_int, default=1, metavar="B")
    p.add_argument("--micro-batch", type=positive_int, metavar="M", help="default: the batch")
    p.add_argument("--prompt-len", type=positive_int, default=1024, metavar="P")
    p.add_argument("--gen-len", type=positive_int, default=1024, metavar="G")
    p.add_argument("--pad-heads", action="store_true", help="pad heads tp does not divide")
    p.add_argument(
        "--kv-layout",
        choices=[k.value for k in KVLayout],
        default=KVLayout.HEADS.value,
        help="how ranks that share a KV cache (tp beyond the KV heads of GQA/MQA, or MLA's "
        "latent) hold it: heads (replicated) or batch (sequences split over them; they must "
        "divide the micro-batch) (default heads)",
    )
    add_economics_flags(p)
    add_storage_args(p)
    add_cache_arg(p)
    add_output_args(p)  # -o DIR also gets simulation.json
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _parse_stages(text: str, pp: int) -> tuple[tuple[int, int], ...]:
    try:
        out = tuple((int(a), int(b)) for a, b in (part.split("-") for part in text.split(",")))
    except ValueError:
        raise UsageError(f"--stages: expected ranges like 0-47,48-95 ({text!r})") from None
    if len(out) != pp:
        raise UsageError(f"--stages: {len(out)} ranges for --pp {pp}")
    return out


def from_plan(
    path: str, use_cache: bool = True
) -> tuple[Graph, Target, ModelMapping, int, int, tuple[str, str, float]]:
    from chipletc.backends.targets import load_target
    from chipletc.compiler.cache import load_cached
    from chipletc.compiler.frontends import apply_storage

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PlanError(f"--plan {path}: cannot read a plan ({err})") from None
    plan = Plan.from_dict(doc)
    model_spec, target_spec, sparsity = sources = plan_sources(plan)
    graph = load_cached(model_spec, use_cache)
    weights = plan.model.get("weights_dtype", "")
    kv = plan.model.get("kv_dtype")
    compute = plan.model.get("compute_dtype")
    graph = apply_storage(
        graph,
        weights_dtype=parse_dtype(weights) if weights and "," not in weights else None,
        kv_dtype=parse_dtype(kv) if kv else None,
        weight_sparsity=sparsity,
        compute_dtype=parse_dtype(compute) if compute else None,
    )
    m = plan.mapping
    mapping = ModelMapping(
        tp=int(m["tp"]),
        pp=int(m["pp"]),
        stages=tuple((int(a), int(b)) for a, b in m["stages"]),
        batch=int(m["batch"]),
        micro_batch=int(m["micro_batch"]),
        pad_heads=bool(m.get("pad_heads", False)),
        kv_layout=plan.kv_layout,
    )
    w = plan.workload
    target = load_target(target_spec)
    return graph, target, mapping, int(w["prompt_len"]), int(w["gen_len"]), sources


def _from_flags(
    args: argparse.Namespace,
) -> tuple[Graph, Target, ModelMapping, int, int, tuple[str, str, float]]:
    from chipletc.backends.targets import load_target

    if args.model is None:
        raise UsageError("simulate: give MODEL (or --plan DIR/plan.json)")
    graph = load_graph(args)
    target = load_target(args.target)
    stages = (
        _parse_stages(args.stages, args.pp)
        if args.stages
        else even_stages(graph.num_blocks, args.pp)
    )
    mapping = ModelMapping(
        tp=args.tp,
        pp=args.pp,
        stages=stages,
        batch=args.batch,
        micro_batch=args.micro_batch or args.batch,
        pad_heads=args.pad_heads,
        kv_layout=KVLayout(args.kv_layout),
    )
    sources = (args.model, args.target, args.weight_sparsity)
    return graph, target, mapping, args.prompt_len, args.gen_len, sources


def run(args: argparse.Namespace) -> int:
    if args.plan and args.model:
        raise UsageError("simulate: give MODEL or --plan, not both")
    graph, target, mapping, prompt_len, gen_len, sources = (
        from_plan(args.plan, not args.no_cache) if args.plan else _from_flags(args)
    )
    target = economics_from(args, target)
    require_within_limits(target)
    graph.check_context(prompt_len, "--prompt-len")
    schedule = lower_schedule(graph, target, mapping, prompt_len, gen_len)
    result = simulate(schedule, target)
    servers = math.ceil(mapping.num_chiplets / target.chips_per_server)
    doc = summary(graph, target, mapping, prompt_len, gen_len, result)
    doc["cost"] = cost_per_1k_tokens(
        target, servers, result.tokens_per_s, average_server_power_w(target, result.metrics)
    ).to_dict()
    doc["assumptions"] = assumptions(target)
    if args.out:
        plan = with_sources(build_plan(graph, target, mapping, prompt_len, gen_len), *sources)
        analytical = estimate(graph, target, mapping, prompt_len, gen_len)
        cost = cost_per_1k_tokens(target, servers, analytical.tokens_per_s,
                                  average_server_power_w(target, analytical.metrics))
        files = output_files(
            plan,
            schedule,
            result,
            target,
            analytical,
            cost,
            None,
            steps=args.trace_steps,
            ranks=args.ranks,
            max_output_mb=args.max_output_mb,
        )
        files["simulation.json"] = json.dumps(doc, indent=1) + "\n"
        write_outputs(args.out, files)
    print(json.dumps(doc, indent=1) if args.json else format_summary(doc, args.out))
    return 0


def summary(
    graph: Graph,
    target: Target,
    mapping: ModelMapping,
    prompt_len: int,
    gen_len: int,
    result: SimResult,
) -> dict[str, Any]:
    """The JSON `chipletc simulate --json` prints and -o writes as simulation.json."""
    return {
        "model": graph.info.name,
        "target": target.name,
        "workload": {"prompt_len": prompt_len, "gen_len": gen_len},
        "mapping": {
            "tp": mapping.tp,
            "pp": mapping.pp,
            "batch": mapping.batch,
            "micro_batch": mapping.micro_batch,
            "stages": [list(s) for s in mapping.stages],
            "pad_heads": mapping.pad_heads,
            "kv_layout": mapping.kv_layout.value,
        },
        **result.to_dict(),
    }


def _seconds(s: float) -> str:
    return f"{s * 1e3:.4g} ms" if s < 1 else f"{s:.4g} s"


def format_summary(doc: dict[str, Any], out: str | None) -> str:
    m, w = doc["mapping"], doc["workload"]
    cost = TokenCost(**doc["cost"])
    parts = ", ".join(f"{k} {v:.0%}" for k, v in doc["attribution"].items())
    lines = [
        f"{doc['model']} on {doc['target']}  (prompt {w['prompt_len']}, generate {w['gen_len']})",
        f"  tp {m['tp']} x pp {m['pp']}   batch {m['batch']}, micro-batch {m['micro_batch']}"
        f"{'   KV cache split by batch' if m['kv_layout'] == 'batch' else ''}",
        "simulated",
        f"  time to first token  {_seconds(doc['prefill_s'])}",
        f"  decode per token     {_seconds(doc['decode_s_per_token'])}"
        f"   (first step {_seconds(doc['decode_step_s']['first'])}, "
        f"last {_seconds(doc['decode_step_s']['last'])})",
        f"  end to end           {_seconds(doc['end_to_end_s'])}",
        f"  throughput           {doc['tokens_per_s']:,.1f} tokens/s   MFU {doc['mfu']:.1%}",
        f"  bottleneck           {doc['bottleneck']}   ({parts})",
        *assumption_lines(doc["assumptions"]),
        "cost (at the simulated throughput)",
        f"  $ per 1K tokens      {format_usd(cost.tco_per_1k_tokens_usd)}",
        *power_lines(cost),
    ]
    if out:
        lines.append(
            f"wrote {shown_dir(out)}: plan.json, schedule.json, simulation.json, trace.json, "
            "report.md, chakra/"
        )
    return "\n".join(lines)

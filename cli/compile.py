"""`chipletc compile`: solve the mapping of a model onto a target, write the plan and the
files downstream tools read."""

from __future__ import annotations

import argparse
import json

from chipletc.backends.cost import TokenCost, assumptions
from chipletc.backends.emit import (
    DEFAULT_MAX_OUTPUT_MB,
    DEFAULT_STEPS,
    RANKS,
    format_usd,
    output_files,
)
from chipletc.compiler.compile import CompileResult, compile_model
from chipletc.compiler.partition import SOLVERS, SearchOptions

from .common import (
    add_cache_arg,
    add_economics_flags,
    add_model_args,
    add_option_flags,
    add_storage_args,
    economics_from,
    load_graph,
    options_from,
    positive_float,
    positive_int,
    with_sources,
)
from .output import assumption_lines, shown_dir, write_outputs


def register(p: argparse.ArgumentParser) -> None:
    from chipletc.backends.targets import DEFAULT_TARGET

    add_model_args(p)
    p.add_argument(
        "--target",
        "-t",
        default=DEFAULT_TARGET,
        metavar="T",
        help=f"preset name (chipletc targets) or YAML file (default {DEFAULT_TARGET})",
    )
    add_option_flags(p, SearchOptions)
    add_economics_flags(p)
    add_storage_args(p)
    add_cache_arg(p)
    p.add_argument(
        "--solver",
        choices=sorted(SOLVERS),
        default="cpsat",
        help="cpsat (default) or exhaustive, the plain-Python reference",
    )
    add_output_args(p)
    p.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the summary"
    )
    p.set_defaults(func=run)


def add_output_args(p: argparse.ArgumentParser) -> None:
    """-o DIR and what shapes its traces (shared with `chipletc simulate`)."""
    p.add_argument(
        "-o",
        "--out",
        metavar="DIR",
        help="write plan.json, schedule.json, trace.json (Perfetto), report.md and chakra/ "
        "(Chakra traces and ASTRA-sim configs) to DIR, all or nothing",
    )
    p.add_argument(
        "--ranks",
        choices=RANKS,
        default="representative",
        help="Chakra traces: one NPU per pipeline stage (representative, the default: a "
        "tensor-parallel group with its bandwidth, collectives replayed as compute) or one "
        "per chiplet (all: real collectives, tp x the traces). Both add empty traces for "
        "idle NPUs of the last server. GPT-3 175B on the default target: representative "
        "96 traces, 15 MB; all 3,072 traces, 519 MB",
    )
    p.add_argument(
        "--trace-steps",
        type=positive_int,
        default=DEFAULT_STEPS,
        metavar="N",
        help="trace.json and chakra/ cover the prefill of every micro-batch and the first "
        f"N decode steps (default {DEFAULT_STEPS})",
    )
    p.add_argument(
        "--max-output-mb",
        type=positive_float,
        default=DEFAULT_MAX_OUTPUT_MB,
        metavar="MB",
        help="refuse, before writing anything, an -o set estimated above MB megabytes "
        f"(default {DEFAULT_MAX_OUTPUT_MB:g}); the error names the --trace-steps that fits",
    )


def run(args: argparse.Namespace) -> int:
    from chipletc.backends.targets import load_target

    graph = load_graph(args)
    target = economics_from(args, load_target(args.target))
    result = compile_model(graph, target, options_from(SearchOptions, args), args.solver)
    if args.out:
        plan = with_sources(result.plan, args.model, args.target, args.weight_sparsity)
        files = output_files(
            plan,
            result.schedule,
            result.sim,
            target,
            result.perf,
            result.cost,
            plan.extra["solver"],
            steps=args.trace_steps,
            ranks=args.ranks,
            max_output_mb=args.max_output_mb,
        )
        write_outputs(args.out, files)
    if args.json:
        print(json.dumps(result.summary(), indent=1))
    else:
        print(format_summary(result, args.out))
    return 0


def _bytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def _seconds(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def power_lines(c: TokenCost) -> list[str]:
    """Energy per 1K tokens and a server's power, at TDP and at the run's average."""
    lines = [f"  energy per 1K tokens {c.energy_per_1k_tokens_J:,.0f} J at TDP"]
    if c.average_energy_per_1k_tokens_J is not None:
        lines[0] += f", {c.average_energy_per_1k_tokens_J:,.0f} J at average power"
    if c.server_power_w is not None and c.average_power_w is not None:
        lines.append(f"  server power         {c.server_power_w:,.0f} W at TDP, "
                     f"{c.average_power_w:,.0f} W average (charged: {c.power_basis})")
    return lines


def format_summary(r: CompileResult, out: str | None) -> str:
    s = r.summary()
    m, sy, pf, so = s["mapping"], s["system"], s["performance"], s["solver"]
    c = r.cost
    sm = s["simulated"]
    stages = m["stages"]
    sizes = sorted({b - a + 1 for a, b in stages})
    first, last = stages[0][1] - stages[0][0] + 1, stages[-1][1] - stages[-1][0] + 1
    o = r.options
    util = f"max {sy['memory_utilization_max']:.1%}, mean {sy['memory_utilization_mean']:.1%}"
    lines = [
        f"{s['model']} on {s['target']}  (objective {s['objective']}, "
        f"prompt {o.prompt_len}, generate {o.gen_len})",
        "",
        "mapping",
        f"  tp {m['tp']} x pp {m['pp']}   batch {m['batch']}, micro-batch {m['micro_batch']}"
        f"{'   heads padded' if m['pad_heads'] else ''}"
        f"{'   KV cache split by batch' if m['kv_layout'] == 'batch' else ''}",
        f"  stages: {len(stages)} with {'/'.join(map(str, sizes))} blocks"
        f" (first {first}, last {last})",
        f"  {sy['num_chiplets']} chiplets on {sy['num_servers']} server(s)"
        f" of {sy['chips_per_server']}",
        f"  {sy['memory'].upper()} use: {util} of "
        f"{_bytes(r.target.memory_capacity_bytes)} per chiplet",
        "performance (analytical)",
        f"  prefill (batch)      {_seconds(pf['prefill_s'])}",
        f"  decode per token     {_seconds(pf['decode_s_per_token'])}",
        f"  throughput           {pf['tokens_per_s']:,.0f} tokens/s"
        f"   (bottleneck: {pf['bottleneck']})",
        "performance (simulated)",
        f"  prefill (batch)      {_seconds(sm['prefill_s'])}",
        f"  decode per token     {_seconds(sm['decode_s_per_token'])}",
        f"  throughput           {sm['tokens_per_s']:,.0f} tokens/s"
        f"   (bottleneck: {sm['bottleneck']}, MFU {sm['mfu']:.1%})",
        *assumption_lines(assumptions(r.target)),
        "cost",
        f"  $ per 1K tokens      {format_usd(c.tco_per_1k_tokens_usd)}",
        *power_lines(c),
    ]
    for k, v in c.breakdown_per_1k_tokens_usd.items():
        lines.append(f"    {k:<22} {format_usd(v)}")
    gap = "n/a" if so["gap"] is None else f"{so['gap']:.2%}"
    lines += [
        "solver",
        f"  {so['name']} {so['status']}, gap {gap}, {so['wall_s']:.2f} s",
    ]
    if out:
        lines.append(
            f"wrote {shown_dir(out)}: plan.json, schedule.json, trace.json, report.md, "
            "report.html, chakra/"
        )
    return "\n".join(lines)

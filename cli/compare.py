"""`chipletc compare`: one model on several targets side by side over context lengths,
batches or latency bounds."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from chipletc.compiler.partition import SearchOptions
from chipletc.ir.errors import UsageError

from .common import (
    add_cache_arg,
    add_economics_flags,
    add_model_args,
    add_option_flags,
    add_storage_args,
    economics_from,
    load_graph,
    options_from,
)
from .explore import EXPLORE_FLAGS
from .output import assumption_lines, shown_dir, write_outputs

DEFAULT_TARGETS = "cc-7nm-gpt3,a100-80gb-x8,h100-x8,rtx4090-x8"
COLUMNS = ("target", "status", "tp", "pp", "batch", "micro_batch", "servers",
           "usd_per_1k_tokens", "tokens_per_s", "prefill_s", "decode_s_per_token",
           "average_J_per_1k_tokens", "J_per_1k_tokens", "usd_per_chip_hour",
           "tokens_per_s_per_chip")
"""compare.csv's columns after the swept value's (``SWEEPS``: prompt_len, pinned_batch or
latency_bound_ms)."""


def register(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--targets", default=DEFAULT_TARGETS, metavar="T1,T2,...",
                   help="presets or YAML files, comma-separated; T:owned prices a rented "
                   "preset as fabricated and owned (its bill of materials under the owned "
                   f"TCO) (default {DEFAULT_TARGETS})")
    sweep = p.add_mutually_exclusive_group()
    sweep.add_argument("--contexts", metavar="N,...",
                       help="sweep the prompt length, increasing (K = 1024; the default "
                       "sweep: 256,512,1K,2K,4K,8K,16K,32K)")
    sweep.add_argument("--batches", metavar="B,...",
                       help="sweep a pinned batch instead, at --prompt-len")
    sweep.add_argument("--latency-bounds-ms", metavar="MS,...",
                       help="sweep the bound on decode time per token instead")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME:K=V,...",
                   help="show a rented target again at another price and throughput per "
                   "chip, e.g. a100:price=0.87,tokens_per_s=211; repeatable")
    add_option_flags(p, SearchOptions, EXPLORE_FLAGS, help={
        "objective": "each target's mapping minimizes this",
        "prompt_len": "prompt tokens of a batch or latency sweep (a context sweep sets it)",
    })
    add_economics_flags(p)  # over every target (a rented one: its rent and utilization)
    add_storage_args(p)
    add_cache_arg(p)
    p.add_argument("-o", "--out", metavar="DIR",
                   help="write compare.json, compare.csv and compare.png to DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chipletc.backends.targets import load_target
    from chipletc.compiler.compare import DEFAULT_CONTEXTS, compare, compare_png, parse_values
    from chipletc.compiler.explore import parse_override

    options = options_from(SearchOptions, args)
    if args.batches:
        sweep, values = "batch", parse_values(args.batches, "--batches")
        if values[-1] > options.max_batch:
            raise UsageError(f"--batches: {values[-1]} is above --max-batch "
                             f"({options.max_batch}); raise --max-batch or drop that batch")
    elif args.latency_bounds_ms:
        if args.max_latency_ms is not None:
            raise UsageError("--latency-bounds-ms: sets the bound itself; drop "
                             "--max-latency-ms")
        sweep = "latency"
        values = parse_values(args.latency_bounds_ms, "--latency-bounds-ms", whole=False)
    else:
        sweep = "context"
        values = (parse_values(args.contexts, "--contexts") if args.contexts
                  else DEFAULT_CONTEXTS)
    overrides = [parse_override(text) for text in args.baseline]
    specs = [s.strip() for s in args.targets.split(",") if s.strip()]
    if not specs:
        raise UsageError("--targets: give at least one target, e.g. cc-7nm-gpt3,a100-80gb-x8")
    targets = []
    for spec in specs:
        owned = spec.endswith(":owned")
        target = load_target(spec.removesuffix(":owned"))
        if owned:
            if not target.economics.rented:
                raise UsageError(f"--targets {spec}: {target.name} is owned already; "
                                 ":owned prices a rented preset as owned")
            target = dataclasses.replace(target, name=f"{target.name} owned",
                                         economics=dataclasses.replace(
                                             target.economics, rent_usd_per_hour=None))
        if any(t.name == target.name for t in targets):
            raise UsageError(f"--targets {spec}: {target.name} is listed twice; list each "
                             "target once")
        targets.append(economics_from(args, target))
    graph = load_graph(args)
    result = compare(graph, targets, options, values, overrides, sweep)
    doc = result.to_dict()
    if args.out:
        write_outputs(args.out, {"compare.json": json.dumps(doc, indent=1) + "\n",
                                 "compare.csv": to_csv(doc),
                                 "compare.png": compare_png(result)})
    print(json.dumps(doc, indent=1) if args.json else format_table(doc, args.out))
    return 0


def to_csv(doc: dict[str, Any]) -> str:
    """compare.csv: a row per target and value, the value's column named after the sweep."""
    from chipletc.compiler.compare import SWEEPS
    from chipletc.compiler.explore.report import rows_csv

    column = SWEEPS[doc["sweep"]][3]
    rows = ({**r, column: r["value"]} for r in doc["rows"])
    return rows_csv(rows, (COLUMNS[0], column, *COLUMNS[1:]))


def _ms(s: float) -> str:
    return f"{s * 1e3:.3g} ms"


def format_table(doc: dict[str, Any], out: str | None) -> str:
    swept = {"context": "prompt", "batch": "batch", "latency": "ms bound"}[doc["sweep"]]
    fixed = ("each prompt length" if doc["sweep"] == "context"
             else f"a {doc['prompt_len']}-token prompt")
    lines = [f"{doc['model']}: objective {doc['objective']}, {doc['gen_len']} generated "
             f"tokens after {fixed}", ""]
    for name, values in doc["assumptions"].items():
        block = assumption_lines(values)
        lines.append(f"{name}: {block[0]}")
        lines += block[1:]
    head = (f"{'target':<36}{swept:>8}  {'mapping':<22}{'$/1K tok':>10}{'tok/s':>10}"
            f"{'TTFT':>10}{'per token':>11}{'J/token':>9}")
    lines += ["", head]
    for r in doc["rows"]:
        left = f"{r['target']:<36.36}{r['value']:>8g}  "
        if r["status"] != "ok":
            lines.append(left + r["status"])
            continue
        mapping = f"tp {r['tp']} x pp {r['pp']}, b {r['batch']}"
        energy = r.get("average_J_per_1k_tokens")
        lines.append(
            left + f"{mapping:<22}{r['usd_per_1k_tokens']:>10.4g}{r['tokens_per_s']:>10,.0f}"
            f"{r['prefill_s']:>9.3g}s{_ms(r['decode_s_per_token']):>11}"
            f"{'-' if energy is None else f'{energy / 1000:.3g}':>9}")
    lines += ["", "TTFT: the whole batch's prefill; per token: one decode step; J/token at "
              "the run's average power (override rows: the given throughput, no energy)"]
    if out:
        lines.append(f"wrote {shown_dir(out)}: compare.json, compare.csv, compare.png")
    return "\n".join(lines)

"""`chipletc sensitivity`: which assumption moves $ per token, and the ratio to a rented
baseline, the most; where each one breaks even."""

from __future__ import annotations

import argparse
import json
from typing import Any

from chipletc.compiler.partition import SearchOptions

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


def register(p: argparse.ArgumentParser) -> None:
    from chipletc.backends.targets import DEFAULT_TARGET

    add_model_args(p)
    p.add_argument("--target", "-t", default=DEFAULT_TARGET, metavar="T",
                   help=f"the design: preset name or YAML file (default {DEFAULT_TARGET})")
    p.add_argument("--baseline", action="append", metavar="NAME[:K=V,...]",
                   help="a rented baseline to compare with (a100, h100, h200, tpu-v4, ...), "
                   "optionally at another price and throughput per chip, e.g. "
                   "a100:price=0.87,tokens_per_s=211; repeatable (default a100)")
    add_option_flags(p, SearchOptions, EXPLORE_FLAGS, help={
        "objective": "the mapping at every point minimizes this",
    })
    add_economics_flags(p)
    add_storage_args(p)
    add_cache_arg(p)
    p.add_argument("-o", "--out", metavar="DIR",
                   help="write sensitivity.json and tornado.png to DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chipletc.backends.cost import assumptions
    from chipletc.backends.targets import load_target
    from chipletc.compiler.explore.baselines import baseline_rows
    from chipletc.compiler.sensitivity import parse_baselines, sensitivity, tornado_png

    names, overrides = parse_baselines(args.baseline or ["a100"])
    graph = load_graph(args)
    target = economics_from(args, load_target(args.target))
    options = options_from(SearchOptions, args)
    graph.check_context(options.prompt_len, "--prompt-len")
    rows = baseline_rows(graph, options, overrides, names)
    result = sensitivity(graph, args.target, target, options, rows)
    doc = {**result.to_dict(), "assumptions": assumptions(target)}
    if args.out:
        write_outputs(args.out, {"sensitivity.json": json.dumps(doc, indent=1) + "\n",
                                 "tornado.png": tornado_png(result)})
    print(json.dumps(doc, indent=1) if args.json else format_table(doc, args.out))
    return 0


def _v(x: float | None, digits: int = 3) -> str:
    return "no fit" if x is None else f"{x:.{digits}g}"


def format_table(doc: dict[str, Any], out: str | None) -> str:
    base = doc["base"]
    w = doc["workload"]
    names = list(base["baselines"])
    lines = [
        f"{doc['model']} on {doc['target']}  (prompt {w['prompt_len']}, generate "
        f"{w['gen_len']}): ${base['design_usd_per_1k_tokens']:.4g} per 1K tokens, "
        f"{base['mapping']}",
    ]
    for n, b in base["baselines"].items():
        lines.append(f"  baseline {n}: ${b['usd_per_1k_tokens']:.4g} per 1K tokens at "
                     f"${b['usd_per_chip_hour']:.3g}/chip-hour and "
                     f"{b['tokens_per_s_per_chip']:.3g} tokens/s/chip: ratio "
                     f"{b['ratio']:.3g} (> 1: the design is cheaper)")
    lines += assumption_lines(doc["assumptions"])
    head = f"{'assumption':<32}{'now':>9}{'low':>9}{'high':>9}{'$/1K low':>11}{'$/1K high':>11}"
    for n in names:
        head += f"{n + ' low':>12}{n + ' high':>12}{'break-even':>19}"
    lines += ["", head]
    for r in doc["knobs"]:
        usd = r["usd_per_1k_tokens"]
        label = r["label"] + (f" ({r['unit']})" if r["unit"] else "")
        line = (f"{label:<32.32}"
                f"{_v(r['value']):>9}{_v(r['low']):>9}{_v(r['high']):>9}"
                f"{_v(usd['low']):>11}{_v(usd['high']):>11}")
        for n in names:
            ratio = r["ratio"][n]
            status = r["break_even_status"].get(n)
            shown = ("-" if status is None else _v(r["break_even"][n]) if status == "found"
                     else "none" if status == "one side" else status)
            line += f"{_v(ratio['low']):>12}{_v(ratio['high']):>12}{shown:>19}"
        lines.append(line)
        if r["mapping"]["low"] != base["mapping"] or r["mapping"]["high"] != base["mapping"]:
            lines.append(f"{'':<4}mapping: low {r['mapping']['low']}; high "
                         f"{r['mapping']['high']}")
    top = ", ".join(r["label"] for r in doc["knobs"][:3])
    what = f"the ratio to {names[0]}" if names else "$ per 1K tokens"
    lines += ["", f"moving {what} most: {top}",
              "break-even: the value at which the ratio is 1, searched over a bracket wider "
              "than the range (none: it stays on one side of 1 wherever the design fits; "
              "no fit in bracket: it crosses 1 across values where nothing fits)"]
    if out:
        lines.append(f"wrote {shown_dir(out)}: sensitivity.json, tornado.png")
    return "\n".join(lines)

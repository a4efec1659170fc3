"""`chipletc explore`: map models onto every design of a space; Pareto front and report."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from chipletc.compiler.partition import SearchOptions
from chipletc.ir.errors import UsageError

from .common import (
    add_cache_arg,
    add_economics_flags,
    add_option_flags,
    add_storage_args,
    economics_from,
    options_from,
    positive_int,
)
from .output import assumption_lines, shown_dir, write_outputs

JOURNAL = "journal.jsonl"
EXPLORE_FLAGS = ("objective", "prompt_len", "gen_len", "max_latency_s", "min_tokens_per_s",
                 "max_batch", "max_servers", "pad_heads")


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="zoo names (chipletc models), path/to/file.py:factory, .onnx files "
                   "or checkpoint directories")
    p.add_argument("--space", metavar="SPACE.yaml",
                   help="design space file (default: the paper's 7 nm space, shipped)")
    p.add_argument("-o", "--out", metavar="DIR",
                   help=f"write points.csv, pareto.png, report.html and summary.json to DIR, "
                   f"and {JOURNAL} as designs finish: a rerun with the same DIR resumes an "
                   "interrupted run")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="processes (local) or CPUs (a Ray instance it starts); default 1")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local processes (default) or Ray (RAY_ADDRESS joins a cluster)")
    # compile's pins stay free: each design gets its own optimal mapping
    add_option_flags(p, SearchOptions, EXPLORE_FLAGS, help={
        "objective": "each design's mapping minimizes this",
        "gen_len": "generated tokens; P + G = 2048 is the paper's context",
        "max_servers": "fewest of this and the space's max_servers",
    })
    add_economics_flags(p)
    add_storage_args(p)
    add_cache_arg(p)
    p.add_argument("--baseline", action="append", default=[], metavar="NAME:K=V,...",
                   help="override a rented baseline per chip, e.g. "
                   "a100:price=0.87,tokens_per_s=211 ($ per GPU-hour, tokens/s per GPU); "
                   "repeatable")
    p.add_argument("--no-baselines", action="store_true", help="skip the GPU/TPU baselines")
    p.add_argument("--progress", action="store_true",
                   help="draw the progress bar even when stderr is not a terminal (otherwise "
                   "a plain progress line every 5 s)")
    p.add_argument("--stop-after", type=positive_int, metavar="N",
                   help="evaluate about N designs this run (whole chunks, at least one), "
                   "then stop; resume with -o DIR")
    p.add_argument("--slo", metavar="BOUNDS",
                   help="also rank each model's Pareto-front designs by $ per 1K tokens at the "
                   "highest rate of --workload that meets these bounds (chipletc serve's "
                   "simulation), e.g. ttft_p99=2s,tpot_p99=100ms; adds slo.csv")
    p.add_argument("--workload", metavar="SPEC",
                   help="the request mix for --slo, as chipletc serve takes it (default: "
                   "poisson arrivals of 200 requests of --prompt-len/--gen-len tokens)")
    p.add_argument("--scheduler", choices=("vllm", "sarathi"), default="vllm",
                   help="the serving scheduler for --slo (default vllm)")
    p.add_argument("--slo-designs", type=positive_int, default=5, metavar="K",
                   help="simulate the K cheapest front designs per model for --slo (default 5)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


class Progress:
    """Progress on ``stream``: a bar redrawn in place on a terminal (``bar``), otherwise a
    plain line every ``period_s`` seconds and at the end, for logs and CI."""

    def __init__(self, stream: TextIO, bar: bool, period_s: float = 5.0, width: int = 30) -> None:
        self.stream, self.bar, self.period_s, self.width = stream, bar, period_s, width
        self.start = time.perf_counter()
        self.first: int | None = None
        self.last_line = -period_s

    def note(self, text: str) -> None:
        self.stream.write(f"explore: {text}\n")
        self.stream.flush()

    def __call__(self, done: int, total: int) -> None:
        if self.first is None:
            self.first = done  # resumed designs do not count toward the rate
        elapsed = time.perf_counter() - self.start
        rate = (done - self.first) / elapsed if elapsed > 0 else 0.0
        eta = f"{(total - done) / rate:,.0f} s" if rate > 0 else "?"
        if self.bar:
            fill = int(self.width * done / total) if total else self.width
            self.stream.write(f"\r[{'#' * fill}{'.' * (self.width - fill)}] {done:,}/{total:,} "
                              f"designs  {rate:,.1f}/s  ETA {eta}   ")
            if done >= total:
                self.stream.write("\n")
        elif done >= total or elapsed - self.last_line >= self.period_s:
            self.last_line = elapsed
            self.stream.write(f"explore: {done:,}/{total:,} designs  {rate:,.1f}/s  ETA {eta}\n")
        self.stream.flush()


def run(args: argparse.Namespace) -> int:
    from chipletc.backends.cost import assumptions
    from chipletc.backends.serve import parse_slo, parse_workload
    from chipletc.compiler.explore import (
        EXPLORE_BASELINES,
        ExploreOptions,
        baseline_rows,
        explore,
        load_space,
        mark_fronts,
        parse_override,
        summary,
        to_csv,
        to_html,
        to_json,
        to_png,
    )

    from .common import load_graph, storage_flags

    progress = Progress(sys.stderr, bar=args.progress or sys.stderr.isatty())
    overrides = [parse_override(text) for text in args.baseline]
    names = [*EXPLORE_BASELINES, *(o.name for o in overrides if o.name not in EXPLORE_BASELINES)]
    slo = parse_slo(args.slo) if args.slo else None
    if args.workload and slo is None:
        raise UsageError("--workload: goes with --slo")
    spec = parse_workload(
        args.workload
        or f"poisson:qps=1,prompt=fixed:{args.prompt_len},gen=fixed:{args.gen_len},n=200,seed=0"
    ) if slo else None
    if spec is not None and spec.arrivals == "burst":
        raise UsageError("--workload: --slo needs poisson or gamma arrivals (a rate to vary)")
    space = load_space(args.space)
    space = dataclasses.replace(space, base=economics_from(args, space.base))
    search = options_from(SearchOptions, args)
    storage_flags(args)  # bad storage flags are refused before the first progress line
    progress.note(f"loading {', '.join(args.models)}; then screening {space.size:,} designs")
    graphs = [load_graph(argparse.Namespace(**{**vars(args), "model": name}))
              for name in args.models]
    opts = ExploreOptions(search=search, workers=args.workers, executor=args.executor,
                          stop_after=args.stop_after)
    journal = None
    if args.out:
        out = Path(args.out)
        write_outputs(out, {})  # creates DIR, or says it cannot
        journal = out / JOURNAL
    result = explore(graphs, space, opts, journal, progress)
    if not result.complete:
        hint = "rerun the same command to resume" if args.out else "give -o DIR to resume"
        print(f"stopped after {result.evaluated_now:,} designs this run; {hint}", file=sys.stderr)
        return 0
    baselines: dict[str, list[dict[str, Any]]] = {}
    if not args.no_baselines:
        for graph in graphs:
            baselines[graph.info.name] = baseline_rows(graph, search, overrides, names)
    doc = {**summary(result, baselines), "assumptions": assumptions(space.base)}
    points = result.points
    files: dict[str, str | bytes] = {}
    if slo is not None and spec is not None:
        from chipletc.compiler.explore.slo import slo_bounds, slo_ranking

        points = tuple(slo_bounds(points, spec))
        table = []
        for graph in graphs:
            entry = doc["models"][graph.info.name]
            front = [p for p in points if p["model"] == graph.info.name
                     and p["design"] in set(entry.get("pareto", ()))]
            rows = slo_ranking(graph, space, search, front, spec, slo, args.scheduler,
                               args.slo_designs)
            entry["slo"] = {"bounds": slo.describe(), "workload": spec.describe(), "designs": rows}
            table += [{"model": graph.info.name, **r} for r in rows]
        files["slo.csv"] = to_csv(table) if table else ""
    if args.out:
        png = to_png(points, result.models)
        files.update({
            "points.csv": to_csv(mark_fronts(points, result)),
            "pareto.png": png,
            "report.html": to_html(doc, png),
            "summary.json": to_json(doc),
        })
        write_outputs(args.out, files)
    print(to_json(doc) if args.json else format_summary(doc, args.out), end="")
    return 0


def format_summary(doc: dict[str, Any], out: str | None) -> str:
    """The text form: counts, the paper's table per model, baselines with factors."""
    from chipletc.compiler.explore.report import TABLE_COLUMNS
    from chipletc.compiler.explore.run import STATUS_MEANING
    from chipletc.compiler.partition.diagnose import REASONS

    removed = ", ".join(f"{k} {v:,}" for k, v in doc["removed_by_constraint"].items())
    lines = [f"space {doc['space']}: {doc['designs']:,} designs, {doc['survivors']:,} meet "
             f"the constraints (removed: {removed or 'none'})",
             *assumption_lines(doc["assumptions"])]
    for model, entry in doc["models"].items():
        counts = ", ".join(f"{k} {v:,}" for k, v in sorted(entry["evaluated"].items()))
        lines += ["", f"{model}: {counts}"]
        lines += [f"  {k}: {STATUS_MEANING[k]}" for k in sorted(entry["evaluated"])
                  if k in STATUS_MEANING]
        why = entry.get("no_mapping_reasons")
        if why:
            (top, n), *_ = why.items()
            lines.append("  no mapping, by binding constraint: "
                         + ", ".join(f"{k} {v:,}" for k, v in why.items())
                         + f"; commonest: {top} ({n:,}): {REASONS[top]}")
        if "best" not in entry:
            continue
        heads = [h for _, h, _ in TABLE_COLUMNS]
        widths = [max(len(h), 9) for h in heads]
        lines.append(" " * 16 + "  ".join(h.rjust(w) for h, w in zip(heads, widths,
                                                                     strict=True)))
        for label in ("tco", "latency"):
            p = entry["best"][label]
            cells = [fmt.format(p[k] * 1e3 if k == "decode_s_per_token" else p[k])
                     for k, _, fmt in TABLE_COLUMNS]
            lines.append(f"  {label + '-optimal':<14}" + "  ".join(
                c.rjust(w) for c, w in zip(cells, widths, strict=True)))
        lines.append(f"  Pareto front: {len(entry['pareto'])} designs")
        for axis, groups in entry.get("fronts", {}).items():
            lines.append(f"  TCO-optimal per {axis}: " + "; ".join(
                f"{value} ${g['tco']['usd_per_1k_tokens']:.3g}/1K at "
                f"{g['tco']['decode_s_per_token'] * 1e3:.3g} ms/token (front of "
                f"{len(g['pareto'])})" for value, g in groups.items()))
        for r in entry["baselines"]:
            if r["status"] != "ok":
                lines.append(f"  vs {r['baseline']:<7} {r['status']}")
                continue
            lines.append(
                f"  vs {r['baseline']:<7} {r['source']:<9} ${r['usd_per_chip_hour']:.3g}/chip-h, "
                f"{r['tokens_per_s_per_chip']:,.4g} tokens/s/chip: "
                f"${r['usd_per_1k_tokens']:.3g}/1K -> best design {r['factor']:.3g}x cheaper")
        slo = entry.get("slo")
        if slo:
            lines.append(f"  at the SLO ({slo['bounds']}; {slo['workload']}):")
            for r in slo["designs"]:
                usd = r["slo_usd_per_1k_tokens"]
                lines.append(
                    f"    design {r['design']:>6}: {r['slo_qps']:.3g} requests/s, "
                    + (f"${usd:.3g}/1K" if usd is not None else "no rate meets it")
                    + f" (static ${r['static_usd_per_1k_tokens']:.3g}/1K, bound "
                    f"{r['slo_qps_bound']:.3g} requests/s)")
    if out:
        slo_csv = ", slo.csv" if any("slo" in e for e in doc["models"].values()) else ""
        lines += ["", f"wrote {shown_dir(out)}points.csv, pareto.png, report.html, "
                  f"summary.json{slo_csv}"]
    return "\n".join(lines) + "\n"

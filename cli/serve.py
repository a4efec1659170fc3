"""`chipletc serve`: a request trace through a compiled replica under a scheduler."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chipletc.ir.errors import UsageError

from .common import (
    add_cache_arg,
    add_economics_flags,
    add_model_or_plan_args,
    add_storage_args,
    economics_from,
    positive_int,
    require_tdp_basis,
)
from .output import assumption_lines, write_outputs

if TYPE_CHECKING:
    from chipletc.backends.serve import IterationModel, SchedulerConfig
    from chipletc.ir.target import Target


WORKLOAD_HELP = (
    "ARRIVALS:FIELDS, a .jsonl trace or a shipped one (trace:chat, trace:bursty). "
    "ARRIVALS poisson, gamma (bursty: cv=) or burst "
    "(all at t=0); FIELDS qps=, prompt=, gen=, n=, seed=; lengths fixed:N, uniform:LO:HI, "
    "normal:MEAN:SD, lognormal:MEAN:SD, empirical:FILE. A trace has one JSON object a "
    'line: {"arrival_s": 0.2, "prompt_len": 812, "gen_len": 95}. Default '
    "poisson:qps=1,prompt=fixed:512,gen=fixed:128,n=1000,seed=0"
)


def register(p: argparse.ArgumentParser) -> None:
    from chipletc.backends.serve import POLICIES

    add_model_or_plan_args(p, "serve on")
    p.add_argument(
        "--workload",
        "-w",
        default="poisson:qps=1,prompt=fixed:512,gen=fixed:128,n=1000,seed=0",
        metavar="SPEC",
        help=WORKLOAD_HELP,
    )
    p.add_argument(
        "--scheduler",
        choices=POLICIES,
        default="vllm",
        help="vllm: prefill first, paged KV, preemption by recompute (default); sarathi: "
        "chunked prefill under a token budget; static: one batch at a time, as simulate",
    )
    p.add_argument(
        "--max-batch",
        type=positive_int,
        metavar="B",
        help="sequences in flight (default: the plan's batch, which its memory was sized for)",
    )
    p.add_argument(
        "--max-tokens-per-iter",
        type=positive_int,
        metavar="N",
        help="new tokens one iteration may take (default: vllm 8192, sarathi 512)",
    )
    p.add_argument(
        "--chunk",
        type=positive_int,
        metavar="C",
        help="sarathi: the most prompt tokens of one request per iteration (default: "
        "the token budget)",
    )
    p.add_argument(
        "--block-tokens",
        type=positive_int,
        default=16,
        metavar="N",
        help="KV page size in tokens per sequence (default 16, as vLLM)",
    )
    p.add_argument(
        "--slo",
        metavar="BOUNDS",
        help="e.g. ttft_p99=2s,tpot_p99=100ms (metrics ttft, tpot, e2e; quantiles p50, "
        "p90, p99, max)",
    )
    p.add_argument(
        "--find-capacity",
        action="store_true",
        help="bisect the arrival rate for the highest one meeting --slo; report $ per 1K "
        "tokens at that rate",
    )
    p.add_argument("--replicas", type=positive_int, default=1, metavar="R")
    p.add_argument(
        "--disaggregate",
        metavar="prefill=N,decode=M",
        help="N prefill replicas and M decode replicas, the KV cache sent over the cluster "
        "links (instead of --replicas)",
    )
    g = p.add_argument_group(
        "the mapping, when there is no --plan (compiled for the tco objective)"
    )
    for pin in ("tp", "pp", "batch", "micro-batch"):
        g.add_argument(f"--{pin}", type=positive_int, metavar="N", help=f"pin {pin}")
    g.add_argument("--max-servers", type=positive_int, metavar="N")
    g.add_argument(
        "--prompt-len",
        type=positive_int,
        metavar="P",
        help="prompt length the mapping is compiled for (default: the workload's mean)",
    )
    g.add_argument(
        "--gen-len",
        type=positive_int,
        metavar="G",
        help="generated length the mapping is compiled for (default: the workload's mean)",
    )
    g.add_argument("--pad-heads", action="store_true", help="pad heads tp does not divide")
    add_storage_args(g)
    add_cache_arg(g)
    add_economics_flags(p)
    p.add_argument(
        "-o",
        "--out",
        metavar="DIR",
        help="write requests.csv, summary.json, trace.json (Perfetto) and serve.png to DIR, "
        "all or nothing",
    )
    p.add_argument("--json", action="store_true", help="print summary.json instead")
    # compile's search flags serve does not take, at compile's defaults (options_from)
    p.set_defaults(
        func=run,
        objective="tco",
        max_latency_ms=None,
        min_throughput=None,
        max_chiplets=None,
        time_limit=20.0,
    )


def _trace_file(workload: str) -> str | None:
    """The trace file ``--workload`` names (a .jsonl path or a shipped ``trace:NAME``)."""
    from chipletc.backends.serve import traces

    if workload.startswith("trace:"):
        name = workload.removeprefix("trace:")
        if name not in traces.SPECS:
            raise UsageError(
                f"--workload: no shipped trace {name!r}; use "
                + " or ".join(f"trace:{n}" for n in traces.SPECS)
            )
        return str(traces.path(name))
    return workload if workload.endswith(".jsonl") else None


def _disaggregate(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = dict(part.partition("=")[::2] for part in text.split(","))
    try:
        pre, dec = int(parts["prefill"]), int(parts["decode"])
    except (KeyError, ValueError):
        raise UsageError(f"--disaggregate: expected prefill=N,decode=M ({text!r})") from None
    if not (1 <= pre <= 10_000 and 1 <= dec <= 10_000) or set(parts) != {"prefill", "decode"}:
        raise UsageError(f"--disaggregate: N and M must be 1..10000 ({text!r})")
    return pre, dec


class _Progress:
    """A progress line on stderr for runs longer than a second: rewritten in place on a
    terminal, a plain line every ten seconds otherwise."""

    def __init__(self, total: int | None, what: str) -> None:
        self.total, self.what, self.done = total, what, 0
        self.start = self.last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.start < 1.0 or now - self.last < (0.2 if self.tty else 10.0):
            return
        self.last = now
        of = f"/{self.total:,}" if self.total else ""
        line = f"serve: {self.done:,}{of} {self.what}, {now - self.start:.0f} s"
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr)

    def close(self) -> None:
        if self.tty and self.last > self.start:
            print(file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from chipletc.backends.cost import assumptions, cost_per_1k_tokens
    from chipletc.backends.serve import (
        Deployment,
        find_capacity,
        load_requests,
        parse_slo,
        parse_workload,
        serve,
    )
    from chipletc.backends.serve.outputs import (
        metrics_dict,
        requests_csv,
        serve_png,
        serve_trace,
    )

    if args.plan and args.model:
        raise UsageError("serve: give MODEL or --plan, not both")
    if not args.plan and not args.model:
        raise UsageError("serve: give MODEL (or --plan DIR/plan.json)")
    slo = parse_slo(args.slo) if args.slo else None
    if args.find_capacity and slo is None:
        raise UsageError("--find-capacity: give --slo, the bounds the capacity must meet")
    disaggregate = _disaggregate(args.disaggregate)
    if disaggregate and args.replicas != 1:
        raise UsageError("--disaggregate: sets the replicas itself; drop --replicas")
    trace = _trace_file(args.workload)
    spec = None if trace else parse_workload(args.workload)
    if args.find_capacity and spec is None:
        raise UsageError("--find-capacity: needs a generated workload (poisson: or gamma:)")
    requests = load_requests(trace) if spec is None else spec.sample()

    graph, target, mapping, prompt_len, sources = _mapping(args, requests)
    setup = _setup(args, graph, target, mapping, prompt_len)
    deployment = Deployment(setup.model, setup.config, args.replicas, disaggregate)
    servers = setup.servers * deployment.num_replicas

    def measure(d: Deployment) -> tuple[Any, Any, tuple]:
        """(run, capacity or None, rates tried) of deployment ``d``."""
        if args.find_capacity:
            assert spec is not None and slo is not None
            bar = _Progress(None, "rates tried")
            cap = find_capacity(d, spec, slo, progress=bar)
            bar.close()
            return cap.run, cap, cap.probes
        bar = _Progress(len(requests), "requests")
        run = serve(d, requests, slo, progress=bar)
        bar.close()
        return run, None, ()

    run_, capacity, probes = measure(deployment)
    # a disaggregated deployment is judged against the same replicas colocated
    colocated = (
        measure(Deployment(setup.model, setup.config, deployment.num_replicas))[:2]
        if disaggregate
        else None
    )
    doc = {
        "model": graph.info.name,
        "target": target.name,
        "sources": {"model": sources[0], "target": sources[1]},
        "mapping": {
            "tp": mapping.tp,
            "pp": mapping.pp,
            "batch": mapping.batch,
            "micro_batch": mapping.micro_batch,
            "stages": [list(st) for st in mapping.stages],
        },
        "deployment": {
            "replicas": deployment.num_replicas,
            "disaggregate": None
            if disaggregate is None
            else {"prefill": disaggregate[0], "decode": disaggregate[1]},
            "servers_per_replica": setup.servers,
            "servers": servers,
        },
        "scheduler": {
            "policy": setup.config.policy,
            "max_batch": setup.config.max_batch,
            "max_tokens_per_iter": setup.config.max_tokens_per_iter,
            "chunk": setup.config.chunk,
            "block_tokens": setup.config.block_tokens,
            "kv_blocks": setup.config.kv_blocks,
        },
        "workload": args.workload if spec is None else spec.describe(),
        "slo": None if slo is None else slo.describe(),
    }
    if capacity is not None:
        doc["capacity"] = {
            "qps": capacity.qps,
            "limit": capacity.limit,
            "tried": [
                {
                    "qps": q,
                    "slo_met": m.slo_met,
                    "ttft_p99_s": m.ttft_s.p99,
                    "tpot_p99_s": m.tpot_s.p99,
                }
                for q, m in capacity.probes
            ],
        }
    m = run_.metrics
    doc["metrics"] = metrics_dict(m)
    cost = cost_per_1k_tokens(target, servers, m.tokens_per_s)
    doc["tco_per_1k_tokens_usd"] = cost.tco_per_1k_tokens_usd
    doc["assumptions"] = assumptions(target)
    if colocated is not None:
        co_run, co_cap = colocated
        doc["colocated"] = {
            "replicas": deployment.num_replicas,
            "metrics": metrics_dict(co_run.metrics),
            "capacity_qps": None if co_cap is None else co_cap.qps,
        }
    if args.out:
        files: dict[str, str | bytes] = {
            "summary.json": json.dumps(doc, indent=1) + "\n",
            "requests.csv": requests_csv(run_),
            "trace.json": json.dumps(serve_trace(run_), separators=(",", ":")),
            "serve.png": serve_png(run_, probes),
        }
        write_outputs(args.out.rstrip("/") or "/", files)
    print(json.dumps(doc, indent=1) if args.json else format_summary(doc, args.out))
    return 0


@dataclass(frozen=True)
class _Setup:
    model: IterationModel
    config: SchedulerConfig
    servers: int  # per replica


def _mapping(args: argparse.Namespace, requests: list) -> tuple:
    """(graph, target, mapping, prompt length it was sized for, sources): from --plan,
    or compiled for the workload's mean lengths. The target carries the economic flags
    before any mapping is solved (a cost objective depends on them)."""
    from chipletc.backends.targets import load_target
    from chipletc.compiler.partition import SearchOptions, partition

    from .common import load_graph, options_from
    from .simulate import from_plan

    def priced(target: Target) -> Target:
        target = economics_from(args, target)
        require_tdp_basis(target, "serve", "a request stream's average power is not modelled")
        return target

    if args.plan:
        graph, target, mapping, prompt_len, _, sources = from_plan(args.plan, not args.no_cache)
        return graph, priced(target), mapping, prompt_len, sources
    target = priced(load_target(args.target))
    graph = load_graph(args)
    prompt_len = args.prompt_len or max(1, round(statistics.fmean(r.prompt_len for r in requests)))
    gen_len = args.gen_len or max(1, round(statistics.fmean(r.gen_len for r in requests)))
    # serve's --max-batch bounds the sequences in flight, not the batches compile tries
    search = {"prompt_len": prompt_len, "gen_len": gen_len, "max_batch": 1024}
    options = options_from(SearchOptions, argparse.Namespace(**{**vars(args), **search}))
    mapping = partition(graph, target, options).mapping
    return graph, target, mapping, prompt_len, (args.model, args.target, args.weight_sparsity)


def _setup(
    args: argparse.Namespace, graph: Any, target: Any, mapping: Any, prompt_len: int
) -> _Setup:
    from chipletc.backends.serve import IterationModel, SchedulerConfig, kv_pool_tokens

    model = IterationModel(graph, target, mapping)
    budget = args.max_tokens_per_iter or (512 if args.scheduler == "sarathi" else 8192)
    config = SchedulerConfig(
        policy=args.scheduler,
        max_batch=args.max_batch or mapping.batch,
        max_tokens_per_iter=budget,
        chunk=args.chunk or budget,
        block_tokens=args.block_tokens,
        kv_blocks=kv_pool_tokens(model, prompt_len) // args.block_tokens,
    )
    servers = math.ceil(mapping.num_chiplets / target.chips_per_server)
    return _Setup(model, config, servers)


def _t(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.4g} ms" if s < 1 else f"{s:.4g} s"


def format_summary(doc: dict[str, Any], out: str | None) -> str:
    m, d, sc = doc["mapping"], doc["deployment"], doc["scheduler"]
    pools = (
        f"{d['disaggregate']['prefill']} prefill + {d['disaggregate']['decode']} decode replicas"
        if d["disaggregate"]
        else f"{d['replicas']} replica(s)"
    )
    lines = [
        f"{doc['model']} on {doc['target']}: tp {m['tp']} x pp {m['pp']}, batch {m['batch']} "
        f"(micro-batch {m['micro_batch']}), {pools} of {d['servers_per_replica']} server(s)",
        f"workload   {doc['workload']}",
        f"scheduler  {sc['policy']}: up to {sc['max_batch']} sequences, "
        f"{sc['max_tokens_per_iter']:,} tokens per iteration, KV pool {sc['kv_blocks']:,} "
        f"blocks of {sc['block_tokens']} tokens",
    ]
    cap = doc.get("capacity")
    if cap is not None:
        bound = (
            "the SLO binds"
            if cap["limit"] == "slo"
            else "the replica's saturated throughput: the SLO holds even there"
        )
        lines.append(
            f"capacity   {cap['qps']:.4g} requests/s meet the SLO ({doc['slo']}); {bound}; "
            f"{len(cap['tried'])} rate{'s' if len(cap['tried']) > 1 else ''} tried"
            if cap["qps"] > 0
            else f"capacity   no rate meets the SLO ({doc['slo']}): it fails even with the "
            "replica all but idle (below: that run)"
        )
    met = doc["metrics"]
    lines.append(f"{'':12}{'p50':>11}{'p90':>11}{'p99':>11}{'max':>11}")
    for label, key in (("TTFT", "ttft_s"), ("TPOT", "tpot_s"), ("E2E", "e2e_s")):
        row = met[key]
        lines.append(
            f"  {label:<10}" + "".join(f"{_t(row[q]):>11}" for q in ("p50", "p90", "p99", "max"))
        )
    lines += [
        f"throughput {met['requests_per_s']:.4g} requests/s, {met['tokens_per_s']:,.0f} "
        "generated tokens/s"
        + (
            f"; goodput {met['goodput_requests_per_s']:.4g} requests/s"
            if met["goodput_requests_per_s"] is not None
            else ""
        ),
        f"batch      mean {met['mean_batch']:.1f} sequences (max {met['max_batch']}); KV pool "
        f"mean {met['mean_kv_occupancy']:.0%} (max {met['max_kv_occupancy']:.0%}); "
        f"{met['preemptions']} preemptions",
        *assumption_lines(doc["assumptions"]),
        f"cost       ${doc['tco_per_1k_tokens_usd']:.4g} per 1K generated tokens at this load "
        f"({d['servers']} servers)",
    ]
    co = doc.get("colocated")
    if co is not None:
        if cap is not None:
            mine, theirs, what = cap["qps"], co["capacity_qps"], "requests/s within the SLO"
        elif met["goodput_requests_per_s"] is not None:
            mine = met["goodput_requests_per_s"]
            theirs = co["metrics"]["goodput_requests_per_s"]
            what = "goodput, requests/s"
        else:
            mine, theirs, what = met["tokens_per_s"], co["metrics"]["tokens_per_s"], "tokens/s"
        verdict = "beats" if mine > theirs else "does not beat"
        lines.append(
            f"vs colocated: {co['replicas']} replicas serving both phases give {theirs:.4g} "
            f"{what} against {mine:.4g}: disaggregation {verdict} them"
        )
    if doc["slo"] is not None and cap is None:
        lines.append(f"SLO        {doc['slo']}: {'met' if met['slo_met'] else 'NOT met'}")
    if out:
        lines.append(f"wrote {out.rstrip('/')}/: requests.csv, summary.json, trace.json, serve.png")
    return "\n".join(lines)

"""`chipletc inspect MODEL`: what the compiler sees in a model, before any mapping.

Loads the model through the frontends (zoo name, file.py:factory, .onnx or .gguf file, or
Hugging Face checkpoint directory), names the frontend and the recogniser used, then prints its
size, bytes, FLOPs per token and KV cache per token at one workload, the ops by kind, any
op the lowering did not recognise, any source tensor it could not place (with its
bytes), and the frontend's notes (e.g. checkpoint tensors it ignored).
"""

from __future__ import annotations

import argparse
import json
import warnings

from chipletc.ir.graph import Graph
from chipletc.ir.op import Op
from chipletc.ir.workload import Workload

from .common import add_cache_arg, add_model_args, add_storage_args, load_graph, positive_int


def register(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--per-layer", action="store_true", help="add one row per block")
    p.add_argument("--batch", type=positive_int, default=1, metavar="B", help="sequences (1)")
    p.add_argument(
        "--prompt-len",
        type=positive_int,
        metavar="P",
        help="prompt tokens (2048, or fewer when the model learned fewer positions)",
    )
    p.add_argument(
        "--context-len",
        type=positive_int,
        metavar="C",
        help="cached positions a decode step attends to (default: the prompt length)",
    )
    add_storage_args(p)
    add_cache_arg(p)
    p.set_defaults(func=run)


def summarize(graph: Graph, batch: int, prompt_len: int, context_len: int, per_layer: bool) -> dict:
    """The figures `inspect` shows, as one JSON-ready dict (FLOPs per token at this workload)."""
    prefill = Workload.prefill(batch, prompt_len)
    decode = Workload.decode(batch, context_len)
    info = graph.info
    out = {
        "name": info.name,
        "frontend": info.frontend,
        "recogniser": info.recogniser,
        "params": graph.params,
        "active_params": graph.active_params,
        "weight_bytes": graph.weight_bytes,
        "weight_bytes_by_dtype": graph.weight_bytes_by_dtype(),
        "kv_dtype": graph.kv_dtype.value,
        "kv_bytes_per_token": graph.kv_bytes_per_token,
        "kv_cache_bytes": graph.kv_bytes_per_token * batch * context_len,
        "workload": {"batch": batch, "prompt_len": prompt_len, "context_len": context_len},
        "flops_per_token_prefill": graph.cost(prefill).flops / prefill.tokens,
        "flops_per_token_decode": graph.cost(decode).flops / decode.tokens,
        "num_layers": info.num_layers,
        "d_model": info.d_model,
        "num_heads": info.num_heads,
        "num_kv_heads": info.num_kv_heads,
        "head_dim": info.head_dim,
        "ffn_dim": info.ffn_dim,
        "vocab_size": info.vocab_size,
        "parallel_block": info.parallel_block,
        "num_experts": info.num_experts,
        "experts_per_token": info.experts_per_token,
        "ops": len(graph),
        "ops_by_kind": graph.ops_by_kind(),
        "unrecognised_ops": [
            {"name": op.name, "source": op.attrs.get("source", "")} for op in graph.unrecognised()
        ],
        "notes": info.notes,
        "unplaced_tensors": [{"name": n, "bytes": b} for n, b in info.unplaced],
        "unplaced_bytes": sum(b for _, b in info.unplaced),
    }
    if per_layer:
        out["per_layer"] = [
            _group_row(graph, key, ops, decode) for key, ops in graph.groups().items()
        ]
    return out


def _group_row(graph: Graph, key: str | int, ops: list[Op], decode: Workload) -> dict:
    return {
        "block": key,
        "ops": len(ops),
        "params": sum(op.params for op in ops),
        "weight_bytes": sum(op.weight_bytes for op in ops),
        "flops_per_token_decode": graph.cost(decode, ops).flops / decode.tokens,
        "kv_bytes_per_token": sum(op.kv_bytes_per_token(graph.kv_dtype) for op in ops),
    }


def run(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unrecognised ops are listed in the output
        graph = load_graph(args)
    default = min(2048, graph.info.max_positions) if graph.learned_positions else 2048
    prompt = args.prompt_len or default
    context = args.context_len or prompt
    graph.check_context(prompt, "--prompt-len")
    graph.check_context(context, "--context-len")
    s = summarize(graph, args.batch, prompt, context, args.per_layer)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print("\n".join(_render(s)))
    return 0


def _render(s: dict) -> list[str]:
    wl = s["workload"]
    by_dtype = ", ".join(f"{_bytes(n)} {dt}" for dt, n in s["weight_bytes_by_dtype"].items())
    experts = (
        f"{s['num_experts']} experts, top-{s['experts_per_token']}" if s["num_experts"] else "dense"
    )
    lines = [
        f"{s['name']}  (frontend {s['frontend']})",
        "",
        f"  parameters            {_count(s['params'])}"
        f"   active per token {_count(s['active_params'])}",
        f"  weights               {_bytes(s['weight_bytes'])}   ({by_dtype})",
        f"  layers                {s['num_layers']}   d_model {s['d_model']}   ffn {s['ffn_dim']}"
        f"   vocab {s['vocab_size']}",
        f"  attention             {s['num_heads']} heads / {s['num_kv_heads']} kv heads"
        f" x {s['head_dim']}   {'parallel' if s['parallel_block'] else 'serial'} block   {experts}",
        f"  workload              batch {wl['batch']}, prompt {wl['prompt_len']},"
        f" context {wl['context_len']}",
        f"  FLOPs / token         prefill {_count(s['flops_per_token_prefill'])}"
        f"   decode {_count(s['flops_per_token_decode'])}",
        f"  KV cache / token      {_bytes(s['kv_bytes_per_token'])} ({s['kv_dtype']})"
        f"   whole batch {_bytes(s['kv_cache_bytes'])}",
        f"  ops                   {s['ops']}: "
        + ", ".join(f"{k} {n}" for k, n in s["ops_by_kind"].items()),
    ]
    unknown = s["unrecognised_ops"]
    if unknown:
        lines.append(f"  unrecognised ops      {len(unknown)} (costed from traced shapes):")
        lines += [f"    {u['name']}  [{u['source']}]" for u in unknown]
    else:
        lines.append("  unrecognised ops      none")
    lines.append(f"  recognised by         {s['recogniser']}")
    unplaced = s["unplaced_tensors"]
    if unplaced:
        lines.append(
            f"  not placed            {len(unplaced)} tensors, {_bytes(s['unplaced_bytes'])}"
            " (in no plan):"
        )
        lines += [f"    {u['name']}  {_bytes(u['bytes'])}" for u in unplaced[:10]]
        if len(unplaced) > 10:
            lines.append(f"    ... and {len(unplaced) - 10} more (--json lists them all)")
    if s["notes"]:
        lines.append(f"  notes                 {s['notes']}")
    if "per_layer" in s:
        lines += [
            "",
            f"  {'block':<7}{'ops':>5}{'params':>10}{'weights':>11}"
            f"{'decode FLOPs':>14}{'KV/token':>11}",
        ]
        for r in s["per_layer"]:
            lines.append(
                f"  {r['block']!s:<7}{r['ops']:>5}{_count(r['params']):>10}"
                f"{_bytes(r['weight_bytes']):>11}{_count(r['flops_per_token_decode']):>14}"
                f"{_bytes(r['kv_bytes_per_token']):>11}"
            )
    return lines


def _count(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _bytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"

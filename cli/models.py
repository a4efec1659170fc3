"""`chipletc models`: the zoo, one line per model with its published size and traits."""

from __future__ import annotations

import argparse
import json

from chipletc.models.config import ModelConfig
from chipletc.models.zoo import get_config, list_models


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=run)


def traits(cfg: ModelConfig) -> str:
    """Short family traits: positions, attention, MLP, norm, block, head, MoE."""
    attn = "MLA" if cfg.mla else _attention_kind(cfg)
    parts = [cfg.position, attn, cfg.mlp, cfg.norm]
    if cfg.parallel_block:
        parts.append("parallel")
    parts.append("tied" if cfg.tied_embeddings else "untied")
    if not cfg.bias:
        parts.append("no-bias")
    if cfg.moe:
        moe = cfg.moe
        shared = f"+{moe.num_shared_experts}sh" if moe.num_shared_experts else ""
        dense = f", {moe.first_dense_layers} dense" if moe.first_dense_layers else ""
        parts.append(f"MoE {moe.num_experts}{shared} top-{moe.top_k}{dense}")
    return " ".join(parts)


def _attention_kind(cfg: ModelConfig) -> str:
    if cfg.num_kv_heads == cfg.num_heads:
        return "MHA"
    return "MQA" if cfg.num_kv_heads == 1 else "GQA"


def run(args: argparse.Namespace) -> int:
    configs = [get_config(name) for name in list_models()]
    if args.json:
        rows = [
            {
                "name": c.name,
                "family": c.family,
                "params": c.published_params,
                "active_params": c.published_active_params or c.published_params,
                "num_layers": c.num_layers,
                "d_model": c.d_model,
                "num_heads": c.num_heads,
                "num_kv_heads": c.num_kv_heads,
                "ffn_dim": c.ffn_dim,
                "vocab_size": c.vocab_size,
                "traits": traits(c),
                "source": c.source,
            }
            for c in configs
        ]
        print(json.dumps({"models": rows}, indent=2))
        return 0
    header = f"{'model':<14}{'params':>9}{'active':>9}{'layers':>7}{'d_model':>8}{'heads/kv':>10}"
    print(f"{header}  traits")
    for c in configs:
        active = c.published_active_params or c.published_params
        print(
            f"{c.name:<14}{_billions(c.published_params):>9}{_billions(active):>9}"
            f"{c.num_layers:>7}{c.d_model:>8}{f'{c.num_heads}/{c.num_kv_heads}':>10}  {traits(c)}"
        )
    print("\nparams: published totals (see chipletc inspect MODEL for the lowered count)")
    return 0


def _billions(n: float) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"

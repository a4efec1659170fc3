"""Small builders for tests: transformer graphs written op by op (without torch), and zoo
models at test size exported to ONNX."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from chipletc.ir.dtypes import DType
from chipletc.ir.graph import Graph, ModelInfo
from chipletc.ir.op import Op, OpKind, Role, Shard, Weight
from chipletc.models import zoo
from chipletc.models.config import ModelConfig
from chipletc.models.transformer import Transformer

# conftest's ``cli`` fixture: ``cli(*argv)`` -> (exit code, stdout, stderr)
CliRun = Callable[..., tuple[int, str, str]]


def make_graph(
    layers: int = 4,
    d: int = 64,
    heads: int = 4,
    kv_heads: int | None = None,
    ffn: int | None = None,
    vocab: int = 100,
    tied: bool = True,
    dtype: DType = DType.BF16,
    wide_layers: frozenset[int] = frozenset(),
    name: str = "toy",
) -> Graph:
    """A GPT-style decoder; blocks in ``wide_layers`` get a twice-wider FFN (unlike blocks)."""
    kv_heads = kv_heads or heads
    ffn = ffn or 4 * d
    dh = d // heads
    info = ModelInfo(name, layers, d, heads, kv_heads, dh, vocab, ffn)
    g = Graph(info)
    emb_w = Weight("wte", (vocab, d), dtype)
    prev = g.add_op(
        Op(
            "embed",
            OpKind.EMBEDDING,
            {"num_embeddings": vocab, "width": d},
            (emb_w,),
            role=Role.TOKEN,
            shard=Shard.VOCAB,
        )
    ).name

    def mm(name: str, n_in: int, n_out: int, role: Role, shard: Shard, block: int, src: str) -> str:
        w = Weight(f"{name}.weight", (n_out, n_in), dtype)
        return g.add_op(
            Op(
                name,
                OpKind.MATMUL,
                {"in_features": n_in, "out_features": n_out},
                (w,),
                block,
                role,
                shard,
            ),
            [src],
        ).name

    for b in range(layers):
        f = ffn * (2 if b in wide_layers else 1)
        p = f"h{b}"
        n1 = g.add_op(
            Op(
                f"{p}.ln1",
                OpKind.NORM,
                {"width": d},
                (Weight(f"{p}.ln1.weight", (d,), dtype),),
                b,
                Role.NORM,
            ),
            [prev],
        ).name
        q = mm(f"{p}.q", d, d, Role.Q, Shard.COLUMN, b, n1)
        k = mm(f"{p}.k", d, kv_heads * dh, Role.K, Shard.COLUMN, b, n1)
        v = mm(f"{p}.v", d, kv_heads * dh, Role.V, Shard.COLUMN, b, n1)
        attn = {"heads": heads, "kv_heads": kv_heads, "head_dim": dh, "kv_elems": kv_heads * dh}
        s = g.add_op(
            Op(f"{p}.score", OpKind.ATTN_SCORE, attn, (), b, Role.ATTN, Shard.HEADS), [q, k]
        ).name
        c = g.add_op(
            Op(f"{p}.context", OpKind.ATTN_CONTEXT, attn, (), b, Role.ATTN, Shard.HEADS), [s, v]
        ).name
        o = mm(f"{p}.proj", d, d, Role.PROJ, Shard.ROW, b, c)
        r1 = g.add_op(
            Op(f"{p}.res1", OpKind.ELEMENTWISE, {"width": d}, (), b, Role.RESIDUAL), [prev, o]
        ).name
        n2 = g.add_op(
            Op(
                f"{p}.ln2",
                OpKind.NORM,
                {"width": d},
                (Weight(f"{p}.ln2.weight", (d,), dtype),),
                b,
                Role.NORM,
            ),
            [r1],
        ).name
        f1 = mm(f"{p}.fc1", d, f, Role.FC1, Shard.COLUMN, b, n2)
        a = g.add_op(
            Op(f"{p}.act", OpKind.ACTIVATION, {"width": f}, (), b, Role.ACT, Shard.WIDTH), [f1]
        ).name
        f2 = mm(f"{p}.fc2", f, d, Role.FC2, Shard.ROW, b, a)
        prev = g.add_op(
            Op(f"{p}.res2", OpKind.ELEMENTWISE, {"width": d}, (), b, Role.RESIDUAL), [r1, f2]
        ).name
    lnf = g.add_op(
        Op(
            "ln_f", OpKind.NORM, {"width": d}, (Weight("ln_f.weight", (d,), dtype),), role=Role.NORM
        ),
        [prev],
    ).name
    head_dims = {"in_features": d, "out_features": vocab}
    if tied:
        g.add_op(
            Op(
                "head", OpKind.LM_HEAD, head_dims, (), role=Role.HEAD, shard=Shard.VOCAB, tied=emb_w
            ),
            [lnf],
        )
    else:
        w = Weight("lm_head.weight", (vocab, d), dtype)
        g.add_op(
            Op("head", OpKind.LM_HEAD, head_dims, (w,), role=Role.HEAD, shard=Shard.VOCAB), [lnf]
        )
    return g.verify()


def make_target(
    sram_mb: float = 8.0,
    tops: float = 5.0,
    sram_bw_Bps: float = 2e12,
    chips_per_package: int = 1,
    packages_per_lane: int = 4,
    lanes: int = 2,
    max_servers: int = 8,
    rent_usd_per_hour: float | None = None,
):
    """A small SRAM-only chiplet system on the 7 nm node, described by performance."""
    from chipletc.backends.targets import target_from_dict

    data = {
        "name": f"toy-{sram_mb:g}mb-{tops:g}tops",
        "tech": "7nm",
        "chiplet": {
            "by_performance": {"tops": tops, "sram_mib": sram_mb, "sram_bw_Bps": sram_bw_Bps}
        },
        "package": {"chiplets_per_package": chips_per_package},
        "server": {
            "packages_per_lane": packages_per_lane,
            "lanes": lanes,
            "server_link_count": 2,
            "server_link_bw_Bps": 12.5e9,
            "server_link_latency_s": 2e-6,
            "power_cap_w": 6400,
        },
        "system": {"max_servers": max_servers},
        "efficiency": {"compute": 0.9, "memory": 0.9, "link": 0.9},
    }
    if rent_usd_per_hour is not None:
        data["economics"] = {"rent_usd_per_hour": rent_usd_per_hour}
    return target_from_dict(data, "toy")


# -- zoo models at test size, exported to ONNX ---------------------------------------------


def tiny(name: str, layers: int = 2) -> ModelConfig:
    """A zoo family at test size: d 64, 4 heads of 16 (2 KV heads where the family has GQA)."""
    cfg = zoo.with_layers(zoo.get_config(name), layers)
    kv = 2 if cfg.num_kv_heads < cfg.num_heads else 4
    cfg = replace(
        cfg, d_model=64, num_heads=4, num_kv_heads=kv, head_dim=16, ffn_dim=128,
        vocab_size=100, max_positions=64,
    )  # fmt: skip
    if cfg.moe is not None:
        cfg = replace(cfg, moe=replace(cfg.moe, num_experts=4, expert_ffn_dim=96))
    return cfg


def export_onnx(cfg: ModelConfig, path: Path, *, meta: bool = True, opset: int = 20) -> Path:
    """torch.onnx.export (dynamo) of a zoo model in bf16, without the exporter's optimizer.

    On meta tensors the weights become graph inputs; on CPU they are initializers in an
    external file, which is then deleted so only their dims and dtypes remain.
    """
    device = "meta" if meta else "cpu"
    with torch.device(device):
        module = Transformer(cfg).to(torch.bfloat16).eval()
    ids = torch.zeros(1, 8, dtype=torch.long, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (ids,), dynamo=True, optimize=False, opset_version=opset, verbose=False
        )
    program.save(
        str(path),
        include_initializers=not meta,
        keep_initializers_as_inputs=meta,
        external_data=not meta,
    )
    Path(f"{path}.data").unlink(missing_ok=True)
    return path

"""Named configurations of published models, and the builder for them.

Each entry cites where its hyperparameters and parameter count come from. Counts are
the published totals; where a paper gives only a rounded name ("7B") the released
checkpoint's exact total is used and said so.
"""

from __future__ import annotations

import difflib
from dataclasses import replace
from typing import TYPE_CHECKING

from chipletc.ir.errors import ModelError

from .config import MLAConfig, ModelConfig, MoEConfig

if TYPE_CHECKING:
    from torch import nn

__all__ = ["build", "get_config", "list_models", "with_layers"]


def _gpt2(name: str, layers: int, d: int, heads: int, params: float) -> ModelConfig:
    return ModelConfig(
        name=name, family="gpt2", num_layers=layers, d_model=d, num_heads=heads,
        num_kv_heads=heads, head_dim=64, ffn_dim=4 * d, vocab_size=50257, max_positions=1024,
        position="learned", mlp="gelu", norm="layernorm", bias=True, tied_embeddings=True,
        fused_qkv=True, published_params=params,
        source="Radford et al. 2019 (GPT-2); total of the released checkpoint (HF model card)",
    )  # fmt: skip


def _llama(
    name: str,
    layers: int,
    d: int,
    heads: int,
    kv: int,
    ffn: int,
    vocab: int,
    params: float,
    source: str,
    max_positions: int,
) -> ModelConfig:
    return ModelConfig(
        name=name, family=name.split("-")[0], num_layers=layers, d_model=d, num_heads=heads,
        num_kv_heads=kv, head_dim=d // heads, ffn_dim=ffn, vocab_size=vocab,
        max_positions=max_positions, position="rotary", mlp="swiglu", norm="rmsnorm",
        bias=False, tied_embeddings=False, published_params=params, source=source,
    )  # fmt: skip


_LLAMA2 = "Touvron et al. 2023 (Llama 2), Table 1; exact total of the released checkpoint"
_LLAMA3 = "Llama Team 2024 (The Llama 3 Herd of Models), Table 3; exact checkpoint total"

_MODELS: tuple[ModelConfig, ...] = (
    _gpt2("gpt2-small", 12, 768, 12, 124_439_808),
    _gpt2("gpt2-medium", 24, 1024, 16, 354_823_168),
    _gpt2("gpt2-large", 36, 1280, 20, 774_030_080),
    _gpt2("gpt2-xl", 48, 1600, 25, 1_557_611_200),
    ModelConfig(
        name="gpt3-175b", family="gpt3", num_layers=96, d_model=12288, num_heads=96,
        num_kv_heads=96, head_dim=128, ffn_dim=49152, vocab_size=50257, max_positions=2048,
        position="learned", mlp="gelu", norm="layernorm", bias=True, tied_embeddings=True,
        fused_qkv=True, published_params=175e9,
        source="Brown et al. 2020 (GPT-3), Table 2.1",
        notes="dense attention in every layer (the paper alternates dense and locally "
        "banded sparse attention; the banding changes no weights)",
    ),
    ModelConfig(
        name="opt-66b", family="opt", num_layers=64, d_model=9216, num_heads=72,
        num_kv_heads=72, head_dim=128, ffn_dim=36864, vocab_size=50272, max_positions=2048,
        position="learned", pos_offset=2, mlp="relu", norm="layernorm", bias=True,
        tied_embeddings=True, published_params=66e9,
        source="Zhang et al. 2022 (OPT), Table 1",
    ),
    ModelConfig(
        name="opt-175b", family="opt", num_layers=96, d_model=12288, num_heads=96,
        num_kv_heads=96, head_dim=128, ffn_dim=49152, vocab_size=50272, max_positions=2048,
        position="learned", pos_offset=2, mlp="relu", norm="layernorm", bias=True,
        tied_embeddings=True, published_params=175e9,
        source="Zhang et al. 2022 (OPT), Table 1",
    ),
    ModelConfig(
        name="bloom-176b", family="bloom", num_layers=70, d_model=14336, num_heads=112,
        num_kv_heads=112, head_dim=128, ffn_dim=57344, vocab_size=250880, max_positions=2048,
        position="alibi", mlp="gelu", norm="layernorm", bias=True, tied_embeddings=True,
        embed_norm=True, fused_qkv=True, published_params=176_247_271_424,
        source="BigScience 2022 (BLOOM, arXiv 2211.05100), Table 3; HF model card total",
    ),
    ModelConfig(
        name="palm-540b", family="palm", num_layers=118, d_model=18432, num_heads=48,
        num_kv_heads=1, head_dim=256, ffn_dim=73728, vocab_size=256000, max_positions=2048,
        position="rotary", mlp="swiglu", norm="layernorm", bias=False, tied_embeddings=True,
        parallel_block=True, published_params=540.35e9,
        source="Chowdhery et al. 2022 (PaLM), Table 1 (540.35B)",
        notes="serving pads 48 heads to 64 (Pope et al. 2022); modelled with the trained 48",
    ),
    ModelConfig(
        name="gopher-280b", family="gopher", num_layers=80, d_model=16384, num_heads=128,
        num_kv_heads=128, head_dim=128, ffn_dim=65536, vocab_size=32000, max_positions=2048,
        position="relative", mlp="gelu", norm="rmsnorm", bias=False, tied_embeddings=False,
        published_params=280e9,
        source="Rae et al. 2021 (Gopher), Table 1",
        notes="Transformer-XL relative positions: one d x d position-key projection per "
        "layer (13 d^2 per layer, which is what reaches 280B); bias-free and an untied "
        "head are assumptions (the paper does not say)",
    ),
    ModelConfig(
        name="mt-nlg-530b", family="mt-nlg", num_layers=105, d_model=20480, num_heads=128,
        num_kv_heads=128, head_dim=160, ffn_dim=81920, vocab_size=51200, max_positions=2048,
        position="learned", mlp="gelu", norm="layernorm", bias=True, tied_embeddings=True,
        fused_qkv=True, published_params=530e9,
        source="Smith et al. 2022 (Megatron-Turing NLG 530B), Table 1",
    ),
    _llama("llama2-7b", 32, 4096, 32, 32, 11008, 32000, 6_738_415_616, _LLAMA2, 4096),
    _llama("llama2-13b", 40, 5120, 40, 40, 13824, 32000, 13_015_864_320, _LLAMA2, 4096),
    _llama("llama2-70b", 80, 8192, 64, 8, 28672, 32000, 68_976_648_192, _LLAMA2, 4096),
    _llama("llama3-8b", 32, 4096, 32, 8, 14336, 128256, 8_030_261_248, _LLAMA3, 8192),
    _llama("llama3-70b", 80, 8192, 64, 8, 28672, 128256, 70_553_706_496, _LLAMA3, 8192),
    _llama("llama3-405b", 126, 16384, 128, 8, 53248, 128256, 405_853_388_800, _LLAMA3, 8192),
    ModelConfig(
        name="mixtral-8x7b", family="mixtral", num_layers=32, d_model=4096, num_heads=32,
        num_kv_heads=8, head_dim=128, ffn_dim=14336, vocab_size=32000, max_positions=32768,
        position="rotary", mlp="swiglu", norm="rmsnorm", bias=False, tied_embeddings=False,
        moe=MoEConfig(num_experts=8, top_k=2, expert_ffn_dim=14336),
        published_params=46.7e9, published_active_params=12.9e9,
        source="Jiang et al. 2024 (Mixtral of Experts), section 2",
    ),
    ModelConfig(
        name="deepseek-v3", family="deepseek", num_layers=61, d_model=7168, num_heads=128,
        num_kv_heads=128, head_dim=192, ffn_dim=18432, vocab_size=129280, max_positions=4096,
        position="rotary", mlp="swiglu", norm="rmsnorm", bias=False, tied_embeddings=False,
        mla=MLAConfig(
            q_lora_rank=1536, kv_lora_rank=512, qk_nope_dim=128, qk_rope_dim=64, v_head_dim=128
        ),
        moe=MoEConfig(
            num_experts=256, top_k=8, expert_ffn_dim=2048, num_shared_experts=1,
            first_dense_layers=3, router="sigmoid",
        ),
        published_params=671e9, published_active_params=37e9,
        source="DeepSeek-AI 2024 (DeepSeek-V3 Technical Report), sections 2 and 4.2",
        notes=(
            "MLA is modelled in its naive form: the real low-rank weights (q 7168->1536->"
            "128x192, kv 7168->512+64 then 512->128x(128+128)) with attention FLOPs per "
            "head (qk 192, v 128). The KV cache is the compressed latent plus the shared "
            "rotary key, 512 + 64 = 576 elements per token per layer. Decode attention "
            "FLOPs are those of the naive form; the absorbed form (W_UK folded into Q, "
            "W_UV into the output) attends in the 576-wide latent instead (~3x more "
            "score FLOPs per head, no per-step K/V up-projection of the context). "
            "The multi-token-prediction module (14B) is not modelled: the 671B total "
            "is the main model without it (the released checkpoint's 685B includes it). "
            "The router's per-expert bias term (256 numbers per layer) is left out."
        ),
    ),
)  # fmt: skip

_BY_NAME = {cfg.name: cfg for cfg in _MODELS}


def list_models() -> list[str]:
    """Zoo names in the order of the table above (family, then size)."""
    return [cfg.name for cfg in _MODELS]


def get_config(name: str) -> ModelConfig:
    """The named configuration; unknown names raise ``ModelError`` with close matches."""
    try:
        return _BY_NAME[name]
    except KeyError:
        close = difflib.get_close_matches(name, _BY_NAME, n=3, cutoff=0.5)
        if not close:
            close = [n for n in _BY_NAME if n.startswith(name.split("-")[0])][:3]
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ModelError(
            f"model {name!r}: unknown model; {hint}chipletc models lists them"
        ) from None


def build(name_or_config: str | ModelConfig) -> nn.Module:
    """The model as a torch module on the meta device: shapes only, no weight memory.

    torch is imported here, not with the module: the configs above serve commands
    (`chipletc models`) that build nothing.
    """
    import torch

    from .transformer import Transformer

    cfg = get_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    with torch.device("meta"):
        return Transformer(cfg)


def with_layers(cfg: ModelConfig, num_layers: int) -> ModelConfig:
    """A shallower copy of ``cfg`` (tests and benchmarks use it to keep runs short)."""
    return replace(cfg, name=f"{cfg.name}-l{num_layers}", num_layers=num_layers)

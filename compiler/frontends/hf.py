"""The Hugging Face frontend: a checkpoint directory to the IR, without loading weights.

A directory holds ``config.json`` and optionally its weights: safetensors or
``pytorch_model.bin``, single or sharded (``checkpoint``); it may be a Hub cache
folder. The config is mapped onto a zoo ``ModelConfig`` (every field that changes a
weight shape or a cost is read; what the zoo cannot express is refused, never
approximated), the zoo module is lowered by the torch.fx path, and each weight is then
renamed to its Hugging Face tensor name and given the dtype and exact byte count the
weight files' headers state.

Why the zoo and not transformers on the meta device plus torch.export: the zoo traces
in well under a second at any size, needs no optional package, and its MoE is written
densely, whereas transformers' experts loop over the experts a batch hits, which
torch.export cannot trace without data. The tests hold the mapping to transformers'
own modules (tensor names, shapes, totals) where transformers is installed.

Quantized checkpoints: a weight stored as ``X.qweight`` (GPTQ/AWQ), ``X.weight`` of
int8/uint8/fp8 (bitsandbytes LLM.int8 and NF4/FP4, FP8 with per-tensor, per-channel or
block scales), or ``X.weight_packed`` (compressed-tensors) counts the bytes of the packed
tensor plus its scales, zeros, group indices and quantization state, which are real
memory; its IR dtype is int4, int8 or fp8 by the bits per logical element.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from math import prod
from pathlib import Path

from chipletc.ir.dtypes import DType, parse_dtype
from chipletc.ir.errors import ChipletcError, ModelError
from chipletc.ir.graph import Graph
from chipletc.ir.op import Weight
from chipletc.models import zoo
from chipletc.models.config import MLAConfig, ModelConfig, MoEConfig

from .checkpoint import read_checkpoint
from .fx import lower_module, replace_weights
from .safetensors_header import TensorEntry

__all__ = ["SUPPORTED", "lower_checkpoint", "model_config"]


@dataclass(frozen=True)
class _Names:
    """How a family names its tensors: zoo module path -> Hugging Face module path."""

    top: dict[str, str]
    layers: str
    block: dict[str, str]
    transposed: frozenset[str] = frozenset()  # stored (in, out): GPT-2's Conv1D
    experts: str = ""
    # Another name the same tensor has in checkpoints saved by other versions.
    aliases: tuple[tuple[str, str], ...] = ()
    # Stacked zoo expert tensor -> the leaf of each per-expert Hugging Face tensor.
    expert_leaves: tuple[tuple[str, str], ...] = (
        ("w_gate", "gate_proj"), ("w_up", "up_proj"), ("w_down", "down_proj"),
    )  # fmt: skip


_LLAMA_TOP = {"tok": "model.embed_tokens", "norm": "model.norm", "head": "lm_head"}
_LLAMA_ATTN = {
    "attn.q": "self_attn.q_proj",
    "attn.k": "self_attn.k_proj",
    "attn.v": "self_attn.v_proj",
    "attn.proj": "self_attn.o_proj",
    "attn.q_norm": "self_attn.q_norm",
    "attn.k_norm": "self_attn.k_norm",
}
_LLAMA_MLP = {"mlp.gate": "mlp.gate_proj", "mlp.up": "mlp.up_proj", "mlp.down": "mlp.down_proj"}
_LLAMA_BLOCK = {
    "norm1": "input_layernorm",
    "norm2": "post_attention_layernorm",
    **_LLAMA_ATTN,
    **_LLAMA_MLP,
}
_LLAMA = _Names(_LLAMA_TOP, "model.layers", _LLAMA_BLOCK)
_MIXTRAL = _Names(
    _LLAMA_TOP,
    "model.layers",
    {**_LLAMA_BLOCK, "mlp.router": "block_sparse_moe.gate"},
    experts="block_sparse_moe.experts",
    expert_leaves=(("w_gate", "w1"), ("w_up", "w3"), ("w_down", "w2")),
)
_QWEN_MOE = _Names(
    _LLAMA_TOP,
    "model.layers",
    {**_LLAMA_BLOCK, "mlp.router": "mlp.gate", "mlp.shared_gate": "mlp.shared_expert_gate",
     **{f"mlp.shared.{k}": f"mlp.shared_expert.{k}_proj" for k in ("gate", "up", "down")}},
    experts="mlp.experts",
)  # fmt: skip
_DEEPSEEK = _Names(
    _LLAMA_TOP,
    "model.layers",
    {"norm1": "input_layernorm", "norm2": "post_attention_layernorm",
     "attn.q": "self_attn.q_proj", "attn.q_down": "self_attn.q_a_proj",
     "attn.q_norm": "self_attn.q_a_layernorm", "attn.q_up": "self_attn.q_b_proj",
     "attn.kv_down": "self_attn.kv_a_proj_with_mqa", "attn.kv_norm": "self_attn.kv_a_layernorm",
     "attn.kv_up": "self_attn.kv_b_proj", "attn.proj": "self_attn.o_proj", **_LLAMA_MLP,
     "mlp.router": "mlp.gate",
     **{f"mlp.shared.{k}": f"mlp.shared_experts.{k}_proj" for k in ("gate", "up", "down")}},
    experts="mlp.experts",
)  # fmt: skip
_GEMMA2 = _Names(
    _LLAMA_TOP,
    "model.layers",
    {**_LLAMA_BLOCK, "post1": "post_attention_layernorm", "norm2": "pre_feedforward_layernorm",
     "post2": "post_feedforward_layernorm"},
)  # fmt: skip
_OLMO2 = _Names(
    _LLAMA_TOP,
    "model.layers",
    {**_LLAMA_ATTN, **_LLAMA_MLP, "post1": "post_attention_layernorm",
     "post2": "post_feedforward_layernorm"},
)  # fmt: skip
_PHI3 = _Names(
    _LLAMA_TOP,
    "model.layers",
    {"norm1": "input_layernorm", "norm2": "post_attention_layernorm",
     "attn.qkv": "self_attn.qkv_proj", "attn.proj": "self_attn.o_proj",
     "mlp.gate_up": "mlp.gate_up_proj", "mlp.down": "mlp.down_proj"},
)  # fmt: skip
_STARCODER2 = _Names(
    _LLAMA_TOP,
    "model.layers",
    {"norm1": "input_layernorm", "norm2": "post_attention_layernorm", **_LLAMA_ATTN,
     "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"},
)  # fmt: skip
_GPT2_BLOCK = {
    "norm1": "ln_1", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
}  # fmt: skip
_GPT2_TOP = {"tok": "transformer.wte", "pos": "transformer.wpe", "norm": "transformer.ln_f",
             "head": "lm_head"}  # fmt: skip
_GPT2 = _Names(_GPT2_TOP, "transformer.h", _GPT2_BLOCK, frozenset(_GPT2_BLOCK) - {"norm1", "norm2"})
_GPT_BIGCODE = _Names(_GPT2_TOP, "transformer.h", _GPT2_BLOCK)
_GPTJ = _Names(
    {"tok": "transformer.wte", "norm": "transformer.ln_f", "head": "lm_head"},
    "transformer.h",
    {"norm1": "ln_1", "attn.q": "attn.q_proj", "attn.k": "attn.k_proj", "attn.v": "attn.v_proj",
     "attn.proj": "attn.out_proj", "mlp.fc1": "mlp.fc_in", "mlp.fc2": "mlp.fc_out"},
)  # fmt: skip
_GPT_NEOX = _Names(
    {"tok": "gpt_neox.embed_in", "norm": "gpt_neox.final_layer_norm", "head": "embed_out"},
    "gpt_neox.layers",
    {"norm1": "input_layernorm", "norm2": "post_attention_layernorm",
     "attn.qkv": "attention.query_key_value", "attn.proj": "attention.dense",
     "mlp.fc1": "mlp.dense_h_to_4h", "mlp.fc2": "mlp.dense_4h_to_h"},
    aliases=(("embed_out.weight", "lm_head.weight"),),  # transformers 5 saves lm_head
)  # fmt: skip
_OPT = _Names(
    {"tok": "model.decoder.embed_tokens", "pos": "model.decoder.embed_positions",
     "norm": "model.decoder.final_layer_norm", "head": "lm_head"},
    "model.decoder.layers",
    {"norm1": "self_attn_layer_norm", "attn.q": "self_attn.q_proj", "attn.k": "self_attn.k_proj",
     "attn.v": "self_attn.v_proj", "attn.proj": "self_attn.out_proj",
     "norm2": "final_layer_norm", "mlp.fc1": "fc1", "mlp.fc2": "fc2"},
)  # fmt: skip
_FALCON_BLOCK = {
    "norm1": "input_layernorm", "norm2": "post_attention_layernorm",
    "attn.qkv": "self_attention.query_key_value", "attn.proj": "self_attention.dense",
    "mlp.fc1": "mlp.dense_h_to_4h", "mlp.fc2": "mlp.dense_4h_to_h",
}  # fmt: skip
_FALCON_TOP = {"tok": "transformer.word_embeddings", "norm": "transformer.ln_f", "head": "lm_head"}
_FALCON = _Names(_FALCON_TOP, "transformer.h", _FALCON_BLOCK)
_FALCON_NEW = _Names(
    _FALCON_TOP, "transformer.h", {**_FALCON_BLOCK, "norm1": "ln_attn", "norm2": "ln_mlp"}
)
_BLOOM = _Names(
    {"tok": "transformer.word_embeddings", "emb_norm": "transformer.word_embeddings_layernorm",
     "norm": "transformer.ln_f", "head": "lm_head"},
    "transformer.h",
    _FALCON_BLOCK,
)  # fmt: skip
_MPT = _Names(
    {"tok": "transformer.wte", "norm": "transformer.norm_f", "head": "lm_head"},
    "transformer.blocks",
    {"norm1": "norm_1", "attn.qkv": "attn.Wqkv", "attn.proj": "attn.out_proj", "norm2": "norm_2",
     "mlp.fc1": "ffn.up_proj", "mlp.fc2": "ffn.down_proj"},
)  # fmt: skip
# Tensors checkpoints carry that are not weights of the model: ignored, and said so.
_BUFFERS = re.compile(
    r"(\.rotary_emb\.inv_freq|\.attn\.bias|\.attn\.masked_bias|\.attention\.bias"
    r"|\.attention\.masked_bias|\.e_score_correction_bias)$"
)
# Companions of a quantized weight ``X.weight``, stored as ``X.<suffix>``.
_QUANT_PARTS = frozenset(
    {"qweight", "qzeros", "scales", "g_idx", "SCB", "weight_format", "weight_scale",
     "weight_scale_inv", "input_scale", "weight_zero_point", "weight_packed", "weight_shape",
     "weight_global_scale", "weight.absmax", "weight.quant_map", "weight.nested_absmax",
     "weight.nested_quant_map", "weight.quant_state.bitsandbytes__nf4",
     "weight.quant_state.bitsandbytes__fp4"}
)  # fmt: skip
_FLOAT_DTYPES = {
    "F64": DType.FP32, "F32": DType.FP32, "F16": DType.FP16, "BF16": DType.BF16,
    "F8_E4M3": DType.FP8, "F8_E5M2": DType.FP8,
}  # fmt: skip


# The range each numeric config.json field may take: wide enough for any published
# model (the largest today: 16384 wide, 126 layers, 256K vocabulary, 1M positions), narrow
# enough that lowering stays fast (layers are traced one by one) and that sizes stay
# far from int64 overflow.
_RANGES: dict[str, tuple[int, int]] = {
    **dict.fromkeys(("hidden_size", "n_embd", "n_embed", "d_model", "word_embed_proj_dim"),
                    (1, 1 << 17)),
    **dict.fromkeys(("num_hidden_layers", "n_layer", "n_layers"), (1, 256)),
    **dict.fromkeys(
        ("num_attention_heads", "n_head", "n_heads", "num_key_value_heads", "num_kv_heads",
         "n_head_kv"),
        (1, 4096),
    ),
    **dict.fromkeys(("head_dim", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"),
                    (1, 8192)),
    **dict.fromkeys(
        ("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size", "moe_intermediate_size",
         "kv_lora_rank"),
        (1, 1 << 20),
    ),
    # 0: absent (no shared expert; queries projected directly, DeepSeek-V2-Lite)
    **dict.fromkeys(("shared_expert_intermediate_size", "q_lora_rank"), (0, 1 << 20)),
    "expansion_ratio": (1, 64),
    "vocab_size": (1, 1 << 22),
    **dict.fromkeys(("max_position_embeddings", "n_positions", "max_seq_len"), (1, 1 << 24)),
    **dict.fromkeys(
        ("num_local_experts", "num_experts_per_tok", "num_experts", "n_routed_experts",
         "n_shared_experts", "first_k_dense_replace", "decoder_sparse_step"),
        (0, 1024),
    ),
    "num_ln_in_parallel_attn": (1, 2),
    "moe_layer_freq": (1, 256),
}  # fmt: skip


class _Config:
    """config.json with lookups that fail as one clear line, and notes on what the
    mapping leaves out (collected while the config is read)."""

    def __init__(self, raw: dict, where: str) -> None:
        self.raw, self.where = raw, where
        self.notes: list[str] = []

    def get(self, key: str, default: object = ...) -> object:
        value = self.raw.get(key)
        if value is None:
            if default is ...:
                raise ModelError(f"{self.where}: no {key!r} in config.json")
            return default
        return value

    def int(self, key: str, default: object = ...) -> int:
        value = self.get(key, default)
        lo, hi = _RANGES[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ModelError(
                f"{self.where}: {key!r} is {value!r}, not a whole number; give one in {lo}..{hi}"
            )
        if not lo <= value <= hi:
            raise ModelError(f"{self.where}: {key!r} is {value}, outside {lo}..{hi}")
        return value

    def first(self, *keys: str, default: object = ...) -> int:
        """The first of ``keys`` the config sets (families rename fields)."""
        for key in keys:
            if self.raw.get(key) is not None:
                return self.int(key)
        return self.int(keys[0], default)

    def head_dim(self, d_model: int, heads: int, *, given: bool = False) -> int:
        """The width of one head: the config's ``head_dim`` where the family has one
        (``given``), else the hidden size split over the heads, which must divide."""
        if given and self.raw.get("head_dim") is not None:
            return self.int("head_dim")
        if d_model % heads:
            raise ModelError(
                f"{self.where}: hidden size {d_model} does not split into {heads} heads "
                "and the config gives no head_dim"
            )
        return d_model // heads

    def refuse(self, what: str) -> ModelError:
        return ModelError(f"{self.where}: {what} is not supported by the zoo definition")

    def act(self, *keys: str, allowed: tuple[str, ...]) -> None:
        """Refuse an activation function the zoo MLP does not compute."""
        for key in keys:
            value = self.raw.get(key)
            if value is not None and not any(str(value).startswith(a) for a in allowed):
                raise self.refuse(f"{key} {value!r}")

    def note_sliding_window(self, layers: int) -> None:
        """Sliding-window attention changes no weight; its KV cache is counted in full."""
        window = self.raw.get("sliding_window")
        if not window or self.raw.get("use_sliding_window") is False:
            return
        pattern = self.raw.get("sliding_window_pattern") or self.raw.get("layer_types")
        if isinstance(pattern, list):
            local = sum(t == "sliding_attention" for t in pattern)
        elif isinstance(pattern, int) and pattern > 1:
            local = layers - layers // pattern
        elif self.raw.get("model_type") == "gemma2":
            local = (layers + 1) // 2  # even layers slide (Gemma 2 report, section 2)
        else:
            local = layers
        self.notes.append(
            f"sliding window {window} on {local} of {layers} layers: their attention and KV "
            "cache are counted at the full context (an upper bound)"
        )

    def note_ignored(self, *keys: str) -> None:
        """Fields that change no weight and no cost the zoo counts, said so when set."""
        for key in keys:
            value = self.raw.get(key)
            if value not in (None, False, 0):
                self.notes.append(f"{key} {value} ignored (no weights, negligible FLOPs)")


def _common(c: _Config, family: str, **fields: object) -> ModelConfig:
    """A ModelConfig with the fields every family shares filled from ``fields``."""
    return ModelConfig(
        name=c.where, family=family, published_params=0.0, source=f"{c.where}/config.json",
        **fields,  # type: ignore[arg-type]
    )


def _llama_like(c: _Config, family: str) -> ModelConfig:
    d, heads = c.int("hidden_size"), c.int("num_attention_heads")
    layers = c.int("num_hidden_layers")
    attn_bias, mlp_bias = bool(c.get("attention_bias", False)), bool(c.get("mlp_bias", False))
    qkv_bias = family in ("qwen2", "qwen2_moe")
    gemma = family.startswith("gemma")
    c.act("hidden_act", "hidden_activation", allowed=("gelu",) if gemma else ("silu", "swish"))
    c.note_sliding_window(layers)
    c.note_ignored("attn_logit_softcapping", "final_logit_softcapping")
    moe = None
    ffn = c.int("intermediate_size")
    if family == "mixtral":
        moe = MoEConfig(
            num_experts=c.int("num_local_experts"),
            top_k=c.int("num_experts_per_tok"),
            expert_ffn_dim=ffn,
        )
    elif family in ("qwen2_moe", "qwen3_moe"):
        if c.int("decoder_sparse_step", 1) != 1 or c.get("mlp_only_layers", []):
            raise c.refuse("dense layers between MoE layers (decoder_sparse_step, mlp_only_layers)")
        shared = c.int("shared_expert_intermediate_size", 0) if family == "qwen2_moe" else 0
        moe = MoEConfig(
            num_experts=c.int("num_experts"), top_k=c.int("num_experts_per_tok"),
            expert_ffn_dim=c.int("moe_intermediate_size"), num_shared_experts=int(shared > 0),
            shared_ffn_dim=shared, shared_gate=shared > 0,
        )  # fmt: skip
    return _common(
        c, family, num_layers=layers, d_model=d,
        num_heads=heads, num_kv_heads=c.int("num_key_value_heads", heads),
        head_dim=c.head_dim(d, heads, given=True), ffn_dim=ffn,
        vocab_size=c.int("vocab_size"), max_positions=c.int("max_position_embeddings", 4096),
        position="rotary", mlp="geglu" if gemma else "swiglu", norm="rmsnorm", bias=mlp_bias,
        attn_bias=attn_bias, qkv_bias=qkv_bias,
        tied_embeddings=bool(c.get("tie_word_embeddings", gemma)),
        qk_norm="head" if family in ("qwen3", "qwen3_moe", "gemma3_text") else "none",
        sublayer_norms="both" if family in ("gemma2", "gemma3_text") else "pre", moe=moe,
    )  # fmt: skip


def _olmo2(c: _Config, family: str) -> ModelConfig:
    return replace(_llama_like(c, family), sublayer_norms="post", qk_norm="full")


def _phi3(c: _Config, family: str) -> ModelConfig:
    if c.get("rope_scaling", None) is not None or c.get("partial_rotary_factor", 1.0) != 1.0:
        c.notes.append("rope scaling / partial rotary ignored (no weights)")
    return replace(_llama_like(c, "phi3"), fused_qkv=True, fused_gate_up=True)


def _deepseek(c: _Config, family: str) -> ModelConfig:
    d, heads = c.int("hidden_size"), c.int("num_attention_heads")
    layers = c.int("num_hidden_layers")
    c.act("hidden_act", allowed=("silu",))
    mla = MLAConfig(
        q_lora_rank=c.int("q_lora_rank", 0), kv_lora_rank=c.int("kv_lora_rank"),
        qk_nope_dim=c.int("qk_nope_head_dim"), qk_rope_dim=c.int("qk_rope_head_dim"),
        v_head_dim=c.int("v_head_dim"),
    )  # fmt: skip
    if c.int("n_routed_experts", 0) and c.int("moe_layer_freq", 1) != 1:
        raise c.refuse("moe_layer_freq other than 1")
    moe = None
    if c.int("n_routed_experts", 0):
        moe = MoEConfig(
            num_experts=c.int("n_routed_experts"), top_k=c.int("num_experts_per_tok"),
            expert_ffn_dim=c.int("moe_intermediate_size"),
            num_shared_experts=c.int("n_shared_experts", 0),
            first_dense_layers=c.int("first_k_dense_replace", 0),
            router="sigmoid" if c.get("scoring_func", "softmax") == "sigmoid" else "softmax",
        )  # fmt: skip
    mtp = c.raw.get("num_nextn_predict_layers")
    if mtp:
        c.notes.append(
            f"{mtp} multi-token-prediction layer(s) not modelled (not used to serve)"
        )
    return _common(
        c, family, num_layers=layers, d_model=d, num_heads=heads, num_kv_heads=heads,
        head_dim=mla.qk_nope_dim + mla.qk_rope_dim, ffn_dim=c.int("intermediate_size"),
        vocab_size=c.int("vocab_size"), max_positions=c.int("max_position_embeddings", 4096),
        position="rotary", mlp="swiglu", norm="rmsnorm", bias=False,
        tied_embeddings=bool(c.get("tie_word_embeddings", False)), mla=mla, moe=moe,
    )  # fmt: skip


def _gpt2(c: _Config, family: str) -> ModelConfig:
    d, heads = c.int("n_embd"), c.int("n_head")
    c.act("activation_function", allowed=("gelu",))
    kv = 1 if family == "gpt_bigcode" and c.get("multi_query", True) else heads
    return _common(
        c, family, num_layers=c.int("n_layer"), d_model=d, num_heads=heads,
        num_kv_heads=kv, head_dim=c.head_dim(d, heads), ffn_dim=c.int("n_inner", 4 * d),
        vocab_size=c.int("vocab_size"), max_positions=c.int("n_positions", 1024),
        position="learned", mlp="gelu", norm="layernorm", bias=True, fused_qkv=True,
        tied_embeddings=bool(c.get("tie_word_embeddings", True)),
    )  # fmt: skip


def _gptj(c: _Config, family: str) -> ModelConfig:
    d, heads = c.int("n_embd"), c.int("n_head")
    c.act("activation_function", allowed=("gelu",))
    return _common(
        c, family, num_layers=c.int("n_layer"), d_model=d, num_heads=heads, num_kv_heads=heads,
        head_dim=c.head_dim(d, heads), ffn_dim=c.int("n_inner", 4 * d),
        vocab_size=c.int("vocab_size"),
        max_positions=c.int("n_positions", 2048), position="rotary", mlp="gelu",
        norm="layernorm", bias=True, attn_bias=False, head_bias=True, parallel_block=True,
        tied_embeddings=bool(c.get("tie_word_embeddings", False)),
    )  # fmt: skip


def _gpt_neox(c: _Config, family: str) -> ModelConfig:
    d, heads = c.int("hidden_size"), c.int("num_attention_heads")
    c.act("hidden_act", allowed=("gelu",))
    parallel = bool(c.get("use_parallel_residual", True))
    return _common(
        c, family, num_layers=c.int("num_hidden_layers"), d_model=d, num_heads=heads,
        num_kv_heads=heads, head_dim=c.head_dim(d, heads), ffn_dim=c.int("intermediate_size"),
        vocab_size=c.int("vocab_size"), max_positions=c.int("max_position_embeddings", 2048),
        position="rotary", mlp="gelu", norm="layernorm", bias=bool(c.get("attention_bias", True)),
        norm_bias=True, fused_qkv=True, parallel_block=parallel, parallel_norms=parallel,
        tied_embeddings=bool(c.get("tie_word_embeddings", False)),
    )  # fmt: skip


def _starcoder2(c: _Config, family: str) -> ModelConfig:
    d, heads = c.int("hidden_size"), c.int("num_attention_heads")
    layers = c.int("num_hidden_layers")
    c.act("hidden_act", allowed=("gelu",))
    c.note_sliding_window(layers)
    return _common(
        c, family, num_layers=layers, d_model=d, num_heads=heads,
        num_kv_heads=c.int("num_key_value_heads", heads), head_dim=c.head_dim(d, heads),
        ffn_dim=c.int("intermediate_size"), vocab_size=c.int("vocab_size"),
        max_positions=c.int("max_position_embeddings", 4096), position="rotary", mlp="gelu",
        norm="layernorm", bias=bool(c.get("use_bias", True)), norm_bias=True,
        tied_embeddings=bool(c.get("tie_word_embeddings", True)),
    )  # fmt: skip


def _opt(c: _Config, family: str) -> ModelConfig:
    d, heads = c.int("hidden_size"), c.int("num_attention_heads")
    if c.int("word_embed_proj_dim", d) != d:
        raise c.refuse("word_embed_proj_dim different from hidden_size (OPT-350m)")
    if not c.get("do_layer_norm_before", True):
        raise c.refuse("post-norm OPT (do_layer_norm_before false)")
    if c.get("activation_function", "relu") != "relu":
        raise c.refuse(f"activation_function {c.get('activation_function')!r}")
    return _common(
        c, family, num_layers=c.int("num_hidden_layers"), d_model=d,
        num_heads=heads, num_kv_heads=heads, head_dim=c.head_dim(d, heads),
        ffn_dim=c.int("ffn_dim"),
        vocab_size=c.int("vocab_size"), max_positions=c.int("max_position_embeddings", 2048),
        pos_offset=2, position="learned", mlp="relu", norm="layernorm",
        bias=bool(c.get("enable_bias", True)),
        tied_embeddings=bool(c.get("tie_word_embeddings", True)),
    )  # fmt: skip


def _falcon(c: _Config, family: str) -> ModelConfig:
    # The first Falcon configs used RW's names (n_head, n_layer, n_head_kv).
    d, heads = c.int("hidden_size"), c.first("num_attention_heads", "n_head")
    new = bool(c.get("new_decoder_architecture", False))
    if c.get("alibi", False):
        raise c.refuse("Falcon with ALiBi")
    c.act("activation", allowed=("gelu",))
    # Falcon-7B's multi_query has one KV head; the new layout states its count.
    multi_query = c.get("multi_query", True)
    kv = c.first("num_kv_heads", "n_head_kv", default=heads) if new else 1 if multi_query else heads
    parallel = new or bool(c.get("parallel_attn", True))
    two_norms = new and c.int("num_ln_in_parallel_attn", 2) == 2
    return _common(
        c, family, num_layers=c.first("num_hidden_layers", "n_layer"), d_model=d,
        num_heads=heads, num_kv_heads=kv, head_dim=c.head_dim(d, heads),
        ffn_dim=c.int("ffn_hidden_size", 4 * d), vocab_size=c.int("vocab_size"),
        max_positions=c.int("max_position_embeddings", 2048), position="rotary", mlp="gelu",
        norm="layernorm", bias=bool(c.get("bias", False)), norm_bias=True, fused_qkv=True,
        parallel_block=parallel, parallel_norms=two_norms,
        tied_embeddings=bool(c.get("tie_word_embeddings", True)),
    )  # fmt: skip


def _bloom(c: _Config, family: str) -> ModelConfig:
    d, heads = c.first("hidden_size", "n_embed"), c.first("n_head", "num_attention_heads")
    if c.get("apply_residual_connection_post_layernorm", False):
        raise c.refuse("apply_residual_connection_post_layernorm")
    return _common(
        c, family, num_layers=c.first("n_layer", "num_hidden_layers"), d_model=d,
        num_heads=heads, num_kv_heads=heads, head_dim=c.head_dim(d, heads), ffn_dim=4 * d,
        vocab_size=c.int("vocab_size"), max_positions=2048, position="alibi", mlp="gelu",
        norm="layernorm", bias=True, fused_qkv=True, embed_norm=True,
        tied_embeddings=bool(c.get("tie_word_embeddings", True)),
    )  # fmt: skip


def _mpt(c: _Config, family: str) -> ModelConfig:
    d, heads = c.int("d_model"), c.int("n_heads")
    attn = c.get("attn_config", {})
    if not isinstance(attn, dict) or not attn.get("alibi", False):
        raise c.refuse("MPT without ALiBi")
    if attn.get("kv_n_heads") not in (None, heads):
        raise c.refuse("MPT with grouped kv heads")
    if not c.get("no_bias", True):
        raise c.refuse("MPT with biases (no_bias false)")
    return _common(
        c, family, num_layers=c.int("n_layers"), d_model=d, num_heads=heads,
        num_kv_heads=heads, head_dim=c.head_dim(d, heads), ffn_dim=c.int("expansion_ratio", 4) * d,
        vocab_size=c.int("vocab_size"), max_positions=c.int("max_seq_len", 2048),
        position="alibi", mlp="gelu", norm="layernorm", bias=False, fused_qkv=True,
        tied_embeddings=True,
    )  # fmt: skip


# model_type -> (config mapping, tensor names).
_FAMILIES: dict[str, tuple[Callable[[_Config, str], ModelConfig], _Names]] = {
    "llama": (_llama_like, _LLAMA),
    "mistral": (_llama_like, _LLAMA),
    "mixtral": (_llama_like, _MIXTRAL),
    "qwen2": (_llama_like, _LLAMA),
    "qwen3": (_llama_like, _LLAMA),
    "qwen2_moe": (_llama_like, _QWEN_MOE),
    "qwen3_moe": (_llama_like, _QWEN_MOE),
    "gemma": (_llama_like, _LLAMA),
    "gemma2": (_llama_like, _GEMMA2),
    "gemma3_text": (_llama_like, _GEMMA2),
    "olmo2": (_olmo2, _OLMO2),
    "phi3": (_phi3, _PHI3),
    "deepseek_v2": (_deepseek, _DEEPSEEK),
    "deepseek_v3": (_deepseek, _DEEPSEEK),
    "starcoder2": (_starcoder2, _STARCODER2),
    "gpt2": (_gpt2, _GPT2),
    "gpt_bigcode": (_gpt2, _GPT_BIGCODE),
    "gptj": (_gptj, _GPTJ),
    "gpt_neox": (_gpt_neox, _GPT_NEOX),
    "opt": (_opt, _OPT),
    "falcon": (_falcon, _FALCON),
    "bloom": (_bloom, _BLOOM),
    "mpt": (_mpt, _MPT),
}
SUPPORTED = tuple(_FAMILIES)


def model_config(directory: Path) -> tuple[ModelConfig, dict]:
    """The zoo configuration ``directory/config.json`` describes, and the raw config."""
    where = directory.name or str(directory)
    path = directory / "config.json"
    try:
        raw = json.loads(path.read_text())
    except OSError as err:
        raise ModelError(
            f"checkpoint {directory}: cannot read config.json ({err.strerror})"
        ) from None
    except ValueError as err:
        raise ModelError(f"checkpoint {path}: not JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ModelError(f"checkpoint {path}: not a JSON object")
    return config_from_dict(raw, where, f"checkpoint {directory}"), raw


def config_from_dict(raw: dict, name: str, where: str) -> ModelConfig:
    """The zoo configuration a config.json-shaped ``raw`` describes (named ``name``;
    errors start with ``where``). The GGUF frontend builds ``raw`` from its metadata."""
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or model_type not in _FAMILIES:
        archs = raw.get("architectures")
        named = f" ({', '.join(map(str, archs))})" if isinstance(archs, list) and archs else ""
        what = ("config.json gives no model_type" if model_type is None
                else f"unsupported architecture {model_type!r}")
        raise ModelError(f"{where}: {what}{named}; supported model_type: {', '.join(SUPPORTED)}")
    build, _ = _FAMILIES[model_type]
    config = _Config(raw, name)
    try:
        cfg = build(config, model_type)
        return replace(cfg, notes="; ".join(config.notes))
    except ChipletcError:
        raise
    except (TypeError, ValueError) as err:
        raise ModelError(f"{where}: malformed config ({err})") from None


def lower_checkpoint(directory: Path) -> Graph:
    """Lower a Hugging Face checkpoint directory to a verified Graph (weights unread).

    Weight names are the checkpoint's; dtypes and bytes come from the safetensors
    headers when present, else from the config's ``torch_dtype`` (bf16 if absent).
    A weight the checkpoint lacks raises ``ModelError``; a checkpoint tensor the
    architecture does not use is listed in ``ModelInfo.unplaced`` with its bytes (and
    in no plan); known non-weight buffers (rotary ``inv_freq``, GPT-2's attention masks,
    a stored copy of a tied head) are ignored and noted.
    """
    cfg, raw = model_config(directory)
    names = _FAMILIES[cfg.family][1]
    if cfg.family == "falcon" and cfg.parallel_norms:
        names = _FALCON_NEW
    weights = _Weights(f"checkpoint {directory}", cfg, raw, names, read_checkpoint(directory))
    return lower_mapped(cfg, weights, "hf", f"config.json model_type {cfg.family}")


def lower_mapped(cfg: ModelConfig, weights: _Weights, frontend: str, source: str) -> Graph:
    """The zoo module of ``cfg`` lowered, its weights renamed and sized by ``weights``;
    ``source`` says what was mapped onto the zoo definition."""
    graph = replace_weights(_lower_zoo(cfg), weights.of)
    notes = weights.reconcile()
    graph.info = replace(
        graph.info, frontend=frontend, notes=notes, unplaced=weights.unplaced,
        recogniser=f"{source} mapped onto the zoo definition, then the "
        f"{graph.info.recogniser}",
    )  # fmt: skip
    return graph


@lru_cache(maxsize=4)
def _lower_zoo(cfg: ModelConfig) -> Graph:
    """The zoo module of ``cfg``, lowered (kept for a checkpoint read again with other
    headers; callers copy it through ``replace_weights``, never change it)."""
    return lower_module(zoo.build(cfg), cfg.name, max_positions=cfg.max_positions)


class _Weights:
    """Zoo weights -> checkpoint tensors, keeping count of what was matched.

    ``header`` holds every tensor of the weight files (None: there are none, bytes
    follow the config's dtype); ``stacked_experts``: one tensor per expert kind holds all
    experts (GGUF), rather than one per expert (Hugging Face).
    """

    def __init__(
        self,
        where: str,
        cfg: ModelConfig,
        raw: dict,
        names: _Names,
        header: dict[str, TensorEntry] | None,
        source: str = "config.json",
        stacked_experts: bool = False,
    ) -> None:
        self.where, self.source, self.stacked = where, source, stacked_experts
        self.cfg, self.names, self.header = cfg, names, header
        dtype = raw.get("torch_dtype") or raw.get("dtype") or "bfloat16"
        self.dtype = parse_dtype(str(dtype)) if header is None else DType.BF16
        quant = raw.get("quantization_config") or {}
        self.bits = quant.get("bits") if isinstance(quant, dict) else None
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.unplaced: tuple[tuple[str, int], ...] = ()
        self.quantized = 0

    def hf_names(self, w: Weight) -> list[tuple[str, tuple[int, ...]]]:
        """The checkpoint tensors (name, shape) that hold zoo weight ``w``."""
        module, _, leaf = w.name.rpartition(".")
        n = self.names
        if module in n.top:
            return [(f"{n.top[module]}.{leaf}", w.shape)]
        _, layer, rest = module.split(".", 2)
        prefix = f"{n.layers}.{layer}"
        experts = dict(n.expert_leaves)
        if leaf in experts and self.stacked:
            shape = (w.shape[0], *reversed(w.shape[1:]))
            return [(f"{prefix}.{experts[leaf]}.weight", shape)]
        if leaf in experts:
            shape = tuple(reversed(w.shape[1:]))
            return [
                (f"{prefix}.{n.experts}.{e}.{experts[leaf]}.weight", shape)
                for e in range(w.shape[0])
            ]
        shape = tuple(reversed(w.shape)) if rest in n.transposed else w.shape
        return [(f"{prefix}.{n.block[rest]}.{leaf}", shape)]

    def of(self, w: Weight) -> tuple[Weight, ...]:
        return tuple(self._one(name, shape) for name, shape in self.hf_names(w))

    def _one(self, name: str, shape: tuple[int, ...]) -> Weight:
        if self.header is None:
            return Weight(name, shape, self.dtype)
        base = name.removesuffix(".weight")
        parts = [
            e
            for e in (self.header.get(f"{base}.{p}") for p in sorted(_QUANT_PARTS))
            if e is not None
        ]
        main = self.header.get(name)
        alias = dict(self.names.aliases).get(name)
        if main is None and alias in self.header:
            name, main = alias, self.header[alias]
        if main is None and not parts:
            self.missing.append(name)
            return Weight(name, shape, self.dtype)
        group = [main, *parts] if main is not None else parts
        self.used.update(e.name for e in group)
        numel = prod(shape)
        stored = sum(e.nbytes for e in group)
        if main is not None and not parts and main.dtype in _FLOAT_DTYPES:
            if main.shape != shape:
                raise ModelError(
                    f"{self.where}: tensor {name} is {list(main.shape)} in {main.file}; "
                    f"{self.source} implies {list(shape)}"
                )
            return Weight(name, shape, _FLOAT_DTYPES[main.dtype], stored)
        packed = main if main is not None else max(parts, key=lambda e: e.nbytes)
        bits = self.bits or round(8 * packed.nbytes / max(numel, 1))
        self.quantized += 1
        if packed.dtype.startswith("F8") and main is not None:
            return Weight(name, shape, DType.FP8, stored)
        return Weight(name, shape, DType.INT4 if bits <= 4 else DType.INT8, stored)

    def reconcile(self) -> str:
        """Check that checkpoint and config agree; say what was ignored or quantized, and
        what the mapping left out of the config (``ModelConfig.notes``)."""
        return "; ".join(filter(None, (self._reconcile(), self.cfg.notes)))

    def _reconcile(self) -> str:
        fam = self.cfg.family
        if self.header is None:
            return f"{self.source} mapped onto the zoo {fam} definition; no weights: {self.dtype}"
        if self.missing:
            raise ModelError(
                f"{self.where}: {len(self.missing)} weights {self.source} implies are not in the "
                f"checkpoint ({', '.join(self.missing[:4])}); config and weights disagree"
            )
        rest = sorted(set(self.header) - self.used)
        ignored = [n for n in rest if _BUFFERS.search(n) or (n == "lm_head.weight" and self._tied)]
        self.unplaced = tuple((n, self.header[n].nbytes) for n in rest if n not in ignored)
        files = sorted({e.file for e in self.header.values()})
        out = f"{self.source} mapped onto the zoo {fam} definition; {len(self.used)} tensors "
        out += f"from {', '.join(files)}"
        if self.quantized:
            out += f"; {self.quantized} quantized weights counted with their scales and zeros"
        if ignored:
            out += f"; ignored {len(ignored)} non-weight tensors ({', '.join(ignored[:3])})"
        if self.unplaced:
            names = ", ".join(n for n, _ in self.unplaced[:3])
            out += (
                f"; {len(self.unplaced)} tensors the {fam} architecture does not use are not "
                f"placed ({names}{', ...' if len(self.unplaced) > 3 else ''})"
            )
        return out

    @property
    def _tied(self) -> bool:
        return self.cfg.tied_embeddings

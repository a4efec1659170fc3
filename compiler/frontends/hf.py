"""The Hugging Face frontend: a checkpoint directory to the IR, without loading weights.

A directory holds ``config.json`` and optionally ``model.safetensors`` or a sharded
``model.safetensors.index.json``. The config is mapped onto a zoo ``ModelConfig``
(every field that changes a weight shape or a cost is read; what the zoo cannot express
is refused, never approximated), the zoo module is lowered by the torch.fx path, and
each weight is then renamed to its Hugging Face tensor name and given the dtype and
exact byte count of the safetensors header (``safetensors_header``).

Why the zoo and not transformers on the meta device plus torch.export: the zoo traces
in well under a second at any size, needs no optional package, and its MoE is written
densely, whereas transformers' experts loop over the experts a batch hits, which
torch.export cannot trace without data. The tests hold the mapping to transformers'
own modules (tensor names, shapes, totals) where transformers is installed.

Quantized checkpoints: a weight stored as ``X.qweight`` (GPTQ/AWQ), ``X.weight`` of
int8/uint8/fp8 (bitsandbytes, fp8), or ``X.weight_packed`` (compressed-tensors) counts
the bytes of the packed tensor plus its scales, zeros and group indices, which are real
memory; its IR dtype is int4 or int8 by the bits per logical element.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from math import prod
from pathlib import Path

from chipletc.ir.dtypes import DType, parse_dtype
from chipletc.ir.errors import ChipletcError, ModelError
from chipletc.ir.graph import Graph
from chipletc.ir.op import Weight
from chipletc.models import zoo
from chipletc.models.config import ModelConfig, MoEConfig

from .fx import lower_module, replace_weights
from .safetensors_header import TensorEntry, read_checkpoint

__all__ = ["SUPPORTED", "lower_checkpoint", "model_config"]


@dataclass(frozen=True)
class _Names:
    """How a family names its tensors: zoo module path -> Hugging Face module path."""

    top: dict[str, str]
    layers: str
    block: dict[str, str]
    transposed: frozenset[str] = frozenset()  # stored (in, out): GPT-2's Conv1D
    experts: str = ""


_LLAMA_BLOCK = {
    "norm1": "input_layernorm",
    "attn.q": "self_attn.q_proj",
    "attn.k": "self_attn.k_proj",
    "attn.v": "self_attn.v_proj",
    "attn.proj": "self_attn.o_proj",
    "norm2": "post_attention_layernorm",
    "mlp.gate": "mlp.gate_proj",
    "mlp.up": "mlp.up_proj",
    "mlp.down": "mlp.down_proj",
    "mlp.router": "block_sparse_moe.gate",
}
_LLAMA = _Names(
    {"tok": "model.embed_tokens", "norm": "model.norm", "head": "lm_head"},
    "model.layers",
    _LLAMA_BLOCK,
    experts="block_sparse_moe.experts",
)
_GPT2 = _Names(
    {"tok": "transformer.wte", "pos": "transformer.wpe", "norm": "transformer.ln_f",
     "head": "lm_head"},
    "transformer.h",
    {"norm1": "ln_1", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "norm2": "ln_2",
     "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"},
    frozenset({"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"}),
)  # fmt: skip
_OPT = _Names(
    {"tok": "model.decoder.embed_tokens", "pos": "model.decoder.embed_positions",
     "norm": "model.decoder.final_layer_norm", "head": "lm_head"},
    "model.decoder.layers",
    {"norm1": "self_attn_layer_norm", "attn.q": "self_attn.q_proj", "attn.k": "self_attn.k_proj",
     "attn.v": "self_attn.v_proj", "attn.proj": "self_attn.out_proj",
     "norm2": "final_layer_norm", "mlp.fc1": "fc1", "mlp.fc2": "fc2"},
)  # fmt: skip
_FALCON = _Names(
    {"tok": "transformer.word_embeddings", "norm": "transformer.ln_f", "head": "lm_head"},
    "transformer.h",
    {"norm1": "input_layernorm", "norm2": "post_attention_layernorm",
     "attn.qkv": "self_attention.query_key_value", "attn.proj": "self_attention.dense",
     "mlp.fc1": "mlp.dense_h_to_4h", "mlp.fc2": "mlp.dense_4h_to_h"},
)  # fmt: skip
# Stacked zoo expert tensor -> the per-expert Hugging Face (Mixtral) name.
_EXPERT_LEAVES = {"w_gate": "w1", "w_up": "w3", "w_down": "w2"}
# Tensors checkpoints carry that are not weights of the model: ignored, and said so.
_BUFFERS = re.compile(r"(\.rotary_emb\.inv_freq|\.attn\.bias|\.attn\.masked_bias)$")
# Companions of a quantized weight ``X.weight``, stored as ``X.<suffix>``.
_QUANT_PARTS = frozenset(
    {"qweight", "qzeros", "scales", "g_idx", "SCB", "weight_format", "weight_scale",
     "weight_scale_inv", "input_scale", "weight_zero_point", "weight_packed", "weight_shape",
     "weight_global_scale"}
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
    **dict.fromkeys(("hidden_size", "n_embd", "word_embed_proj_dim"), (1, 1 << 17)),
    **dict.fromkeys(("num_hidden_layers", "n_layer"), (1, 256)),
    **dict.fromkeys(
        ("num_attention_heads", "n_head", "num_key_value_heads", "num_kv_heads"), (1, 4096)
    ),
    "head_dim": (1, 8192),
    **dict.fromkeys(("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size"), (1, 1 << 20)),
    "vocab_size": (1, 1 << 22),
    **dict.fromkeys(("max_position_embeddings", "n_positions"), (1, 1 << 24)),
    **dict.fromkeys(("num_local_experts", "num_experts_per_tok"), (1, 1024)),
}


class _Config:
    """config.json with lookups that fail as one clear line."""

    def __init__(self, raw: dict, where: str) -> None:
        self.raw, self.where = raw, where

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

    def refuse(self, what: str) -> ModelError:
        return ModelError(f"{self.where}: {what} is not supported by the zoo definition")


def _llama_like(c: _Config, family: str) -> ModelConfig:
    d, heads = c.int("hidden_size"), c.int("num_attention_heads")
    attn_bias, mlp_bias = bool(c.get("attention_bias", False)), bool(c.get("mlp_bias", False))
    if attn_bias != mlp_bias:
        raise c.refuse("attention_bias without mlp_bias (or the reverse)")
    if c.get("hidden_act", "silu") not in ("silu", "swish"):
        raise c.refuse(f"hidden_act {c.get('hidden_act')!r}")
    moe = None
    if family == "mixtral":
        moe = MoEConfig(
            num_experts=c.int("num_local_experts"),
            top_k=c.int("num_experts_per_tok"),
            expert_ffn_dim=c.int("intermediate_size"),
        )
    return ModelConfig(
        name=c.where, family=family, num_layers=c.int("num_hidden_layers"), d_model=d,
        num_heads=heads, num_kv_heads=c.int("num_key_value_heads", heads),
        head_dim=c.int("head_dim", d // heads), ffn_dim=c.int("intermediate_size"),
        vocab_size=c.int("vocab_size"), max_positions=c.int("max_position_embeddings", 4096),
        position="rotary", mlp="swiglu", norm="rmsnorm", bias=attn_bias,
        qkv_bias=family == "qwen2", tied_embeddings=bool(c.get("tie_word_embeddings", False)),
        moe=moe, published_params=0.0, source=f"{c.where}/config.json",
    )  # fmt: skip


def _gpt2(c: _Config, family: str) -> ModelConfig:
    d, heads = c.int("n_embd"), c.int("n_head")
    if not str(c.get("activation_function", "gelu_new")).startswith("gelu"):
        raise c.refuse(f"activation_function {c.get('activation_function')!r}")
    return ModelConfig(
        name=c.where, family=family, num_layers=c.int("n_layer"), d_model=d, num_heads=heads,
        num_kv_heads=heads, head_dim=d // heads, ffn_dim=c.int("n_inner", 4 * d),
        vocab_size=c.int("vocab_size"), max_positions=c.int("n_positions", 1024),
        position="learned", mlp="gelu", norm="layernorm", bias=True, fused_qkv=True,
        tied_embeddings=bool(c.get("tie_word_embeddings", True)), published_params=0.0,
        source=f"{c.where}/config.json",
    )  # fmt: skip


def _opt(c: _Config, family: str) -> ModelConfig:
    d, heads = c.int("hidden_size"), c.int("num_attention_heads")
    if c.int("word_embed_proj_dim", d) != d:
        raise c.refuse("word_embed_proj_dim different from hidden_size (OPT-350m)")
    if not c.get("do_layer_norm_before", True):
        raise c.refuse("post-norm OPT (do_layer_norm_before false)")
    if c.get("activation_function", "relu") != "relu":
        raise c.refuse(f"activation_function {c.get('activation_function')!r}")
    return ModelConfig(
        name=c.where, family=family, num_layers=c.int("num_hidden_layers"), d_model=d,
        num_heads=heads, num_kv_heads=heads, head_dim=d // heads, ffn_dim=c.int("ffn_dim"),
        vocab_size=c.int("vocab_size"), max_positions=c.int("max_position_embeddings", 2048),
        pos_offset=2, position="learned", mlp="relu", norm="layernorm",
        bias=bool(c.get("enable_bias", True)),
        tied_embeddings=bool(c.get("tie_word_embeddings", True)), published_params=0.0,
        source=f"{c.where}/config.json",
    )  # fmt: skip


def _falcon(c: _Config, family: str) -> ModelConfig:
    d, heads = c.int("hidden_size"), c.int("num_attention_heads")
    if c.get("new_decoder_architecture", False):
        raise c.refuse("Falcon's new_decoder_architecture (two norms per parallel block)")
    if c.get("alibi", False):
        raise c.refuse("Falcon with ALiBi")
    if c.get("activation", "gelu") != "gelu":
        raise c.refuse(f"activation {c.get('activation')!r}")
    kv = 1 if c.get("multi_query", True) else c.int("num_kv_heads", heads)
    return ModelConfig(
        name=c.where, family=family, num_layers=c.int("num_hidden_layers"), d_model=d,
        num_heads=heads, num_kv_heads=kv, head_dim=d // heads,
        ffn_dim=c.int("ffn_hidden_size", 4 * d), vocab_size=c.int("vocab_size"),
        max_positions=c.int("max_position_embeddings", 2048), position="rotary", mlp="gelu",
        norm="layernorm", bias=bool(c.get("bias", False)), norm_bias=True, fused_qkv=True,
        parallel_block=bool(c.get("parallel_attn", True)),
        tied_embeddings=bool(c.get("tie_word_embeddings", True)), published_params=0.0,
        source=f"{c.where}/config.json",
    )  # fmt: skip


# model_type -> (config mapping, tensor names).
_FAMILIES: dict[str, tuple[Callable[[_Config, str], ModelConfig], _Names]] = {
    "llama": (_llama_like, _LLAMA),
    "mistral": (_llama_like, _LLAMA),
    "mixtral": (_llama_like, _LLAMA),
    "qwen2": (_llama_like, _LLAMA),
    "gpt2": (_gpt2, _GPT2),
    "opt": (_opt, _OPT),
    "falcon": (_falcon, _FALCON),
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
    model_type = raw.get("model_type")
    if model_type not in _FAMILIES:
        raise ModelError(
            f"checkpoint {directory}: unsupported architecture {model_type!r} "
            f"({', '.join(raw.get('architectures') or [])}); supported model_type: "
            f"{', '.join(SUPPORTED)}"
        )
    build, _ = _FAMILIES[model_type]
    try:
        return build(_Config(raw, where), model_type), raw
    except ChipletcError:
        raise
    except (TypeError, ValueError) as err:
        raise ModelError(f"checkpoint {path}: malformed config ({err})") from None


def lower_checkpoint(directory: Path) -> Graph:
    """Lower a Hugging Face checkpoint directory to a verified Graph (weights unread).

    Weight names are the checkpoint's; dtypes and bytes come from the safetensors
    headers when present, else from the config's ``torch_dtype`` (bf16 if absent).
    A checkpoint tensor the architecture does not use, or a weight the checkpoint
    lacks, raises ``ModelError``; known non-weight buffers (rotary ``inv_freq``, GPT-2's
    attention masks, a stored copy of a tied head) are ignored and noted.
    """
    cfg, raw = model_config(directory)
    graph = lower_module(zoo.build(cfg), cfg.name, max_positions=cfg.max_positions)
    header = read_checkpoint(directory)
    names = _FAMILIES[cfg.family][1]
    weights = _Weights(directory, cfg, raw, names, header)
    graph = replace_weights(graph, weights.of)
    graph.info = replace(graph.info, frontend="hf", notes=weights.reconcile())
    return graph


class _Weights:
    """Zoo weights -> checkpoint tensors, keeping count of what was matched."""

    def __init__(
        self,
        directory: Path,
        cfg: ModelConfig,
        raw: dict,
        names: _Names,
        header: dict[str, TensorEntry] | None,
    ) -> None:
        self.where = f"checkpoint {directory}"
        self.cfg, self.names, self.header = cfg, names, header
        dtype = raw.get("torch_dtype") or raw.get("dtype") or "bfloat16"
        self.dtype = parse_dtype(str(dtype)) if header is None else DType.BF16
        quant = raw.get("quantization_config") or {}
        self.bits = quant.get("bits") if isinstance(quant, dict) else None
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.quantized = 0

    def hf_names(self, w: Weight) -> list[tuple[str, tuple[int, ...]]]:
        """The checkpoint tensors (name, shape) that hold zoo weight ``w``."""
        module, _, leaf = w.name.rpartition(".")
        n = self.names
        if module in n.top:
            return [(f"{n.top[module]}.{leaf}", w.shape)]
        _, layer, rest = module.split(".", 2)
        prefix = f"{n.layers}.{layer}"
        if leaf in _EXPERT_LEAVES:
            shape = tuple(reversed(w.shape[1:]))
            return [
                (f"{prefix}.{n.experts}.{e}.{_EXPERT_LEAVES[leaf]}.weight", shape)
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
                    f"config.json implies {list(shape)}"
                )
            return Weight(name, shape, _FLOAT_DTYPES[main.dtype], stored)
        packed = main if main is not None else max(parts, key=lambda e: e.nbytes)
        bits = self.bits or round(8 * packed.nbytes / max(numel, 1))
        self.quantized += 1
        if packed.dtype.startswith("F8") and main is not None:
            return Weight(name, shape, DType.FP8, stored)
        return Weight(name, shape, DType.INT4 if bits <= 4 else DType.INT8, stored)

    def reconcile(self) -> str:
        """Check that checkpoint and config agree; say what was ignored or quantized."""
        fam = self.cfg.family
        if self.header is None:
            return f"config.json mapped onto the zoo {fam} definition; no safetensors: {self.dtype}"
        if self.missing:
            raise ModelError(
                f"{self.where}: {len(self.missing)} weights config.json implies are not in the "
                f"checkpoint ({', '.join(self.missing[:4])}); config and weights disagree"
            )
        rest = sorted(set(self.header) - self.used)
        ignored = [n for n in rest if _BUFFERS.search(n) or (n == "lm_head.weight" and self._tied)]
        unused = [n for n in rest if n not in ignored]
        if unused:
            raise ModelError(
                f"{self.where}: {len(unused)} checkpoint tensors the {fam} architecture does "
                f"not use ({', '.join(unused[:4])}); check config.json"
            )
        files = sorted({e.file for e in self.header.values()})
        out = f"config.json mapped onto the zoo {fam} definition; {len(self.used)} tensors "
        out += f"from {', '.join(files)}"
        if self.quantized:
            out += f"; {self.quantized} quantized weights counted with their scales and zeros"
        if ignored:
            out += f"; ignored {len(ignored)} non-weight tensors ({', '.join(ignored[:3])})"
        return out

    @property
    def _tied(self) -> bool:
        return self.cfg.tied_embeddings

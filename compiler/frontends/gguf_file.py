"""The GGUF frontend: a llama.cpp ``.gguf`` file to the IR, from its header alone.

The ``gguf`` package reads the metadata and the tensor infos (name, ggml type, shape,
byte count); the file is memory-mapped and its tensor data never touched. The
architecture comes from ``general.architecture`` and the sizes from its keys
(``{arch}.embedding_length``, ``.block_count``, ``.attention.head_count`` ...), which
are turned into the config.json a Hugging Face checkpoint of that family would carry
and mapped onto the zoo by the same code (``hf``). Weights take the GGUF tensor names
(``blk.0.attn_q.weight``) and the exact bytes of their ggml type: Q4_K, Q5_K, Q6_K,
Q8_0 and the rest are block formats with per-block scales, so a Q4_K weight costs 4.5
bits per element, not 4. Its IR dtype is the nearest that holds it: int4 up to 4.5 bits
per element, int8 above (bytes stay exact).

Shapes: ggml lists dimensions innermost first; they are reversed to torch's order.
Experts are stacked, one tensor per projection for all experts (``ffn_gate_exps``).
"""

from __future__ import annotations

from pathlib import Path

from chipletc.ir.errors import ModelError
from chipletc.ir.graph import Graph

from .hf import _Names, _Weights, config_from_dict, lower_mapped
from .safetensors_header import TensorEntry

__all__ = ["GGUF_ARCHITECTURES", "lower_gguf", "read_gguf"]

# general.architecture -> the Hugging Face model_type of that family.
GGUF_ARCHITECTURES = {
    "llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe", "gemma": "gemma", "gemma2": "gemma2", "gemma3": "gemma3_text",
    "phi3": "phi3", "olmo2": "olmo2", "starcoder2": "starcoder2", "gpt2": "gpt2",
}  # fmt: skip

# Zoo module path -> llama.cpp's tensor name (its gguf-py TensorNameMap), per family
# the same: a family uses the subset its modules have.
_NAMES = _Names(
    {"tok": "token_embd", "pos": "position_embd", "norm": "output_norm", "head": "output"},
    "blk",
    {"norm1": "attn_norm", "norm2": "ffn_norm", "post1": "post_attention_norm",
     "post2": "post_ffw_norm", "attn.q": "attn_q", "attn.k": "attn_k", "attn.v": "attn_v",
     "attn.qkv": "attn_qkv", "attn.proj": "attn_output", "attn.q_norm": "attn_q_norm",
     "attn.k_norm": "attn_k_norm", "mlp.gate": "ffn_gate", "mlp.up": "ffn_up",
     "mlp.down": "ffn_down", "mlp.gate_up": "ffn_up", "mlp.fc1": "ffn_up",
     "mlp.fc2": "ffn_down", "mlp.router": "ffn_gate_inp", "mlp.shared.gate": "ffn_gate_shexp",
     "mlp.shared.up": "ffn_up_shexp", "mlp.shared.down": "ffn_down_shexp",
     "mlp.shared_gate": "ffn_gate_inp_shexp"},
    expert_leaves=(("w_gate", "ffn_gate_exps"), ("w_up", "ffn_up_exps"),
                   ("w_down", "ffn_down_exps")),
)  # fmt: skip

# config.json field <- GGUF key under ``{arch}.``
_KEYS = {
    "hidden_size": "embedding_length", "n_embd": "embedding_length",
    "num_hidden_layers": "block_count", "n_layer": "block_count",
    "intermediate_size": "feed_forward_length", "n_inner": "feed_forward_length",
    "num_attention_heads": "attention.head_count", "n_head": "attention.head_count",
    "num_key_value_heads": "attention.head_count_kv",
    "max_position_embeddings": "context_length", "n_positions": "context_length",
    "head_dim": "attention.key_length", "sliding_window": "attention.sliding_window",
    "num_local_experts": "expert_count", "num_experts": "expert_count",
    "num_experts_per_tok": "expert_used_count",
    "moe_intermediate_size": "expert_feed_forward_length",
    "shared_expert_intermediate_size": "expert_shared_feed_forward_length",
}  # fmt: skip


def read_gguf(path: Path) -> tuple[dict[str, object], dict[str, TensorEntry]]:
    """The metadata (key -> value; arrays left out, e.g. the tokenizer's vocabulary) and
    the tensors of a GGUF file, shapes in torch order."""
    where = f"model {path}"
    try:
        from gguf import GGUFReader, GGUFValueType
    except ImportError:
        raise ModelError(
            f"{where}: reading GGUF needs the gguf package (pip install 'chipletc[hf]')"
        ) from None
    try:
        reader = GGUFReader(path)
    except OSError as err:
        raise ModelError(f"{where}: cannot be read ({err.strerror or err})") from None
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise ModelError(f"{where}: not a GGUF file ({err})") from None
    meta = {
        name: field.contents()
        for name, field in reader.fields.items()
        if field.types and field.types[0] is not GGUFValueType.ARRAY
    }
    tensors = {}
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape))
        tensors[t.name] = TensorEntry(t.name, t.tensor_type.name, shape, int(t.n_bytes), path.name)
    return meta, tensors


def lower_gguf(path: Path) -> Graph:
    """Lower a GGUF file to a verified Graph (tensor data unread); ``ModelError`` when
    the file is not GGUF, its architecture is not mapped, or its tensors disagree with
    its metadata."""
    meta, tensors = read_gguf(path)
    arch = meta.get("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise ModelError(
            f"model {path}: unsupported GGUF architecture {arch!r}; supported: "
            f"{', '.join(GGUF_ARCHITECTURES)}"
        )
    raw = _config(meta, str(arch), tensors)
    cfg = config_from_dict(raw, path.stem, f"model {path}")
    weights = _Weights(
        f"model {path}", cfg, raw, _NAMES, tensors, f"GGUF metadata ({arch})",
        stacked_experts=True,
    )  # fmt: skip
    return lower_mapped(cfg, weights, "gguf", f"GGUF general.architecture {arch}")


def _config(meta: dict[str, object], arch: str, tensors: dict[str, TensorEntry]) -> dict:
    """The config.json of the Hugging Face family ``arch`` stands for."""
    model_type = GGUF_ARCHITECTURES[arch]
    if model_type == "llama" and meta.get(f"{arch}.expert_count"):
        model_type = "mixtral"  # llama.cpp writes Mixtral as llama with experts
    raw: dict[str, object] = {"model_type": model_type}
    for key, gguf_key in _KEYS.items():
        value = meta.get(f"{arch}.{gguf_key}")
        if value is not None:
            raw[key] = value
    embedding = tensors.get("token_embd.weight")
    if embedding is None:
        raise ModelError(f"GGUF {arch}: no token_embd.weight tensor")
    raw["vocab_size"] = embedding.shape[0]
    raw["tie_word_embeddings"] = "output.weight" not in tensors
    if model_type == "qwen2_moe" and "shared_expert_intermediate_size" not in raw:
        raw["shared_expert_intermediate_size"] = 0
    return raw

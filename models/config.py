"""The one configuration type of the model zoo.

A ``ModelConfig`` states every trait the torch definition in ``transformer.py`` needs
(position scheme, attention variant, MLP kind, norm, block layout, MoE and MLA
shapes), plus the published parameter count and its source so tests can hold the
definition to the paper. Constructing one validates it; nothing is derived here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from chipletc.ir.errors import ModelError

__all__ = ["MLAConfig", "MoEConfig", "ModelConfig"]

Position = Literal["learned", "rotary", "alibi", "relative"]
MLPKind = Literal["gelu", "relu", "swiglu", "geglu"]
NormKind = Literal["layernorm", "rmsnorm"]
RouterKind = Literal["softmax", "sigmoid"]
SublayerNorms = Literal["pre", "post", "both"]
QKNorm = Literal["none", "head", "full"]


@dataclass(frozen=True)
class MLAConfig:
    """Multi-head latent attention (DeepSeek-V2/V3): low-rank Q and KV projections.

    Each token caches the compressed latent (``kv_lora_rank``) plus the shared rotary
    key (``qk_rope_dim``); keys and values are re-expanded per head from it. A
    ``q_lora_rank`` of 0 projects queries directly (DeepSeek-V2-Lite).
    """

    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_dim: int
    qk_rope_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class MoEConfig:
    """A mixture-of-experts FFN: ``num_experts`` SwiGLU experts, ``top_k`` per token.

    ``num_shared_experts`` always-on experts of the same width run beside the routed
    ones (``shared_ffn_dim`` wide together when given, Qwen2-MoE; else
    ``num_shared_experts x expert_ffn_dim``), scaled by a sigmoid gate when
    ``shared_gate``; the first ``first_dense_layers`` blocks keep a dense FFN of ``ffn_dim``.
    """

    num_experts: int
    top_k: int
    expert_ffn_dim: int
    num_shared_experts: int = 0
    first_dense_layers: int = 0
    router: RouterKind = "softmax"
    shared_ffn_dim: int = 0
    shared_gate: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only transformer, as its paper describes it.

    ``bias`` covers the linear layers and the LayerNorm shifts (PaLM has neither);
    ``qkv_bias`` adds biases to the Q, K and V projections only (Qwen2); ``norm_bias``
    overrides ``bias`` for the LayerNorm shifts (Falcon: bias-free linears, biased
    norms); ``attn_bias`` overrides ``bias`` for the attention projections (GPT-J:
    bias-free attention, biased MLP); ``pos_offset`` is the number of extra learned
    position rows (OPT keeps 2). ``parallel_norms`` gives a parallel block one norm
    per branch (GPT-NeoX, Falcon-40B); ``sublayer_norms`` puts the norms before each
    sublayer (``pre``), on its output before the residual add (``post``, OLMo 2) or
    both (Gemma 2/3); ``qk_norm`` normalises queries and keys per head (Qwen3, Gemma 3)
    or over all heads (OLMo 2); ``fused_gate_up`` stores the SwiGLU gate and up
    projections as one matrix (Phi-3).
    """

    name: str
    family: str
    num_layers: int
    d_model: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_dim: int
    vocab_size: int
    max_positions: int
    position: Position
    mlp: MLPKind
    norm: NormKind
    bias: bool
    tied_embeddings: bool
    published_params: float
    source: str
    published_active_params: float | None = None
    parallel_block: bool = False
    fused_qkv: bool = False
    qkv_bias: bool = False
    norm_bias: bool | None = None
    embed_norm: bool = False
    pos_offset: int = 0
    attn_bias: bool | None = None
    head_bias: bool = False
    parallel_norms: bool = False
    sublayer_norms: SublayerNorms = "pre"
    qk_norm: QKNorm = "none"
    fused_gate_up: bool = False
    mla: MLAConfig | None = None
    moe: MoEConfig | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        sizes = ("num_layers", "d_model", "num_heads", "num_kv_heads", "head_dim", "ffn_dim")
        bad = [f for f in (*sizes, "vocab_size", "max_positions") if getattr(self, f) < 1]
        if bad:
            raise ModelError(f"model {self.name!r}: {', '.join(bad)} must be positive")
        if self.num_heads % self.num_kv_heads:
            raise ModelError(
                f"model {self.name!r}: {self.num_heads} heads not divisible by "
                f"{self.num_kv_heads} kv heads"
            )
        if self.moe is not None and not 0 < self.moe.top_k <= self.moe.num_experts:
            raise ModelError(f"model {self.name!r}: top_k must be in 1..num_experts")
        if self.parallel_norms and not self.parallel_block:
            raise ModelError(f"model {self.name!r}: parallel_norms needs a parallel block")
        if self.fused_gate_up and self.mlp not in ("swiglu", "geglu"):
            raise ModelError(f"model {self.name!r}: fused_gate_up needs a gated MLP")
        if self.mla is not None and self.fused_qkv:
            raise ModelError(f"model {self.name!r}: MLA has no fused QKV projection")

    def is_moe_layer(self, layer: int) -> bool:
        return self.moe is not None and layer >= self.moe.first_dense_layers

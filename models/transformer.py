"""Torch definitions of the decoder-only transformer families in the zoo.

One ``Transformer`` covers them all, switched by ``ModelConfig``: learned, rotary,
ALiBi or relative positions; MHA, GQA, MQA or MLA attention, with or without query
and key norms; GELU, ReLU, SwiGLU or GeGLU MLPs; serial or parallel blocks with norms
before, after or around each sublayer; LayerNorm or RMSNorm; dense or
mixture-of-experts FFNs.
Modules are meant to be built on the meta device and traced, never run on data:
every forward is free of data-dependent Python control flow so ``torch.fx`` can
trace it, and tensors created inside ``forward`` follow the input's device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import MLAConfig, ModelConfig, MoEConfig

__all__ = ["Transformer"]

Positions = dict[str, torch.Tensor]  # per-forward position tables shared by all blocks


def _norm(cfg: ModelConfig, width: int) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(width)
    return nn.LayerNorm(width, bias=cfg.bias if cfg.norm_bias is None else cfg.norm_bias)


def _rotary_tables(dim: int, max_positions: int, base: float = 10000.0) -> torch.Tensor:
    """RoPE angles [max_positions, dim] (the two halves repeat, as rotate-half expects)."""
    inv = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv)
    return torch.cat([angles, angles], dim=-1)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply rotary position embedding (RoPE) to the last dim of ``x``; no weights."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


def _alibi_slopes(heads: int) -> torch.Tensor:
    """Per-head ALiBi slopes 2^(-8i/n) (Press et al. 2022), for any head count."""
    closest = 2 ** math.floor(math.log2(heads))
    slopes = [2 ** (-8 * (i + 1) / closest) for i in range(closest)]
    extra = [2 ** (-4 * (2 * i + 1) / closest) for i in range(heads - closest)]
    return torch.tensor(slopes + extra, dtype=torch.float32)


class Attention(nn.Module):
    """Causal self-attention with ``num_kv_heads`` <= ``num_heads`` (MHA, GQA, MQA).

    ALiBi and relative positions add a bias to the scores, so they use the explicit
    softmax form; the others call ``scaled_dot_product_attention``. Relative positions
    follow Transformer-XL as Gopher does: a per-layer projection of a sinusoidal
    table gives position keys (the content/position bias vectors are left out).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, h, kv, dh = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.heads, self.kv_heads, self.head_dim = h, kv, dh
        self.position = cfg.position
        bias = cfg.bias if cfg.attn_bias is None else cfg.attn_bias
        qkv_bias = bias or cfg.qkv_bias
        if cfg.fused_qkv:
            self.qkv = nn.Linear(d, (h + 2 * kv) * dh, bias=qkv_bias)
        else:
            self.q = nn.Linear(d, h * dh, bias=qkv_bias)
            self.k = nn.Linear(d, kv * dh, bias=qkv_bias)
            self.v = nn.Linear(d, kv * dh, bias=qkv_bias)
        self.proj = nn.Linear(h * dh, d, bias=bias)
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm != "none":
            per_head = cfg.qk_norm == "head"
            self.q_norm = _norm(cfg, dh if per_head else h * dh)
            self.k_norm = _norm(cfg, dh if per_head else kv * dh)
        if cfg.position == "relative":
            self.rel = nn.Linear(d, h * dh, bias=False)

    def forward(self, x: torch.Tensor, pos: Positions) -> torch.Tensor:
        b, t, _ = x.shape
        h, kv, dh = self.heads, self.kv_heads, self.head_dim
        if hasattr(self, "qkv"):
            q, k, v = self.qkv(x).split([h * dh, kv * dh, kv * dh], dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        if self.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.view(b, t, h, dh), k.view(b, t, kv, dh)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = v.view(b, t, kv, dh).transpose(1, 2)
        if self.position == "rotary":
            q, k = _rotate(q, pos["cos"], pos["sin"]), _rotate(k, pos["cos"], pos["sin"])
        if kv == 1:
            k, v = k.expand(b, h, t, dh), v.expand(b, h, t, dh)
        elif kv < h:
            k = k.repeat_interleave(h // kv, dim=1)
            v = v.repeat_interleave(h // kv, dim=1)
        if self.position in ("alibi", "relative"):
            out = self._biased_attention(q, k, v, pos)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(b, t, h * dh))

    def _biased_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: Positions
    ) -> torch.Tensor:
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        if self.position == "alibi":
            scores = scores + pos["alibi"]
        else:
            t = pos["table"].shape[0]
            r = self.rel(pos["table"]).view(t, self.heads, self.head_dim).transpose(0, 1)
            scores = scores + q @ r.transpose(-2, -1)
        scores = scores.masked_fill(pos["causal"], float("-inf"))
        return scores.softmax(dim=-1) @ v


class MLAttention(nn.Module):
    """Multi-head latent attention (DeepSeek-V3), in its naive (non-absorbed) form.

    Q and KV pass through low-rank projections with an RMSNorm on the latent; keys
    are the per-head up-projected part concatenated with one rotary key shared by all
    heads. What a token caches is the latent plus the rotary key. Without a query
    rank (``q_lora_rank`` 0) queries come from one full projection.
    """

    def __init__(self, cfg: ModelConfig, mla: MLAConfig) -> None:
        super().__init__()
        d, h = cfg.d_model, cfg.num_heads
        self.mla, self.heads = mla, h
        qk = mla.qk_nope_dim + mla.qk_rope_dim
        if mla.q_lora_rank:
            self.q_down = nn.Linear(d, mla.q_lora_rank, bias=False)
            self.q_norm = nn.RMSNorm(mla.q_lora_rank)
            self.q_up = nn.Linear(mla.q_lora_rank, h * qk, bias=False)
        else:
            self.q = nn.Linear(d, h * qk, bias=False)
        self.kv_down = nn.Linear(d, mla.kv_lora_rank + mla.qk_rope_dim, bias=False)
        self.kv_norm = nn.RMSNorm(mla.kv_lora_rank)
        self.kv_up = nn.Linear(mla.kv_lora_rank, h * (mla.qk_nope_dim + mla.v_head_dim), bias=False)
        self.proj = nn.Linear(h * mla.v_head_dim, d, bias=False)

    def forward(self, x: torch.Tensor, pos: Positions) -> torch.Tensor:
        b, t, _ = x.shape
        m, h = self.mla, self.heads
        cos, sin = pos["cos"], pos["sin"]
        q = self.q_up(self.q_norm(self.q_down(x))) if m.q_lora_rank else self.q(x)
        q = q.view(b, t, h, -1).transpose(1, 2)
        q_nope, q_pe = q.split([m.qk_nope_dim, m.qk_rope_dim], dim=-1)
        latent, k_pe = self.kv_down(x).split([m.kv_lora_rank, m.qk_rope_dim], dim=-1)
        k_pe = _rotate(k_pe.view(b, 1, t, m.qk_rope_dim), cos, sin)
        kv = self.kv_up(self.kv_norm(latent)).view(b, t, h, -1).transpose(1, 2)
        k_nope, v = kv.split([m.qk_nope_dim, m.v_head_dim], dim=-1)
        q = torch.cat([q_nope, _rotate(q_pe, cos, sin)], dim=-1)
        k = torch.cat([k_nope, k_pe.expand(b, h, t, m.qk_rope_dim)], dim=-1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(b, t, h * m.v_head_dim))


class MLP(nn.Module):
    """Two-layer GELU/ReLU MLP, or the gated SwiGLU/GeGLU form (gate, up, down), whose
    gate and up projections may be one fused matrix (``fused``)."""

    def __init__(self, d: int, ffn: int, kind: str, bias: bool, fused: bool = False) -> None:
        super().__init__()
        self.kind, self.fused = kind, fused
        if kind in ("swiglu", "geglu"):
            if fused:
                self.gate_up = nn.Linear(d, 2 * ffn, bias=bias)
            else:
                self.gate = nn.Linear(d, ffn, bias=bias)
                self.up = nn.Linear(d, ffn, bias=bias)
            self.down = nn.Linear(ffn, d, bias=bias)
        else:
            self.fc1 = nn.Linear(d, ffn, bias=bias)
            self.fc2 = nn.Linear(ffn, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind in ("swiglu", "geglu"):
            if self.fused:
                gate, up = self.gate_up(x).chunk(2, dim=-1)
            else:
                gate, up = self.gate(x), self.up(x)
            act = F.silu(gate) if self.kind == "swiglu" else F.gelu(gate, approximate="tanh")
            return self.down(act * up)
        act = F.relu if self.kind == "relu" else F.gelu
        return self.fc2(act(self.fc1(x)))


class MoE(nn.Module):
    """Top-k routed SwiGLU experts plus optional always-on shared experts.

    Written densely so ``torch.fx`` can trace it: the top-k gates are scattered into a
    [tokens, E] weight and the output is the gate-weighted sum over all experts. On
    the meta device nothing is computed, and the compiler costs only top-k experts.
    """

    def __init__(self, cfg: ModelConfig, moe: MoEConfig) -> None:
        super().__init__()
        d, e, f = cfg.d_model, moe.num_experts, moe.expert_ffn_dim
        self.top_k, self.router_kind = moe.top_k, moe.router
        self.router = nn.Linear(d, e, bias=False)
        self.w_gate = nn.Parameter(torch.empty(e, d, f))
        self.w_up = nn.Parameter(torch.empty(e, d, f))
        self.w_down = nn.Parameter(torch.empty(e, f, d))
        shared = moe.shared_ffn_dim or f * moe.num_shared_experts
        self.shared = MLP(d, shared, "swiglu", bias=False) if shared else None
        self.shared_gate = nn.Linear(d, 1, bias=False) if moe.shared_gate else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.router(x)
        if self.router_kind == "sigmoid":
            weights, chosen = logits.sigmoid().topk(self.top_k, dim=-1)
            weights = weights / weights.sum(dim=-1, keepdim=True)
        else:
            top, chosen = logits.topk(self.top_k, dim=-1)
            weights = top.softmax(dim=-1)
        gates = torch.zeros_like(logits).scatter(-1, chosen, weights)
        hidden = F.silu(torch.einsum("btd,edf->btef", x, self.w_gate)) * torch.einsum(
            "btd,edf->btef", x, self.w_up
        )
        experts = torch.einsum("btef,efd->bted", hidden, self.w_down)
        out = (gates.unsqueeze(-1) * experts).sum(dim=-2)
        if self.shared is not None:
            shared = self.shared(x)
            if self.shared_gate is not None:
                shared = self.shared_gate(x).sigmoid() * shared
            out = out + shared
        return out


class Block(nn.Module):
    """One transformer block: serial or parallel (PaLM: one shared norm; GPT-NeoX: one
    norm per branch). A serial block's norms sit before each sublayer (``norm1``,
    ``norm2``), on its output (``post1``, ``post2``), or both."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.parallel, self.parallel_norms = cfg.parallel_block, cfg.parallel_norms
        self.pre, self.post = cfg.sublayer_norms != "post", cfg.sublayer_norms != "pre"
        d = cfg.d_model
        if self.pre:
            self.norm1 = _norm(cfg, d)
        self.attn = Attention(cfg) if cfg.mla is None else MLAttention(cfg, cfg.mla)
        if self.pre and (not cfg.parallel_block or cfg.parallel_norms):
            self.norm2 = _norm(cfg, d)
        if self.post:
            self.post1, self.post2 = _norm(cfg, d), _norm(cfg, d)
        if cfg.moe is not None and cfg.is_moe_layer(layer):
            self.mlp: nn.Module = MoE(cfg, cfg.moe)
        else:
            self.mlp = MLP(d, cfg.ffn_dim, cfg.mlp, cfg.bias, cfg.fused_gate_up)

    def forward(self, x: torch.Tensor, pos: Positions) -> torch.Tensor:
        if self.parallel:
            h = self.norm1(x)
            return x + self.attn(h, pos) + self.mlp(self.norm2(x) if self.parallel_norms else h)
        a = self.attn(self.norm1(x) if self.pre else x, pos)
        x = x + (self.post1(a) if self.post else a)
        m = self.mlp(self.norm2(x) if self.pre else x)
        return x + (self.post2(m) if self.post else m)


class Transformer(nn.Module):
    """A decoder-only language model: token ids [batch, seq] -> logits [batch, seq, vocab].

    Position tables (RoPE angles, ALiBi slopes, the relative sinusoids, the causal
    mask) live here once and are sliced once per forward, not per layer.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = (
            nn.Embedding(cfg.max_positions + cfg.pos_offset, cfg.d_model)
            if cfg.position == "learned"
            else None
        )
        self.emb_norm = _norm(cfg, cfg.d_model) if cfg.embed_norm else None
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        self.norm = _norm(cfg, cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=cfg.head_bias)
        if cfg.tied_embeddings:
            self.head.weight = self.tok.weight
        n = cfg.max_positions
        if cfg.position == "rotary":
            rot = cfg.mla.qk_rope_dim if cfg.mla else cfg.head_dim
            self.register_buffer("angles", _rotary_tables(rot, n), persistent=False)
        if cfg.position in ("alibi", "relative"):
            causal = torch.ones(n, n, dtype=torch.bool).triu(1)
            self.register_buffer("causal", causal, persistent=False)
        if cfg.position == "alibi":
            self.register_buffer("slopes", _alibi_slopes(cfg.num_heads), persistent=False)
        if cfg.position == "relative":
            freq = 1.0 / 10000 ** (torch.arange(0, cfg.d_model, 2) / cfg.d_model)
            angle = torch.arange(n, dtype=torch.float32)[:, None] * freq
            self.register_buffer("rel_table", torch.cat([angle.sin(), angle.cos()], -1), False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        x = self.tok(ids)
        if self.pos is not None:
            x = x + self.pos(torch.arange(t, device=ids.device) + self.config.pos_offset)
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        pos = self._positions(t)
        for block in self.blocks:
            x = block(x, pos)
        return self.head(self.norm(x))

    def _positions(self, t: int) -> Positions:
        # torch.narrow, not slicing: under fx ``t`` is a proxy and buffers are not.
        position = self.config.position
        out: Positions = {}
        if position == "rotary":
            angles = torch.narrow(self.angles, 0, 0, t)
            out = {"cos": angles.cos(), "sin": angles.sin()}
        if position in ("alibi", "relative"):
            out["causal"] = torch.narrow(torch.narrow(self.causal, 0, 0, t), 1, 0, t)
        if position == "alibi":
            steps = torch.arange(t, device=self.slopes.device)
            out["alibi"] = self.slopes.view(-1, 1, 1) * (steps[None, :] - steps[:, None])
        if position == "relative":
            out["table"] = torch.narrow(self.rel_table, 0, 0, t)
        return out

"""Ops: the nodes of the IR.

An ``Op`` is small and closed, in the manner of torch.fx nodes: a kind from a fixed
enum, the integer dims its cost formula needs, the weight tensors it owns, its place in
the model (block index and role) and how tensor parallelism shards it. Its cost is a
pure function of a ``Workload``.

Conventions of the cost formulas (what is and is not counted):

* A multiply-add counts as 2 FLOPs. Elementwise work counts ``flops_per_element`` per
  output element (norms 5, GELU 8, SiLU 4, ReLU 1, adds and products 1). Softmax is not
  counted: it is small next to the score matmul and varies by kernel.
* Weights are read once per step for the whole batch (weight-stationary batching).
  An embedding reads only the rows it gathers; a mixture of experts reads the experts
  its tokens touch, assuming uniform routing: ``E * (1 - (1 - k/E)**tokens)`` experts.
* The LM head computes logits for the last position only in prefill, as serving does.
* Prefill attends over the full prompt (the square score matrix fused kernels compute)
  and writes the prompt's KV cache (a chunk after a cached prefix also reads the
  prefix and attends over it); decode reads ``context_len`` cached positions and
  writes one. ``kv_elems`` is what one token caches for the op, per sequence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from math import prod
from types import MappingProxyType

from .dtypes import DType
from .errors import IRError
from .workload import Phase, Workload

__all__ = ["Op", "OpCost", "OpKind", "Role", "Shard", "Weight"]


class OpKind(str, Enum):
    MATMUL = "matmul"  # activation x weight
    ATTN_SCORE = "attn_score"  # Q x K^T over the cached context
    ATTN_CONTEXT = "attn_context"  # P x V
    NORM = "norm"
    ACTIVATION = "activation"
    ELEMENTWISE = "elementwise"
    EMBEDDING = "embedding"
    LM_HEAD = "lm_head"
    ROUTER = "router"
    EXPERT_MATMUL = "expert_matmul"
    GENERIC = "generic"  # not recognised: costed from per-token counts taken at trace time


class Role(str, Enum):
    QKV = "qkv"
    Q = "q"
    K = "k"
    V = "v"
    KV = "kv"
    Q_DOWN = "q_down"  # low-rank (MLA) projections
    KV_DOWN = "kv_down"
    PROJ = "proj"
    FC1 = "fc1"
    FC2 = "fc2"
    GATE = "gate"
    UP = "up"
    DOWN = "down"
    ROUTER = "router"
    EXPERT = "expert"
    SHARED = "shared"
    HEAD = "head"
    TOKEN = "token"  # token embedding
    POS = "pos"  # learned position embedding
    NORM = "norm"
    ATTN = "attn"
    ACT = "act"
    RESIDUAL = "residual"
    OTHER = "other"


class Shard(str, Enum):
    """How tensor parallelism splits an op; set by the sharding pass, from structure."""

    REPLICATED = "replicated"  # every rank holds and computes it all
    COLUMN = "column"  # output features split; no communication after
    ROW = "row"  # input features split; partial sums all-reduced after
    HEADS = "heads"  # attention heads split (KV heads replicated when tp > kv heads)
    VOCAB = "vocab"  # vocabulary split: embedding rows or LM-head columns
    EXPERT = "expert"  # whole experts spread over ranks; all-to-all around them
    WIDTH = "width"  # elementwise op on a sharded activation: split with it


@dataclass(frozen=True)
class Weight:
    """A weight tensor: its name in the source model, shape and storage dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: DType = DType.BF16
    # Bytes when the source says so exactly (a quantized checkpoint's header); else
    # derived from shape and dtype.
    stored_bytes: int | None = None

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        if self.stored_bytes is not None:
            return self.stored_bytes
        return self.dtype.nbytes(self.numel)


@dataclass(frozen=True)
class OpCost:
    """FLOPs and bytes of one op (or a sum of ops) at one workload."""

    flops: float = 0.0
    weight_bytes: float = 0.0  # weight bytes read from memory
    kv_read_bytes: float = 0.0
    kv_write_bytes: float = 0.0
    act_in_bytes: float = 0.0
    act_out_bytes: float = 0.0

    def __add__(self, other: OpCost) -> OpCost:
        return OpCost(
            self.flops + other.flops,
            self.weight_bytes + other.weight_bytes,
            self.kv_read_bytes + other.kv_read_bytes,
            self.kv_write_bytes + other.kv_write_bytes,
            self.act_in_bytes + other.act_in_bytes,
            self.act_out_bytes + other.act_out_bytes,
        )

    def scaled(self, factor: float) -> OpCost:
        return OpCost(*(getattr(self, f) * factor for f in _COST_FIELDS))

    @property
    def memory_bytes(self) -> float:
        """Bytes moved to and from the memory that holds weights and KV cache."""
        return self.weight_bytes + self.kv_read_bytes + self.kv_write_bytes


_COST_FIELDS = (
    "flops",
    "weight_bytes",
    "kv_read_bytes",
    "kv_write_bytes",
    "act_in_bytes",
    "act_out_bytes",
)

# The dims each kind's cost formula reads; ``Op`` refuses to exist without them.
REQUIRED_DIMS: Mapping[OpKind, tuple[str, ...]] = MappingProxyType(
    {
        OpKind.MATMUL: ("in_features", "out_features"),
        OpKind.LM_HEAD: ("in_features", "out_features"),
        OpKind.ROUTER: ("in_features", "out_features"),
        OpKind.EXPERT_MATMUL: ("in_features", "out_features", "num_experts", "top_k"),
        OpKind.ATTN_SCORE: ("heads", "kv_heads", "head_dim", "kv_elems"),
        OpKind.ATTN_CONTEXT: ("heads", "kv_heads", "head_dim", "kv_elems"),
        OpKind.NORM: ("width",),
        OpKind.ACTIVATION: ("width",),
        OpKind.ELEMENTWISE: ("width",),
        OpKind.EMBEDDING: ("num_embeddings", "width"),
        OpKind.GENERIC: (),
    }
)

DEFAULT_FLOPS_PER_ELEMENT: Mapping[OpKind, int] = MappingProxyType(
    {OpKind.NORM: 5, OpKind.ACTIVATION: 8, OpKind.ELEMENTWISE: 1}
)


@dataclass(frozen=True)
class Op:
    """One node of the IR graph.

    ``dims`` holds the integers the cost formula of ``kind`` needs (``REQUIRED_DIMS``).
    ``attrs`` holds small extras: ``flops_per_element`` for elementwise kinds; for
    ``GENERIC`` ops ``flops_per_token``, ``in_bytes_per_token`` and
    ``out_bytes_per_token`` measured at trace time; ``source`` names the node it came
    from. ``block`` is the transformer block index, ``None`` outside the blocks.
    """

    name: str
    kind: OpKind
    dims: Mapping[str, int] = field(default_factory=dict)
    weights: tuple[Weight, ...] = ()
    block: int | None = None
    role: Role = Role.OTHER
    shard: Shard = Shard.REPLICATED
    attrs: Mapping[str, object] = field(default_factory=dict)
    # A tied LM head reads the embedding table but does not own it (params count once).
    tied: Weight | None = None

    def __post_init__(self) -> None:
        missing = [d for d in REQUIRED_DIMS[self.kind] if d not in self.dims]
        if missing:
            raise IRError(f"op {self.name!r} ({self.kind.value}): missing dims {missing}")
        bad = {k: v for k, v in self.dims.items() if not isinstance(v, int) or v < 0}
        if bad:
            raise IRError(f"op {self.name!r}: dims must be non-negative integers ({bad})")

    # -- static facts -------------------------------------------------------------

    @property
    def params(self) -> int:
        return sum(w.numel for w in self.weights)

    @property
    def active_params(self) -> int:
        """Parameters one token uses: a routed expert op counts top_k of its experts."""
        if self.kind is OpKind.EXPERT_MATMUL:
            return self.params * self.dims["top_k"] // self.dims["num_experts"]
        return self.params

    @property
    def weight_bytes(self) -> int:
        """Bytes of the weights this op owns."""
        return sum(w.nbytes for w in self.weights)

    @property
    def read_weight_bytes(self) -> int:
        """Bytes of the weights this op reads: its own, or the table it is tied to."""
        return self.weight_bytes + (self.tied.nbytes if self.tied is not None else 0)

    def kv_bytes_per_token(self, kv_dtype: DType) -> int:
        """KV-cache bytes one token of one sequence adds for this op."""
        if self.kind in (OpKind.ATTN_SCORE, OpKind.ATTN_CONTEXT):
            return kv_dtype.nbytes(self.dims["kv_elems"])
        return 0

    # -- cost at a workload ---------------------------------------------------------

    def cost(self, wl: Workload, kv_dtype: DType, act_dtype: DType) -> OpCost:
        a = act_dtype.bits / 8
        d = self.dims
        t = wl.tokens
        k = self.kind
        if k in (OpKind.MATMUL, OpKind.ROUTER, OpKind.LM_HEAD):
            rows = wl.batch if (k is OpKind.LM_HEAD and wl.phase is Phase.PREFILL) else t
            n_in, n_out = d["in_features"], d["out_features"]
            return OpCost(
                flops=2.0 * rows * n_in * n_out,
                weight_bytes=self.read_weight_bytes,
                act_in_bytes=rows * n_in * a,
                act_out_bytes=rows * n_out * a,
            )
        if k is OpKind.EXPERT_MATMUL:
            e, top = d["num_experts"], d["top_k"]
            n_in, n_out = d["in_features"], d["out_features"]
            touched = e * (1.0 - (1.0 - top / e) ** t)
            return OpCost(
                flops=2.0 * t * top * n_in * n_out,
                weight_bytes=self.weight_bytes * touched / e,
                act_in_bytes=t * top * n_in * a,
                act_out_bytes=t * top * n_out * a,
            )
        if k in (OpKind.ATTN_SCORE, OpKind.ATTN_CONTEXT):
            h, dh = d["heads"], d["head_dim"]
            q, ctx = wl.query_len, wl.attended_len
            kv_token = kv_dtype.bits / 8 * d["kv_elems"]
            kv_read = wl.batch * wl.cached_len * kv_token
            score_elems = wl.batch * q * ctx * h
            vec_elems = wl.batch * q * h * dh
            if k is OpKind.ATTN_SCORE:
                act_in, act_out = vec_elems, score_elems
            else:
                act_in, act_out = score_elems, vec_elems
            return OpCost(
                flops=2.0 * wl.batch * q * ctx * h * dh,
                kv_read_bytes=kv_read,
                kv_write_bytes=wl.batch * q * kv_token,
                act_in_bytes=act_in * a,
                act_out_bytes=act_out * a,
            )
        if k in (OpKind.NORM, OpKind.ACTIVATION, OpKind.ELEMENTWISE):
            width = d["width"]
            per_elem = int(self.attrs.get("flops_per_element", DEFAULT_FLOPS_PER_ELEMENT[k]))
            inputs = int(self.attrs.get("inputs", 1))
            return OpCost(
                flops=float(per_elem * t * width),
                weight_bytes=self.weight_bytes,
                act_in_bytes=inputs * t * width * a,
                act_out_bytes=t * width * a,
            )
        if k is OpKind.EMBEDDING:
            width = d["width"]
            table = self.weight_bytes
            rows = min(t, d["num_embeddings"])
            return OpCost(
                weight_bytes=table * rows / max(d["num_embeddings"], 1),
                act_out_bytes=t * width * a,
            )
        # GENERIC: per-token counts measured when the op was traced.
        return OpCost(
            flops=float(self.attrs.get("flops_per_token", 0)) * t,
            weight_bytes=self.weight_bytes,
            act_in_bytes=float(self.attrs.get("in_bytes_per_token", 0)) * t,
            act_out_bytes=float(self.attrs.get("out_bytes_per_token", 0)) * t,
        )

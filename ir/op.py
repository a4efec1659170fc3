"""Ops: the nodes of the IR.

An ``Op`` is small and closed, in the manner of torch.fx nodes: a kind from a fixed
enum, the integer dims its cost formula needs, the weight tensors it owns, its place in
the model (block index and role) and how tensor parallelism shards it. Its cost is a
pure function of a ``Workload``. What differs by kind (required dims, cost formula,
invariant, shard rule, collectives) is one ``KindRule`` per kind in ``KIND_RULES``.

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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from math import prod
from types import MappingProxyType

from .dtypes import DType
from .errors import IRError
from .workload import Phase, Workload

__all__ = [
    "KIND_RULES",
    "Collective",
    "KindRule",
    "Op",
    "OpCost",
    "OpKind",
    "Role",
    "Shard",
    "ShardContext",
    "Weight",
]


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


@dataclass(frozen=True)
class Op:
    """One node of the IR graph.

    ``dims`` holds the integers the cost formula of ``kind`` needs (``KIND_RULES``).
    ``attrs`` holds small extras: ``flops_per_element`` for elementwise kinds; for
    ``GENERIC`` ops ``flops_per_token``, ``in_elems_per_token`` and
    ``out_elems_per_token`` measured at trace time (bytes follow the graph's
    activation dtype); ``source`` names the node it came
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
        missing = [d for d in KIND_RULES[self.kind].dims if d not in self.dims]
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
        if KIND_RULES[self.kind].kv_cached:
            return kv_dtype.nbytes(self.dims["kv_elems"])
        return 0

    # -- cost at a workload ---------------------------------------------------------

    def cost(self, wl: Workload, kv_dtype: DType, act_dtype: DType) -> OpCost:
        """FLOPs and bytes of the whole op at ``wl`` (its kind's rule in ``KIND_RULES``)."""
        return KIND_RULES[self.kind].cost(self, wl, kv_dtype, act_dtype)


# -- per-kind rules ---------------------------------------------------------------------
#
# Everything the compiler knows about one OpKind is its ``KindRule``: the dims its cost
# formula reads, the formula, the invariant ``Graph.verify`` checks, how tensor
# parallelism splits it and the collectives that split implies. A new kind is one
# entry in ``KIND_RULES``; ``Op``, ``Graph``, ``ir.sharding`` and the sharding pass
# read nothing else about kinds.

# Matmul roles that start a tensor-parallel pair (split output columns) and end one
# (split input rows, partial sums all-reduced).
COLUMN_ROLES = frozenset({Role.Q, Role.K, Role.V, Role.QKV, Role.KV, Role.FC1, Role.GATE, Role.UP})
ROW_ROLES = frozenset({Role.PROJ, Role.FC2, Role.DOWN})
_SPLIT_WIDTH = frozenset({Shard.COLUMN, Shard.HEADS, Shard.WIDTH})


@dataclass(frozen=True)
class Collective:
    """A collective a tensor-parallel group runs after an op; bytes per rank's buffer."""

    kind: str  # "all_reduce" | "all_gather" | "all_to_all"
    bytes: float
    group: int = 0  # ranks taking part, consecutive in the tp group; 0: all of it


@dataclass(frozen=True)
class ShardContext:
    """What the sharding pass tells a kind's shard rule about the op's neighbours."""

    input_shards: tuple[Shard, ...]  # shards of the ops it reads, already decided
    only_attention_reads: bool  # every user is an attention op (relative-position keys)


def _no_check(op: Op) -> str | None:
    return None


def _no_collectives(op: Op, cost: OpCost) -> tuple[Collective, ...]:
    return ()


def _replicated(op: Op, ctx: ShardContext) -> Shard:
    return Shard.REPLICATED


@dataclass(frozen=True)
class KindRule:
    """The rules of one ``OpKind``.

    ``cost(op, workload, kv_dtype, act_dtype)`` is the whole op's cost; ``check(op)``
    returns what is wrong with the op's dims and weights (``None`` when nothing is);
    ``shard(op, ctx)`` picks the tensor-parallel split from the op's role and
    neighbours; ``collectives(op, cost)`` lists what a split op (tp > 1) exchanges
    after it. ``kv_cached`` kinds hold ``kv_elems`` per token in the KV cache;
    ``sparse`` kinds store their matrices compressed under ``Graph.with_sparsity``.
    """

    dims: tuple[str, ...]
    cost: Callable[[Op, Workload, DType, DType], OpCost]
    shard: Callable[[Op, ShardContext], Shard] = _replicated
    check: Callable[[Op], str | None] = _no_check
    collectives: Callable[[Op, OpCost], tuple[Collective, ...]] = _no_collectives
    flops_per_element: int = 0  # elementwise kinds: default when attrs do not say
    kv_cached: bool = False
    sparse: bool = False


def _matmul_cost(op: Op, wl: Workload, kv_dtype: DType, act_dtype: DType) -> OpCost:
    a = act_dtype.bits / 8
    rows = wl.batch if (op.kind is OpKind.LM_HEAD and wl.phase is Phase.PREFILL) else wl.tokens
    n_in, n_out = op.dims["in_features"], op.dims["out_features"]
    return OpCost(
        flops=2.0 * rows * n_in * n_out,
        weight_bytes=op.read_weight_bytes,
        act_in_bytes=rows * n_in * a,
        act_out_bytes=rows * n_out * a,
    )


def _check_matmul(op: Op) -> str | None:
    n_in, n_out = op.dims["in_features"], op.dims["out_features"]
    for w in op.weights:
        if w.shape not in ((n_out, n_in), (n_in, n_out), (n_out,)):
            return f"weight {w.name} {w.shape} does not fit {n_in}->{n_out}"
    return None


def _shard_matmul(op: Op, ctx: ShardContext) -> Shard:
    if op.role in COLUMN_ROLES or ctx.only_attention_reads:
        return Shard.COLUMN
    return Shard.ROW if op.role in ROW_ROLES else Shard.REPLICATED


def _matmul_collectives(op: Op, cost: OpCost) -> tuple[Collective, ...]:
    if op.shard is Shard.ROW:
        return (Collective("all_reduce", cost.act_out_bytes),)
    return ()


def _head_collectives(op: Op, cost: OpCost) -> tuple[Collective, ...]:
    if op.shard is Shard.VOCAB:
        return (Collective("all_gather", cost.act_out_bytes),)
    return ()


def _expert_cost(op: Op, wl: Workload, kv_dtype: DType, act_dtype: DType) -> OpCost:
    a = act_dtype.bits / 8
    t = wl.tokens
    e, top = op.dims["num_experts"], op.dims["top_k"]
    n_in, n_out = op.dims["in_features"], op.dims["out_features"]
    touched = e * (1.0 - (1.0 - top / e) ** t)
    return OpCost(
        flops=2.0 * t * top * n_in * n_out,
        weight_bytes=op.weight_bytes * touched / e,
        act_in_bytes=t * top * n_in * a,
        act_out_bytes=t * top * n_out * a,
    )


def _check_expert(op: Op) -> str | None:
    d = op.dims
    per_expert = d["in_features"] * d["out_features"]
    matrices = sum(w.numel for w in op.weights if len(w.shape) >= 2)
    if matrices != d["num_experts"] * per_expert:
        return (
            f"expert weights hold {matrices} elements, expected {d['num_experts']} x {per_expert}"
        )
    if not 0 < d["top_k"] <= d["num_experts"]:
        return f"top_k {d['top_k']} outside 1..{d['num_experts']}"
    return None


def _expert_collectives(op: Op, cost: OpCost) -> tuple[Collective, ...]:
    """Tokens go to their experts all-to-all before the up side and come back after
    the down side."""
    if op.shard is not Shard.EXPERT:
        return ()
    if op.role in (Role.DOWN, Role.FC2):
        return (Collective("all_to_all", cost.act_out_bytes),)
    if op.role in (Role.UP, Role.FC1, Role.EXPERT):
        return (Collective("all_to_all", cost.act_in_bytes),)
    return ()


def _attention_cost(op: Op, wl: Workload, kv_dtype: DType, act_dtype: DType) -> OpCost:
    a = act_dtype.bits / 8
    h, dh = op.dims["heads"], op.dims["head_dim"]
    q, ctx = wl.query_len, wl.attended_len
    kv_token = kv_dtype.bits / 8 * op.dims["kv_elems"]
    kv_read = wl.batch * wl.cached_len * kv_token
    score_elems = wl.batch * q * ctx * h
    vec_elems = wl.batch * q * h * dh
    if op.kind is OpKind.ATTN_SCORE:
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


def _check_attention(op: Op) -> str | None:
    d = op.dims
    if d["kv_heads"] == 0 or d["heads"] % d["kv_heads"]:
        return f"{d['heads']} heads not divisible by {d['kv_heads']}"
    return None


def _elementwise_cost(op: Op, wl: Workload, kv_dtype: DType, act_dtype: DType) -> OpCost:
    a = act_dtype.bits / 8
    t, width = wl.tokens, op.dims["width"]
    per_elem = int(op.attrs.get("flops_per_element", KIND_RULES[op.kind].flops_per_element))
    inputs = int(op.attrs.get("inputs", 1))
    return OpCost(
        flops=float(per_elem * t * width),
        weight_bytes=op.weight_bytes,
        act_in_bytes=inputs * t * width * a,
        act_out_bytes=t * width * a,
    )


def _follow_inputs(op: Op, ctx: ShardContext) -> Shard:
    """Split with the inputs when every one is split by width, stay with the experts
    when every one is expert-split; else replicate."""
    if ctx.input_shards and all(s in _SPLIT_WIDTH for s in ctx.input_shards):
        return Shard.WIDTH
    if ctx.input_shards and all(s is Shard.EXPERT for s in ctx.input_shards):
        return Shard.EXPERT
    return Shard.REPLICATED


def _embedding_cost(op: Op, wl: Workload, kv_dtype: DType, act_dtype: DType) -> OpCost:
    a = act_dtype.bits / 8
    t, d = wl.tokens, op.dims
    rows = min(t, d["num_embeddings"])
    return OpCost(
        weight_bytes=op.weight_bytes * rows / max(d["num_embeddings"], 1),
        act_out_bytes=t * d["width"] * a,
    )


def _shard_embedding(op: Op, ctx: ShardContext) -> Shard:
    """Megatron's vocabulary-parallel token embedding (each rank a range of rows); a
    learned position table split over the hidden width (each rank its columns)."""
    return Shard.VOCAB if op.role is Role.TOKEN else Shard.WIDTH


def _embedding_collectives(op: Op, cost: OpCost) -> tuple[Collective, ...]:
    """A vocabulary-parallel lookup leaves each rank the rows of its range (zeros for
    other tokens): one all-reduce sums them. Each rank adds its columns of the position
    rows before it, so a hidden-split position table needs no collective of its own."""
    if op.shard is Shard.VOCAB:
        return (Collective("all_reduce", cost.act_out_bytes),)
    return ()


def _check_embedding(op: Op) -> str | None:
    d = op.dims
    for w in op.weights:
        if w.shape != (d["num_embeddings"], d["width"]):
            return f"table {w.shape} is not {d['num_embeddings']}x{d['width']}"
    return None


def _generic_cost(op: Op, wl: Workload, kv_dtype: DType, act_dtype: DType) -> OpCost:
    """Per-token counts measured when the op was traced, at the activation dtype."""
    a = act_dtype.bits / 8
    t = wl.tokens
    return OpCost(
        flops=float(op.attrs.get("flops_per_token", 0)) * t,
        weight_bytes=op.weight_bytes,
        act_in_bytes=float(op.attrs.get("in_elems_per_token", 0)) * a * t,
        act_out_bytes=float(op.attrs.get("out_elems_per_token", 0)) * a * t,
    )


_MATMUL_DIMS = ("in_features", "out_features")
_ATTN_DIMS = ("heads", "kv_heads", "head_dim", "kv_elems")

KIND_RULES: Mapping[OpKind, KindRule] = MappingProxyType(
    {
        OpKind.MATMUL: KindRule(
            _MATMUL_DIMS, _matmul_cost, _shard_matmul, _check_matmul, _matmul_collectives,
            sparse=True,
        ),
        OpKind.LM_HEAD: KindRule(
            _MATMUL_DIMS, _matmul_cost, lambda op, ctx: Shard.VOCAB, _check_matmul,
            _head_collectives, sparse=True,
        ),
        OpKind.ROUTER: KindRule(_MATMUL_DIMS, _matmul_cost, check=_check_matmul),
        OpKind.EXPERT_MATMUL: KindRule(
            (*_MATMUL_DIMS, "num_experts", "top_k"), _expert_cost, lambda op, ctx: Shard.EXPERT,
            _check_expert, _expert_collectives, sparse=True,
        ),
        OpKind.ATTN_SCORE: KindRule(
            _ATTN_DIMS, _attention_cost, lambda op, ctx: Shard.HEADS, _check_attention,
            kv_cached=True,
        ),
        OpKind.ATTN_CONTEXT: KindRule(
            _ATTN_DIMS, _attention_cost, lambda op, ctx: Shard.HEADS, _check_attention,
            kv_cached=True,
        ),
        OpKind.NORM: KindRule(("width",), _elementwise_cost, flops_per_element=5),
        OpKind.ACTIVATION: KindRule(
            ("width",), _elementwise_cost, _follow_inputs, flops_per_element=8
        ),
        OpKind.ELEMENTWISE: KindRule(
            ("width",), _elementwise_cost, _follow_inputs, flops_per_element=1
        ),
        OpKind.EMBEDDING: KindRule(
            ("num_embeddings", "width"), _embedding_cost, _shard_embedding, _check_embedding,
            _embedding_collectives,
        ),
        OpKind.GENERIC: KindRule((), _generic_cost),
    }
)  # fmt: skip

"""The IR graph: ops joined by data edges, plus the model's explicit traits.

networkx holds the structure; ``Graph`` adds what the compiler asks of a model
(parameter and byte counts, costs at a workload, the blocks the partitioner places)
and ``verify()``, which lists and checks the invariants every pass may rely on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Literal

import networkx as nx

from .dtypes import DType
from .errors import IRError, UsageError
from .op import KIND_RULES, Op, OpCost, OpKind, Role, Weight
from .workload import Phase, Workload

__all__ = ["Graph", "ModelInfo", "Section"]

Section = Literal["pre", "block", "post"]


@dataclass(frozen=True)
class ModelInfo:
    """Traits of the model, stated by the frontend rather than guessed from widths.

    ``num_heads`` / ``num_kv_heads`` are what tensor parallelism must divide;
    ``parallel_block`` marks PaLM-style blocks whose attention and MLP read the same
    input; ``num_experts`` is 0 for dense models. ``frontend`` names what was read and
    ``recogniser`` how its structure was found; ``unplaced`` lists the source's tensors
    (name, bytes) that no op holds, so they are in no plan (a checkpoint's vision tower,
    DeepSeek's multi-token-prediction layer).
    """

    name: str
    num_layers: int
    d_model: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    ffn_dim: int
    max_positions: int = 2048
    parallel_block: bool = False
    num_experts: int = 0
    experts_per_token: int = 0
    frontend: str = "zoo"
    notes: str = ""
    recogniser: str = ""
    unplaced: tuple[tuple[str, int], ...] = ()


class Graph:
    """A model as a DAG of ``Op``s; node keys are op names.

    Insertion order is kept and used to break ties, so traversal order (and every
    output derived from it) is deterministic.
    """

    def __init__(
        self,
        info: ModelInfo,
        kv_dtype: DType = DType.BF16,
        act_dtype: DType = DType.BF16,
        compute_dtype: DType = DType.BF16,
    ) -> None:
        self.info = info
        self.kv_dtype = kv_dtype
        self.act_dtype = act_dtype  # activations as stored and moved
        self.compute_dtype = compute_dtype  # the matmul rate: the chip's peak for it
        self._g: nx.DiGraph = nx.DiGraph()
        self._order: dict[str, int] = {}
        self._topo: list[Op] | None = None

    # -- building ---------------------------------------------------------------------

    def add_op(self, op: Op, inputs: Iterable[str] = ()) -> Op:
        if op.name in self._g:
            raise IRError(f"graph {self.info.name}: duplicate op name {op.name!r}")
        self._g.add_node(op.name, op=op)
        self._order[op.name] = len(self._order)
        for src in inputs:
            if src not in self._g:
                raise IRError(f"op {op.name!r}: input {src!r} is not in the graph")
            self._g.add_edge(src, op.name)
        self._topo = None
        return op

    def replace_op(self, op: Op) -> None:
        """Swap an op for a new version with the same name (passes use this)."""
        if op.name not in self._g:
            raise IRError(f"graph {self.info.name}: no op named {op.name!r}")
        self._g.nodes[op.name]["op"] = op
        self._topo = None

    def copy(self) -> Graph:
        other = Graph(self.info, self.kv_dtype, self.act_dtype, self.compute_dtype)
        other._g = self._g.copy()
        other._order = dict(self._order)
        return other

    # -- reading ----------------------------------------------------------------------

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def __contains__(self, name: object) -> bool:
        return name in self._g

    def op(self, name: str) -> Op:
        return self._g.nodes[name]["op"]

    @property
    def ops(self) -> list[Op]:
        """Ops in a deterministic topological order (insertion order breaks ties)."""
        if self._topo is None:
            names = nx.lexicographical_topological_sort(self._g, key=self._order.__getitem__)
            self._topo = [self._g.nodes[n]["op"] for n in names]
        return self._topo

    def inputs(self, name: str) -> list[Op]:
        preds = sorted(self._g.predecessors(name), key=self._order.__getitem__)
        return [self.op(n) for n in preds]

    def users(self, name: str) -> list[Op]:
        succs = sorted(self._g.successors(name), key=self._order.__getitem__)
        return [self.op(n) for n in succs]

    def edges(self) -> Iterator[tuple[str, str]]:
        return iter(self._g.edges())

    def weights(self) -> Iterator[tuple[Op, Weight]]:
        for op in self.ops:
            for w in op.weights:
                yield op, w

    # -- static facts -----------------------------------------------------------------

    @property
    def params(self) -> int:
        return sum(op.params for op in self.ops)

    @property
    def active_params(self) -> int:
        return sum(op.active_params for op in self.ops)

    @property
    def weight_bytes(self) -> int:
        return sum(op.weight_bytes for op in self.ops)

    def weight_bytes_by_dtype(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, w in self.weights():
            out[w.dtype.value] = out.get(w.dtype.value, 0) + w.nbytes
        return dict(sorted(out.items()))

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token of one sequence needs, over all layers."""
        return sum(op.kv_bytes_per_token(self.kv_dtype) for op in self.ops)

    def ops_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.ops:
            out[op.kind.value] = out.get(op.kind.value, 0) + 1
        return dict(sorted(out.items()))

    @property
    def learned_positions(self) -> bool:
        """Whether positions come from a learned table (GPT-2, OPT), not computed (RoPE)."""
        return any(op.kind is OpKind.EMBEDDING and op.role is Role.POS for op in self.ops)

    def check_context(self, tokens: int, flag: str) -> None:
        """Raise ``UsageError`` when ``tokens`` positions do not fit a learned position
        table (``info.max_positions`` rows). Computed positions are not limited here."""
        n = self.info.max_positions
        if self.learned_positions and tokens > n:
            raise UsageError(
                f"{flag}: {tokens} tokens exceed the {n}-row learned position table of "
                f"{self.info.name}; give at most {n}"
            )

    def unrecognised(self) -> list[Op]:
        return [op for op in self.ops if op.kind is OpKind.GENERIC]

    # -- blocks and sections ------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        blocks = {op.block for op in self.ops if op.block is not None}
        return len(blocks)

    def section(self, op: Op) -> Section:
        """Where an op sits: before the first block, in a block, or after the last."""
        if op.block is not None:
            return "block"
        return "pre" if self._section_of()[op.name] == "pre" else "post"

    def _section_of(self) -> dict[str, Section]:
        seen_block = False
        out: dict[str, Section] = {}
        for op in self.ops:
            if op.block is not None:
                seen_block = True
                out[op.name] = "block"
            else:
                out[op.name] = "post" if seen_block else "pre"
        return out

    def groups(self) -> dict[str | int, list[Op]]:
        """Ops grouped as the partitioner places them: "pre", block 0..L-1, "post"."""
        sections = self._section_of()
        out: dict[str | int, list[Op]] = {"pre": []}
        for b in range(self.num_blocks):
            out[b] = []
        out["post"] = []
        for op in self.ops:
            key: str | int = op.block if op.block is not None else sections[op.name]
            out[key].append(op)
        return out

    # -- costs ------------------------------------------------------------------------

    def cost(self, wl: Workload, ops: Iterable[Op] | None = None) -> OpCost:
        total = OpCost()
        for op in self.ops if ops is None else ops:
            total = total + op.cost(wl, self.kv_dtype, self.act_dtype)
        return total

    def flops_per_token(self, phase: Phase, context_len: int) -> float:
        """FLOPs per generated (decode) or prompt (prefill) token at batch 1."""
        if phase is Phase.DECODE:
            return self.cost(Workload.decode(1, context_len)).flops
        return self.cost(Workload.prefill(1, context_len)).flops / context_len

    # -- transforms -------------------------------------------------------------------

    def with_dtypes(
        self,
        weights: DType | None = None,
        kv: DType | None = None,
        compute: DType | None = None,
    ) -> Graph:
        """The same model stored with other weight and/or KV-cache dtypes, or computing
        its matmuls at another dtype's rate (``compute``: W8A8-style fp8/int8 runs).

        Weights whose byte count came from a checkpoint header keep it unless recast.
        """
        other = self.copy()
        if kv is not None:
            other.kv_dtype = kv
        if compute is not None:
            other.compute_dtype = compute
        if weights is not None:
            for op in self.ops:
                if op.weights or op.tied is not None:
                    cast = tuple(replace(w, dtype=weights, stored_bytes=None) for w in op.weights)
                    tied = op.tied and replace(op.tied, dtype=weights, stored_bytes=None)
                    other._g.nodes[op.name]["op"] = replace(op, weights=cast, tied=tied)
        return other

    def with_sparsity(self, sparsity: float) -> Graph:
        """Matmul weights with ``sparsity`` zeros, stored compressed and loaded dense.

        Storage per weight: the non-zero values at the weight's dtype plus a one-bit
        presence mask (the store-as-compressed, load-as-dense idea of Chiplet Cloud's
        SRAM). Embeddings and norms stay dense; FLOPs do not change.
        """
        if not 0.0 <= sparsity < 1.0:
            raise IRError(f"graph {self.info.name}: sparsity {sparsity} outside [0, 1)")
        other = self.copy()
        for op in self.ops:
            if KIND_RULES[op.kind].sparse and op.weights:
                packed = tuple(
                    replace(
                        w, stored_bytes=math.ceil(w.numel * ((1 - sparsity) * w.dtype.bits + 1) / 8)
                    )
                    if len(w.shape) >= 2
                    else w
                    for w in op.weights
                )
                other._g.nodes[op.name]["op"] = replace(op, weights=packed)
        return other

    # -- invariants -------------------------------------------------------------------

    def verify(self) -> Graph:
        """Check the invariants every pass relies on; return self or raise ``IRError``.

        1. The graph is acyclic.
        2. Every weight tensor name is owned by exactly one op.
        3. Matmul-like weights match the op's dims: (out, in) or (in, out), with a bias
           of length out allowed; expert weights hold ``num_experts`` such matrices.
        4. Attention ops have heads divisible by kv_heads.
        5. Block indices are 0..L-1, none missing, and never decrease along an edge.
        6. The model has at least one attention op and one weight.
        """
        if not nx.is_directed_acyclic_graph(self._g):
            cycle = nx.find_cycle(self._g)
            raise IRError(f"graph {self.info.name}: cycle through {[u for u, _ in cycle]}")
        owner: dict[str, str] = {}
        for op, w in self.weights():
            if w.name in owner:
                raise IRError(
                    f"op {op.name!r}: weight {w.name!r} is already owned by op {owner[w.name]!r}"
                )
            owner[w.name] = op.name
        for op in self.ops:
            self._verify_op(op)
        blocks = sorted({op.block for op in self.ops if op.block is not None})
        if blocks != list(range(len(blocks))):
            raise IRError(f"graph {self.info.name}: block indices are not 0..L-1 ({blocks})")
        for src, dst in self._g.edges():
            a, b = self.op(src).block, self.op(dst).block
            if a is not None and b is not None and b < a:
                raise IRError(f"op {dst!r} (block {b}) reads op {src!r} of a later block {a}")
        if not any(op.kind is OpKind.ATTN_SCORE for op in self.ops):
            raise IRError(f"graph {self.info.name}: no attention found")
        if self.weight_bytes == 0:
            raise IRError(f"graph {self.info.name}: no weights found")
        return self

    def _verify_op(self, op: Op) -> None:
        problem = KIND_RULES[op.kind].check(op)
        if problem is not None:
            raise IRError(f"{self._where(op)}: {problem}")

    def _where(self, op: Op) -> str:
        ins = [o.name for o in self.inputs(op.name)]
        outs = [o.name for o in self.users(op.name)]
        return f"op {op.name!r} ({op.kind.value}; inputs {ins}; users {outs})"

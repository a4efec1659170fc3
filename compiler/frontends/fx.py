"""Lowering a traced torch module to the IR, by recognising structure, not names.

``lower_traced`` runs these passes over a ``_Lowering`` state with
``compiler.passes.manager.run_passes``, which checks the state's invariants
(``_Lowering.verify``; ``Graph.verify`` once built) after each and names the pass
that broke one:

0. ``trace`` (before the passes; ``fx_trace``): the module on meta tensors.
1. ``group_nodes``: collect fx nodes into the ops of the IR. Shape-only nodes fold
   away; pure position/mask arithmetic (no token or weight input) folds away;
   attention cores (``matmul(q, k^T) -> [scale, mask, bias] -> softmax -> matmul(p, v)``
   or ``scaled_dot_product_attention``) become a score and a context op; a linear
   feeding ``topk`` becomes the router with its gating arithmetic; elementwise nodes
   fuse into one op while every user of a node stays inside the op; a fused group
   with a mean or variance is a norm, costed as one norm however it is written.
2. ``assign_blocks``: the residual stream is the dominator chain of the output;
   each attention core opens a block, and an op belongs to the block of the first
   residual-stream op it feeds.
   The stream runs through an attention core's queries, not its K/V reads, so a
   decoder layer's cross-attention (``nn.TransformerDecoderLayer``) is a block of its
   own after the self-attention's.
3. ``mark_head``: the last linear feeding the output after every block.
4. ``assign_roles``: a linear's role follows its data: into the score as Q or K,
   into the context as V, out of the context (PROJ), into an activation (FC1/GATE),
   multiplied with an activation (UP), out of an activation (FC2/DOWN).
5. ``measure_attention``: heads per core, and what a token caches for it: the
   smallest set of per-token tensors between K's input on the residual stream (the
   block input for self-attention) and K (a weighted
   minimum vertex cut); V costs nothing extra when the K cut already determines it
   (MLA's latent).
6. ``build_graph``: the ``ir.Graph`` of ``Op``s and the model's traits.

What is not recognised becomes a ``GENERIC`` op costed from the traced shapes (element
counts; bytes follow the graph's activation dtype) and is reported in one
``UnrecognisedOpsWarning``. Sharding and storage dtypes are graph passes run after
lowering (``compiler.frontends.load_model``).
"""

from __future__ import annotations

import heapq
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import networkx as nx
from torch import fx, nn

from chipletc.compiler.passes.manager import Pass, run_passes
from chipletc.ir.errors import IRError, ModelError
from chipletc.ir.graph import Graph, ModelInfo
from chipletc.ir.op import Op, OpKind, Role, Weight

from .fx_trace import (
    ACTIVATIONS,
    ELEMENTWISE,
    MATMULS,
    NORMS,
    REDUCTIONS,
    SDPA,
    SOFTMAX,
    TracedModule,
    trace,
)

__all__ = ["UnrecognisedOpsWarning", "lower_module", "lower_traced", "replace_weights"]


class UnrecognisedOpsWarning(UserWarning):
    """Ops the lowering could not recognise; they are costed from traced shapes."""


# Group kinds (internal; mapped to OpKind when the graph is built).
ATTN, ATTN_SDPA, CONTEXT, LINEAR, EXPERT, ROUTER, NORM, ACT, ELEM, EMBED, GENERIC = [
    "attn",
    "attn_sdpa",
    "context",
    "linear",
    "expert",
    "router",
    "norm",
    "act",
    "elem",
    "embed",
    "generic",
]
_ATTN_KINDS = (ATTN, ATTN_SDPA, CONTEXT)
_MATMUL_KINDS = (LINEAR, EXPERT, ROUTER)
# Layout-only views a K tensor passes through between its producer and the score.
_HEAD_VIEWS = frozenset(
    [
        "expand",
        "expand_as",
        "repeat",
        "repeat_interleave",
        "transpose",
        "permute",
        "view",
        "reshape",
        "contiguous",
        "unsqueeze",
        "squeeze",
        "flatten",
        "unflatten",
        "to",
        "float",
        "type_as",
        "clone",
    ]
)


@dataclass
class _Group:
    """One future IR op: its fx nodes, kind, and what the later steps find out."""

    key: int  # position of its output node in the fx graph
    kind: str
    nodes: list[fx.Node]
    inputs: list[int] = field(default_factory=list)
    block: int | None = None
    role: Role = Role.OTHER
    attrs: dict[str, object] = field(default_factory=dict)

    @property
    def out(self) -> fx.Node:
        return self.nodes[-1]


class _Lowering:
    """State of one lowering: the traced module and the groups built from it."""

    def __init__(self, tm: TracedModule, name: str, max_positions: int | None) -> None:
        self.tm, self.name, self.max_positions = tm, name, max_positions
        self.group_of: dict[fx.Node, int] = {}
        self.groups: dict[int, _Group] = {}
        self.attns: list[_Group] = []  # attention score groups, one per block
        self.dims_of: dict[int, tuple[int, int, int, int]] = {}  # attention -> _heads
        self.kv: dict[int, tuple[int, int]] = {}  # attention -> _kv_elems
        self.graph: Graph | None = None
        self._sources: dict[fx.Node, frozenset[int]] = {}
        self._consumers: dict[fx.Node, list[fx.Node]] = {}

    def verify(self) -> None:
        """Check what every lowering pass may rely on; raise ``IRError`` naming the group.

        1. Every fx node is in at most one group, and ``group_of`` points at that group.
        2. A group reads only earlier groups (in fx graph order), so the groups form a DAG.
        3. Once blocks are assigned, a group's block is one of the attention cores'
           (0..L-1) and never smaller than the block of a group it reads.
        4. Once built, the graph passes ``Graph.verify``.

        Not checked: that roles are right (nothing independent knows them).
        """
        seen: dict[fx.Node, int] = {}
        for key, g in self.groups.items():
            where = f"group {g.out.name} ({g.kind})"
            for n in g.nodes:
                if n in seen or self.group_of.get(n) != key:
                    raise IRError(f"{where}: node {n.name} is also in group {seen.get(n)}")
                seen[n] = key
            late = [i for i in g.inputs if i >= key or i not in self.groups]
            if late:
                raise IRError(f"{where}: reads groups {late} that are not earlier groups")
            if g.block is None:
                continue
            if not 0 <= g.block < len(self.attns):
                raise IRError(f"{where}: block {g.block} outside 0..{len(self.attns) - 1}")
            later = [i for i in g.inputs if (self.groups[i].block or 0) > g.block]
            if later:
                raise IRError(f"{where}: block {g.block} reads groups {later} of later blocks")
        if self.graph is not None:
            self.graph.verify()

    # -- dataflow through folded nodes --------------------------------------------------

    def sources(self, n: fx.Node) -> frozenset[int]:
        """Groups that produce the data of ``n``, looking through folded nodes."""
        if n in self.group_of:
            return frozenset({self.group_of[n]})
        if n not in self._sources:
            found: set[int] = set()
            for i in n.all_input_nodes:
                if i in self.tm.live:
                    found |= self.sources(i)
            self._sources[n] = frozenset(found)
        return self._sources[n]

    def consumers(self, n: fx.Node) -> list[fx.Node]:
        """Non-fold live nodes that read ``n``, looking through fold nodes."""
        if n not in self._consumers:
            out: list[fx.Node] = []
            for u in n.users:
                if u not in self.tm.live:
                    continue
                if self.tm.is_fold(u) and u.op != "output":
                    out.extend(self.consumers(u))
                else:
                    out.append(u)
            self._consumers[n] = out
        return self._consumers[n]

    def add(self, kind: str, nodes: Iterable[fx.Node], **attrs: object) -> _Group:
        ordered = sorted(set(nodes), key=self.tm.index.__getitem__)
        g = _Group(self.tm.index[ordered[-1]], kind, ordered, attrs=dict(attrs))
        self.groups[g.key] = g
        for n in ordered:
            self.group_of[n] = g.key
        return g

    def member_sources(self, n: fx.Node) -> set[fx.Node]:
        """Nearest non-fold live producers of ``n`` (nodes, before groups exist)."""
        if not self.tm.is_fold(n) or n.op == "placeholder":
            return {n}
        out: set[fx.Node] = set()
        for i in n.all_input_nodes:
            if i in self.tm.live:
                out |= self.member_sources(i)
        return out

    def context_of(self, attn: _Group) -> _Group:
        ctx = next(g for g in self.groups.values() if g.kind == CONTEXT and attn.key in g.inputs)
        return ctx


# -- the passes ----------------------------------------------------------------------------


def group_nodes(st: _Lowering) -> _Lowering:
    """Collect the traced nodes into groups, the future IR ops.

    Requires: a traced module and no groups. Ensures: every live compute node that
    does not fold away is in exactly one group with its kind set; ``inputs`` of each
    group are the groups it reads, through folded nodes.
    """
    tm = st.tm
    compute = [n for n in tm.nodes if n in tm.live and n.op != "placeholder"]
    compute = [n for n in compute if not tm.is_fold(n)]
    for n in compute:
        if tm.opname(n) == SDPA:
            q, k, v = _sdpa_operands(n)
            st.add(ATTN_SDPA, [n], q=q, k=k, v=v)
        elif tm.opname(n) in SOFTMAX:
            _attention_core(st, n)
    for n in compute:
        if tm.opname(n) == "topk" and n not in st.group_of:
            _router(st, n)
    for n in compute:
        if n not in st.group_of:
            _single(st, n)
    _fuse_elementwise(st, compute)
    for n in compute:
        if n not in st.group_of:
            st.add(GENERIC, [n])
    for g in sorted(st.groups.values(), key=lambda g: g.key):
        ins: set[int] = set()
        for n in g.nodes:
            for i in n.all_input_nodes:
                if i in tm.live and i not in g.nodes:
                    ins |= st.sources(i)
        g.inputs = sorted(ins - {g.key})
    return st


def _attention_core(st: _Lowering, softmax: fx.Node) -> None:
    """matmul(q, k^T) -> elementwise* -> softmax -> matmul(p, v), if that is the shape."""
    tm = st.tm
    body, matmuls, stack = [softmax], [], list(softmax.all_input_nodes)
    while stack:
        n = stack.pop()
        if n not in tm.live or n in body or n in matmuls:
            continue
        name = tm.opname(n)
        if name in MATMULS and not tm.params[n]:
            matmuls.append(n)
        elif (tm.is_fold(n) or name in ELEMENTWISE) and n.op != "placeholder":
            body.append(n)
            stack.extend(n.all_input_nodes)
    scores = [m for m in matmuls if all(a in tm.token for a in _operands(m))]
    users = [u for u in st.consumers(softmax) if tm.opname(u) in MATMULS]
    if len(scores) != 1 or len(users) != 1 or tm.params[users[0]]:
        return
    score, ctx = scores[0], users[0]
    shape = tm.shape(score)
    if shape is None or len(shape) != 4 or any(n in st.group_of for n in body):
        return
    q, k = (_unscaled(st, x, body) for x in _operands(score))
    st.add(ATTN, [*body, *matmuls], q=q, k=k)
    st.add(CONTEXT, [ctx], v=_operands(ctx)[1])


def _unscaled(st: _Lowering, n: fx.Node, body: list[fx.Node]) -> fx.Node:
    """The operand of a score matmul before constant scalings (``q * d**-0.25``).

    Exporters scale Q and K instead of the scores; the scalings join the attention
    core (appended to ``body``) so its operands are the projected heads again.
    """
    tm = st.tm
    while tm.opname(n) in ("mul", "div") and n not in st.group_of:
        live = [i for i in n.all_input_nodes if i in tm.live]
        if len(live) != 1 or len(st.consumers(n)) != 1:
            break
        body.append(n)
        n = live[0]
    return n


def _router(st: _Lowering, topk: fx.Node) -> None:
    """A linear whose scores reach ``topk`` is a router; its gating math joins it."""
    tm = st.tm
    stack, seen, linear = [topk], set(), None
    while stack:
        n = stack.pop()
        if n in seen or n not in tm.live:
            continue
        seen.add(n)
        if tm.opname(n) == "linear" or (tm.opname(n) in MATMULS and tm.params[n]):
            linear = n
            break
        stack.extend(n.all_input_nodes)
    if linear is None or linear in st.group_of:
        return
    members = {linear}
    pending = [(tm.index[u], u) for u in st.consumers(linear)]
    heapq.heapify(pending)
    while pending:  # in graph order, so a node's member inputs are settled first
        _, n = heapq.heappop(pending)
        name = tm.opname(n)
        if n in members or n in st.group_of or n.op == "output":
            continue
        if name in MATMULS or name in NORMS or name in (SDPA, "embedding"):
            continue
        srcs = {s for i in n.all_input_nodes if i in tm.live for s in st.member_sources(i)}
        if srcs <= members:
            members.add(n)
            for u in st.consumers(n):
                heapq.heappush(pending, (tm.index[u], u))
    k = topk.args[1] if len(topk.args) > 1 else topk.kwargs.get("k")
    st.add(ROUTER, members, top_k=int(k))


def _single(st: _Lowering, n: fx.Node) -> None:
    tm = st.tm
    name = tm.opname(n)
    params = tm.params[n]
    if name == "embedding" and params:
        st.add(EMBED, [n])
    elif name in NORMS:
        st.add(NORM, [n])
    elif name in MATMULS and params:
        weight = max((p for _, p in params), key=lambda p: p.dim())
        st.add(EXPERT if weight.dim() == 3 else LINEAR, [n])
    elif name in ACTIVATIONS:
        st.add(ACT, [n], flops_per_element=ACTIVATIONS[name])


def _fuse_elementwise(st: _Lowering, compute: list[fx.Node]) -> None:
    """Fuse elementwise nodes; ``x * sigmoid(x)`` joins the sigmoid as SiLU."""
    tm = st.tm
    elem = [n for n in compute if n not in st.group_of and tm.opname(n) in ELEMENTWISE]
    for n in elem:
        if tm.opname(n) != "mul":
            continue
        srcs = [st.member_sources(i) for i in n.all_input_nodes if i in tm.live]
        flat = {s for src in srcs for s in src}
        acts = [s for s in flat if s in st.group_of and st.groups[st.group_of[s]].kind == ACT]
        if len(flat) != 2 or len(acts) != 1 or len(st.consumers(acts[0])) != 1:
            continue
        act_inputs = set()
        for i in acts[0].all_input_nodes:
            act_inputs |= st.member_sources(i)
        if flat - {acts[0]} <= act_inputs:
            g = st.groups[st.group_of[acts[0]]]
            g.nodes.append(n)
            if tm.opname(acts[0]) == "sigmoid":  # SiLU, costed as F.silu is
                g.attrs["flops_per_element"] = ACTIVATIONS["silu"]
            else:
                g.attrs["flops_per_element"] = int(g.attrs["flops_per_element"]) + 1
            st.group_of[n] = g.key
    elem = [n for n in elem if n not in st.group_of]
    parent = {n: n for n in elem}

    def find(n: fx.Node) -> fx.Node:
        while parent[n] is not n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for n in reversed(elem):
        users = st.consumers(n)
        if users and all(u in parent for u in users):
            roots = {find(u) for u in users}
            if len(roots) == 1:
                parent[find(n)] = roots.pop()
    members: dict[fx.Node, list[fx.Node]] = {}
    for n in elem:
        members.setdefault(find(n), []).append(n)
    for nodes in members.values():
        reductions = [n for n in nodes if tm.opname(n) in REDUCTIONS]
        if not reductions:
            st.add(ELEM, nodes, flops_per_element=len(nodes))
            continue
        before = _norm_input_side(st, nodes, reductions[0])
        if before:
            st.add(ELEM, before, flops_per_element=len(before))
        st.add(NORM, [n for n in nodes if n not in before])


def _norm_input_side(st: _Lowering, nodes: list[fx.Node], reduction: fx.Node) -> list[fx.Node]:
    """Nodes of a fused norm that compute its input (a residual add fused into it)."""
    inside = set(nodes)
    x = reduction.all_input_nodes[0]
    while x in inside and st.tm.opname(x) in ("pow", "square", "mul", "to", "float"):
        x = x.all_input_nodes[0]  # x*x, x**2 or a cast of the normalised input
    while x not in inside and st.tm.is_fold(x) and x.all_input_nodes:
        x = x.all_input_nodes[0]
    if x not in inside:
        return []
    side, seen, stack = set(), set(), [x]
    while stack:  # through casts too: exporters cast around a reduction
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in inside or (st.tm.is_fold(n) and n.op != "placeholder"):
            side.add(n)
            stack.extend(n.all_input_nodes)
    return [n for n in nodes if n in side]


def assign_blocks(st: _Lowering) -> _Lowering:
    """Find the residual stream and cut it into blocks, one per attention core.

    Requires: grouped nodes. Ensures: ``st.attns`` lists the attention score groups in
    order; every group has ``block`` set (``None`` before the first and after the last
    block); residual-stream groups carry ``residual_stream``; each attention group's
    ``entry`` is the last residual-stream group its K derives from (the block input,
    for self-attention). The residual stream
    is the dominator chain of the output; an op belongs to the block of the first
    residual-stream op it feeds. Raises ``ModelError`` without an attention core.
    """
    order = sorted(st.groups)
    attns = [st.groups[k] for k in order if st.groups[k].kind in (ATTN, ATTN_SDPA)]
    if not attns:
        raise ModelError(
            f"model {st.name!r}: no transformer structure found (no attention core: "
            "matmul(q, k^T) -> softmax -> matmul(p, v) or scaled_dot_product_attention); "
            "chipletc lowers decoder-only transformers"
        )
    dag = nx.DiGraph()
    root, sink = -1, len(st.tm.nodes)
    dag.add_nodes_from([root, sink])
    for k in order:
        g = st.groups[k]
        dag.add_node(k)
        dag.add_edges_from((i, k) for i in _query_side_inputs(st, g))
        if not g.inputs and any(i in st.tm.token for n in g.nodes for i in n.all_input_nodes):
            dag.add_edge(root, k)
    output = next(n for n in reversed(st.tm.nodes) if n.op == "output")
    dag.add_edges_from((s, sink) for s in st.sources(output))
    idom = nx.immediate_dominators(dag, root)
    if sink not in idom:
        raise ModelError(f"model {st.name!r}: the output does not depend on the input ids")
    chain = [sink]
    while chain[-1] != root:
        chain.append(idom[chain[-1]])
    chain.reverse()
    pos = {k: j for j, k in enumerate(chain)}
    starts = [max(j for j, k in enumerate(chain) if k < a.key) for a in attns]
    ends = [*starts[1:], _last_block_end(st, chain, starts[-1])]
    chain_block: dict[int, int | None] = {}
    for j, k in enumerate(chain):
        inside = [b for b, (s, e) in enumerate(zip(starts, ends, strict=True)) if s < j <= e]
        chain_block[k] = inside[0] if inside else None
    first_chain: dict[int, int] = {}
    users: dict[int, list[int]] = {k: [] for k in order}
    for k in order:
        for i in st.groups[k].inputs:
            users[i].append(k)
    for k in reversed(order):
        if k in pos:
            first_chain[k] = pos[k]
        else:
            reach = [first_chain[u] for u in users[k] if u in first_chain]
            if reach:
                first_chain[k] = min(reach)
    for k in order:
        g = st.groups[k]
        j = first_chain.get(k)
        g.block = chain_block[chain[j]] if j is not None else None
        if k in pos:
            g.attrs["residual_stream"] = True
    reads = nx.DiGraph((i, k) for k in order for i in st.groups[k].inputs)
    reads.add_nodes_from(order)
    for a, start in zip(attns, starts, strict=True):
        # The K side's input: the last stream group K derives from (the block input for
        # self-attention; an earlier one for a decoder layer's cross-attention).
        behind = set().union(*(nx.ancestors(reads, s) | {s} for s in st.sources(a.attrs["k"])))
        a.attrs["entry"] = chain[max(j for j in range(start + 1) if j == 0 or chain[j] in behind)]
    st.attns = attns
    return st


def _query_side_inputs(st: _Lowering, g: _Group) -> list[int]:
    """The inputs of ``g`` the residual stream may run through.

    An attention core's K and V reads are left out: the stream runs through the
    queries. A decoder layer's cross-attention over a fixed memory (the embeddings)
    then does not bypass the blocks; self-attention is unchanged, as its K and V read
    the block input the stream passes anyway.
    """
    if g.kind == CONTEXT:
        return [i for i in g.inputs if st.groups[i].kind == ATTN]
    if g.kind not in (ATTN, ATTN_SDPA):
        return g.inputs
    q = st.sources(g.attrs["q"])
    kv = st.sources(g.attrs["k"]) | (st.sources(g.attrs["v"]) if g.kind == ATTN_SDPA else set())
    return [i for i in g.inputs if i in q or i not in kv]


def _last_block_end(st: _Lowering, chain: list[int], start: int) -> int:
    """The last residual add after the last attention core closes the last block."""
    ends = [j for j in range(start + 1, len(chain) - 1) if st.groups[chain[j]].kind == ELEM]
    return ends[-1] if ends else len(chain) - 2


def mark_head(st: _Lowering) -> _Lowering:
    """The last linear feeding the output after every block is the LM head.

    Requires: blocks assigned. Ensures: that linear, if any, has role ``HEAD``.
    """
    output = next(n for n in reversed(st.tm.nodes) if n.op == "output")
    for k in sorted(st.sources(output), reverse=True):
        g = st.groups[k]
        if g.kind == LINEAR and g.block is None:
            g.role = Role.HEAD
            break
    return st


def assign_roles(st: _Lowering) -> _Lowering:
    """Give every group the role its data says it has.

    Requires: blocks assigned and the head marked. Ensures: a linear's role follows
    its data: into the score as Q or K, into the context as V, out of the context
    (PROJ), into an activation (FC1/GATE), multiplied with an activation (UP), out of
    an activation (FC2/DOWN), low-rank projections in front of those (Q_DOWN/KV_DOWN);
    residual adds are ``RESIDUAL``; attention, norms, activations, routers and
    embeddings (TOKEN when it reads the ids, else POS) get theirs.
    """
    tm = st.tm
    users: dict[int, list[int]] = {k: [] for k in st.groups}
    for g in st.groups.values():
        for i in g.inputs:
            users[i].append(g.key)
    order = sorted(st.groups)
    side: dict[tuple[int, int], set[str]] = {}  # (producer, attention) -> {"q","k","v"}
    for g in st.groups.values():
        if g.kind in (ATTN, ATTN_SDPA):
            for letter in ("q", "k") + (("v",) if g.kind == ATTN_SDPA else ()):
                for s in st.sources(g.attrs[letter]):
                    side.setdefault((s, g.key), set()).add(letter)
        elif g.kind == CONTEXT:
            for s in st.sources(g.attrs["v"]):
                side.setdefault((s, g.key), set()).add("v")
    for k in order:
        g = st.groups[k]
        if g.kind == ELEM and (
            g.attrs.get("residual_stream")
            or any(st.groups[i].attrs.get("residual_stream") for i in g.inputs)
        ):
            g.role = Role.RESIDUAL
    for k in reversed(order):
        g = st.groups[k]
        if g.kind not in (LINEAR, EXPERT):
            continue
        letters, below = _reach(st, k, users, side)
        below_roles = {st.groups[m].role for m in below}
        if below_roles & {Role.Q, Role.K, Role.V, Role.KV, Role.QKV}:
            g.role = Role.Q_DOWN if below_roles <= {Role.Q, Role.Q_DOWN} else Role.KV_DOWN
        elif letters:
            g.role = _qkv_role(letters)
    for g in st.groups.values():
        if g.kind == ACT:
            _mlp_roles(st, g, users)
    for g in st.groups.values():
        if g.kind == LINEAR and g.role is Role.OTHER and _reads_context(st, g):
            g.role = Role.PROJ
    for g in st.groups.values():
        if g.kind in _ATTN_KINDS:
            g.role = Role.ATTN
        elif g.kind == NORM:
            g.role = Role.NORM
        elif g.kind == ACT:
            g.role = Role.ACT
        elif g.kind == ROUTER:
            g.role = Role.ROUTER
        elif g.kind == EMBED:
            g.role = Role.TOKEN if g.out in tm.token else Role.POS
    return st


def _passes_through(st: _Lowering, key: int, block: int | None) -> bool:
    """Whether a role search may pass through an op: cheap, same block, off the residual."""
    g = st.groups[key]
    return g.kind in (ELEM, ACT, NORM, GENERIC) and g.block == block and g.role is not Role.RESIDUAL


def _reach(
    st: _Lowering, start: int, users: dict[int, list[int]], side: dict
) -> tuple[set[str], set[int]]:
    """Attention operands and first matmuls reached from ``start`` through cheap ops."""
    letters: set[str] = set()
    matmuls: set[int] = set()
    stack, seen = [start], {start}
    while stack:
        k = stack.pop()
        for u in users[k]:
            kind = st.groups[u].kind
            if kind in _ATTN_KINDS:
                letters |= side.get((k, u), set())
            elif kind in (LINEAR, EXPERT):
                matmuls.add(u)
            elif u not in seen and _passes_through(st, u, st.groups[start].block):
                seen.add(u)
                stack.append(u)
    return letters, matmuls


def _mlp_roles(st: _Lowering, act: _Group, users: dict[int, list[int]]) -> None:
    """FC1 -> act -> FC2, or GATE -> act, times UP -> DOWN, around one activation.

    An activation that only scales the output of an MLP already labelled (Qwen2-MoE's
    sigmoid gate on its shared expert) is no MLP of its own: its matmul stays OTHER
    (replicated). Activations are visited in graph order, so that MLP comes first.
    """
    feeders = _matmuls_behind(st, act.key)
    product = [u for u in users[act.key] if st.groups[u].kind == ELEM]
    ups = set()
    for p in product:
        ups |= _matmuls_behind(st, p) - feeders
    if ups and all(st.groups[u].role in (Role.DOWN, Role.FC2) for u in ups):
        return
    gated = bool(ups)
    for f in feeders:
        st.groups[f].role = Role.GATE if gated else Role.FC1
    for u in ups:
        st.groups[u].role = Role.UP
    stack, seen = [act.key], {act.key}
    while stack:
        k = stack.pop()
        for u in users[k]:
            g = st.groups[u]
            if g.kind in (LINEAR, EXPERT):
                g.role = Role.DOWN if gated else Role.FC2
            elif g.kind in (ELEM, ACT) and u not in seen and _passes_through(st, u, act.block):
                seen.add(u)
                stack.append(u)


def _matmuls_behind(st: _Lowering, key: int) -> set[int]:
    out, stack, seen = set(), [key], {key}
    while stack:
        for i in st.groups[stack.pop()].inputs:
            kind = st.groups[i].kind
            if kind in (LINEAR, EXPERT):
                out.add(i)
            elif kind == ELEM and i not in seen and st.groups[i].role is not Role.RESIDUAL:
                seen.add(i)
                stack.append(i)
    return out


def _reads_context(st: _Lowering, g: _Group) -> bool:
    stack, seen = list(g.inputs), set()
    while stack:
        k = stack.pop()
        kind = st.groups[k].kind
        if kind in (CONTEXT, ATTN_SDPA):
            return True
        if kind == ELEM and k not in seen and st.groups[k].role is not Role.RESIDUAL:
            seen.add(k)
            stack.extend(st.groups[k].inputs)
    return False


def measure_attention(st: _Lowering) -> _Lowering:
    """Read each attention core's head counts and what a token caches for it.

    Requires: blocks assigned (each core's ``entry``). Ensures: ``st.dims_of`` holds
    (heads, kv heads, q/k head dim, v head dim) and ``st.kv`` (K elements, V elements)
    per token for every attention core. The cache is the smallest set of per-token
    tensors between the block input and K (a weighted minimum vertex cut); V costs
    nothing extra when the K cut already determines it (MLA's latent). Raises
    ``ModelError`` for an attention core that is not 4-D.
    """
    st.kv = {a.key: _kv_elems(st, a) for a in st.attns}
    st.dims_of = {a.key: _heads(st, a) for a in st.attns}
    return st


def _kv_elems(st: _Lowering, attn: _Group) -> tuple[int, int]:
    """Elements one token caches for the score op (K) and the context op (V)."""
    key = attn.attrs["entry"]
    if key in st.groups:
        entry = set(st.groups[key].nodes)
    else:  # the block input is the model input itself
        entry = {n for n in st.tm.nodes if n.op == "placeholder"}
    k_node = attn.attrs["k"]
    v_node = attn.attrs["v"] if attn.kind == ATTN_SDPA else st.context_of(attn).attrs["v"]
    k_cut = _min_cut(st, entry, k_node)
    if not _reachable(st, entry, v_node, blocked=k_cut):
        return _size(st, k_cut), 0
    return _size(st, k_cut), _size(st, _min_cut(st, entry, v_node))


def _size(st: _Lowering, nodes: set[fx.Node]) -> int:
    return sum(st.tm.per_token(n) or 0 for n in nodes)


def _region(st: _Lowering, entry: set[fx.Node], sink: fx.Node) -> list[fx.Node]:
    """Token-dependent nodes between the block entry and ``sink``, in graph order."""
    found, stack = set(), [sink]
    while stack:
        n = stack.pop()
        if n in found or n in entry or n not in st.tm.token:
            continue
        found.add(n)
        stack.extend(n.all_input_nodes)
    return sorted(found, key=st.tm.index.__getitem__)


def _min_cut(st: _Lowering, entry: set[fx.Node], sink: fx.Node) -> set[fx.Node]:
    region = _region(st, entry, sink)
    n_region = len(region)
    scale = (n_region + 1) * (n_region + 1)
    flow = nx.DiGraph()
    src = ("entry",)
    for rank, n in enumerate(region):
        size = st.tm.per_token(n)
        if size is not None:
            # Ties go to the cut nearest K: later nodes are a hair cheaper.
            flow.add_edge((n, 0), (n, 1), capacity=size * scale + n_region - rank)
        else:
            flow.add_edge((n, 0), (n, 1))
        for i in n.all_input_nodes:
            if i in entry:
                flow.add_edge(src, (n, 0))
            elif i in st.tm.token and (i, 1) in flow:
                flow.add_edge((i, 1), (n, 0))
    if src not in flow:
        return set()
    _, (reach, _) = nx.minimum_cut(flow, src, (sink, 1))
    return {n for n in region if (n, 0) in reach and (n, 1) not in reach}


def _reachable(st: _Lowering, entry: set[fx.Node], target: fx.Node, blocked: set[fx.Node]) -> bool:
    region = set(_region(st, entry, target))
    stack = [n for n in region if any(i in entry for i in n.all_input_nodes)]
    seen: set[fx.Node] = set()
    while stack:
        n = stack.pop()
        if n in seen or n in blocked:
            continue
        if n is target:
            return True
        seen.add(n)
        stack.extend(u for u in n.users if u in region)
    return False


def _heads(st: _Lowering, attn: _Group) -> tuple[int, int, int, int]:
    """(heads, kv heads, q/k head dim, v head dim) of one attention core."""
    tm = st.tm
    q_shape = tm.shape(attn.attrs["q"])
    v_node = attn.attrs["v"] if attn.kind == ATTN_SDPA else st.context_of(attn).attrs["v"]
    v_shape = tm.shape(v_node)
    if q_shape is None or v_shape is None or len(q_shape) != 4:
        raise ModelError(f"model {st.name!r}: attention {attn.out.name} is not 4-D")
    heads, head_dim = q_shape[-3], q_shape[-1]
    sizes, n = [], attn.attrs["k"]
    while True:
        size = tm.per_token(n)
        if size is not None:
            sizes.append(size)
        if tm.opname(n) not in _HEAD_VIEWS or not n.all_input_nodes:
            break
        n = n.all_input_nodes[0]
    kv = max(1, min(sizes) // head_dim) if sizes else heads
    return heads, kv if heads % kv == 0 else heads, head_dim, v_shape[-1]


def _weights(st: _Lowering, g: _Group, owner: set[str]) -> tuple[list[Weight], Weight | None]:
    """Weights the op owns, and a weight it reads but an earlier op owns (tied).

    A reused weight (a tied LM head, a module called twice) is owned by its first
    user, so parameters count once; a matmul records it as ``tied`` to keep costing
    its reads, other ops just read it.
    """
    own, tied = [], None
    for n in g.nodes:
        for pname, p in st.tm.params[n]:
            w = Weight(pname, tuple(int(s) for s in p.shape))
            if pname not in owner:
                owner.add(pname)
                own.append(w)
            elif g.kind in (LINEAR, ROUTER) and len(w.shape) == 2:
                tied = w
    return own, tied


def _sdpa_operands(n: fx.Node) -> tuple[fx.Node, fx.Node, fx.Node]:
    args = list(n.args) + [n.kwargs.get(k) for k in ("query", "key", "value")[len(n.args) :]]
    return args[0], args[1], args[2]


def _operands(n: fx.Node) -> list[fx.Node]:
    return [a for a in n.args if isinstance(a, fx.Node)]


def _qkv_role(letters: set[str]) -> Role:
    if letters == {"q"}:
        return Role.Q
    if letters == {"k"}:
        return Role.K
    if letters == {"v"}:
        return Role.V
    return Role.KV if letters == {"k", "v"} else Role.QKV


def build_graph(st: _Lowering) -> _Lowering:
    """Turn every group into ``Op``s of its kind and join them into ``st.graph``.

    Requires: roles and attention measured. Ensures: ``st.graph`` holds one op per
    group (an SDPA core becomes a score and a context op), in group order, named by
    module path, each weight owned by its first user (a reuse is ``tied``), with the
    model's traits in ``ModelInfo``; ops between expert matmuls count the top_k of E
    experts a token uses. Verification is the pass manager's.
    """
    tm, attns, kv, dims_of = st.tm, st.attns, st.kv, st.dims_of
    top_k = {g.block: int(g.attrs["top_k"]) for g in st.groups.values() if g.kind == ROUTER}
    ops: list[tuple[Op, list[str]]] = []
    out_name: dict[int, str] = {}
    owner: set[str] = set()
    taken: set[str] = set()
    expert_fraction: dict[int, tuple[int, int]] = {}  # group -> (top_k, experts)
    for key in sorted(st.groups):
        g = st.groups[key]
        base = _op_name(tm, g, taken)
        inputs = [out_name[i] for i in g.inputs]
        common = {"block": g.block, "role": g.role}
        weights, tied = _weights(st, g, owner)
        attrs = {k: v for k, v in g.attrs.items() if k in ("flops_per_element",)}
        attrs["source"] = g.out.name
        if g.kind in (ATTN, ATTN_SDPA):
            heads, kvh, dqk, dv = dims_of[key]
            k_elems, v_elems = kv[key]
            score = Op(
                f"{base}.score", OpKind.ATTN_SCORE,
                {"heads": heads, "kv_heads": kvh, "head_dim": dqk, "kv_elems": k_elems},
                attrs={"source": g.out.name}, **common,
            )  # fmt: skip
            v_srcs = st.sources(g.attrs["v"]) if g.kind == ATTN_SDPA else frozenset()
            qk_srcs = st.sources(g.attrs["q"]) | st.sources(g.attrs["k"])
            score_ins = [out_name[i] for i in g.inputs if i in qk_srcs or i not in v_srcs]
            ops.append((score, score_ins))
            out_name[key] = score.name
            if g.kind == ATTN_SDPA:
                v_ins = [out_name[i] for i in sorted(v_srcs)]
                ctx = Op(
                    f"{base}.context", OpKind.ATTN_CONTEXT,
                    {"heads": heads, "kv_heads": kvh, "head_dim": dv, "kv_elems": v_elems},
                    attrs={"source": g.out.name}, **common,
                )  # fmt: skip
                ops.append((ctx, [score.name, *v_ins]))
                out_name[key] = ctx.name
            continue
        if g.kind == CONTEXT:
            attn = next(a for a in attns if a.key in g.inputs)
            heads, kvh, _, dv = dims_of[attn.key]
            op = Op(
                base, OpKind.ATTN_CONTEXT,
                {"heads": heads, "kv_heads": kvh, "head_dim": dv, "kv_elems": kv[attn.key][1]},
                attrs=attrs, **common,
            )  # fmt: skip
        elif g.kind in (LINEAR, ROUTER, EXPERT):
            op = _matmul_op(st, g, base, weights, tied, top_k, attrs)
            if op.kind is OpKind.EXPERT_MATMUL:
                expert_fraction[key] = (op.dims["top_k"], op.dims["num_experts"])
        elif g.kind in (NORM, ACT, ELEM):
            kind = {NORM: OpKind.NORM, ACT: OpKind.ACTIVATION, ELEM: OpKind.ELEMENTWISE}[g.kind]
            attrs["inputs"] = max(1, len(inputs))
            width = tm.per_token(g.out) or 1
            # Between expert matmuls only top_k of the E experts compute for a token.
            fractions = {expert_fraction.get(i) for i in g.inputs}
            if g.kind != NORM and len(fractions) == 1 and None not in fractions:
                expert_fraction[key] = fraction = fractions.pop()
                width = width * fraction[0] // fraction[1]
            op = Op(base, kind, {"width": width}, tuple(weights), attrs=attrs, **common)
        elif g.kind == EMBED:
            table = weights[0].shape if weights else tied.shape
            op = Op(
                base, OpKind.EMBEDDING, {"num_embeddings": table[0], "width": table[1]},
                tuple(weights), attrs=attrs, **common,
            )  # fmt: skip
        else:
            op = _generic_op(st, g, base, weights, attrs, common)
        ops.append((op, inputs))
        out_name[key] = op.name
    graph = Graph(_model_info(st, [op for op, _ in ops]))
    for op, inputs in ops:
        graph.add_op(op, inputs)
    st.graph = graph
    return st


def _op_name(tm: TracedModule, g: _Group, taken: set[str]) -> str:
    """Module path plus what the op is: ``blocks.3.attn.q``, ``blocks.3.attn.attention``."""
    anchor = g.nodes[0] if g.kind in (ROUTER, LINEAR, EXPERT) else g.out
    path = tm.path(anchor)
    owned = [p for p, _ in tm.params[anchor]]
    if anchor.op == "call_module" or (
        owned and all(p.rpartition(".")[0] == path for p in owned)
    ):  # the op is the whole module (torch.export names modules' ops this way)
        name = path
    else:
        what = {ATTN: "attention", ATTN_SDPA: "attention", CONTEXT: "attention.context"}
        what = what.get(g.kind, anchor.name)
        name = f"{path}.{what}" if path else what
    if name in taken:
        name = f"{name}.{anchor.name}"
    taken.add(name)
    return name


def _matmul_op(
    st: _Lowering,
    g: _Group,
    name: str,
    weights: list[Weight],
    tied: Weight | None,
    top_k: dict[int | None, int],
    attrs: dict[str, object],
) -> Op:
    tm = st.tm
    n = g.nodes[0]
    matrices = [w for w in (*weights, *([tied] if tied else [])) if len(w.shape) >= 2]
    acts = [a for a in _operands(n) if tm.param_behind(a) is None]
    in_shape = tm.shape(acts[0]) if acts else None
    if not matrices or in_shape is None:
        raise ModelError(f"model {st.name!r}: cannot read the weight of {n.name}")
    matrix = matrices[0]
    n_in = in_shape[-1]
    per_expert = matrix.numel // matrix.shape[0] if g.kind == EXPERT else matrix.numel
    n_out = per_expert // n_in
    dims = {"in_features": n_in, "out_features": n_out}
    if g.kind == EXPERT:
        experts = matrix.shape[0]
        dims |= {"num_experts": experts, "top_k": top_k.get(g.block, experts)}
        kind = OpKind.EXPERT_MATMUL
    elif g.kind == ROUTER:
        kind = OpKind.ROUTER
    else:
        kind = OpKind.LM_HEAD if g.role is Role.HEAD else OpKind.MATMUL
    if g.kind == LINEAR and g.block is not None and top_k.get(g.block) and g.role in (
        Role.GATE, Role.UP, Role.DOWN, Role.FC1, Role.FC2
    ):  # fmt: skip
        attrs["expert"] = "shared"
    return Op(name, kind, dims, tuple(weights), block=g.block, role=g.role, attrs=attrs, tied=tied)


def _generic_op(
    st: _Lowering, g: _Group, name: str, weights: list[Weight], attrs: dict, common: dict
) -> Op:
    """An unrecognised op: per-token FLOPs and bytes measured from traced shapes.

    FLOPs: 2 per weight element if it owns weights (a matmul-like layer), 2*M*N*K for
    an activation-activation matmul, else one per output element.
    """
    tm = st.tm
    n = g.out
    out_elems = tm.per_token(n) or 0
    operands = [a for a in n.all_input_nodes if a in tm.live]
    in_elems = sum(tm.per_token(a) or 0 for a in operands)
    if weights:
        flops = 2 * sum(w.numel for w in weights)
    elif tm.opname(n) in MATMULS and operands and tm.shape(operands[0]):
        flops = 2 * out_elems * tm.shape(operands[0])[-1]
    else:
        flops = out_elems
    attrs |= {
        "flops_per_token": flops,
        "in_elems_per_token": in_elems,
        "out_elems_per_token": out_elems,
        "source": f"{n.name}: {tm.opname(n)}",
    }
    return Op(name, OpKind.GENERIC, {}, tuple(weights), attrs=attrs, **common)


def _model_info(st: _Lowering, ops: list[Op]) -> ModelInfo:
    attns, max_positions = st.attns, st.max_positions
    token = [op for op in ops if op.kind is OpKind.EMBEDDING and op.role is Role.TOKEN]
    if not token:
        raise ModelError(f"model {st.name!r}: no token embedding found (nn.Embedding of ids)")
    pos = [op for op in ops if op.kind is OpKind.EMBEDDING and op.role is Role.POS]
    experts = [op for op in ops if op.kind is OpKind.EXPERT_MATMUL]
    widths = [
        op.dims["out_features"]
        for op in ops
        if op.role in (Role.FC1, Role.UP) and "expert" not in op.attrs
    ]
    heads, kvh, head_dim, _ = st.dims_of[attns[0].key]
    return ModelInfo(
        name=st.name,
        num_layers=len(attns),
        d_model=token[0].dims["width"],
        num_heads=heads,
        num_kv_heads=kvh,
        head_dim=head_dim,
        vocab_size=token[0].dims["num_embeddings"],
        ffn_dim=widths[0] if widths else 0,
        max_positions=max_positions or (pos[0].dims["num_embeddings"] if pos else 2048),
        parallel_block=_parallel_block(st, attns[0]),
        num_experts=experts[0].dims["num_experts"] if experts else 0,
        experts_per_token=experts[0].dims["top_k"] if experts else 0,
        frontend=st.tm.frontend,
        recogniser=f"structural recogniser on the {st.tm.frontend} graph",
    )


def _parallel_block(st: _Lowering, attn: _Group) -> bool:
    """Parallel when the block's first MLP matmul does not read the attention output."""
    block = [g for g in st.groups.values() if g.block == attn.block]
    mlp_roles = (Role.FC1, Role.GATE, Role.UP)
    first = [g for g in block if g.role in mlp_roles or g.kind == ROUTER]
    if not first:
        return False
    after_attn, stack = set(), [attn.key]
    by_input: dict[int, list[int]] = {}
    for g in block:
        for i in g.inputs:
            by_input.setdefault(i, []).append(g.key)
    while stack:
        for u in by_input.get(stack.pop(), []):
            if u not in after_attn:
                after_attn.add(u)
                stack.append(u)
    return min(first, key=lambda g: g.key).key not in after_attn


def lower_module(
    module: nn.Module, name: str, example_len: int = 8, *, max_positions: int | None = None
) -> Graph:
    """Lower a decoder-only language model (``forward(ids) -> logits``) to a verified Graph.

    The module is traced on meta tensors of ``example_len`` tokens (parameters not on
    the meta device are moved there, in place). ``max_positions`` overrides the context
    length recorded in ``ModelInfo`` (else: rows of a learned position table, or 2048).
    Raises ``ModelError`` when the module cannot be traced or has no attention.
    """
    return lower_traced(trace(module, name, example_len), name, max_positions)


LOWERING_PASSES: tuple[Pass[_Lowering], ...] = tuple(
    Pass(fn.__name__, fn)
    for fn in (group_nodes, assign_blocks, mark_head, assign_roles, measure_attention, build_graph)
)


def lower_traced(tm: TracedModule, name: str, max_positions: int | None = None) -> Graph:
    """Lower an already traced graph (torch.fx, torch.export, or one built by the ONNX
    frontend) by recognising its structure; warn once about ops left ``GENERIC``."""
    st = run_passes(_Lowering(tm, name, max_positions), LOWERING_PASSES, [f"trace ({tm.frontend})"])
    assert st.graph is not None  # build_graph ran
    graph = st.graph
    unknown = graph.unrecognised()
    if unknown:
        names = ", ".join(f"{op.name} ({op.attrs['source']})" for op in unknown[:12])
        more = f" and {len(unknown) - 12} more" if len(unknown) > 12 else ""
        warnings.warn(
            f"{name}: {len(unknown)} ops not recognised, costed from traced shapes: {names}{more}",
            UnrecognisedOpsWarning,
            stacklevel=2,
        )
    return graph


def replace_weights(graph: Graph, fn: Callable[[Weight], tuple[Weight, ...]]) -> Graph:
    """A copy of ``graph`` with every weight replaced by ``fn(weight)``.

    Frontends that know more than a traced shape use it: an ONNX initializer's dtype, a
    checkpoint's tensor names and exact bytes (one traced weight may be several stored
    tensors, e.g. stacked experts). A tied weight must map to exactly one tensor.
    """
    out = graph.copy()
    for op in graph.ops:
        if not op.weights and op.tied is None:
            continue
        weights = tuple(new for w in op.weights for new in fn(w))
        tied = None
        if op.tied is not None:
            (tied,) = fn(op.tied)
        out.replace_op(replace(op, weights=weights, tied=tied))
    return out

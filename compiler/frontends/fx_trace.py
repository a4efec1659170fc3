"""Tracing a torch module on the meta device, and reading what its fx nodes are.

``trace`` tries torch.fx symbolic tracing (then ``ShapeProp``) and falls back to
``torch.export`` in non-strict mode, so modules with shape-dependent Python control
flow still lower; torch.nn's own attention modules (``nn.MultiheadAttention``, the
``nn.Transformer*Layer``s) are traced into, not kept as leaves, and so reach export.
Both give a ``GraphModule``; ``TracedModule`` hides the difference (shapes live in
``tensor_meta`` for fx and in ``val`` for export) and answers the questions the
lowering asks of a node: its canonical operator name, its shape, the parameters it
consumes, and whether it depends on the tokens or on any weight. Beyond which torch.nn
modules to trace into, nothing here knows about transformers.
"""

from __future__ import annotations

import contextlib
import io
import operator
import warnings
from dataclasses import dataclass, field
from math import prod

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from chipletc.ir.errors import ModelError

from .user_file import one_line

__all__ = ["TracedModule", "trace"]

# Operator families, by canonical name (see ``TracedModule.opname``).
FOLD = frozenset(
    [
        "view",
        "reshape",
        "transpose",
        "permute",
        "contiguous",
        "unsqueeze",
        "squeeze",
        "flatten",
        "unflatten",
        "expand",
        "expand_as",
        "repeat",
        "repeat_interleave",
        "getitem",
        "split",
        "split_with_sizes",
        "chunk",
        "cat",
        "stack",
        "to",
        "float",
        "half",
        "bfloat16",
        "type",
        "type_as",
        "dropout",
        "clone",
        "detach",
        "alias",
        "narrow",
        "select",
        "slice",
        "t",
        "unbind",
        "identity",
        "output",
    ]
)
UNTAINTED = frozenset(
    [
        "size",
        "dim",
        "sym_size",
        "numel",
        "getattr",
        "arange",
        "zeros",
        "ones",
        "full",
        "empty",
        "zeros_like",
        "ones_like",
        "full_like",
        "empty_like",
        "new_zeros",
        "new_ones",
        "new_full",
        "new_empty",
        "tensor",
        "scalar_tensor",
    ]
)
ELEMENTWISE = frozenset(
    [
        "add",
        "sub",
        "rsub",
        "mul",
        "div",
        "neg",
        "pow",
        "sqrt",
        "rsqrt",
        "exp",
        "log",
        "abs",
        "reciprocal",
        "masked_fill",
        "where",
        "clamp",
        "clamp_min",
        "maximum",
        "minimum",
        "square",
        "mean",
        "sum",
        "var",
    ]
)
REDUCTIONS = frozenset({"mean", "var"})
# FLOPs per element of each activation (ir/op.py: GELU 8, SiLU 4, ReLU 1).
ACTIVATIONS = {
    "gelu": 8, "silu": 4, "relu": 1, "sigmoid": 4, "tanh": 4, "erf": 4, "softplus": 4,
    "leaky_relu": 1, "elu": 4, "mish": 8, "hardswish": 3, "relu6": 1,
}  # fmt: skip
NORMS = frozenset({"layer_norm", "rms_norm", "group_norm"})
SOFTMAX = frozenset({"softmax", "log_softmax", "safe_softmax"})
MATMULS = frozenset({"linear", "matmul", "bmm", "mm", "einsum", "addmm", "baddbmm"})
SDPA = "scaled_dot_product_attention"

_MODULES: dict[type[nn.Module], str] = {
    nn.Linear: "linear",
    nn.Embedding: "embedding",
    nn.LayerNorm: "layer_norm",
    nn.RMSNorm: "rms_norm",
    nn.GroupNorm: "group_norm",
    nn.Dropout: "dropout",
    nn.Identity: "identity",
    nn.GELU: "gelu",
    nn.ReLU: "relu",
    nn.SiLU: "silu",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.Softmax: "softmax",
}
_ALIASES = {
    "iadd": "add",
    "imul": "mul",
    "truediv": "div",
    "floordiv": "div",
    "unsafe_view": "view",
    "to_copy": "to",
    "concat": "cat",
    "concatenate": "cat",
    "lift_fresh_copy": "clone",
}


@dataclass
class TracedModule:
    """A traced module plus per-node facts, computed once in graph order."""

    gm: fx.GraphModule
    frontend: str
    tokens: int  # batch x sequence length of the example input
    nodes: list[fx.Node] = field(default_factory=list)
    index: dict[fx.Node, int] = field(default_factory=dict)
    names: dict[fx.Node, str] = field(default_factory=dict)
    token: set[fx.Node] = field(default_factory=set)  # depends on the token ids
    live: set[fx.Node] = field(default_factory=set)  # depends on tokens or on a weight
    params: dict[fx.Node, list[tuple[str, torch.Tensor]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.nodes = list(self.gm.graph.nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        canonical = {id(p): name for name, p in self.gm.named_parameters()}
        for n in self.nodes:
            self.names[n] = self._opname(n)
            self.params[n] = self._params(n, canonical)
            inputs = n.all_input_nodes
            name = self.names[n]
            if n.op == "placeholder":
                self.token.add(n)
                self.live.add(n)
            elif name not in UNTAINTED and n.users:  # a node nobody reads (an assert) is dead
                if any(i in self.token for i in inputs):
                    self.token.add(n)
                if self.params[n] or any(i in self.live for i in inputs):
                    self.live.add(n)

    # -- facts about one node ---------------------------------------------------------

    def opname(self, n: fx.Node) -> str:
        return self.names[n]

    def shape(self, n: fx.Node) -> tuple[int, ...] | None:
        meta = n.meta.get("tensor_meta", n.meta.get("val"))
        shape = getattr(meta, "shape", None)
        if shape is None:
            return None
        try:
            return tuple(int(s) for s in shape)
        except TypeError:
            return None

    def per_token(self, n: fx.Node) -> int | None:
        """Elements of the node's output per token of the example input."""
        shape = self.shape(n)
        return None if shape is None else prod(shape) // self.tokens

    def is_fold(self, n: fx.Node) -> bool:
        return self.names[n] in FOLD and not self.params[n]

    def path(self, n: fx.Node) -> str:
        """Dotted path of the innermost module the node was traced in ("" at the top)."""
        if n.op == "call_module":
            return str(n.target)
        stack = n.meta.get("nn_module_stack") or {}
        return str(list(stack.values())[-1][0]) if stack else ""

    # -- computing the facts ------------------------------------------------------------

    def _opname(self, n: fx.Node) -> str:
        if n.op == "call_module":
            mod = self.gm.get_submodule(n.target)
            for cls, name in _MODULES.items():
                if type(mod) is cls:
                    return name
            return type(mod).__name__.lower()
        if n.op == "call_method":
            name = str(n.target)
        elif n.op == "call_function":
            target = n.target
            if target is operator.getitem:
                return "getitem"
            packet = getattr(target, "overloadpacket", None)  # aten ops from torch.export
            name = getattr(packet or target, "__name__", str(target))
        else:
            return n.op
        name = name.strip("_")
        return _ALIASES.get(name, name)

    def _params(self, n: fx.Node, canonical: dict[int, str]) -> list[tuple[str, torch.Tensor]]:
        """Parameters the node consumes as operands (through views of a parameter)."""
        if n.op == "call_module":
            mod = self.gm.get_submodule(n.target)
            return [(canonical[id(p)], p) for p in mod.parameters(recurse=False)]
        if n.op not in ("call_function", "call_method") or self.names[n] in FOLD:
            return []
        out = []
        for arg in n.all_input_nodes:
            param = self.param_behind(arg)
            if param is not None and id(param) in canonical:
                out.append((canonical[id(param)], param))
        return out

    def param_behind(self, n: fx.Node) -> nn.Parameter | None:
        """The parameter ``n`` is (or is a view of), if any."""
        while n.op != "get_attr":
            if self.names.get(n) not in FOLD or len(n.all_input_nodes) != 1:
                return None
            n = n.all_input_nodes[0]
        value = self.gm
        for part in str(n.target).split("."):
            value = getattr(value, part)
        return value if isinstance(value, nn.Parameter) else None


# torch.nn's own attention modules are leaves to fx's default tracer, and their forward
# checks shapes in Python, which fx cannot trace: tracing into them hands the module to
# torch.export, which sees their projections and scaled_dot_product_attention.
_TRACED_INTO = (
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.TransformerEncoder,
    nn.TransformerDecoder,
)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return not isinstance(m, _TRACED_INTO) and super().is_leaf_module(m, module_qualified_name)


def trace(module: nn.Module, name: str, example_len: int) -> TracedModule:
    """Trace ``module`` on meta tensors; raise ``ModelError`` if neither tracer can.

    The error names the first line of what failed; when both tracers fail the same way
    (forward does not accept token ids, say) it is said once. It is raised ``from`` the
    torch.export error, whose traceback holds the user's frames.
    """
    if any(p.device.type != "meta" for p in module.parameters()):
        module = module.to("meta")  # shapes are all we need; moves the module in place
    module.eval()
    ids = torch.zeros(1, example_len, dtype=torch.long, device="meta")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            gm = fx.GraphModule(module, _Tracer().trace(module), type(module).__name__)
            with contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints tracebacks
                ShapeProp(gm).propagate(ids)
            return TracedModule(gm, "torch.fx", example_len)
        except Exception as fx_err:  # any tracing failure: try the other tracer
            first = fx_err.__cause__ if isinstance(fx_err.__cause__, Exception) else fx_err
        try:
            exported = torch.export.export(module, (ids,), strict=False)
            return TracedModule(exported.module(), "torch.export", example_len)
        except Exception as export_err:
            by_fx, by_export = one_line(first), one_line(export_err)
            why = by_fx if by_fx == by_export else f"torch.fx: {by_fx}; torch.export: {by_export}"
            raise ModelError(
                f"model {name!r}: cannot trace forward(input_ids) on a 1x{example_len} batch "
                f"of token ids ({why}); chipletc lowers language models whose forward takes "
                "token ids, free of data-dependent control flow"
            ) from export_err

"""The ONNX frontend: an ``.onnx`` file to the same IR as the torch.fx path, weights unread.

Why through torch.fx: the structural recogniser of ``fx.py`` (attention cores, residual
stream, roles, KV min-cut) works on a dataflow graph of canonical operators. Rather than
a second recogniser, the ONNX graph is rewritten into a ``torch.fx`` graph whose nodes
call the torch function of the same meaning, with the ONNX shapes as meta tensors and
each weight a meta-device parameter; ``lower_traced`` does the rest. Steps:

1. ``_read``: ``onnx.load(load_external_data=False)``; initializers whose data lives in
   external files (any number of them, present or not) contribute their dims and dtype
   only. ``_inline_cache_branch``: optimum's merged decoder (an If on
   ``use_cache_branch``) becomes the decoder without past it holds.
2. ``_infer_shapes``: symbolic dims of integer inputs (ids, mask, positions) are pinned
   to (1, example_len), other inputs' (past keys and values) to 0 past tokens; ONNX shape
   inference runs with data propagation (Shape -> Reshape chains), and
   ``_contrib_shapes`` adds the outputs of onnxruntime's contrib ops.
3. ``_Importer.classify``: the token input (an integer input, ``input_ids`` first);
   weights (what torch's exporter marks PARAMETER, else initializers and static float
   inputs read by a matmul, a quantized matmul, gather, norm, or as a per-feature bias
   or scale); inputs with symbolic dims are runtime data, never weights; anything else
   (shape arithmetic, masks, rotary tables, buffers) is constant and dropped. A quantized
   weight's scales, zero points and group indices add their bytes to it.
4. ``_Importer.emit``: every node that depends on the tokens or a weight becomes fx
   nodes. Exporter decompositions are put back: MatMul + bias Add is one linear (also
   behind a quantized matmul's rescaling); MatMulNBits, QLinearMatMul, MatMulInteger and
   DequantizeLinear + MatMul are linears; fused ops (Gemm, LayerNormalization,
   RMSNormalization, SkipLayerNormalization, Attention with its packed QKV weight,
   MultiHeadAttention, GroupQueryAttention) become their torch counterparts; torch's NaN
   guard on attention probabilities is read as the probabilities.

Ops with no counterpart become ``GENERIC`` (costed from their shapes, listed by
``chipletc inspect``); a live op whose output shape inference cannot give, or one with
subgraphs (other than the merged decoder's If), cannot be costed and raises
``UnsupportedOpError`` naming the node. Not handled: graphs whose logits are not the
first output.
"""

from __future__ import annotations

import ast
import operator
import warnings
from collections.abc import Callable
from math import prod
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import fx, nn

from chipletc.ir.dtypes import DType
from chipletc.ir.errors import ModelError, UnsupportedOpError
from chipletc.ir.graph import Graph
from chipletc.ir.op import Weight

from .fx import lower_traced, replace_weights
from .fx_trace import TracedModule

__all__ = ["lower_onnx"]

# ONNX element type -> (storage dtype in the IR, bits per element as stored).
_DTYPES: dict[int, tuple[DType, int]] = {
    TensorProto.FLOAT: (DType.FP32, 32),
    TensorProto.DOUBLE: (DType.FP32, 64),
    TensorProto.FLOAT16: (DType.FP16, 16),
    TensorProto.BFLOAT16: (DType.BF16, 16),
    TensorProto.FLOAT8E4M3FN: (DType.FP8, 8),
    TensorProto.FLOAT8E4M3FNUZ: (DType.FP8, 8),
    TensorProto.FLOAT8E5M2: (DType.FP8, 8),
    TensorProto.FLOAT8E5M2FNUZ: (DType.FP8, 8),
    TensorProto.INT8: (DType.INT8, 8),
    TensorProto.UINT8: (DType.INT8, 8),
    TensorProto.INT4: (DType.INT4, 4),
    TensorProto.UINT4: (DType.INT4, 4),
    TensorProto.FLOAT4E2M1: (DType.INT4, 4),
}
_INTEGER = frozenset({TensorProto.INT64, TensorProto.INT32, TensorProto.UINT32})
_PARAM_KIND = "pkg.torch.export.graph_signature.InputSpec.kind"
_SCOPES = "pkg.torch.onnx.name_scopes"

# Layout-only ops: (torch function, positions of their data inputs).
_FOLD: dict[str, tuple[Callable, tuple[int, ...]]] = {
    "Reshape": (torch.reshape, (0,)),
    "Transpose": (torch.permute, (0,)),
    "Unsqueeze": (torch.unsqueeze, (0,)),
    "Squeeze": (torch.squeeze, (0,)),
    "Flatten": (torch.flatten, (0,)),
    "Expand": (torch.Tensor.expand, (0,)),
    "Tile": (torch.Tensor.repeat, (0,)),
    "Slice": (torch.narrow, (0,)),
    "Cast": (torch.Tensor.to, (0,)),
    "CastLike": (torch.Tensor.to, (0,)),
    "DequantizeLinear": (torch.Tensor.to, (0,)),
    "QuantizeLinear": (torch.Tensor.to, (0,)),
    "DynamicQuantizeLinear": (torch.Tensor.to, (0,)),
    "Identity": (torch.clone, (0,)),
    "Dropout": (F.dropout, (0,)),
    "Concat": (torch.cat, ()),  # () = every input
    "Split": (torch.split, (0,)),
    "SplitToSequence": (torch.split, (0,)),
    "SequenceAt": (operator.getitem, (0,)),
}
# Compute ops with a torch counterpart of the same meaning.
_COMPUTE: dict[str, Callable] = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div,
    "Pow": torch.pow, "Sqrt": torch.sqrt, "Reciprocal": torch.reciprocal, "Neg": torch.neg,
    "Exp": torch.exp, "Log": torch.log, "Abs": torch.abs, "Where": torch.where,
    "Max": torch.maximum, "Min": torch.minimum, "Clip": torch.clamp,
    "ReduceMean": torch.mean, "ReduceSum": torch.sum,
    "Relu": F.relu, "Gelu": F.gelu, "FastGelu": F.gelu, "QuickGelu": F.gelu,
    "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf, "Softplus": F.softplus,
    "LeakyRelu": F.leaky_relu, "Elu": F.elu, "Mish": F.mish, "HardSwish": F.hardswish,
    "Swish": F.silu, "Silu": F.silu, "BiasGelu": F.gelu,
    "RotaryEmbedding": torch.mul,  # elementwise on the queries or keys it rotates
    "Softmax": torch.softmax, "LogSoftmax": torch.log_softmax,
    "MatMul": torch.matmul, "Einsum": torch.einsum, "TopK": torch.topk,
    "ScatterElements": torch.scatter, "ScatterND": torch.scatter,
    "GatherElements": torch.gather,
}  # fmt: skip
# Data inputs of ops whose other inputs are shapes, axes or counts.
_DATA_INPUTS = {
    "TopK": (0,), "ReduceMean": (0,), "ReduceSum": (0,), "Clip": (0,), "RotaryEmbedding": (0,),
}  # fmt: skip
# Outputs that depend on a tensor's shape only, never on its values.
_SHAPE_ONLY = frozenset({"Shape", "Size", "ConstantOfShape", "Range", "EyeLike"})
_NORMS = frozenset(
    {"LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization",
     "SkipLayerNormalization", "SkipSimplifiedLayerNormalization"}
)  # fmt: skip
_ATTENTION = frozenset({"Attention", "MultiHeadAttention", "GroupQueryAttention"})
_WEIGHT_READERS = frozenset({"MatMul", "Gemm", "Einsum"})
# Quantized matmuls: op -> (position of the weight, positions of its scales, zero points
# and group indices, whose bytes count with it).
_QUANT_MATMULS: dict[str, tuple[int, tuple[int, ...]]] = {
    "MatMulNBits": (1, (2, 3, 4)),
    "QLinearMatMul": (3, (4, 5)),
    "MatMulInteger": (1, (3,)),
    "DequantizeLinear": (0, (1, 2)),  # a quantized weight dequantized before a MatMul
}
_QUANT_AT = {op: at for op, (at, _) in _QUANT_MATMULS.items()}
# Ops of onnxruntime's contrib domain whose first output has the first input's shape
# (ONNX shape inference does not know them).
_SAME_SHAPE = frozenset(
    {"SkipLayerNormalization", "SkipSimplifiedLayerNormalization",
     "SimplifiedLayerNormalization", "FastGelu", "BiasGelu", "QuickGelu", "Gelu",
     "RotaryEmbedding"}
)  # fmt: skip


def lower_onnx(path: Path, example_len: int = 8) -> Graph:
    """Lower the decoder-only language model in the ONNX file ``path`` to a verified Graph.

    Reads the graph and the dims and dtypes of its weights, never their data. Weights
    keep their ONNX names and element types. Raises ``ModelError`` for a file that is
    not ONNX or holds no transformer, ``UnsupportedOpError`` for an op it cannot cost.
    """
    model, runtime = _infer_shapes(_inline_cache_branch(_read(path)), path, example_len)
    imp = _Importer(model, path.name, runtime)
    imp.classify()
    tm = TracedModule(imp.emit(), "onnx", imp.tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the CLI lists unrecognised ops itself
        graph = lower_traced(tm, path.stem)
    return replace_weights(graph, lambda w: (imp.weight(w),))


def _read(path: Path) -> onnx.ModelProto:
    where = f"model {path}"
    if not path.is_file():
        raise ModelError(f"{where}: {'a directory, not a file' if path.is_dir() else 'not found'}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises its own DecodeError on a broken file
        raise ModelError(f"{where}: not a readable ONNX model ({type(err).__name__})") from None
    if model.ir_version <= 0 or not model.graph.node:
        raise ModelError(f"{where}: not an ONNX model (no graph nodes); is the file truncated?")
    return model


def _inline_cache_branch(model: onnx.ModelProto) -> onnx.ModelProto:
    """optimum's merged decoder, as the decoder without past it holds.

    Its graph is one ``If`` on the boolean input ``use_cache_branch``: the else branch
    runs the first step (no past), the then branch every later one, over the same
    weights (the main graph's initializers). The else branch takes the If's place, its
    outputs renamed to the If's; the structure, and so the cost, is the same either way.
    """
    g = model.graph
    ifs = [n for n in g.node if n.op_type == "If" and n.input[0] == "use_cache_branch"]
    if len(ifs) != 1:
        return model
    node = ifs[0]
    branch = next(a.g for a in node.attribute if a.name == "else_branch")
    rename = {o.name: new for o, new in zip(branch.output, node.output, strict=True)}

    def renamed(n: onnx.NodeProto) -> onnx.NodeProto:
        out = onnx.NodeProto()
        out.CopyFrom(n)
        out.output[:] = [rename.get(o, o) for o in n.output]
        return out

    nodes = [n for n in g.node if n is not node]
    at = list(g.node).index(node)
    inlined = [*nodes[:at], *map(renamed, branch.node), *nodes[at:]]
    g.initializer.extend(branch.initializer)
    g.value_info.extend(v for v in branch.value_info if v.name not in rename)
    del g.node[:]
    g.node.extend(inlined)
    kept = [i for i in g.input if i.name != "use_cache_branch"]
    del g.input[:]
    g.input.extend(kept)
    return model


def _infer_shapes(
    model: onnx.ModelProto, path: Path, example_len: int
) -> tuple[onnx.ModelProto, set[str]]:
    """Pin symbolic dims, then infer every shape.

    Integer inputs of rank 2 (ids, positions, masks) become (1, example_len); on other
    inputs a dim named like one of those takes its size and any other symbolic dim is 0:
    past keys and values, whose past length is 0 in the traced step. Returns the model
    and the names of the inputs that had symbolic dims: runtime values, never weights.
    """
    pinned: dict[str, int] = {}
    runtime = set()
    for value in model.graph.input:
        t = value.type.tensor_type
        if t.elem_type in _INTEGER and len(t.shape.dim) == 2:
            for dim, size in zip(t.shape.dim, (1, example_len), strict=True):
                if not dim.HasField("dim_value"):
                    pinned.setdefault(dim.dim_param, size)
                    dim.dim_value = size
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims):
            runtime.add(value.name)
            for d in dims:
                if not d.HasField("dim_value"):
                    d.dim_value = pinned.get(d.dim_param, 0)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as err:
        raise ModelError(
            f"model {path}: ONNX shape inference failed ({type(err).__name__}: {err})"
        ) from None
    return _contrib_shapes(inferred), runtime


def _contrib_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the output shapes of onnxruntime's contrib ops, which ONNX shape
    inference leaves out, and of everything after them (inferred again from there)."""
    for _ in range(len(model.graph.node)):
        g = model.graph
        known = {v.name: _shape_of(v) for v in (*g.value_info, *g.input, *g.output)}
        known.update({t.name: tuple(t.dims) for t in g.initializer})
        types = {v.name: v.type.tensor_type.elem_type for v in (*g.value_info, *g.input)}
        added = []
        for node in g.node:
            if not node.output or known.get(node.output[0]) is not None or not node.input:
                continue
            shape = _contrib_shape(node, known)
            if shape is None:
                continue
            outs = [node.output[0]]
            if node.op_type.startswith("Skip") and len(node.output) > 3 and node.output[3]:
                outs.append(node.output[3])  # the residual sum, shaped like the input
            for out in outs:
                known[out] = shape
                elem = types.get(node.input[0], TensorProto.FLOAT)
                added.append(helper.make_tensor_value_info(out, elem, shape))
        if not added:
            break
        g.value_info.extend(added)
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    return model


def _contrib_shape(
    node: onnx.NodeProto, known: dict[str, tuple[int, ...] | None]
) -> tuple[int, ...] | None:
    """The first output's shape of a contrib op, from its inputs' shapes (None: unknown)."""
    x = known.get(node.input[0])
    if x is None:
        return None
    op = node.op_type
    if op in _SAME_SHAPE:
        return x
    if op == "MatMulNBits":
        return (*x[:-1], _attr(node, "N", 0))
    if op in ("MatMulInteger", "QLinearMatMul"):
        w = known.get(node.input[1 if op == "MatMulInteger" else 3])
        return (*x[:-1], w[-1]) if w else None
    if op == "Attention":  # the packed weight [d, 3d] is inside: the output is [b, s, d]
        w = known.get(node.input[1])
        return (*x[:-1], w[-1] // 3) if w else None
    if op in ("MultiHeadAttention", "GroupQueryAttention") and len(x) == 3:
        heads = _attr(node, "num_heads", 0)
        kv = _attr(node, "kv_num_heads", 0) or heads
        packed = len(node.input) < 2 or not node.input[1]
        return (*x[:-1], x[-1] * heads // (heads + 2 * kv)) if packed else x
    return None


def _shape_of(value: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return None if None in dims else tuple(dims)


class _Importer:
    """One ONNX graph on its way to a torch.fx graph: value facts, then emission."""

    def __init__(self, model: onnx.ModelProto, name: str, runtime: set[str]) -> None:
        g = model.graph
        self.name = name
        self.nodes = list(g.node)
        self.inits = {t.name: t for t in g.initializer}
        # Inputs that are data, not weights: ids, masks, past keys and values.
        self.runtime = {
            i.name for i in g.input if i.name in runtime or i.type.tensor_type.elem_type in _INTEGER
        }
        self.inputs = [i for i in g.input if i.name not in self.inits]
        self.output = g.output[0].name
        self.shapes: dict[str, tuple[int, ...] | None] = {}
        self.types: dict[str, int] = {}
        for v in (*g.value_info, *g.input, *g.output):
            self.shapes[v.name] = _shape_of(v)
            self.types[v.name] = v.type.tensor_type.elem_type
        for t in g.initializer:
            self.shapes[t.name] = tuple(t.dims)
            self.types[t.name] = t.data_type
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in self.nodes:
            for i, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((node, i))
        self.token = ""
        self.tokens = 1
        self.weights: dict[str, Weight] = {}  # by the name of the fx parameter
        self.param_of: dict[str, str] = {}  # ONNX tensor name -> fx parameter name
        self.root = nn.Module()  # holds the weights as meta parameters

    # -- step 3: what each value is ----------------------------------------------------

    def classify(self) -> None:
        ints = [i for i in self.inputs if self.types[i.name] in _INTEGER]
        if not ints:
            raise ModelError(f"model {self.name}: no integer input of token ids")
        token = next((i for i in ints if i.name == "input_ids"), ints[0])
        self.token = token.name
        shape = self.shapes.get(self.token)
        if shape is None:
            raise ModelError(f"model {self.name}: the shape of input {self.token!r} is unknown")
        self.tokens = prod(shape)
        marked = {
            i.name: p.value for i in self.inputs for p in i.metadata_props if p.key == _PARAM_KIND
        }
        token_live = self._live({self.token})
        self.companions = {t for node in self.nodes for t in self._parts(node)}
        for tensor in (*self.inits, *(i.name for i in self.inputs)):
            if tensor == self.token or tensor in self.runtime or tensor in self.companions:
                continue
            if "PARAMETER" in marked.values():  # torch's exporter said which are weights
                is_weight = marked.get(tensor) == "PARAMETER"
            else:
                is_weight = self._reads_as_weight(tensor, token_live)
            if is_weight:
                self._add_weight(tensor)
        self._quantized_bytes()

    def _quantized_bytes(self) -> None:
        """A quantized weight's scales, zero points and group indices are real memory:
        their bytes join the weight's (they are not parameters). MatMulNBits's packed
        blocks stand for the logical [K, N] matrix, at the bits it states."""
        for node in self.nodes:
            at = _QUANT_AT.get(node.op_type, -1)
            if at < 0 or at >= len(node.input) or node.input[at] not in self.param_of:
                continue
            param = self.param_of[node.input[at]]
            w = self.weights[param]
            stored = w.nbytes + sum(map(self._nbytes, self._parts(node)))
            if node.op_type == "MatMulNBits":
                bits = _attr(node, "bits", 4)
                shape = (_attr(node, "K", 0), _attr(node, "N", 0))
                dtype = DType.INT4 if bits <= 4 else DType.INT8
                self.weights[param] = Weight(w.name, shape, dtype, stored)
                self.shapes[node.input[at]] = shape
                *parents, leaf = param.split(".")
                module = self.root
                for part in parents:
                    module = module._modules[part]  # type: ignore[assignment]
                module._parameters[leaf] = nn.Parameter(torch.empty(shape, device="meta"))
            else:
                self.weights[param] = Weight(w.name, w.shape, w.dtype, stored)

    def _parts(self, node: onnx.NodeProto) -> list[str]:
        """The constant scales, zero points and group indices of a quantized matmul's
        weight (none for other ops)."""
        if node.op_type not in _QUANT_MATMULS:
            return []
        _, positions = _QUANT_MATMULS[node.op_type]
        parts = [node.input[i] for i in positions if i < len(node.input)]
        if node.op_type == "MatMulInteger":  # its scales multiply the int32 result
            parts += self._scales_after(node.output[0])
        return [p for p in parts if p in self.inits]

    def _scales_after(self, value: str) -> list[str]:
        """Constant operands of the Cast and Mul ops that rescale ``value``."""
        out, stack = [], [value]
        while stack:
            for node, _ in self.consumers.get(stack.pop(), []):
                if node.op_type in ("Cast", "Mul"):
                    out += [x for x in node.input if x in self.inits]
                    stack.append(node.output[0])
        return out

    def _nbytes(self, tensor: str) -> int:
        bits = _DTYPES.get(self.types.get(tensor, 0), (None, 32))[1]
        return (prod(self.shapes.get(tensor) or ()) * bits + 7) // 8

    def _live(self, sources: set[str]) -> set[str]:
        """Values that depend on ``sources`` through data (not shape-only) inputs."""
        live = set(sources)
        for node in self.nodes:
            if node.op_type in _SHAPE_ONLY:
                continue
            if any(node.input[i] in live for i in self._data_positions(node)):
                live.update(o for o in node.output if o)
        return live

    def _data_positions(self, node: onnx.NodeProto) -> range | tuple[int, ...]:
        fold = _FOLD.get(node.op_type)
        positions = fold[1] if fold else _DATA_INPUTS.get(node.op_type, ())
        return positions if positions else range(len(node.input))

    def _reads_as_weight(self, tensor: str, token_live: set[str]) -> bool:
        """Whether a constant tensor is read the way weights are (see the module doc)."""
        shape = self.shapes.get(tensor)
        if not shape or prod(shape) <= 1 or self.types.get(tensor) not in _DTYPES:
            return False
        stack, seen = [tensor], set()
        while stack:
            value = stack.pop()
            for node, i in self.consumers.get(value, []):
                op = node.op_type
                if op in _FOLD and i in _FOLD[op][1] and node.output[0] not in seen:
                    seen.add(node.output[0])
                    stack.extend(o for o in node.output if o)
                elif (
                    op in _WEIGHT_READERS
                    or (op in _QUANT_MATMULS and op != "DequantizeLinear" and i == _QUANT_AT[op])
                    or (op == "Gather" and i == 0)
                    or ((op in _NORMS or op in _ATTENTION) and i > 0)
                ):
                    return True
                elif op in ("Add", "Mul", "Sub", "Div") and sum(d > 1 for d in shape) == 1:
                    others = [x for j, x in enumerate(node.input) if j != i]
                    if any(x in token_live for x in others):
                        return True  # a per-feature bias or scale on an activation
        return False

    def _add_weight(self, tensor: str) -> None:
        shape = self.shapes[tensor]
        dtype, bits = _DTYPES.get(self.types.get(tensor, 0), (DType.BF16, 16))
        stored = None if bits == dtype.bits else (prod(shape) * bits + 7) // 8
        param = tensor
        if not (_valid_path(tensor) and _register(self.root, tensor, shape)):
            param = f"onnx_weight_{len(self.param_of)}"
            _register(self.root, param, shape)
        self.param_of[tensor] = param
        self.weights[param] = Weight(tensor, shape, dtype, stored)

    def weight(self, traced: Weight) -> Weight:
        """The ONNX tensor behind a weight the lowering named by its fx parameter."""
        return self.weights[traced.name]

    # -- step 4: emission ----------------------------------------------------------------

    def emit(self) -> fx.GraphModule:
        self.fx = fx.Graph()
        self.env: dict[str, fx.Node] = {}
        self.weighty: set[str] = set(self.param_of)  # weights and views of them
        self.skip: set[str] = set()
        placeholder = self.fx.placeholder(_fx_name(self.token))
        self._meta(placeholder, self.token, "")
        self.env[self.token] = placeholder
        live = self._live({self.token, *self.param_of})
        guards = self._nan_guards()
        for node in self.nodes:
            if node.name in self.skip or not any(o in live for o in node.output):
                continue
            if node.op_type in _SHAPE_ONLY:
                continue
            if node.name in guards:
                self.env[node.output[0]] = self.env[guards[node.name]]
                continue
            self._emit(node)
        if self.output not in self.env:
            raise ModelError(f"model {self.name}: the output does not depend on the token ids")
        self.fx.output(self.env[self.output])
        return fx.GraphModule(self.root, self.fx)

    def _nan_guards(self) -> dict[str, str]:
        """``Where(IsNaN(p), 0, p)``, with which torch's exporter guards attention
        probabilities against fully masked rows: no structure and next to no cost. Each
        such Where (node name -> the value ``p``) is read as ``p``; its IsNaN, used by
        nothing else, is skipped."""
        producer = {o: n for n in self.nodes for o in n.output}
        out: dict[str, str] = {}
        for node in self.nodes:
            cond = producer.get(node.input[0]) if node.op_type == "Where" else None
            if cond is None or cond.op_type != "IsNaN" or cond.input[0] != node.input[2]:
                continue
            if len(self.consumers.get(cond.output[0], [])) == 1:
                out[node.name] = node.input[2]
                self.skip.add(cond.name)
        return out

    def _arg(self, name: str) -> fx.Node | None:
        if name in self.env:
            return self.env[name]
        if name in self.param_of:
            node = self.fx.get_attr(self.param_of[name])
            self.env[name] = node
            return node
        return None  # a constant: shapes, masks, tables

    def _call(self, node: onnx.NodeProto, fn: Callable, args: list, out: str | None = None):
        n = self.fx.call_function(fn, tuple(args))  # None stands for a constant operand
        out = out or node.output[0]
        self._meta(n, out, _scope(node))
        self.env[out] = n
        return n

    def _meta(self, n: fx.Node, value: str, scope: str) -> None:
        n.name = _fx_name(value)
        shape = self.shapes.get(value)
        if shape is not None:
            n.meta["val"] = torch.empty(shape, device="meta")
        if scope:
            n.meta["nn_module_stack"] = {"onnx": (scope, "")}

    def _emit(self, node: onnx.NodeProto) -> None:
        op = node.op_type
        ins = list(node.input)
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute):  # fmt: skip
            raise UnsupportedOpError(
                f"model {self.name}: node {node.name} ({op}): control flow cannot be costed; "
                "export the model without If/Loop/Scan"
            )
        if op in _FOLD:
            fn, positions = _FOLD[op]
            data = [ins[i] for i in (positions or range(len(ins))) if i < len(ins)]
            args = [self._arg(x) for x in data]
            if fn is operator.getitem:
                args.append(0)  # which item does not matter to the structure
            n = self._call(node, fn, args)
            if any(x in self.weighty for x in data) and len(node.output) == 1:
                self.weighty.add(node.output[0])
            self._outputs(node, n)
        elif op == "Gemm":
            self._linear(node, ins[0], ins[1], ins[2] if len(ins) > 2 else "", node.output[0])
        elif op in ("MatMulNBits", "QLinearMatMul", "MatMulInteger"):
            bias, out = self._bias_after(node)
            self._linear(node, ins[0], ins[_QUANT_MATMULS[op][0]], bias, out)
        elif op == "Attention" and node.domain == "com.microsoft" and ins[1] in self.weighty:
            # The packed QKV projection is inside the op: a linear, then the attention.
            qkv = f"{node.output[0]}.qkv"
            self.shapes[qkv] = (*self.shapes[ins[0]][:-1], self.shapes[ins[1]][-1])
            self._linear(node, ins[0], ins[1], ins[2] if len(ins) > 2 else "", qkv)
            self._attention(node, [qkv, "", ""])
        elif op == "MatMul" and ins[1] in self.weighty:
            bias, out = self._bias_after(node)
            self._linear(node, ins[0], ins[1], bias, out)
        elif op == "Gather":
            if ins[0] in self.weighty:
                self._call(node, F.embedding, [self._arg(ins[1]), self._arg(ins[0])])
            elif ins[1] in self.env:
                self._call(node, torch.gather, [self._arg(ins[0]), self._arg(ins[1])])
            else:
                self._call(node, torch.select, [self._arg(ins[0])])
        elif op in _NORMS:
            self._norm(node)
        elif op in _ATTENTION:
            self._attention(node)
        elif op in _COMPUTE:
            positions = _DATA_INPUTS.get(op, range(len(ins)))
            args = [self._arg(ins[i]) for i in positions if i < len(ins)]
            if op == "Einsum":
                args.insert(0, _attr(node, "equation", b"").decode())
            if op == "TopK":
                k = (self.shapes.get(node.output[0]) or (1,))[-1]
                args.append(k)
            n = self._call(node, _COMPUTE[op], args)
            self._outputs(node, n)
        else:
            self._unknown(node)

    def _outputs(self, node: onnx.NodeProto, n: fx.Node) -> None:
        """Multi-output ops: one getitem per used output, as torch's tuple results."""
        if len(node.output) > 1:
            for i, out in enumerate(node.output):
                if out:
                    item = self.fx.call_function(operator.getitem, (n, i))
                    self._meta(item, out, _scope(node))
                    self.env[out] = item

    def _bias_after(self, matmul: onnx.NodeProto) -> tuple[str, str]:
        """A 1-D weight added to a weight matmul's output joins the matmul as its bias,
        also behind the ops that turn a quantized matmul's integers back into floats
        (Cast, DequantizeLinear, a Mul by a scale), which go with it."""
        out, chain = matmul.output[0], []
        while out != self.output:
            users = self.consumers.get(out, [])
            if len(users) != 1:
                break
            user, pos = users[0]
            if user.op_type == "Add":
                other = user.input[1 - pos]
                if other in self.param_of and len(self.shapes[other]) == 1:
                    self.skip.update(n.name for n in (*chain, user))
                    return other, user.output[0]
                break
            if not self._rescales(user, pos):
                break
            chain.append(user)
            out = user.output[0]
        return "", matmul.output[0]

    def _rescales(self, node: onnx.NodeProto, pos: int) -> bool:
        """Whether ``node`` only rescales its input ``pos`` (a quantized matmul's result)."""
        if node.op_type in ("Cast", "DequantizeLinear"):
            return pos == 0
        if node.op_type == "Mul":
            other, shape = node.input[1 - pos], self.shapes.get(node.input[1 - pos])
            return other in self.companions or (shape is not None and prod(shape) <= 1)
        return False

    def _linear(self, node: onnx.NodeProto, x: str, w: str, b: str, out: str) -> None:
        if w not in self.weighty:
            raise UnsupportedOpError(
                f"model {self.name}: node {node.name} ({node.op_type}): its second operand is "
                "not a weight; only x @ W with W an initializer or a weight input is costed"
            )
        args = [self._arg(x), self._arg(w), self._arg(b) if b else None]
        n = self._call(node, F.linear, args, out)
        self.env[node.output[0]] = n

    def _norm(self, node: onnx.NodeProto) -> None:
        """Fused norms; the Skip forms add the residual first (their output 3 is the sum)."""
        ins, op = list(node.input), node.op_type
        fn = F.layer_norm if op in ("LayerNormalization", "SkipLayerNormalization") else F.rms_norm
        x = self._arg(ins[0])
        params = ins[1:]
        if op.startswith("Skip"):
            sum_out = node.output[3] if len(node.output) > 3 and node.output[3] else None
            summed = self._call(node, torch.add, [x, self._arg(ins[1])], sum_out or node.name)
            if sum_out is None:
                summed.meta["val"] = torch.empty(self.shapes[ins[0]], device="meta")
            x, params = summed, [ins[2], *ins[3:4]]
        self._call(node, fn, [x, *(self._arg(p) for p in params if p)])

    def _attention(self, node: onnx.NodeProto, inputs: list[str] | None = None) -> None:
        """Fused attention on [batch, seq, heads * dim] tensors, as an SDPA on 4-D heads."""
        ins = [*(node.input if inputs is None else inputs), "", "", ""]
        heads = _attr(node, "q_num_heads", 0) or _attr(node, "num_heads", 0)
        kv_heads = _attr(node, "kv_num_heads", 0) or heads
        q_shape = self.shapes.get(ins[0])
        if not heads or q_shape is None or len(q_shape) != 3:
            if q_shape is not None and len(q_shape) == 4:  # already [b, heads, s, dim]
                self._call(node, F.scaled_dot_product_attention, [self._arg(x) for x in ins[:3]])
                return
            raise UnsupportedOpError(
                f"model {self.name}: node {node.name} ({node.op_type}): cannot read its head "
                "count and 3-D query shape; give num_heads and static shapes"
            )
        b, s, width = q_shape
        if not ins[1]:  # packed QKV in the query input
            head_dim = width // (heads + 2 * kv_heads)
            packed = self._arg(ins[0])
            parts = [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim]
            split = self.fx.call_function(torch.split, (packed, parts))
            views = []
            for i, size in enumerate(parts):
                item = self.fx.call_function(operator.getitem, (split, i))
                item.meta["val"] = torch.empty((b, s, size), device="meta")
                views.append(item)
        else:
            head_dim = width // heads
            views = [self._arg(x) for x in ins[:3]]
        qkv = [
            self._heads(v, (b, s, h, head_dim), node)
            for v, h in zip(views, (heads, kv_heads, kv_heads), strict=True)
        ]
        attn = self.fx.call_function(F.scaled_dot_product_attention, tuple(qkv))
        attn.meta["val"] = torch.empty((b, heads, s, head_dim), device="meta")
        back = self.fx.call_function(torch.permute, (attn,))
        back.meta["val"] = torch.empty((b, s, heads, head_dim), device="meta")
        self._call(node, torch.reshape, [back])

    def _heads(self, x: fx.Node, shape: tuple[int, ...], node: onnx.NodeProto) -> fx.Node:
        view = self.fx.call_function(torch.reshape, (x,))
        view.meta["val"] = torch.empty(shape, device="meta")
        heads = self.fx.call_function(torch.permute, (view,))
        b, s, h, d = shape
        heads.meta["val"] = torch.empty((b, h, s, d), device="meta")
        heads.meta["nn_module_stack"] = {"onnx": (_scope(node), "")}
        return heads

    def _unknown(self, node: onnx.NodeProto) -> None:
        missing = [o for o in node.output if o and self.shapes.get(o) is None]
        if missing:
            domain = f"{node.domain}." if node.domain else ""
            raise UnsupportedOpError(
                f"model {self.name}: node {node.name or node.output[0]} ({domain}{node.op_type}): "
                "cannot cost this op (shape inference gives no shape for its output "
                f"{missing[0]!r}); replace it with standard ONNX ops or add value_info"
            )
        fn = _stand_in(f"{node.domain}.{node.op_type}" if node.domain else node.op_type)
        args = [self._arg(x) for x in node.input]
        self._outputs(node, self._call(node, fn, args))


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _scope(node: onnx.NodeProto) -> str:
    """The module path a node came from: torch's name scopes, else ``/a/b/Op`` names."""
    for p in node.metadata_props:
        if p.key == _SCOPES:
            scopes = ast.literal_eval(p.value)
            return scopes[-2] if len(scopes) > 1 else ""
    parts = node.name.strip("/").split("/")
    return ".".join(parts[:-1]) if node.name.startswith("/") else ""


def _valid_path(name: str) -> bool:
    return all(part.isidentifier() or part.isdigit() for part in name.split("."))


def _fx_name(value: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in value).strip("_") or "value"


def _register(root: nn.Module, path: str, shape: tuple[int, ...]) -> bool:
    """Add a meta parameter at a dotted path, creating the modules on the way.

    False when the path collides with an attribute or another weight's path.
    """
    *parents, leaf = path.split(".")
    module = root
    for part in parents:
        child = module._modules.get(part)
        if child is None:
            if hasattr(module, part):
                return False
            child = nn.Module()
            module.add_module(part, child)
        module = child
    if hasattr(module, leaf):
        return False
    module.register_parameter(leaf, nn.Parameter(torch.empty(shape, device="meta")))
    return True


_STAND_INS: dict[str, Callable] = {}


def _stand_in(op_type: str) -> Callable:
    """A named callable standing for an ONNX op torch has no counterpart of."""
    if op_type not in _STAND_INS:

        def stand_in(*args: object) -> None:
            raise NotImplementedError(op_type)

        stand_in.__name__ = stand_in.__qualname__ = "onnx_" + _fx_name(op_type).lower()
        _STAND_INS[op_type] = stand_in
    return _STAND_INS[op_type]

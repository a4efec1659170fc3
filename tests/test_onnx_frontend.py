"""The ONNX frontend: weightless files, fused and decomposed ops, and bad input."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from builders import CliRun, export_onnx, tiny
from onnx import TensorProto, helper

from chipletc.compiler.frontends import load_model, lower_module
from chipletc.compiler.frontends.onnx import lower_onnx
from chipletc.ir.dtypes import DType
from chipletc.ir.errors import ModelError, UnsupportedOpError
from chipletc.ir.op import OpKind, Role
from chipletc.ir.workload import Phase
from chipletc.models import zoo

# -- builders -------------------------------------------------------------------------------


def make_gpt_onnx(
    path: Path, layers: int, d: int, heads: int, ffn: int, vocab: int, positions: int
) -> Path:
    """A GPT-3-style decoder built with onnx.helper: bf16 initializers whose data lives in
    an external file that does not exist (dims and dtype only), symbolic batch and
    sequence, MatMul + Add linears, LayerNormalization, Gelu, explicit softmax attention
    and a head tied to the token table (a Transpose of it)."""
    dh = d // heads
    inits: list[TensorProto] = []

    def weight(name: str, *shape: int) -> str:
        t = TensorProto(name=name, data_type=TensorProto.BFLOAT16, dims=shape)
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "missing-weights.bin"), ("offset", "0"), ("length", "0")):
            t.external_data.add(key=key, value=value)
        inits.append(t)
        return name

    def const(name: str, values: list[int]) -> str:
        inits.append(helper.make_tensor(name, TensorProto.INT64, [len(values)], values))
        return name

    nodes = []

    def node(op: str, ins: list[str], out: str, **attrs: object) -> str:
        nodes.append(helper.make_node(op, ins, [out], name=f"/{out}/{op}", **attrs))
        return out

    split = const("split", [d, d, d])
    heads_shape = const("heads_shape", [0, 0, heads, dh])
    model_shape = const("model_shape", [0, 0, d])
    inits.append(helper.make_tensor("scale", TensorProto.BFLOAT16, [], [float(dh) ** 0.5]))
    for name, value in (("zero", 0), ("one", 1)):
        inits.append(helper.make_tensor(name, TensorProto.INT64, [], [value]))
    tok = node("Gather", [weight("wte", vocab, d), "input_ids"], "tok")
    shape = node("Shape", ["input_ids"], "ids_shape")
    seq = node("Gather", [shape, "one"], "seq")
    pos_ids = node("Range", ["zero", seq, "one"], "pos_ids")
    x = node("Add", [tok, node("Gather", [weight("wpe", positions, d), pos_ids], "pos")], "x")
    for i in range(layers):
        p = f"h.{i}"

        def linear(h: str, name: str, n_in: int, n_out: int, p: str = p) -> str:
            mm = node("MatMul", [h, weight(f"{p}.{name}.weight", n_in, n_out)], f"{p}.{name}.mm")
            return node("Add", [mm, weight(f"{p}.{name}.bias", n_out)], f"{p}.{name}")

        def norm(h: str, name: str, p: str = p) -> str:
            ws = [weight(f"{p}.{name}.weight", d), weight(f"{p}.{name}.bias", d)]
            return node("LayerNormalization", [h, *ws], f"{p}.{name}", axis=-1)

        qkv = linear(norm(x, "ln_1"), "attn.qkv", d, 3 * d)
        q, k, v = (f"{p}.{c}" for c in "qkv")
        nodes.append(helper.make_node("Split", [qkv, split], [q, k, v], axis=-1))
        q4, k4, v4 = (node("Reshape", [t, heads_shape], f"{t}.4d") for t in (q, k, v))
        qh = node("Transpose", [q4], f"{q}.heads", perm=[0, 2, 1, 3])
        kt = node("Transpose", [k4], f"{k}.heads_t", perm=[0, 2, 3, 1])
        vh = node("Transpose", [v4], f"{v}.heads", perm=[0, 2, 1, 3])
        scores = node("Div", [node("MatMul", [qh, kt], f"{p}.qk"), "scale"], f"{p}.scores")
        probs = node("Softmax", [scores], f"{p}.probs", axis=-1)
        ctx = node(
            "Transpose", [node("MatMul", [probs, vh], f"{p}.pv")], f"{p}.ctx", perm=[0, 2, 1, 3]
        )
        attn = linear(node("Reshape", [ctx, model_shape], f"{p}.merged"), "attn.proj", d, d)
        x = node("Add", [x, attn], f"{p}.res1")
        hidden = node("Gelu", [linear(norm(x, "ln_2"), "mlp.fc1", d, ffn)], f"{p}.gelu")
        x = node("Add", [x, linear(hidden, "mlp.fc2", ffn, d)], f"{p}.res2")
    final = node(
        "LayerNormalization", [x, weight("ln_f.weight", d), weight("ln_f.bias", d)], "ln_f"
    )
    head = node("Transpose", ["wte"], "wte_t", perm=[1, 0])
    node("MatMul", [final, head], "logits")
    graph = helper.make_graph(
        nodes,
        "gpt",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.BFLOAT16, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.save(model, str(path))
    return path


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx")
    llama = tiny("llama3-8b")
    return {
        "initializers": export_onnx(tiny("gpt2-small"), d / "gpt2.onnx", meta=False),
        "decomposed": export_onnx(llama, d / "llama.onnx"),
        "fused": export_onnx(llama, d / "llama23.onnx", opset=23),
    }


# -- tests ------------------------------------------------------------------------------------


def test_initializers_without_their_data_file(exports: dict[str, Path]) -> None:
    path = exports["initializers"]
    assert not Path(f"{path}.data").exists()
    g = lower_onnx(path)
    reference = lower_module(zoo.build(tiny("gpt2-small")), "fx")
    assert g.info.frontend == "onnx" and g.params == reference.params
    assert g.weight_bytes_by_dtype() == {"bf16": reference.weight_bytes}
    head = next(op for op in g.ops if op.kind is OpKind.LM_HEAD)
    assert head.tied is not None and not head.weights
    assert {w.name for _, w in g.weights()} >= {"blocks.0.attn.qkv.weight", "pos.weight"}


def test_fused_and_decomposed_ops_lower_alike(exports: dict[str, Path]) -> None:
    fused_path = exports["fused"]
    ops = {n.op_type for n in onnx.load(str(fused_path), load_external_data=False).graph.node}
    assert {"Attention", "RMSNormalization"} <= ops
    fused, decomposed = lower_onnx(fused_path), lower_onnx(exports["decomposed"])
    assert fused.ops_by_kind() == decomposed.ops_by_kind()
    for g in (fused, decomposed):
        assert (g.info.num_heads, g.info.num_kv_heads, g.kv_bytes_per_token) == (4, 2, 256)
    flops = [g.flops_per_token(Phase.DECODE, 512) for g in (fused, decomposed)]
    assert flops[0] == flops[1]


def test_hand_built_gpt_with_symbolic_dims(tmp_path: Path) -> None:
    path = make_gpt_onnx(tmp_path / "gpt.onnx", layers=3, d=64, heads=4, ffn=256, vocab=100,
                         positions=32)  # fmt: skip
    g = load_model(str(path))
    info = g.info
    assert (info.num_layers, info.d_model, info.num_heads, info.max_positions) == (3, 64, 4, 32)
    roles = [op.role for op in g.ops if op.block == 0 and op.kind is OpKind.MATMUL]
    assert roles == [Role.QKV, Role.PROJ, Role.FC1, Role.FC2]
    d, f = 64, 256
    per_layer = 4 * d * d + 2 * d * f + 9 * d + f  # qkv, proj, fc1, fc2 with biases; 2 norms
    assert g.params == 100 * d + 32 * d + 3 * per_layer + 2 * d  # tied head, final norm
    assert {w.dtype for _, w in g.weights()} == {DType.BF16} and not g.unrecognised()


def _graph(nodes: list, inputs: list, inits: list, path: Path) -> Path:
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    return path


def test_unrecognised_op_is_generic_and_listed(
    tmp_path: Path, cli: CliRun
) -> None:
    path = make_gpt_onnx(tmp_path / "gpt.onnx", 1, 64, 4, 128, 50, 16)
    model = onnx.load(str(path), load_external_data=False)
    logits = next(n for n in model.graph.node if n.output == ["logits"])
    logits.output[0] = "pre"
    model.graph.node.append(helper.make_node("CumSum", ["pre", "zero"], ["logits"], name="cum"))
    onnx.save(model, str(path))
    g = lower_onnx(path)
    (generic,) = g.unrecognised()
    assert "cumsum" in str(generic.attrs["source"])
    code, out, _err = cli("inspect", str(path))
    assert code == 0 and "unrecognised ops      1" in out


def test_custom_op_without_shape_is_named(tmp_path: Path) -> None:
    path = make_gpt_onnx(tmp_path / "gpt.onnx", 1, 64, 4, 128, 50, 16)
    model = onnx.load(str(path), load_external_data=False)
    gelu = next(n for n in model.graph.node if n.op_type == "Gelu")
    gelu.op_type, gelu.domain, gelu.name = "FancyAct", "com.example", "/h.0/mlp/FancyAct"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedOpError, match=r"node /h\.0/mlp/FancyAct \(com\.example"):
        lower_onnx(path)


def test_mlp_is_not_a_transformer(tmp_path: Path) -> None:
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8], [0.0] * 64)
    table = helper.make_tensor("table", TensorProto.FLOAT, [10, 8], [0.0] * 80)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["x"]),
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Relu", ["h"], ["y"]),
    ]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])
    path = _graph(nodes, [ids], [w, table], tmp_path / "mlp.onnx")
    with pytest.raises(ModelError, match="no transformer structure"):
        lower_onnx(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not an ONNX model"),
        (b"this is plain text, not protobuf\n" * 4, "not a readable ONNX model"),
    ],
)
def test_bad_files_fail_in_one_line(
    tmp_path: Path, content: bytes, message: str, cli: CliRun
) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    code, _out, err = cli("inspect", str(path))
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1


def test_truncated_export_fails_in_one_line(
    exports: dict[str, Path], tmp_path: Path, cli: CliRun
) -> None:
    data = exports["decomposed"].read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 3])
    code, _out, err = cli("inspect", str(path))
    assert code == 2 and "ONNX model" in err
    assert len(err.strip().splitlines()) == 1

"""ONNX files as exporters write them in practice: several integer inputs, past key/values
in and present key/values out (decoder-with-past, optimum's merged decoder), weights
spread over many external files, quantized operators with their real bytes, and the
fused contrib operators of onnxruntime's transformer optimizer. Each shape is built with
onnx.helper (weightless: external data that is not there)."""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, prod
from pathlib import Path

import onnx
import pytest
from builders import CliRun
from onnx import TensorProto, helper

from chipletc.compiler.frontends import load_model
from chipletc.ir.dtypes import DType
from chipletc.ir.workload import Phase

MS = "com.microsoft"
D, HEADS, FFN, VOCAB, POSITIONS, LAYERS = 64, 4, 128, 100, 64, 2
DH = D // HEADS


@dataclass(frozen=True)
class Export:
    """How the decoder is written: which inputs, outputs and operators."""

    positions: bool = False  # position_ids and attention_mask inputs beside input_ids
    past: bool = False  # past_key_values.* inputs and present.* outputs
    merged: bool = False  # optimum's merged decoder: an If on use_cache_branch
    quant: str = ""  # "nbits", "qdq", "qlinear" or "integer"
    fused: bool = False  # SkipLayerNormalization, packed Attention, FastGelu (com.microsoft)
    gqa: bool = False  # RotaryEmbedding and GroupQueryAttention over 2 KV heads (com.microsoft)
    files: int = 0  # initializers in this many external files (0: one missing file)


class _Builder:
    def __init__(self, export: Export) -> None:
        self.export = export
        self.inits: list[TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []
        self.n_weights = 0

    def weight(self, name: str, dtype: int, *shape: int) -> str:
        t = TensorProto(name=name, data_type=dtype, dims=shape)
        t.data_location = TensorProto.EXTERNAL
        files = max(self.export.files, 1)
        where = f"weights-{self.n_weights % files}.bin" if self.export.files else "missing.bin"
        self.n_weights += 1
        for key, value in (("location", where), ("offset", "0"), ("length", "0")):
            t.external_data.add(key=key, value=value)
        self.inits.append(t)
        return name

    def f16(self, name: str, *shape: int) -> str:
        return self.weight(name, TensorProto.FLOAT16, *shape)

    def const(self, name: str, dtype: int, values: list) -> str:
        self.inits.append(helper.make_tensor(name, dtype, [len(values)], values))
        return name

    def node(self, op: str, ins: list[str], outs: str | list[str], domain: str = "", **attrs):
        outs = [outs] if isinstance(outs, str) else outs
        name = f"/{outs[0]}/{op}"
        self.nodes.append(helper.make_node(op, ins, outs, name=name, domain=domain, **attrs))
        return outs[0]

    # -- linears in each quantized form ---------------------------------------------------

    def linear(self, x: str, name: str, n_in: int, n_out: int) -> str:
        q = self.export.quant
        bias = self.f16(f"{name}.bias", n_out)
        if q == "nbits":  # 4 bits, blocks of 32 along K, fp16 scales, packed uint8 zeros
            blocks = n_in // 32
            w = self.weight(f"{name}.qweight", TensorProto.UINT8, n_out, blocks, 16)
            s = self.f16(f"{name}.scales", n_out * blocks)
            z = self.weight(f"{name}.zeros", TensorProto.UINT8, n_out * ceil(blocks / 2))
            mm = self.node("MatMulNBits", [x, w, s, z], f"{name}.mm", MS, K=n_in, N=n_out,
                           bits=4, block_size=32)  # fmt: skip
        elif q == "qdq":  # int8 weight, a scale and zero point per output column
            w = self.weight(f"{name}.w_int8", TensorProto.INT8, n_in, n_out)
            s = self.f16(f"{name}.w_scale", n_out)
            z = self.weight(f"{name}.w_zp", TensorProto.INT8, n_out)
            deq = self.node("DequantizeLinear", [w, s, z], f"{name}.w", axis=1)
            mm = self.node("MatMul", [x, deq], f"{name}.mm")
        elif q == "qlinear":  # uint8 activations and weights, per-tensor scales
            xs, xz = self.const(f"{name}.xs", TensorProto.FLOAT, [0.1]), self.const(
                f"{name}.xz", TensorProto.UINT8, [128])
            w = self.weight(f"{name}.w_uint8", TensorProto.UINT8, n_in, n_out)
            ws, wz = self.const(f"{name}.ws", TensorProto.FLOAT, [0.1]), self.const(
                f"{name}.wz", TensorProto.UINT8, [128])
            xq = self.node("QuantizeLinear", [x, xs, xz], f"{name}.xq")
            yq = self.node("QLinearMatMul", [xq, xs, xz, w, ws, wz, xs, xz], f"{name}.yq")
            mm = self.node("DequantizeLinear", [yq, xs, xz], f"{name}.mm")
        elif q == "integer":  # onnxruntime's dynamic quantization
            xq, xs, xz = (f"{name}.{s}" for s in ("xq", "xs", "xz"))
            self.node("DynamicQuantizeLinear", [x], [xq, xs, xz])
            w = self.weight(f"{name}.w_int8", TensorProto.INT8, n_in, n_out)
            ws = self.f16(f"{name}.w_scale", n_out)
            acc = self.node("MatMulInteger", [xq, w, xz], f"{name}.acc")
            f = self.node("Cast", [acc], f"{name}.accf", to=TensorProto.FLOAT16)
            mm = self.node("Mul", [self.node("Mul", [f, xs], f"{name}.sx"), ws], f"{name}.mm")
        else:
            mm = self.node("MatMul", [x, self.f16(f"{name}.weight", n_in, n_out)], f"{name}.mm")
        return self.node("Add", [mm, bias], name)

    def norm(self, x: str, name: str) -> str:
        ws = [self.f16(f"{name}.weight", D), self.f16(f"{name}.bias", D)]
        return self.node("LayerNormalization", [x, *ws], name, axis=-1)

    # -- the decoder ----------------------------------------------------------------------

    def decoder(self, past: bool) -> tuple[list, list]:
        """Nodes appended; returns (inputs, outputs) value infos."""
        e = self.export
        ints = TensorProto.INT64
        inputs = [helper.make_tensor_value_info("input_ids", ints, ["batch", "seq"])]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT16, None)]
        self.const("heads_shape", ints, [0, 0, HEADS, DH])
        self.const("model_shape", ints, [0, 0, D])
        self.const("split", ints, [D, D, D])
        self.inits.append(helper.make_tensor("scale", TensorProto.FLOAT16, [], [DH**0.5]))
        tok = self.node("Gather", [self.f16("wte", VOCAB, D), "input_ids"], "tok")
        if e.positions:
            inputs += [
                helper.make_tensor_value_info("attention_mask", ints, ["batch", "total"]),
                helper.make_tensor_value_info("position_ids", ints, ["batch", "seq"]),
            ]
            pos_ids = "position_ids"
            m = self.node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT16)
            mask = self.node("Unsqueeze", [m, self.const("axes", ints, [1, 2])], "mask")
        else:
            self.inits.append(helper.make_tensor("zero", ints, [], [0]))
            self.inits.append(helper.make_tensor("one", ints, [], [1]))
            seq = self.node("Gather", [self.node("Shape", ["input_ids"], "ids_shape"), "one"], "n")
            pos_ids = self.node("Range", ["zero", seq, "one"], "pos_ids")
            mask = ""
        pos = self.node("Gather", [self.f16("wpe", POSITIONS, D), pos_ids], "pos")
        x = self.node("Add", [tok, pos], "x")
        if e.fused:
            final = self.fused_layers(x)
        else:
            for i in range(LAYERS):
                p = f"h.{i}"
                h = self.norm(x, f"{p}.ln_1")
                if e.gqa:
                    attn = self.gqa_attention(h, p, inputs, pos_ids)
                else:
                    attn = self.attention(h, p, i, mask, past, inputs, outputs)
                x = self.node("Add", [x, attn], f"{p}.res1")
                hidden = self.node(
                    "Gelu", [self.linear(self.norm(x, f"{p}.ln_2"), f"{p}.mlp.fc1", D, FFN)],
                    f"{p}.gelu",
                )
                x = self.node(
                    "Add", [x, self.linear(hidden, f"{p}.mlp.fc2", FFN, D)], f"{p}.res2"
                )
            final = self.norm(x, "ln_f")
        head = self.node("Transpose", ["wte"], "wte_t", perm=[1, 0])
        self.node("MatMul", [final, head], "logits")
        return inputs, outputs

    def attention(self, h, p, i, mask, past, inputs, outputs) -> str:
        qkv = self.linear(h, f"{p}.attn.qkv", D, 3 * D)
        q, k, v = (f"{p}.{c}" for c in "qkv")
        self.node("Split", [qkv, "split"], [q, k, v], axis=-1)
        q4, k4, v4 = (self.node("Reshape", [t, "heads_shape"], f"{t}.4d") for t in (q, k, v))
        qh = self.node("Transpose", [q4], f"{q}.heads", perm=[0, 2, 1, 3])
        kh = self.node("Transpose", [k4], f"{k}.heads", perm=[0, 2, 1, 3])
        vh = self.node("Transpose", [v4], f"{v}.heads", perm=[0, 2, 1, 3])
        if not past and self.export.merged:  # the no-past branch returns the new K, V
            for name, new in (("key", kh), ("value", vh)):
                self.node("Identity", [new], f"present.{i}.{name}")
                outputs.append(helper.make_tensor_value_info(
                    f"present.{i}.{name}", TensorProto.FLOAT16, None))  # fmt: skip
        if past:
            for name, new in (("key", kh), ("value", vh)):
                pk = f"past_key_values.{i}.{name}"
                inputs.append(helper.make_tensor_value_info(
                    pk, TensorProto.FLOAT16, ["batch", HEADS, "past", DH]))  # fmt: skip
                self.node("Concat", [pk, new], f"present.{i}.{name}", axis=2)
                outputs.append(helper.make_tensor_value_info(
                    f"present.{i}.{name}", TensorProto.FLOAT16, None))  # fmt: skip
            kh, vh = f"present.{i}.key", f"present.{i}.value"
        kt = self.node("Transpose", [kh], f"{k}.t", perm=[0, 1, 3, 2])
        scores = self.node("Div", [self.node("MatMul", [qh, kt], f"{p}.qk"), "scale"], f"{p}.s")
        if mask:
            scores = self.node("Add", [scores, mask], f"{p}.masked")
        probs = self.node("Softmax", [scores], f"{p}.probs", axis=-1)
        ctx = self.node("Transpose", [self.node("MatMul", [probs, vh], f"{p}.pv")], f"{p}.ctx",
                        perm=[0, 2, 1, 3])  # fmt: skip
        merged = self.node("Reshape", [ctx, "model_shape"], f"{p}.merged")
        return self.linear(merged, f"{p}.attn.proj", D, D)

    def gqa_attention(self, h: str, p: str, inputs: list, pos_ids: str) -> str:
        """onnxruntime's GQA decoder layer: separate Q, K, V, rotary on Q and K from cos
        and sin caches, GroupQueryAttention with its own past buffers and lengths."""
        kv = 2
        if not any(i.name == "seqlens_k" for i in inputs):
            inputs += [
                helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
                helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
            ]
            self.f16("cos_cache", POSITIONS, DH // 2)
            self.f16("sin_cache", POSITIONS, DH // 2)
        q = self.linear(h, f"{p}.attn.q", D, D)
        k = self.linear(h, f"{p}.attn.k", D, kv * DH)
        v = self.linear(h, f"{p}.attn.v", D, kv * DH)
        rq, rk = (self.node("RotaryEmbedding", [t, pos_ids, "cos_cache", "sin_cache"],
                            f"{t}.rot", MS) for t in (q, k))  # fmt: skip
        for name in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"{p}.past_{name}", TensorProto.FLOAT16, ["batch", kv, "past", DH]))  # fmt: skip
        attn = self.node(
            "GroupQueryAttention",
            [rq, rk, v, f"{p}.past_key", f"{p}.past_value", "seqlens_k", "total_sequence_length"],
            [f"{p}.gqa", f"{p}.present_key", f"{p}.present_value"], MS, num_heads=HEADS,
            kv_num_heads=kv,
        )  # fmt: skip
        return self.linear(attn, f"{p}.attn.proj", D, D)

    def skip_norm(self, x: str, residual: str, name: str, total: bool = True) -> str:
        """SkipLayerNormalization: norm(x + residual), and the sum as output 3."""
        ws = [self.f16(f"{name}.weight", D), self.f16(f"{name}.bias", D)]
        outs = [name, "", "", f"{name}.sum"] if total else [name]
        self.node("SkipLayerNormalization", [x, residual, *ws], outs, MS)
        return name

    def fused_layers(self, x: str) -> str:
        """onnxruntime's optimizer output for GPT-2: Attention holding the packed QKV
        weight, each residual add fused with the norm after it, FastGelu."""
        h = self.norm(x, "h.0.ln_1")
        for i in range(LAYERS):
            p = f"h.{i}"
            w, b = self.f16(f"{p}.attn.qkv.weight", D, 3 * D), self.f16(
                f"{p}.attn.qkv.bias", 3 * D)  # fmt: skip
            attn = self.node("Attention", [h, w, b], f"{p}.attn", MS, num_heads=HEADS)
            h2 = self.skip_norm(self.linear(attn, f"{p}.attn.proj", D, D), x, f"{p}.ln_2")
            x = f"{h2}.sum"
            gelu = self.node("FastGelu", [self.linear(h2, f"{p}.mlp.fc1", D, FFN)],
                             f"{p}.gelu", MS)  # fmt: skip
            m = self.linear(gelu, f"{p}.mlp.fc2", FFN, D)
            if i + 1 < LAYERS:
                h = self.skip_norm(m, x, f"h.{i + 1}.ln_1")
                x = f"{h}.sum"
            else:
                return self.skip_norm(m, x, "ln_f", total=False)
        raise AssertionError("LAYERS > 0")


def build_onnx(path: Path, export: Export = Export()) -> Path:
    b = _Builder(export)
    inputs, outputs = b.decoder(export.past)
    if export.merged:
        graph = _merged(b, inputs, outputs, export)
    else:
        graph = helper.make_graph(b.nodes, "decoder", inputs, outputs, initializer=b.inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def _merged(with_past: _Builder, inputs: list, outputs: list, export: Export):
    """optimum's decoder_model_merged: one If on use_cache_branch over two decoders (with
    and without past) sharing the main graph's weights."""
    first = _Builder(export)
    first.decoder(past=False)
    shared = {t.name: t for t in (*with_past.inits, *first.inits)}
    outer = {*shared, *(i.name for i in inputs)}

    def branch(b: _Builder, tag: str) -> onnx.GraphProto:
        def name(v: str) -> str:
            return v if not v or v in outer else f"{tag}/{v}"

        nodes = []
        for n in b.nodes:
            n = helper.make_node(n.op_type, [name(x) for x in n.input],
                                 [name(x) for x in n.output], name=f"{tag}{n.name}",
                                 domain=n.domain, **{a.name: helper.get_attribute_value(a)
                                                     for a in n.attribute})  # fmt: skip
            nodes.append(n)
        outs = [helper.make_tensor_value_info(name(o.name), TensorProto.FLOAT16, None)
                for o in outputs]  # fmt: skip
        return helper.make_graph(nodes, tag, [], outs)

    cond = helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1])
    node = helper.make_node(
        "If", ["use_cache_branch"], [o.name for o in outputs], name="optimum::if",
        then_branch=branch(with_past, "past"), else_branch=branch(first, "first"),
    )  # fmt: skip
    return helper.make_graph(
        [node], "merged", [*inputs, cond], outputs, initializer=list(shared.values())
    )


def _figures(g) -> tuple:
    return (g.params, g.flops_per_token(Phase.DECODE, 32), g.kv_bytes_per_token,
            g.info.num_layers, g.info.num_heads)  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):
    return load_model(str(build_onnx(tmp_path_factory.mktemp("ref") / "ref.onnx")))


@pytest.mark.parametrize(
    "export",
    [
        Export(positions=True),
        Export(past=True),
        Export(positions=True, past=True),
        Export(positions=True, past=True, merged=True),
        Export(files=5),
    ],
    ids=["positions", "past", "positions+past", "merged", "five-data-files"],
)
def test_exported_inputs_and_outputs(export: Export, tmp_path: Path, reference) -> None:
    g = load_model(str(build_onnx(tmp_path / "m.onnx", export)))
    assert _figures(g) == _figures(reference)
    assert g.weight_bytes == reference.weight_bytes and not g.info.unplaced
    assert not g.unrecognised()


def _weight_bytes(export: Export) -> int:
    """The bytes every weight of the decoder takes as ``export`` stores it, counted from
    the builder's own initializers (tables, norms, biases fp16; linears as quantized)."""
    b = _Builder(export)
    b.decoder(export.past)
    sizes = {TensorProto.FLOAT16: 16, TensorProto.FLOAT: 32, TensorProto.INT8: 8,
             TensorProto.UINT8: 8}  # fmt: skip
    return sum(
        prod(t.dims) * sizes.get(t.data_type, 0) // 8
        for t in b.inits  # not: shapes, the attention scale, activations' quantization
        if t.data_type != TensorProto.INT64 and t.name != "scale"
        and not t.name.endswith((".xs", ".xz"))
    )


@pytest.mark.parametrize(
    ("quant", "dtype"),
    [("nbits", DType.INT4), ("qdq", DType.INT8), ("qlinear", DType.INT8), ("integer", DType.INT8)],
)
def test_quantized_operators_count_real_bytes(
    quant: str, dtype: DType, tmp_path: Path, reference
) -> None:
    export = Export(quant=quant)
    g = load_model(str(build_onnx(tmp_path / "q.onnx", export)))
    assert _figures(g) == _figures(reference)  # same structure and logical parameters
    assert g.weight_bytes == _weight_bytes(export)  # every byte: scales and zero points
    dtypes = g.weight_bytes_by_dtype()
    assert dtype.value in dtypes and not g.unrecognised()


def test_fused_contrib_operators(tmp_path: Path, reference) -> None:
    g = load_model(str(build_onnx(tmp_path / "f.onnx", Export(fused=True))))
    assert _figures(g) == _figures(reference)
    assert g.weight_bytes == reference.weight_bytes and not g.unrecognised()


def test_group_query_attention_with_rotary(tmp_path: Path) -> None:
    export = Export(positions=True, gqa=True)
    g = load_model(str(build_onnx(tmp_path / "gqa.onnx", export)))
    assert (g.info.num_heads, g.info.num_kv_heads, g.info.head_dim) == (HEADS, 2, DH)
    assert g.kv_bytes_per_token == LAYERS * 2 * 2 * DH * 2  # K and V of 2 heads, fp16
    assert g.weight_bytes == _weight_bytes(export) - 2 * 2 * POSITIONS * DH // 2  # no caches
    assert not g.unrecognised()


def test_safetensors_gguf_and_onnx_agree(tmp_path: Path, default_target, reference) -> None:
    """One GPT-2-style model as a header-only safetensors checkpoint, a GGUF file (names
    from gguf's own map; llama.cpp stores Conv1D weights transposed to (out, in)) and an
    ONNX export with position inputs and past key/values: one size, cost and plan."""
    gguf = pytest.importorskip("gguf")
    from test_gguf_frontend import write_gguf
    from test_hf_frontend import write_config, write_header

    from chipletc.compiler.compile import compile_model
    from chipletc.compiler.frontends.hf import lower_checkpoint
    from chipletc.compiler.partition import SearchOptions

    sizes = {"n_embd": D, "n_layer": LAYERS, "n_head": HEADS, "n_inner": FFN,
             "vocab_size": VOCAB, "n_positions": POSITIONS}  # fmt: skip
    d = write_config(tmp_path / "hf", "gpt2", **sizes)
    hf = {w.name: w.shape for _, w in lower_checkpoint(d).weights()}
    write_header(d / "model.safetensors", {n: ("F16", s) for n, s in hf.items()})
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, LAYERS)
    conv1d = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")
    tensors = {
        f"{names.get_name(n.rpartition('.')[0])}.{n.rpartition('.')[2]}": (
            tuple(reversed(s)) if n.endswith(conv1d) else s
        )
        for n, s in hf.items()
    }
    config = {"hidden_size": D, "num_hidden_layers": LAYERS, "intermediate_size": FFN,
              "num_attention_heads": HEADS, "max_position_embeddings": POSITIONS}  # fmt: skip
    graphs = {
        "hf": load_model(str(d)),
        "gguf": load_model(str(write_gguf(tmp_path / "m.gguf", config, tensors, arch="gpt2"))),
        "onnx": load_model(str(build_onnx(tmp_path / "m.onnx", Export(True, True)))),
    }
    figures = {k: (g.params, g.weight_bytes, g.kv_bytes_per_token) for k, g in graphs.items()}
    assert figures["hf"] == figures["gguf"] == figures["onnx"]
    flops = [g.flops_per_token(Phase.DECODE, 32) for g in graphs.values()]
    assert flops == pytest.approx([flops[0]] * 3, rel=1e-3)
    options = SearchOptions(prompt_len=48, gen_len=16, max_batch=16, deterministic_time_limit=10.0)
    plans = []
    for g in graphs.values():
        result = compile_model(g, default_target, options)
        chiplets = [(c.weight_bytes, c.kv_bytes, c.layers) for c in result.plan.chiplets]
        plans.append((result.partition.mapping, chiplets))
    assert plans[0] == plans[1] == plans[2]


def test_inspect_reports_quantized_onnx(tmp_path: Path, cli: CliRun) -> None:
    code, out, err = cli("inspect", str(build_onnx(tmp_path / "q.onnx", Export(quant="nbits"))))
    assert code == 0, err
    assert "(frontend onnx)" in out and "int4" in out and "unrecognised ops      none" in out
    assert "recognised by         structural recogniser on the onnx graph" in out


def test_torch_export_of_transformers_gpt2_with_three_integer_inputs(tmp_path: Path) -> None:
    """transformers' GPT-2, exported by torch.onnx as people call it: input_ids,
    attention_mask and position_ids, the mask guarded against NaN rows; it lowers to
    what the Hugging Face path gives for the same config."""
    transformers = pytest.importorskip("transformers")
    import warnings

    import torch
    from test_hf_frontend import write_config

    sizes = {"n_embd": D, "n_layer": LAYERS, "n_head": HEADS, "n_inner": FFN,
             "vocab_size": VOCAB, "n_positions": POSITIONS}  # fmt: skip
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**sizes)).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=position_ids, use_cache=False).logits  # fmt: skip

    ids = torch.zeros(1, 8, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            Logits(), (ids, torch.ones_like(ids), torch.arange(8)[None]), dynamo=True,
            optimize=False, verbose=False,
            input_names=["input_ids", "attention_mask", "position_ids"],
        )  # fmt: skip
    path = tmp_path / "gpt2.onnx"
    program.save(str(path), include_initializers=True, external_data=True)
    Path(f"{path}.data").unlink(missing_ok=True)  # dims and dtypes only
    g = load_model(str(path))
    hf = load_model(str(write_config(tmp_path / "hf", "gpt2", **sizes, torch_dtype="float32")))
    assert g.params == sum(p.numel() for p in model.parameters()) == hf.params
    assert g.weight_bytes == hf.weight_bytes and not g.unrecognised()
    # The export adds the attention mask to the scores and scales q and k apart: 0.5 %.
    assert g.flops_per_token(Phase.DECODE, 32) == pytest.approx(
        hf.flops_per_token(Phase.DECODE, 32), rel=0.01
    )

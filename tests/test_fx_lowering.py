"""Lowering torch modules to the IR: structure, costs against closed forms, sharding."""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from builders import make_graph
from torch import nn

from chipletc.compiler.frontends import UnrecognisedOpsWarning, load_model, lower_module
from chipletc.compiler.passes.manager import Pass, PassError, run_passes
from chipletc.compiler.passes.sharding import assign_sharding
from chipletc.ir.dtypes import DType
from chipletc.ir.errors import IRError, ModelError
from chipletc.ir.graph import Graph
from chipletc.ir.op import KIND_RULES, Op, OpKind, Role, Shard, Weight
from chipletc.ir.workload import Phase, Workload
from chipletc.models import zoo

CONTEXT = 2048
ZooGraph = Callable[[str], Graph]  # the session fixture of tests/conftest.py


def closed_form_decode_flops(name: str) -> float:
    """2 FLOPs per weight MAC (embedding excluded, head included) + score and context."""
    L, d, H, KV, dh, ff, V, swiglu, _parallel = {
        "gpt3-175b": (96, 12288, 96, 96, 128, 49152, 50257, False, False),
        "llama3-70b": (80, 8192, 64, 8, 128, 28672, 128256, True, False),
        "palm-540b": (118, 18432, 48, 1, 256, 73728, 256000, True, True),
    }[name]
    mlp = (3 if swiglu else 2) * d * ff
    matmul = L * (2 * d * H * dh + 2 * d * KV * dh + mlp) + d * V
    attention = L * 2 * H * dh * CONTEXT
    return 2.0 * (matmul + attention)


@pytest.mark.parametrize("name", ["gpt3-175b", "llama3-70b", "palm-540b"])
def test_decode_flops_match_closed_form(name: str, zoo_graph: ZooGraph) -> None:
    flops = zoo_graph(name).flops_per_token(Phase.DECODE, CONTEXT)
    assert abs(flops / closed_form_decode_flops(name) - 1) < 0.01


@pytest.mark.parametrize(
    ("name", "per_layer_elems"),
    [("gpt3-175b", 2 * 96 * 128), ("llama3-70b", 2 * 8 * 128), ("palm-540b", 2 * 256)],
)
def test_kv_bytes_match_closed_form(name: str, per_layer_elems: int, zoo_graph: ZooGraph) -> None:
    g = zoo_graph(name)
    assert g.kv_bytes_per_token == g.info.num_layers * per_layer_elems * 2  # bf16


@pytest.mark.parametrize("name", ["gpt2-small", "palm-540b", "mixtral-8x7b", "deepseek-v3"])
def test_lowered_params_equal_module_params(name: str, zoo_graph: ZooGraph) -> None:
    module_total = sum(p.numel() for p in zoo.build(name).parameters())
    assert zoo_graph(name).params == module_total


def test_model_info_from_structure(zoo_graph: ZooGraph) -> None:
    palm = zoo_graph("palm-540b").info
    assert (palm.num_layers, palm.num_heads, palm.num_kv_heads, palm.head_dim) == (118, 48, 1, 256)
    assert palm.parallel_block and palm.d_model == 18432 and palm.ffn_dim == 73728
    llama = zoo_graph("llama3-70b").info
    assert (llama.num_kv_heads, llama.parallel_block, llama.vocab_size) == (8, False, 128256)
    mixtral = zoo_graph("mixtral-8x7b").info
    assert (mixtral.num_experts, mixtral.experts_per_token, mixtral.ffn_dim) == (8, 2, 14336)


def test_mla_caches_the_latent(zoo_graph: ZooGraph) -> None:
    g = zoo_graph("deepseek-v3")
    score = [op for op in g.ops if op.kind is OpKind.ATTN_SCORE]
    context = [op for op in g.ops if op.kind is OpKind.ATTN_CONTEXT]
    assert {op.dims["kv_elems"] for op in score} == {576}
    assert {op.dims["kv_elems"] for op in context} == {0}
    assert {(op.dims["head_dim"], op.dims["heads"]) for op in context} == {(128, 128)}
    roles = {op.role for op in g.ops if op.block == 0 and op.kind is OpKind.MATMUL}
    assert {Role.Q_DOWN, Role.KV_DOWN, Role.Q, Role.KV, Role.PROJ} <= roles


def test_deepseek_dense_then_moe_blocks(zoo_graph: ZooGraph) -> None:
    g = zoo_graph("deepseek-v3")
    moe_blocks = {op.block for op in g.ops if op.kind is OpKind.EXPERT_MATMUL}
    assert moe_blocks == set(range(3, 61))
    shared = [op for op in g.ops if op.attrs.get("expert") == "shared"]
    assert len(shared) == 3 * 58


def test_blocks_are_contiguous_and_complete(zoo_graph: ZooGraph) -> None:
    g = zoo_graph("llama3-70b")
    groups = g.groups()
    assert [op.kind for op in groups["pre"]] == [OpKind.EMBEDDING]
    assert [op.kind for op in groups["post"]] == [OpKind.NORM, OpKind.LM_HEAD]
    assert all(len(groups[b]) == len(groups[0]) for b in range(80))


def _shard_by_role(g: Graph, block: int) -> dict[tuple[OpKind, Role], set[Shard]]:
    out: dict[tuple[OpKind, Role], set[Shard]] = {}
    for op in g.ops:
        if op.block == block:
            out.setdefault((op.kind, op.role), set()).add(op.shard)
    return out


def test_sharding_gqa(zoo_graph: ZooGraph) -> None:
    s = _shard_by_role(zoo_graph("llama3-70b"), 5)
    for role in (Role.Q, Role.K, Role.V, Role.GATE, Role.UP):
        assert s[(OpKind.MATMUL, role)] == {Shard.COLUMN}
    for role in (Role.PROJ, Role.DOWN):
        assert s[(OpKind.MATMUL, role)] == {Shard.ROW}
    assert s[(OpKind.ATTN_SCORE, Role.ATTN)] == {Shard.HEADS}
    assert s[(OpKind.ACTIVATION, Role.ACT)] == {Shard.WIDTH}
    assert s[(OpKind.NORM, Role.NORM)] == {Shard.REPLICATED}
    assert s[(OpKind.ELEMENTWISE, Role.RESIDUAL)] == {Shard.REPLICATED}
    head = [op for op in zoo_graph("llama3-70b").ops if op.kind is OpKind.LM_HEAD]
    assert head[0].shard is Shard.VOCAB and head[0].tied is None


def test_sharding_moe(zoo_graph: ZooGraph) -> None:
    s = _shard_by_role(zoo_graph("mixtral-8x7b"), 0)
    for role in (Role.GATE, Role.UP, Role.DOWN):
        assert s[(OpKind.EXPERT_MATMUL, role)] == {Shard.EXPERT}
    assert s[(OpKind.ROUTER, Role.ROUTER)] == {Shard.REPLICATED}
    assert s[(OpKind.ACTIVATION, Role.ACT)] == {Shard.EXPERT}


def test_tied_head_reads_the_embedding(zoo_graph: ZooGraph) -> None:
    g = zoo_graph("gpt2-small")
    head = next(op for op in g.ops if op.kind is OpKind.LM_HEAD)
    assert head.tied is not None and head.tied.name == "tok.weight" and not head.weights


def test_roles_of_fused_qkv_and_mlp(zoo_graph: ZooGraph) -> None:
    roles = [op.role for op in zoo_graph("gpt2-small").ops if op.kind is OpKind.MATMUL]
    assert roles[:4] == [Role.QKV, Role.PROJ, Role.FC1, Role.FC2]


USER_MODEL = textwrap.dedent(
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    class RMS(nn.Module):  # decomposed RMSNorm, as Hugging Face writes it
        def __init__(self, d):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))
        def forward(self, x):
            var = x.float().pow(2).mean(-1, keepdim=True)
            return self.weight * (x * torch.rsqrt(var + 1e-6))

    class Block(nn.Module):
        def __init__(self, d=64, h=4, kv=2):
            super().__init__()
            self.h, self.kv, self.dh = h, kv, d // h
            self.n1, self.n2 = RMS(d), RMS(d)
            self.wqkv = nn.Linear(d, (h + 2 * kv) * self.dh, bias=False)
            self.wo = nn.Linear(d, d, bias=False)
            self.w1 = nn.Linear(d, 3 * d, bias=False)
            self.w3 = nn.Linear(d, 3 * d, bias=False)
            self.w2 = nn.Linear(3 * d, d, bias=False)
        def forward(self, x):
            b, t, d = x.shape
            sizes = [self.h * self.dh, self.kv * self.dh, self.kv * self.dh]
            q, k, v = self.wqkv(self.n1(x)).split(sizes, -1)
            q = q.view(b, t, self.h, self.dh).transpose(1, 2)
            k = k.view(b, t, self.kv, self.dh).transpose(1, 2)
            v = v.view(b, t, self.kv, self.dh).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            x = x + self.wo(y.transpose(1, 2).reshape(b, t, d))
            h = self.n2(x)
            g = self.w1(h)
            return x + self.w2(g * torch.sigmoid(g) * self.w3(h))

    class Tiny(nn.Module):
        def __init__(self, guard=False, odd=False):
            super().__init__()
            self.guard, self.odd = guard, odd
            self.emb = nn.Embedding(100, 64)
            self.layers = nn.ModuleList(Block() for _ in range(2))
            self.norm = RMS(64)
            self.out = nn.Linear(64, 100, bias=False)
        def forward(self, ids):
            if self.guard and ids.shape[1] > 4096:  # fx cannot trace this; export can
                raise ValueError("too long")
            x = self.emb(ids)
            for layer in self.layers:
                x = layer(x)
            if self.odd:
                x = torch.cumsum(x, dim=1)
            return self.out(self.norm(x))

    def make():
        return Tiny()

    def guarded():
        return Tiny(guard=True)

    def odd():
        return Tiny(odd=True)

    def mlp():
        return nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 10))

    def broken():
        raise RuntimeError("no weights here")
    """
)


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.py"
    path.write_text(USER_MODEL)
    return path


def test_user_module_from_factory(user_file: Path) -> None:
    g = load_model(f"{user_file}:make")
    info = g.info
    assert (info.num_layers, info.num_heads, info.num_kv_heads, info.head_dim) == (2, 4, 2, 16)
    assert info.frontend == "torch.fx" and info.ffn_dim == 192 and not g.unrecognised()
    kinds = [op.kind for op in g.ops if op.block == 0]
    assert kinds.count(OpKind.NORM) == 2 and kinds.count(OpKind.ACTIVATION) == 1
    roles = [op.role for op in g.ops if op.block == 0 and op.kind is OpKind.MATMUL]
    assert roles == [Role.QKV, Role.PROJ, Role.GATE, Role.UP, Role.DOWN]
    assert g.kv_bytes_per_token == 2 * 2 * (2 * 16) * 2
    module_total = sum(p.numel() for p in nn.Module.parameters(_factory(user_file, "make")))
    assert g.params == module_total


def _factory(path: Path, name: str) -> nn.Module:
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace[name]()


def test_export_fallback_gives_the_same_graph(user_file: Path) -> None:
    fx_graph = load_model(f"{user_file}:make")
    exported = load_model(f"{user_file}:guarded")
    assert exported.info.frontend == "torch.export"
    assert exported.ops_by_kind() == fx_graph.ops_by_kind()
    assert exported.kv_bytes_per_token == fx_graph.kv_bytes_per_token


def test_unrecognised_ops_are_generic_and_warned_once(user_file: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = lower_module(_factory(user_file, "odd"), "odd")
    ours = [w for w in caught if issubclass(w.category, UnrecognisedOpsWarning)]
    assert len(ours) == 1 and "cumsum" in str(ours[0].message)
    (generic,) = g.unrecognised()
    assert generic.attrs["flops_per_token"] == 64 and generic.attrs["out_elems_per_token"] == 64


def test_plain_mlp_is_not_a_transformer(user_file: Path) -> None:
    with pytest.raises(ModelError, match="no transformer structure"):
        load_model(f"{user_file}:mlp")


def test_sharding_pass_is_pure() -> None:
    g = lower_module(zoo.build(zoo.with_layers(zoo.get_config("llama3-8b"), 2)), "l2")
    sharded = assign_sharding(g)
    assert {op.shard for op in g.ops} == {Shard.REPLICATED}
    assert Shard.COLUMN in {op.shard for op in sharded.ops}


def test_lowering_moves_real_modules_to_meta() -> None:
    cfg = zoo.with_layers(zoo.get_config("gpt2-small"), 1)
    from chipletc.models.transformer import Transformer

    module = Transformer(cfg)  # real (CPU) weights
    g = lower_module(module, "cpu-gpt2")
    assert g.info.num_layers == 1
    assert all(p.device == torch.device("meta") for p in module.parameters())


def test_generic_op_bytes_follow_the_activation_dtype(user_file: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnrecognisedOpsWarning)
        g = lower_module(_factory(user_file, "odd"), "odd")
    (generic,) = g.unrecognised()
    wl = Workload.decode(batch=3, context_len=16)  # 3 new tokens
    bf16, fp32 = (generic.cost(wl, g.kv_dtype, act) for act in (DType.BF16, DType.FP32))
    # cumsum over a 64-wide residual: 64 elements in and out per token.
    assert (bf16.act_in_bytes, bf16.act_out_bytes) == (3 * 64 * 2, 3 * 64 * 2)
    assert (fp32.act_in_bytes, fp32.act_out_bytes) == (3 * 64 * 4, 3 * 64 * 4)


def _corrupt_blocks(st):  # the lowering state is private: no annotation
    next(g for g in st.groups.values() if g.block is not None).block = 99
    return st


def test_pass_manager_names_the_pass_that_breaks_an_invariant(user_file: Path) -> None:
    from chipletc.compiler.frontends.fx import LOWERING_PASSES, _Lowering
    from chipletc.compiler.frontends.fx_trace import trace

    tm = trace(_factory(user_file, "make"), "tiny", 8)
    passes = [*LOWERING_PASSES[:2], Pass("corrupt_blocks", _corrupt_blocks)]
    with pytest.raises(PassError, match=r"block 99 outside 0\.\.1") as err:
        run_passes(_Lowering(tm, "tiny", None), passes, ["trace"])
    assert err.value.pass_name == "corrupt_blocks"
    assert err.value.before == ("trace", "group_nodes", "assign_blocks")


def test_graph_passes_run_verified_in_order() -> None:
    g = make_graph(layers=2)

    def reshape_q(g: Graph) -> Graph:
        g.replace_op(replace(g.op("h0.q"), weights=(Weight("h0.q.weight", (3, 5)),)))
        return g

    expected = r"pass reshape_q \(after: shard\).*op 'h0.q' \(matmul; inputs \['h0.ln1'\]"
    with pytest.raises(PassError, match=expected):
        run_passes(g, [Pass("shard", assign_sharding), Pass("reshape_q", reshape_q)])


def test_every_kind_has_one_rule_and_ops_need_its_dims() -> None:
    assert set(KIND_RULES) == set(OpKind)
    for kind, rule in KIND_RULES.items():
        if rule.dims:
            with pytest.raises(IRError, match="missing dims"):
                Op("x", kind, {})

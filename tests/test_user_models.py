"""Models users bring: guarded model files, torch.nn's own attention layers, hostile
config.json values and contexts beyond a learned position table."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from chipletc.cli.main import main
from chipletc.compiler.frontends import load_model
from chipletc.compiler.frontends.user_file import build_module
from chipletc.ir.errors import ModelError, UsageError
from chipletc.ir.graph import Graph
from chipletc.ir.op import OpKind

D, HEADS, LAYERS, VOCAB = 64, 4, 2, 100

# A module beside the model file: the model file imports it.
HELPER = textwrap.dedent(
    """
    from torch import nn

    def layer(kind):
        if kind == "encoder":
            return nn.TransformerEncoderLayer(64, 4, 256, dropout=0.0, batch_first=True)
        return nn.TransformerDecoderLayer(64, 4, 256, dropout=0.0, batch_first=True)
    """
)

MODELS = textwrap.dedent(
    """
    import sys

    import torch
    from torch import nn

    from helper import layer

    class TorchLayers(nn.Module):
        def __init__(self, kind):
            super().__init__()
            self.kind = kind
            self.emb = nn.Embedding(100, 64)
            self.layers = nn.ModuleList(layer(kind) for _ in range(2))
            self.out = nn.Linear(64, 100, bias=False)
        def forward(self, ids):
            x = self.emb(ids)
            for block in self.layers:
                x = block(x) if self.kind == "encoder" else block(x, x)
            return self.out(x)

    class Mha(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(100, 64)
            self.attn = nn.MultiheadAttention(64, 4, batch_first=True)
            self.norm = nn.LayerNorm(64)
            self.fc1, self.fc2 = nn.Linear(64, 256), nn.Linear(256, 64)
            self.out = nn.Linear(64, 100, bias=False)
        def forward(self, ids):
            x = self.emb(ids)
            x = x + self.attn(x, x, x, need_weights=False)[0]
            x = x + self.fc2(torch.relu(self.fc1(self.norm(x))))
            return self.out(x)

    class Cnn(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
        def forward(self, x):
            return self.conv(x)

    def encoder():
        return TorchLayers("encoder")

    def decoder():
        return TorchLayers("decoder")

    def mha():
        return Mha()

    def cnn():
        return Cnn()

    def leaves():
        sys.exit(3)

    def interrupted():
        raise KeyboardInterrupt

    def fails():
        raise ValueError("width must be even")  # line 62

    def real_tensor():
        return nn.Linear(4, 4).weight.sum().item()
    """
)
FAILS_LINE = 62


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    (tmp_path / "helper.py").write_text(HELPER)
    path = tmp_path / "models.py"
    path.write_text(MODELS)
    assert path.read_text().splitlines()[FAILS_LINE - 1].strip().startswith("raise ValueError")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_model_file_builds_on_meta_and_imports_its_neighbour(model_file: Path) -> None:
    module = build_module(model_file, "encoder")
    params = list(module.parameters())
    assert params and all(p.device.type == "meta" for p in params)


def _closed_form_params(attn_layers: int, mlp_layers: int, norms: int) -> int:
    """Embedding + head, attention (in/out projections with biases), MLP, LayerNorms."""
    attn = 4 * D * D + 4 * D
    mlp = 2 * D * 4 * D + 4 * D + D
    return 2 * VOCAB * D + attn_layers * attn + mlp_layers * mlp + norms * 2 * D


@pytest.mark.parametrize(
    ("factory", "blocks", "params"),
    [
        ("mha", 1, _closed_form_params(1, 1, 1)),
        ("encoder", LAYERS, _closed_form_params(LAYERS, LAYERS, 2 * LAYERS)),
        # a decoder layer is two blocks: self-attention, then cross-attention + MLP
        ("decoder", 2 * LAYERS, _closed_form_params(2 * LAYERS, LAYERS, 3 * LAYERS)),
    ],
)
def test_torch_attention_layers_are_recognised(
    factory: str, blocks: int, params: int, model_file: Path
) -> None:
    g = load_model(f"{model_file}:{factory}")
    kinds = g.ops_by_kind()
    assert kinds["attn_score"] == kinds["attn_context"] == blocks
    assert (g.info.num_layers, g.info.num_heads, g.info.head_dim) == (blocks, HEADS, D // HEADS)
    assert g.params == params and not g.unrecognised()
    # Every core caches one K and one V of width D per token (bf16), the cross-attention
    # over the block input included.
    assert g.kv_bytes_per_token == blocks * 2 * D * 2
    assert sum(op.kind is OpKind.LM_HEAD for op in g.ops) == 1


@pytest.mark.parametrize(
    ("factory", "message", "code"),
    [
        ("fails", f"fails() raised ValueError: width must be even (at {{file}}:{FAILS_LINE})", 2),
        ("leaves", "leaves() raised SystemExit: sys.exit(3) (at {file}:", 2),
        ("cnn", "cannot trace forward(input_ids) on a 1x8 batch of token ids (RuntimeError:", 2),
        ("real_tensor", "real_tensor() raised", 2),
        ("interrupted", "chipletc: interrupted", 130),
    ],
)
def test_model_file_failures_are_one_line(
    factory: str, message: str, code: int, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(capsys, "inspect", f"{model_file}:{factory}")
    assert (rc, out) == (code, "")
    assert err.count("\n") == 1, err  # no torch traceback before the line
    assert message.format(file=model_file) in err


def test_cnn_error_points_at_the_users_forward(model_file: Path) -> None:
    with pytest.raises(ModelError, match=r"token ids.*\(at .*models\.py:\d+\)$"):
        load_model(f"{model_file}:cnn")


def test_model_file_folder_leaves_sys_path(model_file: Path) -> None:
    import sys

    load_model(f"{model_file}:mha")
    assert str(model_file.parent.resolve()) not in sys.path


# -- config.json limits ------------------------------------------------------------------

LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
         "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}  # fmt: skip
HOSTILE = [
    ({"hidden_size": 2**40}, "'hidden_size' is 1099511627776, outside 1..131072"),
    ({"num_hidden_layers": 1e9}, "is 1000000000.0, not a whole number; give one in 1..256"),
    ({"num_hidden_layers": 10**9}, "'num_hidden_layers' is 1000000000, outside 1..256"),
    ({"vocab_size": 0}, "'vocab_size' is 0, outside 1..4194304"),
    ({"intermediate_size": -5}, "'intermediate_size' is -5, outside 1..1048576"),
    ({"num_attention_heads": True}, "'num_attention_heads' is True, not a whole number"),
    ({"max_position_embeddings": 2**30}, "is 1073741824, outside 1..16777216"),
]  # fmt: skip


@pytest.mark.parametrize(("override", "message"), HOSTILE)
def test_config_numbers_out_of_range_are_one_line(
    override: dict, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA, **override}))
    rc, out, err = run(capsys, "inspect", str(tmp_path))
    assert (rc, out) == (2, "") and err.count("\n") == 1
    assert message in err


# -- learned position tables ----------------------------------------------------------------


def test_context_beyond_a_learned_position_table_is_refused(
    zoo_graph: Callable[[str], Graph], capsys: pytest.CaptureFixture[str]
) -> None:
    gpt2 = zoo_graph("gpt2-small")
    assert gpt2.learned_positions and gpt2.info.max_positions == 1024
    gpt2.check_context(1024, "--prompt-len")  # the whole table is usable
    with pytest.raises(UsageError, match="1025 tokens exceed the 1024-row learned position"):
        gpt2.check_context(1025, "--prompt-len")
    rc, out, err = run(capsys, "inspect", "gpt2-small", "--prompt-len", "8192")
    assert (rc, out) == (2, "")
    assert "--prompt-len: 8192 tokens exceed the 1024-row learned position table" in err
    rc, out, err = run(capsys, "compile", "gpt2-small", "--prompt-len", "2048")
    assert (rc, out) == (2, "") and "2048 tokens exceed the 1024-row" in err


def test_computed_positions_have_no_table(zoo_graph: Callable[[str], Graph]) -> None:
    llama = zoo_graph("llama3-8b")
    assert not llama.learned_positions
    llama.check_context(10**6, "--prompt-len")

"""The Hugging Face frontend: configs of each family, header-only checkpoints, bad input."""

from __future__ import annotations

import json
import struct
from math import prod
from pathlib import Path

import pytest
from builders import CliRun

from chipletc.compiler import cache
from chipletc.compiler.frontends import load_model
from chipletc.compiler.frontends.hf import SUPPORTED, lower_checkpoint
from chipletc.compiler.frontends.safetensors_header import ITEM_BYTES, read_header
from chipletc.ir.dtypes import DType
from chipletc.ir.errors import ModelError
from chipletc.ir.op import OpKind

# Small configs of each supported family, as config.json states them.
CONFIGS: dict[str, dict] = {
    "llama": {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
              "max_position_embeddings": 64},
    "mistral": {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32,
                "vocab_size": 100, "max_position_embeddings": 64},
    "qwen2": {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
              "max_position_embeddings": 64, "tie_word_embeddings": True},
    "mixtral": {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
                "max_position_embeddings": 64, "num_local_experts": 4, "num_experts_per_tok": 2},
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 100, "n_positions": 64},
    "opt": {"hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "vocab_size": 100, "max_position_embeddings": 64, "word_embed_proj_dim": 64},
    "falcon": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "vocab_size": 100, "multi_query": True, "parallel_attn": True, "bias": False,
               "max_position_embeddings": 64},
}  # fmt: skip


def write_config(directory: Path, model_type: str, **extra: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = {"model_type": model_type, **CONFIGS.get(model_type, {}), **extra}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def write_header(path: Path, tensors: dict[str, tuple[str, tuple[int, ...]] | tuple]) -> Path:
    """A header-only safetensors file: the 8-byte length and the JSON header, no data.

    Each tensor is (dtype, shape) or (dtype, shape, nbytes) for packed dtypes.
    """
    header, offset = {}, 0
    for name, (dtype, shape, *nbytes) in tensors.items():
        size = nbytes[0] if nbytes else prod(shape) * ITEM_BYTES[dtype]
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


def checkpoint(directory: Path, model_type: str, dtype: str = "BF16", **extra: object) -> Path:
    """A config plus a header-only model.safetensors holding exactly the implied tensors."""
    write_config(directory, model_type, **extra)
    g = lower_checkpoint(directory)
    tensors = {w.name: (dtype, w.shape) for _, w in g.weights()}
    write_header(directory / "model.safetensors", tensors)
    return directory


# -- configs of each family -------------------------------------------------------------------


@pytest.mark.parametrize("family", CONFIGS)
def test_config_only_lowers_with_config_dtype(family: str, tmp_path: Path) -> None:
    g = load_model(str(write_config(tmp_path / family, family, torch_dtype="float16")))
    assert g.info.frontend == "hf" and g.info.num_layers == 2
    assert set(g.weight_bytes_by_dtype()) == {"fp16"}
    assert g.weight_bytes == 2 * g.params


@pytest.fixture
def transformers_model(monkeypatch: pytest.MonkeyPatch):
    """``transformers_model(config)``: transformers' own module for a config, on the meta
    device, never touching the hub (offline for this test only)."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def build(config: dict):
        cls = transformers.AutoConfig.for_model(**config)
        with torch.device("meta"):
            return transformers.AutoModelForCausalLM.from_config(cls)

    return build


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "gpt2", "opt", "falcon"])
def test_names_and_shapes_match_transformers(
    family: str, tmp_path: Path, transformers_model
) -> None:
    g = lower_checkpoint(write_config(tmp_path, family))
    model = transformers_model({"model_type": family, **CONFIGS[family]})
    theirs = {n: tuple(p.shape) for n, p in model.named_parameters()}  # tied: listed once
    ours = {w.name: w.shape for _, w in g.weights()}
    assert ours == theirs


def test_mixtral_total_matches_transformers(tmp_path: Path, transformers_model) -> None:
    g = lower_checkpoint(write_config(tmp_path, "mixtral"))
    model = transformers_model({"model_type": "mixtral", **CONFIGS["mixtral"]})
    assert g.params == sum(p.numel() for p in model.parameters())
    info = g.info
    assert (info.num_experts, info.experts_per_token, info.num_kv_heads) == (4, 2, 2)
    experts = [w for op, w in g.weights() if op.kind is OpKind.EXPERT_MATMUL and op.block == 0]
    assert len(experts) == 12 and experts[0].name.endswith("experts.0.w1.weight")


# -- safetensors headers ----------------------------------------------------------------------


def test_header_only_checkpoint_gives_exact_bytes(tmp_path: Path) -> None:
    d = checkpoint(tmp_path / "m", "llama", dtype="F32")
    g = lower_checkpoint(d)
    assert g.weight_bytes == 4 * g.params and g.weight_bytes_by_dtype() == {"fp32": g.weight_bytes}
    assert (d / "model.safetensors").stat().st_size < 20_000  # no data was written
    assert "model.safetensors" in g.info.notes


def test_mixed_dtypes_and_ignored_buffers(tmp_path: Path) -> None:
    d = write_config(tmp_path / "m", "gpt2")
    names = {w.name: w.shape for _, w in lower_checkpoint(d).weights()}
    tensors = {n: ("F16" if n.endswith("bias") else "F32", s) for n, s in names.items()}
    tensors["transformer.h.0.attn.bias"] = ("F32", (1, 1, 64, 64))  # an old mask buffer
    write_header(d / "model.safetensors", tensors)
    g = lower_checkpoint(d)
    expected = sum(prod(s) * (2 if n.endswith("bias") else 4) for n, s in names.items())
    assert g.weight_bytes == expected and set(g.weight_bytes_by_dtype()) == {"fp16", "fp32"}
    assert "transformer.h.0.attn.bias" in g.info.notes


def test_int8_checkpoint_counts_its_bytes(tmp_path: Path) -> None:
    d = write_config(tmp_path / "m", "opt")
    names = {w.name: w.shape for _, w in lower_checkpoint(d).weights()}
    tensors: dict = {}
    for n, s in names.items():
        if len(s) == 2 and ".layers." in n:  # bitsandbytes LLM.int8: int8 + a row scale
            tensors[n] = ("I8", s)
            tensors[n.replace(".weight", ".SCB")] = ("F32", (s[0],))
        else:
            tensors[n] = ("F16", s)
    write_header(d / "model.safetensors", tensors)
    g = lower_checkpoint(d)
    fc1 = next(w for _, w in g.weights() if w.name == "model.decoder.layers.0.fc1.weight")
    assert fc1.dtype is DType.INT8 and fc1.nbytes == 128 * 64 + 4 * 128
    total = sum(prod(s) * ITEM_BYTES[dt] for dt, s, *_ in tensors.values())
    assert g.weight_bytes == total


def test_gptq_int4_checkpoint_counts_packed_scales_and_zeros(tmp_path: Path) -> None:
    d = write_config(tmp_path / "m", "llama", quantization_config={"bits": 4, "group_size": 32})
    names = {w.name: w.shape for _, w in lower_checkpoint(d).weights()}
    tensors: dict = {}
    for n, (rows, *cols) in names.items():
        if ".layers." in n and cols:  # (out, in) -> GPTQ's packed (in/8, out) int32 and friends
            base, n_in = n.removesuffix(".weight"), cols[0]
            tensors[f"{base}.qweight"] = ("I32", (n_in // 8, rows))
            tensors[f"{base}.qzeros"] = ("I32", (n_in // 32, rows // 8))
            tensors[f"{base}.scales"] = ("F16", (n_in // 32, rows))
            tensors[f"{base}.g_idx"] = ("I32", (n_in,))
        else:
            tensors[n] = ("F16", (rows, *cols))
    write_header(d / "model.safetensors", tensors)
    g = lower_checkpoint(d)
    q = next(w for _, w in g.weights() if w.name == "model.layers.0.self_attn.q_proj.weight")
    assert q.dtype is DType.INT4 and q.shape == (64, 64)
    assert q.nbytes == 64 * 64 // 2 + 2 * 8 * 4 + 2 * 64 * 2 + 64 * 4
    assert g.weight_bytes == sum(prod(s) * ITEM_BYTES[dt] for dt, s, *_ in tensors.values())
    assert "quantized" in g.info.notes


def test_sharded_index(tmp_path: Path) -> None:
    d = write_config(tmp_path / "m", "mistral")
    names = {w.name: w.shape for _, w in lower_checkpoint(d).weights()}
    first = {n: s for n, s in names.items() if "layers.1" not in n}
    second = {n: s for n, s in names.items() if n not in first}
    write_header(d / "a.safetensors", {n: ("BF16", s) for n, s in first.items()})
    write_header(d / "b.safetensors", {n: ("F32", s) for n, s in second.items()})
    weight_map = {n: "a.safetensors" for n in first} | {n: "b.safetensors" for n in second}
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    g = lower_checkpoint(d)
    assert g.weight_bytes == 2 * sum(map(prod, first.values())) + 4 * sum(
        map(prod, second.values())
    )
    (d / "b.safetensors").unlink()
    with pytest.raises(ModelError, match=r"shard b\.safetensors .* is missing"):
        lower_checkpoint(d)


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x00", "shorter than 8 bytes"),
        (struct.pack("<Q", 50) + b"{}", "truncated"),
        (struct.pack("<Q", 4) + b"{{{{", "not JSON"),
        (struct.pack("<Q", 2**40), "exceeds"),
    ],
)
def test_corrupt_header(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(raw)
    with pytest.raises(ModelError, match=message):
        read_header(path)


def test_header_offsets_must_fit_dtype(tmp_path: Path) -> None:
    path = write_header(tmp_path / "x.safetensors", {"w": ("F32", (4, 4), 10)})
    with pytest.raises(ModelError, match="10 bytes do not hold F32"):
        read_header(path)


def test_corrupt_header_fails_in_one_line(
    tmp_path: Path, cli: CliRun
) -> None:
    d = write_config(tmp_path / "m", "llama")
    (d / "model.safetensors").write_bytes(struct.pack("<Q", 9) + b'{"a": 1}x')
    code, _out, err = cli("inspect", str(d))
    assert code == 2 and "corrupt safetensors header" in err
    assert len(err.strip().splitlines()) == 1


def test_unsupported_architecture_lists_the_supported(
    tmp_path: Path, cli: CliRun
) -> None:
    d = write_config(tmp_path / "m", "bert", architectures=["BertModel"])
    code, _out, err = cli("inspect", str(d))
    assert code == 2 and "unsupported architecture 'bert'" in err
    assert all(f in err for f in SUPPORTED)
    assert len(err.strip().splitlines()) == 1


def test_checkpoint_and_config_must_agree(tmp_path: Path, cli: CliRun) -> None:
    d = checkpoint(tmp_path / "m", "qwen2")
    header = read_header(d / "model.safetensors")
    tensors = {e.name: (e.dtype, e.shape) for e in header.values()}
    extra = dict(tensors, **{"model.layers.0.mlp.extra.weight": ("BF16", (4, 4))})
    write_header(d / "model.safetensors", extra)
    before = lower_checkpoint(d)  # an unused tensor is listed with its bytes, in no plan
    assert before.info.unplaced == (("model.layers.0.mlp.extra.weight", 32),)
    assert before.weight_bytes == 2 * before.params
    code, out, _ = cli("inspect", str(d))
    assert code == 0 and "not placed            1 tensors, 32 B" in out
    assert "model.layers.0.mlp.extra.weight  32 B" in out
    assert "recognised by         config.json model_type qwen2" in out
    tensors.pop("model.layers.1.self_attn.k_proj.bias")
    write_header(d / "model.safetensors", tensors)
    with pytest.raises(ModelError, match=r"k_proj\.bias"):
        lower_checkpoint(d)
    tensors["model.layers.1.self_attn.k_proj.bias"] = ("BF16", (64,))
    write_header(d / "model.safetensors", tensors)
    with pytest.raises(ModelError, match=r"is \[64\] in model.safetensors; config.json implies"):
        lower_checkpoint(d)


def test_unsupported_variants_are_refused(tmp_path: Path) -> None:
    d = write_config(tmp_path / "m", "falcon", alibi=True)
    with pytest.raises(ModelError, match="Falcon with ALiBi is not supported"):
        lower_checkpoint(d)


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"with no config\.json"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("length", [2**40, 2**63])
def test_corrupt_header_length_through_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, length: int
) -> None:
    # the cache keys a checkpoint by its header before the frontend reads it: a length
    # past the file must reach the frontend's one-line refusal, not an OverflowError
    monkeypatch.setenv("CHIPLETC_CACHE", str(tmp_path / "cache"))
    d = write_config(tmp_path / "m", "llama")
    (d / "model.safetensors").write_bytes(struct.pack("<Q", length) + b"{}")
    with pytest.raises(ModelError, match="corrupt safetensors header"):
        cache.load_cached(str(d))


def test_heads_must_split_the_hidden_size(tmp_path: Path) -> None:
    d = write_config(tmp_path / "m", "gpt2", n_embd=64, n_head=5)
    with pytest.raises(ModelError, match="hidden size 64 does not split into 5 heads"):
        lower_checkpoint(d)


def test_directory_whose_config_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").mkdir()
    with pytest.raises(ModelError, match=r"a config\.json that is not a file"):
        load_model(str(tmp_path))


def test_config_without_model_type_says_so(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(ModelError, match=r"config\.json gives no model_type; supported") as err:
        lower_checkpoint(d)
    assert "()" not in str(err.value)

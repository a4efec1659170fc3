"""The GGUF frontend: files written here with the ``gguf`` package's own writer, tensor
names from its own HF -> GGUF name map (independent of the frontend's table)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from builders import CliRun
from test_hf_frontend import CONFIGS, write_config, write_header

from chipletc.compiler.compile import compile_model
from chipletc.compiler.frontends import load_model
from chipletc.compiler.frontends.hf import lower_checkpoint
from chipletc.compiler.partition import SearchOptions
from chipletc.ir.dtypes import DType
from chipletc.ir.errors import ModelError
from chipletc.ir.workload import Phase

gguf = pytest.importorskip("gguf")

_META = {  # config.json field -> GGUF key under "{arch}."
    "hidden_size": "embedding_length", "num_hidden_layers": "block_count",
    "intermediate_size": "feed_forward_length", "num_attention_heads": "attention.head_count",
    "num_key_value_heads": "attention.head_count_kv",
    "max_position_embeddings": "context_length", "num_local_experts": "expert_count",
    "num_experts_per_tok": "expert_used_count",
}  # fmt: skip


def _gguf_tensors(hf: dict[str, tuple[int, ...]], arch) -> dict[str, tuple[int, ...]]:
    """Hugging Face tensors under llama.cpp's names; Mixtral's per-expert tensors stacked."""
    names = gguf.get_tensor_name_map(arch, 64)
    out: dict[str, tuple[int, ...]] = {}
    for n, shape in hf.items():
        expert = re.match(r"(.*\.experts)\.(\d+)\.(w\d)\.weight$", n)
        if expert:
            base = names.get_name(f"{expert[1]}.{expert[3]}")
            count = out.get(f"{base}.weight", (0,))[0]
            out[f"{base}.weight"] = (count + 1, *shape)
            continue
        stem, _, leaf = n.rpartition(".")
        out[f"{names.get_name(stem)}.{leaf}"] = shape
    return out


def write_gguf(
    path: Path,
    config: dict,
    tensors: dict[str, tuple[int, ...]],
    quant: dict | None = None,
    arch: str = "llama",
) -> Path:
    """A GGUF file with ``config``'s sizes (config.json names of ``_META``) as llama.cpp
    writes them; each tensor F16, or ``quant[name]`` (a ggml type) for its bytes."""
    w = gguf.GGUFWriter(path, arch)
    for key, gguf_key in _META.items():
        if key in config:
            w.add_uint32(f"{arch}.{gguf_key}", config[key])
    for name, shape in tensors.items():
        qtype = (quant or {}).get(name)
        if qtype is None:
            w.add_tensor(name, np.zeros(shape, dtype=np.float16))
            continue
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        rows = int(np.prod(shape[:-1]))
        w.add_tensor(name, np.zeros((rows, shape[-1] // block * size), np.uint8), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _pair(tmp_path: Path, family: str, **extra: object):
    """The same model as a header-only F16 safetensors checkpoint and as a GGUF file."""
    d = write_config(tmp_path / "hf", family, **extra)
    hf = {w.name: w.shape for _, w in lower_checkpoint(d).weights()}
    write_header(d / "model.safetensors", {n: ("F16", s) for n, s in hf.items()})
    tensors = _gguf_tensors(hf, gguf.MODEL_ARCH.LLAMA)
    path = write_gguf(tmp_path / "m.gguf", {**CONFIGS[family], **extra}, tensors)
    return load_model(str(d)), load_model(str(path))


def _figures(g) -> tuple:
    return (g.params, g.weight_bytes, g.weight_bytes_by_dtype(),
            g.flops_per_token(Phase.DECODE, 64), g.kv_bytes_per_token)  # fmt: skip


@pytest.mark.parametrize("family", ["llama", "mixtral"])
def test_gguf_and_safetensors_agree(family: str, tmp_path: Path, default_target) -> None:
    hf, gg = _pair(tmp_path, family)
    assert gg.info.frontend == "gguf" and "GGUF general.architecture llama" in gg.info.recogniser
    assert _figures(gg) == _figures(hf)
    assert gg.info.num_experts == hf.info.num_experts
    options = SearchOptions(prompt_len=48, gen_len=16, max_batch=16, deterministic_time_limit=10.0)
    plans = [compile_model(g, default_target, options) for g in (hf, gg)]
    assert plans[0].partition.mapping == plans[1].partition.mapping
    assert [c.weight_bytes for c in plans[0].plan.chiplets] == [
        c.weight_bytes for c in plans[1].plan.chiplets
    ]


def test_quantized_gguf_counts_block_bytes(tmp_path: Path, cli: CliRun) -> None:
    config = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
              "max_position_embeddings": 64}  # fmt: skip
    d = write_config(tmp_path / "hf", "llama", **config)
    tensors = _gguf_tensors(
        {w.name: w.shape for _, w in lower_checkpoint(d).weights()}, gguf.MODEL_ARCH.LLAMA
    )
    Q = gguf.GGMLQuantizationType
    quant = {n: Q.Q4_K for n in tensors if ".attn_" in n and "norm" not in n}
    quant |= {n: Q.Q8_0 for n in tensors if ".ffn_" in n and "norm" not in n}
    quant["output.weight"] = Q.Q6_K
    path = write_gguf(tmp_path / "q.gguf", {**CONFIGS["llama"], **config}, tensors, quant)
    g = load_model(str(path))

    def nbytes(name: str) -> int:
        numel = int(np.prod(tensors[name]))
        if name not in quant:
            return 2 * numel
        block, size = gguf.GGML_QUANT_SIZES[quant[name]]
        return numel // block * size

    assert g.weight_bytes == sum(map(nbytes, tensors))
    by_name = {w.name: w for _, w in g.weights()}
    q = by_name["blk.0.attn_q.weight"]
    assert (q.dtype, q.nbytes) == (DType.INT4, 256 * 256 // 256 * 144)  # 4.5 bits each
    assert by_name["blk.0.ffn_up.weight"].dtype is DType.INT8  # Q8_0: 8.5 bits
    assert by_name["output.weight"].nbytes == 256 * 256 // 256 * 210  # Q6_K
    code, out, _ = cli("inspect", str(path))
    assert code == 0 and "(frontend gguf)" in out and "int4" in out


def test_not_gguf_or_unknown_architecture_is_one_line(tmp_path: Path, cli: CliRun) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML not really")
    code, out, err = cli("inspect", str(bad))
    assert code == 2 and out == "" and "not a GGUF file" in err
    assert len(err.strip().splitlines()) == 1
    w = gguf.GGUFWriter(tmp_path / "rwkv.gguf", "rwkv6")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelError, match="unsupported GGUF architecture 'rwkv6'"):
        load_model(str(tmp_path / "rwkv.gguf"))


def test_cache_key_follows_the_header(tmp_path: Path) -> None:
    from chipletc.compiler.cache import source_key

    tensors = {"token_embd.weight": (8, 4)}
    a = source_key(str(write_gguf(tmp_path / "a.gguf", {"num_hidden_layers": 2}, tensors)))
    b = source_key(str(write_gguf(tmp_path / "b.gguf", {"num_hidden_layers": 3}, tensors)))
    c = source_key(str(write_gguf(tmp_path / "c.gguf", {"num_hidden_layers": 2}, tensors)))
    assert a == c != b


def test_missing_gguf_package_is_one_line_through_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chipletc.compiler import cache

    path = write_gguf(tmp_path / "m.gguf", {"num_hidden_layers": 2}, {"token_embd.weight": (8, 4)})
    monkeypatch.setenv("CHIPLETC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf now fails
    with pytest.raises(ModelError, match="reading GGUF needs the gguf package"):
        cache.load_cached(str(path))

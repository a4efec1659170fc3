"""Checkpoint files as people have them: the Hub cache layout, pytorch_model.bin archives
(single and sharded), and quantized weights counted by their real bytes (AWQ,
bitsandbytes NF4, FP8 with block or channel scales). Every fixture is built here;
nothing is downloaded and no weight data is read."""

from __future__ import annotations

import json
import zipfile
from math import ceil, prod
from pathlib import Path

import pytest
import torch
from builders import CliRun
from test_hf_frontend import write_config, write_header

from chipletc.compiler.cache import source_key
from chipletc.compiler.frontends import load_model
from chipletc.compiler.frontends.hf import lower_checkpoint
from chipletc.compiler.frontends.safetensors_header import ITEM_BYTES
from chipletc.compiler.frontends.torch_bin import read_bin
from chipletc.ir.dtypes import DType
from chipletc.ir.errors import ModelError


def _names(directory: Path) -> dict[str, tuple[int, ...]]:
    return {w.name: w.shape for _, w in lower_checkpoint(directory).weights()}


def _header_bytes(tensors: dict) -> int:
    return sum(t[2] if len(t) > 2 else prod(t[1]) * ITEM_BYTES[t[0]] for t in tensors.values())


# -- the Hub cache layout ---------------------------------------------------------------------


def _hub_folder(root: Path, revisions: list[str], main: str | None) -> Path:
    """models--org--name with blobs, snapshot links into them and refs/main."""
    folder = root / "models--org--tiny"
    (folder / "blobs").mkdir(parents=True)
    for i, rev in enumerate(revisions):
        src = write_config(root / f"src{i}", "llama", num_hidden_layers=2 + i)
        write_header(src / "model.safetensors", {
            n: ("BF16", s) for n, s in _names(src).items()
        })  # fmt: skip
        snap = folder / "snapshots" / rev
        snap.mkdir(parents=True)
        for f in ("config.json", "model.safetensors"):
            blob = folder / "blobs" / f"{rev}-{f}"
            blob.write_bytes((src / f).read_bytes())
            (snap / f).symlink_to(Path("../../blobs") / blob.name)
    if main is not None:
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(main)
    return folder


def test_hub_cache_folder_reads_the_snapshot_refs_main_names(
    tmp_path: Path, cli: CliRun
) -> None:
    folder = _hub_folder(tmp_path, ["aaa", "bbb"], main="bbb")
    g = load_model(str(folder))
    assert g.info.num_layers == 3  # snapshot bbb: 3 layers
    assert g.weight_bytes == 2 * g.params and "model.safetensors" in g.info.notes
    key = source_key(str(folder))
    (folder / "refs" / "main").write_text("aaa")
    assert load_model(str(folder)).info.num_layers == 2
    assert source_key(str(folder)) != key  # the cache follows refs/main
    code, out, _ = cli("inspect", str(folder))
    assert code == 0 and "layers                2" in out


def test_hub_cache_folder_without_refs(tmp_path: Path) -> None:
    assert load_model(str(_hub_folder(tmp_path / "one", ["aaa"], None))).info.num_layers == 2
    with pytest.raises(ModelError, match=r"2 snapshots and no refs/main; give one of"):
        load_model(str(_hub_folder(tmp_path / "two", ["aaa", "bbb"], None)))


# -- pytorch_model.bin ------------------------------------------------------------------------


def _save_bin(path: Path, tensors: dict[str, tuple[int, ...]], dtype: torch.dtype) -> Path:
    torch.save({n: torch.zeros(s, dtype=dtype) for n, s in tensors.items()}, path)
    return path


def test_bin_checkpoint_matches_safetensors(tmp_path: Path) -> None:
    st = write_config(tmp_path / "st", "mistral")
    names = _names(st)
    write_header(st / "model.safetensors", {n: ("F16", s) for n, s in names.items()})
    binary = write_config(tmp_path / "bin", "mistral")
    _save_bin(binary / "pytorch_model.bin", names, torch.float16)
    a, b = lower_checkpoint(st), lower_checkpoint(binary)
    assert (a.params, a.weight_bytes, a.weight_bytes_by_dtype()) == (
        b.params, b.weight_bytes, b.weight_bytes_by_dtype()
    )  # fmt: skip
    assert a.weight_bytes == 2 * a.params and "pytorch_model.bin" in b.info.notes


def test_bin_is_read_without_its_data(tmp_path: Path) -> None:
    full = _save_bin(tmp_path / "full.bin", {"a.weight": (3, 5), "b": (7,)}, torch.bfloat16)
    bare = tmp_path / "bare.bin"
    with zipfile.ZipFile(full) as src, zipfile.ZipFile(bare, "w") as dst:
        for n in src.namelist():
            if "/data/" not in n:  # drop every tensor's bytes
                dst.writestr(n, src.read(n))
    entries = read_bin(bare)
    assert {n: (e.dtype, e.shape, e.nbytes) for n, e in entries.items()} == {
        "a.weight": ("BF16", (3, 5), 30),
        "b": ("BF16", (7,), 14),
    }


def test_sharded_bin_index(tmp_path: Path) -> None:
    d = write_config(tmp_path / "m", "qwen2")
    names = _names(d)
    first = {n: s for n, s in names.items() if ".layers.1." not in n}
    second = {n: s for n, s in names.items() if n not in first}
    _save_bin(d / "pytorch_model-00001-of-00002.bin", first, torch.bfloat16)
    _save_bin(d / "pytorch_model-00002-of-00002.bin", second, torch.float32)
    weight_map = {n: "pytorch_model-00001-of-00002.bin" for n in first} | {
        n: "pytorch_model-00002-of-00002.bin" for n in second
    }
    (d / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    g = lower_checkpoint(d)
    assert g.weight_bytes == 2 * sum(map(prod, first.values())) + 4 * sum(
        map(prod, second.values())
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x80\x02legacy torch.save", "not a zip archive"),
        ("os.system", "names posix.system"),
    ],
)
def test_bad_bin_is_refused_in_one_line(
    tmp_path: Path, cli: CliRun, content: bytes | str, message: str
) -> None:
    d = write_config(tmp_path / "m", "llama")
    path = d / "pytorch_model.bin"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:  # a pickle that would call os.system on load
        import os
        import pickle

        class Evil:
            def __reduce__(self):
                return (os.system, ("true",))

        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", pickle.dumps({"x": Evil()}))
    code, out, err = cli("inspect", str(d))
    assert code == 2 and out == "" and message in err
    assert len(err.strip().splitlines()) == 1


# -- quantized weights by their real bytes ----------------------------------------------------


def _quantized(directory: Path, quantize) -> tuple[dict, Path]:
    """Every 2-D layer weight replaced by ``quantize(base, (out, in))``'s tensors."""
    tensors: dict = {}
    for n, shape in _names(directory).items():
        if ".layers." in n and len(shape) == 2:
            tensors.update(quantize(n.removesuffix(".weight"), shape))
        else:
            tensors[n] = ("BF16", shape)
    write_header(directory / "model.safetensors", tensors)
    return tensors, directory


def _awq(base: str, shape: tuple[int, int]) -> dict:
    out, n_in = shape  # AutoAWQ GEMM: (in, out/8) int32, zeros and fp16 scales per 32 rows
    return {
        f"{base}.qweight": ("I32", (n_in, out // 8)),
        f"{base}.qzeros": ("I32", (n_in // 32, out // 8)),
        f"{base}.scales": ("F16", (n_in // 32, out)),
    }


def _nf4(base: str, shape: tuple[int, int]) -> dict:
    numel = prod(shape)  # bitsandbytes 4-bit: two codes a byte, absmax per 64, state blob
    return {
        f"{base}.weight": ("U8", (numel // 2, 1)),
        f"{base}.weight.absmax": ("F32", (numel // 64,)),
        f"{base}.weight.quant_map": ("F32", (16,)),
        f"{base}.weight.quant_state.bitsandbytes__nf4": ("U8", (99,)),
    }


def _fp8_block(base: str, shape: tuple[int, int]) -> dict:
    out, n_in = shape  # DeepSeek-V3: e4m3 with one fp32 scale per 128 x 128 block
    return {
        f"{base}.weight": ("F8_E4M3", shape),
        f"{base}.weight_scale_inv": ("F32", (ceil(out / 128), ceil(n_in / 128))),
    }


def _fp8_channel(base: str, shape: tuple[int, int]) -> dict:
    return {  # compressed-tensors FP8: a scale per output channel, one input scale
        f"{base}.weight": ("F8_E4M3", shape),
        f"{base}.weight_scale": ("BF16", (shape[0], 1)),
        f"{base}.input_scale": ("BF16", (1,)),
    }


@pytest.mark.parametrize(
    ("quantize", "quant_config", "dtype"),
    [
        (_awq, {"quant_method": "awq", "bits": 4, "group_size": 32}, DType.INT4),
        (_nf4, {"quant_method": "bitsandbytes", "load_in_4bit": True}, DType.INT4),
        (_fp8_block, {"quant_method": "fp8", "weight_block_size": [128, 128]}, DType.FP8),
        (_fp8_channel, {"quant_method": "compressed-tensors"}, DType.FP8),
    ],
    ids=["awq", "bnb-nf4", "fp8-block", "fp8-channel"],
)
def test_quantized_weights_count_their_real_bytes(
    quantize, quant_config: dict, dtype: DType, tmp_path: Path
) -> None:
    d = write_config(tmp_path / "m", "llama", quantization_config=quant_config)
    tensors, d = _quantized(d, quantize)
    g = lower_checkpoint(d)
    assert g.weight_bytes == _header_bytes(tensors)  # every byte, scales included
    q = next(w for _, w in g.weights() if w.name == "model.layers.0.self_attn.q_proj.weight")
    assert q.dtype is dtype and q.shape == (64, 64)
    assert q.nbytes == _header_bytes(quantize("model.layers.0.self_attn.q_proj", (64, 64)))
    assert g.info.unplaced == () and "quantized" in g.info.notes

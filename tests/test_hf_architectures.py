"""Every Hugging Face architecture the frontend maps, from real published configs.

Three independent checks per architecture:
- the published parameter count (model card or paper, ``hf_configs.py``) within 1 %,
  counted on the zoo module that ``config.json`` maps to, at full size;
- the same config at two or three layers against transformers' own module on the
  meta device: a header-only checkpoint written from *their* tensor names and shapes
  must be matched tensor for tensor (dense families; MoE families compare totals,
  since transformers 5 stores experts fused while checkpoints keep them per expert);
- that shallow checkpoint inspects and compiles to a valid plan on the default target.
"""

from __future__ import annotations

import json
from dataclasses import replace
from math import prod
from pathlib import Path

import pytest
from builders import CliRun
from hf_configs import PUBLISHED
from test_hf_frontend import write_header

from chipletc.compiler.compile import compile_model
from chipletc.compiler.frontends import load_model
from chipletc.compiler.frontends.hf import SUPPORTED, lower_checkpoint, model_config
from chipletc.compiler.partition import SearchOptions
from chipletc.ir.errors import ModelError
from chipletc.models import zoo

_MOE = {"mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3"}
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers")


def _shallow(config: dict) -> dict:
    """``config`` with as few layers as still show every kind of block."""
    layers = 1 + int(config.get("first_k_dense_replace") or 0) + 1
    return {k: (layers if k in _LAYER_KEYS else v) for k, v in config.items()}


def _write(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_every_supported_family_has_a_published_config() -> None:
    families = {p.config["model_type"] for p in PUBLISHED.values()}
    assert families | {"llama", "opt", "gpt2"} == set(SUPPORTED)


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_parameter_count(name: str, tmp_path: Path) -> None:
    published = PUBLISHED[name]
    cfg, _ = model_config(_write(tmp_path / name, published.config))
    module = zoo.build(cfg)
    params = sum(p.numel() for p in module.parameters())
    assert params == pytest.approx(published.params, rel=published.rel), published.source
    if published.active is not None:
        # Cards round the activated count and differ on whether embeddings count: 2 %.
        active = _active(cfg, module)
        assert active == pytest.approx(published.active, rel=0.02), published.source


def _active(cfg, module) -> int:
    moe = cfg.moe
    idle = 0
    for name, p in module.named_parameters():
        if name.rsplit(".", 1)[-1] in ("w_gate", "w_up", "w_down"):
            idle += p.numel() * (moe.num_experts - moe.top_k) // moe.num_experts
    return sum(p.numel() for p in module.parameters()) - idle


@pytest.fixture
def transformers_model(monkeypatch: pytest.MonkeyPatch):
    """``transformers_model(config)``: transformers' own module on the meta device,
    never touching the hub."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def build(config: dict):
        cls = transformers.AutoConfig.for_model(**config)
        with torch.device("meta"):
            return transformers.AutoModelForCausalLM.from_config(cls)

    return build


@pytest.mark.parametrize("name", PUBLISHED)
def test_shallow_checkpoint_matches_transformers(
    name: str, tmp_path: Path, transformers_model
) -> None:
    config = _shallow(PUBLISHED[name].config)
    model = transformers_model(config)
    d = _write(tmp_path / name, config)
    if config["model_type"] in _MOE:
        g = lower_checkpoint(d)
        assert g.params == sum(p.numel() for p in model.parameters())
        return
    theirs = {n: tuple(p.shape) for n, p in model.named_parameters()}
    write_header(d / "model.safetensors", {n: ("BF16", s) for n, s in theirs.items()})
    g = lower_checkpoint(d)  # every tensor placed, none missing, shapes agree
    assert {w.name: w.shape for _, w in g.weights()} == theirs
    assert g.weight_bytes == 2 * g.params


@pytest.mark.parametrize("name", PUBLISHED)
def test_shallow_checkpoint_compiles(name: str, tmp_path: Path, default_target) -> None:
    g = load_model(str(_write(tmp_path / name, _shallow(PUBLISHED[name].config))))
    # Falcon's 71 and 232 heads split over no power of two: pad them, as serving does.
    options = SearchOptions(
        prompt_len=512, gen_len=64, pad_heads=True, deterministic_time_limit=10.0
    )
    result = compile_model(g, default_target, options)
    result.plan.validate()
    assert result.partition.mapping.num_chiplets >= 1


def test_inspect_names_family_traits_and_notes(tmp_path: Path, cli: CliRun) -> None:
    d = _write(tmp_path / "gemma2", _shallow(PUBLISHED["gemma-2-9b"].config))
    code, out, err = cli("inspect", str(d), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["frontend"] == "hf"
    assert "gemma2" in doc["notes"] and "final_logit_softcapping 30.0 ignored" in doc["notes"]
    assert "sliding window 4096 on 1 of 2 layers" in doc["notes"]


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("qwen1.5-moe-a2.7b", {"decoder_sparse_step": 2}, "decoder_sparse_step"),
        ("mpt-7b", {"attn_config": {"alibi": False}}, "MPT without ALiBi"),
        ("gemma-7b", {"hidden_act": "relu"}, "hidden_act 'relu'"),
        ("bloom-7b1", {"apply_residual_connection_post_layernorm": True}, "post_layernorm"),
    ],
)
def test_variants_the_zoo_lacks_are_refused(
    name: str, change: dict, message: str, tmp_path: Path
) -> None:
    d = _write(tmp_path / name, {**_shallow(PUBLISHED[name].config), **change})
    with pytest.raises(ModelError, match=message):
        model_config(d)


def test_falcon_layouts_differ_in_norms_and_kv_heads(tmp_path: Path) -> None:
    old, _ = model_config(_write(tmp_path / "7b", PUBLISHED["falcon-7b"].config))
    new, _ = model_config(_write(tmp_path / "180b", PUBLISHED["falcon-180b"].config))
    assert (old.num_kv_heads, old.parallel_norms) == (1, False)
    assert (new.num_kv_heads, new.parallel_norms) == (8, True)
    rw = {**PUBLISHED["falcon-180b"].config}  # the RW names of the first releases
    rw["n_head"], rw["n_layer"], rw["n_head_kv"] = (
        rw.pop("num_attention_heads"),
        rw.pop("num_hidden_layers"),
        rw.pop("num_kv_heads"),
    )
    same, _ = model_config(_write(tmp_path / "rw", rw))
    assert replace(same, name=new.name, source=new.source) == new


def test_deepseek_v3_mtp_layer_is_listed_not_placed(tmp_path: Path, cli: CliRun) -> None:
    """DeepSeek-V3's checkpoint holds layer 61, the multi-token-prediction module, which
    serving does not run: its tensors are listed with their bytes, in no plan."""
    config = {**PUBLISHED["deepseek-v3"].config, "num_hidden_layers": 2,
              "first_k_dense_replace": 1}  # fmt: skip
    d = _write(tmp_path / "dsv3", config)
    ours = {w.name: w.shape for _, w in lower_checkpoint(d).weights()}
    layers = config["num_hidden_layers"]
    mtp = {n.replace(f".layers.{layers - 1}.", f".layers.{layers}."): s for n, s in ours.items()
           if f".layers.{layers - 1}." in n}  # fmt: skip
    mtp[f"model.layers.{layers}.eh_proj.weight"] = (7168, 2 * 7168)
    write_header(d / "model.safetensors", {n: ("BF16", s) for n, s in {**ours, **mtp}.items()})
    g = lower_checkpoint(d)
    assert dict(g.info.unplaced) == {n: 2 * prod(s) for n, s in mtp.items()}
    assert g.weight_bytes == 2 * g.params  # the placed weights alone
    code, out, _ = cli("inspect", str(d))
    mtp_bytes = sum(dict(g.info.unplaced).values())
    assert code == 0 and f"not placed            {len(mtp)} tensors" in out
    assert f"{mtp_bytes / 1e9:.2f} GB" in out and "multi-token-prediction" in out


def test_full_size_header_only_checkpoint_inspects_to_the_card(
    tmp_path: Path, cli: CliRun
) -> None:
    """BLOOM-7b1 at full size from config.json and a header-only safetensors file: inspect
    gives the card's exact count, 7,069,016,064, and two bytes per bf16 weight."""
    d = _write(tmp_path / "bloom", PUBLISHED["bloom-7b1"].config)
    names = {w.name: w.shape for _, w in lower_checkpoint(d).weights()}
    write_header(d / "model.safetensors", {n: ("BF16", s) for n, s in names.items()})
    code, out, err = cli("inspect", str(d), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["params"] == PUBLISHED["bloom-7b1"].params == 7_069_016_064
    assert doc["weight_bytes"] == 2 * doc["params"] and doc["unplaced_tensors"] == []
    assert "model.safetensors" in doc["notes"]


def test_heads_that_cap_tp_are_named_in_the_refusal(tmp_path: Path, default_target) -> None:
    """Falcon-7B's 71 heads split over tp 1 only: the refusal says --pad-heads helps."""
    from chipletc.ir.errors import InfeasibleError

    g = load_model(str(_write(tmp_path / "f", _shallow(PUBLISHED["falcon-7b"].config))))
    options = SearchOptions(prompt_len=512, gen_len=64, deterministic_time_limit=10.0)
    with pytest.raises(InfeasibleError, match=r"tp is capped at 1 by the 71 attention heads "
                       r"and 1 KV head together with the 128 chiplets per server; "
                       r"--pad-heads fits \(tp=\d+ x pp=\d+\)$"):  # fmt: skip
        compile_model(g, default_target, options)

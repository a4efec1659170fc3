"""One model through torch.fx, an ONNX export and a Hugging Face config gives one answer.

GPT-2, a Llama-3-style GQA model and a Mixtral-style MoE model, at test size: equal
parameters, weight bytes, decode FLOPs per token and KV bytes per token, and the same
compile plan (mapping and per-chiplet bytes; tensor names are each source's own).
"""

from __future__ import annotations

import json

import pytest
from builders import export_onnx, tiny

from chipletc.compiler.compile import compile_model
from chipletc.compiler.frontends import load_model, lower_module
from chipletc.compiler.partition import SearchOptions
from chipletc.compiler.passes.sharding import assign_sharding
from chipletc.ir.graph import Graph
from chipletc.ir.workload import Phase
from chipletc.models import zoo

# The Hugging Face config.json of each tiny() model.
HF_CONFIGS = {
    "gpt2-small": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_inner": 128,
                   "vocab_size": 100, "n_positions": 64},
    "llama3-8b": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "vocab_size": 100, "max_position_embeddings": 64},
    "mixtral-8x7b": {"model_type": "mixtral", "hidden_size": 64, "intermediate_size": 96,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "vocab_size": 100, "max_position_embeddings": 64, "num_local_experts": 4,
                     "num_experts_per_tok": 2},
}  # fmt: skip
FRONTENDS = ("torch.fx", "onnx", "hf")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Graph]]:
    out: dict[str, dict[str, Graph]] = {}
    for name, hf in HF_CONFIGS.items():
        d = tmp_path_factory.mktemp(name)
        cfg = tiny(name)
        (d / "hf").mkdir()
        (d / "hf" / "config.json").write_text(json.dumps({**hf, "torch_dtype": "bfloat16"}))
        out[name] = {
            "torch.fx": assign_sharding(lower_module(zoo.build(cfg), name)),
            "onnx": load_model(str(export_onnx(cfg, d / f"{name}.onnx"))),
            "hf": load_model(str(d / "hf")),
        }
    return out


def _figures(g: Graph) -> tuple[float, ...]:
    return (
        g.params,
        g.weight_bytes,
        g.flops_per_token(Phase.DECODE, 2048),
        g.kv_bytes_per_token,
    )


@pytest.mark.parametrize("name", HF_CONFIGS)
def test_frontends_agree_on_size_cost_and_cache(
    name: str, graphs: dict[str, dict[str, Graph]]
) -> None:
    by = graphs[name]
    assert [by[f].info.frontend for f in FRONTENDS] == list(FRONTENDS)
    reference = _figures(by["torch.fx"])
    for f in ("onnx", "hf"):
        assert _figures(by[f]) == pytest.approx(reference, rel=1e-3), f
        assert by[f].ops_by_kind() == by["torch.fx"].ops_by_kind(), f
    info = by["torch.fx"].info
    for f in ("onnx", "hf"):
        other = by[f].info
        assert (other.num_heads, other.num_kv_heads, other.num_experts) == (
            info.num_heads,
            info.num_kv_heads,
            info.num_experts,
        )


@pytest.mark.parametrize("name", HF_CONFIGS)
def test_frontends_give_the_same_plan(
    name: str, graphs: dict[str, dict[str, Graph]], default_target
) -> None:
    # 64 tokens: the tiny models learned 64 positions (GPT-2 refuses more)
    options = SearchOptions(
        prompt_len=48, gen_len=16, max_batch=16, deterministic_time_limit=10.0
    )
    plans = []
    for f in FRONTENDS:
        result = compile_model(graphs[name][f], default_target, options)
        chiplets = [(c.weight_bytes, c.kv_bytes, c.layers) for c in result.plan.chiplets]
        plans.append((result.partition.mapping, chiplets))
    assert plans[0] == plans[1] == plans[2]

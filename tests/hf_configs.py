"""Published ``config.json`` values of real Hugging Face checkpoints, with the parameter
counts their model cards or papers state.

Only the fields a config mapping reads are kept; each value is the one in the released
``config.json`` of the named repository. ``params`` (and ``active`` for MoE models) is
the published total, with its source beside it; ``rel`` is how closely the count must
match it: 1 %, or where the card gives only a rounded figure ("7B"), half its last
digit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    repo: str
    config: dict
    params: float
    source: str
    active: float | None = None
    rel: float = 0.01


_LLAMA_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "vocab_size", "max_position_embeddings")  # fmt: skip


def _llama(model_type: str, *values: int, **extra: object) -> dict:
    return {"model_type": model_type, **dict(zip(_LLAMA_KEYS, values, strict=True)), **extra}


PUBLISHED: dict[str, Published] = {
    "falcon-7b": Published(
        "tiiuae/falcon-7b",
        {"model_type": "falcon", "hidden_size": 4544, "num_attention_heads": 71,
         "num_hidden_layers": 32, "vocab_size": 65024, "multi_query": True,
         "parallel_attn": True, "bias": False, "new_decoder_architecture": False,
         "alibi": False},
        7e9, "model card: a 7B parameters causal decoder-only model (rounded)",
        rel=0.5 / 7,
    ),
    "falcon-180b": Published(
        "tiiuae/falcon-180B",
        {"model_type": "falcon", "hidden_size": 14848, "num_attention_heads": 232,
         "num_hidden_layers": 80, "num_kv_heads": 8, "vocab_size": 65024,
         "new_decoder_architecture": True, "parallel_attn": True, "bias": False,
         "alibi": False},
        180e9, "model card: a 180B parameters causal decoder-only model",
    ),
    "gpt-j-6b": Published(
        "EleutherAI/gpt-j-6b",
        {"model_type": "gptj", "n_embd": 4096, "n_layer": 28, "n_head": 16, "n_positions": 2048,
         "rotary_dim": 64, "vocab_size": 50400, "activation_function": "gelu_new",
         "tie_word_embeddings": False},
        6_053_381_344, "model card, hyperparameter table: n_parameters 6,053,381,344",
    ),
    "gpt-neox-20b": Published(
        "EleutherAI/gpt-neox-20b",
        {"model_type": "gpt_neox", "hidden_size": 6144, "num_hidden_layers": 44,
         "num_attention_heads": 64, "intermediate_size": 24576, "vocab_size": 50432,
         "max_position_embeddings": 2048, "rotary_pct": 0.25, "use_parallel_residual": True,
         "hidden_act": "gelu_fast", "tie_word_embeddings": False},
        20_554_567_680, "model card: number of parameters 20,554,567,680",
    ),
    "starcoder": Published(
        "bigcode/starcoder",
        {"model_type": "gpt_bigcode", "n_embd": 6144, "n_layer": 40, "n_head": 48,
         "n_inner": 24576, "n_positions": 8192, "vocab_size": 49152, "multi_query": True,
         "activation_function": "gelu_pytorch_tanh"},
        15.5e9, "model card: StarCoder models are 15.5B parameter models",
    ),
    "starcoder2-3b": Published(
        "bigcode/starcoder2-3b",
        {"model_type": "starcoder2", "hidden_size": 3072, "intermediate_size": 12288,
         "num_hidden_layers": 30, "num_attention_heads": 24, "num_key_value_heads": 2,
         "vocab_size": 49152, "max_position_embeddings": 16384, "sliding_window": 4096,
         "use_bias": True, "hidden_act": "gelu_pytorch_tanh"},
        3e9, "model card: StarCoder2-3B is a 3B parameter model", rel=0.5 / 3,
    ),
    "phi-3-mini-4k": Published(
        "microsoft/Phi-3-mini-4k-instruct",
        _llama("phi3", 3072, 8192, 32, 32, 32, 32064, 4096, sliding_window=2047,
               tie_word_embeddings=False, hidden_act="silu"),
        3.8e9, "model card: Phi-3 Mini, 3.8B parameters",
    ),
    "gemma-7b": Published(
        "google/gemma-7b",
        _llama("gemma", 3072, 24576, 28, 16, 16, 256000, 8192, head_dim=256,
               hidden_act="gelu"),
        8_538_074_112, "Gemma Team 2024 (Gemma), Table 2: 786,825,216 embedding + "
        "7,751,248,896 non-embedding",
    ),
    "gemma-2-9b": Published(
        "google/gemma-2-9b",
        _llama("gemma2", 3584, 14336, 42, 16, 8, 256000, 8192, head_dim=256,
               hidden_activation="gelu_pytorch_tanh", sliding_window=4096,
               attn_logit_softcapping=50.0, final_logit_softcapping=30.0),
        9_242_164_736, "Gemma Team 2024 (Gemma 2), Table 2: 917,962,752 embedding + "
        "8,324,201,984 non-embedding",
    ),
    "gemma-3-1b": Published(
        "google/gemma-3-1b-pt",
        _llama("gemma3_text", 1152, 6912, 26, 4, 1, 262144, 32768, head_dim=256,
               hidden_activation="gelu_pytorch_tanh", sliding_window=512,
               sliding_window_pattern=6),
        1.0e9, "Gemma Team 2025 (Gemma 3), Table 1: 302M embedding + 698M non-embedding",
    ),
    "qwen2.5-7b": Published(
        "Qwen/Qwen2.5-7B",
        _llama("qwen2", 3584, 18944, 28, 28, 4, 152064, 131072, tie_word_embeddings=False,
               hidden_act="silu"),
        7.61e9, "model card: Number of Parameters 7.61B",
    ),
    "qwen3-8b": Published(
        "Qwen/Qwen3-8B",
        _llama("qwen3", 4096, 12288, 36, 32, 8, 151936, 40960, head_dim=128,
               tie_word_embeddings=False, hidden_act="silu"),
        8.2e9, "model card: Number of Parameters 8.2B",
    ),
    "qwen1.5-moe-a2.7b": Published(
        "Qwen/Qwen1.5-MoE-A2.7B",
        _llama("qwen2_moe", 2048, 5632, 24, 16, 16, 151936, 8192, moe_intermediate_size=1408,
               shared_expert_intermediate_size=5632, num_experts=60, num_experts_per_tok=4,
               decoder_sparse_step=1, tie_word_embeddings=False),
        14.3e9, "model card: 14.3B parameters in total and 2.7B activated",
        active=2.7e9,
    ),
    "qwen3-30b-a3b": Published(
        "Qwen/Qwen3-30B-A3B",
        _llama("qwen3_moe", 2048, 6144, 48, 32, 4, 151936, 40960, head_dim=128,
               moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8,
               decoder_sparse_step=1, mlp_only_layers=[], tie_word_embeddings=False),
        30.5e9, "model card: 30.5B in total and 3.3B activated", active=3.3e9,
    ),
    "mistral-7b": Published(
        "mistralai/Mistral-7B-v0.1",
        _llama("mistral", 4096, 14336, 32, 32, 8, 32000, 32768, sliding_window=4096,
               hidden_act="silu"),
        7.3e9, "model card: a 7.3B parameter model (Mistral AI, 2023)",
    ),
    "mixtral-8x7b": Published(
        "mistralai/Mixtral-8x7B-v0.1",
        _llama("mixtral", 4096, 14336, 32, 32, 8, 32000, 32768, num_local_experts=8,
               num_experts_per_tok=2),
        46.7e9, "Mistral AI 2023 (Mixtral of experts): 46.7B total, 12.9B used per token",
        active=12.9e9,
    ),
    "deepseek-v2-lite": Published(
        "deepseek-ai/DeepSeek-V2-Lite",
        {"model_type": "deepseek_v2", "hidden_size": 2048, "intermediate_size": 10944,
         "moe_intermediate_size": 1408, "num_hidden_layers": 27, "num_attention_heads": 16,
         "kv_lora_rank": 512, "q_lora_rank": None, "qk_nope_head_dim": 128,
         "qk_rope_head_dim": 64, "v_head_dim": 128, "n_routed_experts": 64,
         "n_shared_experts": 2, "num_experts_per_tok": 6, "first_k_dense_replace": 1,
         "moe_layer_freq": 1, "vocab_size": 102400, "max_position_embeddings": 163840,
         "scoring_func": "softmax", "tie_word_embeddings": False},
        15.7e9, "model card: 15.7B total parameters (2.4B activated)",
    ),
    "deepseek-v3": Published(
        "deepseek-ai/DeepSeek-V3",
        {"model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432,
         "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
         "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_nope_head_dim": 128,
         "qk_rope_head_dim": 64, "v_head_dim": 128, "n_routed_experts": 256,
         "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
         "moe_layer_freq": 1, "vocab_size": 129280, "max_position_embeddings": 163840,
         "scoring_func": "sigmoid", "num_nextn_predict_layers": 1,
         "tie_word_embeddings": False},
        671e9, "DeepSeek-AI 2024 (DeepSeek-V3 Technical Report), abstract: 671B total, "
        "37B activated (the main model; the checkpoint adds a 14B MTP module)",
        active=37e9,
    ),
    "olmo-2-7b": Published(
        "allenai/OLMo-2-1124-7B",
        _llama("olmo2", 4096, 11008, 32, 32, 32, 100352, 4096, tie_word_embeddings=False,
               hidden_act="silu"),
        7e9, "model card: OLMo 2 7B (rounded)", rel=0.5 / 7,
    ),
    "bloom-7b1": Published(
        "bigscience/bloom-7b1",
        {"model_type": "bloom", "hidden_size": 4096, "n_layer": 30, "n_head": 32,
         "vocab_size": 250880},
        7_069_016_064, "model card: 7,069,016,064 parameters",
    ),
    "mpt-7b": Published(
        "mosaicml/mpt-7b",
        {"model_type": "mpt", "d_model": 4096, "n_heads": 32, "n_layers": 32,
         "expansion_ratio": 4, "max_seq_len": 2048, "vocab_size": 50432, "no_bias": True,
         "attn_config": {"alibi": True, "attn_type": "multihead_attention"}},
        6.7e9, "model card: n_parameters 6.7B",
    ),
}  # fmt: skip

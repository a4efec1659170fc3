"""Accuracy of the simulator against published measurements (FasterTransformer; Pope et al.).

Each table is simulated with the preset's calibrated efficiency factors; the test
prints predicted vs measured with the error (``pytest -s`` shows it) and asserts a mean
absolute percentage error of at most 15 %. How the factors were set: docs/accuracy.md.
"""

from __future__ import annotations

import pytest

from chipletc.backends.sim import simulate
from chipletc.backends.targets import load_target
from chipletc.compiler.frontends import load_model
from chipletc.compiler.schedule import lower_schedule
from chipletc.ir.dtypes import DType
from chipletc.ir.mapping import ModelMapping, even_stages

MAPE_LIMIT = 0.15

# GPT-3 175B, 8 x A100-80GB, TP 8, FP16, FasterTransformer gpt_guide: end-to-end ms.
FASTERTRANSFORMER = [
    (1, 128, 8, 488.86),
    (2, 128, 8, 509.47),
    (4, 128, 8, 629.64),
    (8, 128, 8, 749.86),
    (16, 128, 8, 1037.47),
    (32, 128, 8, 1547.44),
    (1, 512, 32, 1719.96),
    (2, 512, 32, 1830.56),
    (4, 512, 32, 2092.56),
    (8, 512, 32, 2629.97),
    (16, 512, 32, 3706.23),
]

# PaLM 540B, 64 TPU v4, Pope et al. 2022 appendix: 20 input / 8 output tokens;
# (batch, prefill ms, generate ms for all 8 tokens).
PALM_TPU = [
    (4, 34, 255),
    (8, 40, 226),
    (16, 58, 234),
    (32, 99, 235),
    (64, 186, 265),
    (128, 356, 312),
    (256, 668, 415),
    (512, 1366, 671),
    (1024, 2785, 1256),
]


def _report(title: str, rows: list[tuple[str, float, float]]) -> float:
    errors = [abs(pred - meas) / meas for _, meas, pred in rows]
    lines = [title, f"  {'case':<24}{'measured ms':>12}{'simulated ms':>14}{'error':>9}"]
    for label, meas, pred in rows:
        lines.append(f"  {label:<24}{meas:>12.1f}{pred:>14.1f}{(pred - meas) / meas:>+9.1%}")
    mape = sum(errors) / len(errors)
    lines.append(f"  MAPE {mape:.1%} over {len(rows)} points")
    print("\n" + "\n".join(lines))
    return mape


def test_gpt3_fastertransformer_on_8_a100() -> None:
    graph = load_model("gpt3-175b").with_dtypes(weights=DType.FP16)
    target = load_target("a100-80gb-x8")
    rows = []
    for batch, prompt, gen, ms in FASTERTRANSFORMER:
        mapping = ModelMapping(8, 1, even_stages(graph.num_blocks, 1), batch, batch)
        r = simulate(lower_schedule(graph, target, mapping, prompt, gen), target)
        rows.append((f"batch {batch}, {prompt}/{gen}", ms, r.end_to_end_s * 1e3))
    assert _report("GPT-3 175B, FasterTransformer, 8 x A100 (end to end)", rows) <= MAPE_LIMIT


def test_palm_540b_on_64_tpu_v4() -> None:
    graph = load_model("palm-540b")
    target = load_target("tpu-v4")
    rows = []
    for batch, prefill_ms, generate_ms in PALM_TPU:
        mapping = ModelMapping(
            64, 1, even_stages(graph.num_blocks, 1), batch, batch, pad_heads=True
        )
        r = simulate(lower_schedule(graph, target, mapping, 20, 8), target)
        rows.append((f"batch {batch} prefill", prefill_ms, r.prefill_s * 1e3))
        rows.append((f"batch {batch} generate", generate_ms, r.decode_s * 1e3))
    assert _report("PaLM 540B, 64 x TPU v4, 20 in / 8 out", rows) <= MAPE_LIMIT


@pytest.mark.parametrize("name", ["a100-80gb-x8", "tpu-v4"])
def test_calibrated_factors_are_physical(name: str) -> None:
    """Guard against a fit that escapes into unphysical corners."""
    eff = load_target(name).efficiency
    assert 0.5 <= eff.compute <= 0.9
    assert 0.6 <= eff.memory <= 0.9
    assert eff.op_overhead_s <= 20e-6 and eff.collective_overhead_s <= 50e-6

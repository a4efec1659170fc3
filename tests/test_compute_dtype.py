"""Compute precision apart from storage: ``--compute-dtype`` sets the matmul rate."""

from __future__ import annotations

import json

import pytest

from chipletc.backends.perf.analytical import estimate
from chipletc.backends.targets import load_target, load_tech
from chipletc.backends.targets.chiplet import chiplet_by_area
from chipletc.cli.main import main
from chipletc.compiler.frontends import load_model
from chipletc.ir.dtypes import DType
from chipletc.ir.mapping import ModelMapping, even_stages


def _prefill_and_decode(name: str, target: str, compute: DType | None) -> tuple[float, float]:
    graph = load_model(name).with_dtypes(weights=DType.FP8, kv=DType.FP8, compute=compute)
    mapping = ModelMapping(8, 1, even_stages(graph.num_blocks, 1), 1, 1)
    est = estimate(graph, load_target(target), mapping, 4096, 16)
    return est.prefill_s, est.decode_s_per_token


def test_quantized_weights_alone_compute_at_bf16() -> None:
    graph = load_model("llama3-8b").with_dtypes(weights=DType.FP8, kv=DType.FP8)
    assert graph.compute_dtype is DType.BF16


def test_fp8_compute_runs_compute_bound_prefill_at_the_fp8_peak() -> None:
    """H100: 1979 dense fp8 TFLOP/s against 989 bf16 (datasheet). A 4096-token prefill
    of Llama-3 70B is compute-bound, so it takes about half as long; a batch-1 decode
    step streams weights and does not change."""
    pf_bf, dc_bf = _prefill_and_decode("llama3-70b", "h100-x8", None)
    pf_f8, dc_f8 = _prefill_and_decode("llama3-70b", "h100-x8", DType.FP8)
    assert 0.5 <= pf_f8 / pf_bf < 0.7
    assert dc_f8 == pytest.approx(dc_bf, rel=0.02)


def test_a_chip_without_fp8_units_computes_fp8_at_bf16() -> None:
    """A100 has no fp8 tensor path: fp8 falls back to the bf16 rate."""
    assert _prefill_and_decode("llama3-8b", "a100-80gb-x8", DType.FP8) == pytest.approx(
        _prefill_and_decode("llama3-8b", "a100-80gb-x8", None)
    )


def test_chiplets_by_area_run_narrow_types_faster() -> None:
    chip = chiplet_by_area(200, 0.03, 4, load_tech("7nm"))
    bf16 = chip.peak_flops(DType.BF16)
    assert chip.peak_flops(DType.FP8) == chip.peak_flops(DType.INT8) == 2 * bf16
    assert chip.peak_flops(DType.INT4) == 4 * bf16


def test_plan_and_schedule_record_weights_kv_and_compute_dtypes(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["simulate", "gpt2-small", "--target", "h100-x8", "--tp", "2",
                 "--prompt-len", "32", "--gen-len", "2", "--weights-dtype", "fp8",
                 "--kv-dtype", "fp8", "--compute-dtype", "fp8", "-o", str(out)])
    capsys.readouterr()
    assert code == 0
    plan = json.loads((out / "plan.json").read_text())
    assert (plan["model"]["weights_dtype"], plan["model"]["kv_dtype"],
            plan["model"]["compute_dtype"]) == ("fp8", "fp8", "fp8")
    assert json.loads((out / "schedule.json").read_text())["compute_dtype"] == "fp8"
    assert "matmuls at the fp8 rate" in (out / "report.md").read_text()


@pytest.mark.parametrize("command", ["compile", "simulate", "explore"])
def test_a_storage_only_type_is_refused_in_one_line(command: str, capsys) -> None:
    code = main([command, "gpt2-small", "--compute-dtype", "fp32"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("chipletc: error: --compute-dtype") and err.count("\n") == 1

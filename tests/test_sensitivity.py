"""`chipletc sensitivity`: each end agrees with compile at that value, break-evens are
where the ratio is 1, the mapping is re-solved, outputs repeat byte for byte."""

from __future__ import annotations

import dataclasses
import json

import pytest
from builders import CliRun

from chipletc.backends.targets import load_target
from chipletc.compiler.compile import compile_model
from chipletc.compiler.explore.baselines import baseline_rows
from chipletc.compiler.partition import SearchOptions
from chipletc.compiler.sensitivity import Knob, _break_even, baseline_knobs, sensitivity

OPTIONS = SearchOptions()


@pytest.fixture(scope="module")
def gpt3(zoo_graph):
    graph = zoo_graph("gpt3-175b")
    target = load_target("cc-7nm-gpt3")
    rows = baseline_rows(graph, OPTIONS, (), ["a100"])
    result = sensitivity(graph, "cc-7nm-gpt3", target, OPTIONS, rows)
    return graph, target, result, {r["name"]: r for r in result.rows}


def usd_by_compile(graph, target) -> float:
    return compile_model(graph, target, OPTIONS).cost.tco_per_1k_tokens_usd


def test_base_point_is_compiles_optimum(gpt3):
    graph, target, result, _ = gpt3
    assert result.base["design_usd_per_1k_tokens"] == pytest.approx(
        usd_by_compile(graph, target), rel=1e-9)
    # the rented A100 (utilization 1) costs its rent per GPU-hour over its tokens per GPU
    a100 = result.base["baselines"]["a100"]
    assert a100["usd_per_1k_tokens"] == pytest.approx(
        a100["usd_per_chip_hour"] / 3600 / a100["tokens_per_s_per_chip"] * 1000, rel=1e-9)


def test_economic_ends_agree_with_compile_at_that_value(gpt3):
    graph, target, _, knobs = gpt3
    life = knobs["server_life_years"]
    longer = dataclasses.replace(target, economics=dataclasses.replace(
        target.economics, server_life_years=life["high"]))
    assert life["usd_per_1k_tokens"]["high"] == pytest.approx(
        usd_by_compile(graph, longer), rel=1e-9)


def test_a_denser_sram_re_solves_the_mapping(gpt3):
    graph, target, result, knobs = gpt3
    sram = knobs["sram_mm2_per_MiB"]
    denser = dataclasses.replace(load_target("cc-7nm-gpt3", {"tech": {
        "sram_mm2_per_MiB": sram["low"]}}), economics=target.economics)
    assert denser.chiplet.sram_bytes > target.chiplet.sram_bytes
    compiled = compile_model(graph, denser, OPTIONS)
    assert sram["usd_per_1k_tokens"]["low"] == pytest.approx(
        compiled.cost.tco_per_1k_tokens_usd, rel=1e-9)
    m = compiled.partition.mapping
    assert sram["mapping"]["low"] == (
        f"tp {m.tp} x pp {m.pp}, batch {m.batch}, {compiled.partition.num_servers} servers")
    assert sram["mapping"]["low"] != result.base["mapping"]  # a bigger batch fits


def test_break_even_throughput_in_closed_form(gpt3):
    """The A100's $ per 1K tokens is its rent over its tokens: it equals the design's at
    tokens/s per GPU = $/GPU-hour / 3600 x 1000 / design's $ per 1K tokens."""
    _, _, result, knobs = gpt3
    design = result.base["design_usd_per_1k_tokens"]
    price = result.base["baselines"]["a100"]["usd_per_chip_hour"]
    expected = price / 3600 * 1000 / design
    assert knobs["tokens_per_s"]["break_even"]["a100"] == pytest.approx(expected, rel=1e-3)
    assert knobs["tokens_per_s"]["break_even_status"]["a100"] == "found"
    assert knobs["tokens_per_s"]["low"] == 18.0  # the paper's A100 baseline
    assert knobs["tokens_per_s"]["high"] == 211.0  # DeepSpeed-Inference, as the critique


@pytest.mark.parametrize("model, source, per_chip, expected", [
    ("gpt3-175b", "simulated", 62.0, (18.0, 211.0)),  # the published pair
    ("gpt3-175b", "override", 211.0, (105.5, 422.0)),  # around the override
    ("llama3-8b", "simulated", 2191.0, (1095.5, 4382.0)),  # around its own base
])
def test_a100_throughput_range_fits_the_model(model, source, per_chip, expected):
    row = {"model": model, "source": source, "usd_per_chip_hour": 1.1,
           "tokens_per_s_per_chip": per_chip}
    knob = next(k for k in baseline_knobs("a100", row) if k.name == "tokens_per_s")
    assert (knob.low, knob.high) == pytest.approx(expected)
    assert knob.bracket[0] < knob.low < knob.value < knob.high < knob.bracket[1]


def test_break_even_across_a_gap_without_a_fit_says_so():
    """The ratio goes from below 1 to above it, but nothing fits from 3 to 8: bisection
    lands in the gap, and the search says so instead of "one side"."""
    knob = Knob("x", "x", "", "design", 1.0, 0.5, 2.0, (0.05, 20.0))

    def point(k, x):
        return None, {"a100": None if 3 < x < 8 else x / 5}

    assert _break_even(knob, "a100", point) == (None, "no fit in bracket")
    assert _break_even(knob, "a100", lambda k, x: (None, {"a100": 0.5})) == (None, "one side")
    value, status = _break_even(knob, "a100", lambda k, x: (None, {"a100": x / 5}))
    assert status == "found" and value == pytest.approx(5.0, rel=1e-5)


def test_break_even_of_a_design_knob_is_where_the_ratio_is_one(gpt3):
    graph, target, result, knobs = gpt3
    even = knobs["server_life_years"]["break_even"]["a100"]
    at = dataclasses.replace(target, economics=dataclasses.replace(
        target.economics, server_life_years=even))
    a100 = result.base["baselines"]["a100"]["usd_per_1k_tokens"]
    assert usd_by_compile(graph, at) == pytest.approx(a100, rel=2e-3)


def test_rows_sorted_by_impact(gpt3):
    _, _, result, _ = gpt3
    impacts = [r["impact"] for r in result.rows]
    assert impacts == sorted(impacts, reverse=True)
    for r in result.rows:
        ends = [r["ratio"]["a100"]["low"], r["ratio"]["a100"]["high"]]
        if None not in ends:
            assert r["impact"] == pytest.approx(max(ends) - min(ends))


def test_cli_outputs_repeat_and_name_the_top_three(cli: CliRun, tmp_path):
    runs = []
    for i in range(2):
        code, out, _ = cli("sensitivity", "gpt3-175b", "--gen-len", "128", "--prompt-len",
                             "128", "-o", str(tmp_path / str(i)))
        assert code == 0
        runs.append(out)
    assert "moving the ratio to a100 most:" in runs[0]
    for name in ("sensitivity.json", "tornado.png"):
        assert (tmp_path / "0" / name).read_bytes() == (tmp_path / "1" / name).read_bytes()
    doc = json.loads((tmp_path / "0" / "sensitivity.json").read_text())
    top = ", ".join(k["label"] for k in doc["knobs"][:3])
    assert f"most: {top}" in runs[0]
    assert (tmp_path / "0" / "tornado.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_baseline_is_one_line(cli: CliRun):
    code, out, err = cli("sensitivity", "gpt3-175b", "--baseline", "a1000")
    assert code == 2 and not out and err.count("\n") == 1
    assert "unknown baseline ('a1000')" in err

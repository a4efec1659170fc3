"""`chipletc simulate`: JSON figures, a plan round trip, one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from chipletc.cli.main import main

BASE = [
    "simulate",
    "gpt2-small",
    "--target",
    "a100-80gb-x8",
    "--prompt-len",
    "64",
    "--gen-len",
    "8",
]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([*args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_the_figures(capsys) -> None:
    code, out, _ = run(capsys, *BASE, "--tp", "4", "--batch", "4", "--json")
    assert code == 0
    doc = json.loads(out)
    for key in (
        "prefill_s",
        "decode_s",
        "decode_s_per_token",
        "end_to_end_s",
        "tokens_per_s",
        "mfu",
        "bottleneck",
    ):
        assert key in doc
    assert doc["decode_s"] == pytest.approx(8 * doc["decode_s_per_token"])
    assert doc["end_to_end_s"] == pytest.approx(doc["prefill_s"] + doc["decode_s"])


def test_plan_round_trip_gives_the_same_figures(capsys, tmp_path) -> None:
    code, out, _ = run(
        capsys,
        *BASE,
        "--tp",
        "2",
        "--pp",
        "3",
        "--batch",
        "4",
        "--micro-batch",
        "2",
        "--json",
        "-o",
        str(tmp_path),
    )
    assert code == 0
    first = json.loads(out)
    assert json.loads((tmp_path / "simulation.json").read_text()) == first
    code, out, _ = run(capsys, "simulate", "--plan", str(tmp_path / "plan.json"), "--json")
    assert code == 0
    assert json.loads(out) == first


def test_summary_names_the_bottleneck(capsys) -> None:
    code, out, _ = run(capsys, *BASE, "--pp", "4")
    assert code == 0
    assert "time to first token" in out and "bottleneck" in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tp", "5"], "does not divide the 12 attention heads"),
        (["--pp", "13"], "13 stages for 12 layers"),
        (["--batch", "100000"], "lower the batch"),
        (["--batch", "4", "--micro-batch", "3"], "does not divide batch"),
        (["--pp", "2", "--stages", "0-3,5-11"], "not contiguous"),
    ],
)
def test_bad_mapping_is_one_line_and_exit_code_2(capsys, flags, message) -> None:
    code, out, err = run(capsys, *BASE, *flags)
    assert code == 2 and not out
    assert err.count("\n") == 1 and message in err


def test_model_and_plan_together_is_a_usage_error(capsys, tmp_path) -> None:
    code, _, err = run(capsys, *BASE, "--plan", str(tmp_path / "plan.json"))
    assert code == 2 and "not both" in err

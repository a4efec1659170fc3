"""`chipletc simulate`: JSON figures, a plan round trip, one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
from builders import CliRun

from chipletc.backends.sim import simulate
from chipletc.backends.targets import load_target
from chipletc.compiler.schedule import lower_schedule
from chipletc.ir.mapping import ModelMapping, even_stages

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



def test_json_is_the_library_simulation_of_the_flags(cli: CliRun, zoo_graph) -> None:
    """The flags reach the library: the figures are those of the mapping they name."""
    code, out, _ = cli(*BASE, "--tp", "4", "--batch", "4", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["workload"] == {"prompt_len": 64, "gen_len": 8}
    assert (doc["mapping"]["tp"], doc["mapping"]["pp"]) == (4, 1)
    assert (doc["mapping"]["batch"], doc["mapping"]["micro_batch"]) == (4, 4)
    graph, target = zoo_graph("gpt2-small"), load_target("a100-80gb-x8")
    mapping = ModelMapping(4, 1, even_stages(graph.num_blocks, 1), 4, 4)
    ref = simulate(lower_schedule(graph, target, mapping, 64, 8), target)
    for key in ("prefill_s", "decode_s", "decode_s_per_token", "end_to_end_s", "tokens_per_s",
                "mfu", "bottleneck"):  # fmt: skip
        assert doc[key] == getattr(ref, key), key
    assert len(ref.decode_step_s) == 8  # --gen-len steps


def test_plan_round_trip_gives_the_same_figures(cli: CliRun, tmp_path) -> None:
    code, out, _ = cli(
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
    code, out, _ = cli("simulate", "--plan", str(tmp_path / "plan.json"), "--json")
    assert code == 0
    assert json.loads(out) == first


def test_summary_names_the_bottleneck(cli: CliRun) -> None:
    code, out, _ = cli(*BASE, "--pp", "4")
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
def test_bad_mapping_is_one_line_and_exit_code_2(cli: CliRun, flags, message) -> None:
    code, out, err = cli(*BASE, *flags)
    assert code == 2 and not out
    assert err.count("\n") == 1 and message in err


def test_model_and_plan_together_is_a_usage_error(cli: CliRun, tmp_path) -> None:
    code, _, err = cli(*BASE, "--plan", str(tmp_path / "plan.json"))
    assert code == 2 and "not both" in err

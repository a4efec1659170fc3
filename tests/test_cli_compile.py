"""`chipletc compile`: the JSON it promises, the files it writes, the errors it gives."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from builders import CliRun

REQUIRED = {
    "mapping": ("tp", "pp", "batch", "micro_batch", "stages"),
    "system": ("num_chiplets", "num_servers"),
    "performance": ("prefill_s", "decode_s_per_token", "tokens_per_s"),
    "cost": ("tco_per_1k_tokens_usd",),
    "solver": ("status", "gap", "wall_s"),
}


def test_json_has_the_promised_keys(cli: CliRun):
    code, out, _ = cli("compile", "gpt2-xl", "--json")
    assert code == 0
    doc = json.loads(out)
    for section, keys in REQUIRED.items():
        for key in keys:
            assert key in doc[section], f"{section}.{key}"
    m = doc["mapping"]
    assert doc["system"]["num_chiplets"] == m["tp"] * m["pp"] == len(doc["chiplets"])
    assert m["stages"][0][0] == 0 and m["stages"][-1][1] == 47
    for c in doc["chiplets"]:
        used = c["weight_bytes"] + c["kv_bytes"] + c["activation_bytes"]
        assert used <= c["sram_capacity_bytes"]
    assert doc["solver"]["status"] == "OPTIMAL"


def test_outputs_repeat_byte_for_byte_across_processes_and_hash_seeds(tmp_path):
    """Two fresh interpreters with different string-hash seeds (set and dict orders that
    follow hashes change between them) write the same bytes."""
    exe = Path(sys.executable).parent / "chipletc"
    runs = {
        seed: subprocess.Popen(
            [str(exe), "compile", "gpt2-small", "-o", str(tmp_path / seed)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for seed in ("0", "4242")
    }
    for proc in runs.values():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    a, b = (
        {str(f.relative_to(d)): f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file()}
        for d in (tmp_path / "0", tmp_path / "4242")
    )
    assert {"plan.json", "schedule.json", "trace.json", "report.md", "report.html"} <= a.keys()
    assert any(name.startswith("chakra/") for name in a)
    assert not any(name.startswith(".") for name in a)  # no staging left behind
    assert json.loads(a["plan.json"])["version"]
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # GPT-3 needs more chiplets than 2 servers of 128 hold: 256 allowed
        (["compile", "gpt3-175b", "--max-servers", "2"], r"256 are allowed \(2 servers x 128\)"),
        (["compile", "gpt2-xl", "--tp", "2"], "2 does not divide the 25 attention heads"),
        (["compile", "gpt2-xl", "--pp", "200"], "200 stages for 48 layers; use 1..48"),
        (["compile", "gpt3", "--json"], "did you mean gpt3-175b"),
        (["compile", "gpt2-xl", "--target", "no-such-target"], "no-such-target"),
        (["compile", "gpt2-xl", "--weights-dtype", "int3"], "--weights-dtype: unknown data type"),
        (["compile", "gpt2-xl", "--compute-dtype", "xyz"], "--compute-dtype: unknown data type"),
        (["compile", "zzzz"], r"unknown model; chipletc models lists them$"),
        (["compile", "gpt2-xl", "--weight-sparsity", "1.5"], r"weight-sparsity: .* \(1\.5\)"),
        # flag errors: argparse exits before any model is loaded
        (["compile", "gpt2-xl", "--tp", "0"], "argument --tp: must be at least 1: 0"),
        (["compile", "gpt2-xl", "--solver", "foo"], "invalid choice: 'foo'"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_requests_give_one_line_and_exit_2(cli: CliRun, argv, message):
    code, out, err = cli(*argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chipletc: error:")
    assert re.search(message, lines[0]), lines[0]


def test_unwritable_dir_leaves_nothing_behind(cli: CliRun, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = cli("compile", "gpt2-small", "-o", str(blocker / "out"))
    assert code == 2 and "cannot write" in err and len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "not a directory"


def test_simulate_plan_replays_the_compiled_system(cli: CliRun, tmp_path, monkeypatch):
    """A plan records how its model and target were named and its weight sparsity."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.yaml").write_text("base: cc-7nm-gpt3\nserver: {packages_per_lane: 10}\n")
    code, out, _ = cli(
        "compile",
        "gpt2-xl",
        "--target",
        "small.yaml",
        "--weight-sparsity",
        "0.5",
        "-o",
        "d",
        "--json",
    )
    assert code == 0
    compiled = json.loads(out)["simulated"]
    code, out, _ = cli("simulate", "--plan", "d/plan.json", "--json")
    assert code == 0
    replayed = json.loads(out)
    assert replayed["decode_s_per_token"] == pytest.approx(compiled["decode_s_per_token"], rel=1e-9)
    assert replayed["prefill_s"] == pytest.approx(compiled["prefill_s"], rel=1e-9)


def test_output_is_all_or_nothing_and_replaces_old_rank_files(cli: CliRun, tmp_path):
    out = tmp_path / "o"
    (out / "report.md").mkdir(parents=True)  # a folder where a file must go
    code, _, err = cli("compile", "gpt2-small", "-o", str(out))
    assert code == 2 and "report.md is a folder" in err
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]  # nothing else written
    (out / "report.md").rmdir()
    (out / "chakra").mkdir()
    (out / "chakra" / "chipletc.999.et").write_bytes(b"stale")
    assert cli("compile", "gpt2-small", "-o", str(out))[0] == 0
    assert not (out / "chakra" / "chipletc.999.et").exists()
    assert (out / "chakra").is_dir() and (out / "plan.json").is_file()

"""`chipletc models` and `chipletc inspect`: output, JSON, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from builders import CliRun

from chipletc.models.zoo import list_models

BAD_MODULES = """
from torch import nn

def mlp():
    return nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 10))

def broken():
    raise RuntimeError("no weights here")

def not_a_module():
    return 42
"""



def test_models_lists_the_zoo(cli: CliRun) -> None:
    code, out, _ = cli("models")
    assert code == 0
    assert all(name in out for name in list_models())
    assert "MQA" in out and "MoE 8 top-2" in out


def test_models_json(cli: CliRun) -> None:
    code, out, _ = cli("models", "--json")
    rows = json.loads(out)["models"]
    assert code == 0 and [r["name"] for r in rows] == list_models()


def test_inspect_json(cli: CliRun) -> None:
    code, out, err = cli("inspect", "gpt2-small", "--json", "--per-layer")
    s = json.loads(out)
    assert code == 0 and err == ""
    for key in (
        "name", "frontend", "params", "active_params", "weight_bytes", "kv_bytes_per_token",
        "flops_per_token_decode", "flops_per_token_prefill", "num_layers", "ops_by_kind",
        "unrecognised_ops",
    ):  # fmt: skip
        assert key in s
    assert s["params"] == 124_439_808 and s["num_layers"] == 12
    assert s["kv_bytes_per_token"] == 12 * 2 * 768 * 2
    assert s["unrecognised_ops"] == []
    assert [r["block"] for r in s["per_layer"]] == ["pre", *range(12), "post"]


def test_inspect_human_table(cli: CliRun) -> None:
    code, out, _ = cli("inspect", "llama2-7b", "--batch", "4", "--prompt-len", "128",
        "--context-len", "512", "--weights-dtype", "int8", "--kv-dtype", "fp8",
    )  # fmt: skip
    assert code == 0
    assert "frontend torch.fx" in out and "6.74G" in out
    assert "6.74 GB int8" in out  # one byte per weight
    assert "KV cache / token      262.14 kB (fp8)" in out
    assert "unrecognised ops      none" in out


def test_inspect_user_module(tmp_path: Path, cli: CliRun) -> None:
    path = tmp_path / "m.py"
    path.write_text(
        "from chipletc.models import zoo\n\n"
        "def factory():\n"
        "    return zoo.build(zoo.with_layers(zoo.get_config('mixtral-8x7b'), 2))\n"
    )
    code, out, _ = cli("inspect", f"{path}:factory", "--json")
    s = json.loads(out)
    assert code == 0 and s["num_experts"] == 8 and s["experts_per_token"] == 2


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.py"
    path.write_text(BAD_MODULES)
    return path


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gpt3", "model 'gpt3': unknown model; did you mean gpt3-175b"),
        ("{dir}/missing.py:make", "missing.py: not found"),
        ("{file}:nothing", "no function 'nothing'"),
        ("{file}:broken", "broken() raised RuntimeError: no weights here"),
        ("{file}:not_a_module", "returned int, not a torch nn.Module"),
        ("{file}:mlp", "no transformer structure found"),
    ],
)
def test_inspect_errors_are_one_line(
    spec: str, message: str, bad_file: Path, cli: CliRun
) -> None:
    spec = spec.format(dir=bad_file.parent, file=bad_file)
    code, out, err = cli("inspect", spec)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("chipletc: error: ")
    assert message in err


def test_installed_command_reports_one_line() -> None:
    exe = Path(sys.executable).parent / "chipletc"
    proc = subprocess.run(
        [str(exe), "inspect", "llama-7b"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert "did you mean" in proc.stderr and "llama2-7b" in proc.stderr

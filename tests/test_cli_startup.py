"""Commands that need no model start without torch, OR-Tools or ONNX: they must start
in a fraction of a second (tests/bench/bench_startup.py times them).

Each command runs in a fresh interpreter, which then lists the heavy packages it
imported. `inspect` is the control: it lowers a model, so the check must see torch.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "ortools", "onnx")

PROBE = """
import contextlib, io, sys
from chipletc.cli.main import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(" ".join(m for m in {heavy} if m in sys.modules))
"""


def heavy_imports(*argv: str) -> set[str]:
    run = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(run.stdout.split())


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["targets"],
        ["cost", "cc-7nm-gpt3"],
        ["schema", "plan"],
        ["models"],
        ["models", "--json"],
    ],
    ids=" ".join,
)
def test_light_commands_import_no_heavy_package(argv):
    assert heavy_imports(*argv) == set()


def test_the_probe_sees_torch_when_a_model_is_lowered():
    assert "torch" in heavy_imports("inspect", "gpt2-small", "--no-cache")


def test_a_model_in_the_cache_is_read_without_torch():
    heavy_imports("inspect", "gpt2-medium")  # lowers it (torch) and caches it
    assert heavy_imports("inspect", "gpt2-medium") == set()

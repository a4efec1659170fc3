"""Lowering a weightless GPT-3-size ONNX file: wall time (budget 10 s).

The file is built with onnx.helper (``make_gpt_onnx``): 175B bf16 parameters as
initializers whose external data file does not exist, so the file is a few hundred kB.
Lowering runs in a fresh interpreter so the time includes reading and shape inference
but not torch's first import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_onnx_frontend import make_gpt_onnx  # tests/ is on sys.path (tests/conftest.py)

SCRIPT = """
import json, sys, time
from chipletc.compiler.frontends import load_model
from chipletc.models import zoo
zoo.build("gpt2-small")  # warm torch's lazy initialisation outside the timing
start = time.perf_counter()
graph = load_model(sys.argv[1])
seconds = time.perf_counter() - start
reference = load_model("gpt3-175b")
print(json.dumps({"seconds": seconds, "ops": len(graph), "params": graph.params,
                  "zoo_params": reference.params, "bytes": graph.weight_bytes,
                  "zoo_bytes": reference.weight_bytes}))
"""


def test_gpt3_size_onnx_lowers_in_budget(tmp_path: Path) -> None:
    path = make_gpt_onnx(
        tmp_path / "gpt3.onnx", layers=96, d=12288, heads=96, ffn=49152, vocab=50257,
        positions=2048,
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True, check=True
    )
    r = json.loads(proc.stdout)
    print(
        f"\ngpt3-175b as a weightless ONNX file ({path.stat().st_size / 1e3:.0f} kB): lowered in "
        f"{r['seconds']:.2f} s, {r['ops']} ops, {r['params'] / 1e9:.2f}B parameters"
    )
    assert r["seconds"] < 10.0
    assert (r["params"], r["bytes"]) == (r["zoo_params"], r["zoo_bytes"])

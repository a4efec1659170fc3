"""Lowering the largest dense zoo models: wall time and peak memory (budget 5 s, 1 GB).

Each model is lowered in a fresh interpreter so peak RSS belongs to that lowering
alone; tracemalloc would slow the tracer several-fold and distort the time.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
import json, resource, sys, time
from chipletc.compiler.frontends import load_model
from chipletc.models import zoo
zoo.build("gpt2-small")  # warm torch's lazy initialisation outside the timing
start = time.perf_counter()
graph = load_model(sys.argv[1])
seconds = time.perf_counter() - start
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "ops": len(graph)}))
"""


@pytest.mark.parametrize("name", ["gpt3-175b", "llama3-405b"])
def test_lowering_time_and_memory(name: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, name], capture_output=True, text=True, check=True
    )
    r = json.loads(proc.stdout)
    print(
        f"\n{name}: lowered in {r['seconds']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MB "
        f"(whole process, torch included), {r['ops']} ops"
    )
    assert r["seconds"] < 5.0
    assert r["peak_rss_mb"] < 1024

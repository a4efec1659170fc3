"""ASTRA-sim runs what `chipletc ... -o DIR` writes, with the command report.md gives.

Skipped unless ``CHIPLETC_ASTRA_SIM`` names ASTRA-sim's analytical congestion-unaware
binary (docs/astra-sim.md names the version). Each set must run to the end, every
NPU reporting ``finished``, and the last NPU must finish within 10 % of the end
chipletc's own simulator gives the same window (the table in docs/astra-sim.md has the
measured gaps; what differs is ASTRA-sim's collective algorithm and the token sends
chipletc lets through at no cost).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from builders import CliRun

from chipletc.backends.emit import RANKS

BINARY = os.environ.get("CHIPLETC_ASTRA_SIM")

pytestmark = pytest.mark.skipif(not BINARY, reason="CHIPLETC_ASTRA_SIM is not set")

CASES = {
    "tp4-pp4-two-servers": ["--target", "h100-x8", "--tp", "4", "--pp", "4", "--batch", "8"],
    "tp2-pp3": ["--target", "h100-x8", "--tp", "2", "--pp", "3", "--batch", "4"],
}


def run_astra_sim(out: Path) -> tuple[list[int], float]:
    """Run report.md's command in ``out``; (NPUs that finished, last end in ms)."""
    report = (out / "report.md").read_text()
    command = shlex.split(re.search(r"`(AstraSim_Analytical\S* [^`]*)`", report).group(1))
    proc = subprocess.run(
        [BINARY, *command[1:]], cwd=out, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    finished = re.findall(r"sys\[(\d+)\] finished, (\d+) cycles", proc.stdout)
    return sorted(int(npu) for npu, _ in finished), max(int(c) for _, c in finished) / 1e6


@pytest.mark.parametrize("ranks", RANKS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_astra_sim_runs_every_rank_to_chipletcs_end(cli: CliRun, tmp_path, case, ranks):
    argv = ["simulate", "gpt2-small", *CASES[case], "--ranks", ranks, "-o", str(tmp_path)]
    assert cli(*argv)[0] == 0
    npus = len(list((tmp_path / "chakra").glob("*.et")))
    chipletc_ms = float(
        re.search(r"simulator ends at ([0-9.e+]+) ms", (tmp_path / "report.md").read_text()).group(
            1
        )
    )
    finished, astra_ms = run_astra_sim(tmp_path)
    assert finished == list(range(npus))
    assert astra_ms == pytest.approx(chipletc_ms, rel=0.10)

"""`chipletc sensitivity gpt3-175b` against the A100 baseline (target: under 60 s on 2 cores).

Times the command as a user runs it, in process: the baseline's mapping, every knob at
both ends and every break-even bisection, each point re-solving the mapping. Lowering
the model is outside the timing (the session cache holds it, as the on-disk cache would).
"""

from __future__ import annotations

import os
import time

from chipletc.cli.main import main

TARGET_S = 60.0


def test_sensitivity_gpt3_default_target_a100(zoo_graph, capsys, monkeypatch) -> None:
    from chipletc.compiler import frontends

    zoo_graph("gpt3-175b")
    monkeypatch.setattr(frontends, "load_model", lambda spec, **kw: zoo_graph(spec))
    start = time.perf_counter()
    code = main(["sensitivity", "gpt3-175b", "--baseline", "a100"])
    seconds = time.perf_counter() - start
    out = capsys.readouterr().out
    top = out.strip().splitlines()[-2]
    load = os.getloadavg()[0]
    with capsys.disabled():
        print(f"\nsensitivity gpt3-175b vs a100: {seconds:.1f} s (load average {load:.1f} "
              f"on {os.cpu_count()} cores); {top}")
    assert code == 0
    assert seconds < TARGET_S

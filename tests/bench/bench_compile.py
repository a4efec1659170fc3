"""Benchmark: compiling GPT-3 175B and Llama-3 405B on the default target.

Prints the solver's wall time (target: optimality proven in under 2 s), the whole
`chipletc compile` command's time (target: under 15 s on 2 cores; with `-o DIR` it also
writes the schedule and trace files, whose size grows with stages x micro-batches) and the
CP-SAT vs exhaustive time ratio on the same spaces.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from chipletc.backends.targets import DEFAULT_TARGET, load_target
from chipletc.compiler.frontends import load_model
from chipletc.compiler.partition import Objective, SearchOptions, build_problem
from chipletc.compiler.partition.cpsat import solve_cpsat
from chipletc.compiler.partition.exhaustive import solve_exhaustive

MODELS = ("gpt3-175b", "llama3-405b")


def test_bench_solver_and_command(tmp_path: Path) -> None:
    target = load_target(DEFAULT_TARGET)
    chipletc = Path(sys.executable).with_name("chipletc")
    print(f"\ncompile on {DEFAULT_TARGET} (prompt 1024, generate 1024)")
    header = ("model", "objective", "status", "cpsat s", "exhaustive s", "ratio")
    print("{:<13} {:<11} {:<8} {:>8} {:>13} {:>6}".format(*header))
    for name in MODELS:
        graph = load_model(name)
        for objective in Objective:
            problem = build_problem(graph, target, SearchOptions(objective=objective))
            fast = solve_cpsat(problem)
            slow = solve_exhaustive(problem)
            assert fast.objective == slow.objective
            print(
                f"{name:<13} {objective.value:<11} {fast.status:<8} {fast.wall_s:8.2f} "
                f"{slow.wall_s:13.2f} {fast.wall_s / slow.wall_s:6.2f}"
            )
    for name in MODELS:
        for extra in ([], ["-o", str(tmp_path / name)]):
            start = time.perf_counter()
            subprocess.run(
                [str(chipletc), "compile", name, *extra], check=True, capture_output=True
            )
            label = " ".join(["chipletc compile", name, *(["-o DIR"] if extra else [])])
            print(f"{label}: {time.perf_counter() - start:.2f} s (target < 15 s without -o)")

"""Writing every output of `chipletc compile gpt3-175b -o DIR` (default target, default
search, --ranks representative, the default trace window).

Target: under 5 s from the compile result to files on disk: lowering the schedule,
replaying it (the CLI replays what ``compile_model`` does not keep), every emitter and
the atomic write. Loading the model and the search are outside the timing; the median
of three runs is reported.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from chipletc.backends.emit import output_files
from chipletc.backends.sim import simulate
from chipletc.backends.targets import DEFAULT_TARGET, load_target
from chipletc.cli.output import write_outputs
from chipletc.compiler.compile import compile_model
from chipletc.compiler.frontends import load_model
from chipletc.compiler.partition import SearchOptions
from chipletc.compiler.schedule import lower_schedule


def test_write_all_outputs_of_gpt3(tmp_path: Path) -> None:
    graph, target = load_model("gpt3-175b"), load_target(DEFAULT_TARGET)
    options = SearchOptions()
    result = compile_model(graph, target, options)
    plan = result.plan

    def write(out: Path) -> list[Path]:
        schedule = lower_schedule(
            graph, target, result.partition.mapping, options.prompt_len, options.gen_len
        )
        sim = simulate(schedule, target)
        files = output_files(
            plan, schedule, sim, target, result.perf, result.cost, plan.extra["solver"]
        )
        return write_outputs(out, files)

    times = []
    for i in range(3):
        start = time.perf_counter()
        written = write(tmp_path / str(i))
        times.append(time.perf_counter() - start)
    size = sum(p.stat().st_size for p in written)
    median = statistics.median(times)
    m = plan.mapping
    print(
        f"\nemit gpt3-175b (tp {m['tp']} x pp {m['pp']}, {len(written)} files, "
        f"{size / 1e6:.1f} MB): {median:.2f} s (median of 3; target < 5 s)"
    )
    assert median < 5.0

"""`chipletc explore`: exact per-design optima, fronts, executors, resume, reports, errors."""

from __future__ import annotations

import base64
import dataclasses
import html.parser
import json
import random
import re
from pathlib import Path

import pytest
import yaml

from chipletc.backends.cost import assumptions
from chipletc.cli import main as cli
from chipletc.cli.explore import format_summary
from chipletc.compiler.compile import compile_model
from chipletc.compiler.explore import (
    ExploreOptions,
    baseline_rows,
    explore,
    load_space,
    pareto_front,
    parse_override,
    parse_space,
    solve_optimal,
    summary,
    to_csv,
    to_html,
    to_png,
)
from chipletc.compiler.explore.space import screen
from chipletc.compiler.partition import Objective, SearchOptions, build_problem
from chipletc.compiler.partition.diagnose import binding_reason
from chipletc.compiler.partition.exhaustive import solve_exhaustive
from chipletc.compiler.partition.problem import ProblemBuilder
from chipletc.ir.errors import InfeasibleError, TargetError, UsageError

MODEL = "gpt3-175b"
# 3 areas x 2 MAC ratios x 2 intensities x 3 server shapes = 36 designs, most of which
# hold GPT-3 (and a few that break the lane budget or the power cap).
SMALL_SPACE = {
    "name": "small",
    "base": "cc-7nm-gpt3",
    "chiplet": {"area_mm2": [200, 300, 500], "mac_ratio": [0.02, 0.1],
                "ops_per_sram_read": [2, 8]},
    "server": {"packages_per_lane": [8, 12, 16]},
}


@pytest.fixture(scope="module")
def gpt3(zoo_graph):
    return zoo_graph(MODEL)


@pytest.fixture(scope="module")
def small_space():
    return parse_space(SMALL_SPACE, "small.yaml")


@pytest.fixture(scope="module")
def small_run(gpt3, small_space):
    return explore([gpt3], small_space, ExploreOptions(chunk_size=5))


def write_space(tmp_path: Path, data: dict, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def survivors(space, count: int, seed: int = 0):
    designs = list(space.designs())
    random.Random(seed).shuffle(designs)
    out = []
    for d in designs:
        target, _ = screen(space, d)
        if target is not None:
            out.append(target)
        if len(out) == count:
            break
    return out


# --- the correctness anchor: explore's optimum is compile's ---------------------------


OPTIONS = [
    SearchOptions(),
    SearchOptions(objective=Objective.LATENCY),
    SearchOptions(objective=Objective.THROUGHPUT, max_latency_s=0.05),
    SearchOptions(prompt_len=512, gen_len=256, max_latency_s=0.02),
]


@pytest.mark.parametrize("opts", OPTIONS, ids=["tco", "latency", "throughput", "bounded"])
def test_builder_builds_the_same_problem(gpt3, opts):
    builder = ProblemBuilder(gpt3, opts)
    targets = survivors(load_space(), 6)
    assert len(targets) == 6
    built = 0
    for target in targets:
        try:
            expected = build_problem(gpt3, target, opts)
        except InfeasibleError:
            with pytest.raises(InfeasibleError):
                builder.build(target)
            continue
        assert builder.build(target) == expected
        built += 1
    assert built >= 3  # most designs hold GPT-3: the comparison ran


@pytest.mark.parametrize("opts", OPTIONS, ids=["tco", "latency", "throughput", "bounded"])
def test_fast_solver_finds_the_exhaustive_optimum(gpt3, opts):
    builder = ProblemBuilder(gpt3, opts)
    checked = 0
    for target in survivors(load_space(), 12, seed=1):
        try:
            problem = builder.build(target)
        except InfeasibleError:
            continue
        reference = solve_exhaustive(problem).best
        found = solve_optimal(problem)
        assert (found is None) == (reference is None)
        if found is not None:
            assert found.objective == reference.objective
            checked += 1
    assert checked >= 3


def test_points_equal_compile(gpt3, small_space, small_run):
    """On a few designs, the point is `compile`'s: same objective, same figures."""
    ok = [p for p in small_run.points if p["status"] == "ok"]
    picked = ok[:: max(1, len(ok) // 2)][:2]
    assert len(picked) == 2
    for point in picked:
        target, _ = screen(small_space, small_space.design(point["design"]))
        opts = SearchOptions()
        result = compile_model(gpt3, target, opts)  # CP-SAT
        problem = ProblemBuilder(gpt3, opts).build(target)
        assert solve_optimal(problem).objective == result.partition.result.objective
        mapping = result.partition.mapping
        assert (point["tp"], point["pp"], point["batch"], point["micro_batch"]) == (
            mapping.tp, mapping.pp, mapping.batch, mapping.micro_batch)
        assert point["usd_per_1k_tokens"] == pytest.approx(
            result.cost.tco_per_1k_tokens_usd, rel=1e-9)
        assert point["decode_s_per_token"] == pytest.approx(
            result.perf.decode_s_per_token, rel=1e-9)


# --- outputs --------------------------------------------------------------------------


def test_no_point_dominates_the_front(small_run):
    points = [p for p in small_run.points if p["status"] == "ok"]
    front = pareto_front(points)
    assert front
    for f in front:
        for p in points:
            better_or_equal = (p["usd_per_1k_tokens"] <= f["usd_per_1k_tokens"]
                               and p["decode_s_per_token"] <= f["decode_s_per_token"])
            strictly = (p["usd_per_1k_tokens"] < f["usd_per_1k_tokens"]
                        or p["decode_s_per_token"] < f["decode_s_per_token"])
            assert not (better_or_equal and strictly), (p["design"], f["design"])
    # and every point off the front is dominated by (or equal to) a front point
    for p in points:
        assert any(f["usd_per_1k_tokens"] <= p["usd_per_1k_tokens"]
                   and f["decode_s_per_token"] <= p["decode_s_per_token"] for f in front)


def test_constraints_and_pruning_are_counted(small_run, small_space):
    assert small_run.complete
    assert small_run.designs == small_space.size == 36
    assert sum(small_run.removed.values()) + small_run.survivors == 36
    assert {p["status"] for p in small_run.points} <= {"ok", "capacity", "no mapping"}
    assert any(p["status"] == "ok" for p in small_run.points)


def test_no_mapping_is_explained_by_its_binding_constraint(gpt3):
    """Small dies hold GPT-3 across 64 servers but no layer fits one: "no mapping",
    counted under "chiplet memory", which a fresh problem of the same design confirms;
    the summary names the commonest reason and what it means."""
    space = parse_space({"base": "cc-7nm-gpt3",
                         "chiplet": {"area_mm2": [60, 200], "mac_ratio": 0.03,
                                     "ops_per_sram_read": 4},
                         "server": {"packages_per_lane": [8, 16]}}, "two.yaml")
    run = explore([gpt3], space, ExploreOptions())
    missed = [p for p in run.points if p["status"] == "no mapping"]
    assert missed and {p["reason"] for p in missed} == {"chiplet memory"}
    builder = ProblemBuilder(gpt3, SearchOptions())
    for p in missed:
        target, _ = screen(space, next(d for d in space.designs() if d.index == p["design"]))
        assert solve_optimal(problem := builder.build(target)) is None
        assert binding_reason(problem) == "chiplet memory"
    doc = {**summary(run, {}), "assumptions": assumptions(space.base)}  # as the CLI does
    assert doc["models"][MODEL]["no_mapping_reasons"] == {"chiplet memory": len(missed)}
    assert ("no mapping, by binding constraint: chiplet memory 2; commonest: chiplet memory "
            "(2): one block per stage at the widest tp overflows") in format_summary(doc, None)


def test_workers_give_identical_results(gpt3, small_space, small_run):
    two = explore([gpt3], small_space, ExploreOptions(workers=2, chunk_size=5))
    assert two.points == small_run.points
    assert to_csv(two.points) == to_csv(small_run.points)


def test_resume_after_interrupt_gives_the_same_result(gpt3, small_space, small_run, tmp_path):
    journal = tmp_path / "journal.jsonl"
    opts = ExploreOptions(chunk_size=5, stop_after=12)
    first = explore([gpt3], small_space, opts, journal)
    assert not first.complete and 0 < first.evaluated_now <= 12
    with journal.open("a") as f:
        f.write('{"key": "cut sh')  # the interrupt left half a line
    second = explore([gpt3], small_space, dataclasses.replace(opts, stop_after=None), journal)
    assert second.complete
    assert second.evaluated_now == small_run.survivors - first.evaluated_now
    assert to_csv(second.points) == to_csv(small_run.points)


def test_csv_is_sorted_and_deterministic(small_run):
    text = to_csv(small_run.points)
    lines = text.splitlines()
    header = lines[0].split(",")
    assert header[:2] == ["model", "design"] and "usd_per_1k_tokens" in header
    designs = [int(line.split(",")[1]) for line in lines[1:]]
    assert designs == sorted(designs) and len(designs) == small_run.survivors
    assert to_csv(list(reversed(small_run.points))) == text


class _Collect(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def test_report_html_parses_and_embeds_its_figure(gpt3, small_run):
    rows = {MODEL: baseline_rows(gpt3, SearchOptions(), [parse_override("a100:price=0.87")])}
    doc = summary(small_run, rows)
    png = to_png(small_run.points, small_run.models)
    page = to_html(doc, png)
    parser = _Collect()
    parser.feed(page)
    parser.close()
    assert "table" in parser.tags and "h1" in parser.tags
    (src,) = parser.images
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    assert base64.b64decode(src[len(prefix):]) == png
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert to_png(small_run.points, small_run.models) == png  # deterministic bytes
    json.dumps(doc)  # the summary is plain JSON


# --- baselines ------------------------------------------------------------------------


def test_baseline_override_moves_the_factor(gpt3, small_run):
    rows = baseline_rows(gpt3, SearchOptions(),
                         [parse_override("a100:price=0.87,tokens_per_s=211")], names=["a100"])
    simulated, override = rows
    assert simulated["source"] == "simulated" and simulated["usd_per_chip_hour"] == 1.1
    assert override["source"] == "override"
    # $0.87 per GPU-hour at 211 tokens/s per GPU (the public critique of the paper's GPU baseline)
    assert override["usd_per_1k_tokens"] == pytest.approx(0.87 / 3600 / 211 * 1000, rel=1e-12)
    doc = summary(small_run, {MODEL: rows})
    factors = [r["factor"] for r in doc["models"][MODEL]["baselines"]]
    assert factors[0] > factors[1] > 0


@pytest.mark.parametrize("text, message", [
    ("b300:price=1", "unknown baseline"),
    ("a100:cost=1", "bad item"),
    ("a100:price=-1", "a100:price: must be a finite positive number ('-1')"),
    ("a100:tokens_per_s=inf", "a100:tokens_per_s: must be a finite positive number ('inf')"),
    ("a100:price=nan", "a100:price: must be a finite positive number ('nan')"),
    ("a100:price=x", "a100:price: must be a number ('x')"),
    ("a100:tokens_per_s=1e12", "a100:tokens_per_s: too large ('1e12'); allowed <= 1e+09"),
    ("a100:price=2e6", "a100:price: too large ('2e6'); allowed <= 1e+06"),
    ("a100", "nothing to override"),
])
def test_bad_baseline_override(text, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_override(text)


# --- the space file -------------------------------------------------------------------


def test_default_space_is_the_papers():
    space = load_space()
    assert space.size >= 5000
    axes = dict(space.axes)
    assert axes["chiplet.area_mm2"][0] == 20 and axes["chiplet.area_mm2"][-1] == 800
    assert axes["chiplet.ops_per_sram_read"] == (1, 2, 4, 8, 16, 32)
    assert axes["server.lanes"] == (8,)


BAD_SPACES = [
    ({**SMALL_SPACE, "chiplet": {**SMALL_SPACE["chiplet"], "area_mm2": []}},
     "chiplet.area_mm2: empty list"),
    ({**SMALL_SPACE, "chiplet": {**SMALL_SPACE["chiplet"],
                                 "area_mm2": {"from": 800, "to": 20, "step": 20}}},
     "chiplet.area_mm2: empty range"),
    ({**SMALL_SPACE, "servr": {}}, "servr: unknown key ('servr'); did you mean server?"),
    ({**SMALL_SPACE, "chiplet": {**SMALL_SPACE["chiplet"], "tops": [10]}},
     "chiplet: mixes the by-area and by-performance forms"),
    ({**SMALL_SPACE, "constraints": {"server_power_w": 1}},
     "no feasible design: all 36 designs break a constraint (lane thermal 12, server power "
     "24); most were removed by server power (24)"),
]


@pytest.mark.parametrize("data, message", BAD_SPACES,
                         ids=["empty-list", "empty-range", "unknown-key", "two-forms",
                              "no-feasible"])
def test_bad_space_is_one_line_and_exit_2(tmp_path, capsys, data, message):
    path = write_space(tmp_path, data)
    code = cli.main(["explore", MODEL, "--space", str(path), "--no-baselines"])
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if not line.startswith("explore: ")]
    assert code == 2 and not out
    assert len(errors) == 1 and message in errors[0], err


def test_space_errors_are_target_errors():
    with pytest.raises(TargetError, match="step must be positive"):
        parse_space({**SMALL_SPACE, "server": {"packages_per_lane":
                                               {"from": 1, "to": 4, "step": 0}}}, "s.yaml")


@pytest.mark.parametrize("axis", [{"from": 1, "to": 1e308, "step": 1e-30},  # span / step = inf
                                  {"from": 1, "to": 1e308, "factor": 1 + 1e-12}])
def test_ranges_of_too_many_values_are_refused(axis):
    with pytest.raises(TargetError, match=r"chiplet\.area_mm2: too many values .* at most"):
        parse_space({**SMALL_SPACE, "chiplet": {**SMALL_SPACE["chiplet"], "area_mm2": axis}},
                    "s.yaml")


def test_cli_writes_every_output(tmp_path, capsys):
    path = write_space(tmp_path, SMALL_SPACE)
    out_dir = tmp_path / "out"
    argv = ["explore", MODEL, "--space", str(path), "-o", str(out_dir),
            "--baseline", "a100:price=0.87,tokens_per_s=211"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "tco-optimal" in out and "override" in out and "x cheaper" in out
    # stderr is no terminal here: plain progress lines, the first before any model loads
    lines = err.splitlines()
    assert lines[0] == f"explore: loading {MODEL}; then screening 36 designs"
    assert re.match(r"explore: (\d+)/\1 designs ", lines[-1]), err
    for name in ("points.csv", "pareto.png", "report.html", "summary.json", "journal.jsonl"):
        assert (out_dir / name).is_file(), name
    csv_before = (out_dir / "points.csv").read_bytes()
    assert cli.main(argv) == 0  # a rerun resumes everything from the journal
    capsys.readouterr()
    assert (out_dir / "points.csv").read_bytes() == csv_before
    doc = json.loads((out_dir / "summary.json").read_text())
    assert doc["models"][MODEL]["best"]["tco"]["status"] == "ok"

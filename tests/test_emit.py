"""Emitters: schedule.json against its schema, the Chrome trace (keys, passes that add up
to the simulated pass times, flows, counters, the window), report.md, and what
`compile|simulate -o DIR` writes (every file, deterministic, all or nothing)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import jsonschema
import pytest
import yaml
from builders import CliRun, make_graph, make_target

from chipletc.backends.cost import cost_per_1k_tokens
from chipletc.backends.emit import output_bytes, output_files, to_chrome_trace, to_report_md
from chipletc.backends.perf import estimate
from chipletc.backends.sim import simulate
from chipletc.compiler.place import build_plan
from chipletc.compiler.schedule import lower_schedule
from chipletc.ir.mapping import ModelMapping, even_stages
from chipletc.ir.schema import load_schema

STEPS = 3
REQUIRED = {
    "X": {"name", "cat", "ph", "pid", "tid", "ts", "dur", "args"},
    "C": {"name", "ph", "pid", "ts", "args"},
    "M": {"name", "ph", "pid", "args"},
    "s": {"name", "cat", "ph", "pid", "tid", "ts", "id"},
    "f": {"name", "cat", "ph", "pid", "tid", "ts", "id", "bp"},
}


def make_case(tp=2, pp=3, batch=4, micro=2, prompt=16, gen=8):
    graph, target = make_graph(layers=6), make_target()
    mapping = ModelMapping(tp, pp, even_stages(graph.num_blocks, pp), batch, micro)
    schedule = lower_schedule(graph, target, mapping, prompt, gen)
    plan = build_plan(graph, target, mapping, prompt, gen)
    analytical = estimate(graph, target, mapping, prompt, gen)
    servers = math.ceil(mapping.num_chiplets / target.chips_per_server)
    cost = cost_per_1k_tokens(target, servers, analytical.tokens_per_s)
    return schedule, simulate(schedule, target), target, plan, analytical, cost


@pytest.fixture(scope="module")
def case():
    return make_case()


@pytest.fixture(scope="module")
def trace(case):
    schedule, result, target, plan, *_ = case
    doc = to_chrome_trace(schedule, result.timeline(range(-1, STEPS)), target, plan, STEPS)
    return json.loads(json.dumps(doc))


def test_schedule_json_validates_against_its_schema(case):
    doc = json.loads(case[0].to_json())
    jsonschema.validate(doc, load_schema("schedule"))
    assert len(doc["ops"]) == sum(len(s.prefill) + len(s.decode) for s in case[0].stages)


def test_a_schedule_with_an_unknown_op_kind_does_not_validate(case):
    doc = json.loads(case[0].to_json())
    doc["ops"][0]["kind"] = "teleport"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, load_schema("schedule"))


def test_every_trace_event_has_the_keys_of_its_phase(trace):
    assert trace["traceEvents"]
    for e in trace["traceEvents"]:
        assert REQUIRED[e["ph"]] <= e.keys(), e
        if e["ph"] == "X":
            assert e["dur"] >= 0


def test_the_ops_of_each_pass_add_up_to_the_simulated_pass(case, trace):
    schedule, result = case[0], case[1]
    ops = defaultdict(float)
    for e in trace["traceEvents"]:
        if e["ph"] == "X" and e["cat"] not in ("pass", "transfer"):
            ops[e["pid"], e["args"]["micro_batch"], e["args"]["step"]] += e["dur"]
    passes = [r for r in result.timeline(range(-1, STEPS)) if r.category != "send"]
    assert len(passes) == schedule.pp * schedule.num_micro_batches * (1 + STEPS)
    for r in passes:
        simulated_us = (r.end_s - r.start_s) * 1e6
        assert ops[r.stage, r.micro_batch, r.step] == pytest.approx(simulated_us, rel=1e-6)


def test_each_stage_is_a_process_with_its_representative_as_thread(case, trace):
    schedule = case[0]
    names = {
        (e["pid"], e["name"]): e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"
    }
    for st in schedule.stages:
        a, b = st.blocks
        assert names[st.stage, "process_name"] == f"stage {st.stage} (blocks {a}-{b})"
    tids = {e["tid"] for e in trace["traceEvents"] if e["ph"] == "X" and e["pid"] < schedule.pp}
    assert tids == {st.representative for st in schedule.stages}


def test_flows_go_from_each_sending_pass_to_the_receiving_one(case, trace):
    schedule = case[0]
    ends = {e["id"]: e for e in trace["traceEvents"] if e["ph"] == "f"}
    starts = [e for e in trace["traceEvents"] if e["ph"] == "s"]
    assert len(starts) == (schedule.pp - 1) * schedule.num_micro_batches * (1 + STEPS)
    for s in starts:
        f = ends[s["id"]]
        assert f["pid"] == s["pid"] + 1 and f["ts"] >= s["ts"]


def test_the_kv_counter_grows_to_the_window_context(case, trace):
    schedule, plan = case[0], case[3]
    kv = defaultdict(list)
    for e in trace["traceEvents"]:
        if e["ph"] == "C" and e["name"].startswith("memory"):
            kv[e["pid"]].append(e["args"]["kv_cache"])
    full = schedule.batch * (schedule.prompt_len + schedule.gen_len)
    held = schedule.batch * (schedule.prompt_len + STEPS)
    for st in schedule.stages:
        series = kv[st.stage]
        assert series == sorted(series)
        rep = plan.chiplets[st.representative]
        assert series[-1] * 1e6 == pytest.approx(rep.kv_bytes * held / full)


def test_the_window_is_stated_and_nothing_outside_it_is_drawn(trace):
    assert trace["otherData"]["decode_steps"] == STEPS
    assert "decode steps 0-2" in trace["otherData"]["window"]
    steps = {e["args"]["step"] for e in trace["traceEvents"] if e["ph"] == "X"}
    assert steps == {-1, 0, 1, 2}


def test_report_names_the_mapping_the_cost_and_the_missing_solver(case):
    _, result, target, plan, analytical, cost = case
    text = to_report_md(plan, result, analytical, cost, None, ["`x.json`: x"])
    assert text.startswith(f"# {plan.model['name']} on {target.name}")
    assert "| 2 | 3 | 4 | 2 | 6 |" in text
    assert "None ran" in text and "per 1K generated tokens" in text
    # what the plan replicates, said in the report: the norm scales, never a table
    whole = [t for t in plan.tensors if t.copies == plan.mapping["tp"]]
    assert whole and all(len(t.shape) == 1 for t in whole)
    assert f"Replicated: {len(whole)} tensors held whole by every rank of their stage" in text
    solver = {"name": "cpsat", "status": "OPTIMAL", "objective": 1, "bound": 1, "gap": 0.0}
    assert "cpsat OPTIMAL" in to_report_md(plan, result, analytical, cost, solver, [])


def test_outputs_repeat_byte_for_byte():
    def files():
        schedule, result, target, plan, analytical, cost = make_case()
        return output_files(plan, schedule, result, target, analytical, cost, None, steps=2)

    assert files() == files()


EXPECTED = {
    "plan.json",
    "schedule.json",
    "trace.json",
    "report.md",
    "report.html",
    "chakra/network.yml",
    "chakra/system.json",
    "chakra/comm_groups.json",
    "chakra/remote_memory.json",
}


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_compile_writes_every_output(cli: CliRun, tmp_path):
    """(Byte-identical reruns: test_cli_compile compares two processes' outputs.)"""
    code, out, _ = cli("compile", "gpt2-small", "-o", str(tmp_path))
    assert code == 0 and "wrote" in out
    a = files_under(tmp_path)
    npus = math.prod(yaml.safe_load(a["chakra/network.yml"])["npus_count"])
    assert npus >= json.loads(a["plan.json"])["mapping"]["pp"]
    assert set(a) == EXPECTED | {f"chakra/chipletc.{r}.et" for r in range(npus)}
    jsonschema.validate(json.loads(a["plan.json"]), load_schema("plan"))
    jsonschema.validate(json.loads(a["schedule.json"]), load_schema("schedule"))
    assert b"cpsat" in a["report.md"]
    events = json.loads(a["trace.json"])["traceEvents"]
    assert all(REQUIRED[e["ph"]] <= e.keys() for e in events)


def test_simulate_writes_every_output_and_its_summary(cli: CliRun, tmp_path):
    argv = ("simulate", "gpt2-small", "--tp", "2", "--pp", "3", "--batch", "4")
    code, _, _ = cli(*argv, "--ranks", "all", "--trace-steps", "1", "-o", str(tmp_path))
    assert code == 0
    files = files_under(tmp_path)
    ets = {f for f in files if f.endswith(".et")}
    assert ets == {f"chakra/chipletc.{r}.et" for r in range(6)}
    assert set(files) == EXPECTED | ets | {"simulation.json"}
    assert json.loads(files["trace.json"])["otherData"]["decode_steps"] == 1


def test_a_failed_write_leaves_no_file_behind(cli: CliRun, tmp_path, monkeypatch):
    real = Path.write_bytes

    def fail_on_traces(self, data):
        if self.suffix == ".et":
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", fail_on_traces)
    out = tmp_path / "out"
    code, _, err = cli("simulate", "gpt2-small", "--pp", "2", "-o", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot write" in err
    assert not [p for p in out.rglob("*")]


def test_an_unwritable_dir_is_one_line_and_exit_2(cli: CliRun, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, out, err = cli("simulate", "gpt2-small", "-o", str(blocker / "out"))
    assert code == 2 and not out
    assert err.startswith("chipletc: error: -o") and len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "not a directory"


@pytest.mark.parametrize("kind", ["plan", "schedule"])
def test_schema_command_prints_the_shipped_schema(cli: CliRun, kind):
    code, out, _ = cli("schema", kind)
    assert code == 0 and json.loads(out) == load_schema(kind)


@pytest.mark.parametrize(("ranks", "steps"), [("representative", 1), ("all", 3), ("all", 8)])
def test_the_size_estimate_is_within_a_tenth_of_what_is_written(ranks, steps):
    schedule, result, target, plan, analytical, cost = make_case(batch=8, micro=2)
    files = output_files(plan, schedule, result, target, analytical, cost, None, steps, ranks)
    base, per_step = output_bytes(plan, schedule, result, target, ranks)
    estimate = base + steps * per_step
    written = sum(len(v) for k, v in files.items() if k == "trace.json" or k.endswith(".et"))
    assert estimate == pytest.approx(written, rel=0.1)


def test_an_output_over_the_cap_is_refused_before_anything_is_written(cli: CliRun, tmp_path):
    argv = ["simulate", "gpt2-small", "--pp", "2", "--batch", "4", "--gen-len", "64"]
    out = tmp_path / "out"
    code, _, err = cli(*argv, "--trace-steps", "64", "--max-output-mb", "2", "-o", str(out))
    assert code == 2 and not out.exists() and len(err.strip().splitlines()) == 1
    assert err.startswith("chipletc: error: -o: the outputs would take about")
    fits = int(err.split("--trace-steps ")[1].split()[0])
    assert 1 <= fits < 64
    code, _, _ = cli(*argv, "--trace-steps", str(fits), "--max-output-mb", "2", "-o", str(out))
    assert code == 0
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) <= 2.2e6

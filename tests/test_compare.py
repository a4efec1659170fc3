"""`chipletc compare`: rows are compile's optimum, GPU rows agree with `simulate` of the
same mapping, lengths beyond a position table say so, outputs repeat byte for byte."""

from __future__ import annotations

import dataclasses
import json

import pytest
from builders import CliRun

from chipletc.backends.cost import average_server_power_w, cost_per_1k_tokens
from chipletc.backends.perf import estimate
from chipletc.backends.targets import load_target
from chipletc.compiler.compare import BEYOND_POSITIONS, compare, parse_values
from chipletc.compiler.explore import parse_override
from chipletc.compiler.partition import SearchOptions, partition

OPTIONS = SearchOptions(gen_len=128)
TARGETS = ("cc-7nm-gpt3", "a100-80gb-x8", "h100-x8", "rtx4090-x8")


@pytest.fixture(scope="module")
def gpt3(zoo_graph):
    graph = zoo_graph("gpt3-175b")
    targets = [load_target(t) for t in TARGETS]
    over = parse_override("a100:price=0.87,tokens_per_s=211")
    return graph, compare(graph, targets, OPTIONS, (256, 1024, 4096), [over])


def test_rows_are_compiles_optimum(gpt3):
    """Each row equals compile's path: CP-SAT's mapping, its analytical estimate and
    ``cost_per_1k_tokens`` at the run's average power (compile_model without its plan
    and replay), on a chiplet row and a GPU row (CP-SAT takes seconds on each)."""
    graph, result = gpt3
    checked = {("cc-7nm-gpt3", 1024), ("rtx4090-x8", 256)}
    for row in result.rows:
        if (row["target"], row["value"]) not in checked:
            continue
        assert row["source"] == "simulated" and row["status"] == "ok"
        checked.remove((row["target"], row["value"]))
        target = load_target(row["target"])
        opts = dataclasses.replace(OPTIONS, prompt_len=row["value"])
        part = partition(graph, target, opts)
        m = part.mapping
        perf = estimate(graph, target, m, opts.prompt_len, opts.gen_len)
        average = average_server_power_w(target, perf.metrics)
        cost = cost_per_1k_tokens(target, part.num_servers, perf.tokens_per_s, average)
        assert row["usd_per_1k_tokens"] == pytest.approx(cost.tco_per_1k_tokens_usd, rel=1e-9)
        assert row["average_power_w"] == pytest.approx(average)
        assert (row["tp"], row["pp"], row["batch"]) == (m.tp, m.pp, m.batch)
    assert not checked


def test_beyond_the_position_table_is_a_status(gpt3):
    _, result = gpt3
    long = [r for r in result.rows if r["value"] == 4096]
    assert long and all(r["status"] == BEYOND_POSITIONS for r in long)


def test_override_row_follows_its_preset(gpt3):
    _, result = gpt3
    rows = list(result.rows)
    assert sum(r["source"] == "override" for r in rows) == 2  # at 256 and 1024 (4096: no fit)
    for i, r in enumerate(rows):
        if r["source"] == "override":
            assert rows[i - 1]["target"] == "a100-80gb-x8"
            assert r["tokens_per_s_per_chip"] == 211
            # $0.87 per GPU-hour over 211 tokens/s per GPU
            assert r["usd_per_1k_tokens"] == pytest.approx(0.87 / 3600 / 211 * 1000)
            assert "average_J_per_1k_tokens" not in r


@pytest.mark.parametrize("name", ["a100-80gb-x8", "rtx4090-x8"])
def test_gpu_rows_agree_with_simulate(gpt3, cli: CliRun, name):
    _, result = gpt3
    row = next(r for r in result.rows if r["target"] == name and r["value"] == 256)
    code, out, _ = cli("simulate", "gpt3-175b", "--target", name, "--tp", str(row["tp"]),
                       "--pp", str(row["pp"]), "--batch", str(row["batch"]), "--micro-batch",
                       str(row["micro_batch"]), "--prompt-len", "256", "--gen-len", "128",
                       "--json")
    assert code == 0
    sim = json.loads(out)
    # the simulator replays every step; the analytical row uses the mean context
    assert sim["tokens_per_s"] == pytest.approx(row["tokens_per_s"], rel=0.02)
    assert sim["cost"]["tco_per_1k_tokens_usd"] == pytest.approx(
        row["usd_per_1k_tokens"], rel=0.02)


def test_cli_table_chart_and_repeatability(cli: CliRun, tmp_path):
    outs = []
    for i in range(2):
        code, out, _ = cli("compare", "gpt3-175b", "--targets", ",".join(TARGETS),
                           "--contexts", "256,512,32K", "--gen-len", "64", "-o",
                           str(tmp_path / str(i)))
        assert code == 0
        outs.append(out)
    assert outs[0].replace(str(tmp_path / "0"), "DIR") == outs[1].replace(
        str(tmp_path / "1"), "DIR")
    assert outs[0].count("assumptions (override with these flags)") == len(TARGETS)
    for name in ("compare.json", "compare.csv", "compare.png"):
        assert (tmp_path / "0" / name).read_bytes() == (tmp_path / "1" / name).read_bytes()
    doc = json.loads((tmp_path / "0" / "compare.json").read_text())
    assert len(doc["rows"]) == len(TARGETS) * 3
    csv_text = (tmp_path / "0" / "compare.csv").read_text()
    assert csv_text.startswith("target,prompt_len,status,")
    assert csv_text.count("\n") == 1 + len(doc["rows"])


@pytest.mark.parametrize("text, message", [
    ("256,x", "--contexts: not a whole number ('x')"),
    ("1K,512", "increasing, distinct"),
    ("0", "must be positive"),
])
def test_bad_contexts(text, message):
    from chipletc.ir.errors import UsageError

    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_values(text, "--contexts")


def test_batch_and_latency_sweeps_pin_and_bound(cli: CliRun):
    code, out, _ = cli("compare", "gpt3-175b", "--targets", "a100-80gb-x8", "--batches",
                       "1,8,64", "--prompt-len", "256", "--gen-len", "64", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["sweep"] == "batch" and doc["values"] == [1, 8, 64]
    ok = [r for r in doc["rows"] if r["status"] == "ok"]
    assert ok and all(r["batch"] == r["value"] for r in ok)
    code, out, _ = cli("compare", "gpt3-175b", "--targets", "a100-80gb-x8",
                       "--latency-bounds-ms", "60,100", "--prompt-len", "256", "--gen-len",
                       "64", "--json")
    assert code == 0
    rows = json.loads(out)["rows"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(r["decode_s_per_token"] <= r["value"] / 1e3 for r in ok)
    # a looser bound never costs more
    usd = [r["usd_per_1k_tokens"] for r in ok]
    assert usd == sorted(usd, reverse=True)


@pytest.mark.parametrize("argv, message", [
    (("--latency-bounds-ms", "50,100", "--max-latency-ms", "80"),
     "--latency-bounds-ms: sets the bound itself; drop --max-latency-ms"),
    (("--batches", "8,64", "--max-batch", "32"), "--batches: 64 is above --max-batch (32)"),
    (("--batches", "2048",), "--batches: 2048 is above --max-batch (1024)"),
    (("--targets", "h100-x8,cc-7nm-gpt3,h100-x8"), "h100-x8 is listed twice"),
    (("--targets", "cc-7nm-gpt3:owned"), "cc-7nm-gpt3 is owned already"),
])
def test_cli_contradictory_requests_are_refused(cli: CliRun, argv, message):
    code, out, err = cli("compare", "gpt2-small", *argv)
    assert code == 2 and not out and err.count("\n") == 1
    assert err.startswith("chipletc: error:") and message in err


def test_economic_flags_apply_to_rented_targets_too(cli: CliRun):
    """--utilization and --rent-usd-per-hour move a rented target's $ as its assumptions
    block says they do."""
    argv = ("compare", "gpt2-small", "--targets", "h100-x8", "--contexts", "256",
            "--gen-len", "64")
    code, out, _ = cli(*argv, "--json")
    assert code == 0
    base = json.loads(out)["rows"][0]
    code, out, _ = cli(*argv, "--json", "--utilization", "0.5", "--rent-usd-per-hour", "10")
    assert code == 0
    doc = json.loads(out)
    row = doc["rows"][0]
    assert doc["assumptions"]["h100-x8"] == {"rent_usd_per_hour": 10.0, "utilization": 0.5}
    assert (row["tp"], row["pp"], row["batch"]) == (base["tp"], base["pp"], base["batch"])
    rent = base["usd_per_chip_hour"] * 8  # the preset's rent per 8-GPU server
    assert row["usd_per_1k_tokens"] == pytest.approx(
        base["usd_per_1k_tokens"] * 10 / rent / 0.5, rel=1e-9)
    code, out, _ = cli(*argv, "--utilization", "0.5")
    assert "--utilization 0.5" in out


def test_cli_override_needs_its_target(cli: CliRun):
    code, out, err = cli("compare", "gpt3-175b", "--targets", "cc-7nm-gpt3", "--baseline",
                         "h100:price=2")
    assert code == 2 and not out and err.count("\n") == 1
    assert "h100-x8 is not among --targets" in err


def test_owned_variant_prices_the_bill_of_materials(cli: CliRun):
    """`T:owned` is the rented preset under the owned TCO: the same mapping and speed,
    the server's cost rate that `chipletc cost` reports as fabricated."""
    code, out, _ = cli("compare", "gpt3-175b", "--targets", "a100-80gb-x8,a100-80gb-x8:owned",
                       "--contexts", "256", "--gen-len", "128", "--json")
    assert code == 0
    rented, owned = json.loads(out)["rows"]
    assert owned["target"] == "a100-80gb-x8 owned"
    assert (owned["tp"], owned["pp"], owned["batch"]) == (
        rented["tp"], rented["pp"], rented["batch"])
    code, out, _ = cli("cost", "a100-80gb-x8", "--json")
    fab = json.loads(out)["server"]["fabricated"]["cost_rate_usd_per_s"]
    expected = owned["servers"] * fab * 1000 / owned["tokens_per_s"]
    assert owned["usd_per_1k_tokens"] == pytest.approx(expected, rel=1e-9)

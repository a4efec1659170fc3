"""Energy basis: the TCO charged at TDP, at the run's simulated average power, or split;
the authors' convention reproduced; economic flags over the target's values."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from builders import CliRun

from chipletc.backends.cost import (
    average_server_power_w,
    chip_power_parts_w,
    cost_per_1k_tokens,
    loan_interest,
    server_power,
    server_tco,
    tco_breakdown,
)
from chipletc.backends.perf import estimate
from chipletc.backends.perf.metrics import RunMetrics
from chipletc.backends.targets import load_target
from chipletc.compiler.compile import compile_model
from chipletc.compiler.partition import SearchOptions
from chipletc.ir.tech import Economics, PowerBasis

AUTHORS = Economics(power_basis=PowerBasis.SIMULATED)


def authors_tco(price_usd: float, power_w: float, life_years: float = 1.5) -> float:
    """The Chiplet Cloud authors' evalTCO, written as their code is: dollars per watt-month
    of each item (the server's own divided by its power), times watts and months."""
    per_w_month = {
        "dc_amortization": 10.0 / 12 / 12,
        "dc_interest": loan_interest(10.0, 0.08, 12) / 12 / 12,
        "dc_opex": 0.04,
        "srv_power": 0.067 * 1.0 / 1000 * 24 * 30,  # SrvAvgPwr = 1: the power given
        "srv_amortization": price_usd / life_years / 12 / power_w,
        "srv_interest": loan_interest(price_usd, 0.08, life_years) / life_years / 12 / power_w,
    }
    per_w_month["pue_overhead"] = per_w_month["srv_power"] * (1.5 - 1.0)
    per_w_month["srv_opex"] = per_w_month["srv_amortization"] * 0.05
    return sum(per_w_month.values()) * power_w * life_years * 12


def test_authors_published_server_at_full_power():
    assert round(server_tco(10_000, 1_000, AUTHORS, average_power_w=1_000), 2) == 15_116.15
    assert authors_tco(10_000, 1_000) == pytest.approx(15_116.15, abs=0.005)


@pytest.mark.parametrize("average_w", [0.0, 250.0, 1_000.0, 1_821.0, 5_329.0])
def test_simulated_basis_scales_with_average_power_as_the_authors_code(average_w):
    """Every per-watt item follows the average power; the server's own items do not."""
    tdp_w = 5_329.0
    ours = server_tco(14_000, tdp_w, AUTHORS, average_power_w=average_w)
    if average_w:
        assert ours == pytest.approx(authors_tco(14_000, average_w), rel=1e-12)
    assert ours == pytest.approx(server_tco(14_000, average_w, Economics()), rel=1e-12)


def test_split_basis_provisions_at_tdp_and_pays_electricity_at_average():
    split = Economics(power_basis=PowerBasis.SPLIT)
    at_tdp = tco_breakdown(10_000, 2_000, Economics())
    items = tco_breakdown(10_000, 2_000, split, average_power_w=500)
    for k in ("server_capex_usd", "dc_capex_usd", "dc_interest_usd", "dc_opex_usd"):
        assert items[k] == at_tdp[k]
    assert items["electricity_usd"] == pytest.approx(at_tdp["electricity_usd"] / 4)


def test_a_basis_other_than_tdp_needs_the_average():
    with pytest.raises(ValueError, match="average power"):
        tco_breakdown(10_000, 1_000, AUTHORS)


def metrics(flops: float, memory: float, links: float) -> RunMetrics:
    return RunMetrics(
        attribution={"compute": 0.0, "memory": 0.0, "overhead": 0.0, "links": links,
                     "bubble": 1.0 - links},
        mfu=flops, model_flops=0.0, executed_flops=0.0,
        utilisation={"chip": {"flops": flops, "memory_bw": memory}},
    )


@pytest.mark.parametrize("name", ["cc-7nm-gpt3", "a100-80gb-x8"])
def test_average_power_spans_idle_to_tdp(name):
    target = load_target(name)
    parts = chip_power_parts_w(target)
    assert sum(parts.values()) == pytest.approx(target.chiplet.power_w)
    assert min(parts.values()) >= 0
    tdp = sum(server_power(target).values())
    idle = sum(server_power(target, 0.0).values())
    assert average_server_power_w(target, metrics(1, 1, 1)) == pytest.approx(tdp)
    assert average_server_power_w(target, metrics(0, 0, 0)) == pytest.approx(idle)
    half = average_server_power_w(target, metrics(0.5, 0.5, 0.5))
    assert half == pytest.approx((tdp + idle) / 2)  # wall power is affine in chip power


def test_compile_charges_the_basis_it_is_given(zoo_graph, default_target):
    graph = zoo_graph("gpt3-175b")
    results = {}
    for basis in PowerBasis:
        target = dataclasses.replace(default_target, economics=Economics(power_basis=basis))
        results[basis] = compile_model(graph, target, SearchOptions())
    tdp, split, sim = (results[b].cost for b in PowerBasis)
    perf = estimate(graph, default_target, results[PowerBasis.TDP].partition.mapping, 1024, 1024)
    average = average_server_power_w(default_target, perf.metrics)
    assert sim.average_power_w == pytest.approx(average)
    assert 0 < average < tdp.server_power_w
    ratio = average / tdp.server_power_w
    b_tdp, b_split, b_sim = (c.breakdown_per_1k_tokens_usd for c in (tdp, split, sim))
    assert b_sim["dc_capex_usd"] == pytest.approx(b_tdp["dc_capex_usd"] * ratio)
    assert b_split["dc_capex_usd"] == pytest.approx(b_tdp["dc_capex_usd"])
    assert b_split["electricity_usd"] == pytest.approx(b_tdp["electricity_usd"] * ratio)
    assert sim.tco_per_1k_tokens_usd < split.tco_per_1k_tokens_usd < tdp.tco_per_1k_tokens_usd
    # the same run, the same energy at TDP, whatever the basis
    assert sim.energy_per_1k_tokens_J == tdp.energy_per_1k_tokens_J


def test_utilization_divides_the_tokens():
    target = load_target("a100-80gb-x8")
    half = dataclasses.replace(target, economics=dataclasses.replace(
        target.economics, utilization=0.5))
    full = cost_per_1k_tokens(target, 2, 100.0)
    assert cost_per_1k_tokens(half, 2, 100.0).tco_per_1k_tokens_usd == pytest.approx(
        2 * full.tco_per_1k_tokens_usd)


# --- economic flags ---------------------------------------------------------------------


def test_flags_override_the_target_and_show_in_the_assumptions(cli: CliRun):
    code, out, err = cli("cost", "--json", "--life-years", "3", "--electricity-usd-per-kwh",
                         "0.12", "--pue", "1.2")
    assert code == 0 and not err
    report = json.loads(out)
    assert report["assumptions"]["server_life_years"] == 3
    assert report["assumptions"]["electricity_usd_per_kWh"] == 0.12
    assert report["assumptions"]["pue"] == 1.2
    srv = report["server"]
    econ = Economics(server_life_years=3, electricity_usd_per_kWh=0.12, pue=1.2)
    assert srv["tco_usd"] == pytest.approx(server_tco(srv["cost_usd"], srv["power_w"], econ))
    code, out, _ = cli("cost", "--life-years", "3")
    assert "--life-years 3" in out


def test_rent_flag_makes_a_target_rented(cli: CliRun):
    code, out, _ = cli("cost", "cc-7nm-gpt3", "--json", "--rent-usd-per-hour", "20")
    assert code == 0
    report = json.loads(out)
    assert report["ownership"] == "rented"
    assert report["assumptions"] == {"rent_usd_per_hour": 20.0, "utilization": 1.0}


@pytest.mark.parametrize("argv, message", [
    (("--utilization", "1.5"), "--utilization: out of range (1.5)"),
    (("--pue", "0.5"), "--pue: out of range (0.5)"),
    (("--life-years", "-1"), "--life-years: out of range (-1.0); allowed one month to 100"),
    (("--electricity-usd-per-kwh", "x"), "not a number: 'x'"),
    (("--power-basis", "peak"), "invalid choice: 'peak'"),
])
def test_bad_economic_flags_are_one_line_errors(cli: CliRun, argv, message):
    code, out, err = cli("cost", *argv)
    assert code == 2 and not out
    assert err.count("\n") == 1 and err.startswith("chipletc: error:")
    assert message in err


def test_compile_prints_the_assumptions_and_both_powers(cli: CliRun):
    code, out, _ = cli("compile", "gpt3-175b", "--interest-rate", "0", "--power-basis",
                         "simulated")
    assert code == 0
    assert re.search(r"--interest-rate 0\s", out) and "--power-basis simulated" in out
    assert "W at TDP" in out and "W average (charged: simulated)" in out


def test_explore_mapping_charges_the_basis_as_compile(zoo_graph, default_target):
    """explore's map_model (memoized stage times) and compile agree under a basis that
    needs the run's average power."""
    from chipletc.compiler.explore.run import map_model
    from chipletc.compiler.partition.problem import ProblemBuilder

    graph = zoo_graph("gpt3-175b")
    target = dataclasses.replace(default_target, economics=Economics(
        power_basis=PowerBasis.SIMULATED))
    row = map_model(graph, ProblemBuilder(graph, SearchOptions()), target)
    compiled = compile_model(graph, target, SearchOptions()).cost
    assert row["usd_per_1k_tokens"] == pytest.approx(compiled.tco_per_1k_tokens_usd, rel=1e-9)
    assert row["average_power_w"] == pytest.approx(compiled.average_power_w, rel=1e-12)


def test_serve_refuses_a_basis_it_cannot_average(cli: CliRun):
    code, out, err = cli("serve", "gpt2-small", "-w", "burst:prompt=fixed:64,gen=fixed:8,n=4",
                         "--power-basis", "split")
    assert code == 2 and not out and err.count("\n") == 1
    assert "--power-basis split: serve charges owned servers at TDP" in err


def test_serve_solves_the_mapping_with_the_economic_flags(cli: CliRun, monkeypatch):
    """The mapping serve sizes is solved on the target as the flags price it, and a basis
    serve refuses is refused before any solve."""
    import chipletc.compiler.partition as partition_module

    seen = []
    real = partition_module.partition

    def spy(graph, target, options):
        seen.append(target.economics)
        return real(graph, target, options)

    monkeypatch.setattr(partition_module, "partition", spy)
    workload = ("-w", "burst:prompt=fixed:64,gen=fixed:8,n=4")
    code, _, err = cli("serve", "gpt2-small", *workload, "--power-basis", "simulated")
    assert code == 2 and "--power-basis simulated" in err and not seen
    code, _, _ = cli("serve", "gpt2-small", *workload, "--utilization", "0.5", "--json")
    assert code == 0 and [e.utilization for e in seen] == [0.5]


def test_cost_refuses_a_basis_it_cannot_average(cli: CliRun):
    code, out, err = cli("cost", "cc-7nm-gpt3", "--power-basis", "simulated")
    assert code == 2 and not out and err.count("\n") == 1
    assert "--power-basis simulated: cost charges owned servers at TDP" in err
    code, _, _ = cli("cost", "a100-80gb-x8", "--power-basis", "simulated")
    assert code == 0  # a rent is charged whatever the basis

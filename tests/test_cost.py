"""Cost model: TCO unit check, dies per wafer against a count, yield, package, server."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chipletc.backends.cost import (
    cost_rate_usd_per_s,
    cost_report,
    die_cost,
    die_yield,
    dies_per_wafer,
    expected_dies_per_wafer,
    life_seconds,
    loan_interest,
    package_cost,
    rent_usd,
    server_cost,
    server_energy_J_per_s,
    server_tco,
    tco_breakdown,
    thermal_check,
)
from chipletc.backends.targets import (
    chiplet_by_area,
    chiplet_by_performance,
    load_target,
    load_tech,
    target_from_dict,
)
from chipletc.ir.errors import TargetError
from chipletc.ir.target import Target
from chipletc.ir.tech import Economics

TECH7 = load_tech("7nm")
PACKAGING = TECH7.packaging


# --- TCO -----------------------------------------------------------------------------


def test_tco_unit_check_to_the_cent():
    assert round(server_tco(10_000, 1_000, Economics()), 2) == 15_116.15


def test_tco_breakdown_sums_to_tco():
    items = tco_breakdown(10_000, 1_000, Economics())
    assert sum(items.values()) == pytest.approx(server_tco(10_000, 1_000, Economics()))
    assert items["server_capex_usd"] == 10_000
    assert items["server_opex_usd"] == pytest.approx(500.0)


def test_loan_interest_zero_rate_is_zero():
    assert loan_interest(1_000, 0.0, 3) == 0.0


def test_loan_interest_matches_annuity():
    # 12 monthly payments of an 8 % loan of $1,200: 104.386 each, 1252.63 in all.
    assert loan_interest(1_200, 0.08, 1) == pytest.approx(52.63, abs=0.01)


def test_electricity_share_of_cost_rate_is_the_kwh_price():
    # The year of HOURS_PER_YEAR makes TCO/life-seconds charge exactly P x PUE x price.
    e = Economics()
    per_s = tco_breakdown(0, 1_000, e)["electricity_usd"] / life_seconds(e)
    assert per_s == pytest.approx(1.0 * e.pue * e.electricity_usd_per_kWh / 3600)


def test_tco_splits_into_hand_worked_parts():
    # Per wall watt over L = 1.5 years (m = 0.08/12): datacenter capex 10 * 1.5/12 = 1.25;
    # its interest I(10, 8 %, 12 y) = 10 * (m (1+m)^144 / ((1+m)^144 - 1) * 144 - 1)
    # = 10 * (0.0108245 * 144 - 1) = 5.58728, over 12 years -> 5.58728 * 1.5/12 = 0.69841;
    # opex 0.04 * 12 * 1.5 = 0.72; electricity 0.067/1000 * 8640 h * 1.5 * PUE 1.5 =
    # 1.30248. Sum 3.97089 $/W: $3,970.89 for 1 kW, and the $15,116.15 unit check leaves
    # $11,145.26 for a $10,000 server (+ interest 645.26, + opex 500).
    assert server_tco(0, 1_000, Economics()) == pytest.approx(3_970.89, abs=0.01)
    assert server_tco(10_000, 0, Economics()) == pytest.approx(11_145.26, abs=0.02)


def test_rent_is_hand_worked():
    # an A100 at $1.10/hour for a day: 1.10 * 24 = $26.40
    assert rent_usd(Economics(rent_usd_per_hour=1.10), 24) == pytest.approx(26.40)


def test_rented_cost_rate_is_rent_per_second():
    t = load_target("a100-80gb-x8")
    assert cost_rate_usd_per_s(t) == pytest.approx(0.002444444, rel=1e-6)  # 8.80 / 3600
    # over the 1.5-year life of 12 x 30 x 24 h months: 8.80 * 12,960 h = $114,048
    assert cost_report(t)["server"]["tco_usd"] == pytest.approx(114_048)


def round_target():
    """cc-7nm-gpt3 with 10 W chiplets, for figures worked by hand (128 chips, 8 lanes of
    16 one-chip packages, host 50 W, DC-DC and PSU 95 %, fans 7.4 W per lane)."""
    t = load_target("cc-7nm-gpt3")
    return dataclasses.replace(t, chiplet=dataclasses.replace(t.chiplet, power_w=10.0))


def test_owned_cost_rate_is_tco_over_life():
    t = round_target()
    bill = server_cost(t).cost_usd
    # TCO = 1.114526 C + 3.97089 P (test above), P = 1536 W (below); life 1.5 y * 8640 h
    # * 3600 s = 46,656,000 s
    tco = 1.114526 * bill + 3.97089 * 1536
    assert cost_rate_usd_per_s(t) * 46_656_000 == pytest.approx(tco, rel=1e-6)


# --- dies per wafer --------------------------------------------------------------------


def count_whole_dies(area_mm2: float, diameter_mm: float, scribe_mm: float,
                     dx: float, dy: float) -> int:
    """Dies (pitch sqrt(area) + scribe, grid offset dx, dy) fully inside the circle."""
    a = math.sqrt(area_mm2) + scribe_mm
    r = diameter_mm / 2
    n = 0
    for k in range(math.floor((-r - dx) / a) - 1, math.ceil((r - dx) / a) + 1):
        x_far = max(abs(dx + k * a), abs(dx + (k + 1) * a))
        if x_far > r:
            continue
        h = math.sqrt(r * r - x_far * x_far)
        n += max(0, math.floor((h - dy) / a) - math.ceil((-h - dy) / a))
    return n


def mean_count(area_mm2: float, steps: int = 12) -> float:
    """Exact counts averaged over a steps x steps lattice of grid offsets."""
    a = math.sqrt(area_mm2) + TECH7.scribe_mm
    counts = [
        count_whole_dies(area_mm2, TECH7.usable_diameter_mm, TECH7.scribe_mm,
                         a * i / steps, a * j / steps)
        for i in range(steps)
        for j in range(steps)
    ]
    return sum(counts) / len(counts)


@pytest.mark.parametrize("area", [50, 100, 150, 200, 300, 400, 500, 600, 700, 800])
def test_dies_per_wafer_within_3_percent_of_exact_count(area):
    exact = mean_count(area)
    assert dies_per_wafer(area, TECH7) == pytest.approx(exact, rel=0.03)


def test_dies_per_wafer_closed_form_tracks_count_closely():
    worst = max(
        abs(expected_dies_per_wafer(a, TECH7.usable_diameter_mm, TECH7.scribe_mm) - mean_count(a))
        / mean_count(a)
        for a in range(50, 801, 50)
    )
    assert worst < 0.005


def test_no_die_fits_raises():
    with pytest.raises(TargetError, match="area_mm2"):
        die_cost(80_000, TECH7)


# --- yield and die cost ------------------------------------------------------------------


def test_yield_is_negative_binomial():
    # D0 0.1/cm2, 100 mm2 = 1 cm2, alpha 10: (1 + 0.01)^-10.
    assert die_yield(100, 0.1, 10) == pytest.approx(1.01**-10)


def test_die_cost_has_test_overhead_and_public_fields():
    d = die_cost(200, TECH7)
    assert d.dies_per_wafer == dies_per_wafer(200, TECH7)
    assert 0 < d.yield_ < 1
    assert d.cost_usd == pytest.approx(
        TECH7.wafer_cost_usd / (d.dies_per_wafer * d.yield_) * (1 + TECH7.test_cost_frac)
    )
    assert sum(d.breakdown.values()) == pytest.approx(d.cost_usd)


@settings(max_examples=200)
@given(a=st.floats(20, 850), b=st.floats(20, 850))
def test_larger_die_lower_yield_higher_cost(a, b):
    small, large = sorted((a, b))
    if large - small < 1e-6:
        return
    ds, dl = die_cost(small, TECH7), die_cost(large, TECH7)
    assert dl.yield_ < ds.yield_
    assert dl.cost_usd > ds.cost_usd


# --- chiplet builders --------------------------------------------------------------------


@given(
    tops=st.floats(0.5, 200),
    sram_mib=st.floats(1, 1500),
    ops=st.floats(1, 32),
)
def test_by_performance_and_by_area_round_trip(tops, sram_mib, ops):
    bw = tops * 1e12 / ops
    perf = chiplet_by_performance(tops, sram_mib, bw, TECH7)
    mac = tops * TECH7.mac_mm2_per_TOPS
    ratio = mac / (mac + sram_mib * TECH7.sram_mm2_per_MiB)
    back = chiplet_by_area(perf.area_mm2, ratio, ops, TECH7)
    assert back.flops_per_s == pytest.approx(perf.flops_per_s, rel=1e-9)
    assert back.sram_bytes == pytest.approx(perf.sram_bytes, abs=1)
    assert back.sram_bw_Bps == pytest.approx(perf.sram_bw_Bps, rel=1e-9)
    assert back.power_w == pytest.approx(perf.power_w, rel=1e-9)


@given(area=st.floats(30, 850), ratio=st.floats(0.01, 0.6), ops=st.floats(1, 32))
def test_by_area_then_by_performance_gives_the_area_back(area, ratio, ops):
    chip = chiplet_by_area(area, ratio, ops, TECH7)
    tops = chip.flops_per_s[next(iter(chip.flops_per_s))] / 1e12
    again = chiplet_by_performance(tops, chip.sram_bytes / 2**20, chip.sram_bw_Bps, TECH7)
    assert again.area_mm2 == pytest.approx(area, rel=1e-6)


@given(tops=st.floats(0.5, 100), sram_mib=st.floats(1, 1000), more=st.floats(0.01, 100))
def test_more_sram_or_tops_means_larger_area(tops, sram_mib, more):
    base = chiplet_by_performance(tops, sram_mib, 1e12, TECH7).area_mm2
    assert chiplet_by_performance(tops + more, sram_mib, 1e12, TECH7).area_mm2 > base
    assert chiplet_by_performance(tops, sram_mib + more, 1e12, TECH7).area_mm2 > base


def test_by_area_counts_pad_ring_and_io():
    chip = chiplet_by_area(100, 0.1, 1, TECH7, link_count=16)
    core = (10 - 2 * 0.35) ** 2 - 16 * 0.3
    assert chip.flops_per_s[next(iter(chip.flops_per_s))] == pytest.approx(
        0.1 * core / 0.72 * 1e12)
    assert chip.sram_bytes == round(0.9 * core / 0.45 * 2**20)


def test_by_area_too_small_for_the_pad_ring_raises():
    with pytest.raises(TargetError, match="area_mm2"):
        chiplet_by_area(4, 0.1, 1, TECH7)


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2])
def test_by_area_mac_ratio_out_of_range_raises(ratio):
    with pytest.raises(TargetError, match="mac_ratio"):
        chiplet_by_area(100, ratio, 1, TECH7)


# --- package -----------------------------------------------------------------------------


def test_single_die_organic_package():
    p = package_cost(100.0, 200, chiplets=1, substrate="organic", packaging=PACKAGING)
    assert p.area_mm2 == 800
    assert p.breakdown["substrate_usd"] == pytest.approx(800 * 0.005 / 0.99)
    assert p.breakdown["bumps_usd"] == pytest.approx(200 * 0.005 / 0.99)
    assert p.breakdown["bonding_loss_usd"] == pytest.approx(100 * (1 / 0.99 - 1))
    assert sum(p.breakdown.values()) == pytest.approx(p.cost_usd)


def test_multi_die_organic_uses_layer_factor():
    one = package_cost(10.0, 100, chiplets=1, packaging=PACKAGING).breakdown["substrate_usd"]
    # 4 dies x 100 mm2 x 4 = 1600 mm2 of substrate, above 30 x 30 mm:
    four = package_cost(10.0, 100, chiplets=4, packaging=PACKAGING).breakdown["substrate_usd"]
    assert four / one == pytest.approx(4 * 2.0 / 0.99**3)


def test_interposer_bonding_yield_counts_hbm_stacks():
    p = package_cost(300.0, 800, chiplets=1, substrate="interposer", hbm_stacks=5,
                     hbm_stack_usd=120, packaging=PACKAGING)
    assert p.bond_yield == pytest.approx(0.95**6 * 0.99)
    assert p.breakdown["hbm_usd"] == 600
    assert p.breakdown["interposer_usd"] > 0
    assert sum(p.breakdown.values()) == pytest.approx(p.cost_usd)


def test_hbm_on_organic_raises():
    with pytest.raises(TargetError, match="interposer"):
        package_cost(300.0, 800, substrate="organic", hbm_stacks=2, packaging=PACKAGING)


def _with_packaging(packaging: dict) -> Target:
    """One 200 mm2 die per package on a 7 nm node whose tech section sets ``packaging``."""
    data = {
        "tech": {"base": "7nm", "packaging": packaging},
        "chiplet": {"by_area": {"area_mm2": 200, "mac_ratio": 0.03,
                                "ops_per_sram_read": 1}},
        "server": {"packages_per_lane": 1, "lanes": 1, "server_link_count": 0,
                   "server_link_bw_Bps": 0, "server_link_latency_s": 0, "power_cap_w": 1e4},
        "system": {"servers": 1},
        "efficiency": {"compute": 1, "memory": 1, "link": 1},
        "name": "pkg",
    }
    return target_from_dict(data, "pkg.yaml")


def test_packaging_constants_come_from_the_tech_yaml():
    default = server_cost(_with_packaging({})).package
    # An organic substrate at $0.01/mm2 (twice the default $0.005) and 4 x 200 mm2 of it:
    # the substrate item doubles, from 800 x 0.005 / 0.99 = $4.04 to $8.08.
    dear = server_cost(_with_packaging({"organic_usd_per_mm2": 0.01})).package
    assert default.breakdown["substrate_usd"] == pytest.approx(800 * 0.005 / 0.99)
    assert dear.breakdown["substrate_usd"] == pytest.approx(800 * 0.01 / 0.99)
    assert dear.breakdown["bumps_usd"] == default.breakdown["bumps_usd"]
    # A perfect bond loses no die: the bonding-loss item vanishes.
    assert server_cost(_with_packaging({"organic_bond_yield": 1})).package.breakdown[
        "bonding_loss_usd"] == 0


@pytest.mark.parametrize(("key", "value", "words"), [
    ("organic_bond_yield", 1.5, "(0, 1]"),
    ("interposer_wafer_usd", -1, ">= 0"),
    ("hbm_stack_mm2", 0, "> 0"),
    ("organic_usd_per_mn2", 1, "did you mean organic_usd_per_mm2"),
])
def test_packaging_yaml_errors_name_the_field(key, value, words):
    with pytest.raises(TargetError) as err:
        _with_packaging({key: value})
    assert f"tech.packaging.{key}" in str(err.value)
    assert words in str(err.value)


# --- server, power, thermal ------------------------------------------------------------------


def test_server_power_is_hand_worked():
    t = round_target()
    sc = server_cost(t)
    assert sum(sc.breakdown.values()) == pytest.approx(sc.cost_usd)
    # chips 128 x 10 W = 1280 W; with the 50 W host through 95 % DC-DC: 1330 / 0.95 =
    # 1400 W; fans 8 x 7.4 = 59.2 W; through the 95 % PSU: 1459.2 / 0.95 = 1536 W
    assert sc.power_breakdown["dcdc_loss_w"] == pytest.approx(70.0)
    assert sc.power_w == pytest.approx(1536.0)
    assert server_energy_J_per_s(t) == pytest.approx(1536.0)
    assert server_energy_J_per_s(t, facility=True) == pytest.approx(2304.0)  # PUE 1.5


def test_nre_amortized_over_deployment():
    t = load_target("cc-7nm-gpt3")
    econ = dataclasses.replace(t.economics, nre_usd=35e6, nre_deployment_servers=10_000)
    with_nre = server_cost(dataclasses.replace(t, economics=econ))
    assert with_nre.breakdown["nre_usd"] == pytest.approx(3_500)
    assert with_nre.cost_usd == pytest.approx(server_cost(t).cost_usd + 3_500)


def test_thermal_flags_hot_lane_and_power_cap():
    t = load_target("cc-7nm-gpt3")
    hot = dataclasses.replace(t.server, packages_per_lane=60)
    report = thermal_check(dataclasses.replace(t, server=hot))
    assert not report.ok
    assert any("air-cooled budget" in v for v in report.violations)
    assert any("power" in v and "cap" in v for v in report.violations)


def test_thermal_budget_is_hand_worked():
    r = thermal_check(round_target())
    # air carries 1.16 kg/m3 * 1007 J/(kg K) * 0.0094 m3/s = 10.98033 W/K per lane; the
    # die may sit 90 - 30 - 10 W * 0.5 K/W = 55 K above ambient air: budget 55 * 10.98033
    # + 10 = 613.918 W. The lane draws 16 x 10 W = 160 W; the last die breathes air
    # warmed by 150 W: 30 + 150 / 10.98033 + 5 = 48.661 C.
    assert r.lane_budget_w == pytest.approx(613.918, abs=1e-3)
    assert r.lane_w == pytest.approx(160.0)
    assert r.hottest_die_c == pytest.approx(48.661, abs=1e-3)
    assert r.ok


def test_carbon_is_optional_and_hand_worked():
    t = round_target()
    assert "carbon" not in cost_report(t)
    econ = dataclasses.replace(t.economics, carbon_kg_per_kWh=0.4)
    green = dataclasses.replace(t, economics=econ)
    carbon = cost_report(green)["carbon"]
    # 1536 W * PUE 1.5 = 2304 W for 12,960 h = 29,859.84 kWh; at 0.4 kg/kWh 11,943.94 kg
    assert carbon["energy_kWh"] == pytest.approx(29_859.84)
    assert carbon["operational_kg_co2"] == pytest.approx(11_943.936)

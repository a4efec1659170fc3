"""Physical limits: compile and simulate refuse what `cost` reports violated, explore drops
it through the same check, and every fix a refusal suggests works."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from builders import CliRun

from chipletc.backends.cost import require_within_limits, thermal_check
from chipletc.backends.targets import load_target
from chipletc.compiler.explore.space import parse_space, screen
from chipletc.ir.errors import TargetError
from chipletc.ir.target import Target

# cc-7nm-gpt3 with 60 packages of 11.5 W per lane (the preset has 16): 692 W against a
# 607 W air budget; the cap is raised so that only the lane breaks.
HOT_LANE = "base: cc-7nm-gpt3\nserver: {packages_per_lane: 60, power_cap_w: 20000}\n"
# 40 packages per lane: the lane (461 W) is fine, the 2 kW cap is not (4.2 kW).
HOT_SERVER = "base: cc-7nm-gpt3\nserver: {packages_per_lane: 40}\n"
# a 900 mm2 die on a node whose reticle is 858 mm2 (the Target constructor used to check it)
BIG_DIE = "base: cc-7nm-gpt3\nchiplet: {by_area: {area_mm2: 900}}\n"
# 1.2 kW on an A100's 826 mm2: 1.45 W/mm2 against the node's 1.1 W/mm2
DENSE_DIE = "base: a100-80gb-x8\nchiplet: {power_w: 1200}\n"


def _with_server(**changes: object) -> Target:
    t = load_target("cc-7nm-gpt3")
    return dataclasses.replace(t, server=dataclasses.replace(t.server, **changes))


def test_the_presets_are_within_their_limits():
    from chipletc.backends.targets import list_targets

    names = list_targets()
    assert len(names) >= 6
    for name in names:
        require_within_limits(load_target(name))


def test_lane_fix_is_the_largest_lane_that_fits():
    hot = thermal_check(_with_server(packages_per_lane=60, power_cap_w=20000))
    (broken,) = hot.limits
    assert broken.limit == "lane thermal"
    assert broken.over == pytest.approx(hot.lane_w - hot.lane_budget_w)
    most = int(broken.fix.split("at most ")[1].split()[0])
    assert most == 52
    assert thermal_check(_with_server(packages_per_lane=most, power_cap_w=20000)).ok
    assert not thermal_check(_with_server(packages_per_lane=most + 1, power_cap_w=20000)).ok


def test_server_power_fix_is_the_cap_that_fits():
    hot = thermal_check(_with_server(packages_per_lane=40))
    (broken,) = hot.limits
    assert broken.limit == "server power"
    assert broken.over == pytest.approx(hot.server_power_w - 2000)
    cap = int(broken.fix.rsplit(">= ", 1)[1])
    assert thermal_check(_with_server(packages_per_lane=40, power_cap_w=cap)).ok
    assert not thermal_check(_with_server(packages_per_lane=40, power_cap_w=cap - 1)).ok


def test_a_package_too_hot_alone_asks_for_a_cooler_package():
    hot = thermal_check(_with_server(cooling=dataclasses.replace(
        load_target("cc-7nm-gpt3").server.cooling, heatsink_K_per_W=10.0)))
    (broken,) = hot.limits  # 11.5 W x 10 K/W = 115 K above 30 C air: no lane fits
    assert "packages of at most 6 W" in broken.fix  # (90 - 30) / 10 = 6 W


@pytest.mark.parametrize(("text", "limit", "over"), [
    (HOT_LANE, "lane thermal", "85 W over"),
    (HOT_SERVER, "server power", "2,205 W over"),
    (BIG_DIE, "reticle", "42 mm2 over"),
    (DENSE_DIE, "power density", "291 W over; chiplet.power_w of at most 908.6 W"),
])
@pytest.mark.parametrize("command", [
    ("compile", "gpt2-small"),
    ("simulate", "gpt2-small", "--gen-len", "4"),
])
def test_compile_and_simulate_refuse_in_one_line(cli: CliRun, tmp_path: Path, text, limit,
                                                 over, command):
    path = tmp_path / "hot.yaml"
    path.write_text(text)
    out_dir = tmp_path / "out"
    code, out, err = cli(*command, "--target", str(path), "-o", str(out_dir))
    assert code == 2 and not out
    assert err.startswith(f"chipletc: error: target hot: {limit}: ")
    assert over in err and err.count("\n") == 1
    assert not out_dir.exists()


@pytest.mark.parametrize(("text", "words"), [
    (HOT_LANE, "lane thermal: lane of 692 W"),
    (BIG_DIE, "reticle: die of 900 mm2 larger than the 7nm-cc reticle of 858 mm2"),
    (DENSE_DIE, "power density: die of 1,200 W on 826 mm2 is 1.45 W/mm2"),
])
def test_cost_reports_what_compile_refuses(cli: CliRun, tmp_path: Path, text, words):
    path = tmp_path / "hot.yaml"
    path.write_text(text)
    code, out, _ = cli("cost", str(path))
    assert code == 0
    assert "VIOLATED" in out and words in out


def test_explore_screens_with_the_same_check(tmp_path: Path):
    space = parse_space({"chiplet": {"area_mm2": 200, "mac_ratio": 0.03, "ops_per_sram_read": 4},
                         "server": {"packages_per_lane": [16, 40, 60]}})
    reasons = []
    for design in space.designs():
        target, reason = screen(space, design)
        if target is not None:
            require_within_limits(target)
        reasons.append(reason)
    assert reasons == ["", "server power", "lane thermal"]
    relaxed = parse_space({"chiplet": {"area_mm2": 200, "mac_ratio": 0.03,
                                       "ops_per_sram_read": 4},
                           "server": {"packages_per_lane": 60},
                           "constraints": {"lane_thermal": False, "server_power_w": 20000}})
    (design,) = relaxed.designs()
    target, reason = screen(relaxed, design)
    assert reason == "" and target is not None
    with pytest.raises(TargetError, match="lane thermal"):
        require_within_limits(target)  # explore may relax a limit that compile keeps
    big = {"chiplet": {"area_mm2": 900, "mac_ratio": 0.03, "ops_per_sram_read": 4},
           "server": {"packages_per_lane": 1}}
    (design,) = parse_space(big).designs()
    assert screen(parse_space(big), design) == (None, "reticle")  # the node's 858 mm2
    wider = parse_space({**big, "constraints": {"reticle_mm2": 1000}})
    target, reason = screen(wider, next(iter(wider.designs())))
    assert reason == "" and target is not None and thermal_check(target).ok


def test_a_derived_target_does_not_borrow_its_base_description(tmp_path: Path):
    (tmp_path / "mine.yaml").write_text("base: cc-7nm-gpt3\nserver: {packages_per_lane: 8}\n")
    (tmp_path / "told.yaml").write_text("base: cc-7nm-gpt3\ndescription: half lanes\n")
    (tmp_path / "tech.yaml").write_text("base: 7nm\nwafer_cost_usd: 12000\n")
    assert load_target(str(tmp_path / "mine.yaml")).description == "based on cc-7nm-gpt3"
    assert load_target(str(tmp_path / "told.yaml")).description == "half lanes"
    assert load_target("h200-x8").description.startswith("8 x H200")  # its own words
    from chipletc.backends.targets import load_tech

    assert load_tech(str(tmp_path / "tech.yaml")).wafer_cost_usd == 12000


# --- input ranges: every numeric field of a target or tech YAML has an upper bound ------


def _sections() -> dict[type, object]:
    from chipletc.ir.tech import Packaging, TechNode

    cc, gpu = load_target("cc-7nm-gpt3"), load_target("a100-80gb-x8")
    return {TechNode: cc.tech, Packaging: cc.tech.packaging, type(gpu.economics): gpu.economics,
            type(gpu.chiplet): gpu.chiplet, type(cc.package): cc.package,
            type(cc.server.parts): cc.server.parts, type(cc.server.cooling): cc.server.cooling,
            type(cc.server): cc.server, type(cc.system): cc.system,
            type(cc.efficiency): cc.efficiency}


def _numeric_fields() -> list[tuple[type, str, type]]:
    import types
    import typing

    out = []
    for cls in _sections():
        for name, hint in typing.get_type_hints(cls).items():
            if typing.get_origin(hint) not in (None, typing.Union, types.UnionType):
                continue  # flops_per_s, a mapping: test_a_huge_rate_... below
            kinds = [k for k in (int, float) if k is hint or k in typing.get_args(hint)]
            if kinds:
                out.append((cls, name, kinds[0]))
    return out


NUMERIC = _numeric_fields()


def test_every_section_has_numeric_fields():
    assert len(NUMERIC) >= 80
    assert {cls for cls, _, _ in NUMERIC} == set(_sections())


@pytest.mark.parametrize(("cls", "name", "kind"), NUMERIC,
                         ids=[f"{c.__name__}.{n}" for c, n, _ in NUMERIC])
def test_a_huge_value_is_refused_with_its_range(cls, name, kind):
    instance = _sections()[cls]
    huge = 10**30 if kind is int else 1e30
    with pytest.raises(TargetError) as err:
        dataclasses.replace(instance, **{name: huge})
    text = str(err.value)
    assert text.startswith(f"{name}: ") and "\n" not in text
    allowed = text.split("; allowed ", 1)[1]
    assert "<=" in allowed or allowed.endswith("]") or "(0, 1)" in allowed, text


def test_a_huge_rate_is_refused_with_its_range():
    chip = load_target("cc-7nm-gpt3").chiplet
    with pytest.raises(TargetError, match=r"flops_per_s.bf16: too large .*<= 1e\+18"):
        dataclasses.replace(chip, flops_per_s={"bf16": 1e30})


@pytest.mark.parametrize(("yaml_text", "words"), [
    ("system: {max_servers: 1e30}",
     "system.max_servers: must be a whole number (1e+30); allowed an integer >= 1 and <= "
     "100,000"),
    ("system: {max_servers: 100001}", "system.max_servers: too large (100001)"),
    ("tech: {base: 7nm, wafer_cost_usd: 1e30}", "tech.wafer_cost_usd: too large"),
    ("tech: {base: 7nm, packaging: {interposer_wafer_usd: .inf}}",
     "tech.packaging.interposer_wafer_usd: too large (inf); allowed >= 0 and <= 1e+06"),
    ("chiplet: {by_area: {area_mm2: 1e30, mac_ratio: 0.03, ops_per_sram_read: 4}}",
     "chiplet.by_area.area_mm2: too large (1e+30); allowed > 0 and <= 100,000"),
    ("chiplet: {by_performance: {tops: 5, sram_mib: 1e30, sram_bw_Bps: 1e12}}",
     "chiplet.by_performance.sram_mib: too large"),
    ("server: {cooling: {ambient_c: 1e30}}", "server.cooling.ambient_c: out of range"),
    ("economics: {pue: 0.5}", "economics.pue: out of range (0.5); allowed [1, 10]"),
    ("economics: {server_life_years: 1e-30}",  # was a ZeroDivisionError in loan_interest
     "economics.server_life_years: out of range (1e-30); allowed one month to 100 years"),
])
def test_yaml_numbers_out_of_range_are_one_line_exit_2(cli: CliRun, tmp_path: Path,
                                                       yaml_text, words):
    path = tmp_path / "t.yaml"
    path.write_text(f"base: cc-7nm-gpt3\n{yaml_text}\n")
    code, out, err = cli("cost", str(path))
    assert code == 2 and not out
    assert err.startswith(f"chipletc: error: {path}: {words}")
    assert err.count("\n") == 1


def test_the_mib_keys_are_named_in_mib(tmp_path: Path):
    """SRAM sizes are binary: the keys say MiB, and the old MB spelling points to them."""
    path = tmp_path / "old.yaml"
    path.write_text("base: cc-7nm-gpt3\nchiplet: {by_performance: {tops: 5, sram_mb: 100, "
                    "sram_bw_Bps: 1e12}}\n")
    with pytest.raises(TargetError, match="did you mean sram_mib"):
        load_target(str(path))
    path.write_text("base: cc-7nm-gpt3\ntech: {base: 7nm, sram_mm2_per_MB: 0.5}\n")
    with pytest.raises(TargetError, match="did you mean sram_mm2_per_MiB"):
        load_target(str(path))

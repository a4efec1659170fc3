"""Target presets, the YAML loader and its error messages, and the Target interface."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from builders import CliRun

from chipletc.backends.cost import cost_report, die_cost, thermal_check
from chipletc.backends.targets import (
    DEFAULT_TARGET,
    list_targets,
    list_techs,
    load_target,
    load_tech,
)
from chipletc.ir.dtypes import DType
from chipletc.ir.errors import TargetError
from chipletc.ir.target import LEVELS, Efficiency, PackageSpec, SystemSpec

GPT3_WEIGHTS_BYTES = 175e9 * 2  # bf16
GPT3_KV_BYTES_PER_TOKEN = 2 * 96 * 12288 * 2  # K and V, 96 layers, d 12288, bf16


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


# --- presets -------------------------------------------------------------------------------


def test_required_presets_exist():
    names = set(list_targets())
    assert {"cc-7nm-gpt3", "cc-7nm-dense", "a100-80gb-x8", "h100-x8", "h200-x8",
            "tpu-v4"} <= names
    assert DEFAULT_TARGET in names
    assert set(list_techs()) >= {"16nm", "7nm", "5nm", "3nm", "2nm"}


@pytest.mark.parametrize("name", list_targets())
def test_every_preset_loads_costs_and_is_feasible(name):
    t = load_target(name)
    report = cost_report(t)
    assert report["die"]["cost_usd"] > 0
    assert report["server"]["tco_usd"] > 0
    assert thermal_check(t).ok, thermal_check(t).violations
    assert t.description
    assert [lvl.name for lvl in t.link_levels()] == list(LEVELS)
    assert all(lvl.bw_Bps > 0 for lvl in t.link_levels())


@pytest.mark.parametrize("name", list_techs())
def test_every_tech_loads(name):
    tech = load_tech(name)
    assert tech.name == name
    assert tech.max_reticle_mm2 > 0 and tech.sram_mm2_per_MiB > 0


def test_sram_scaling_stalls_at_3nm():
    n3, n5, n7 = load_tech("3nm"), load_tech("5nm"), load_tech("7nm")
    assert n3.sram_mm2_per_MiB == n5.sram_mm2_per_MiB < n7.sram_mm2_per_MiB
    assert n3.mac_mm2_per_TOPS < n5.mac_mm2_per_TOPS


def sram_usd_per_MiB(tech):
    """Dollars of good silicon per MiB of SRAM macro on a 100 mm2 die of ``tech``."""
    return die_cost(100, tech).cost_usd / 100 * tech.sram_mm2_per_MiB


def test_sram_stops_paying_after_7nm():
    # N2's macro is only 31.8/38 of N3E's area (TSMC IEDM 2024), far from its wafer price
    # step, so a MiB of SRAM costs more on every node after 7 nm, while a TOPS costs less.
    n2, n3, n5, n7 = (load_tech(n) for n in ("2nm", "3nm", "5nm", "7nm"))
    assert n2.sram_mm2_per_MiB == pytest.approx(n3.sram_mm2_per_MiB * 31.8 / 38, rel=1e-2)
    usd = [sram_usd_per_MiB(t) for t in (n7, n5, n3, n2)]
    assert usd == sorted(usd) and usd[-1] > 1.9 * usd[0]
    tops_usd = [die_cost(100, t).cost_usd / 100 * t.mac_mm2_per_TOPS for t in (n7, n2)]
    assert tops_usd[1] < tops_usd[0]


def test_default_target_holds_gpt3_in_sram():
    t = load_target(DEFAULT_TARGET)
    assert t.weights_in == "sram"
    per_server = t.memory_capacity_bytes * t.chips_per_server
    kv_2048_x8 = 8 * 2048 * GPT3_KV_BYTES_PER_TOKEN
    servers = -(-(GPT3_WEIGHTS_BYTES + kv_2048_x8) // per_server)
    assert servers <= 9 < t.max_servers
    assert t.tech.max_reticle_mm2 >= t.chiplet.area_mm2


def test_gpu_and_tpu_presets_keep_weights_in_hbm_and_are_rented():
    for name in ("a100-80gb-x8", "h100-x8", "h200-x8", "tpu-v4"):
        t = load_target(name)
        assert t.weights_in == "hbm"
        assert t.memory_capacity_bytes == t.chiplet.hbm_bytes
        assert t.memory_bw_Bps == t.chiplet.hbm_bw_Bps
        assert t.economics.rent_usd_per_hour > 0
    assert load_target("h200-x8").chiplet.hbm_bytes == 141 * 2**30  # "141GB" is GiB


def test_a100_link_levels():
    t = load_target("a100-80gb-x8")
    pkg, srv, cluster = t.link_levels()
    assert (pkg.domain_chips, srv.domain_chips) == (1, 8)
    assert srv.bw_Bps == 300e9 and srv.topology == "switch"
    assert cluster.bw_Bps == 25e9  # one 200 Gb/s HDR port per GPU
    assert t.chips_per_server == 8 and t.tp_domain == "server"


def test_chiplet_cloud_cluster_links_are_shared_by_the_server():
    t = load_target("cc-7nm-gpt3")
    cluster = t.level("cluster")
    assert cluster.bw_Bps == pytest.approx(2 * 12.5e9 / t.chips_per_server)
    assert cluster.domain_chips == t.chips_per_server * t.max_servers
    assert t.level("server").bw_Bps == pytest.approx(16 * 12.5e9)


def test_tpu_v4_is_an_ici_torus_of_64_plus_chips():
    t = load_target("tpu-v4")
    assert t.chips_per_server == 4
    cluster = t.level("cluster")
    assert cluster.topology == "torus3d" and cluster.bw_Bps == 6 * 45e9
    assert cluster.domain_chips >= 64
    assert t.tp_domain == "cluster"


def test_peak_flops_fallbacks():
    a100 = load_target("a100-80gb-x8").chiplet
    assert a100.peak_flops(DType.FP8) == 312e12  # no fp8 units: bf16 rate
    assert a100.peak_flops(DType.INT4) == 1248e12
    h100 = load_target("h100-x8").chiplet
    assert h100.peak_flops(DType.INT4) == h100.peak_flops(DType.INT8) == 1979e12
    tpu = load_target("tpu-v4").chiplet
    assert tpu.peak_flops(DType.FP32) == pytest.approx(275e12 / 3)
    cc = load_target("cc-7nm-gpt3").chiplet
    assert cc.peak_flops(DType.BF16) == cc.peak_flops(DType.FP16)
    assert cc.peak_flops(DType.INT8) == 2 * cc.peak_flops(DType.BF16)  # by area: NARROW_RATE


def test_targets_are_hashable_and_replaceable():
    t = load_target("cc-7nm-gpt3")
    assert hash(t) == hash(load_target("cc-7nm-gpt3"))
    wider = dataclasses.replace(t, package=PackageSpec(chiplets_per_package=2))
    assert wider.chips_per_server == 2 * t.chips_per_server


def test_system_needs_a_server_count():
    with pytest.raises(TargetError, match="max_servers"):
        SystemSpec()


def test_efficiency_range():
    with pytest.raises(TargetError, match=r"compute: out of range \(1.5\); allowed \(0, 1\]"):
        Efficiency(compute=1.5, memory=1, link=1)


# --- files, bases, overrides ------------------------------------------------------------------


def test_base_and_override(tmp_path):
    path = write(tmp_path, "mine.yaml", """\
        base: cc-7nm-gpt3
        chiplet:
          by_area: {mac_ratio: 0.02}
        server: {packages_per_lane: 10}
        economics: {electricity_usd_per_kWh: 0.1}
        """)
    t, base = load_target(path), load_target("cc-7nm-gpt3")
    assert t.name == "mine"
    assert t.chiplet.area_mm2 == base.chiplet.area_mm2
    assert t.chiplet.peak_flops(DType.BF16) < base.chiplet.peak_flops(DType.BF16)
    assert t.server.packages_per_lane == 10 and t.server.lanes == base.server.lanes
    assert t.economics.electricity_usd_per_kWh == 0.1
    assert t.tech == base.tech


def test_override_can_switch_chiplet_form(tmp_path):
    path = write(tmp_path, "perf.yaml", """\
        base: cc-7nm-gpt3
        chiplet:
          by_performance: {tops: 10, sram_mib: 300, sram_bw_Bps: 2.5e12}
        """)
    t = load_target(path)
    assert t.chiplet.peak_flops(DType.BF16) == pytest.approx(10e12)


def test_full_file_with_inline_tech(tmp_path):
    path = write(tmp_path, "full.yaml", """\
        name: tiny
        tech: {base: 5nm, wafer_cost_usd: 15000}
        chiplet:
          by_performance: {tops: 4, sram_mib: 100, sram_bw_Bps: 1.0e+12, link_count: 4}
        server: {packages_per_lane: 4, lanes: 2, server_link_count: 1,
                 server_link_bw_Bps: 12.5e9, server_link_latency_s: 5e-6, power_cap_w: 500}
        system: {servers: 1}
        efficiency: {compute: 0.9, memory: 1.0, link: 0.9}
        """)
    t = load_target(path)
    assert t.name == "tiny" and t.tech.wafer_cost_usd == 15000 and t.tech.name == "5nm"
    assert t.chips_per_server == 8 and t.max_servers == 1
    assert t.economics.rent_usd_per_hour is None


BAD_FILES = {
    # name: (yaml text, substrings the one-line message must contain)
    "unknown_key": (
        "base: cc-7nm-gpt3\nserver: {lanez: 4}\n",
        ["bad.yaml", "server.lanez", "unknown key", "did you mean lanes"],
    ),
    "unknown_top_key": (
        "base: cc-7nm-gpt3\nchiplets: {}\n",
        ["bad.yaml", "chiplets", "unknown key", "did you mean chiplet"],
    ),
    "negative_area": (
        "base: a100-80gb-x8\nchiplet: {area_mm2: -5}\n",
        ["bad.yaml", "chiplet.area_mm2", "(-5.0)", "> 0"],
    ),
    "zero_lanes": (
        "base: cc-7nm-gpt3\nserver: {lanes: 0}\n",
        ["bad.yaml", "server.lanes", "(0)", ">= 1"],
    ),
    "zero_by_area": (
        "base: cc-7nm-gpt3\nchiplet: {by_area: {area_mm2: 0}}\n",
        ["bad.yaml", "chiplet.by_area.area_mm2", "(0.0)", "> 0"],
    ),
    "sram_missing": (
        "base: a100-80gb-x8\n"
        "chiplet: {hbm_bytes: 0, hbm_bw_Bps: 0, hbm_stacks: 0, sram_bytes: 0}\n",
        ["bad.yaml", "chiplet.sram_bytes", "SRAM-only", "(0)", "> 0"],
    ),
    "hbm_on_organic": (
        "base: a100-80gb-x8\npackage: {substrate: organic}\n",
        ["bad.yaml", "package.substrate", "interposer", "'organic'"],
    ),
    "not_a_number": (
        "base: cc-7nm-gpt3\nserver: {power_cap_w: lots}\n",
        ["bad.yaml", "server.power_cap_w", "'lots'", "number"],
    ),
    "unknown_dtype": (
        "base: a100-80gb-x8\nchiplet: {flops_per_s: {bf17: 1.0e+12}}\n",
        ["bad.yaml", "chiplet.flops_per_s.bf17", "unknown key", "bf16"],
    ),
    "bad_topology": (
        "base: cc-7nm-gpt3\nsystem: {topology: hypercube}\n",
        ["bad.yaml", "system.topology", "'hypercube'", "torus3d"],
    ),
    "negative_rent": (
        "base: a100-80gb-x8\neconomics: {rent_usd_per_hour: -1}\n",
        ["bad.yaml", "economics.rent_usd_per_hour", "(-1.0)", "> 0"],
    ),
    "two_chiplet_forms": (
        "base: cc-7nm-gpt3\nchiplet: {by_performance: {tops: 1}, power_w: 3}\n",
        ["bad.yaml", "chiplet", "exactly one form"],
    ),
    "missing_section": (
        "tech: 7nm\nchiplet: {by_area: {area_mm2: 100, mac_ratio: 0.1, ops_per_sram_read: 1}}\n",
        ["bad.yaml", "server", "missing"],
    ),
    "missing_builder_param": (
        "base: cc-7nm-gpt3\nchiplet: {by_performance: {tops: 1}}\n",
        ["bad.yaml", "chiplet.by_performance.sram_mib", "missing"],
    ),
    "unknown_base": (
        "base: cc-7nm-gtp3\n",
        ["base", "'cc-7nm-gtp3'", "did you mean cc-7nm-gpt3"],
    ),
    "unknown_tech": (
        "base: cc-7nm-gpt3\ntech: 6nm\n",
        ["tech", "'6nm'", "did you mean", "7nm"],
    ),
    "invalid_yaml": (
        "server: {lanes: [1,\n",
        ["bad.yaml", "not valid YAML", "line"],
    ),
    "top_level_list": (
        "- 1\n- 2\n",
        ["bad.yaml", "mapping", "(list)"],
    ),
    "bad_tech_field": (
        "base: cc-7nm-gpt3\ntech: {base: 7nm, defect_density_per_cm2: -0.1}\n",
        ["bad.yaml", "tech.defect_density_per_cm2", "(-0.1)", ">= 0"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_gives_one_clear_line_and_exit_2(tmp_path, cli: CliRun, case):
    text, expected = BAD_FILES[case]
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(TargetError):
        load_target(path)
    code, out, err = cli("cost", path)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("chipletc: error: ")
    for part in expected:
        assert part in err, f"{part!r} not in {err!r}"


def test_base_loop_is_reported(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    path = write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(TargetError, match="loops"):
        load_target(path)


def test_unknown_preset_lists_close_names():
    with pytest.raises(TargetError, match=r"did you mean .*h100-x8"):
        load_target("h100x8")


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(TargetError, match=r"nope\.yaml: cannot read"):
        load_target(str(tmp_path / "nope.yaml"))


def test_unknown_tech_name():
    with pytest.raises(TargetError, match=r"tech: unknown preset \('4nm'\); did you mean"):
        load_tech("4nm")

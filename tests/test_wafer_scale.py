"""Wafer-scale engines: the spared-core yield model and the WSE presets."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from chipletc.backends.cost import die_yield, region_yield, server_cost, spared_yield
from chipletc.backends.targets import load_target
from chipletc.ir.errors import TargetError
from chipletc.ir.target import PackageSpec, WaferSpec


@pytest.mark.parametrize(("area_mm2", "regions", "cores"), [(100, 10, 100), (46225, 8500, 100)])
def test_zero_spares_is_the_plain_die_yield(area_mm2, regions, cores):
    core = area_mm2 / (regions * cores)
    assert spared_yield(core, cores, 0, regions, 0.1, 10) == pytest.approx(
        die_yield(area_mm2, 0.1, 10), rel=1e-9)


def test_region_yield_is_the_binomial_cdf():
    n, s = 101, 3
    for p in (1e-4, 0.01, 0.2):
        want = sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(s + 1))
        assert float(region_yield(p, n - s, s)) == pytest.approx(want, rel=1e-12)


def test_spared_yield_matches_a_monte_carlo_of_clustered_defects():
    """Wafers draw a defect density from the Gamma of the negative binomial, then every
    core fails independently; a wafer works when no region has more failures than spares."""
    rng = np.random.default_rng(0)
    d0, alpha, core_mm2, cores, spares, regions = 0.5, 2.0, 2.0, 20, 1, 40
    wafers = 40_000
    density = rng.gamma(alpha, d0 / alpha, size=wafers)
    p = -np.expm1(-density * core_mm2 / 100)
    failed = rng.binomial(cores + spares, p[:, None], size=(wafers, regions))
    works = np.all(failed <= spares, axis=1).mean()
    model = spared_yield(core_mm2, cores, spares, regions, d0, alpha)
    sigma = math.sqrt(model * (1 - model) / wafers)
    assert 0.05 < model < 0.95
    assert abs(works - model) < 4 * sigma


def test_a_defect_costs_a_core_not_the_wafer():
    t = load_target("wse-2")
    spec = t.package.wafer
    assert spec is not None
    with_spares = server_cost(t).die.yield_
    none = server_cost(dataclasses.replace(t, package=dataclasses.replace(
        t.package, wafer=dataclasses.replace(spec, spares_per_region=0)))).die.yield_
    assert none < 1e-6 < 0.8 < with_spares < 1
    assert none == pytest.approx(die_yield(96 * t.chiplet.area_mm2, t.tech.defect_density_per_cm2,
                                           t.tech.cluster_alpha), rel=1e-6)


def test_wse_presets_hold_the_published_wafer_totals():
    for name, sram_GB, bw_PBps, cores in (("wse-2", 40, 20, 850_000), ("wse-3", 44, 21, 900_000)):
        t = load_target(name)
        assert t.chips_per_package * t.chiplet.area_mm2 == pytest.approx(46_225, rel=1e-3)
        assert t.chips_per_server * t.chiplet.sram_bytes == pytest.approx(sram_GB * 1e9, rel=1e-6)
        assert t.chips_per_server * t.chiplet.sram_bw_Bps == pytest.approx(bw_PBps * 1e15,
                                                                             rel=1e-3)
        spec = t.package.wafer
        assert spec is not None and spec.regions * spec.cores_per_region == cores
        assert server_cost(t).package.breakdown["substrate_usd"] == spec.engine_usd


def test_wafer_targets_are_checked():
    t = load_target("wse-3")
    with pytest.raises(TargetError, match="beyond the usable wafer"):
        dataclasses.replace(t, package=dataclasses.replace(t.package, chiplets_per_package=200))
    with pytest.raises(TargetError, match="wafer spec goes with substrate: wafer"):
        PackageSpec(substrate="organic", wafer=WaferSpec(10, 10, 1, 0.0))
    with pytest.raises(TargetError, match="wafer spec goes with substrate: wafer"):
        PackageSpec(substrate="wafer")

"""One definition of a run's figures: the analytical model and the simulator fill the
same ``RunMetrics`` (attribution, bottleneck, MFU), and both time ops through the same
``OpTimeModel`` seam."""

from __future__ import annotations

import dataclasses

import pytest
from builders import make_graph, make_target

from chipletc.backends.perf import ATTRIBUTION, OpTime, estimate, op_time
from chipletc.backends.sim import simulate
from chipletc.compiler.schedule import lower_schedule
from chipletc.ir.mapping import ModelMapping, even_stages

CASES = [(1, 1, 1, 1), (2, 1, 8, 8), (4, 2, 4, 4), (2, 4, 8, 2), (1, 4, 16, 4)]


def both(tp, pp, batch, micro, op_model=op_time, target=None, prompt=32, gen=16):
    g, t = make_graph(), target or make_target()
    m = ModelMapping(tp, pp, even_stages(g.num_blocks, pp), batch, micro)
    sim = simulate(lower_schedule(g, t, m, prompt, gen), t, op_model=op_model)
    return estimate(g, t, m, prompt, gen, op_model), sim


@pytest.mark.parametrize(("tp", "pp", "batch", "micro"), CASES)
def test_analytical_and_simulated_metrics_agree(tp, pp, batch, micro):
    """Where no transfer waits for a link the two runs are the same run: the same
    attribution (to a share of 0.02: the analytical decode sits at the mean context),
    bottleneck and MFU."""
    an, sim = both(tp, pp, batch, micro)
    for metrics in (an.metrics, sim.metrics):
        assert tuple(metrics.attribution) == ATTRIBUTION
        assert sum(metrics.attribution.values()) == pytest.approx(1.0, rel=1e-12)
    for part in ATTRIBUTION:
        assert an.metrics.attribution[part] == pytest.approx(sim.attribution[part], abs=0.02)
    assert an.bottleneck == sim.bottleneck
    assert an.metrics.mfu == pytest.approx(sim.mfu, rel=0.05)
    # the analytical decode runs at a whole mean context (prompt + 8 of 8.5 here)
    assert an.metrics.model_flops == pytest.approx(sim.model_flops, rel=2e-3)


def test_a_deep_pipeline_of_one_micro_batch_is_bubble_bound_in_both():
    """pp 4 with one micro-batch: each stage idles three quarters of the run."""
    an, sim = both(1, 4, 1, 1)
    assert an.bottleneck == sim.bottleneck == "bubble"
    assert an.metrics.attribution["bubble"] == pytest.approx(0.75, abs=0.02)


def slower_compute(cost, target, peak_flops) -> OpTime:
    """A stand-in for a measured-kernel model: matmuls reach a quarter of the roofline."""
    t = op_time(cost, target, peak_flops)
    return dataclasses.replace(t, compute_s=4 * t.compute_s)


def test_op_time_model_is_one_seam_for_both():
    """A compute-bound setting (prefill-heavy, slow peak): a model with 4x the compute
    time slows the analytical and the simulated run alike, and they still agree."""
    target = make_target(tops=0.05)
    base_an, base_sim = both(2, 2, 8, 4, target=target, prompt=256, gen=2)
    an, sim = both(2, 2, 8, 4, slower_compute, target=target, prompt=256, gen=2)
    assert an.prefill_s > 2 * base_an.prefill_s
    assert sim.prefill_s > 2 * base_sim.prefill_s
    assert sim.end_to_end_s == pytest.approx(an.end_to_end_s, rel=0.05)
    assert an.bottleneck == sim.bottleneck == "compute"

"""The simulator: conservation of FLOPs and collective bytes, agreement with the
analytical model where nothing contends, contention, KV growth, timeline sanity."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from builders import make_graph, make_target

from chipletc.backends.perf.analytical import estimate
from chipletc.backends.sim import simulate
from chipletc.backends.targets import load_target
from chipletc.compiler.frontends import load_model
from chipletc.compiler.schedule import lower_schedule
from chipletc.ir.mapping import ModelMapping, even_stages
from chipletc.ir.sharding import collectives_after
from chipletc.ir.workload import Workload


@pytest.fixture(scope="module")
def gpt3():
    return load_model("gpt3-175b")


def run(graph, target, tp=2, pp=2, batch=4, micro=2, prompt=16, gen=8):
    m = ModelMapping(tp, pp, even_stages(graph.num_blocks, pp), batch, micro)
    return m, simulate(lower_schedule(graph, target, m, prompt, gen), target)


def test_simulated_flops_equal_the_ir_flops_of_the_workload() -> None:
    g, batch, prompt, gen = make_graph(), 4, 16, 8
    _, r = run(g, make_target(), batch=batch, prompt=prompt, gen=gen)
    expect = g.cost(Workload.prefill(batch, prompt)).flops + sum(
        g.cost(Workload.decode(batch, prompt + i + 1)).flops for i in range(gen)
    )
    assert r.model_flops == pytest.approx(expect, rel=1e-9)


def test_executed_flops_equal_model_flops_without_tensor_parallelism() -> None:
    _, r = run(make_graph(), make_target(), tp=1)
    assert r.executed_flops == pytest.approx(r.model_flops, rel=1e-9)


def test_collective_bytes_equal_what_the_sharding_implies() -> None:
    g, batch, prompt, gen, micro = make_graph(), 4, 16, 8, 2
    _, r = run(g, make_target(), batch=batch, micro=micro, prompt=prompt, gen=gen)
    per_mb = [Workload.prefill(micro, prompt)] + [
        Workload.decode(micro, prompt + i + 1) for i in range(gen)
    ]
    expect = (batch // micro) * sum(
        c.bytes
        for wl in per_mb
        for op in g.ops
        for c in collectives_after(op, op.cost(wl, g.kv_dtype, g.act_dtype), 2)
    )
    assert r.collective_bytes == pytest.approx(expect, rel=1e-9)


@pytest.mark.parametrize(
    ("tp", "pp", "batch", "micro"),
    [(1, 1, 1, 1), (2, 1, 8, 8), (4, 2, 4, 4), (2, 4, 8, 2), (1, 4, 16, 4)],
)
def test_analytical_and_simulated_agree_without_contention(tp, pp, batch, micro) -> None:
    g, t = make_graph(), make_target()
    m, r = run(g, t, tp, pp, batch, micro, prompt=32, gen=16)
    e = estimate(g, t, m, 32, 16)
    assert r.prefill_s == pytest.approx(e.prefill_s, rel=0.05)
    assert r.decode_s_per_token == pytest.approx(e.decode_s_per_token, rel=0.05)
    assert r.end_to_end_s == pytest.approx(e.end_to_end_s, rel=0.05)


@pytest.mark.parametrize(("name", "tp"), [("a100-80gb-x8", 8), ("tpu-v4", 16)])
def test_analytical_and_simulated_agree_on_gpt3(gpt3, name, tp) -> None:
    t = load_target(name)
    m, r = run(gpt3, t, tp=tp, pp=1, batch=8, micro=8, prompt=512, gen=32)
    e = estimate(gpt3, t, m, 512, 32)
    assert r.end_to_end_s == pytest.approx(e.end_to_end_s, rel=0.05)
    assert r.prefill_s == pytest.approx(e.prefill_s, rel=0.05)


def test_transfers_sharing_a_link_queue() -> None:
    """Slow links: micro-batches crossing the same boundary are serialised on it."""
    g = make_graph()
    t = make_target()
    slow = dataclasses.replace(t, efficiency=dataclasses.replace(t.efficiency, link=1e-4))
    m, r = run(g, slow, tp=1, pp=2, batch=4, micro=1, prompt=64, gen=1)
    hop = [rec for rec in r.timeline() if rec.category == "send" and rec.step < 0]
    assert len(hop) == 4
    for a, b in itertools.pairwise(hop):
        assert b.start_s >= a.end_s  # one at a time
    e = estimate(g, slow, m, 64, 1)
    assert r.prefill_s > 1.5 * e.prefill_s  # the analytical model does not queue
    assert r.bottleneck == "bubble" or r.attribution["links"] > 0.3


def test_decode_steps_slow_down_as_the_kv_cache_grows() -> None:
    g = make_graph(d=256, heads=8)
    _, r = run(g, make_target(sram_mb=64), tp=1, pp=1, batch=8, micro=8, prompt=512, gen=16)
    steps = r.decode_step_s
    assert all(b > a for a, b in itertools.pairwise(steps))


def test_timeline_has_one_pass_per_stage_micro_batch_and_step_without_overlap() -> None:
    g = make_graph()
    _, r = run(g, make_target(), tp=2, pp=4, batch=8, micro=2, gen=8)
    passes = [rec for rec in r.timeline() if rec.category != "send"]
    assert len(passes) == 4 * 4 * (8 + 1)
    assert len({rec.resource for rec in passes}) == 4  # one representative per stage
    for chip in {rec.resource for rec in passes}:
        mine = sorted((rec.start_s, rec.end_s) for rec in passes if rec.resource == chip)
        assert all(b[0] >= a[1] - 1e-15 for a, b in itertools.pairwise(mine))


def test_attribution_sums_to_one_and_a_deep_pipeline_of_one_micro_batch_idles() -> None:
    _, r = run(make_graph(layers=8), make_target(), tp=1, pp=8, batch=1, micro=1)
    assert sum(r.attribution.values()) == pytest.approx(1.0)
    assert r.bottleneck == "bubble"
    assert 0 < r.mfu < 1


def test_replays_are_deterministic() -> None:
    g, t = make_graph(), make_target()
    _, a = run(g, t, pp=4, micro=1)
    _, b = run(g, t, pp=4, micro=1)
    assert a == b


def test_hbm_target_streams_weights_from_hbm(gpt3) -> None:
    t = load_target("a100-80gb-x8")
    _, r = run(gpt3, t, tp=8, pp=1, batch=1, micro=1, prompt=128, gen=8)
    floor = gpt3.weight_bytes / 8 / (t.chiplet.hbm_bw_Bps * t.efficiency.memory)
    assert floor < r.decode_s_per_token < 3 * floor

"""Lowering a mapping to per-stage schedules: every op once, collectives where the
sharding puts them, sends and receives between stages, one-line errors for bad input."""

from __future__ import annotations

import itertools

import pytest
from builders import make_graph, make_target

from chipletc.compiler.schedule import lower_schedule
from chipletc.ir.errors import InfeasibleError, UsageError
from chipletc.ir.mapping import ModelMapping, even_stages
from chipletc.ir.op import Shard
from chipletc.ir.schedule import ScheduleKind


def mapping(tp: int = 2, pp: int = 2, batch: int = 4, micro: int = 2, layers: int = 4):
    return ModelMapping(tp, pp, even_stages(layers, pp), batch, micro)


def test_every_op_appears_once_on_its_stage() -> None:
    g, t = make_graph(), make_target()
    sch = lower_schedule(g, t, mapping(), prompt_len=16, gen_len=4)
    for phase in ("prefill", "decode"):
        names = [
            op.name
            for st in sch.stages
            for op in getattr(st, phase)
            if op.kind is ScheduleKind.COMPUTE
        ]
        assert names == [op.name for op in g.ops]
    for st in sch.stages:
        first, last = st.blocks
        blocks = {op.block for op in st.decode if op.block is not None}
        assert blocks == set(range(first, last + 1))


def test_collectives_follow_row_parallel_matmuls_and_the_vocab_head() -> None:
    g = make_graph()
    sch = lower_schedule(g, make_target(), mapping(pp=1), prompt_len=16, gen_len=4)
    prog = sch.stages[0].decode
    for before, op in itertools.pairwise(prog):
        shard = g.op(before.name).shard if before.name in g else None
        if shard is Shard.ROW:
            assert op.kind is ScheduleKind.COLLECTIVE and op.collective == "all_reduce"
        if before.name == "head":
            assert op.collective == "all_gather"


def test_collective_bytes_are_what_the_sharding_implies() -> None:
    d, layers, vocab, batch, prompt = 64, 4, 100, 2, 16
    g = make_graph(layers=layers, d=d, vocab=vocab)
    sch = lower_schedule(g, make_target(), mapping(pp=1, batch=batch, micro=batch), prompt, 4)
    prefill = sum(op.link_bytes for op in sch.stages[0].prefill if op.collective)
    # two all-reduces of the residual stream per block and one of the vocabulary-parallel
    # embedding's partial lookups, logits of the last positions
    assert prefill == (2 * layers + 1) * batch * prompt * d * 2 + batch * vocab * 2


def test_tp1_has_no_collectives_and_stages_exchange_activations() -> None:
    g = make_graph()
    sch = lower_schedule(g, make_target(), mapping(tp=1, pp=4), prompt_len=16, gen_len=4)
    assert not any(op.collective for st in sch.stages for op in st.decode)
    for s in range(3):
        send, recv = sch.stages[s].decode[-1], sch.stages[s + 1].decode[0]
        assert send.kind is ScheduleKind.SEND and recv.kind is ScheduleKind.RECV
        assert send.link_bytes == recv.link_bytes == 2 * 64 * 2  # micro-batch x d x bf16
        assert send.peer_stage == s + 1 and recv.peer_stage == s


def test_decode_ops_carry_their_slope_per_position_of_context() -> None:
    g, t = make_graph(), make_target()
    base = lower_schedule(g, t, mapping(), prompt_len=16, gen_len=1)  # context 17
    later = lower_schedule(g, t, mapping(), prompt_len=16, gen_len=9)  # context 21
    for a, b in zip(base.stages[0].decode, later.stages[0].decode, strict=True):
        shifted = a.shifted(later.decode_context - base.decode_context)
        assert shifted.flops == pytest.approx(b.flops)
        assert shifted.kv_bytes == pytest.approx(b.kv_bytes)
        assert shifted.act_bytes == pytest.approx(b.act_bytes)


def test_tp_that_does_not_divide_heads_raises() -> None:
    with pytest.raises(UsageError, match="does not divide the 4 attention heads"):
        lower_schedule(make_graph(), make_target(), mapping(tp=3), 16, 4)


def test_more_stages_than_layers_raises() -> None:
    bad = ModelMapping(1, 5, tuple((i, i) for i in range(5)), 1, 1)
    with pytest.raises(UsageError, match="5 stages for 4 layers"):
        lower_schedule(make_graph(), make_target(), bad, 16, 4)


def test_batch_that_does_not_fit_names_the_excess() -> None:
    with pytest.raises(InfeasibleError, match=r"over the .* GB of .* by"):
        lower_schedule(make_graph(), make_target(sram_mb=1), mapping(batch=4096), 1024, 1024)

"""Compile's analytical figures for a solved mapping, from memoized stage times.

``figures`` gives what ``compile`` reports (``backends.perf.analytical.estimate``) for
the mapping ``best``, from the ``ProblemBuilder``'s memoized stage times and
``analytical``'s pipeline and hop functions, so thousands of designs do not re-time
their ops.
"""

from __future__ import annotations

from dataclasses import dataclass

from chipletc.backends.perf.analytical import pipeline_times
from chipletc.backends.perf.collectives import transfer_time_s
from chipletc.compiler.partition.evaluate import Evaluation
from chipletc.compiler.partition.problem import PartitionProblem, ProblemBuilder
from chipletc.ir.layout import stage_transfer_bytes, stage_transfer_level
from chipletc.ir.target import Target

__all__ = ["Figures", "figures"]


@dataclass(frozen=True)
class Figures:
    """What ``compile`` reports for a mapping: analytical times, then the cost."""

    prefill_s: float
    decode_s_per_token: float
    end_to_end_s: float
    tokens_per_s: float


def figures(
    builder: ProblemBuilder, target: Target, p: PartitionProblem, best: Evaluation
) -> Figures:
    """``estimate``'s figures for the mapping ``best``, from the memoized stage times."""
    opts = builder.opts
    tp, m = p.tps[best.ti], p.micro_batches[best.mi]
    batch = p.batches[best.bi]
    row = builder.row(target, tp, m, p.kv_layouts[best.ti])
    first = 0
    stage_d, stage_p = [], []
    for s, n in enumerate(best.counts):
        kinds = builder.kind_of_block[first : first + n]
        first += n
        dec = sum(row.block_decode[k] for k in kinds)
        pre = sum(row.block_prefill[k] for k in kinds)
        if s == 0:
            dec, pre = row.pre_decode + dec, row.pre_prefill + pre
        if s == best.pp - 1:
            dec, pre = dec + row.post_decode, pre + row.post_prefill
        stage_d.append(dec)
        stage_p.append(pre)
    levels = [stage_transfer_level(target, tp, s) for s in range(best.pp - 1)]
    bytes_p = stage_transfer_bytes(builder.graph, m * opts.prompt_len)
    bytes_d = stage_transfer_bytes(builder.graph, m)
    hop_p = [transfer_time_s(bytes_p, lv, target, tp) for lv in levels]
    hop_d = [transfer_time_s(bytes_d, lv, target, tp) for lv in levels]
    k = batch // m
    prefill_s, _ = pipeline_times(stage_p, hop_p, k)
    _, step_s = pipeline_times(stage_d, hop_d, k)
    end_to_end = prefill_s + opts.gen_len * step_s
    return Figures(prefill_s, step_s, end_to_end, batch * opts.gen_len / end_to_end)

"""Published measurements the simulator is checked against, and the check itself.

The calibration sets live here once: ``tests/test_accuracy.py`` asserts each set's mean
absolute percentage error (MAPE) against the set's stated tolerance, and
tools/write_accuracy.py (``make accuracy``) writes docs/accuracy.md and the README's
accuracy table from the same runs (``render`` and ``splice`` here), so the published
numbers cannot drift from the code (a test compares them). This module writes nothing.

A case names a model, a preset target, a one-stage tensor-parallel mapping, a static
batch, prompt and output lengths, storage and compute dtypes, the measured figure
and what it measures: ``end_to_end`` (prefill and every output token), ``prefill``
(time to first token), ``decode`` (all ``gen_len`` decode steps after the prefill) or
``per_token`` (their mean).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from chipletc.backends.sim.simulator import SimResult, simulate
from chipletc.backends.targets import load_target
from chipletc.compiler.cache import load_cached
from chipletc.compiler.schedule import lower_schedule
from chipletc.ir.dtypes import DType
from chipletc.ir.graph import Graph
from chipletc.ir.mapping import ModelMapping, even_stages

__all__ = ["SETS", "CalibrationSet", "Case", "Result", "mape", "render", "run_set", "splice",
           "worst"]

BF16, FP16, FP8 = DType.BF16, DType.FP16, DType.FP8
METRICS = ("end_to_end", "prefill", "decode", "per_token")


@dataclass(frozen=True)
class Case:
    label: str
    model: str
    target: str
    tp: int
    batch: int
    prompt_len: int
    gen_len: int
    metric: str
    measured_ms: float
    weights: DType = BF16
    kv: DType = BF16
    compute: DType = BF16
    pad_heads: bool = False


@dataclass(frozen=True)
class CalibrationSet:
    key: str
    title: str
    source: str
    fitted: str  # what the set calibrates, or that it is a check only
    tolerance: float  # MAPE the tests allow (about 1.5x the achieved MAPE)
    worst: float  # the largest single error they allow (about 1.5x the achieved one)
    cases: tuple[Case, ...]


@dataclass(frozen=True)
class Result:
    case: Case
    predicted_ms: float

    @property
    def error(self) -> float:
        return (self.predicted_ms - self.case.measured_ms) / self.case.measured_ms


def _ft(batch: int, prompt: int, gen: int, ms: float) -> Case:
    return Case(f"batch {batch}, {prompt}/{gen}", "gpt3-175b", "a100-80gb-x8", 8, batch,
                prompt, gen, "end_to_end", ms, weights=FP16)


def _palm(batch: int, prefill_ms: float, generate_ms: float) -> tuple[Case, Case]:
    kw = {"model": "palm-540b", "target": "tpu-v4", "tp": 64, "batch": batch,
          "prompt_len": 20, "gen_len": 8, "pad_heads": True}
    return (Case(f"batch {batch} prefill", metric="prefill", measured_ms=prefill_ms, **kw),
            Case(f"batch {batch} generate", metric="decode", measured_ms=generate_ms, **kw))


SETS = (
    CalibrationSet(
        key="fastertransformer-gpt3",
        title="GPT-3 175B, FasterTransformer, 8 x A100-80GB, TP 8, FP16 (end-to-end ms)",
        source="NVIDIA FasterTransformer docs, gpt_guide.md, GPT-3 175B table",
        fitted="a100-80gb-x8 efficiencies",
        tolerance=0.08,
        worst=0.17,
        cases=tuple(_ft(*row) for row in (
            (1, 128, 8, 488.86), (2, 128, 8, 509.47), (4, 128, 8, 629.64),
            (8, 128, 8, 749.86), (16, 128, 8, 1037.47), (32, 128, 8, 1547.44),
            (1, 512, 32, 1719.96), (2, 512, 32, 1830.56), (4, 512, 32, 2092.56),
            (8, 512, 32, 2629.97), (16, 512, 32, 3706.23),
        )),
    ),
    CalibrationSet(
        key="palm-tpu-v4",
        title="PaLM 540B, 64 x TPU v4, 20 input / 8 output tokens (ms)",
        source="Pope et al., Efficiently Scaling Transformer Inference, arXiv 2211.05102, "
        "appendix",
        fitted="tpu-v4 efficiencies",
        tolerance=0.045,
        worst=0.19,
        cases=tuple(c for row in (
            (4, 34, 255), (8, 40, 226), (16, 58, 234), (32, 99, 235), (64, 186, 265),
            (128, 356, 312), (256, 668, 415), (512, 1366, 671), (1024, 2785, 1256),
        ) for c in _palm(*row)),
    ),    CalibrationSet(
        key="hopper",
        title="Llama 3 and Mixtral on H100 and H200 (vLLM, NVIDIA NIM; ms)",
        source="vLLM nightly latency tests (buildkite vllm/performance-benchmark, build "
        "9515: H200, bf16, batch 8, 32 in / 128 out); NVIDIA NIM for LLMs benchmarking "
        "docs (Llama-3.3-70B-Instruct NIM 1.8.0, 2 x H100, fp8, TP 2, concurrency 1)",
        fitted="h100-x8 and h200-x8 efficiencies (one GH100 die, one fit)",
        tolerance=0.07,
        worst=0.13,
        cases=(
            Case("vLLM Llama-3.1 8B", "llama3-8b", "h200-x8", 1, 8, 32, 127, "end_to_end",
                 833.42),
            Case("vLLM Llama-3 70B", "llama3-70b", "h200-x8", 4, 8, 32, 127, "end_to_end",
                 2077.53),
            Case("vLLM Mixtral 8x7B", "mixtral-8x7b", "h200-x8", 2, 8, 32, 127, "end_to_end",
                 1917.44),
            Case("NIM 5000/500 TTFT", "llama3-70b", "h100-x8", 2, 1, 5000, 500, "prefill",
                 406.77, weights=FP8, kv=FP8, compute=FP8),
            Case("NIM 5000/500 ITL", "llama3-70b", "h100-x8", 2, 1, 5000, 500, "per_token",
                 18.58, weights=FP8, kv=FP8, compute=FP8),
            Case("NIM 500/2000 TTFT", "llama3-70b", "h100-x8", 2, 1, 500, 2000, "prefill",
                 47.77, weights=FP8, kv=FP8, compute=FP8),
            Case("NIM 500/2000 ITL", "llama3-70b", "h100-x8", 2, 1, 500, 2000, "per_token",
                 18.91, weights=FP8, kv=FP8, compute=FP8),
        ),
    ),
)


@cache
def _graph(model: str, weights: DType, kv: DType, compute: DType) -> Graph:
    from chipletc.compiler.frontends import apply_storage

    return apply_storage(load_cached(model), weights, kv, compute_dtype=compute)


@cache
def _simulate(case: Case) -> SimResult:
    graph = _graph(case.model, case.weights, case.kv, case.compute)
    target = load_target(case.target)
    mapping = ModelMapping(case.tp, 1, even_stages(graph.num_blocks, 1), case.batch,
                           case.batch, pad_heads=case.pad_heads)
    schedule = lower_schedule(graph, target, mapping, case.prompt_len, case.gen_len)
    return simulate(schedule, target)


def _key(case: Case) -> Case:
    """Cases that differ only in what they measure share one simulation."""
    return Case("", case.model, case.target, case.tp, case.batch, case.prompt_len,
                case.gen_len, "", 0.0, case.weights, case.kv, case.compute, case.pad_heads)


def predict_ms(case: Case) -> float:
    r = _simulate(_key(case))
    seconds = {
        "end_to_end": r.end_to_end_s,
        "prefill": r.prefill_s,
        "decode": r.decode_s,
        "per_token": r.decode_s_per_token,
    }[case.metric]
    return seconds * 1e3


def run_set(cset: CalibrationSet) -> list[Result]:
    return [Result(c, predict_ms(c)) for c in cset.cases]


def mape(results: Iterable[Result]) -> float:
    errs = [abs(r.error) for r in results]
    return sum(errs) / len(errs)


def worst(results: Iterable[Result]) -> float:
    return max(abs(r.error) for r in results)


def _table(results: Sequence[Result]) -> list[str]:
    lines = ["| case | model | target | tp | batch | in/out | measured ms | simulated ms | error |",
             "|---|---|---|---:|---:|---|---:|---:|---:|"]
    for r in results:
        c = r.case
        lines.append(
            f"| {c.label} | {c.model} | {c.target} | {c.tp} | {c.batch} | "
            f"{c.prompt_len}/{c.gen_len} | {c.measured_ms:.1f} | {r.predicted_ms:.1f} | "
            f"{r.error:+.1%} |"
        )
    return lines


def render(results: dict[str, list[Result]]) -> tuple[str, str]:
    """(docs/accuracy.md body, the README's summary table) for ``results`` by set key."""
    summary = ["| set | source | points | MAPE | worst | tolerance (MAPE, worst) |",
               "|---|---|---:|---:|---:|---:|"]
    detail: list[str] = []
    for cset in SETS:
        res = results[cset.key]
        summary.append(f"| {cset.title} | {cset.source} | {len(res)} | {mape(res):.1%} | "
                       f"{worst(res):.1%} | {cset.tolerance:.1%}, {cset.worst:.0%} |")
        detail += ["", f"## {cset.title}", "", f"Source: {cset.source}. Calibrates: "
                   f"{cset.fitted}. MAPE {mape(res):.1%} over {len(res)} points, worst "
                   f"{worst(res):.1%} (the tests allow {cset.tolerance:.1%} and "
                   f"{cset.worst:.0%}).", "", *_table(res)]
    return "\n".join(detail), "\n".join(summary)


BEGIN, END = "<!-- accuracy:begin -->", "<!-- accuracy:end -->"


def splice(text: str, block: str) -> str:
    """``text`` with the part between the accuracy markers replaced by ``block``."""
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"


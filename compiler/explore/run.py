"""The exploration driver: screen every design, map each survivor for each model.

Phase 1 (here, in the calling process, cheap): build each design's target and drop
those that break a constraint, counting which (``space.screen``). Phase 2 (in chunks,
on 1..N processes or a Ray cluster): cost each survivor once, skip models it cannot
hold at any batch (the SRAM of all its servers is below the weights), and give the
others their optimal mapping (``ProblemBuilder`` + ``solve_optimal``, the optimum
``chipletc compile --solver exhaustive`` finds), with ``compile``'s figures and cost.

Chunks are fixed runs of consecutive survivors, independent of the worker count, and
results are merged in chunk order, so every executor gives the same points. With a
journal, each finished chunk is appended (one JSON line, flushed) under a key that
hashes the models, options and space; a rerun skips the chunks already there.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chipletc.backends.cost import (
    average_server_power_w,
    cost_per_1k_tokens,
    cost_rate_usd_per_s,
    server_cost,
)
from chipletc.backends.perf import estimate
from chipletc.compiler.partition import SearchOptions, mapping_of
from chipletc.compiler.partition.diagnose import BOUNDS, HEADS, binding_reason
from chipletc.compiler.partition.problem import ProblemBuilder
from chipletc.ir.dtypes import DType
from chipletc.ir.errors import InfeasibleError, UsageError
from chipletc.ir.graph import Graph
from chipletc.ir.target import Target
from chipletc.ir.tech import MIB, PowerBasis

from .solve import solve_optimal
from .space import CONSTRAINTS, Space, screen
from .tables import figures

__all__ = ["CAPACITY", "EXECUTORS", "NO_MAPPING", "STATUS_MEANING", "ExploreOptions",
           "ExploreResult", "explore", "map_model"]

EXECUTORS = ("local", "ray")
CAPACITY = "capacity"
"""Status of a design whose servers together hold less than the model's weights."""
NO_MAPPING = "no mapping"
"""Status of a design that holds the weights but on which no mapping fits or meets the bounds."""
STATUS_MEANING = {
    CAPACITY: "even max_servers servers together hold less memory than the weights",
    NO_MAPPING: "they hold the weights, but no tp x pp x batch fits each chiplet's memory "
    "(weights, KV, workspace) within the bounds",
}
"""What each per-model status other than "ok" means, for people."""
JOURNAL_VERSION = 2  # 2: no-mapping points carry their binding reason

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ExploreOptions:
    search: SearchOptions = field(default_factory=SearchOptions)
    workers: int = 1
    executor: str = "local"
    chunk_size: int = 32  # designs per task; part of the journal key
    stop_after: int | None = None  # evaluate at most this many designs, then stop

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise UsageError(f"--executor: unknown executor {self.executor!r}; use "
                             + " or ".join(EXECUTORS))
        if self.workers < 1:
            raise UsageError(f"--workers: must be at least 1 ({self.workers})")
        if self.chunk_size < 1:
            raise UsageError(f"chunk_size: must be at least 1 ({self.chunk_size})")


@dataclass(frozen=True)
class ExploreResult:
    """Every evaluated (model, design) point, and what the constraints removed.

    ``points`` are flat dicts (CSV columns), sorted by design then model order.
    ``removed`` counts designs per broken constraint; ``complete`` is False when
    ``stop_after`` cut the run short (resume it with the same journal).
    """

    space: Space
    models: tuple[str, ...]
    options: SearchOptions
    points: tuple[dict[str, Any], ...]
    removed: dict[str, int]
    designs: int
    survivors: int
    evaluated_now: int
    complete: bool


class _Evaluator:
    """One process's state: the models' problem builders and the chiplet cache."""

    def __init__(self, space: Space, graphs: Sequence[Graph], options: SearchOptions) -> None:
        self.space = space
        self.graphs = tuple(graphs)
        self.builders = [ProblemBuilder(g, options) for g in graphs]
        self.chiplets: dict = {}

    def chunk(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for index in indices:
            out.extend(self.design(index))
        return out

    def design(self, index: int) -> list[dict[str, Any]]:
        space = self.space
        design = space.design(index)
        target, reason = screen(space, design, self.chiplets)
        assert target is not None, (index, reason)  # survivors were screened before
        chip = target.chiplet
        sc = server_cost(target)
        # $ per server-hour at TDP (a power basis other than tdp changes it per mapping)
        rate = cost_rate_usd_per_s(target, sc.power_w)
        common: dict[str, Any] = {"design": index, **space.as_dict(design)}
        common.update(
            die_mm2=chip.area_mm2,
            sram_mib=chip.sram_bytes / MIB,
            tops=chip.peak_flops(DType.BF16) / 1e12,
            sram_bw_GBps=chip.sram_bw_Bps / 1e9,
            chip_w=chip.power_w,
            chips_per_server=target.chips_per_server,
            server_cost_usd=sc.cost_usd,
            server_power_w=sc.power_w,
            usd_per_server_hour=rate * 3600,
        )
        points = []
        for graph, builder in zip(self.graphs, self.builders, strict=True):
            point = {"model": graph.info.name, **common}
            point.update(map_model(graph, builder, target))
            points.append(point)
        return points


def map_model(
    graph: Graph, builder: ProblemBuilder, target: Target, with_average: bool = False
) -> dict[str, Any]:
    """The optimal mapping of ``graph`` on ``target`` and compile's figures for it, flat.

    ``status`` is "ok", ``CAPACITY`` (all servers together hold less than the weights:
    pruned before any solver) or ``NO_MAPPING`` with its ``reason``, the binding
    constraint (``chipletc.compiler.partition.diagnose.REASONS``). The run's average
    server power (one more analytical estimate of the mapping) is computed when the
    target's power basis needs it or ``with_average`` asks, and then given as
    ``average_power_w``.
    """
    capacity = target.memory_capacity_bytes * target.chips_per_server * target.max_servers
    if target.weights_resident and capacity < builder.weight_bytes:
        return {"status": CAPACITY}
    try:
        problem = builder.build(target)
    except InfeasibleError:
        return {"status": NO_MAPPING, "reason": HEADS}
    except UsageError:
        return {"status": NO_MAPPING, "reason": BOUNDS}  # a pin the target cannot take
    best = solve_optimal(problem)
    if best is None:
        return {"status": NO_MAPPING, "reason": binding_reason(problem)}
    fig = figures(builder, target, problem, best)
    econ = target.economics
    average_w = None
    if with_average or (econ.power_basis is not PowerBasis.TDP and not econ.rented):
        opts = builder.opts
        perf = estimate(graph, target, mapping_of(problem, best), opts.prompt_len, opts.gen_len)
        average_w = average_server_power_w(target, perf.metrics)
    cost = cost_per_1k_tokens(target, best.servers, fig.tokens_per_s, average_w)
    tp = problem.tps[best.ti]
    extra = {} if average_w is None else {
        "average_power_w": average_w,
        "average_J_per_1k_tokens": cost.average_energy_per_1k_tokens_J,
    }
    return {
        "status": "ok",
        "tp": tp,
        "pp": best.pp,
        "batch": problem.batches[best.bi],
        "micro_batch": problem.micro_batches[best.mi],
        "servers": best.servers,
        "chiplets": tp * best.pp,
        "prefill_s": fig.prefill_s,
        "decode_s_per_token": fig.decode_s_per_token,
        "tokens_per_s": fig.tokens_per_s,
        "usd_per_1k_tokens": cost.tco_per_1k_tokens_usd,
        "J_per_1k_tokens": cost.energy_per_1k_tokens_J,
        **extra,
    }


# One evaluator per worker process (set by the pool's initializer or on a Ray worker's
# first task); keyed by the run so a reused Ray worker never mixes two runs.
_EVALUATORS: dict[str, _Evaluator] = {}


def _init_worker(key: str, space: Space, graphs: Sequence[Graph], opts: SearchOptions) -> None:
    _EVALUATORS.clear()
    _EVALUATORS[key] = _Evaluator(space, graphs, opts)


def _run_chunk(key: str, indices: Sequence[int]) -> list[dict[str, Any]]:
    return _EVALUATORS[key].chunk(indices)


def _ray_chunk(key: str, payload: tuple, indices: Sequence[int]) -> list[dict[str, Any]]:
    if key not in _EVALUATORS:
        _init_worker(key, *payload)
    return _run_chunk(key, indices)


def run_key(models: Sequence[str], space: Space, options: ExploreOptions) -> str:
    """What a journal line must match to be reused: models, search options, space, chunks."""
    text = json.dumps(
        {
            "version": JOURNAL_VERSION,
            "models": list(models),
            "search": {k: str(v) for k, v in asdict(options.search).items()},
            "space": repr(space),
            "chunk_size": options.chunk_size,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_journal(path: Path, key: str) -> dict[int, list[dict[str, Any]]]:
    done: dict[int, list[dict[str, Any]]] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the interrupt
        if isinstance(entry, dict) and entry.get("key") == key:
            done[int(entry["chunk"])] = entry["points"]
    return done


def explore(
    graphs: Sequence[Graph],
    space: Space,
    options: ExploreOptions | None = None,
    journal: Path | None = None,
    progress: Progress | None = None,
) -> ExploreResult:
    """Map every model onto every design of ``space`` that meets its constraints."""
    options = options or ExploreOptions()
    models = tuple(g.info.name for g in graphs)
    for g in graphs:
        g.check_context(options.search.prompt_len, "--prompt-len")
        ProblemBuilder(g, options.search)  # bad options fail here, once, not per design
    removed: Counter[str] = Counter()
    survivors: list[int] = []
    chiplets: dict = {}
    for design in space.designs():
        target, reason = screen(space, design, chiplets)
        if target is None:
            removed[reason] += 1
        else:
            survivors.append(design.index)
    if not survivors:
        raise InfeasibleError(_nothing_survives(space, removed))
    size = options.chunk_size
    chunks = [survivors[i:i + size] for i in range(0, len(survivors), size)]
    key = run_key(models, space, options)
    done = _read_journal(journal, key) if journal is not None else {}
    todo = [c for c in range(len(chunks)) if c not in done]
    if options.stop_after is not None:
        budget, kept = options.stop_after, []
        for c in todo:
            if budget < len(chunks[c]) and kept:
                break  # whole chunks only, but at least one, so every run makes progress
            kept.append(c)
            budget -= len(chunks[c])
        todo = kept
    total = len(survivors)
    finished = sum(len(chunks[c]) for c in done if c < len(chunks))
    if progress is not None:
        progress(finished, total)
    sink = journal.open("a", encoding="utf-8") if journal is not None else None
    evaluated = 0
    try:
        for c, points in _execute(options, key, space, graphs, [(c, chunks[c]) for c in todo]):
            done[c] = points
            evaluated += len(chunks[c])
            finished += len(chunks[c])
            if sink is not None:
                sink.write(json.dumps({"key": key, "chunk": c, "points": points}) + "\n")
                sink.flush()
            if progress is not None:
                progress(finished, total)
    finally:
        if sink is not None:
            sink.close()
    complete = all(c in done for c in range(len(chunks)))
    points = tuple(p for c in range(len(chunks)) if c in done for p in done[c])
    result = ExploreResult(space, models, options.search, points, dict(removed),
                           space.size, len(survivors), evaluated, complete)
    if complete:
        for model in models:
            if not any(p["model"] == model and p["status"] == "ok" for p in points):
                raise InfeasibleError(_nothing_maps(space, model, points, removed))
    return result


def _execute(
    options: ExploreOptions,
    key: str,
    space: Space,
    graphs: Sequence[Graph],
    tasks: list[tuple[int, list[int]]],
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(chunk number, points) for every task, in completion order."""
    if not tasks:
        return
    payload = (space, tuple(graphs), options.search)
    if options.executor == "ray":
        yield from _execute_ray(options, key, payload, tasks)
        return
    if options.workers == 1:
        evaluator = _Evaluator(*payload)
        for c, indices in tasks:
            yield c, evaluator.chunk(indices)
        return
    # no more processes than tasks: a fork start method launches all of them up front
    with cf.ProcessPoolExecutor(min(options.workers, len(tasks)), initializer=_init_worker,
                                initargs=(key, *payload)) as pool:
        futures = {pool.submit(_run_chunk, key, indices): c for c, indices in tasks}
        try:
            for future in cf.as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()


def _execute_ray(
    options: ExploreOptions, key: str, payload: tuple, tasks: list[tuple[int, list[int]]]
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray: ray is not installed; pip install 'chipletc[ray]' "
                         "or use --executor local") from None
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=options.workers, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
    shared = ray.put(payload)
    remote = ray.remote(_ray_chunk)
    pending = {remote.remote(key, shared, indices): c for c, indices in tasks}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                yield pending.pop(ref), ray.get(ref)
    finally:
        for ref in pending:
            ray.cancel(ref)


def _nothing_survives(space: Space, removed: Counter[str]) -> str:
    worst, count = max(removed.items(), key=lambda kv: (kv[1], -CONSTRAINTS.index(kv[0])))
    parts = ", ".join(f"{name} {removed[name]}" for name in CONSTRAINTS if removed[name])
    return (f"space {space.name}: no feasible design: all {space.size} designs break a "
            f"constraint ({parts}); most were removed by {worst} ({count}); "
            f"relax it ({_HINTS[worst]}) or change the ranges")


def _nothing_maps(space: Space, model: str, points: Sequence[dict[str, Any]],
                  removed: Counter[str]) -> str:
    mine = Counter(p["status"] for p in points if p["model"] == model)
    counts = Counter(removed) + mine
    worst, count = max(counts.items(), key=lambda kv: kv[1])
    parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    return (f"space {space.name}: no feasible design for {model}: of {space.size} designs "
            f"none holds and maps it ({parts}); most were removed by {worst} ({count}); "
            f"{_HINTS.get(worst, 'widen the ranges')}")


_HINTS = {
    "same design": "list one stacks (layers) value, or a stacked (bonded) memory beside sram",
    "chiplet geometry": "larger dies: area_mm2 must exceed the pad ring and IO links",
    "reticle": "constraints.reticle_mm2 or smaller area_mm2",
    "power density": "constraints.max_w_per_mm2 or a lower mac_ratio",
    "lane thermal": "constraints.lane_thermal: false, or fewer packages per lane",
    "server power": "constraints.server_power_w, or fewer or cooler chips per server",
    CAPACITY: "more memory per server: larger dies, lower mac_ratio, more packages per lane "
    "or more memory stacks",
    NO_MAPPING: "relax --max-latency-ms or the pins, or allow more servers",
}

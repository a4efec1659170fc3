"""A deployment of replicas, a run of requests over it, and its capacity under an SLO.

Requests go to replicas round-robin in arrival order; replicas share nothing, so each
runs on its own. A disaggregated deployment (Splitwise, DistServe) has a pool of
prefill replicas, whose requests end at their first token, and a pool of decode
replicas, where each request arrives with its prompt's KV cache after a transfer: every
chiplet of the prefill replica sends its share of the cache to its peer over the
cluster links at once (``transfer_time_s`` with all of them as senders).

``find_capacity`` bisects the arrival rate for the highest one whose percentiles meet
the SLO, drawing the same requests (lengths and seed) at every rate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from chipletc.backends.perf.collectives import transfer_time_s
from chipletc.ir.errors import UsageError
from chipletc.ir.layout import stage_memory

from .engine import IterationLog, RequestLog, SchedulerConfig, run_replica
from .iteration import IterationModel
from .metrics import SLO, ServeMetrics, measure
from .requests import Request, WorkloadSpec

__all__ = ["Capacity", "Deployment", "ServeRun", "find_capacity", "kv_pool_tokens", "serve"]

NO_KV_TOKENS = 10**12  # a model without attention caches nothing: no limit


def kv_pool_tokens(model: IterationModel, prompt_len: int) -> int:
    """Tokens of KV cache one replica holds: on the stage with the least room, what each
    rank has left after its weights and the activation workspace of the mapping's
    micro-batch at ``prompt_len`` (``ir.layout.stage_memory``, the partitioner's
    accounting)."""
    capacity = model.target.memory_capacity_bytes
    memory = stage_memory(model.graph, model.mapping, prompt_len, 0)
    tokens = [
        (capacity - m.held_bytes(model.target.weights_resident) + m.kv_bytes) // per_token
        for m, per_token in zip(memory, model.stage_kv_bytes_per_token, strict=True)
        if per_token > 0
    ]
    return max(0, int(min(tokens))) if tokens else NO_KV_TOKENS


@dataclass(frozen=True)
class Deployment:
    model: IterationModel
    config: SchedulerConfig
    replicas: int = 1
    disaggregate: tuple[int, int] | None = None  # (prefill replicas, decode replicas)

    @property
    def num_replicas(self) -> int:
        return sum(self.disaggregate) if self.disaggregate else self.replicas

    def kv_transfer_s(self, prompt_len: int) -> float:
        """Moving one prompt's KV cache from a prefill replica to a decode replica."""
        model = self.model
        target, mapping = model.target, model.mapping
        nbytes = prompt_len * float(model.stage_kv_bytes_per_token.sum()) * mapping.tp
        cluster = target.link_levels()[-1]
        return transfer_time_s(nbytes, cluster, target, mapping.num_chiplets)


@dataclass(frozen=True)
class ServeRun:
    requests: tuple[Request, ...]
    log: RequestLog
    iterations: tuple[tuple[str, IterationLog], ...]  # (replica label, its iterations)
    metrics: ServeMetrics


def _split(requests: Sequence[Request], parts: int) -> list[list[Request]]:
    """Round-robin shares, renumbered ``0..k-1`` as ``run_replica`` wants."""
    shares: list[list[Request]] = [[] for _ in range(parts)]
    for i, r in enumerate(requests):
        share = shares[i % parts]
        share.append(replace(r, id=len(share)))
    return shares


def _merge(log: RequestLog, part: RequestLog, ids: Sequence[int]) -> None:
    for local, rid in enumerate(ids):
        log.first_token_s[rid] = part.first_token_s[local]
        log.finish_s[rid] = part.finish_s[local]
        log.preemptions[rid] += part.preemptions[local]


def serve(
    deployment: Deployment,
    requests: Sequence[Request],
    slo: SLO | None = None,
    progress: Callable[[int], None] | None = None,
) -> ServeRun:
    """Run ``requests`` (ids ``0..n-1``, sorted by arrival) through ``deployment``."""
    reqs = tuple(requests)
    log = RequestLog.empty(len(reqs))
    logs: list[tuple[str, IterationLog]] = []
    model, cfg = deployment.model, deployment.config
    if deployment.disaggregate is None:
        for k, share in enumerate(_split(reqs, deployment.replicas)):
            part, iters = run_replica(model, cfg, share, progress=progress)
            _merge(log, part, [k + i * deployment.replicas for i in range(len(share))])
            logs.append((f"replica {k}", iters))
    else:
        n_pre, n_dec = deployment.disaggregate
        # prefill pool: every request ends at its first token
        firsts = [replace(r, gen_len=1) for r in reqs]
        for k, share in enumerate(_split(firsts, n_pre)):
            part, iters = run_replica(model, cfg, share)
            _merge(log, part, [k + i * n_pre for i in range(len(share))])
            logs.append((f"prefill {k}", iters))
        handoff = sorted(
            (log.first_token_s[r.id] + deployment.kv_transfer_s(r.prompt_len), r.id)
            for r in reqs
            if r.gen_len > 1
        )
        decodes = [Request(rid, t, reqs[rid].prompt_len, reqs[rid].gen_len) for t, rid in handoff]
        for k, share in enumerate(_split(decodes, n_dec)):
            part, iters = run_replica(model, cfg, share, prefilled=True, progress=progress)
            ids = [decodes[k + i * n_dec].id for i in range(len(share))]
            for local, rid in enumerate(ids):
                log.finish_s[rid] = part.finish_s[local]
                log.preemptions[rid] += part.preemptions[local]
            logs.append((f"decode {k}", iters))
        for r in reqs:
            if r.gen_len == 1 and progress is not None:
                progress(1)
    metrics = measure(reqs, log, [it for _, it in logs], _pool_blocks(deployment), slo)
    return ServeRun(reqs, log, tuple(logs), metrics)


def _pool_blocks(d: Deployment) -> int:
    return d.config.kv_blocks * d.num_replicas


@dataclass(frozen=True)
class Capacity:
    qps: float  # the highest arrival rate found to meet the SLO (0 when none does)
    run: ServeRun  # the run at that rate (when none does: the all but idle one)
    probes: tuple[tuple[float, ServeMetrics], ...]  # every rate tried, in order
    limit: str  # "slo": the SLO binds; "throughput": the SLO holds at the saturated rate


def find_capacity(
    deployment: Deployment,
    spec: WorkloadSpec,
    slo: SLO,
    tolerance: float = 0.02,
    progress: Callable[[int], None] | None = None,
) -> Capacity:
    """The highest ``qps`` of ``spec`` whose run meets ``slo``, within ``tolerance``.

    No rate above the replica's saturated throughput (all requests at once: requests
    over the time they take) can be sustained, so the search runs below it; when even
    that rate meets the SLO, throughput, not the SLO, is the limit.
    """
    if spec.arrivals == "burst":
        raise UsageError("--find-capacity: needs poisson or gamma arrivals (a rate to vary)")
    probes: list[tuple[float, ServeMetrics]] = []
    runs: dict[float, ServeRun] = {}

    def ok(qps: float) -> bool:
        run = serve(deployment, spec.with_qps(qps).sample(), slo)
        probes.append((qps, run.metrics))
        runs[qps] = run
        if progress is not None:
            progress(1)
        return bool(run.metrics.slo_met)

    burst = [replace(r, arrival_s=0.0) for r in spec.sample()]
    saturated = len(burst) / serve(deployment, burst).metrics.span_s
    if ok(saturated):
        return Capacity(saturated, runs[saturated], tuple(probes), "throughput")
    lo, hi = 0.0, saturated
    while lo == 0.0:  # halve until a rate passes, or the replica is all but idle
        if probes[-1][1].mean_in_system <= 1.0:  # no lower rate helps
            return Capacity(0.0, runs[hi], tuple(probes), "slo")
        if ok(hi / 2):
            lo = hi / 2
        else:
            hi /= 2
    while hi - lo > tolerance * lo:
        mid = (lo + hi) / 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return Capacity(lo, runs[lo], tuple(probes), "slo")

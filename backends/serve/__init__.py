"""Serving simulation: request traces, continuous batching, SLO capacity.

``requests`` draws or reads the requests, ``iteration`` times one iteration of a
mapped replica with the analytical model's physics, ``engine`` runs the schedulers,
``deploy`` spreads requests over replicas (or prefill and decode pools) and finds the
capacity under an SLO, ``metrics`` measures a run, ``outputs`` renders it.
"""

from .deploy import Capacity, Deployment, ServeRun, find_capacity, kv_pool_tokens, serve
from .engine import POLICIES, SchedulerConfig, run_replica
from .iteration import Batch, IterationModel
from .metrics import SLO, ServeMetrics, measure, parse_slo
from .requests import Request, WorkloadSpec, load_requests, parse_workload, write_trace

__all__ = [
    "POLICIES",
    "SLO",
    "Batch",
    "Capacity",
    "Deployment",
    "IterationModel",
    "Request",
    "SchedulerConfig",
    "ServeMetrics",
    "ServeRun",
    "WorkloadSpec",
    "find_capacity",
    "kv_pool_tokens",
    "load_requests",
    "measure",
    "parse_slo",
    "parse_workload",
    "run_replica",
    "serve",
    "write_trace",
]

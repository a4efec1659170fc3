"""Requests to serve: generated from a spec string, or read from a JSONL trace.

A spec is ``ARRIVALS:key=value,...``::

    poisson:qps=4,prompt=lognormal:mean=600:sd=400,gen=uniform:50:500,n=2000,seed=0
    gamma:qps=4,cv=3,prompt=fixed:512,gen=fixed:128,n=500
    burst:prompt=fixed:1024,gen=fixed:1024,n=32        (all at t = 0)

Arrivals: ``poisson`` (exponential gaps at ``qps``), ``gamma`` (gamma gaps with mean
``1/qps`` and coefficient of variation ``cv``: bursty above 1) and ``burst`` (every
request at t = 0). Lengths: ``fixed:N``, ``uniform:LO:HI`` (inclusive), ``normal:MEAN:SD``,
``lognormal:MEAN:SD`` (the mean and standard deviation of the lengths themselves, not of
their logarithm) and ``empirical:FILE`` (one length per line, drawn uniformly);
arguments are positional or named (``lognormal:mean=600:sd=400``). Drawn lengths are
rounded and clipped to at least 1. The same spec and seed give the same
requests on every machine (numpy's PCG64).

A trace file has one JSON object per line: ``{"arrival_s": 0.25, "prompt_len": 812,
"gen_len": 95}``; lines are sorted by arrival.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from chipletc.ir.errors import UsageError

__all__ = ["Request", "WorkloadSpec", "load_requests", "parse_workload", "write_trace"]

MAX_REQUESTS = 10_000_000
MAX_LEN = 10_000_000  # tokens per prompt or generation


@dataclass(frozen=True)
class Request:
    id: int
    arrival_s: float
    prompt_len: int
    gen_len: int


@dataclass(frozen=True)
class WorkloadSpec:
    """A parsed spec; ``sample()`` draws its requests."""

    arrivals: str  # poisson | gamma | burst
    qps: float
    cv: float
    prompt: str
    gen: str
    n: int
    seed: int

    def with_qps(self, qps: float) -> WorkloadSpec:
        return replace(self, qps=qps)

    def sample(self) -> list[Request]:
        rng = np.random.Generator(np.random.PCG64(self.seed))
        prompts = _lengths(self.prompt, "prompt")(rng, self.n)
        gens = _lengths(self.gen, "gen")(rng, self.n)
        if self.arrivals == "burst":
            times = np.zeros(self.n)
        elif self.arrivals == "poisson":
            times = np.cumsum(rng.exponential(1.0 / self.qps, self.n))
        else:  # gamma: shape k = 1/cv^2, scale = mean / k
            k = 1.0 / self.cv**2
            times = np.cumsum(rng.gamma(k, 1.0 / (self.qps * k), self.n))
        return [
            Request(i, float(t), int(p), int(g))
            for i, (t, p, g) in enumerate(zip(times, prompts, gens, strict=True))
        ]

    def describe(self) -> str:
        rate = "" if self.arrivals == "burst" else f" at {self.qps:g} req/s"
        return f"{self.n} requests, {self.arrivals}{rate}, prompt {self.prompt}, gen {self.gen}"


def parse_workload(text: str) -> WorkloadSpec:
    head, _, rest = text.partition(":")
    if head not in ("poisson", "gamma", "burst"):
        raise UsageError(
            f"--workload: unknown arrivals {head!r}; use poisson:..., gamma:..., burst:... "
            "or a .jsonl trace file"
        )
    fields: dict[str, str] = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq or key not in ("qps", "cv", "prompt", "gen", "n", "seed"):
            raise UsageError(
                f"--workload: bad field {part!r}; fields are qps, cv, prompt, gen, n, seed"
            )
        fields[key] = value
    if head != "burst" and "qps" not in fields:
        raise UsageError(f"--workload: {head} arrivals need qps=RATE")
    spec = WorkloadSpec(
        arrivals=head,
        qps=_number(fields.get("qps", "1"), "qps", 1e-9, 1e9),
        cv=_number(fields.get("cv", "1"), "cv", 0.01, 100.0),
        prompt=fields.get("prompt", "fixed:512"),
        gen=fields.get("gen", "fixed:128"),
        n=int(_number(fields.get("n", "1000"), "n", 1, MAX_REQUESTS, integer=True)),
        seed=int(_number(fields.get("seed", "0"), "seed", 0, 2**63 - 1, integer=True)),
    )
    _lengths(spec.prompt, "prompt")  # validate now, not mid-run
    _lengths(spec.gen, "gen")
    return spec


def _number(text: str, name: str, lo: float, hi: float, integer: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--workload: {name}={text!r} is not a number") from None
    if not (lo <= value <= hi) or (integer and value != int(value)):
        kind = "an integer" if integer else "a number"
        raise UsageError(f"--workload: {name}={text} must be {kind} in [{lo:g}, {hi:g}]")
    return value


Sampler = Callable[[np.random.Generator, int], np.ndarray]


def _lengths(text: str, name: str) -> Sampler:
    """A sampler of ``n`` lengths for ``fixed:N``, ``uniform:A:B`` ... (module docstring)."""
    kind, _, args_text = text.partition(":")
    args = args_text.split(":") if args_text else []

    def nums(*names: str) -> list[float]:
        """The arguments, positional (``normal:600:400``) or named (``normal:mean=600:sd=400``)."""
        if len(args) != len(names):
            raise UsageError(
                f"--workload: {name}={text}: {kind} takes {':'.join(names)} after {kind}:"
            )
        out = []
        for arg, expect in zip(args, names, strict=True):
            key, eq, value = arg.rpartition("=")
            if eq and key != expect:
                raise UsageError(f"--workload: {name}={text}: expected {expect}=, not {key}=")
            out.append(_number(value, name, 0, MAX_LEN))
        return out

    def clip(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x), 1, MAX_LEN).astype(np.int64)

    if kind == "fixed":
        (v,) = nums("n")
        return lambda rng, n: clip(np.full(n, v))
    if kind == "uniform":
        lo, hi = nums("lo", "hi")
        if hi < lo:
            raise UsageError(f"--workload: {name}={text}: the upper bound is below the lower")
        return lambda rng, n: clip(rng.integers(int(lo), int(hi) + 1, n))
    if kind == "normal":
        mean, sd = nums("mean", "sd")
        return lambda rng, n: clip(rng.normal(mean, sd, n))
    if kind == "lognormal":
        mean, sd = nums("mean", "sd")
        if mean <= 0:
            raise UsageError(f"--workload: {name}={text}: lognormal needs a positive mean")
        sigma2 = math.log(1.0 + (sd / mean) ** 2)
        mu = math.log(mean) - sigma2 / 2
        return lambda rng, n: clip(rng.lognormal(mu, math.sqrt(sigma2), n))
    if kind == "empirical":
        values = _read_lengths(args_text, name)
        return lambda rng, n: values[rng.integers(0, len(values), n)]
    raise UsageError(
        f"--workload: {name}={text}: use fixed:N, uniform:A:B, normal:MEAN:SD, "
        "lognormal:MEAN:SD or empirical:FILE"
    )


def _read_lengths(path: str, name: str) -> np.ndarray:
    try:
        lines = Path(path).read_text(encoding="utf-8").split()
    except OSError as err:
        raise UsageError(f"--workload: {name}=empirical:{path}: {err.strerror}") from None
    try:
        values = np.array([int(v) for v in lines], dtype=np.int64)
    except ValueError:
        raise UsageError(
            f"--workload: {name}=empirical:{path}: expected one integer length per line"
        ) from None
    if values.size == 0 or values.min() < 1 or values.max() > MAX_LEN:
        raise UsageError(
            f"--workload: {name}=empirical:{path}: lengths must be 1..{MAX_LEN}, at least one"
        )
    return values


def load_requests(path: str) -> list[Request]:
    """Requests of a JSONL trace (module docstring), refused line by line when malformed."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"--workload {path}: {err.strerror}") from None
    out: list[Request] = []
    last = -math.inf
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"--workload {path}:{number}"
        try:
            row = json.loads(line)
            arrival = float(row["arrival_s"])
            prompt, gen = row["prompt_len"], row["gen_len"]
        except (ValueError, TypeError, KeyError) as err:
            raise UsageError(
                f'{where}: expected {{"arrival_s": s, "prompt_len": n, "gen_len": n}} '
                f"({err.__class__.__name__})"
            ) from None
        if not (math.isfinite(arrival) and arrival >= 0):
            raise UsageError(f"{where}: arrival_s must be a finite time >= 0 ({arrival})")
        for key, value in (("prompt_len", prompt), ("gen_len", gen)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LEN:
                raise UsageError(f"{where}: {key} must be an integer in 1..{MAX_LEN} ({value!r})")
        if arrival < last:
            raise UsageError(f"{where}: arrivals must not decrease ({arrival} after {last})")
        last = arrival
        out.append(Request(len(out), arrival, prompt, gen))
        if len(out) > MAX_REQUESTS:
            raise UsageError(f"--workload {path}: more than {MAX_REQUESTS} requests")
    if not out:
        raise UsageError(f"--workload {path}: no requests")
    return out


def write_trace(requests: Sequence[Request]) -> str:
    """The JSONL form ``load_requests`` reads."""
    return "".join(
        json.dumps(
            {"arrival_s": round(r.arrival_s, 6), "prompt_len": r.prompt_len, "gen_len": r.gen_len}
        )
        + "\n"
        for r in requests
    )

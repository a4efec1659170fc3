"""Two small synthetic request traces shipped with chipletc, and how they are made.

``chat.jsonl``: 500 requests of a chat service, Poisson arrivals at 4 requests/s,
prompts lognormal around 600 tokens, answers of 50 to 500 tokens. ``bursty.jsonl``:
500 requests of a summarisation service, gamma arrivals (coefficient of variation 3)
at 2 requests/s, long prompts (about 2,000 tokens) and short answers. Both are drawn
from these specs, so ``python -m chipletc.backends.serve.traces DIR`` writes them again
byte for byte (a test holds the shipped files to it). ``chipletc serve --workload
trace:chat`` reads one.
"""

from __future__ import annotations

from pathlib import Path

from chipletc.backends.serve.requests import parse_workload, write_trace

__all__ = ["SPECS", "path", "render"]

SPECS = {
    "chat": "poisson:qps=4,prompt=lognormal:mean=600:sd=400,gen=uniform:50:500,n=500,seed=0",
    "bursty": "gamma:qps=2,cv=3,prompt=normal:mean=2000:sd=600,gen=uniform:20:200,n=500,seed=1",
}


def render(name: str) -> str:
    """The JSONL text of shipped trace ``name``, drawn from its spec."""
    return write_trace(parse_workload(SPECS[name]).sample())


def path(name: str) -> Path:
    return Path(__file__).with_name(f"{name}.jsonl")

"""The serving loop: iterations of one replica under a scheduler, request by request.

Each iteration the scheduler picks the work (prompt chunks to prefill, sequences to
decode), the ``IterationModel`` says how long it takes, and every sequence in it
advances: a finished prompt emits the request's first token, a decode emits the next.
A request is done when it has emitted ``gen_len`` tokens (the first by its prefill, the
rest by ``gen_len - 1`` decode iterations), so time to first token is the wait plus
the prefill, and time per output token is the decode iterations' mean.

Schedulers (``SchedulerConfig.policy``):

* ``vllm``: prefill first (vLLM's default before chunked prefill). When requests wait
  and their prompts' KV blocks are free, an iteration prefills as many as fit the
  token budget and the batch limit; otherwise it decodes every running sequence. A
  decode that needs a new KV block when none is free preempts the most recently
  admitted sequence by recompute: its blocks are freed and it waits, at the head of
  the queue, to prefill its prompt and the tokens it had generated again.
* ``sarathi``: chunked prefill (Sarathi-Serve): every iteration decodes every running
  sequence and fills the rest of a token budget with prompt chunks of at most
  ``chunk`` tokens, first come first served; preemption as vLLM's.
* ``static``: the batch of ``simulate``: when idle, admit up to ``max_batch`` waiting
  requests, prefill them together, decode until the last one finishes, then admit
  again. KV space for every admitted request's whole context is reserved up front.

An iteration is cut into the plan's number of micro-batches (``IterationModel``
times it). Its decode tokens are emitted when their micro-batches leave the pipeline,
and the next iteration starts then; prompt chunks stay in flight until theirs leave, so
on a deep pipeline a long prompt does not hold up the decodes behind it (the next
chunk of that prompt waits for it). On one stage every micro-batch leaves together and
this is the plain iteration loop of a GPU server.

KV memory is paged in blocks of ``block_tokens`` tokens per sequence (vLLM's
PagedAttention, 16 by default). The pool is what the plan leaves: on an SRAM-only
target the SRAM each chiplet has after its weights and workspace, on a GPU the HBM.

Decode progress is counted by a clock that ticks once per iteration that decodes, so
the loop does not touch every running sequence every iteration: finishes and block
boundaries are heap events on that clock. Ties go to the earlier admission.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from chipletc.ir.errors import IRError, UsageError

from .iteration import Batch, IterationModel
from .requests import Request

__all__ = ["POLICIES", "IterationLog", "RequestLog", "SchedulerConfig", "run_replica"]

POLICIES = ("vllm", "sarathi", "static")


@dataclass(frozen=True)
class SchedulerConfig:
    policy: str
    max_batch: int  # sequences in flight
    max_tokens_per_iter: int  # new tokens one iteration may take
    chunk: int  # sarathi: the most prompt tokens of one request per iteration
    block_tokens: int  # KV page size, tokens per sequence
    kv_blocks: int  # the replica's KV pool


@dataclass
class RequestLog:
    """Per-request timings (seconds), filled by the run; ``finish_s`` is nan until done."""

    first_token_s: array
    finish_s: array
    preemptions: array

    @classmethod
    def empty(cls, n: int) -> RequestLog:
        nan = float("nan")
        return cls(array("d", [nan] * n), array("d", [nan] * n), array("q", [0] * n))


@dataclass
class IterationLog:
    """One row per iteration: when it started, how long it took, and what it held."""

    start_s: array
    duration_s: array
    prefill_tokens: array
    prefill_seqs: array
    decode_seqs: array
    kv_blocks_used: array
    in_system: array  # requests arrived and not finished, at the iteration's start

    @classmethod
    def empty(cls) -> IterationLog:
        return cls(array("d"), array("d"), *(array("q") for _ in range(5)))

    def __len__(self) -> int:
        return len(self.start_s)


class _Seq:
    """A running sequence: what its KV cache holds and where its clocks stand.

    While decoding, its cached positions and generated tokens both grow by one per
    clock tick, so they are kept as values at the tick it joined (``join``)."""

    __slots__ = (
        "blocks",
        "cached",
        "epoch",
        "generated",
        "in_flight",
        "join",
        "prompt",
        "rid",
        "todo",
    )

    def __init__(self, rid: int, prompt: int) -> None:
        self.rid = rid
        self.prompt = prompt  # tokens to prefill: the prompt, and after a preemption the
        self.todo = prompt  # generated tokens too; of those, not prefilled yet
        self.cached = 0  # positions in its KV cache (at ``join`` while decoding)
        self.generated = 0  # tokens emitted (at ``join`` while decoding)
        self.join = 0
        self.blocks = 0  # KV blocks it holds
        self.in_flight = 0  # prompt tokens in the pipeline now
        self.epoch = 0  # bumped when it stops decoding: stale heap entries are skipped


def _due(
    heap: list[tuple[Any, int, int, int]], until: float, live: dict[int, _Seq]
) -> Iterator[tuple[Any, _Seq]]:
    """Pop the entries of ``heap`` due by ``until`` whose sequence is still in ``live``
    in the same epoch (a preempted sequence's stale entries are dropped)."""
    while heap and heap[0][0] <= until:
        key, _, rid, epoch = heapq.heappop(heap)
        seq = live.get(rid)
        if seq is not None and seq.epoch == epoch:
            yield key, seq


class _Replica:
    """All state of one replica's run (vidur-style: nothing global)."""

    def __init__(
        self,
        model: IterationModel,
        config: SchedulerConfig,
        requests: Sequence[Request],
        prefilled: bool,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.model, self.cfg, self.reqs = model, config, requests
        self.num_micro = model.mapping.num_micro_batches
        self.log = RequestLog.empty(len(requests))
        self.iters = IterationLog.empty()
        self.progress = progress
        self.now = 0.0
        self.idle = True  # the pipeline is empty: the next iteration fills it
        self.next_arrival = 0
        self.waiting: deque[_Seq] = deque()
        self.prefilling: dict[int, _Seq] = {}  # admitted, prompt not all cached (sarathi)
        self.decoding: dict[int, _Seq] = {}  # in admission order
        self.free_blocks = config.kv_blocks
        self.clock = 0  # decode iterations so far
        self.sum_cached = 0  # over decoding sequences
        self.finish_heap: list[tuple[int, int, int, int]] = []  # (clock, order, rid, epoch)
        self.block_heap: list[tuple[int, int, int, int]] = []
        self.pending: list[
            tuple[float, int, int, int]
        ] = []  # chunks: (lands at, order, rid, epoch)
        self.order = 0
        self.done = 0
        self.in_system = 0
        self.reserve_all = config.policy == "static"
        self.prefilled = prefilled

    # -- KV blocks --------------------------------------------------------------------

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.cfg.block_tokens)

    def admit_blocks(self, seq: _Seq) -> int:
        """Blocks a sequence takes when admitted: its prompt, or (static) its whole context."""
        r = self.reqs[seq.rid]
        tokens = seq.prompt + (r.gen_len - seq.generated if self.reserve_all else 0)
        return self.blocks_for(tokens)

    # -- arrivals ---------------------------------------------------------------------

    def arrive_until(self, t: float) -> None:
        reqs = self.reqs
        while self.next_arrival < len(reqs) and reqs[self.next_arrival].arrival_s <= t:
            r = reqs[self.next_arrival]
            seq = _Seq(r.id, r.prompt_len)
            if self.prefilled:  # its KV cache and first token came from a prefill pool
                seq.todo, seq.cached, seq.generated = 0, r.prompt_len, 1
            self.waiting.append(seq)
            self.next_arrival += 1
            self.in_system += 1

    # -- decode bookkeeping ------------------------------------------------------------

    def start_decoding(self, seq: _Seq) -> None:
        """``seq`` has its prompt cached and its latest token emitted."""
        self.decoding[seq.rid] = seq
        self.sum_cached += seq.cached
        seq.join = self.clock
        self.order += 1
        remaining = self.reqs[seq.rid].gen_len - seq.generated
        heapq.heappush(self.finish_heap, (self.clock + remaining, self.order, seq.rid, seq.epoch))
        if not self.reserve_all:
            # the decode at tick k writes position cached + 1: a new block when
            # cached % block_tokens == 0
            k_need = self.clock + (-seq.cached) % self.cfg.block_tokens
            heapq.heappush(self.block_heap, (k_need, self.order, seq.rid, seq.epoch))

    def stop_decoding(self, seq: _Seq) -> None:
        """Take ``seq`` out of the decoding set, its counts brought up to this tick."""
        del self.decoding[seq.rid]
        ticks = self.clock - seq.join
        seq.cached += ticks
        seq.generated += ticks
        self.sum_cached -= seq.cached
        seq.epoch += 1

    def release(self, seq: _Seq) -> None:
        self.free_blocks += seq.blocks
        seq.blocks = 0

    def preempt_one(self) -> bool:
        """Preempt the latest-admitted running sequence by recompute (vLLM's policy)."""
        if self.prefilling:
            seq = self.prefilling.pop(next(reversed(self.prefilling)))
            seq.epoch += 1
            seq.in_flight = 0
        elif self.decoding:
            seq = self.decoding[next(reversed(self.decoding))]
            self.stop_decoding(seq)
            seq.prompt = self.reqs[seq.rid].prompt_len + seq.generated
        else:
            return False
        self.release(seq)
        seq.todo, seq.cached = seq.prompt, 0
        self.log.preemptions[seq.rid] += 1
        self.waiting.appendleft(seq)
        return True

    def reserve_decode_blocks(self) -> None:
        """Give every decoding sequence that crosses into a new block its block now,
        preempting the latest admitted while the pool is short."""
        heap = self.block_heap
        for _, seq in list(_due(heap, self.clock, self.decoding)):
            while self.free_blocks < 1 and seq.rid in self.decoding:
                if not self.preempt_one():
                    break
            if seq.rid not in self.decoding:
                continue  # preempted itself
            self.free_blocks -= 1
            seq.blocks += 1
            self.order += 1
            nxt = (self.clock + self.cfg.block_tokens, self.order, seq.rid, seq.epoch)
            heapq.heappush(heap, nxt)

    # -- one iteration ---------------------------------------------------------------

    def micro_batches(
        self, chunks: list[tuple[_Seq, int]], n_dec: int
    ) -> tuple[list[tuple[Batch, int]], list[int], list[int]]:
        """The iteration cut into the plan's number of micro-batches (or fewer, of one
        sequence each): prompt chunks first (a chunk cannot be spread over micro-batches),
        decodes filling the rest at their mean context; equal micro-batches counted once.
        Returns the groups, each chunk's group and the groups that hold decodes."""
        index: dict[tuple[float, ...], int] = {}
        counts: list[int] = []

        def add(key: tuple[float, ...], n: int) -> int:
            g = index.setdefault(key, len(index))
            if g == len(counts):
                counts.append(0)
            counts[g] += n
            return g

        size = -(-(len(chunks) + n_dec) // self.num_micro)  # sequences per micro-batch
        ctx = (self.sum_cached + n_dec) / n_dec if n_dec else 0.0  # mean decode context
        left = n_dec
        of_chunk: list[int] = []
        with_decodes: list[int] = []
        for i in range(0, len(chunks), size):
            part = chunks[i : i + size]
            d = min(left, size - len(part))  # decodes riding along
            left -= d
            tokens, attended, cached = float(d), d * ctx, d * ctx
            for seq, q in part:
                p = seq.prompt - seq.todo
                tokens += q
                attended += q * (p + q)
                cached += p
            g = add((tokens, attended, cached, float(len(part) + d)), 1)
            of_chunk += [g] * len(part)
            if d:
                with_decodes.append(g)
        if left:
            m = -(-left // size)
            with_decodes.append(add((left / m, ctx * left / m, ctx * left / m, left / m), m))
        groups = [(Batch(*key), counts[g]) for key, g in index.items()]
        return groups, of_chunk, with_decodes

    def run_iteration(self, chunks: list[tuple[_Seq, int]], decode: bool) -> None:
        """Start one iteration: ``chunks`` of prompts (in flight until they leave the
        pipeline) and, when ``decode``, one token for every decoding sequence (emitted
        when the iteration ends)."""
        n_dec = len(self.decoding) if decode else 0
        groups, of_chunk, with_decodes = self.micro_batches(chunks, n_dec)
        busy, leave = self.model.iteration_s(groups, self.idle)
        duration = max((leave[g] for g in with_decodes), default=busy)
        it = self.iters
        it.start_s.append(self.now)
        it.duration_s.append(duration)
        it.prefill_tokens.append(sum(q for _, q in chunks))
        it.prefill_seqs.append(len(chunks))
        it.decode_seqs.append(n_dec)
        it.kv_blocks_used.append(self.cfg.kv_blocks - self.free_blocks)
        it.in_system.append(self.in_system)
        for (seq, q), g in zip(chunks, of_chunk, strict=True):
            self.order += 1
            seq.in_flight = q
            heapq.heappush(self.pending, (self.now + leave[g], self.order, seq.rid, seq.epoch))
        self.now += duration
        self.idle = False
        if n_dec:
            self.sum_cached += n_dec
            self.clock += 1
            for _, seq in list(_due(self.finish_heap, self.clock, self.decoding)):
                self.stop_decoding(seq)
                self.release(seq)
                self.finish(seq.rid, self.now)

    def land_chunks(self) -> None:
        """Chunks that have left the pipeline by now: a finished prompt emits a token."""
        for t, seq in list(_due(self.pending, self.now, self.prefilling)):
            rid = seq.rid
            seq.todo -= seq.in_flight
            seq.in_flight = 0
            if seq.todo:
                continue
            del self.prefilling[rid]
            seq.cached = seq.prompt
            seq.generated += 1
            if math.isnan(self.log.first_token_s[rid]):
                self.log.first_token_s[rid] = t
            if seq.generated >= self.reqs[rid].gen_len:
                self.release(seq)
                self.finish(rid, t)
            else:
                self.start_decoding(seq)

    def finish(self, rid: int, t: float) -> None:
        self.log.finish_s[rid] = t
        self.done += 1
        self.in_system -= 1
        if self.progress is not None:
            self.progress(1)

    # -- the policies ----------------------------------------------------------------

    def admit(self, budget: int, limit: int) -> list[_Seq]:
        """Admit waiting sequences while the batch, the token budget and the pool allow;
        returns those with a prompt to prefill (prefilled ones start decoding at once)."""
        out: list[_Seq] = []
        while self.waiting and len(self.decoding) + len(self.prefilling) < limit:
            seq = self.waiting[0]
            need = self.admit_blocks(seq)
            if need > self.free_blocks:
                break
            if out and seq.todo > budget and self.cfg.policy == "vllm":
                break
            self.waiting.popleft()
            self.free_blocks -= need
            seq.blocks = need
            if not seq.todo:
                self.start_decoding(seq)
                continue
            self.prefilling[seq.rid] = seq
            out.append(seq)
            budget -= seq.todo
            if budget <= 0:
                break
        return out

    def step_vllm(self) -> bool:
        admitted = self.admit(self.cfg.max_tokens_per_iter, self.cfg.max_batch)
        if admitted:
            self.run_iteration([(s, s.todo) for s in admitted], decode=False)
            return True
        if self.decoding:
            self.reserve_decode_blocks()
            if self.decoding:
                self.run_iteration([], decode=True)
                return True
        return False

    def step_sarathi(self) -> bool:
        if self.decoding:
            self.reserve_decode_blocks()
        budget = self.cfg.max_tokens_per_iter - len(self.decoding)
        chunks: list[tuple[_Seq, int]] = []
        ready = [seq for seq in self.prefilling.values() if not seq.in_flight]
        if budget > 0:
            ready += self.admit(budget, self.cfg.max_batch)
        for seq in ready:
            if budget <= 0:
                break
            q = min(seq.todo, self.cfg.chunk, budget)
            chunks.append((seq, q))
            budget -= q
        if not chunks and not self.decoding:
            return False
        self.run_iteration(chunks, decode=bool(self.decoding))
        return True

    def step_static(self) -> bool:
        if self.decoding:
            self.run_iteration([], decode=True)
            return True
        if self.prefilling:
            return False  # the batch's prompts are in flight
        admitted = self.admit(10**18, self.cfg.max_batch)
        if not admitted:
            return False
        self.run_iteration([(s, s.todo) for s in admitted], decode=False)
        return True

    def run(self) -> None:
        step = {
            "vllm": self.step_vllm,
            "sarathi": self.step_sarathi,
            "static": self.step_static,
        }[self.cfg.policy]
        reqs = self.reqs
        while True:
            self.arrive_until(self.now)
            self.land_chunks()
            if self.done == len(reqs):
                return
            if step():
                continue
            # nothing to start now: wait for a chunk to land or a request to arrive
            landing = self.pending[0][0] if self.pending else math.inf
            arrival = (
                reqs[self.next_arrival].arrival_s if self.next_arrival < len(reqs) else math.inf
            )
            if landing == arrival == math.inf:
                raise IRError(f"serve: {len(reqs) - self.done} requests stuck (a scheduler bug)")
            self.now = max(self.now, min(landing, arrival))
            # the pipeline drained if nothing was in flight while we waited
            self.idle = not self.pending


def run_replica(
    model: IterationModel,
    config: SchedulerConfig,
    requests: Sequence[Request],
    prefilled: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[RequestLog, IterationLog]:
    """Serve ``requests`` (ids ``0..n-1`` in arrival order, indexing the logs) on one
    replica. ``prefilled``: every request arrives with
    its prompt cached and its first token emitted (the decode pool of a disaggregated
    deployment)."""
    if config.policy not in POLICIES:
        raise UsageError(f"--scheduler: unknown {config.policy!r}; use {', '.join(POLICIES)}")
    if prefilled and config.policy == "static":
        raise UsageError("--disaggregate: needs the vllm or sarathi scheduler")
    for r in requests:
        need = -(-(r.prompt_len + r.gen_len) // config.block_tokens)
        if need > config.kv_blocks:
            raise UsageError(
                f"serve: request {r.id} needs {r.prompt_len + r.gen_len:,} tokens of KV cache; "
                f"the replica holds {config.kv_blocks * config.block_tokens:,} "
                "(shorten it, or compile for a longer context or more chiplets)"
            )
    replica = _Replica(model, config, requests, prefilled, progress)
    replica.run()
    return replica.log, replica.iters

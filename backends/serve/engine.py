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

KV memory is paged in blocks of ``block_tokens`` tokens per sequence (vLLM's
PagedAttention; 16 on HBM targets). On an SRAM-only target the pool is the space each
chiplet has left after the plan's weights and workspace, in the same blocks.

Decode progress is counted by a clock that ticks once per iteration that decodes, so
the loop does not touch every running sequence every iteration: finishes and block
boundaries are heap events on that clock. Ties go to the earlier admission.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chipletc.ir.errors import UsageError

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

    __slots__ = ("blocks", "cached", "epoch", "generated", "join", "prompt", "rid", "todo")

    def __init__(self, rid: int, prompt: int) -> None:
        self.rid = rid
        self.prompt = prompt  # tokens to prefill: the prompt, and after a preemption the
        self.todo = prompt  # generated tokens too; of those, not prefilled yet
        self.cached = 0  # positions in its KV cache (at ``join`` while decoding)
        self.generated = 0  # tokens emitted (at ``join`` while decoding)
        self.join = 0
        self.blocks = 0  # KV blocks it holds
        self.epoch = 0  # bumped when it stops decoding: stale heap entries are skipped


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
        self.mb = model.mapping.micro_batch
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
        needing: list[_Seq] = []
        heap = self.block_heap
        while heap and heap[0][0] <= self.clock:
            _, _, rid, epoch = heapq.heappop(heap)
            seq = self.decoding.get(rid)
            if seq is not None and seq.epoch == epoch:
                needing.append(seq)
        for seq in needing:
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

    def run_iteration(self, chunks: list[tuple[_Seq, int]], decode: bool) -> None:
        """Time and apply one iteration: ``chunks`` of prompts, and a decode of every
        decoding sequence when ``decode``."""
        n_dec = len(self.decoding) if decode else 0
        tokens = n_dec + sum(q for _, q in chunks)
        attended = (self.sum_cached + n_dec) if decode else 0
        cached_read = attended
        for seq, q in chunks:
            p = seq.prompt - seq.todo
            attended += q * (p + q)
            cached_read += p
        seqs = n_dec + len(chunks)
        m = -(-seqs // self.mb)
        mb = Batch(tokens / m, attended / m, cached_read / m, seqs / m)
        duration = self.model.iteration_s(mb, m, self.idle)
        it = self.iters
        it.start_s.append(self.now)
        it.duration_s.append(duration)
        it.prefill_tokens.append(tokens - n_dec)
        it.prefill_seqs.append(len(chunks))
        it.decode_seqs.append(n_dec)
        it.kv_blocks_used.append(self.cfg.kv_blocks - self.free_blocks)
        it.in_system.append(self.in_system)
        self.now += duration
        self.idle = False
        end = self.now
        if decode and n_dec:
            self.sum_cached += n_dec
            self.clock += 1
            heap = self.finish_heap
            while heap and heap[0][0] <= self.clock:
                _, _, rid, epoch = heapq.heappop(heap)
                seq = self.decoding.get(rid)
                if seq is not None and seq.epoch == epoch:
                    self.stop_decoding(seq)
                    self.release(seq)
                    self.finish(rid, end)
        for seq, q in chunks:
            seq.todo -= q
            if seq.todo:
                continue
            self.prefilling.pop(seq.rid, None)
            seq.cached = seq.prompt
            seq.generated += 1
            if math.isnan(self.log.first_token_s[seq.rid]):
                self.log.first_token_s[seq.rid] = end
            if seq.generated >= self.reqs[seq.rid].gen_len:
                self.release(seq)
                self.finish(seq.rid, end)
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
        while self.waiting and len(self.decoding) + len(self.prefilling) + len(out) < limit:
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
        for seq in self.prefilling.values():
            if budget <= 0:
                break
            q = min(seq.todo, self.cfg.chunk, budget)
            chunks.append((seq, q))
            budget -= q
        if budget > 0:
            for seq in self.admit(budget, self.cfg.max_batch):
                self.prefilling[seq.rid] = seq
                q = min(seq.todo, self.cfg.chunk, budget)
                if q > 0:
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
        while self.done < len(reqs):
            self.arrive_until(self.now)
            if step():
                continue
            if self.next_arrival >= len(reqs):
                raise UsageError(
                    f"serve: {len(reqs) - self.done} requests cannot be admitted: the KV pool of "
                    f"{self.cfg.kv_blocks} blocks of {self.cfg.block_tokens} tokens is too small"
                )
            # idle: jump to the next arrival; the pipeline drains
            self.now = max(self.now, reqs[self.next_arrival].arrival_s)
            self.idle = True


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

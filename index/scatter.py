"""Scatter-gather over shards: all at once, one deadline, copies with failover and hedging.

A query must wait for the slowest shard, never for the sum of them: every
shard is asked at once (a thread per request; faiss, ONNX Runtime and socket
reads release the GIL), and the query has one deadline. A shard may have
several copies (replicas consuming the same partitions): its request goes to
one healthy copy, moves to another on an error, and is *hedged* (sent to a
second copy as well, first answer wins) when the first has not answered
after the shard's recent p95. A copy that fails is skipped for
``unhealthy_s``; when every copy is unhealthy they are tried anyway (a
restarted copy is found again without waiting).

A shard with no answer by the deadline is *missing*: the search goes on with
the others and says which are missing (``partial`` answers), unless the
caller is strict (:class:`ShardsUnavailableError`). The requests still running
then finish in the background; their answers are dropped.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from index.faiss_index import SearchParams
from index.partition import Hit, IndexedImage
from streams.errors import VisearchError

if TYPE_CHECKING:
    from index.search import ShardLike

log = logging.getLogger(__name__)
T = TypeVar("T")

HEDGE_MIN_S = 0.01  # never hedge sooner: a second request costs a copy's CPU
HEDGE_DEFAULT_S = 0.05  # before a shard has answered LATENCY_SAMPLES times
LATENCY_SAMPLES = 20
LATENCY_WINDOW = 200
MAX_THREADS = 64
READ_STALL_S = 0.1  # most a begun answer may pause between two reads

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def shared_pool() -> ThreadPoolExecutor:
    """The process's scatter threads, shared by every scatter: a model switch replaces
    the scatter while queries of the old one may still be retrying on it."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="scatter")
        return _pool


class ShardsUnavailableError(VisearchError, RuntimeError):
    """A strict search found shards with no answering copy before its deadline."""

    def __init__(self, missing: Sequence[int]) -> None:
        super().__init__(f"no copy of shard(s) {', '.join(map(str, missing))} answered in time")
        self.missing = list(missing)


@dataclass
class ScatterReport:
    """What one search's scatters left out: the shards without an answer, and counts."""

    missing: set[int] = field(default_factory=set)
    retries: int = 0  # requests moved to another copy after an error
    hedges: int = 0  # second requests sent after a copy was slow

    @property
    def partial(self) -> bool:
        return bool(self.missing)


class ShardCopies:
    """One shard and its copies: which copy to ask next, and how they have done."""

    def __init__(
        self,
        shard_id: int,
        copies: Sequence[ShardLike],
        unhealthy_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not copies:
            raise ValueError(f"shard {shard_id} has no copy")
        self.shard_id = shard_id
        self.copies = list(copies)
        self.unhealthy_s = unhealthy_s
        self.clock = clock
        self._unhealthy_until = [0.0] * len(self.copies)
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._next = 0
        self._lock = threading.Lock()

    def order(self) -> list[int]:
        """Copies to try, in order: healthy ones first, starting from the next in turn
        (spreading queries over the copies), then the unhealthy ones."""
        now = self.clock()
        with self._lock:
            start = self._next
            self._next = (self._next + 1) % len(self.copies)
            turn = [(start + i) % len(self.copies) for i in range(len(self.copies))]
            healthy = [i for i in turn if self._unhealthy_until[i] <= now]
            return healthy + [i for i in turn if i not in healthy]

    def answered(self, copy: int, seconds: float) -> None:
        with self._lock:
            self._unhealthy_until[copy] = 0.0
            self._latencies.append(seconds)

    def failed(self, copy: int) -> None:
        with self._lock:
            self._unhealthy_until[copy] = self.clock() + self.unhealthy_s

    def healthy(self, copy: int) -> bool:
        with self._lock:
            return self._unhealthy_until[copy] <= self.clock()

    def count(self) -> int:
        """Images in this shard, from the first copy that answers (0 if none does)."""
        return self._first_answer(len, 0)

    def indexed_image(self, image_id: str) -> IndexedImage | None:
        """What this shard holds of ``image_id``, from the first copy that answers."""
        return self._first_answer(lambda copy: copy.indexed_image(image_id), None)

    def visible_ids(self, image_ids: Sequence[str]) -> set[str]:
        """Those of ``image_ids`` this shard holds visible, from the first copy that
        answers; none when no copy does (an unanswered question hides, never shows)."""
        return self._first_answer(lambda copy: copy.visible_ids(image_ids), set())

    def _first_answer(self, ask: Callable[[ShardLike], T], otherwise: T) -> T:
        """``ask`` of the copies in turn until one answers (a failing one is marked
        unhealthy); ``otherwise`` when none does."""
        for copy in self.order():
            try:
                return ask(self.copies[copy])
            except Exception:  # an unreachable remote copy
                self.failed(copy)
        return otherwise

    def hedge_after(self) -> float:
        """Seconds to wait for a copy before asking another: the shard's recent p95."""
        with self._lock:
            if len(self._latencies) < LATENCY_SAMPLES:
                return HEDGE_DEFAULT_S
            p95 = float(np.quantile(np.fromiter(self._latencies, float), 0.95))
        return max(HEDGE_MIN_S, p95)


Request = Callable[["ShardLike"], list[Hit]]


@dataclass
class _Pending:
    """One shard's request in flight: its copies in order, and which were tried."""

    shard: ShardCopies
    order: list[int]
    tried: int = 0
    in_flight: int = 0
    hedge_at: float = float("inf")
    answer: list[Hit] | None = None


class Scatter:
    """Sends one request to every shard (one copy each) and gathers the answers."""

    def __init__(
        self,
        shards: Sequence[ShardCopies],
        deadline_s: float = 1.0,
        strict: bool = False,
        clock: Callable[[], float] = time.monotonic,
        owner_of: Callable[[str], int] | None = None,
    ) -> None:
        self.shards = list(shards)
        self.deadline_s = deadline_s
        self.strict = strict
        self.clock = clock
        # The shard an image id is routed to (its embeddings partition's owner), asked
        # first by lookups; None: shards in order.
        self.owner_of = owner_of
        self.single = len(self.shards) == 1 and len(self.shards[0].copies) == 1
        # Every copy a shard process that sends a search without waiting for it
        # (``start_search``): searches go out on sockets, read on the caller's thread.
        self.sockets = all(
            callable(getattr(copy, "start_search", None))
            for shard in self.shards
            for copy in shard.copies
        )

    @classmethod
    def of(
        cls,
        shards: Sequence[ShardLike | ShardCopies],
        deadline_s: float = 1.0,
        strict: bool = False,
        unhealthy_s: float = 5.0,
        owner_of: Callable[[str], int] | None = None,
    ) -> Scatter:
        """A scatter over ``shards``: each a :class:`ShardCopies` or a single copy."""
        groups = [
            s if isinstance(s, ShardCopies) else ShardCopies(i, [s], unhealthy_s)
            for i, s in enumerate(shards)
        ]
        return cls(groups, deadline_s, strict, owner_of=owner_of)

    def search(
        self,
        query: np.ndarray,
        k: int,
        params: SearchParams,
        with_vectors: bool,
        report: ScatterReport | None = None,
    ) -> list[list[Hit]]:
        """Every answering shard's hits for ``query``; the missing ones are in ``report``
        (or raise :class:`ShardsUnavailableError` when strict).

        When every copy is a shard process that can send a search without waiting
        for it (``start_search``), the requests are all written first and the
        answers read on this thread as their sockets become readable: the shards
        work in parallel without a thread per request, whose hand-offs cost more
        than a shard's binary search does (``bench.scatter``)."""
        if self.single or not self.sockets:
            return self.gather(lambda copy: copy.search(query, k, params, with_vectors), report)
        report = report if report is not None else ScatterReport()
        answers = self._parallel(SocketRequests(query, k, params, with_vectors), report)
        return self._checked(answers, report)

    def gather(self, request: Request, report: ScatterReport | None = None) -> list[list[Hit]]:
        report = report if report is not None else ScatterReport()
        if self.single:  # one shard, one copy: no thread, no hedging
            answers = self._direct(request, report)
        else:
            answers = self._parallel(ThreadRequests(request, shared_pool()), report)
        return self._checked(answers, report)

    def _checked(self, answers: list[list[Hit]], report: ScatterReport) -> list[list[Hit]]:
        """``answers``, or :class:`ShardsUnavailableError` when strict and one is missing."""
        if report.missing and self.strict:
            raise ShardsUnavailableError(sorted(report.missing))
        return answers

    def _direct(self, request: Request, report: ScatterReport) -> list[list[Hit]]:
        shard = self.shards[0]
        started = self.clock()
        try:
            hits = request(shard.copies[0])
        except Exception as exc:  # an unreachable remote shard, a broken one
            log.warning("shard %d failed: %s", shard.shard_id, exc)
            shard.failed(0)
            report.missing.add(shard.shard_id)
            return []
        shard.answered(0, self.clock() - started)
        return [hits]

    def _parallel(self, requests: Requests, report: ScatterReport) -> list[list[Hit]]:
        started = self.clock()
        deadline = started + self.deadline_s
        pending = [_Pending(shard, shard.order()) for shard in self.shards]
        sent: dict[Any, tuple[_Pending, int, float]] = {}

        def send(item: _Pending) -> bool:
            """Ask ``item``'s next untried copy that takes the request; False when none is left."""
            while item.tried < len(item.order):
                copy = item.order[item.tried]
                item.tried += 1
                now = self.clock()
                try:
                    handle = requests.start(item.shard.copies[copy])
                except Exception as exc:  # refused at once: the next copy
                    log.warning("shard %d copy %d failed: %s", item.shard.shard_id, copy, exc)
                    item.shard.failed(copy)
                    continue
                item.in_flight += 1
                item.hedge_at = now + item.shard.hedge_after()
                sent[handle] = (item, copy, now)
                return True
            return False

        for item in pending:
            send(item)
        while sent:
            now = self.clock()
            if now >= deadline:
                break
            waiting = [p for p in pending if p.answer is None]
            if not waiting:
                break
            hedges = [p.hedge_at for p in waiting if p.tried < len(p.order)]
            next_hedge = min(hedges, default=deadline)
            for handle in requests.ready(list(sent), min(deadline, next_hedge) - now):
                item, copy, at = sent.pop(handle)
                item.in_flight -= 1
                try:
                    # An answer that has begun arrives whole at once from a healthy copy:
                    # one that stalls part-way is failed over after READ_STALL_S, not
                    # left to hold the answers already waiting behind it.
                    hits = requests.result(handle, min(READ_STALL_S, deadline - self.clock()))
                except Exception as exc:
                    log.warning("shard %d copy %d failed: %s", item.shard.shard_id, copy, exc)
                    item.shard.failed(copy)
                    if item.answer is None and item.in_flight == 0 and send(item):
                        report.retries += 1
                    continue
                item.shard.answered(copy, self.clock() - at)
                if item.answer is None:
                    item.answer = hits
            now = self.clock()
            for item in pending:
                if item.answer is None and now >= item.hedge_at and send(item):
                    report.hedges += 1
        requests.drop(list(sent))
        for item in pending:
            if item.answer is None:
                report.missing.add(item.shard.shard_id)
        return [item.answer for item in pending if item.answer is not None]

    def __len__(self) -> int:
        """Images in the index: each shard's count from its first copy that answers."""
        return sum(shard.count() for shard in self.shards)

    def indexed_image(self, image_id: str) -> IndexedImage | None:
        """What some shard holds of ``image_id`` (ids are spread over shards): its
        owner first, so that a visible image costs one request, not half the shards
        on average. An id the owner does not show (hidden, never seen, or placed
        elsewhere by an older routing) is asked of every other shard at once: one
        after another, a thumbnail of a deleted image cost a round trip per shard."""
        owner, *others = self._lookup_order(image_id)
        found = owner.indexed_image(image_id)
        if found is not None or not others:
            return found
        answers = self._answers(others, lambda shard: shard.indexed_image(image_id))
        with contextlib.closing(answers):  # the first that holds it: the rest are dropped
            for found in answers:
                if found is not None:
                    return found
        return None

    def _answers(
        self, shards: list[ShardCopies], ask: Callable[[ShardCopies], T]
    ) -> Generator[T, None, None]:
        """``ask`` of every shard at once, each answer as it comes; the shards that have
        not answered by the deadline are left out (a lookup then hides the image).
        ShardCopies turns a failing copy into its ``otherwise`` answer."""
        if len(shards) == 1:  # no thread for a lone shard
            yield ask(shards[0])
            return
        deadline = self.clock() + self.deadline_s
        pending = {shared_pool().submit(ask, shard) for shard in shards}
        try:
            while pending:
                done, pending = wait(pending, max(0.0, deadline - self.clock()), FIRST_COMPLETED)
                if not done:
                    return
                for future in done:
                    yield future.result()
        finally:
            for late in pending:
                late.cancel()

    def _lookup_order(self, image_id: str) -> list[ShardCopies]:
        owner = -1 if self.owner_of is None else self.owner_of(image_id)
        if not 0 <= owner < len(self.shards):
            return self.shards
        return [self.shards[owner], *self.shards[:owner], *self.shards[owner + 1 :]]

    def visible_ids(self, image_ids: Sequence[str]) -> set[str]:
        """Those of ``image_ids`` some shard holds visible (every shard asked at once)."""
        return set().union(*self._answers(self.shards, lambda shard: shard.visible_ids(image_ids)))


class Requests(Protocol):
    """How a scatter's requests travel: started per copy, waited for together."""

    def start(self, copy: ShardLike) -> Any: ...

    def ready(self, handles: list[Any], timeout_s: float) -> list[Any]: ...

    def result(self, handle: Any, timeout_s: float) -> list[Hit]:
        """The answer of a handle ``ready`` returned (reads bounded by ``timeout_s``)."""
        ...

    def drop(self, handles: list[Any]) -> None: ...


class ThreadRequests:
    """Each request on a pool thread (any shard: in-process ones search there, and
    faiss, ONNX Runtime and socket reads release the GIL)."""

    def __init__(self, request: Request, pool: ThreadPoolExecutor) -> None:
        self.request, self.pool = request, pool

    def start(self, copy: ShardLike) -> Any:
        return self.pool.submit(self.request, copy)

    def ready(self, handles: list[Any], timeout_s: float) -> list[Any]:
        done, _ = wait(handles, timeout_s, FIRST_COMPLETED)
        return list(done)

    def result(self, handle: Any, timeout_s: float) -> list[Hit]:
        return handle.result()  # done: ready() said so

    def drop(self, handles: list[Any]) -> None:
        """Late requests finish in the background; their answers are dropped."""


class SocketRequests:
    """Searches written to shard processes at once and read as their sockets become
    readable, all on the caller's thread (``RemoteShard.start_search``). One
    selector for the whole scatter: sockets join it when sent, leave when read."""

    def __init__(self, query: np.ndarray, k: int, params: SearchParams, with_vectors: bool) -> None:
        self.query, self.k, self.params, self.with_vectors = query, k, params, with_vectors
        self.selector = selectors.DefaultSelector()
        self.broken: list[Any] = []  # sent, but with no socket to wait on

    def start(self, copy: ShardLike) -> Any:
        handle = copy.start_search(self.query, self.k, self.params, self.with_vectors)  # type: ignore[attr-defined]
        if handle.fileno() < 0:
            self.broken.append(handle)  # its finish() says why
        else:
            self.selector.register(handle.fileno(), selectors.EVENT_READ, handle)
        return handle

    def ready(self, handles: list[Any], timeout_s: float) -> list[Any]:
        if self.broken:
            broken, self.broken = self.broken, []
            return broken
        return [key.data for key, _ in self.selector.select(max(timeout_s, 0.0))]

    def result(self, handle: Any, timeout_s: float) -> list[Hit]:
        self._forget(handle)
        return handle.finish(timeout_s)

    def drop(self, handles: list[Any]) -> None:
        """Answers past the deadline are not read: their connections are closed."""
        for handle in handles:
            self._forget(handle)
            handle.abandon()
        self.selector.close()

    def _forget(self, handle: Any) -> None:
        # never registered (no socket), or already gone
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(handle.fileno())

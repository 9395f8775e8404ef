"""Online recall: a small share of live queries searched again exactly, in the background.

An ANN index's recall is measured offline on a benchmark set, but what users
get depends on their data and on the index as it is now (after rebuilds,
deletes, a growing partition). So each shard hands a sample of its live
queries (``VISEARCH_RECALL_SAMPLE``, 1 %) with the ids it answered to this
monitor, which searches the same partitions exactly on a thread of its own
(``Partition.exact_search``) and keeps recall@10 over the last ``window``
samples: ``visearch_shard_recall_at_10`` on /metrics, with an alert below 0.9.
A query arriving while the monitor is still busy is not sampled (a bounded
queue, never a backlog), so the monitor costs at most one thread's CPU.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from index.partition import Hit

log = logging.getLogger(__name__)

K = 10
QUEUE_SIZE = 4


class RecallMonitor:
    """Samples queries with their answers; measures recall@10 against exact search."""

    def __init__(
        self,
        exact: Callable[[np.ndarray, int], list[Hit]],
        share: float = 0.01,
        window: int = 200,
        rng: random.Random | None = None,
    ) -> None:
        self.exact = exact
        self.share = share
        self.samples = 0
        self._recalls: deque[float] = deque(maxlen=window)
        self._queue: queue.Queue[tuple[np.ndarray, list[str]]] = queue.Queue(QUEUE_SIZE)
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def offer(self, query: np.ndarray, hits: Sequence[Hit]) -> None:
        """Maybe sample this answered query (cheap: a random draw, rarely a copy)."""
        if self.share <= 0 or len(hits) < K or self._rng.random() >= self.share:
            return
        try:
            self._queue.put_nowait((np.array(query, dtype=np.float32), [h.image_id for h in hits]))
        except queue.Full:
            return
        self._ensure_thread()

    def recall(self) -> float | None:
        """Mean recall@10 over the recent samples; ``None`` before the first."""
        with self._lock:
            return sum(self._recalls) / len(self._recalls) if self._recalls else None

    def drain(self) -> None:
        """Wait until every sampled query has been measured."""
        self._queue.join()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="recall-monitor", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            query, answered = self._queue.get()
            try:
                truth = [hit.image_id for hit in self.exact(query, K)]
                if truth:
                    found = len(set(answered[:K]) & set(truth)) / len(truth)
                    with self._lock:
                        self._recalls.append(found)
                        self.samples += 1
            except Exception:  # a partition rebuilt or retired under it: skip the sample
                log.exception("recall sample failed")
            finally:
                self._queue.task_done()

"""One faiss index for one partition of the embeddings topic.

The partition is the unit of ownership, snapshot and recovery: a shard owns
several partitions, and a partition's content is exactly what its topic
partition says (the log is the source of truth, the index a view of it).

This first version holds an exact inner-product index (``IndexFlatIP`` under
``IndexIDMap2``): vectors are L2-normalised, so inner product is cosine
similarity, results are exact and ``remove_ids`` is cheap. Moving to
HNSW/IVF past a size threshold is the next step (issue 5).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import faiss
import numpy as np

from index.ids import image_key
from streams.settings import SUPPORTED_INDEX_FACTORIES as SUPPORTED_FACTORIES


class IdCollisionError(RuntimeError):
    """Two different image ids hash to the same 63-bit label."""


@dataclass(frozen=True)
class Hit:
    """One search result: an image and its cosine similarity to the query."""

    image_id: str
    score: float


@dataclass
class _Entry:
    image_id: str
    private: bool


class Partition:
    """Upsert, delete and search over one partition's vectors; thread-safe."""

    def __init__(self, dim: int, factory: str = "Flat") -> None:
        if factory not in SUPPORTED_FACTORIES:
            raise ValueError(
                f"index factory {factory!r} is not supported yet; use one of {SUPPORTED_FACTORIES}"
            )
        self.dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._entries: dict[int, _Entry] = {}
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, image_id: str) -> bool:
        entry = self._entries.get(image_key(image_id))
        return entry is not None and entry.image_id == image_id

    def upsert(self, image_id: str, vector: np.ndarray, private: bool = False) -> None:
        """Insert or replace ``image_id``; the same image twice is one entry."""
        vector = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if vector.shape[1] != self.dim:
            raise ValueError(f"vector has {vector.shape[1]} dimensions, index has {self.dim}")
        key = image_key(image_id)
        with self._lock:
            existing = self._entries.get(key)
            if existing is not None:
                if existing.image_id != image_id:
                    raise IdCollisionError(
                        f"{image_id!r} and {existing.image_id!r} share label {key}"
                    )
                self._index.remove_ids(np.array([key], dtype=np.int64))  # type: ignore[arg-type]
            self._index.add_with_ids(vector, np.array([key], dtype=np.int64))
            self._entries[key] = _Entry(image_id, private)

    def delete(self, image_id: str) -> bool:
        """Remove ``image_id``; returns whether it was present."""
        key = image_key(image_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.image_id != image_id:
                return False
            self._index.remove_ids(np.array([key], dtype=np.int64))  # type: ignore[arg-type]
            del self._entries[key]
            return True

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Top ``k`` public images per query row, best first."""
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries.reshape(1, -1)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries have shape {queries.shape}, index has {self.dim} dimensions")
        with self._lock:
            if not self._entries:
                return [[] for _ in range(len(queries))]
            private = sum(entry.private for entry in self._entries.values())
            fetch = min(k + private, len(self._entries))
            scores, labels = self._index.search(queries, fetch)
            results = []
            for row_scores, row_labels in zip(scores, labels, strict=True):
                hits = []
                for score, label in zip(row_scores, row_labels, strict=True):
                    entry = self._entries.get(int(label))
                    if label < 0 or entry is None or entry.private:
                        continue
                    hits.append(Hit(entry.image_id, float(score)))
                    if len(hits) == k:
                        break
                results.append(hits)
            return results

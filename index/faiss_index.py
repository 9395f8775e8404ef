"""faiss specifics in one place: building from a factory string, per-call search
parameters, reading vectors back.

Indexes hold dense row numbers (0, 1, 2, ...) rather than hashed 64-bit labels.
That choice lets filters be a bitmap over rows (``IDSelectorBitmap``: O(1) to
hand to a search, one bit per row) instead of an ``IDSelectorBatch`` rebuilt
from a hash set on every query, and it lets every index type, HNSW included,
be used the same way: a delete clears a bit; compaction renumbers rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np


@dataclass(frozen=True)
class SearchParams:
    """Per-call search knobs; shared index state is never mutated per request."""

    ef_search: int = 64
    nprobe: int = 16


def build_index(dim: int, factory: str) -> faiss.Index:
    """An empty inner-product index from a faiss factory string."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(f"faiss cannot build {factory!r} for {dim} dimensions: {exc}") from exc
    return index


def needs_training(factory: str, dim: int) -> bool:
    return not build_index(dim, factory).is_trained


def train_and_add(index: faiss.Index, vectors: np.ndarray) -> faiss.Index:
    """Train if needed (on at most 100k rows), enable reconstruction, add ``vectors``."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and hasattr(faiss.downcast_index(ivf), "do_polysemous_training"):
        # Polysemous codes speed up Hamming filtering we do not use, and cost
        # 5x the training time (measured 61 s vs 12 s at 100k vectors).
        faiss.downcast_index(ivf).do_polysemous_training = False  # type: ignore[attr-defined]
    if not index.is_trained:
        sample = vectors
        if len(vectors) > 100_000:
            rng = np.random.default_rng(0)
            sample = vectors[rng.choice(len(vectors), 100_000, replace=False)]
        index.train(sample)
    if ivf is not None:
        ivf.make_direct_map()  # rows are never removed, so an array map suffices
    if len(vectors):
        index.add(vectors)
    return index


def search_parameters(
    index: faiss.Index, selector: faiss.IDSelector, params: SearchParams
) -> faiss.SearchParameters:
    """The right SearchParameters subclass for ``index`` carrying ``selector``."""
    concrete = faiss.downcast_index(index)
    if isinstance(concrete, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=params.ef_search)  # type: ignore[attr-defined]
    if faiss.try_extract_index_ivf(index) is not None:
        return faiss.SearchParametersIVF(sel=selector, nprobe=params.nprobe)  # type: ignore[call-arg]
    return faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]


def reconstruct_rows(index: faiss.Index, rows: np.ndarray) -> np.ndarray:
    """Vectors of ``rows`` (exact for Flat/HNSW/IVF-Flat, decoded for PQ/SQ)."""
    if len(rows) == 0:
        return np.empty((0, index.d), dtype=np.float32)
    rows = np.asarray(rows, dtype=np.int64)
    if np.all(np.diff(rows) == 1):
        return index.reconstruct_n(int(rows[0]), len(rows))
    return index.reconstruct_batch(rows)


def index_bytes(index: faiss.Index) -> int:
    """Serialized size of ``index``: what it occupies in memory, within a few %."""
    return int(faiss.serialize_index(index).nbytes)

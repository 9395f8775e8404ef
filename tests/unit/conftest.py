"""Unit-test fixtures shared by every module in tests/unit."""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import pytest


@pytest.fixture(autouse=True, scope="module")
def _single_thread_faiss() -> Iterator[None]:
    """One OpenMP thread: deterministic HNSW graphs, no spin-waits on a busy 2-core box."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)

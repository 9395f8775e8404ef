"""Give large freed blocks back to the OS (glibc), so RSS follows the live data.

Index partitions are rebuilt when they compact: a new faiss index of a few
MB is allocated and the old one freed, every few seconds under churn. glibc
raises its mmap threshold to the size of every mmapped block freed (up to
32 MB), so after the first few rebuilds these blocks come from the malloc
arenas instead, and the holes they leave are not returned: the API process
grew ~10 MB/min at 50 uploads/s with a steady index (bench.soak), without
any growth of the Python heap. A fixed threshold keeps such blocks mmapped
(returned on free) and turns the dynamic adjustment off. Measured: the same
load with a 1 MiB threshold kept RssAnon flat (141 -> 141 MB over 80 s
after the index filled, against 150 -> 212 MB).
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # <malloc.h>


def set_mmap_threshold(threshold_bytes: int) -> bool:
    """Serve allocations of ``threshold_bytes`` or more with mmap; False where not glibc."""
    if threshold_bytes <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(threshold_bytes)))
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        log.debug("mallopt unavailable; leaving the allocator as it is")
        return False


def release_free_memory() -> bool:
    """Return the free pages inside glibc's heap to the OS (``malloc_trim(0)``).

    After a partition rebuild the old index's many small blocks (IVF lists
    of a few KB each, below the mmap threshold) are free but sit between live
    ones, so the heap cannot shrink from its top; trimming releases every
    whole free page wherever it is.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False

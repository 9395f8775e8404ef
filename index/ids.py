"""Stable 63-bit faiss ids for string image ids.

faiss stores ``int64`` labels. A hash (not a counter) means every replica and
every restart maps an image to the same label without coordination; 63 bits
keep labels non-negative (faiss uses -1 for "no result"). A collision between
two different image ids is detected by the partition's id map and refused.
"""

from __future__ import annotations

import hashlib

_MASK = (1 << 63) - 1


def image_key(image_id: str) -> int:
    """The faiss label of ``image_id``: BLAKE2b-64 of its UTF-8 bytes, 63 bits."""
    digest = hashlib.blake2b(image_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK

"""visearch's exception hierarchy: one base to catch, one shape for coded failures.

Every error visearch raises on purpose derives from :class:`VisearchError`, so
a caller embedding visearch can catch "anything visearch refused" in one
``except`` (as httpx does with ``httpx.HTTPError``); each keeps its builtin
base too (``ValueError`` for bad input, ``RuntimeError`` for a failed
operation, ``KeyError`` for an unknown id), so existing ``except`` clauses
still hold. Failures that travel on (a dead letter's code, an HTTP error's
code) are :class:`CodedError`: a machine-readable ``code`` and a ``message``
for people, the same two fields at every layer (schema, image source, remote
fetch, decoding, model rollout).

This module imports nothing from visearch: every package can use it.
"""

from __future__ import annotations


class VisearchError(Exception):
    """Base of every error visearch raises on purpose."""


class CodedError(VisearchError):
    """A failure with a machine-readable ``code`` (dead-letter or API error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

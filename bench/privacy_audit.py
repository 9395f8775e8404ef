"""Deciding whether a search result leaked a hidden image, under concurrent churn.

Used by the property test and ``bench/privacy.py``: one side changes images
(upload, private, public, flag, unflag, delete, re-upload) and records when
each change was sent and when it was acknowledged; other threads search and
record when each search began and ended. A result is a leak when the image
was hidden for the whole search for sure: its last change acknowledged before
the search began hid it, and no change sent before the search ended could
have shown it again. Changes in flight either way are given the benefit of
the doubt, so a leak is never a timing artefact of the check itself.

Changes of one image must be made one at a time (one thread per image);
times come from ``time.monotonic`` in this process.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx

from visearch.catalog.hidden import next_bits


@dataclass
class _History:
    """One image's acknowledged changes, in order."""

    bits: int = 0
    started: list[float] = field(default_factory=list)
    acked: list[float] = field(default_factory=list)
    hidden: list[bool] = field(default_factory=list)


class PrivacyAudit:
    """Acknowledged visibility changes per image, and the rule that names a leak."""

    def __init__(self) -> None:
        self._images: dict[str, _History] = {}
        self._lock = threading.Lock()

    def bits(self, image_id: str) -> int:
        """The image's hidden bits after its acknowledged changes (0: visible)."""
        history = self._images.get(image_id)
        return history.bits if history else 0

    def acknowledged(self, image_id: str, action: str, started: float, acked: float) -> bool:
        """Record a change sent at ``started`` and acknowledged at ``acked``; hidden now?"""
        with self._lock:
            history = self._images.setdefault(image_id, _History())
            if history.acked and started < history.acked[-1]:
                raise ValueError(f"changes of {image_id} overlap: make them one at a time")
            history.bits = next_bits(history.bits, action)
            history.started.append(started)
            history.acked.append(acked)
            history.hidden.append(history.bits != 0)
            return history.bits != 0

    def hidden_throughout(self, image_id: str, began: float, ended: float) -> bool:
        """Hidden, for sure, from ``began`` to ``ended`` (a search there must not return it)."""
        history = self._images.get(image_id)
        if history is None:
            return False
        last = bisect.bisect_right(history.acked, began) - 1
        if last < 0 or not history.hidden[last]:
            return False
        following = range(last + 1, len(history.started))
        return all(history.hidden[n] for n in following if history.started[n] < ended)

    def leaks(self, image_ids: Iterable[str], began: float, ended: float) -> list[str]:
        """The ids among one search's results that it must not have returned."""
        return [i for i in image_ids if self.hidden_throughout(i, began, ended)]

    def exposures(self, began: float, ended: float) -> int:
        """How many known images a search over this interval had to keep out."""
        return sum(self.hidden_throughout(i, began, ended) for i in list(self._images))


class ApiChurn:
    """Changes images through the HTTP API, one at a time, recording each acknowledgement.

    ``http`` is any httpx client of the API: over the network, or FastAPI's
    ``TestClient`` in process. ``photos`` are the bytes uploaded per id.
    """

    def __init__(self, http: httpx.Client, photos: dict[str, bytes]) -> None:
        self.http = http
        self.photos = photos
        self.audit = PrivacyAudit()
        self._in_flight: float | None = None  # when the change being sent was started
        self._lock = threading.Lock()

    def settled_until(self) -> float:
        """Every change started before this time is recorded: searches that ended
        earlier can be judged now (changes are sent one at a time)."""
        with self._lock:
            return time.monotonic() if self._in_flight is None else self._in_flight

    def change(self, image_id: str, action: str) -> int:
        """Send one change (an action of ``hidden_images.ACTIONS``); returns the HTTP status."""
        with self._lock:
            started = self._in_flight = time.monotonic()
        try:
            return self._send(image_id, action, started)
        finally:
            with self._lock:
                self._in_flight = None

    def _send(self, image_id: str, action: str, started: float) -> int:
        if action.startswith("upload"):
            response = self.http.post(
                "/v1/images",
                files={"image": ("image", self.photos[image_id], "application/octet-stream")},
                data={"image_id": image_id, "private": str(action == "upload_private").lower()},
            )
        elif action == "delete":
            response = self.http.delete(f"/v1/images/{image_id}")
        else:
            response = self.http.patch(f"/v1/images/{image_id}", json={"action": action})
        if response.status_code == 202:
            self.audit.acknowledged(image_id, action, started, time.monotonic())
        return response.status_code

"""Consumers that no user waits on poll the broker less often than the index shards.

Each idle kafka-python consumer at the 20 ms fetch wait asks the broker 50
times a second; in the soak the API process's dead-letter monitor, model
watcher and feedback aggregator cost ~30 % of a core that way, and the broker
as much again to answer them.
"""

from __future__ import annotations

from pathlib import Path

from feedback.consumer import FeedbackConsumer
from feedback.state import FeedbackState
from streams.dead_letter_monitor import DeadLetterMonitor
from streams.model_registry import ModelWatcher
from streams.settings import Settings


def test_background_consumers_use_their_own_fetch_wait(tmp_path: Path) -> None:
    settings = Settings(fetch_max_wait_ms=20, background_fetch_max_wait_ms=400)
    background = [
        DeadLetterMonitor(settings),
        ModelWatcher(settings, on_event=lambda event: None),
        FeedbackConsumer(settings, FeedbackState([0]), publisher=None, checkpoint=tmp_path / "c"),  # type: ignore[arg-type]
    ]
    assert [c.fetch_max_wait_ms for c in background] == [400, 400, 400]

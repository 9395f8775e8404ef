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


def test_background_consumers_idle_at_the_background_wait(tmp_path: Path) -> None:
    """Idle, they fetch (and the unjoined ones poll) only every background idle wait:
    at the service's 500 ms the two model watchers and the broker answering them
    were half of an idle stack's CPU."""
    settings = Settings(idle_fetch_max_wait_ms=500, background_idle_fetch_max_wait_ms=4000)
    unjoined = [DeadLetterMonitor(settings), ModelWatcher(settings, on_event=lambda event: None)]
    assert [c.idle_fetch_max_wait_ms for c in unjoined] == [4000, 4000]
    assert [c.longest_poll_ms for c in unjoined] == [4000, 4000]
    # The feedback aggregator is joined when its service stops: its polls stay short.
    joined = FeedbackConsumer(
        settings,
        FeedbackState([0]),
        publisher=None,  # type: ignore[arg-type]
        checkpoint=tmp_path / "c",
    )
    assert joined.idle_fetch_max_wait_ms == 4000 and joined.longest_poll_ms == 500

"""Fetch waits: short while records flow, doubling to the idle wait while a topic is idle."""

from streams.fetch_backoff import FetchBackoff


def test_waits_double_while_idle_and_drop_at_the_first_record() -> None:
    backoff = FetchBackoff(active_ms=20, idle_ms=500)
    assert backoff.current_ms == 20
    assert [backoff.update(False) for _ in range(6)] == [40, 80, 160, 320, 500, 500]
    assert backoff.update(True) == 20
    assert backoff.update(False) == 40


def test_an_idle_wait_below_the_active_one_changes_nothing() -> None:
    backoff = FetchBackoff(active_ms=250, idle_ms=100)
    assert backoff.update(False) == 250 and backoff.update(True) == 250

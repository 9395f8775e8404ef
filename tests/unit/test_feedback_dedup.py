"""Compact dedup state: digests by time bucket, expired whole, checkpointed exactly."""

import pytest

from feedback.dedup import SeenEvents, digest


def test_digests_are_stable_across_processes() -> None:
    # BLAKE2b-64 of the id: fixed (checkpoints hold digests), unlike hash(str),
    # which is salted per process. Pinned: a change would misread every checkpoint.
    assert digest("click-1") == 15251977844780385725
    assert digest("click-1") != digest("click-2")
    assert 0 <= digest("x") < 2**64


def test_an_id_counts_once_until_its_bucket_is_past_the_horizon() -> None:
    seen = SeenEvents(horizon_s=600)  # 10-s buckets
    assert seen.bucket_s == 10
    assert seen.add("a", 1000.0) and seen.add("b", 1009.9) and seen.add("c", 1010.0)
    assert not seen.add("a", 1005.0)  # a duplicate, whatever time it claims
    seen.expire(1009.9)  # the bucket [1000, 1010) ends after the horizon: kept
    assert not seen.add("b", 1009.9) and len(seen) == 3
    seen.expire(1010.0)
    assert len(seen) == 1
    assert seen.add("a", 1000.0)  # forgotten: it would be late for the aggregator anyway


def test_checkpoint_round_trip_keeps_every_digest_and_its_bucket() -> None:
    seen = SeenEvents(horizon_s=3600)
    for n in range(1000):
        seen.add(f"e{n}", 5000.0 + n * 3.7)
    restored = SeenEvents.from_json(seen.to_json(), horizon_s=3600)
    assert restored.to_json() == seen.to_json() and len(restored) == 1000
    assert not restored.add("e999", 0.0)
    restored.expire(5000.0 + 500 * 3.7)
    seen.expire(5000.0 + 500 * 3.7)
    assert len(restored) == len(seen) < 1000


def test_a_checkpoint_of_the_earlier_format_is_converted() -> None:
    legacy = {"old-1": 100.0, "old-2": 3000.0}
    seen = SeenEvents.from_json(legacy, horizon_s=3600)
    assert not seen.add("old-1", 100.0) and not seen.add("old-2", 3000.0)
    assert len(seen) == 2


@pytest.mark.parametrize("new_horizon", [600.0, 7200.0])
def test_a_changed_horizon_never_expires_a_digest_early(new_horizon: float) -> None:
    seen = SeenEvents(horizon_s=3600)  # 60-s buckets
    seen.add("late-in-bucket", 1019.0 + 40)  # bucket [1020, 1080)
    restored = SeenEvents.from_json(seen.to_json(), horizon_s=new_horizon)
    restored.expire(1059.0)  # the event's own time: must still be known
    assert not restored.add("late-in-bucket", 1059.0)


def test_an_out_of_order_older_event_still_expires_on_time() -> None:
    """Expiry skips work until the oldest bucket ends; an event older than every bucket
    so far moves that point back."""
    seen = SeenEvents(horizon_s=600)  # 10-s buckets
    seen.add("new", 1000.0)
    seen.expire(905.0)
    seen.add("old", 900.0)  # [900, 910): older than [1000, 1010)
    seen.expire(910.0)
    assert len(seen) == 1 and seen.add("old", 900.0)
    restored = SeenEvents.from_json(seen.to_json(), horizon_s=600)
    restored.expire(1010.0)
    assert len(restored) == 0

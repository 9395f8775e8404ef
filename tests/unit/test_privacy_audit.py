"""The leak rule of the privacy test and bench: only a search that was sure to see the change."""

import pytest

from bench.privacy_audit import PrivacyAudit


def _audit(*changes):
    audit = PrivacyAudit()
    for image_id, action, started, acked in changes:
        audit.acknowledged(image_id, action, started, acked)
    return audit


def test_a_search_after_the_acknowledgement_must_not_return_the_image():
    audit = _audit(("a", "upload", 0.0, 0.1), ("a", "private", 0.9, 1.0))
    assert audit.leaks(["a", "b"], 1.5, 2.0) == ["a"]
    assert audit.leaks(["a"], 0.95, 2.0) == []  # began before the acknowledgement
    assert audit.exposures(1.5, 2.0) == 1


def test_a_change_that_shows_it_again_counts_from_when_it_was_sent():
    audit = _audit(("a", "delete", 0.9, 1.0), ("a", "upload", 1.8, 1.9))
    assert audit.leaks(["a"], 1.5, 1.7) == ["a"]
    assert audit.leaks(["a"], 1.5, 2.0) == []  # the re-upload was in flight
    assert audit.leaks(["a"], 2.0, 2.1) == []


def test_every_reason_must_be_lifted():
    audit = _audit(
        ("a", "private", 0.0, 1.0),
        ("a", "flag", 1.2, 1.3),
        ("a", "unflag", 1.5, 1.6),  # still private
        ("a", "delete", 2.0, 2.1),
        ("a", "upload", 3.0, 3.1),  # the flag is gone, and so are delete and private
    )
    assert audit.leaks(["a"], 1.1, 2.9) == ["a"]
    assert audit.leaks(["a"], 3.2, 3.3) == []
    flagged = _audit(("b", "flag", 0.0, 1.0), ("b", "upload", 2.0, 2.1))
    assert flagged.leaks(["b"], 2.5, 3.0) == ["b"]  # a re-upload does not lift a flag


def test_unknown_images_never_leak_and_changes_must_not_overlap():
    audit = _audit(("a", "private", 0.0, 1.0))
    assert audit.leaks(["from-a-backend"], 2.0, 3.0) == []
    with pytest.raises(ValueError):
        audit.acknowledged("a", "public", 0.5, 1.5)

"""Event times far in the future are refused: they would pin last-writer-wins visibility."""

from __future__ import annotations

import json
import time

import pytest

from index.visibility import ImageState
from streams.schemas import MAX_CLOCK_SKEW_S, ImageUpdated, ImageUploaded, SchemaError, decode


def _upload(at: float) -> bytes:
    return json.dumps(
        {"image_id": "i-1", "owner_id": "o", "uploaded_at": at, "image_b64": "AAAA"}
    ).encode()


def _update(at: float) -> bytes:
    return json.dumps({"image_id": "i-1", "action": "delete", "updated_at": at}).encode()


@pytest.mark.parametrize("ahead", [MAX_CLOCK_SKEW_S + 60, 86_400 * 365 * 1000, 1e300])
def test_future_times_are_invalid(ahead: float) -> None:
    for raw in (_upload(time.time() + ahead), _update(time.time() + ahead)):
        with pytest.raises(SchemaError) as info:
            decode(ImageUploaded if b"owner_id" in raw else ImageUpdated, raw)
        assert info.value.code == "invalid_value"
        assert "in the future" in info.value.message


def test_small_skew_and_the_past_are_fine() -> None:
    now = time.time()
    assert decode(ImageUploaded, _upload(now + 60)).uploaded_at == now + 60
    assert decode(ImageUpdated, _update(0.0)).updated_at == 0.0


def test_why_a_future_upload_would_be_a_privacy_bug() -> None:
    """The register semantics the check protects: a later delete loses to a future upload."""
    state = ImageState(first_row=0, row_count=1)
    state.record_upload(time.time() + 10**9, private=False)
    state.apply("delete", time.time())
    assert state.visible  # so such an upload must never reach the index

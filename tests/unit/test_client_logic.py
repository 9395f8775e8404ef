"""visearch.client's pure parts: error bodies to ApiError, the backoff, request forms."""

from __future__ import annotations

import httpx
import pytest

from index.filters import SearchFilter
from visearch.api.filter_form import filter_from_form
from visearch.client import ApiError, RetryPolicy, _check, _search_form


def test_error_bodies_become_api_errors_with_their_code() -> None:
    detail = {"detail": {"code": "bad_crop", "message": "the box is empty"}}
    with pytest.raises(ApiError) as error:
        _check(httpx.Response(422, json=detail))
    assert (error.value.status, error.value.code, error.value.message) == (
        422, "bad_crop", "the box is empty",
    )  # fmt: skip
    with pytest.raises(ApiError) as plain:
        _check(httpx.Response(502, text="<html>bad gateway</html>"))
    assert (plain.value.status, plain.value.code) == (502, "http_error")
    assert _check(httpx.Response(202, json={"accepted": 2})) == {"accepted": 2}


def test_backoff_doubles_up_to_a_cap_and_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=5, first_s=0.1, max_s=1.0)
    assert [policy.delay(n, None) for n in range(5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    busy = httpx.Response(503, headers={"Retry-After": "3"})
    assert policy.delay(0, busy) == 1.0  # capped
    assert RetryPolicy(max_s=10).delay(0, busy) == 3.0


def test_search_forms() -> None:
    data, files = _search_form(b"img", None, 5, (0.1, 0.2, 0.5, 0.75), "relative", None)
    assert data == {"k": "5", "crop_units": "relative", "crop": "0.1,0.2,0.5,0.75"}
    assert files is not None and files["image"][1] == b"img"
    data, files = _search_form(None, "photo-1", 10, None, "px", None)
    assert data["image_id"] == "photo-1" and files is None
    with pytest.raises(ValueError, match="exactly one"):
        _search_form(b"img", "photo-1", 10, None, "px", None)
    where = SearchFilter.of(["shop"], tags_any=["b", "a"], uploaded_after=1.5)
    data, _ = _search_form(None, "photo-1", 10, None, "px", where)
    # the API's form fields: lists comma-separated (sorted), times as numbers
    assert (data["owner_ids"], data["tags_any"], data["uploaded_after"]) == ("shop", "a,b", "1.5")
    assert filter_from_form(data["owner_ids"], data["tags_any"], None, 1.5, None) == where

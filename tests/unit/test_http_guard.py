"""The request guard's pure parts: token comparison, route discovery, the page's policy."""

from __future__ import annotations

import base64
import hashlib

from fastapi import APIRouter, FastAPI

from visearch.api.guard import api_routes, bearer_token_matches, page_security_policy


def test_bearer_tokens_compare_as_bytes_with_any_case_of_scheme() -> None:
    assert bearer_token_matches("Bearer s3cret", "s3cret")
    assert bearer_token_matches("bearer s3cret", "s3cret")
    assert bearer_token_matches(b"BEARER  s3cret ", "s3cret")
    assert not bearer_token_matches("Bearer s3cre", "s3cret")
    assert not bearer_token_matches("Basic s3cret", "s3cret")
    assert not bearer_token_matches(None, "s3cret")
    # Not ASCII: simply wrong (hmac.compare_digest raises on such a str).
    assert not bearer_token_matches("Bearer s3crét", "s3cret")
    assert not bearer_token_matches(b"Bearer \xff\xfes3cret", "s3cret")


def test_routes_of_included_routers_are_found() -> None:
    app = FastAPI()
    router = APIRouter()

    @router.post("/v1/inner")
    def inner() -> None:
        pass

    @app.get("/v1/outer")
    def outer() -> None:
        pass

    app.include_router(router)
    assert {r.path for r in api_routes(app.routes)} >= {"/v1/inner", "/v1/outer"}


def test_the_page_policy_allows_its_own_inline_script_and_style_only() -> None:
    html = "<style>b{}</style><script>go()</script>"
    policy = page_security_policy(html)

    def digest(text: str) -> str:
        return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()

    assert f"script-src 'sha256-{digest('go()')}'" in policy
    assert f"style-src 'sha256-{digest('b{}')}'" in policy
    assert "unsafe-inline" not in policy and "default-src 'none'" in policy
    assert "script-src 'none'" in page_security_policy("<p>static</p>")

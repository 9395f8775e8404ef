"""The web page in a real browser (Debian's Chromium driven by Playwright)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Page, sync_playwright
from prometheus_client import CollectorRegistry

from streams.broker import free_port
from visearch.api import create_api
from visearch.stack import LocalStack

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def site(stack: LocalStack) -> Iterator[str]:
    """The API and page served over real HTTP on a free loopback port."""
    assert stack.search is not None and stack.publisher is not None
    api = create_api(
        stack.settings, stack.search, stack.store, stack.publisher, CollectorRegistry()
    )
    server = uvicorn.Server(
        uvicorn.Config(api, host="127.0.0.1", port=free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def page() -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1300, "height": 900})
        finally:
            browser.close()


def _search_after(page: Page, action) -> dict:  # type: ignore[no-untyped-def]
    with page.expect_response("**/v1/search") as response_info:
        action()
    response = response_info.value
    assert response.status == 200, response.text()
    return {"request": response.request.post_data or "", "body": response.json()}


def test_pick_crop_and_click_through_in_a_browser(
    site: str, stack: LocalStack, page: Page, photo_paths: list[Path], publish
) -> None:
    ids = publish(stack, photo_paths[:12], "web")
    assert stack.wait_searchable(ids, 90) == set()
    page.goto(site)
    page.wait_for_selector("#corpus .tile img")

    first = _search_after(page, lambda: page.locator("#corpus .tile").first.click())
    page.wait_for_selector("#results .result")
    rendered = page.locator("#results .result").evaluate_all(
        "tiles => tiles.map(t => t.dataset.imageId)"
    )
    assert rendered == [hit["image_id"] for hit in first["body"]["results"]]
    assert "results in" in page.locator("#status").inner_text()

    image = page.locator("#query-img")
    page.wait_for_function("document.getElementById('query-img').complete")
    box = image.bounding_box()
    assert box is not None

    def drag() -> None:
        page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.1)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.7, steps=5)
        page.mouse.up()

    cropped = _search_after(page, drag)
    assert 'name="crop"' in cropped["request"] and "relative" in cropped["request"]
    assert page.locator("#crop").is_visible()

    target = page.locator("#results .result").first
    target_id = target.get_attribute("data-image-id")
    clicked = _search_after(page, target.click)
    assert f'name="image_id"\r\n\r\n{target_id}' in clicked["request"]
    assert target_id not in [hit["image_id"] for hit in clicked["body"]["results"]]
    assert target_id in (page.locator("#query-img").get_attribute("src") or "")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)
    assert (ARTIFACTS / "web-page.png").stat().st_size > 10_000


def test_upload_form_reports_bad_files(site: str, page: Page, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is text pretending to be a png")
    page.goto(site)
    page.set_input_files("#upload-file", str(bad))
    with page.expect_response("**/v1/images"):
        page.click("#upload-form button[type=submit]")
    page.wait_for_function("document.getElementById('upload-status').textContent.length > 0")
    assert "undecodable" in page.locator("#upload-status").inner_text()

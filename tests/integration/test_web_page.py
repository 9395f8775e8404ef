"""The web page in a real browser (Debian's Chromium driven by Playwright)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page

from streams.schemas import Interaction, decode
from visearch.catalog.uploads import accept_upload
from visearch.local.stack import LocalStack

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _search_after(page: Page, action) -> dict:  # type: ignore[no-untyped-def]
    with page.expect_response("**/v1/search") as response_info:
        action()
    response = response_info.value
    assert response.status == 200, response.text()
    return {"request": response.request.post_data or "", "body": response.json()}


def _interactions(stack: LocalStack, read_topic) -> list[Interaction]:  # type: ignore[no-untyped-def]
    raw = read_topic(stack.settings, stack.settings.topics.interactions, 4)
    return [decode(Interaction, value) for value in raw]


def test_pick_crop_and_click_through_in_a_browser(
    site: str, stack: LocalStack, page: Page, photo_paths: list[Path], publish, read_topic
) -> None:
    ids = publish(stack, photo_paths[:12], "web")
    assert stack.wait_searchable(ids, 90) == set()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    loaded = page.goto(site)
    assert loaded is not None and "script-src 'sha256-" in loaded.headers["content-security-policy"]
    page.wait_for_selector("#corpus .tile img")

    first = _search_after(page, lambda: page.locator("#corpus .tile").first.click())
    page.wait_for_selector("#results .result")
    rendered = page.locator("#results .result").evaluate_all(
        "tiles => tiles.map(t => t.dataset.imageId)"
    )
    assert rendered == [hit["image_id"] for hit in first["body"]["results"]]
    assert "results in" in page.locator("#status").inner_text()

    image = page.locator("#query-img")
    page.wait_for_function("() => document.getElementById('query-img').complete")
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

    # the interactions arrive on the topic: impressions of every rendered
    # result, the click with its search id and position, and the dwell time on
    # the clicked image once the user leaves
    page.wait_for_timeout(300)  # let the page post the last impressions
    page.goto("about:blank")  # pagehide: the dwell beacon
    events = _interactions(stack, read_topic)
    shown = {
        (e.search_id, e.displayed_image_id, e.position) for e in events if e.type == "impression"
    }
    crop_search = cropped["body"]["search_id"]
    for position, hit in enumerate(cropped["body"]["results"]):
        assert (crop_search, hit["image_id"], position) in shown
    clicks = [e for e in events if e.type == "click"]
    assert [(c.search_id, c.displayed_image_id, c.position) for c in clicks] == [
        (crop_search, target_id, 0)
    ]
    assert clicks[0].model_version == cropped["body"]["model_version"]
    dwells = [e for e in events if e.type == "dwell"]
    assert len(dwells) == 1 and dwells[0].displayed_image_id == target_id
    assert dwells[0].dwell_ms > 0
    assert len({e.event_id for e in events}) == len(events)

    # and the live panel shows them
    page.goto(site)
    page.wait_for_function("() => document.getElementById('fb-clicks').textContent === '1'")
    impressions = int(page.locator("#fb-impressions").inner_text())
    assert impressions == len(shown)
    assert "%" in page.locator("#fb-ctr").inner_text()
    assert page.locator("#fb-positions tr").count() >= 1

    page.wait_for_selector("#corpus .tile img")
    _search_after(page, lambda: page.locator("#corpus .tile").nth(3).click())
    page.wait_for_selector("#results .result img")
    page.wait_for_function(
        f"() => document.getElementById('fb-impressions').textContent !== '{impressions}'"
    )
    # The page's own script and style run under its content security policy.
    assert not [line for line in console if "Content Security Policy" in line], console
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
    page.wait_for_function("() => document.getElementById('upload-status').textContent.length > 0")
    assert "undecodable" in page.locator("#upload-status").inner_text()


def test_search_by_an_uploaded_file_finds_that_photo(
    site: str, stack: LocalStack, page: Page, photo_paths: list[Path], publish
) -> None:
    ids = publish(stack, photo_paths[20:26], "drop", start=20)
    assert stack.wait_searchable(ids, 90) == set()
    page.goto(site)
    with page.expect_response("**/v1/search") as response_info:
        page.set_input_files("#file", str(photo_paths[22]))
    response = response_info.value
    assert response.status == 200, response.text()
    # Chromium does not expose a file upload's body to Playwright: check the page
    # shows the local file (a blob: URL, not a stored image's thumbnail) instead
    assert "multipart/form-data" in (response.request.headers.get("content-type") or "")
    assert (page.locator("#query-img").get_attribute("src") or "").startswith("blob:")
    assert response.json()["results"][0]["image_id"] == "drop-0022"
    page.wait_for_selector("#results .result")
    assert page.locator("#results .result").first.get_attribute("data-image-id") == "drop-0022"


def test_owner_and_tag_filters_in_the_page(
    site: str, stack: LocalStack, page: Page, photo_paths: list[Path]
) -> None:
    """A user narrows a search to one owner, then to a tag: every result shown obeys it."""
    assert stack.publisher is not None
    owners = {}
    for number, path in enumerate(photo_paths[30:42], 30):
        image_id, owner = f"shop-{number}", "shop-a" if number % 3 == 0 else "shop-b"
        tags = ["red"] if number % 2 == 0 else ["blue"]
        accept_upload(
            stack.settings, stack.store, stack.publisher, image_id, path.read_bytes(), owner, False,
            tags,
        )  # fmt: skip
        owners[image_id] = (owner, tags)
    stack.publisher.flush()
    assert stack.wait_searchable(list(owners), 90) == set()
    page.goto(f"{site}/?q=shop-31")
    page.wait_for_selector("#results .result")
    page.fill("#filter-owner", "shop-a")
    searched = _search_after(page, lambda: page.press("#filter-owner", "Enter"))
    assert "shop-a" in searched["request"]
    shown = page.locator("#results .result")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results .result')].length === 4"
    )  # shop-30, -33, -36, -39 (the query, shop-31, is shop-b's)
    ids = [shown.nth(i).get_attribute("data-image-id") for i in range(shown.count())]
    assert sorted(ids) == ["shop-30", "shop-33", "shop-36", "shop-39"]
    page.fill("#filter-tags", "red")
    searched = _search_after(page, lambda: page.press("#filter-tags", "Enter"))
    found = [hit["image_id"] for hit in searched["body"]["results"]]
    assert sorted(found) == ["shop-30", "shop-36"]  # shop-a's and red

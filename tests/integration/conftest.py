"""A private stack per test module: own broker port, topics, consumer group, data dir."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from streams.broker import free_port
from streams.log_follower import read_until_idle
from streams.settings import Settings
from visearch.api.from_stack import stack_api
from visearch.api.serving import serve_in_thread
from visearch.catalog.uploads import accept_upload
from visearch.local.stack import LocalStack


def private_settings(data_dir: Path, model_dir: Path, **overrides: object) -> Settings:
    """Settings no other test shares: unique port, topic prefix and app id."""
    tag = uuid.uuid4().hex[:8]
    return Settings().with_overrides(
        data_dir=data_dir,
        model_dir=str(model_dir),
        broker_port=free_port(),
        topic_prefix=f"test-{tag}",
        app_id=f"visearch-test-{tag}",
        ort_threads=1,
        **overrides,
    )


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """Factory of private settings, for tests that run their own stacks."""
    return private_settings


def publish_photos(stack: LocalStack, paths: list[Path], prefix: str, start: int = 0) -> list[str]:
    """Store and publish real photos as ``<prefix>-<n>``; returns once the broker acknowledged."""
    assert stack.publisher is not None
    ids = []
    for i, path in enumerate(paths, start):
        image_id = f"{prefix}-{i:04d}"
        accept_upload(stack.settings, stack.store, stack.publisher, image_id, path.read_bytes())
        ids.append(image_id)
    stack.publisher.flush()
    return ids


@pytest.fixture(scope="session")
def publish() -> Callable[..., list[str]]:
    """:func:`publish_photos`, for test modules (they cannot import conftest)."""
    return publish_photos


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, model_dir: Path
) -> Iterator[LocalStack]:
    """One stack per module; a module may set ``STACK_SETTINGS = {...}`` overrides."""
    overrides = getattr(request.module, "STACK_SETTINGS", {})
    settings = private_settings(tmp_path_factory.mktemp("stack"), model_dir, **overrides)
    with LocalStack(settings) as running:
        yield running


def topic_values(settings: Settings, topic: str, partitions: int) -> list[bytes]:
    """Every value on a topic, all partitions, read until idle for 1 s."""
    return [r.value for r in read_until_idle(settings.kafka, topic, range(partitions))]


@pytest.fixture(scope="session")
def read_topic() -> Callable[[Settings, str, int], list[bytes]]:
    """:func:`topic_values`: everything on a topic (to count what was published)."""
    return topic_values


@pytest.fixture(scope="module")
def site(stack: LocalStack) -> Iterator[str]:
    """The module's stack behind the real API and page, over HTTP on a free loopback port."""
    with serve_in_thread(stack_api(stack), settings=stack.settings) as url:
        yield url


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


@pytest.fixture
def page() -> Iterator[Page]:
    """A page of a real browser (Debian's Chromium driven by Playwright)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1300, "height": 900})
        finally:
            browser.close()

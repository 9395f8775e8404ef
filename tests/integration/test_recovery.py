"""Recovery on the real broker: a SIGKILLed shard process, and a restart with a fresh broker."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from streams.broker import free_port
from streams.settings import Settings
from visearch.corpus import DEMO_CORPUS, find_images
from visearch.stack import LocalStack, settings_env

pytestmark = pytest.mark.integration
TIMEOUT_S = 120.0


def _start_shard_process(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "visearch", "shard", "--id", "0"],
            env=settings_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()[-3000:]
        try:
            _status(settings)
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()  # never leave it running behind a failed test
    process.wait(10)
    raise TimeoutError("the shard process did not start")


def _status(settings: Settings) -> dict[str, object]:
    url = f"{settings.remote_shards[0][0]}/v1/shard/status"
    with urllib.request.urlopen(url, timeout=2) as response:
        return dict(json.loads(response.read()))


def _wait_images(settings: Settings, count: int) -> int:
    deadline = time.monotonic() + TIMEOUT_S
    images = -1
    while time.monotonic() < deadline:
        images = int(_status(settings)["images"])  # type: ignore[call-overload]
        if images >= count:
            return images
        time.sleep(0.05)
    return images


def test_sigkilled_shard_restarts_from_snapshot_and_loses_nothing(
    tmp_path: Path, model_dir: Path, make_settings, publish
) -> None:
    port = free_port()
    settings = make_settings(
        tmp_path,
        model_dir,
        shard_urls=f"http://127.0.0.1:{port}",
        shard_http_port=port,
        snapshot_interval_s=0.3,
    )
    paths = random.Random(7).sample(find_images(DEMO_CORPUS), 120)
    log_path = tmp_path / "shard.log"
    with LocalStack(settings) as stack:
        assert stack.search is not None
        shard = _start_shard_process(settings, log_path)
        try:
            ids = publish(stack, paths[:40], "kill")
            assert _wait_images(settings, 40) == 40
            snapshots = settings.data_dir / "index" / stack.search.encoder.version
            deadline = time.monotonic() + TIMEOUT_S
            while not list(snapshots.glob("*.snap")) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert list(snapshots.glob("*.snap")), "no snapshot was written"
            ids += publish(stack, paths[40:80], "kill", 40)
            time.sleep(0.2)  # mid-ingest: the worker is still embedding this batch
            shard.send_signal(signal.SIGKILL)
            shard.wait(10)
            ids += publish(stack, paths[80:], "kill", 80)  # acknowledged while no shard runs
            shard = _start_shard_process(settings, log_path)
            assert _status(settings)["recovered_offsets"], "restart did not use the snapshots"
            assert _wait_images(settings, 120) == 120
            time.sleep(0.5)  # anything still in flight would now show up as a surplus
            assert int(_status(settings)["images"]) == 120  # type: ignore[call-overload]
            for image_id in ids:
                hits = stack.search.search_bytes(stack.store.get(image_id), 10).hits
                returned = [hit.image_id for hit in hits]
                assert returned[0] == image_id
                assert len(returned) == len(set(returned))
        finally:
            shard.kill()
            shard.wait(10)


def test_restart_with_a_fresh_broker_keeps_the_index(
    tmp_path: Path, model_dir: Path, photo_paths: list[Path], make_settings, publish
) -> None:
    settings = make_settings(tmp_path, model_dir)
    with LocalStack(settings) as stack:
        ids = publish(stack, photo_paths[:10], "restart")
        assert stack.wait_searchable(ids, TIMEOUT_S) == set()
    # The embedded broker is gone with its data; a new one is a new log epoch.
    restarted = settings.with_overrides(broker_port=free_port())
    with LocalStack(restarted) as stack:
        assert stack.search is not None
        assert stack.search.size == 10  # from the snapshots, before any replay
        for image_id in ids:
            assert (
                stack.search.search_bytes(stack.store.get(image_id), 1).hits[0].image_id == image_id
            )

"""A `visearch shard` process for tests that kill it: start, status, wait, settings."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from streams.broker import free_port
from streams.settings import Settings
from visearch.local.stack import settings_env

TIMEOUT_S = 120.0


def remote_shard_settings(
    make_settings: Callable[..., Settings], data_dir: Path, model_dir: Path
) -> Settings:
    """Private settings whose API scatters to one shard process on a free port,
    snapshotting every 0.3 s (so that a kill finds snapshots to restart from)."""
    port = free_port()
    return make_settings(
        data_dir,
        model_dir,
        shard_urls=f"http://127.0.0.1:{port}",
        shard_http_port=port,
        snapshot_interval_s=0.3,
    )


def start_shard_process(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
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
            shard_status(settings)
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()  # never leave it running behind a failed test
    process.wait(10)
    raise TimeoutError("the shard process did not start")


def shard_status(settings: Settings) -> dict[str, object]:
    url = f"{settings.remote_shards[0][0]}/v1/shard/status"
    with urllib.request.urlopen(url, timeout=2) as response:
        return dict(json.loads(response.read()))


def wait_images(settings: Settings, count: int) -> int:
    deadline = time.monotonic() + TIMEOUT_S
    images = -1
    while time.monotonic() < deadline:
        images = int(shard_status(settings)["images"])  # type: ignore[call-overload]
        if images >= count:
            return images
        time.sleep(0.05)
    return images

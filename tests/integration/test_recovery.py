"""Recovery on the real broker: a SIGKILLed shard process, and a restart with a fresh broker."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest
from shard_process import (
    remote_shard_settings,
    shard_status,
    start_shard_process,
    wait_images,
)

from streams.broker import free_port
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.local.stack import LocalStack

pytestmark = pytest.mark.integration
TIMEOUT_S = 120.0


def test_sigkilled_shard_restarts_from_snapshot_and_loses_nothing(
    tmp_path: Path, model_dir: Path, make_settings, publish
) -> None:
    settings = remote_shard_settings(make_settings, tmp_path, model_dir)
    paths = random.Random(7).sample(find_images(DEMO_CORPUS), 120)
    log_path = tmp_path / "shard.log"
    with LocalStack(settings) as stack:
        assert stack.search is not None
        shard = start_shard_process(settings, log_path)
        try:
            ids = publish(stack, paths[:40], "kill")
            assert wait_images(settings, 40) == 40
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
            shard = start_shard_process(settings, log_path)
            assert shard_status(settings)["recovered_offsets"], "restart did not use the snapshots"
            assert wait_images(settings, 120) == 120
            time.sleep(0.5)  # anything still in flight would now show up as a surplus
            assert int(shard_status(settings)["images"]) == 120  # type: ignore[call-overload]
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

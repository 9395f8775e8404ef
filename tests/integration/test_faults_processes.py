"""Process faults on the real broker: a SIGKILLed embedding worker, a broker restart.

(A SIGKILLed index shard process is in ``test_recovery.py``.) The tests of this
module share one stack and run in order; the broker restart goes last.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.settings import Settings
from streams.topics import ensure_topics
from visearch.stack import LocalStack, settings_env

pytestmark = pytest.mark.integration
TIMEOUT_S = 120.0


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> float:
    """Poll ``condition``; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - started


ASSIGNED = re.compile(r"assigned \S+ partitions \[([0-9, ]*)\]")


def _owned(log_path: Path) -> set[int] | None:
    """The uploads partitions a worker last said it owns (None: not assigned yet)."""
    found = ASSIGNED.findall(log_path.read_text(errors="replace"))
    if not found:
        return None
    return {int(p) for p in found[-1].split(",") if p.strip()}


def _start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "visearch", "worker"],
            env=settings_env(settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _assert_each_finds_itself_once(stack: LocalStack, ids: list[str]) -> None:
    assert stack.search is not None
    for image_id in ids:
        hits = stack.search.search_bytes(stack.store.get(image_id), 5).hits
        returned = [hit.image_id for hit in hits]
        assert returned[0] == image_id
        assert len(returned) == len(set(returned))


def test_sigkilled_worker_hands_its_partitions_over_and_nothing_is_lost(
    stack: LocalStack, photo_paths: list[Path], publish, tmp_path: Path, record_property
) -> None:
    settings = stack.settings
    everything = set(range(settings.upload_partitions))
    first_log, second_log = stack.worker_log, tmp_path / "worker-2.log"
    second = _start_worker(settings, second_log)
    try:

        def split() -> bool:
            owned = (_owned(first_log), _owned(second_log))
            return all(owned) and owned[0] | owned[1] == everything  # type: ignore[operator]

        _wait(split, "the uploads partitions split between two workers")
        assert not _owned(first_log) & _owned(second_log)  # type: ignore[operator]
        moved = _owned(second_log)

        ids = publish(stack, photo_paths[:20], "kill")
        time.sleep(0.3)  # mid-stream: both workers are embedding
        second.send_signal(signal.SIGKILL)
        second.wait(10)
        killed_at = time.monotonic()
        ids += publish(stack, photo_paths[20:40], "kill", 20)

        _wait(lambda: _owned(first_log) == everything, f"partitions {moved} moving back")
        assert stack.wait_searchable(ids, TIMEOUT_S) == set()
        catch_up_s = time.monotonic() - killed_at
        record_property("catch_up_after_sigkill_s", round(catch_up_s, 2))
        print(f"all 40 images searchable {catch_up_s:.1f} s after the SIGKILL")
        time.sleep(0.5)  # a late duplicate would show up now
        assert stack.search is not None and stack.search.size == 40
        _assert_each_finds_itself_once(stack, ids)
        stack.check_alive()
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(10)


@pytest.mark.skip(
    reason="known bug: after an embedded-broker restart the Faust worker reconnects but "
    "silently drops the new epoch's records whose offsets are below its last read offset "
    "(faust filters offset <= read offset); the worker must detect the new topic id and "
    "restart from the new log's start"
)
def test_broker_restart_is_reported_and_the_pipeline_reconnects(
    stack: LocalStack, photo_paths: list[Path], publish
) -> None:
    """The embedded broker keeps data in memory: a restart is an empty new log epoch."""
    settings = stack.settings
    assert stack.broker is not None and stack.worker is not None
    log_start = stack.worker_log.stat().st_size
    stack.broker.stop()
    time.sleep(5)  # longer than the session timeout (4 s): every client notices
    assert stack.worker.poll() is None, "the worker died instead of waiting for the broker"
    assert all(consumer.is_alive() for consumer in stack.consumers)
    stack.broker = EmbeddedBroker(settings.broker_host, settings.broker_port).start()
    ensure_topics(settings)

    ids = publish(stack, photo_paths[40:50], "after-restart")
    assert stack.wait_searchable(ids, 30) == set()
    _assert_each_finds_itself_once(stack, ids)
    worker_log = stack.worker_log.read_bytes()[log_start:].decode(errors="replace")
    assert settings.bootstrap_servers in worker_log or "broker" in worker_log.lower(), worker_log

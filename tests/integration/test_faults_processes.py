"""Process faults on the real broker: a SIGKILLed embedding worker, a broker restart.

(A SIGKILLed index shard process is in ``test_recovery.py``.) The tests of this
module share one stack and run in order; the broker restart goes last: it
needs the log that the first test wrote, so that the restarted broker's new
log has offsets below the ones every consumer had read.
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.schemas import ImageEmbedded, decode_vector_log
from streams.settings import Settings
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.local.stack import LocalStack, settings_env

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


def test_the_stack_restarts_a_sigkilled_worker_and_nothing_is_lost(
    stack: LocalStack,
    photo_paths: list[Path],
    publish,
    caplog: pytest.LogCaptureFixture,
    record_property,
) -> None:
    """The OOM killer's way (SIGKILL) mid-ingest: the supervisor logs the death with its
    signal, starts a new worker after its backoff, counts the restart, and every image
    published before and after is searchable once."""
    assert stack.worker is not None and stack.search is not None
    before = stack.search.size
    dead = stack.worker
    # Photos no other test of the module uses (a copy would be collapsed with its twin).
    taken = set(photo_paths)
    fresh = random.Random(7).sample([p for p in find_images(DEMO_CORPUS) if p not in taken], 50)
    with caplog.at_level(logging.ERROR, logger="visearch.local.supervision"):
        ids = publish(stack, fresh[:30], "heal")
        time.sleep(0.3)  # mid-stream
        dead.send_signal(signal.SIGKILL)
        dead.wait(10)
        killed_at = time.monotonic()
        restart_s = _wait(
            lambda: stack.worker is not dead and stack.worker.poll() is None,
            "a new embedding worker",
            timeout_s=30,
        )
        ids += publish(stack, fresh[30:], "heal", 30)
        assert stack.wait_searchable(ids, TIMEOUT_S) == set()
    record_property("worker_restart_after_sigkill_s", round(restart_s, 2))
    record_property("searchable_after_sigkill_s", round(time.monotonic() - killed_at, 2))
    assert any("died with signal SIGKILL" in r.getMessage() for r in caplog.records)
    assert ("embedding worker", "died", 1) in stack.restart_counts()
    time.sleep(0.5)  # a late duplicate would show up now
    assert stack.search.size == before + 50
    _assert_each_finds_itself_once(stack, ids[:5] + ids[-5:])
    stack.check_alive()


def _new_lines(path: Path, start: int) -> str:
    return path.read_bytes()[start:].decode(errors="replace")


def test_broker_restart_is_reported_and_the_pipeline_reconnects(
    stack: LocalStack,
    photo_paths: list[Path],
    publish,
    read_topic,
    caplog: pytest.LogCaptureFixture,
    record_property,
) -> None:
    """The embedded broker keeps data in memory: a restart is an empty new log epoch.

    The broker is SIGKILLed and stays down 5 s, longer than the session timeout
    (4 s), so every client notices; then the stack's supervisor restarts it on
    the same port and republishes the image store. Every consumer must notice
    the new epoch and read the new log from its start: the worker must embed
    the republished images although their offsets are below the ones it had
    read (Faust would drop them as already seen), and the shards must not
    resume at the old epoch's offsets.
    """
    settings = stack.settings
    caplog.set_level(logging.WARNING)
    before = publish(stack, photo_paths[40:45], "before-restart")
    assert stack.wait_searchable(before, TIMEOUT_S) == set()
    catalogue = sorted(stored.image_id for stored in stack.store)
    assert stack.broker is not None and stack.broker.pid is not None
    old_worker, old_epoch = stack.worker, stack.consumers[0].epoch
    assert old_worker is not None and old_epoch
    log_start = stack.worker_log.stat().st_size
    stack.broker_restart_delay_s = 5.0
    os.kill(stack.broker.pid, signal.SIGKILL)
    killed_at = time.monotonic()

    time.sleep(4.5)  # the broker is down: every client has noticed, nobody may hang or die
    assert old_worker.poll() is None, "the worker died instead of waiting for the broker"
    assert all(consumer.is_alive() for consumer in stack.consumers)
    _wait(lambda: stack.broker_restarts == 1, "the supervisor restarting the broker", 30)
    ids = publish(stack, photo_paths[45:55], "after-restart")
    assert stack.wait_searchable(ids, 30) == set()
    recovered_s = time.monotonic() - killed_at
    record_property("searchable_after_broker_restart_s", round(recovered_s, 2))
    print(f"new uploads searchable {recovered_s:.1f} s after the broker was killed")

    # The old worker may embed the new uploads before it notices the new epoch
    # and exits (75): wait for the supervisor to replace it, then read the log.
    _wait(lambda: stack.worker is not old_worker, "the worker's restart for the new epoch", 30)
    # Reported clearly: the outage, the new epoch, and the worker's restart for it.
    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert f"embedded broker on {settings.bootstrap_servers} exited with code -9" in messages
    assert "visearch-shard: broker unreachable" in messages, messages
    assert "visearch-shard: topic " in messages and "is a new log epoch" in messages
    assert "exited for a new log epoch" in messages
    worker_log = _new_lines(stack.worker_log, log_start)
    assert "embedding worker: broker unreachable" in worker_log, worker_log
    assert "exiting with code 75" in worker_log, worker_log
    assert old_worker.returncode == 75 and stack.worker is not old_worker
    assert stack.worker is not None and stack.worker.poll() is None

    # 0 lost: every catalogued image and every new one is searchable exactly once,
    # and the new log holds an embedding of each (the worker re-read it from 0).
    _assert_each_finds_itself_once(stack, catalogue + ids)
    assert stack.search is not None and stack.search.size == len(catalogue) + len(ids)
    assert all(consumer.epoch not in ("", old_epoch) for consumer in stack.consumers)
    embedded = set()
    for value in read_topic(settings, settings.topics.embeddings, settings.embedding_partitions):
        record = decode_vector_log(value)
        if isinstance(record, ImageEmbedded):
            embedded.add(record.image_id)
    assert set(catalogue + ids) <= embedded, sorted(set(catalogue + ids) - embedded)
    stack.check_alive()

"""The worker's progress beacon and the readiness check read from it (real files, real thread)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from streams.progress import ProgressBeacon, progress_check


def test_an_idle_or_briefly_busy_worker_is_ready(tmp_path: Path) -> None:
    beacon = ProgressBeacon(tmp_path / "w" / "progress.json")
    beacon.write()
    assert progress_check(beacon.path, max_busy_s=5, max_age_s=5) == {"ok": True}
    with beacon.busy():
        beacon.write()
        assert json.loads(beacon.path.read_text())["busy_since"] is not None
        assert progress_check(beacon.path, max_busy_s=5, max_age_s=5)["ok"]
    beacon.write()
    assert json.loads(beacon.path.read_text())["busy_since"] is None


def test_a_stuck_batch_a_frozen_worker_and_no_beacon_are_not_ready(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    assert not progress_check(path, 5, 5)["ok"]
    now = time.time()
    path.write_text(json.dumps({"written_at": now, "busy_since": now - 60}))
    stuck = progress_check(path, max_busy_s=20, max_age_s=10)
    assert not stuck["ok"] and "running for 60 s" in stuck["reason"]
    path.write_text(json.dumps({"written_at": now - 30, "busy_since": None}))
    frozen = progress_check(path, max_busy_s=20, max_age_s=10)
    assert not frozen["ok"] and "not reported for 30 s" in frozen["reason"]
    path.write_text("{not json")
    assert not progress_check(path, 5, 5)["ok"]


def test_the_thread_keeps_the_beacon_fresh_until_stopped(tmp_path: Path) -> None:
    beacon = ProgressBeacon(tmp_path / "progress.json", interval_s=0.05).start()
    try:
        first = json.loads(beacon.path.read_text())["written_at"] if beacon.path.exists() else 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if beacon.path.exists() and json.loads(beacon.path.read_text())["written_at"] > first:
                break
            time.sleep(0.02)
        assert json.loads(beacon.path.read_text())["written_at"] > first
    finally:
        beacon.stop()

"""The restart policy of supervised children (pure logic: a fake process and clock)."""

from __future__ import annotations

import logging
import signal

import pytest

from visearch.local.supervision import (
    GiveUp,
    RestartCollector,
    RestartPolicy,
    SupervisedChild,
    child_restart_counts,
    describe_exit,
)


class FakeProcess:
    """Stands in for a Popen: ``returncode`` None while alive."""

    count = 0

    def __init__(self) -> None:
        FakeProcess.count += 1
        self.pid = 1000 + FakeProcess.count
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _child(policy: RestartPolicy | None = None, planned_exit: int | None = 75):
    clock = Clock()
    child = SupervisedChild("worker", FakeProcess, policy or RestartPolicy(), planned_exit, clock)  # type: ignore[arg-type]
    child.start()
    return child, clock


def test_a_dead_child_is_restarted_after_its_backoff_and_counted(caplog) -> None:
    child, clock = _child()
    first = child.process
    child.check()
    assert child.process is first  # alive: nothing to do
    clock.now += 60
    first.returncode = -signal.SIGKILL  # type: ignore[union-attr]
    with caplog.at_level(logging.ERROR):
        child.check()
    assert "died with signal SIGKILL" in caplog.text
    assert child.restarting() and child.process is first
    clock.now += 0.4
    child.check()
    assert child.process is first  # backoff 0.5 s not over
    clock.now += 0.2
    child.check()
    assert child.process is not first and child.process.poll() is None  # type: ignore[union-attr]
    assert child.restarts["died"] == 1 and not child.restarting()


def test_backoff_doubles_on_fast_failures_and_gives_up_loudly() -> None:
    policy = RestartPolicy(initial_backoff_s=1, max_backoff_s=4, stable_s=10, max_fast_failures=3)
    child, clock = _child(policy)
    waits = []
    for _ in range(3):
        child.process.returncode = 1  # type: ignore[union-attr]
        child.check()
        assert child._restart_at is not None
        waits.append(child._restart_at - clock.now)
        clock.now = child._restart_at
        child.check()
    assert waits == [1, 2, 4]
    child.process.returncode = 1  # type: ignore[union-attr]
    with pytest.raises(GiveUp, match="died 4 times in a row"):
        child.check()


def test_a_child_that_stayed_up_starts_the_backoff_afresh() -> None:
    policy = RestartPolicy(initial_backoff_s=1, stable_s=10, max_fast_failures=2)
    child, clock = _child(policy)
    for _ in range(5):  # each death after 30 s up: never a run of fast failures
        clock.now += 30
        child.process.returncode = 3  # type: ignore[union-attr]
        child.check()
        assert child._restart_at == clock.now + 1
        clock.now += 1
        child.check()
    assert child.restarts["died"] == 5


def test_a_planned_exit_restarts_at_once_and_is_not_a_failure() -> None:
    child, _ = _child(planned_exit=75)
    first = child.process
    first.returncode = 75  # type: ignore[union-attr]
    child.check()
    assert child.process is not first and child.restarts["new_epoch"] == 1
    assert child.fast_failures == 0


def test_exit_descriptions_and_the_metric() -> None:
    assert describe_exit(-9) == "signal SIGKILL" and describe_exit(3) == "exit code 3"
    child, _ = _child()
    child.restarts["died"] = 2
    (family,) = RestartCollector(lambda: child_restart_counts(child)).collect()
    values = {tuple(s.labels.values()): s.value for s in family.samples}
    assert values[("worker", "died")] == 2 and values[("worker", "new_epoch")] == 0

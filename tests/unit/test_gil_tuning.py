"""The GIL switch interval setting reaches the interpreter (and 0 leaves it alone)."""

from __future__ import annotations

import sys

import pytest

from streams.gil_tuning import set_switch_interval
from streams.process_tuning import tune_process
from streams.settings import Settings


@pytest.fixture
def restore_interval():
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_interval_in_milliseconds_is_set(restore_interval):
    assert set_switch_interval(2.0)
    assert sys.getswitchinterval() == pytest.approx(0.002)


def test_zero_keeps_the_current_interval(restore_interval):
    sys.setswitchinterval(0.004)
    assert not set_switch_interval(0)
    assert sys.getswitchinterval() == pytest.approx(0.004)


def test_process_tuning_applies_the_setting(restore_interval):
    tune_process(Settings(gil_switch_interval_ms=0.5))
    assert sys.getswitchinterval() == pytest.approx(0.0005)

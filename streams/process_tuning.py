"""Per-process runtime settings applied by every visearch process as it starts."""

from __future__ import annotations

from streams.gil_tuning import set_switch_interval
from streams.malloc_tuning import set_mmap_threshold
from streams.settings import Settings


def tune_process(settings: Settings) -> None:
    """The allocator's mmap threshold and the GIL switch interval (see both modules)."""
    set_mmap_threshold(settings.malloc_mmap_threshold)
    set_switch_interval(settings.gil_switch_interval_ms)

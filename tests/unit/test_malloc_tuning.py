"""A fixed mmap threshold: freed multi-MB blocks go back to the OS (glibc, Linux)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from streams.malloc_tuning import set_mmap_threshold

# Frees one 8 MB block (glibc then raises its dynamic threshold to 8 MB), then
# allocates 2 MB blocks with small long-lived objects in between and frees
# the big ones: prints the RSS growth in MB that stays after the frees.
PROBE = textwrap.dedent(
    """
    import sys
    from streams.malloc_tuning import set_mmap_threshold

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024

    if sys.argv[1] == "fixed":
        assert set_mmap_threshold(1 << 20)
    first = bytearray(8 << 20)
    del first
    before = rss_mb()
    blocks, pins = [], []
    for n in range(40):
        blocks.append(bytearray(2 << 20))
        pins.append(bytearray(1024))
    del blocks
    print(rss_mb() - before)
    """
)


def _retained_mb(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_fixed_threshold_returns_freed_blocks():
    assert _retained_mb("fixed") < 8  # 80 MB were allocated and freed
    assert _retained_mb("default") > 40  # what glibc keeps without it, pinned by the small objects


def test_zero_leaves_the_allocator_alone():
    assert set_mmap_threshold(0) is False

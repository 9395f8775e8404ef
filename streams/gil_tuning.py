"""Hand the GIL back sooner to threads returning from C (faiss, ONNX Runtime, PIL).

A search makes a few dozen calls that release the GIL (each faiss call, the
ONNX Runtime run, image decoding). Returning from one, the thread must take
the GIL back from whichever Python thread took it meanwhile (ingest, feedback,
Kafka I/O, the HTTP loop), and CPython only asks that thread to let go after
the switch interval: 5 ms by default, so every call can cost up to 5 ms more.
``python -m bench.gil_switch`` (two Python threads busy beside a search over
8 partitions of 6,000 vectors, 2 vCPU): p50 / p95 5.6 / 9.0 ms at 5 ms,
4.1 / 8.1 ms at 1 ms, 3.5 / 4.5 ms at 0.2 ms. A shorter interval costs
CPU-bound threads only more frequent hand-overs.
"""

from __future__ import annotations

import sys


def set_switch_interval(milliseconds: float) -> bool:
    """Use ``milliseconds`` as the interpreter's switch interval; 0 keeps Python's default."""
    if milliseconds <= 0:
        return False
    sys.setswitchinterval(milliseconds / 1000)
    return True

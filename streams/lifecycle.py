"""Starting and stopping: one context-manager protocol, and child processes
that cannot outlive their parent."""

from __future__ import annotations

import ctypes
import signal
import sys
from types import TracebackType
from typing import Self


class Lifecycle:
    """``with thing:`` starts it and always stops it; subclasses define both steps."""

    def start(self) -> Self:
        """Acquire resources; the default has none to acquire."""
        return self

    def stop(self) -> None:
        """Release resources; must be safe to call twice and after a failed start."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def die_with_parent() -> None:
    """``preexec_fn`` for children: SIGTERM them when the parent dies (Linux).

    Without it a SIGKILLed ``visearch run`` leaves a broker holding its port
    and workers polling a broker that is gone.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

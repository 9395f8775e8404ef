"""One context-manager protocol for everything that starts and stops."""

from __future__ import annotations

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

"""The feedback aggregator as one startable unit: state, consumer and its producer.

Runs inside the API process for ``visearch run`` and on its own for
``visearch feedback`` (the Helm chart's feedback workers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

from feedback.consumer import FeedbackConsumer, aggregation_policy
from feedback.state import FeedbackState
from streams.errors import VisearchError
from streams.lifecycle import Lifecycle
from streams.model_registry import KnownModels
from streams.publisher import EventPublisher
from streams.settings import Settings


class FeedbackStartError(VisearchError, RuntimeError):
    """The aggregator could not reach its topic or load its state."""


class FeedbackService(Lifecycle):
    """Aggregates every partition of the interactions topic until stopped."""

    def __init__(
        self,
        settings: Settings,
        start_timeout_s: float = 30.0,
        model_label: Callable[[str], str] | None = None,
    ) -> None:
        """``model_label``: how interactions' model versions become labels (a process
        that already follows the model registry passes its own, so that it keeps one
        watcher of the models topic; otherwise this service follows it itself)."""
        self.settings = settings
        self.start_timeout_s = start_timeout_s
        # Model versions become labels only once the registry names them.
        self.models: KnownModels | None = None
        if model_label is None:
            self.models = KnownModels(settings)
            model_label = self.models.label
        self.state = FeedbackState(
            range(settings.interaction_partitions), aggregation_policy(settings, model_label)
        )
        self.publisher: EventPublisher | None = None
        self.consumer: FeedbackConsumer | None = None

    def start(self) -> Self:
        if self.models is not None:
            try:
                self.models.start(self.start_timeout_s)
            except TimeoutError as exc:
                self.models.stop()
                raise FeedbackStartError(f"feedback: {exc}") from exc
        self.publisher = EventPublisher(self.settings)
        self.consumer = FeedbackConsumer(self.settings, self.state, self.publisher)
        self.consumer.start()
        if not self.consumer.ready.wait(self.start_timeout_s) or self.consumer.error:
            self.stop()
            raise FeedbackStartError(f"feedback consumer did not start: {self.consumer.error}")
        return self

    def summary(self) -> dict[str, Any]:
        return self.state.summary()

    def is_alive(self) -> bool:
        return self.consumer is not None and self.consumer.is_alive()

    def stop(self) -> None:
        if self.models is not None:
            self.models.stop()
        if self.consumer is not None:
            self.consumer.stop()
            self.consumer.join(timeout=15)
            self.consumer = None
        if self.publisher is not None:
            self.publisher.stop()
            self.publisher = None

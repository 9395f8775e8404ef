"""A Faust stream whose batches wait for their first event without a timer.

Faust's ``take_events(n, within=t)`` waits ``t`` for its buffer to fill and
then loops, whether anything arrived or not: with the embedding agent's 2 ms
linger an idle worker woke its event loop 500 times a second (most of the
worker's idle CPU, spent in epoll and the loop's bookkeeping).
:meth:`BatchingStream.take_batches` has the same contract (at most ``n``
events, yielded once the buffer is full or ``within`` has passed since its
*first* event; events acked after the batch was consumed, so a crash before
that delivers them again), but an empty buffer waits for its first event
without a timer: no wake-ups while nothing arrives, the same latency when
something does.

The buffering follows Faust's own generator (a processor appends each event
of the stream, the stream is drained passively in the background): only the
wait differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.types import EventT


class BatchingStream(faust.Stream):
    """``faust.Stream`` plus :meth:`take_batches`; set as the app's ``Stream`` class."""

    async def take_batches(self, max_: int, within: float) -> AsyncIterator[list[EventT]]:
        """Yield lists of at most ``max_`` events; see the module docstring."""
        events: list[EventT] = []
        first = asyncio.Event()
        full = asyncio.Event()
        consumed = asyncio.Event()
        consuming: asyncio.Future[None] | None = None
        acks_were_enabled = self.enable_acks

        async def add_to_buffer(value: Any) -> Any:
            nonlocal consuming
            try:
                if consuming is not None:  # the batch is being handed out: wait for it
                    try:
                        await consuming
                    finally:
                        consuming = None
                event = self.current_event
                if event is None:
                    raise RuntimeError("take_batches: no current event")
                events.append(event)
                first.set()
                if len(events) >= max_:
                    full.set()
                    consumed.clear()
                    await self.wait(consumed)  # type: ignore[arg-type]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.exception("Error adding to the batch buffer: %r", exc)
                await self.crash(exc)
            return value

        self.enable_acks = False  # events are acked here, after their batch
        self.add_processor(add_to_buffer)
        self._enable_passive(aiter(self.channel))  # type: ignore[arg-type]
        try:
            while not self.should_stop:
                await self.wait_for_stopped(first)  # type: ignore[arg-type]
                await self.wait_for_stopped(full, timeout=within)  # type: ignore[arg-type]
                if not events:
                    continue
                consuming = asyncio.get_running_loop().create_future()
                try:
                    yield list(events)
                finally:
                    batch = list(events)
                    events.clear()
                    first.clear()
                    full.clear()
                    for event in batch:
                        await self.ack(event)
                    if not consuming.done():
                        consuming.set_result(None)
                    consumed.set()
        finally:
            self.enable_acks = acks_were_enabled
            self._processors.remove(add_to_buffer)

"""Faust agents: thin loops that move messages to and from the pure core."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import faust

from encoders.preprocess import ImageLimits
from encoders.tiles import tile_boxes
from streams.embedding import (
    BatchPreparer,
    LateUpload,
    PreparedUpload,
    RawMessage,
    UploadReader,
    dead_letter,
    embed_prepared,
    log_dead_letter,
)
from streams.encoder_set import EncoderSet
from streams.progress import ProgressBeacon
from streams.schemas import (
    DeadLetter,
    ImageEmbedded,
    ImageUpdated,
    ImageUploaded,
    SchemaError,
    decode,
    encode,
)
from streams.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
# Concurrent http(s) image fetches per worker: they wait on the network, not the CPU.
FETCH_THREADS = 8


def raw_topic(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    """A topic of undecoded bytes: agents decode themselves, so bad input is a dead letter."""
    return app.topic(name, partitions=partitions, key_serializer="raw", value_serializer="raw")


def raw_message(event: faust.EventT) -> RawMessage:
    message = event.message
    return RawMessage(message.topic, message.partition, message.offset, message.value or b"")


def guarded(call: Callable[[T], bool], record: T) -> bool:
    """``call(record)``, logging instead of raising: a copy that cannot be written
    (a full disk) must not stop the stream that indexes the image."""
    try:
        return call(record)
    except Exception:
        log.exception("could not keep a copy for %r", record)
        return False


async def send_dead_letter(topic: faust.TopicT, letter: DeadLetter) -> None:
    log_dead_letter(letter)
    await topic.send(value=encode(letter))


class UploadKeeper(Protocol):
    """Keeps a copy of inline uploads and follows their updates (the worker's
    ``visearch.catalog.kept_uploads.InlineUploadKeeper``); both calls block on disk."""

    def keep(self, event: ImageUploaded) -> bool: ...

    def update(self, update: ImageUpdated) -> bool: ...


def register_agents(
    app: faust.App,
    settings: Settings,
    encoders: EncoderSet,
    progress: ProgressBeacon | None = None,
    keeper: UploadKeeper | None = None,
) -> None:
    """The embedding agent and the update forwarder, on their topics.

    ``progress`` is marked busy around every batch (streams/progress.py).
    ``keeper``: given the batch's uploads before their embeddings are published
    (so an image is kept by the time it is searchable), and every update after
    it is forwarded.
    """
    names = settings.topics
    pipeline = EmbeddingPipeline(
        settings,
        encoders,
        embeddings=raw_topic(app, names.embeddings, settings.embedding_partitions),
        dead_letters=raw_topic(app, names.dead_letter, 1),
        progress=progress or ProgressBeacon(settings.worker_progress_path),
        keeper=keeper,
    )
    uploads = raw_topic(app, names.uploads, settings.upload_partitions)
    updates = raw_topic(app, names.updates, settings.update_partitions)
    app.agent(uploads, name="embed-uploads")(pipeline.embed)
    app.agent(updates, name="forward-updates")(pipeline.forward)


class EmbeddingPipeline:
    """What the worker's two agents do: embed uploads in batches, forward updates.

    Inference runs in one thread (ONNX Runtime has its own intra-op threads)
    so the event loop keeps heartbeats and fetches flowing; decoding runs in
    a small pool beside it, because Pillow and numpy release the GIL, and
    http(s) fetches in a pool of their own, so waiting on a server never
    takes a decode thread. Kept copies are written from a pool of their own.
    """

    def __init__(
        self,
        settings: Settings,
        encoders: EncoderSet,
        embeddings: faust.TopicT,
        dead_letters: faust.TopicT,
        progress: ProgressBeacon,
        keeper: UploadKeeper | None,
    ) -> None:
        self.settings = settings
        self.encoders = encoders
        self.embeddings = embeddings
        self.dead_letters = dead_letters
        self.progress = progress
        self.keeper = keeper
        reader = UploadReader(
            allowed_roots=[settings.image_store_dir, *settings.image_root_dirs],
            limits=ImageLimits.from_settings(settings),
            tiles=tile_boxes(settings.tiles),
            max_inline_bytes=settings.max_inline_bytes,
            remote=settings.fetch_policy(),
            store_root=settings.image_store_dir,
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self.preparer = BatchPreparer(
            reader,
            decode_pool=ThreadPoolExecutor(
                max_workers=settings.decode_threads, thread_name_prefix="decode"
            ),
            fetch_pool=ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="fetch"),
            event_timeout_s=settings.embed_event_timeout_s,
        )
        self.keep_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="keep")
        self.late_tasks: set[asyncio.Task[None]] = set()

    async def embed(self, stream: faust.StreamT) -> None:
        """ImageUploaded -> (decode, read, preprocess, embed in batches) -> ImageEmbedded."""
        loop = asyncio.get_running_loop()
        async for events in stream.take_batches(  # type: ignore[attr-defined]
            self.settings.embed_batch_size, within=self.settings.embed_linger_s
        ):
            with self.progress.busy():
                batch = await self.preparer.prepare([raw_message(event) for event in events])
                for late in batch.late:
                    events[late.index].message.incref()  # held until finish_late acks it
                    task = asyncio.create_task(self.finish_late(events[late.index], late))
                    self.late_tasks.add(task)
                    task.add_done_callback(self.late_tasks.discard)
                embedded, _ = await asyncio.gather(
                    loop.run_in_executor(self.executor, self.embed_all, batch.prepared),
                    self.keep_copies(batch.prepared),
                )
                await self.publish(embedded, batch.dead_letters)

    async def forward(self, stream: faust.StreamT) -> None:
        """ImageUpdated -> the embeddings log, under the image's key.

        Same key, same partition: the shard that holds the image's vectors sees
        the change in order with them, and a replay of the log replays it too.
        """
        async for event in stream.events():
            message = raw_message(event)
            try:
                update = decode(ImageUpdated, message.value or b"")
            except SchemaError as exc:
                await send_dead_letter(
                    self.dead_letters, dead_letter(message, exc.code, exc.message)
                )
                continue
            await self.embeddings.send(key=update.image_id.encode(), value=encode(update))
            if self.keeper is not None:
                await asyncio.get_running_loop().run_in_executor(
                    self.keep_pool, guarded, self.keeper.update, update
                )

    def embed_all(self, prepared: list[PreparedUpload]) -> list[ImageEmbedded]:
        """Embed with the serving encoder, and with each candidate during a rollout.

        Each image is read and decoded once, whatever the number of versions;
        dead letters therefore come once too.
        """
        return [
            record
            for encoder in self.encoders.active()
            for record in embed_prepared(prepared, encoder)
        ]

    async def keep_copies(self, prepared: list[PreparedUpload]) -> None:
        """Hand the batch's inline uploads to the keeper, the newest of each image."""
        keeper = self.keeper
        if keeper is None:
            return
        # One write per image: two uploads of one id in a batch would race in the pool.
        newest: dict[str, ImageUploaded] = {}
        for upload in prepared:
            event = upload.event
            current = newest.get(event.image_id)
            if event.image_b64 and (current is None or event.uploaded_at > current.uploaded_at):
                newest[event.image_id] = event
        loop = asyncio.get_running_loop()
        pool = self.keep_pool
        await asyncio.gather(
            *(loop.run_in_executor(pool, guarded, keeper.keep, e) for e in newest.values())
        )

    async def publish(self, embedded: list[ImageEmbedded], letters: list[DeadLetter]) -> None:
        for record in embedded:
            await self.embeddings.send(key=record.image_id.encode(), value=encode(record))
        for letter in letters:
            await send_dead_letter(self.dead_letters, letter)

    async def finish_late(self, event: faust.EventT, late: LateUpload) -> None:
        """Embed an upload that was still fetching when its batch went on, then ack it.

        The batch's own ack left one reference on the message (see :meth:`embed`),
        so Faust commits no offset past it until this is done.
        """
        result = await late.wait()
        if isinstance(result, DeadLetter):
            await self.publish([], [result])
        else:
            loop = asyncio.get_running_loop()
            embedded = await loop.run_in_executor(self.executor, self.embed_all, [result])
            await self.publish(embedded, [])
        event.ack()

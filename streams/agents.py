"""Faust agents: thin loops that move messages to and from the pure core."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import faust

from encoders.preprocess import ImageLimits
from encoders.tiles import tile_boxes
from streams.embedding import (
    EmbedOutcome,
    RawMessage,
    UploadReader,
    dead_letter,
    embed_prepared,
    log_dead_letter,
)
from streams.encoder_set import EncoderSet
from streams.remote_fetch import RemoteFetch
from streams.schemas import DeadLetter, ImageUpdated, SchemaError, decode, encode
from streams.settings import Settings

log = logging.getLogger(__name__)


def raw_topic(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    """A topic of undecoded bytes: agents decode themselves, so bad input is a dead letter."""
    return app.topic(name, partitions=partitions, key_serializer="raw", value_serializer="raw")


def raw_message(event: faust.EventT) -> RawMessage:
    message = event.message
    return RawMessage(message.topic, message.partition, message.offset, message.value or b"")


async def send_dead_letter(topic: faust.TopicT, letter: DeadLetter) -> None:
    log_dead_letter(letter)
    await topic.send(value=encode(letter))


def register_agents(app: faust.App, settings: Settings, encoders: EncoderSet) -> None:
    """The embedding agent and the update forwarder, on their topics."""
    names = settings.topics
    uploads = raw_topic(app, names.uploads, settings.upload_partitions)
    updates = raw_topic(app, names.updates, settings.update_partitions)
    embeddings = raw_topic(app, names.embeddings, settings.embedding_partitions)
    dead_letters = raw_topic(app, names.dead_letter, 1)
    reader = UploadReader(
        allowed_roots=[settings.image_store_dir],
        limits=ImageLimits.from_settings(settings),
        tiles=tile_boxes(settings.tiles),
        max_inline_bytes=settings.max_inline_bytes,
        remote=RemoteFetch(settings.image_fetch_timeout_s, settings.image_fetch_allow_private),
    )
    # Inference runs in one thread (ONNX Runtime has its own intra-op threads)
    # so the event loop keeps heartbeats and fetches flowing; decoding runs in
    # a small pool beside it, because Pillow and numpy release the GIL.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
    prepare_pool = ThreadPoolExecutor(
        max_workers=settings.decode_threads, thread_name_prefix="decode"
    )

    def embed_with_every_version(messages: list[RawMessage]) -> EmbedOutcome:
        """Embed with the serving encoder, and with each candidate during a rollout.

        Each image is read and decoded once, whatever the number of versions;
        dead letters therefore come once too.
        """
        prepared, letters = reader.prepare_all(messages, prepare_pool)
        outcome = EmbedOutcome(dead_letters=letters)
        for encoder in encoders.active():
            outcome.embedded.extend(embed_prepared(prepared, encoder))
        return outcome

    @app.agent(uploads, name="embed-uploads")
    async def embed(stream: faust.StreamT) -> None:
        """ImageUploaded -> (decode, read, preprocess, embed in batches) -> ImageEmbedded."""
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(  # type: ignore[attr-defined]
            settings.embed_batch_size, within=settings.embed_linger_s
        ):
            messages = [raw_message(event) for event in events]
            outcome = await loop.run_in_executor(executor, embed_with_every_version, messages)
            for record in outcome.embedded:
                await embeddings.send(key=record.image_id.encode(), value=encode(record))
            for letter in outcome.dead_letters:
                await send_dead_letter(dead_letters, letter)

    @app.agent(updates, name="forward-updates")
    async def forward(stream: faust.StreamT) -> None:
        """ImageUpdated -> the embeddings log, under the image's key.

        Same key, same partition: the shard that holds the image's vectors sees
        the change in order with them, and a replay of the log replays it too.
        """
        async for event in stream.events():
            message = raw_message(event)
            try:
                update = decode(ImageUpdated, message.value or b"")
            except SchemaError as exc:
                await send_dead_letter(dead_letters, dead_letter(message, exc.code, exc.message))
                continue
            await embeddings.send(key=update.image_id.encode(), value=encode(update))

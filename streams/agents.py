"""Faust agents: thin loops that move messages to and from the pure core."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import faust

from encoders.preprocess import ImageLimits
from encoders.runtime import OnnxEncoder
from streams.embedding import RawMessage, embed_uploads
from streams.schemas import encode
from streams.settings import Settings

log = logging.getLogger(__name__)


def register_embedding_agent(app: faust.App, settings: Settings, encoder: OnnxEncoder) -> None:
    """ImageUploaded -> (decode, read, preprocess, embed in batches) -> ImageEmbedded."""
    names = settings.topics
    uploads = app.topic(
        names.uploads,
        partitions=settings.upload_partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    embeddings = app.topic(
        names.embeddings,
        partitions=settings.embedding_partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    dead_letters = app.topic(
        names.dead_letter, partitions=1, key_serializer="raw", value_serializer="raw"
    )
    allowed_roots = [settings.image_store_dir]
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    # One thread: inference already uses every core through ONNX Runtime, and
    # keeping it off the event loop keeps heartbeats and fetches flowing.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")

    @app.agent(uploads, name="embed-uploads")
    async def embed(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(  # type: ignore[attr-defined]
            settings.embed_batch_size, within=settings.embed_linger_s
        ):
            messages = [
                RawMessage(
                    topic=event.message.topic,
                    partition=event.message.partition,
                    offset=event.message.offset,
                    value=event.message.value,
                )
                for event in events
            ]
            outcome = await loop.run_in_executor(
                executor, embed_uploads, messages, encoder, allowed_roots, limits
            )
            for record in outcome.embedded:
                await embeddings.send(key=record.image_id.encode(), value=encode(record))
            for letter in outcome.dead_letters:
                log.warning(
                    "dead letter %s/%d@%d %s: %s",
                    letter.source_topic,
                    letter.partition,
                    letter.offset,
                    letter.error_code,
                    letter.message,
                )
                await dead_letters.send(value=encode(letter))

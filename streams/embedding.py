"""The embedding step as a plain function: upload messages in, embeddings out.

The Faust agent only moves messages; everything that can fail is here and is
tested without Kafka. One bad message never fails the batch: it becomes a
dead-letter record with its reason, and the rest are embedded together.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import astuple, dataclass, field
from pathlib import Path

import numpy as np

from encoders.preprocess import (
    CropBox,
    ImageLimits,
    PreprocessError,
    decode_image,
)
from encoders.runtime import OnnxEncoder
from encoders.tiles import image_inputs
from streams.image_source import ImageSourceError, read_image_bytes
from streams.remote_fetch import RemoteFetch
from streams.schemas import (
    DeadLetter,
    ImageEmbedded,
    ImageUploaded,
    SchemaError,
    decode,
    is_http_uri,
    result_uri,
    vector_to_b64,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawMessage:
    """A Kafka message as the agent received it."""

    topic: str
    partition: int
    offset: int
    value: bytes


@dataclass
class EmbedOutcome:
    """Embeddings to publish and dead letters to record."""

    embedded: list[ImageEmbedded] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


# Original bytes kept in a dead letter: base64 of this fits well under the
# default 1 MB producer request limit, so recording a huge bad message can never
# fail (and stop the agent) itself. A message this big is not replayable anyway.
MAX_DEAD_LETTER_ORIGINAL = 512 * 1024
# Room for the fields of an upload event beside its inline image.
EVENT_OVERHEAD_BYTES = 64 * 1024


def dead_letter(message: RawMessage, code: str, reason: str) -> DeadLetter:
    """A dead-letter record that keeps the original bytes for replay (truncated if huge)."""
    original = message.value or b""
    if len(original) > MAX_DEAD_LETTER_ORIGINAL:
        reason = (
            f"{reason} (original truncated to {MAX_DEAD_LETTER_ORIGINAL} of {len(original)} bytes)"
        )
        original = original[:MAX_DEAD_LETTER_ORIGINAL]
    return DeadLetter(
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        error_code=code,
        message=reason,
        original_b64=base64.b64encode(original).decode(),
        failed_at=time.time(),
    )


def log_dead_letter(letter: DeadLetter) -> None:
    """One warning per dead letter, the same wherever it was made."""
    log.warning(
        "dead letter %s/%d@%d %s: %s",
        letter.source_topic,
        letter.partition,
        letter.offset,
        letter.error_code,
        letter.message,
    )


def max_event_bytes(max_inline_bytes: int) -> int:
    """The largest upload event worth parsing: a maximal inline image plus the fields."""
    return 4 * (max_inline_bytes // 3 + 1) + EVENT_OVERHEAD_BYTES


@dataclass(frozen=True)
class PreparedUpload:
    """An upload that passed every check, with its model inputs (global first, then tiles)."""

    message: RawMessage
    event: ImageUploaded
    inputs: list[np.ndarray]


Prepared = PreparedUpload | DeadLetter


@dataclass(frozen=True)
class UploadReader:
    """Everything needed to turn one upload message into model inputs, or a dead letter.

    Reading, decoding and preprocessing are a third of the CPU time per image
    and Pillow releases the GIL while it works, so a thread pool prepares a
    batch in parallel while ONNX Runtime is free for the previous one.
    ``store_root``: the image store, where an event may only name its own file.
    """

    allowed_roots: Sequence[Path]
    limits: ImageLimits
    tiles: Sequence[CropBox] = ()
    max_inline_bytes: int | None = None
    remote: RemoteFetch | None = None
    store_root: Path | None = None

    def parse(self, message: RawMessage) -> ImageUploaded | DeadLetter:
        """The upload event of ``message``, or its dead letter (cheap: no I/O)."""
        limit = self.max_inline_bytes
        if limit is not None and len(message.value) > max_event_bytes(limit):
            reason = f"{len(message.value)} bytes exceeds {max_event_bytes(limit)}"
            return dead_letter(message, "too_large", reason)
        try:
            return decode(ImageUploaded, message.value or b"")
        except SchemaError as exc:
            return dead_letter(message, exc.code, exc.message)

    def is_remote(self, event: ImageUploaded) -> bool:
        """Whether the bytes come over the network (slow and unbounded by our own disk)."""
        return self.remote is not None and not event.image_b64 and is_http_uri(event.uri)

    def prepare_event(self, message: RawMessage, event: ImageUploaded) -> Prepared:
        """Read, decode and preprocess a parsed upload; any failure is a dead letter."""
        try:
            data = read_image_bytes(
                event,
                self.allowed_roots,
                self.limits.max_bytes,
                max_inline_bytes=self.max_inline_bytes,
                remote=self.remote,
                store_root=self.store_root,
            )
            inputs = image_inputs(decode_image(data, self.limits), self.tiles)
        except (ImageSourceError, PreprocessError) as exc:
            return dead_letter(message, exc.code, exc.message)
        except Exception as exc:  # a decoder bug must cost one message, not the stream
            log.exception("unexpected error on %s/%d@%d", *astuple(message)[:3])
            return dead_letter(message, "internal_error", f"{type(exc).__name__}: {exc}")
        return PreparedUpload(message, event, inputs)

    def prepare(self, message: RawMessage) -> Prepared:
        """Parse, read, decode and preprocess one message; any failure is a dead letter."""
        parsed = self.parse(message)
        return parsed if isinstance(parsed, DeadLetter) else self.prepare_event(message, parsed)

    def prepare_all(
        self, messages: Sequence[RawMessage], pool: Executor | None = None
    ) -> tuple[list[PreparedUpload], list[DeadLetter]]:
        """Prepare a batch (in ``pool`` when given), keeping the message order."""
        results = pool.map(self.prepare, messages) if pool else map(self.prepare, messages)
        return split_prepared(results)


def split_prepared(results: Iterable[Prepared]) -> tuple[list[PreparedUpload], list[DeadLetter]]:
    """Prepared uploads and dead letters, each in the order given."""
    prepared: list[PreparedUpload] = []
    letters: list[DeadLetter] = []
    for result in results:
        if isinstance(result, DeadLetter):
            letters.append(result)
        else:
            prepared.append(result)
    return prepared, letters


@dataclass
class LateUpload:
    """An upload still being fetched when its batch went on; ``index`` in that batch."""

    index: int
    message: RawMessage
    result: asyncio.Future[Prepared]
    deadline: float  # loop time after which it becomes a ``prepare_timeout`` dead letter

    async def wait(self) -> Prepared:
        """Its preparation, or a dead letter once the deadline passes."""
        remaining = self.deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(asyncio.shield(self.result), max(0.0, remaining))
        except TimeoutError:
            return timeout_letter(self.message, "its image took too long to fetch and decode")


@dataclass
class BatchPreparation:
    """A batch ready to embed: prepared uploads, dead letters, and uploads still fetching."""

    prepared: list[PreparedUpload] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    late: list[LateUpload] = field(default_factory=list)


def timeout_letter(message: RawMessage, why: str) -> DeadLetter:
    """The dead letter of an upload that missed its deadline (``prepare_timeout``)."""
    return dead_letter(message, "prepare_timeout", why)


@dataclass(frozen=True)
class BatchPreparer:
    """Prepares a batch so that one slow upload never holds the others back.

    Uploads whose bytes are local (inline, a file) are read and decoded in
    ``decode_pool``; one that takes longer than ``event_timeout_s`` becomes a
    ``prepare_timeout`` dead letter and the batch goes on. Uploads fetched
    over http(s) run in ``fetch_pool`` (waiting on the network must not take
    a decode thread); the batch waits ``patience_s`` for them after the local
    ones are done, and those still fetching are handed back as ``late``, to
    be embedded on their own when they arrive. A slow server therefore costs
    the rest of the batch at most ``patience_s``.
    """

    reader: UploadReader
    decode_pool: Executor
    fetch_pool: Executor
    event_timeout_s: float
    patience_s: float = 0.2

    async def prepare(self, messages: Sequence[RawMessage]) -> BatchPreparation:
        loop = asyncio.get_running_loop()
        results: list[Prepared | None] = [None] * len(messages)
        local: dict[asyncio.Future[Prepared], int] = {}
        remote: dict[asyncio.Future[Prepared], int] = {}
        for index, message in enumerate(messages):
            parsed = self.reader.parse(message)
            if isinstance(parsed, DeadLetter):
                results[index] = parsed
                continue
            lane, pool = (
                (remote, self.fetch_pool)
                if self.reader.is_remote(parsed)
                else (local, self.decode_pool)
            )
            future = loop.run_in_executor(pool, self.reader.prepare_event, message, parsed)
            lane[future] = index
        deadline = loop.time() + self.event_timeout_s
        if local:
            await asyncio.wait(local, timeout=self.event_timeout_s)
        for future, index in local.items():
            results[index] = (
                future.result()
                if future.done()
                else timeout_letter(messages[index], "reading and decoding it took too long")
            )
        batch = BatchPreparation()
        if remote:
            await asyncio.wait(remote, timeout=self.patience_s)
        for future, index in remote.items():
            if future.done():
                results[index] = future.result()
            else:
                batch.late.append(LateUpload(index, messages[index], future, deadline))
        batch.prepared, batch.dead_letters = split_prepared(r for r in results if r is not None)
        return batch


def embed_prepared(prepared: Sequence[PreparedUpload], encoder: OnnxEncoder) -> list[ImageEmbedded]:
    """One encoder call for every input of the batch, regrouped per image."""
    if not prepared:
        return []
    per_image = len(prepared[0].inputs)
    batch = np.stack([array for upload in prepared for array in upload.inputs])
    vectors = encoder.embed(batch).reshape(len(prepared), per_image, -1)
    embedded_at = time.time()
    embedded = []
    for upload, image_vectors in zip(prepared, vectors, strict=True):
        vector, tile_vectors = image_vectors[0], image_vectors[1:]
        event = upload.event
        embedded.append(
            ImageEmbedded(
                image_id=event.image_id,
                model_version=encoder.version,
                dim=encoder.dim,
                vector_b64=vector_to_b64(vector),
                uploaded_at=event.uploaded_at,
                embedded_at=embedded_at,
                source_partition=upload.message.partition,
                source_offset=upload.message.offset,
                owner_id=event.owner_id,
                private=event.private,
                tile_count=len(tile_vectors),
                tiles_b64=vector_to_b64(tile_vectors) if len(tile_vectors) else "",
                tags=event.tags,
                uri=result_uri(event.uri),
            )
        )
    return embedded


def embed_uploads(
    messages: Sequence[RawMessage],
    encoder: OnnxEncoder,
    allowed_roots: Sequence[Path],
    limits: ImageLimits,
    tiles: Sequence[CropBox] = (),
    *,
    max_inline_bytes: int | None = None,
    remote: RemoteFetch | None = None,
) -> EmbedOutcome:
    """Decode, read, preprocess and embed a batch of ImageUploaded messages.

    Each image contributes its global input plus one input per tile; the whole
    batch goes through the encoder in one call. ``remote`` enables http(s)
    URIs (see :mod:`streams.remote_fetch`).
    """
    reader = UploadReader(allowed_roots, limits, tiles, max_inline_bytes, remote)
    prepared, letters = reader.prepare_all(messages)
    return EmbedOutcome(embed_prepared(prepared, encoder), letters)

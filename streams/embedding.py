"""The embedding step as a plain function: upload messages in, embeddings out.

The Faust agent only moves messages; everything that can fail is here and is
tested without Kafka. One bad message never fails the batch: it becomes a
dead-letter record with its reason, and the rest are embedded together.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Sequence
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


@dataclass(frozen=True)
class UploadReader:
    """Everything needed to turn one upload message into model inputs, or a dead letter.

    Reading, decoding and preprocessing are a third of the CPU time per image
    and Pillow releases the GIL while it works, so a thread pool prepares a
    batch in parallel while ONNX Runtime is free for the previous one.
    """

    allowed_roots: Sequence[Path]
    limits: ImageLimits
    tiles: Sequence[CropBox] = ()
    max_inline_bytes: int | None = None
    remote: RemoteFetch | None = None

    def prepare(self, message: RawMessage) -> PreparedUpload | DeadLetter:
        """Parse, read, decode and preprocess one message; any failure is a dead letter."""
        limit = self.max_inline_bytes
        if limit is not None and len(message.value) > max_event_bytes(limit):
            reason = f"{len(message.value)} bytes exceeds {max_event_bytes(limit)}"
            return dead_letter(message, "too_large", reason)
        try:
            event = decode(ImageUploaded, message.value or b"")
            data = read_image_bytes(
                event,
                self.allowed_roots,
                self.limits.max_bytes,
                max_inline_bytes=limit,
                remote=self.remote,
            )
            inputs = image_inputs(decode_image(data, self.limits), self.tiles)
        except (SchemaError, ImageSourceError, PreprocessError) as exc:
            return dead_letter(message, exc.code, exc.message)
        except Exception as exc:  # a decoder bug must cost one message, not the stream
            log.exception("unexpected error on %s/%d@%d", *astuple(message)[:3])
            return dead_letter(message, "internal_error", f"{type(exc).__name__}: {exc}")
        return PreparedUpload(message, event, inputs)

    def prepare_all(
        self, messages: Sequence[RawMessage], pool: Executor | None = None
    ) -> tuple[list[PreparedUpload], list[DeadLetter]]:
        """Prepare a batch (in ``pool`` when given), keeping the message order."""
        results = pool.map(self.prepare, messages) if pool else map(self.prepare, messages)
        prepared: list[PreparedUpload] = []
        letters: list[DeadLetter] = []
        for result in results:
            if isinstance(result, DeadLetter):
                letters.append(result)
            else:
                prepared.append(result)
        return prepared, letters


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

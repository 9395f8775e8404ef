"""Event schemas: every record that crosses a Kafka topic, in one module.

Each record carries ``schema_version``. Topics carry raw bytes and agents call
:func:`decode` themselves, so that a malformed message becomes a precise
:class:`SchemaError` (and a dead-letter record) instead of an exception deep
inside Faust's deserialiser that stops the stream.

Binary payloads (image bytes, float32 vectors) travel base64-encoded inside
JSON: JSON keeps the log readable by any client (kafka-console-consumer,
kafka-python, a trainer in another language), base64 float32 is 4/3 the size
of the raw vector and exactly reversible.
"""

import base64
import binascii
import json
import math
import re
import time
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import faust
import numpy as np

from streams.errors import CodedError

# Always use fullmatch: "$" in match() would also accept a trailing newline.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
UPDATE_ACTIONS = ("delete", "private", "public", "flag", "unflag", "tags")
# An image's tags (what filtered searches select on): at most this many, each
# 1-64 characters without commas (a form field lists them comma-separated).
MAX_TAGS = 32
MAX_TAG_LENGTH = 64
# An indexed image's URI, carried to search results, in UTF-8 bytes (the shard's
# hits answer stores its length in 16 bits; 4 KiB holds signed object-store URLs).
MAX_RESULT_URI_BYTES = 4096
INTERACTION_TYPES = ("impression", "click", "dwell")


def is_http_uri(uri: str) -> bool:
    """Whether ``uri`` names an http(s) resource (by its scheme alone).

    Never raises: ``urllib.parse`` raises ValueError on an unclosed or
    non-address IPv6 bracket (``http://[::1``), and one such upload event
    used to stop the embedding worker's batch, and every batch after it.
    """
    return uri.partition(":")[0].lower() in ("http", "https")


def result_uri(uri: str) -> str:
    """``uri`` if search results may carry it (http(s), at most
    :data:`MAX_RESULT_URI_BYTES`), else "": a ``file://`` path is the worker's
    disk, meaningless to a client and not for it to see."""
    return uri if is_http_uri(uri) and len(uri.encode()) <= MAX_RESULT_URI_BYTES else ""


class SchemaError(CodedError, ValueError):
    """A message that does not match its schema; ``code`` is machine-readable."""


class Event(faust.Record, abstract=True):
    """Base of every visearch event: versioned, validated, JSON on the wire."""

    SCHEMA_VERSION: ClassVar[int] = 1

    def check(self) -> None:
        """Semantic checks beyond field types; subclasses extend."""


class ImageUploaded(Event, serializer="json"):
    """A backend stored a new image (or a new version of one)."""

    image_id: str
    owner_id: str
    uploaded_at: float
    uri: str = ""
    image_b64: str = ""
    private: bool = False
    tags: list[str] | None = None
    schema_version: int = 1

    def check(self) -> None:
        _check_id("image_id", self.image_id)
        _check_event_time("uploaded_at", self.uploaded_at)
        if bool(self.uri) == bool(self.image_b64):
            raise SchemaError("invalid_value", "exactly one of uri and image_b64 must be set")
        check_tags(self.tags)

    def image_bytes(self) -> bytes:
        """The inline image, decoded; raises :class:`SchemaError` on bad base64."""
        try:
            return base64.b64decode(self.image_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SchemaError("invalid_value", f"image_b64 is not base64: {exc}") from exc


class ImageUpdated(Event, serializer="json"):
    """A change to an image: delete, private, public, flag, unflag (visibility), or
    tags (its tags become ``tags``; an empty list clears them).

    Version 2 added ``tags`` and the ``tags`` action.
    """

    SCHEMA_VERSION = 2  # no annotation: Faust would take it for a field

    image_id: str
    action: str
    updated_at: float
    tags: list[str] | None = None
    schema_version: int = 2

    def check(self) -> None:
        _check_id("image_id", self.image_id)
        _check_event_time("updated_at", self.updated_at)
        if self.action not in UPDATE_ACTIONS:
            raise SchemaError("invalid_value", f"action must be one of {UPDATE_ACTIONS}")
        if (self.action == "tags") != (self.tags is not None):
            raise SchemaError("invalid_value", "tags is set exactly when action is 'tags'")
        check_tags(self.tags)


class ImageEmbedded(Event, serializer="json"):
    """One image's embedding under one model version: the vector log's record.

    Version 2 added ``tags`` (the upload's, for filtered searches), version 3
    ``uri`` (the upload's http(s) URI, returned with search results).
    """

    SCHEMA_VERSION = 3  # no annotation: Faust would take it for a field

    image_id: str
    model_version: str
    dim: int
    vector_b64: str
    uploaded_at: float
    embedded_at: float
    source_partition: int
    source_offset: int
    owner_id: str = ""
    private: bool = False
    tile_count: int = 0
    tiles_b64: str = ""
    tags: list[str] | None = None
    uri: str = ""
    schema_version: int = 3

    def check(self) -> None:
        _check_id("image_id", self.image_id)
        _check_finite("uploaded_at", self.uploaded_at)
        if self.uri and not result_uri(self.uri):
            raise SchemaError(
                "invalid_value",
                f"uri must be http(s) and at most {MAX_RESULT_URI_BYTES} bytes",
            )
        _check_finite("embedded_at", self.embedded_at)
        if self.dim < 1:
            raise SchemaError("invalid_value", "dim must be >= 1")
        self.vector()  # validates length and finiteness
        if self.tile_count:
            self.tiles()
        check_tags(self.tags)

    def vector(self) -> np.ndarray:
        """The float32 vector of length ``dim``."""
        return decode_floats(self.vector_b64, (self.dim,), "vector_b64")

    def tiles(self) -> np.ndarray:
        """Tile vectors, shape ``(tile_count, dim)``; empty when there are none."""
        if not self.tile_count:
            return np.empty((0, self.dim), dtype=np.float32)
        return decode_floats(self.tiles_b64, (self.tile_count, self.dim), "tiles_b64")


class Interaction(Event, serializer="json"):
    """An impression, click or dwell on a displayed search result."""

    event_id: str
    user_id: str
    search_id: str
    query_image_id: str
    displayed_image_id: str
    position: int
    type: str
    timestamp: float
    dwell_ms: int = 0
    lat: float | None = None
    lon: float | None = None
    # The model version that ranked the results (from the search response):
    # CTR by model version is how two encoders are compared online.
    model_version: str = ""
    schema_version: int = 1

    def check(self) -> None:
        _check_id("event_id", self.event_id)
        _check_id("search_id", self.search_id)
        _check_id("displayed_image_id", self.displayed_image_id)
        if self.query_image_id:  # empty for searches by an uploaded image
            _check_id("query_image_id", self.query_image_id)
        if not 1 <= len(self.user_id) <= 128:
            raise SchemaError("invalid_value", "user_id must be 1-128 characters")
        if len(self.model_version) > 64:
            raise SchemaError("invalid_value", "model_version must be at most 64 characters")
        if self.type not in INTERACTION_TYPES:
            raise SchemaError("invalid_value", f"type must be one of {INTERACTION_TYPES}")
        if self.position < 0:
            raise SchemaError("invalid_value", "position must be >= 0")
        if self.dwell_ms < 0:
            raise SchemaError("invalid_value", "dwell_ms must be >= 0")
        _check_finite("timestamp", self.timestamp)
        if self.lat is not None and not -90.0 <= self.lat <= 90.0:
            raise SchemaError("invalid_value", "lat must be in [-90, 90]")
        if self.lon is not None and not -180.0 <= self.lon <= 180.0:
            raise SchemaError("invalid_value", "lon must be in [-180, 180]")


class LabeledPair(Event, serializer="json"):
    """A training example from clicks: query, clicked positive, skipped negatives.

    ``pair_id`` is deterministic (search id + click position): a pair emitted
    again after a crash and replay has the same id, so readers deduplicate.
    """

    pair_id: str
    search_id: str
    query_image_id: str
    positive_image_id: str
    position: int
    weight: float
    model_version: str
    created_at: float
    negative_image_ids: list[str] | None = None
    schema_version: int = 1

    def check(self) -> None:
        if self.position < 0:
            raise SchemaError("invalid_value", "position must be >= 0")
        _check_finite("weight", self.weight)
        _check_finite("created_at", self.created_at)


MODEL_ACTIONS = ("deploy", "switch", "retire")


class ModelChanged(Event, serializer="json"):
    """A change of encoder versions, on the models topic (the model registry's log).

    ``deploy`` registers a version (workers start embedding new uploads with it
    too, shards build its index beside the serving one, a backfill re-embeds
    the catalogue); ``switch`` makes it the version searches use; ``retire``
    drops a version everywhere.
    """

    version: str
    action: str
    changed_at: float
    model_dir: str = ""
    schema_version: int = 1

    def check(self) -> None:
        _check_id("version", self.version)
        _check_finite("changed_at", self.changed_at)
        if self.action not in MODEL_ACTIONS:
            raise SchemaError("invalid_value", f"action must be one of {MODEL_ACTIONS}")
        if self.action == "deploy" and not self.model_dir:
            raise SchemaError("invalid_value", "a deploy needs model_dir")


class DeadLetter(Event, serializer="json"):
    """A message that could not be processed, with everything needed to replay it."""

    source_topic: str
    partition: int
    offset: int
    error_code: str
    message: str
    original_b64: str
    failed_at: float
    schema_version: int = 1

    def check(self) -> None:
        _check_finite("failed_at", self.failed_at)


E = TypeVar("E", bound=Event)


def encode(event: Event) -> bytes:
    """Serialise an event to compact JSON bytes (no Faust metadata)."""
    payload = {name: getattr(event, name) for name in event._options.fields}
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def decode(cls: type[E], raw: bytes | str) -> E:
    """Parse and validate one message as ``cls``.

    Raises :class:`SchemaError` with code ``not_json``, ``not_object``,
    ``unknown_schema_version``, ``missing_field``, ``unknown_field``,
    ``wrong_type`` or ``invalid_value``.
    """
    return _from_data(cls, _parse_object(cls.__name__, raw))


def decode_vector_log(raw: bytes | str) -> ImageEmbedded | ImageUpdated:
    """A record of the embeddings topic: a vector, or a visibility change forwarded
    from image-updates under the same key (so it lands in the same partition and
    is ordered with the image's vectors)."""
    data = _parse_object("embeddings record", raw)
    if "action" in data:
        return _from_data(ImageUpdated, data)
    return _from_data(ImageEmbedded, data)


def _parse_object(what: str, raw: bytes | str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SchemaError("not_json", f"{what}: {exc}") from exc
    if not isinstance(data, dict):
        raise SchemaError("not_object", f"{what}: expected a JSON object")
    return data


def _from_data(cls: type[E], data: dict[str, Any]) -> E:
    version = data.get("schema_version", 1)
    if type(version) is not int or not 1 <= version <= cls.SCHEMA_VERSION:
        raise SchemaError(
            "unknown_schema_version",
            f"{cls.__name__}: schema_version {version!r} "
            f"(this build reads 1..{cls.SCHEMA_VERSION})",
        )
    hints = field_types(cls)
    unknown = data.keys() - hints.keys()
    if unknown:
        raise SchemaError("unknown_field", f"{cls.__name__}: unknown fields {sorted(unknown)}")
    defaults = cls._options.defaults
    values: dict[str, Any] = {}
    for name, field_type in hints.items():
        if name not in data:
            if name not in defaults:
                raise SchemaError("missing_field", f"{cls.__name__}.{name} is required")
            continue
        values[name] = _coerce(cls.__name__, name, field_type, data[name])
    event = cls(**values)
    event.check()
    return event


def vector_to_b64(vector: np.ndarray) -> str:
    """Little-endian float32 bytes, base64: the vector wire format."""
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode()


@dataclass(frozen=True)
class _FieldType:
    """A field's JSON type, resolved once per record class (decoding is a hot path)."""

    kind: type  # str, int, float, bool or list (of strings)
    nullable: bool


_TYPE_CACHE: dict[type, dict[str, _FieldType]] = {}
_KIND_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "a list of strings",
}


def field_types(cls: type[Event]) -> dict[str, _FieldType]:
    if cls not in _TYPE_CACHE:
        hints = typing.get_type_hints(cls)
        resolved = {}
        for name in cls._options.fields:
            annotation = hints[name]
            args = typing.get_args(annotation)
            nullable = type(None) in args
            if nullable:
                annotation = next(a for a in args if a is not type(None))
            kind = list if typing.get_origin(annotation) is list else annotation
            if kind not in _KIND_NAMES:
                raise TypeError(f"unsupported annotation {annotation!r} on {cls.__name__}.{name}")
            resolved[name] = _FieldType(kind, nullable)
        _TYPE_CACHE[cls] = resolved
    return _TYPE_CACHE[cls]


def _coerce(record: str, name: str, field: _FieldType, value: Any) -> Any:
    """Check ``value`` (from JSON) against a field's type; ints are accepted for floats."""
    kind = field.kind
    value_type = type(value)
    if value_type is kind and kind is not list:
        return value
    if value is None and field.nullable:
        return None
    if kind is float and value_type is int:
        return float(value)
    if kind is list and value_type is list and all(type(v) is str for v in value):
        return value
    raise SchemaError("wrong_type", f"{record}.{name} must be {_KIND_NAMES[kind]}")


def _check_id(name: str, value: str) -> None:
    if not ID_PATTERN.fullmatch(value):
        raise SchemaError(
            "invalid_value",
            f"{name} {value[:40]!r} must be 1-128 characters of A-Z a-z 0-9 . _ - "
            "starting with a letter or digit",
        )


def check_tags(tags: list[str] | None) -> None:
    """Tags within :data:`MAX_TAGS` and :data:`MAX_TAG_LENGTH`, none empty or with a comma."""
    if tags is None:
        return
    if len(tags) > MAX_TAGS:
        raise SchemaError("invalid_value", f"at most {MAX_TAGS} tags, got {len(tags)}")
    for tag in tags:
        if not 1 <= len(tag) <= MAX_TAG_LENGTH or "," in tag:
            raise SchemaError(
                "invalid_value",
                f"tag {tag[:40]!r} must be 1-{MAX_TAG_LENGTH} characters without a comma",
            )


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise SchemaError("invalid_value", f"{name} must be finite")


# How far ahead of this machine's clock an event time may be. Visibility is a
# set of last-writer-wins registers stamped with event time: an upload stamped
# far in the future would win against every later delete or make-private
# until that time came, so such events are refused, not "clamped".
MAX_CLOCK_SKEW_S = 300.0


def _check_event_time(name: str, value: float) -> None:
    _check_finite(name, value)
    if value > time.time() + MAX_CLOCK_SKEW_S:
        raise SchemaError(
            "invalid_value",
            f"{name} {value!r} is more than {MAX_CLOCK_SKEW_S:.0f} s in the future",
        )


def decode_floats(b64: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """The inverse of :func:`vector_to_b64`, checked for length and finiteness."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SchemaError("invalid_value", f"{name} is not base64: {exc}") from exc
    expected = 4 * math.prod(shape)
    if len(raw) != expected:
        raise SchemaError("invalid_value", f"{name} has {len(raw)} bytes, expected {expected}")
    array = np.frombuffer(raw, dtype="<f4").reshape(shape)
    if not np.isfinite(array).all():
        raise SchemaError("invalid_value", f"{name} contains NaN or infinity")
    return array.astype(np.float32, copy=False)

"""The event contract: a JSON Schema and an example for every record on every topic.

Backends in Java or Go cannot read ``streams/schemas.py``; they need the
contract as data. The schemas are generated from the record classes (field
names, JSON types, which fields are required, defaults, the accepted
``schema_version`` range) plus the value rules their ``check`` methods apply
(id patterns, enumerations, ranges), so they cannot drift from the code:
``python -m streams.event_contract docs/events`` rewrites them and a test fails
when the committed files differ. The one rule JSON Schema cannot state, an
event time at most ``MAX_CLOCK_SKEW_S`` ahead of the reader's clock, is in the
field's description.

Evolution. A record is read by a build whose ``SCHEMA_VERSION`` is at least
the record's ``schema_version``; a newer record is refused whole (dead letter
``unknown_schema_version``, replayable once the readers are upgraded), never
half-read. Unknown fields are refused too (``unknown_field``), so adding a
field, even an optional one, is a version bump; readers are upgraded before
writers start sending the new version. Removing or retyping a field is never
done within a topic: it is a new record type.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from streams import schemas
from streams.schemas import (
    ID_PATTERN,
    INTERACTION_TYPES,
    MAX_CLOCK_SKEW_S,
    MAX_RESULT_URI_BYTES,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    MODEL_ACTIONS,
    UPDATE_ACTIONS,
    Event,
    field_types,
)

DRAFT = "https://json-schema.org/draft/2020-12/schema"
ID = f"^{ID_PATTERN.pattern}$"
FUTURE = f"Unix seconds; at most {MAX_CLOCK_SKEW_S:.0f} s ahead of the reader's clock."

# Topic (without the deployment's prefix) -> the records it carries.
TOPICS: dict[str, list[type[Event]]] = {
    "image-uploads": [schemas.ImageUploaded],
    "image-updates": [schemas.ImageUpdated],
    "embeddings": [schemas.ImageEmbedded, schemas.ImageUpdated],
    "interactions": [schemas.Interaction],
    "labeled-pairs": [schemas.LabeledPair],
    "models": [schemas.ModelChanged],
    "dead-letter": [schemas.DeadLetter],
}

TAGS = {
    "maxItems": MAX_TAGS,
    "items": {"type": "string", "minLength": 1, "maxLength": MAX_TAG_LENGTH, "pattern": "^[^,]*$"},
    "description": "what filtered searches select on (tags_any / tags_all)",
}

# What each record's check() enforces, as JSON Schema keywords per field.
RULES: dict[str, dict[str, dict[str, Any]]] = {
    "ImageUploaded": {
        "image_id": {"pattern": ID, "description": "the image's id: the Kafka key too"},
        "owner_id": {"description": "who uploaded it"},
        "uploaded_at": {"description": FUTURE},
        "uri": {"description": "file://, or http(s):// when the deployment allows fetching"},
        "image_b64": {"description": "the image bytes, base64 (instead of uri)"},
        "tags": TAGS,
    },
    "ImageUpdated": {
        "image_id": {"pattern": ID},
        "action": {"enum": list(UPDATE_ACTIONS)},
        "updated_at": {"description": "Unix seconds: the newest event time wins"},
        "tags": {**TAGS, "description": "the image's new tags; set exactly when action is tags"},
    },
    "ImageEmbedded": {
        "image_id": {"pattern": ID},
        "dim": {"minimum": 1},
        "vector_b64": {"description": "dim little-endian float32, base64"},
        "tiles_b64": {"description": "tile_count x dim little-endian float32, base64"},
        "tags": TAGS,
        "uri": {
            "pattern": "^$|^[hH][tT][tT][pP][sS]?:",
            "maxLength": MAX_RESULT_URI_BYTES,
            "description": "the upload's http(s) URI (empty otherwise): search results carry "
            "it, thumbnails are fetched from it; at most 4096 UTF-8 bytes",
        },
    },
    "Interaction": {
        "event_id": {"pattern": ID, "description": "unique per event: duplicates are dropped"},
        "search_id": {"pattern": ID},
        "displayed_image_id": {"pattern": ID},
        "query_image_id": {"pattern": f"^$|{ID}", "description": "empty for an uploaded query"},
        "user_id": {"minLength": 1, "maxLength": 128},
        "model_version": {"maxLength": 64},
        "type": {"enum": list(INTERACTION_TYPES)},
        "position": {"minimum": 0},
        "dwell_ms": {"minimum": 0},
        "lat": {"minimum": -90, "maximum": 90},
        "lon": {"minimum": -180, "maximum": 180},
    },
    "LabeledPair": {"position": {"minimum": 0}},
    "ModelChanged": {"version": {"pattern": ID}, "action": {"enum": list(MODEL_ACTIONS)}},
    "DeadLetter": {
        "error_code": {"description": "machine-readable reason (docs/backends.md)"},
        "original_b64": {"description": "the refused message's bytes, base64"},
    },
}

# Record-level rules that involve several fields.
EXTRA: dict[str, dict[str, Any]] = {
    "ImageUploaded": {
        "oneOf": [
            {"required": ["uri"], "properties": {"uri": {"minLength": 1}}},
            {"required": ["image_b64"], "properties": {"image_b64": {"minLength": 1}}},
        ],
        "$comment": "exactly one of uri and image_b64",
    },
    "ImageUpdated": {
        "if": {"properties": {"action": {"const": "tags"}}},
        "then": {"required": ["tags"], "properties": {"tags": {"type": "array"}}},
        "else": {"properties": {"tags": {"type": "null"}}},
        "$comment": "tags is set exactly when action is tags",
    },
    "ModelChanged": {
        "if": {"properties": {"action": {"const": "deploy"}}},
        "then": {"required": ["model_dir"], "properties": {"model_dir": {"minLength": 1}}},
    },
}

JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}

EXAMPLES: dict[str, dict[str, Any]] = {
    "ImageUploaded": {
        "image_id": "shop42-shoe-1187",
        "owner_id": "shop42",
        "uploaded_at": 1765000000.25,
        "uri": "https://images.example.com/shop42/shoe-1187.jpg",
        "private": False,
        "tags": ["shoes", "red"],
        "schema_version": 1,
    },
    "ImageUpdated": {
        "image_id": "shop42-shoe-1187",
        "action": "private",
        "updated_at": 1765000100.0,
        "schema_version": 2,
    },
    "ImageEmbedded": {
        "image_id": "shop42-shoe-1187",
        "model_version": "360963a84ea01ba3",
        "dim": 4,
        "vector_b64": "AACAPwAAAAAAAAAAAAAAAA==",
        "uploaded_at": 1765000000.25,
        "embedded_at": 1765000000.31,
        "source_partition": 3,
        "source_offset": 1187,
        "owner_id": "shop42",
        "tags": ["shoes", "red"],
        "uri": "https://images.example.com/shop42/shoe-1187.jpg",
        "schema_version": 3,
    },
    "Interaction": {
        "event_id": "e-9f2c41",
        "user_id": "u-18",
        "search_id": "4b1e0c7f9a2d4e6b8c1d2e3f4a5b6c7d",
        "query_image_id": "shop42-shoe-1187",
        "displayed_image_id": "shop7-boot-22",
        "position": 2,
        "type": "click",
        "timestamp": 1765000200.5,
        "model_version": "360963a84ea01ba3",
        "schema_version": 1,
    },
    "LabeledPair": {
        "pair_id": "4b1e0c7f9a2d4e6b8c1d2e3f4a5b6c7d-2",
        "search_id": "4b1e0c7f9a2d4e6b8c1d2e3f4a5b6c7d",
        "query_image_id": "shop42-shoe-1187",
        "positive_image_id": "shop7-boot-22",
        "position": 2,
        "weight": 1.0,
        "model_version": "360963a84ea01ba3",
        "created_at": 1765000260.0,
        "negative_image_ids": ["shop3-sandal-5", "shop9-heel-12"],
        "schema_version": 1,
    },
    "ModelChanged": {
        "version": "58d2cc42e930410f",
        "action": "deploy",
        "changed_at": 1765000300.0,
        "model_dir": "/models/efficientnet-lite0-int8",
        "schema_version": 1,
    },
    "DeadLetter": {
        "source_topic": "visearch.image-uploads",
        "partition": 3,
        "offset": 1190,
        "error_code": "missing_field",
        "message": "ImageUploaded.owner_id is required",
        "original_b64": "eyJpbWFnZV9pZCI6ICJ4In0=",
        "failed_at": 1765000001.0,
        "schema_version": 1,
    },
}


def record_schema(cls: type[Event]) -> dict[str, Any]:
    """The JSON Schema of one record class."""
    name = cls.__name__
    defaults = cls._options.defaults
    rules = RULES.get(name, {})
    properties: dict[str, Any] = {}
    for field, kind in field_types(cls).items():
        if kind.kind is list:
            prop: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
        else:
            prop = {"type": JSON_TYPES[kind.kind]}
        if kind.nullable:
            prop["type"] = [prop["type"], "null"]
        if field == "schema_version":
            prop.update(minimum=1, maximum=cls.SCHEMA_VERSION)
        prop.update(rules.get(field, {}))
        if field in defaults:
            prop["default"] = defaults[field]
        properties[field] = prop
    description = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    return {
        "$schema": DRAFT,
        "$id": f"{name}.schema.json",
        "title": name,
        "description": description,
        "type": "object",
        "properties": properties,
        "required": [f for f in properties if f not in defaults],
        "additionalProperties": False,
        **EXTRA.get(name, {}),
    }


def records() -> list[type[Event]]:
    """Every record class on some topic, once, in topic order."""
    seen: dict[str, type[Event]] = {}
    for classes in TOPICS.values():
        for cls in classes:
            seen.setdefault(cls.__name__, cls)
    return list(seen.values())


def render() -> dict[str, str]:
    """File name -> content of everything under docs/events/."""
    files = {}
    for cls in records():
        name = cls.__name__
        files[f"{name}.schema.json"] = json.dumps(record_schema(cls), indent=2) + "\n"
        files[f"{name}.example.json"] = json.dumps(EXAMPLES[name], indent=2) + "\n"
    topics = {topic: [cls.__name__ for cls in classes] for topic, classes in TOPICS.items()}
    files["topics.json"] = json.dumps(topics, indent=2) + "\n"
    return files


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/events")
    target.mkdir(parents=True, exist_ok=True)
    for name, content in render().items():
        (target / name).write_text(content)
    print(f"wrote {len(render())} files to {target}")


if __name__ == "__main__":
    main()

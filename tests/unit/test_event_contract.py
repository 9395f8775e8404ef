"""The published event contract (docs/events/): in step with streams/schemas.py, its examples
valid, and the schemas refusing what the decoder refuses."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from streams import schemas
from streams.event_contract import EXAMPLES, TOPICS, record_schema, records, render
from streams.schemas import SchemaError, decode

EVENTS = Path(__file__).resolve().parents[2] / "docs" / "events"
CLASSES = {cls.__name__: cls for cls in records()}


def test_the_committed_contract_is_what_the_code_renders() -> None:
    for name, content in render().items():
        assert (EVENTS / name).read_text() == content, (
            f"docs/events/{name} is stale: run `python -m streams.event_contract docs/events`"
        )
    assert {p.name for p in EVENTS.iterdir()} == set(render())


def test_every_record_on_every_topic_has_a_schema_and_an_example() -> None:
    on_topics = {cls.__name__ for classes in TOPICS.values() for cls in classes}
    assert on_topics == set(CLASSES) == set(EXAMPLES)
    assert set(TOPICS) == {"image-uploads", "image-updates", "embeddings", "interactions",
                           "labeled-pairs", "models", "dead-letter"}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_each_example_validates_and_decodes(name: str) -> None:
    example = json.loads((EVENTS / f"{name}.example.json").read_text())
    schema = json.loads((EVENTS / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    Draft202012Validator(schema).validate(example)
    event = decode(CLASSES[name], json.dumps(example))
    assert json.loads(schemas.encode(event)) == {**_defaults(name), **example}


def _defaults(name: str) -> dict[str, Any]:
    return dict(CLASSES[name]._options.defaults)


def _broken(name: str) -> list[tuple[str, dict[str, Any]]]:
    """(the decoder's code, a record) pairs that both the schema and the decoder refuse."""
    example = EXAMPLES[name]
    cls = CLASSES[name]
    required = [f for f in example if f not in _defaults(name)]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("missing_field", {k: v for k, v in example.items() if k != required[0]}),
        ("unknown_field", {**example, "colour": "red"}),
        ("wrong_type", {**example, required[0]: [1]}),
        ("unknown_schema_version", {**example, "schema_version": cls.SCHEMA_VERSION + 1}),
    ]
    for field, rules in record_schema(cls)["properties"].items():
        if "pattern" in rules:
            cases.append(("invalid_value", {**example, field: "-starts-with-a-dash"}))
        if "enum" in rules:
            cases.append(("invalid_value", {**example, field: "no-such-value"}))
        if "minimum" in rules and field != "schema_version":
            cases.append(("invalid_value", {**example, field: rules["minimum"] - 1}))
    if name == "ImageUploaded":
        cases.append(("invalid_value", {**example, "image_b64": "aGk="}))  # uri and bytes
        cases.append(("invalid_value", {k: v for k, v in example.items() if k != "uri"}))
    if name == "ModelChanged":
        cases.append(("invalid_value", {**example, "model_dir": ""}))  # a deploy needs it
    return cases


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_the_schema_refuses_what_the_decoder_refuses(name: str) -> None:
    validator = Draft202012Validator(json.loads((EVENTS / f"{name}.schema.json").read_text()))
    for code, record in _broken(name):
        assert not validator.is_valid(record), (code, record)
        with pytest.raises(SchemaError) as refused:
            decode(CLASSES[name], json.dumps(record))
        assert refused.value.code == code, record


def test_a_record_of_the_next_version_is_refused_whole_until_readers_upgrade(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The evolution rule: a new field is a version bump; old readers refuse it (dead
    letter, replayable), upgraded readers take both versions."""
    current = schemas.ImageUpdated.SCHEMA_VERSION
    next_version = {**copy.deepcopy(EXAMPLES["ImageUpdated"]), "schema_version": current + 1}
    with pytest.raises(SchemaError) as refused:
        decode(schemas.ImageUpdated, json.dumps(next_version))
    assert refused.value.code == "unknown_schema_version"
    monkeypatch.setattr(schemas.ImageUpdated, "SCHEMA_VERSION", current + 1)  # upgraded reader
    assert decode(schemas.ImageUpdated, json.dumps(next_version)).schema_version == current + 1
    example = EXAMPLES["ImageUpdated"]
    assert decode(schemas.ImageUpdated, json.dumps(example)).schema_version == current
    version_1 = {k: v for k, v in example.items() if k != "tags"} | {"schema_version": 1}
    assert decode(schemas.ImageUpdated, json.dumps(version_1)).schema_version == 1  # still read

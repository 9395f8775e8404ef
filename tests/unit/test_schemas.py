"""Event schemas: encode/decode round trips and every SchemaError code."""

import base64
import json

import numpy as np
import pytest

from streams.schemas import (
    DeadLetter,
    ImageEmbedded,
    ImageUpdated,
    ImageUploaded,
    Interaction,
    LabeledPair,
    SchemaError,
    decode,
    encode,
    result_uri,
    vector_to_b64,
)

DIM = 8


def _vector(seed=0, shape=(DIM,)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _uploaded(**overrides):
    fields = {
        "image_id": "img-1",
        "owner_id": "owner-1",
        "uploaded_at": 1700000000.5,
        "uri": "file:///data/images/img-1.img",
    }
    fields.update(overrides)
    return fields


def _embedded(**overrides):
    fields = {
        "image_id": "img-1",
        "model_version": "m1",
        "dim": DIM,
        "vector_b64": vector_to_b64(_vector()),
        "uploaded_at": 1.0,
        "embedded_at": 2.0,
        "source_partition": 3,
        "source_offset": 41,
    }
    fields.update(overrides)
    return fields


def _interaction(**overrides):
    fields = {
        "event_id": "e1",
        "user_id": "u1",
        "search_id": "s1",
        "query_image_id": "q1",
        "displayed_image_id": "d1",
        "position": 2,
        "type": "click",
        "timestamp": 10.0,
    }
    fields.update(overrides)
    return fields


def _raw(fields):
    return json.dumps(fields).encode()


def _code(cls, raw):
    with pytest.raises(SchemaError) as info:
        decode(cls, raw)
    return info.value.code


RECORDS = [
    ImageUploaded(**_uploaded(private=True, tags=["cat", "outdoor"])),
    ImageUploaded(**_uploaded(uri="", image_b64=base64.b64encode(b"\x89PNG bytes").decode())),
    ImageUpdated(image_id="img-1", action="private", updated_at=5.0),
    ImageEmbedded(
        **_embedded(
            owner_id="o",
            private=True,
            tile_count=3,
            tiles_b64=vector_to_b64(_vector(1, (3, DIM))),
        )
    ),
    Interaction(**_interaction(type="dwell", dwell_ms=1500, lat=-33.9, lon=151.2)),
    LabeledPair(
        pair_id="s1:1",
        search_id="s1",
        query_image_id="q1",
        positive_image_id="p1",
        position=1,
        weight=0.5,
        model_version="m1",
        created_at=3.0,
        negative_image_ids=["n1", "n2"],
    ),
    DeadLetter(
        source_topic="visearch.image-uploads",
        partition=0,
        offset=7,
        error_code="not_json",
        message="boom",
        original_b64=base64.b64encode(b"{oops").decode(),
        failed_at=4.0,
    ),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_round_trip(record):
    raw = encode(record)
    payload = json.loads(raw)
    assert payload["schema_version"] == type(record).SCHEMA_VERSION  # writers write the newest
    assert "__faust" not in payload
    again = decode(type(record), raw)
    for name in record._options.fields:
        assert getattr(again, name) == getattr(record, name), name
    assert encode(again) == raw


def test_embedded_vector_and_tiles_round_trip_exactly():
    vector = _vector(5)
    tiles = _vector(6, (4, DIM))
    record = ImageEmbedded(
        **_embedded(vector_b64=vector_to_b64(vector), tile_count=4, tiles_b64=vector_to_b64(tiles))
    )
    again = decode(ImageEmbedded, encode(record))
    assert again.vector().dtype == np.float32
    np.testing.assert_array_equal(again.vector(), vector)
    assert again.tiles().shape == (4, DIM)
    np.testing.assert_array_equal(again.tiles(), tiles)


def test_embedded_without_tiles_has_empty_tiles():
    record = decode(ImageEmbedded, _raw(_embedded()))
    assert record.tiles().shape == (0, DIM)


def test_vector_wire_format_is_little_endian_float32():
    raw = base64.b64decode(vector_to_b64(np.array([1.0, -2.0], dtype=np.float64)))
    assert raw == np.array([1.0, -2.0], dtype="<f4").tobytes()


def test_ints_are_accepted_for_floats():
    record = decode(ImageUploaded, _raw(_uploaded(uploaded_at=17)))
    assert record.uploaded_at == 17.0
    assert isinstance(record.uploaded_at, float)


def test_defaults_fill_optional_fields():
    record = decode(ImageUploaded, _raw(_uploaded()))
    assert record.private is False
    assert record.image_b64 == ""
    assert record.tags is None


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe\x00", b"", "{'a': 1}"])
def test_not_json(raw):
    assert _code(ImageUploaded, raw) == "not_json"


@pytest.mark.parametrize("raw", [b"[]", b"42", b'"text"', b"null"])
def test_not_object(raw):
    assert _code(ImageUploaded, raw) == "not_object"


@pytest.mark.parametrize("version", [0, 2, True, "1", 1.0, None])
def test_unknown_schema_version(version):
    assert _code(ImageUploaded, _raw(_uploaded(schema_version=version))) == (
        "unknown_schema_version"
    )


def test_missing_field_names_it():
    fields = _uploaded()
    del fields["owner_id"]
    with pytest.raises(SchemaError, match="owner_id") as info:
        decode(ImageUploaded, _raw(fields))
    assert info.value.code == "missing_field"


def test_unknown_field_names_it():
    with pytest.raises(SchemaError, match="colour") as info:
        decode(ImageUploaded, _raw(_uploaded(colour="red")))
    assert info.value.code == "unknown_field"


@pytest.mark.parametrize(
    ("cls", "fields"),
    [
        (ImageEmbedded, _embedded(dim=True)),
        (ImageEmbedded, _embedded(dim=8.0)),
        (ImageEmbedded, _embedded(source_offset="41")),
        (ImageUploaded, _uploaded(uploaded_at="1700000000")),
        (ImageUploaded, _uploaded(uploaded_at=True)),
        (ImageUploaded, _uploaded(private=1)),
        (ImageUploaded, _uploaded(image_id=12)),
        (ImageUploaded, _uploaded(tags="cat")),
        (ImageUploaded, _uploaded(tags=["cat", 3])),
        (Interaction, _interaction(position=None)),
        (Interaction, _interaction(lat="10")),
    ],
)
def test_wrong_type(cls, fields):
    assert _code(cls, _raw(fields)) == "wrong_type"


def test_optional_float_accepts_null():
    record = decode(Interaction, _raw(_interaction(lat=None, lon=None)))
    assert record.lat is None
    assert record.lon is None


@pytest.mark.parametrize(
    "image_id", ["", "-leading-dash", ".hidden", "../x", "a/b", "a b", "é", "x" * 129]
)
def test_bad_image_id(image_id):
    assert _code(ImageUploaded, _raw(_uploaded(image_id=image_id))) == "invalid_value"


def test_longest_valid_image_id():
    image_id = "x" * 128
    assert decode(ImageUploaded, _raw(_uploaded(image_id=image_id))).image_id == image_id


def test_image_id_with_trailing_newline_is_invalid():
    assert _code(ImageUploaded, _raw(_uploaded(image_id="img-1\n"))) == "invalid_value"


@pytest.mark.parametrize(
    ("cls", "raw"),
    [
        (ImageUploaded, b'{"image_id":"a","owner_id":"o","uploaded_at":Infinity,"uri":"u"}'),
        (ImageUploaded, b'{"image_id":"a","owner_id":"o","uploaded_at":NaN,"uri":"u"}'),
        (ImageUpdated, b'{"image_id":"a","action":"delete","updated_at":-Infinity}'),
    ],
)
def test_non_finite_times_are_invalid(cls, raw):
    assert _code(cls, raw) == "invalid_value"


def test_json_with_infinity_from_python_is_invalid():
    raw = json.dumps(_interaction(timestamp=float("inf"))).encode()
    assert b"Infinity" in raw
    assert _code(Interaction, raw) == "invalid_value"


@pytest.mark.parametrize(
    "fields",
    [
        _uploaded(uri="", image_b64=""),
        _uploaded(uri="file:///x", image_b64="aGVsbG8="),
    ],
)
def test_exactly_one_of_uri_and_inline(fields):
    assert _code(ImageUploaded, _raw(fields)) == "invalid_value"


def test_bad_update_action():
    raw = _raw({"image_id": "a", "action": "erase", "updated_at": 1.0})
    assert _code(ImageUpdated, raw) == "invalid_value"


@pytest.mark.parametrize(
    "overrides",
    [
        {"type": "hover"},
        {"position": -1},
        {"dwell_ms": -5},
        {"lat": 90.5},
        {"lat": -91.0},
        {"lon": 180.01},
    ],
)
def test_bad_interaction_values(overrides):
    assert _code(Interaction, _raw(_interaction(**overrides))) == "invalid_value"


def test_interaction_nan_latitude_is_invalid():
    raw = json.dumps(_interaction(lat=float("nan"))).encode()
    assert _code(Interaction, raw) == "invalid_value"


@pytest.mark.parametrize(
    "overrides",
    [
        {"dim": 0},
        {"vector_b64": vector_to_b64(_vector(shape=(DIM - 1,)))},
        {"vector_b64": vector_to_b64(_vector(shape=(DIM + 1,)))},
        {"vector_b64": vector_to_b64(np.array([np.nan] + [0.0] * (DIM - 1)))},
        {"vector_b64": vector_to_b64(np.array([np.inf] + [0.0] * (DIM - 1)))},
        {"vector_b64": "not base64!!"},
        {"vector_b64": vector_to_b64(_vector())[:-1]},
        {"tile_count": 2, "tiles_b64": vector_to_b64(_vector(shape=(3, DIM)))},
        {"tile_count": 1, "tiles_b64": ""},
        {"image_id": "bad id"},
        {"uri": "file:///srv/images/a.jpg"},
        {"uri": "https://example.com/" + "a" * 4096},
    ],
)
def test_bad_embedding(overrides):
    assert _code(ImageEmbedded, _raw(_embedded(**overrides))) == "invalid_value"


def test_embedding_carries_an_http_uri_up_to_4096_bytes():
    for uri in ("https://example.com/a.jpg", "HTTP://example.com/b", "http://e.com/" + "é" * 2041):
        assert decode(ImageEmbedded, _raw(_embedded(uri=uri))).uri == uri
    assert result_uri("file:///srv/a.jpg") == "" and result_uri("ftp://e.com/a") == ""
    assert result_uri("http://e.com/" + "é" * 2042) == ""  # 4097 bytes in UTF-8


def test_bad_inline_base64():
    record = decode(ImageUploaded, _raw(_uploaded(uri="", image_b64="%%%not-base64")))
    with pytest.raises(SchemaError) as info:
        record.image_bytes()
    assert info.value.code == "invalid_value"


def test_inline_bytes_decode():
    payload = b"\x00\x01binary\xff"
    record = decode(
        ImageUploaded, _raw(_uploaded(uri="", image_b64=base64.b64encode(payload).decode()))
    )
    assert record.image_bytes() == payload


def test_encode_refuses_non_finite_floats():
    with pytest.raises(ValueError):
        encode(ImageUpdated(image_id="a", action="delete", updated_at=float("nan")))


def test_schema_error_message_carries_code():
    error = SchemaError("missing_field", "X.y is required")
    assert str(error) == "missing_field: X.y is required"
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("cls", "raw"),
    [
        (ImageEmbedded, json.dumps(_embedded(embedded_at=float("inf"))).encode()),
        (
            LabeledPair,
            b'{"pair_id":"s:0","search_id":"s","query_image_id":"q","positive_image_id":"p","position":0,'
            b'"weight":NaN,"model_version":"m","created_at":1.0}',
        ),
    ],
)
def test_decoded_records_can_be_encoded_again(cls, raw):
    try:
        record = decode(cls, raw)
    except SchemaError as exc:
        assert exc.code == "invalid_value"
        return
    encode(record)


def test_http_uris_are_told_by_scheme_without_raising() -> None:
    from streams.schemas import is_http_uri

    assert is_http_uri("HTTPS://example.com/a.jpg") and is_http_uri("http://[::1")
    assert not is_http_uri("file:///srv/a.jpg") and not is_http_uri("/plain/path")
    assert result_uri("http://[::1") == "http://[::1"  # the scheme decides, as everywhere

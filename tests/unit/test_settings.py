"""Settings: defaults, VISEARCH_* parsing, validation, immutability."""

import dataclasses
from pathlib import Path

import pytest

from streams.settings import Settings, SettingsError, TopicNames


def test_defaults_run_on_a_laptop():
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.embedded_broker is True
    assert settings.kafka_bootstrap == ""
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    assert settings.data_dir == Path("data")
    assert settings.image_store_dir == Path("data/images")
    assert settings.index_factory == "IVF{nlist},Flat"
    assert settings.embed_linger_s == pytest.approx(0.002)


def test_variables_without_the_prefix_are_ignored():
    settings = Settings.from_env({"PATH": "/bin", "HOME": "/root", "VISEARCHX": "1"})
    assert settings == Settings()


def test_parses_int_float_bool_path_and_str():
    settings = Settings.from_env(
        {
            "VISEARCH_BROKER_PORT": "29092",
            "VISEARCH_EMBED_LINGER_S": "0.5",
            "VISEARCH_EMBEDDED_BROKER": "yes",
            "VISEARCH_DATA_DIR": "/srv/visearch",
            "VISEARCH_TOPIC_PREFIX": "staging",
        }
    )
    assert settings.broker_port == 29092
    assert isinstance(settings.broker_port, int)
    assert settings.embed_linger_s == 0.5
    assert isinstance(settings.embed_linger_s, float)
    assert settings.embedded_broker is True
    assert settings.data_dir == Path("/srv/visearch")
    assert isinstance(settings.data_dir, Path)
    assert settings.topic_prefix == "staging"
    assert settings.bootstrap_servers == "127.0.0.1:29092"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("TRUE", True), (" on ", True), ("0", False), ("No", False), ("off", False)],
)
def test_bool_spellings(raw, expected):
    env = {"VISEARCH_EMBEDDED_BROKER": raw, "VISEARCH_KAFKA_BOOTSTRAP": "k:9092"}
    assert Settings.from_env(env).embedded_broker is expected


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("VISEARCH_BROKER_PORT", "abc"),
        ("VISEARCH_BROKER_PORT", "1.5"),
        ("VISEARCH_EMBED_LINGER_S", "fast"),
        ("VISEARCH_EMBEDDED_BROKER", "maybe"),
        ("VISEARCH_INDEX_SHARDS", ""),
    ],
)
def test_bad_value_names_the_variable(key, raw):
    with pytest.raises(SettingsError, match=key):
        Settings.from_env({key: raw})


def test_unknown_variable_is_an_error():
    with pytest.raises(SettingsError, match="VISEARCH_BROKER_PROT"):
        Settings.from_env({"VISEARCH_BROKER_PROT": "1"})


def test_kafka_bootstrap_turns_embedded_broker_off():
    settings = Settings.from_env({"VISEARCH_KAFKA_BOOTSTRAP": "kafka-0:9092,kafka-1:9092"})
    assert settings.embedded_broker is False
    assert settings.bootstrap_servers == "kafka-0:9092,kafka-1:9092"


def test_explicit_embedded_broker_wins_over_bootstrap():
    settings = Settings.from_env(
        {"VISEARCH_KAFKA_BOOTSTRAP": "k:9092", "VISEARCH_EMBEDDED_BROKER": "true"}
    )
    assert settings.embedded_broker is True


def test_embedded_broker_off_without_bootstrap_is_an_error():
    with pytest.raises(SettingsError, match="VISEARCH_KAFKA_BOOTSTRAP"):
        Settings.from_env({"VISEARCH_EMBEDDED_BROKER": "false"})


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("VISEARCH_EMBEDDING_PARTITIONS", "0"),
        ("VISEARCH_INDEX_SHARDS", "-1"),
        ("VISEARCH_MAX_K", "0"),
        ("VISEARCH_HTTP_PORT", "65536"),
        ("VISEARCH_BROKER_PORT", "0"),
        ("VISEARCH_EMBED_LINGER_S", "-0.1"),
        ("VISEARCH_EMBED_LINGER_S", "0"),
        ("VISEARCH_DECODE_THREADS", "0"),
        ("VISEARCH_WORKER_NICE", "20"),
        ("VISEARCH_WORKER_NICE", "-1"),
        ("VISEARCH_MALLOC_MMAP_THRESHOLD", "-1"),
        ("VISEARCH_MALLOC_MMAP_THRESHOLD", "40000000"),
        ("VISEARCH_VERIFY_TOP", "-1"),
        ("VISEARCH_VERIFY_TOP", "501"),
        ("VISEARCH_QUERY_EXPANSION", "-1"),
        ("VISEARCH_QUERY_EXPANSION", "51"),
        ("VISEARCH_QUERY_EXPANSION_ALPHA", "-0.5"),
        ("VISEARCH_QUERY_EXPANSION_ALPHA", "nan"),
        ("VISEARCH_VERIFY_MIN_SCORE", "1.5"),
        ("VISEARCH_VERIFY_SCALES", "0"),
        ("VISEARCH_BACKGROUND_FETCH_MAX_WAIT_MS", "-1"),
        ("VISEARCH_GIL_SWITCH_INTERVAL_MS", "-1"),
        ("VISEARCH_GIL_SWITCH_INTERVAL_MS", "nan"),
        ("VISEARCH_GIL_SWITCH_INTERVAL_MS", "500"),
        ("VISEARCH_SEARCH_DEADLINE_MS", "0"),
        ("VISEARCH_SHARD_UNHEALTHY_S", "-1"),
        ("VISEARCH_SHARD_UNHEALTHY_S", "inf"),
        ("VISEARCH_SHARD_URLS", "http://a:1,|"),
        ("VISEARCH_MODEL_PRECISION", "fast"),
    ],
)
def test_validation_rejects_out_of_range_values(key, raw):
    with pytest.raises(SettingsError, match=key):
        Settings.from_env({key: raw})


def test_nan_linger_is_rejected():
    with pytest.raises(SettingsError, match="VISEARCH_EMBED_LINGER_S"):
        Settings.from_env({"VISEARCH_EMBED_LINGER_S": "nan"})


def test_settings_are_frozen():
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.broker_port = 1  # type: ignore[misc]
    assert settings.broker_port == 19092


def test_with_overrides_returns_a_validated_copy():
    base = Settings()
    changed = base.with_overrides(http_port=9000, topic_prefix="t1")
    assert changed.http_port == 9000
    assert changed.topics.uploads == "t1.image-uploads"
    assert base.http_port == 8080
    with pytest.raises(SettingsError, match="VISEARCH_HTTP_PORT"):
        base.with_overrides(http_port=0)
    with pytest.raises(SettingsError, match="VISEARCH_UPLOAD_PARTITIONS"):
        base.with_overrides(upload_partitions=0)


def test_topic_names_follow_prefix():
    topics = Settings.from_env({"VISEARCH_TOPIC_PREFIX": "blue"}).topics
    assert topics == TopicNames(
        uploads="blue.image-uploads",
        updates="blue.image-updates",
        embeddings="blue.embeddings",
        interactions="blue.interactions",
        labeled_pairs="blue.labeled-pairs",
        dead_letter="blue.dead-letter",
        models="blue.models",
    )
    assert len(set(dataclasses.astuple(topics))) == 7


def test_api_token_is_not_in_repr():
    settings = Settings.from_env({"VISEARCH_API_TOKEN": "s3cret-token"})
    assert settings.api_token == "s3cret-token"
    assert "s3cret-token" not in repr(settings)
    assert "s3cret-token" not in str(settings)


def test_explicit_model_dir_is_used():
    settings = Settings.from_env({"VISEARCH_MODEL_DIR": "/models/v2"})
    assert settings.resolved_model_dir == Path("/models/v2")


def test_default_model_dir_resolves_under_data_dir():
    settings = Settings.from_env({"VISEARCH_DATA_DIR": "/srv/vs"})
    assert settings.resolved_model_dir == Path("/srv/vs/models/efficientnet-lite0")


def test_shard_urls_list_every_copy_of_every_shard():
    settings = Settings.from_env(
        {"VISEARCH_SHARD_URLS": " http://s0a:1/ | http://s0b:1 ,http://s1a:1,"}
    )
    assert settings.remote_shards == [["http://s0a:1", "http://s0b:1"], ["http://s1a:1"]]
    assert Settings.from_env({}).remote_shards == []

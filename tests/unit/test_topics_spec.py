"""Topic specs: names from the prefix, partition counts from settings."""

from streams.settings import Settings
from streams.topics import TopicSpec, topic_specs


def test_default_topic_specs():
    specs = topic_specs(Settings())
    assert [(s.name, s.partitions) for s in specs] == [
        ("visearch.image-uploads", 4),
        ("visearch.image-updates", 4),
        ("visearch.embeddings", 8),
        ("visearch.interactions", 4),
        ("visearch.labeled-pairs", 4),
        ("visearch.dead-letter", 1),
        ("visearch.models", 1),
    ]
    assert all(isinstance(s, TopicSpec) and s.carries for s in specs)


def test_partition_counts_follow_settings():
    settings = Settings.from_env(
        {
            "VISEARCH_TOPIC_PREFIX": "t9",
            "VISEARCH_UPLOAD_PARTITIONS": "3",
            "VISEARCH_UPDATE_PARTITIONS": "5",
            "VISEARCH_EMBEDDING_PARTITIONS": "16",
            "VISEARCH_INTERACTION_PARTITIONS": "2",
        }
    )
    counts = {s.name: s.partitions for s in topic_specs(settings)}
    assert counts == {
        "t9.image-uploads": 3,
        "t9.image-updates": 5,
        "t9.embeddings": 16,
        "t9.interactions": 2,
        "t9.labeled-pairs": 2,
        "t9.dead-letter": 1,
        "t9.models": 1,
    }


def test_specs_cover_every_topic_name_once():
    settings = Settings().with_overrides(topic_prefix="x")
    names = [s.name for s in topic_specs(settings)]
    assert len(names) == len(set(names))
    topics = settings.topics
    assert set(names) == {
        topics.uploads,
        topics.updates,
        topics.embeddings,
        topics.interactions,
        topics.labeled_pairs,
        topics.dead_letter,
        topics.models,
    }

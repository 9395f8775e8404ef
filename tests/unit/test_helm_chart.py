"""Template logic of helm/visearch, checked on manifests rendered by Helm's own SDK.

Each test renders the chart with real values and reads the manifests back:
the settings every container receives must build a valid ``Settings``, shard
ids must cover the embeddings partitions exactly once per copy, and options
(GPU, secrets, Strimzi) must show up where the Kubernetes API will read them.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import pytest
from helm_support import (
    CHART,
    NAMESPACE,
    RELEASE,
    containers,
    env_of,
    find,
    one,
    pod_spec,
    render,
    render_text,
)

from index.shard import owned_partitions
from streams.settings import PREFIX, Settings

# Fields the chart sets itself (from its own values), or that mean nothing in a
# cluster (the embedded broker's address); everything else is `settings:`.
CHART_MANAGED = {
    "kafka_bootstrap",
    "embedded_broker",
    "topic_prefix",
    "upload_partitions",
    "update_partitions",
    "embedding_partitions",
    "interaction_partitions",
    "replication_factor",
    "fetch_max_wait_ms",
    "app_id",
    "data_dir",
    "model_dir",
    "index_shards",
    "shard_id",
    "shard_http_port",
    "shard_urls",
    "http_host",
    "http_port",
    "api_token",
    "worker_web_port",
}
EMBEDDED_ONLY = {"broker_host", "broker_port"}


def container_settings(container: dict[str, Any], pod_index: int = 0) -> Settings:
    """The Settings a container builds from its env, as Kubernetes would fill it in."""
    env: dict[str, str] = {}
    for name, entry in env_of(container).items():
        if "value" in entry:
            env[name] = entry["value"]
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            env[name] = "secret-from-kubernetes"
        else:
            path = entry["valueFrom"]["fieldRef"]["fieldPath"]
            assert path == "metadata.labels['apps.kubernetes.io/pod-index']", path
            env[name] = str(pod_index)
    return Settings.from_env(env)


@pytest.mark.parametrize("production", [False, True], ids=["default", "production"])
def test_every_container_gets_valid_settings(production: bool) -> None:
    docs = render(production=production)
    field_names = {f.name for f in fields(Settings)}
    seen = 0
    for workload, container in containers(docs):
        for name in env_of(container):
            assert name.startswith(PREFIX), f"{name} in {workload['metadata']['name']}"
            assert name[len(PREFIX) :].lower() in field_names, f"{name} is not a Settings field"
        settings = container_settings(container)
        assert not settings.embedded_broker
        assert str(settings.data_dir) == "/var/lib/visearch"
        assert settings.http_host == "0.0.0.0"
        seen += 1
    assert seen >= 4  # api, embed, shard, topics


def test_schema_settings_enum_covers_every_field() -> None:
    """A new Settings field must be reachable: chart-managed or allowed under `settings:`."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    allowed = set(schema["properties"]["settings"]["propertyNames"]["enum"])
    field_names = {f.name for f in fields(Settings)}
    assert allowed <= field_names, f"not Settings fields: {allowed - field_names}"
    unreachable = field_names - allowed - CHART_MANAGED - EMBEDDED_ONLY
    assert not unreachable, f"add {sorted(unreachable)} to values.schema.json settings enum"
    assert not allowed & CHART_MANAGED


def test_default_topology() -> None:
    docs = render()
    api = one(docs, "Deployment", "api")
    embed = one(docs, "Deployment", "embed")
    shards = find(docs, "StatefulSet")
    assert [c["args"] for c in pod_spec(api)["containers"]] == [["api"]]
    assert [c["args"] for c in pod_spec(embed)["containers"]] == [["worker"]]
    assert len(shards) == 1 and shards[0]["spec"]["replicas"] == 2
    job = one(docs, "Job", "topics")
    assert pod_spec(job)["containers"][0]["args"] == ["topics"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert {p["metadata"]["name"] for p in find(docs, "PodDisruptionBudget")} == {
        f"{RELEASE}-visearch-{n}" for n in ("api", "embed", "shards")
    }
    assert len(find(docs, "NetworkPolicy")) == 3
    # The image store is shared by the API (writes) and the workers (read file:// URIs).
    for workload in (api, embed):
        claims = [v for v in pod_spec(workload)["volumes"] if "persistentVolumeClaim" in v]
        assert claims[0]["persistentVolumeClaim"]["claimName"] == f"{RELEASE}-visearch-images"
    assert not find(docs, "HorizontalPodAutoscaler") and not find(docs, "Ingress")


def test_production_topology() -> None:
    docs = render(production=True)
    for kind in ("HorizontalPodAutoscaler", "Ingress", "ServiceMonitor", "PrometheusRule"):
        assert len(find(docs, kind)) == 1, kind
    dashboards = one(docs, "ConfigMap", "dashboards")
    assert json.loads(dashboards["data"]["visearch-ops.json"])["uid"] == "visearch-ops"
    hpa = find(docs, "HorizontalPodAutoscaler")[0]
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {
        "consumergroup": "visearch",
        "topic": "visearch.image-uploads",
    }
    # With an HPA the Deployment must not pin replicas (each upgrade would reset them).
    assert "replicas" not in one(docs, "Deployment", "embed")["spec"]
    shard = container_settings(pod_spec(find(docs, "StatefulSet")[0])["containers"][0], 3)
    assert shard.index_factory == "IVF4096,PQ64" and shard.replication_factor == 3


@pytest.mark.parametrize(("count", "copies", "partitions"), [(3, 2, 8), (1, 1, 4), (16, 2, 64)])
def test_shard_ordinal_maps_to_shard_id(count: int, copies: int, partitions: int) -> None:
    docs = render(
        {
            "shards": {"count": count, "replicasPerShard": copies},
            "kafka": {"partitions": {"embeddings": partitions}},
        }
    )
    statefulsets = find(docs, "StatefulSet")
    assert len(statefulsets) == copies
    for sts in statefulsets:
        assert sts["spec"]["replicas"] == count
        container = pod_spec(sts)["containers"][0]
        owned: list[int] = []
        for ordinal in range(count):
            settings = container_settings(container, pod_index=ordinal)
            assert settings.resolved_shard_id == ordinal
            owned += owned_partitions(
                settings.embedding_partitions, settings.resolved_shard_id, settings.index_shards
            )
        # Every copy owns every embeddings partition exactly once.
        assert sorted(owned) == list(range(partitions))
    # The API scatters to one Service per shard id, in order; each selects pod k of every copy.
    api = container_settings(pod_spec(one(docs, "Deployment", "api"))["containers"][0])
    assert api.index_shards == count
    for k, url in enumerate(api.remote_shards):
        assert url == f"http://{RELEASE}-visearch-shard-{k}.{NAMESPACE}.svc:8180"
        service = one(docs, "Service", f"shard-{k}")
        assert service["spec"]["selector"]["apps.kubernetes.io/pod-index"] == str(k)
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == "shard"
    assert len(api.remote_shards) == count


def test_gpu_option() -> None:
    plain = one(render(), "Deployment", "embed")
    assert "nvidia.com/gpu" not in json.dumps(plain)
    docs = render({"embedWorkers": {"gpu": {"enabled": True, "count": 2}}})
    spec = pod_spec(one(docs, "Deployment", "embed"))
    worker = spec["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert worker["resources"]["limits"]["cpu"] == "2"  # the CPU limit is kept
    assert worker["image"].endswith("-cuda")
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    # Only the embedding workers ask for GPUs.
    for name in ("api",):
        assert "nvidia.com/gpu" not in json.dumps(one(docs, "Deployment", name))
    assert "nvidia.com/gpu" not in json.dumps(find(docs, "StatefulSet"))


def test_api_token_comes_from_a_secret() -> None:
    assert "VISEARCH_API_TOKEN" not in env_of(
        pod_spec(one(render(), "Deployment", "api"))["containers"][0]
    )
    docs = render({"api": {"apiToken": {"existingSecret": "vs-token", "key": "bearer"}}})
    env = env_of(pod_spec(one(docs, "Deployment", "api"))["containers"][0])
    entry = env["VISEARCH_API_TOKEN"]
    assert "value" not in entry
    assert entry["valueFrom"] == {"secretKeyRef": {"name": "vs-token", "key": "bearer"}}
    assert not find(docs, "Secret"), "the chart must not hold the token itself"


def test_extra_settings_reach_containers_as_settings_expect() -> None:
    docs = render(
        {"settings": {"ann_threshold": 1000000, "embed_linger_s": 0.005, "tiles": "quadrants"}}
    )
    for _, container in containers(docs):
        env = env_of(container)
        # Helm reads numbers as floats: a million must not become "1e+06".
        assert env["VISEARCH_ANN_THRESHOLD"]["value"] == "1000000"
        settings = container_settings(container)
        assert settings.ann_threshold == 1_000_000
        assert settings.embed_linger_s == 0.005
        assert settings.tiles == "quadrants"


def test_strimzi_cluster_and_topic_hook_order() -> None:
    docs = render({"strimzi": {"enabled": True}, "kafka": {"replicationFactor": 3}})
    kafka = find(docs, "Kafka")
    assert len(kafka) == 1 and len(find(docs, "KafkaNodePool")) == 1
    assert kafka[0]["spec"]["kafka"]["config"]["min.insync.replicas"] == 2
    api = container_settings(pod_spec(one(docs, "Deployment", "api"))["containers"][0])
    assert api.kafka_bootstrap == f"{RELEASE}-visearch-kafka-kafka-bootstrap:9092"
    # The cluster is created by this release, so topics are made after it exists.
    job = one(docs, "Job", "topics")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"


def test_feedback_workers_form_their_own_group() -> None:
    docs = render({"feedbackWorkers": {"enabled": True}})
    feedback = pod_spec(one(docs, "Deployment", "feedback"))["containers"][0]
    assert container_settings(feedback).app_id == "visearch-feedback"
    embed = pod_spec(one(docs, "Deployment", "embed"))["containers"][0]
    assert container_settings(embed).app_id == "visearch"


@pytest.mark.parametrize("production", [False, True], ids=["default", "production"])
def test_pods_run_locked_down(production: bool) -> None:
    docs = render(production=production)
    for workload, container in containers(docs):
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] and ctx["runAsNonRoot"], workload["metadata"]["name"]
        assert not ctx["allowPrivilegeEscalation"] and ctx["capabilities"]["drop"] == ["ALL"]
        assert pod_spec(workload)["automountServiceAccountToken"] is False
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts  # the only writable places are volumes
        if workload["kind"] != "Job":
            assert "livenessProbe" in container and "readinessProbe" in container
            assert container["resources"]["limits"] and container["resources"]["requests"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"shards": {"count": "3"}}, "count"),
        ({"shards": {"count": 0}}, "count"),
        ({"settings": {"embed_batch": 8}}, "embed_batch"),
        ({"settings": {"kafka_bootstrap": "x:1"}}, "kafka_bootstrap"),
        ({"kafka": {"bootstrapServers": "kafka 9092"}}, "bootstrapServers"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"embedWorkers": {"autoscaling": {"metric": "memory"}}}, "metric"),
        ({"replicas": 3}, "replicas"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    code, out, err = render_text(values)
    assert code == 2 and not out, out[:200]
    assert message in err, err


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka": {"tls": {"enabled": True}}}, "no SASL/TLS fields"),
        ({"kafka": {"sasl": {"enabled": True}}}, "no SASL/TLS fields"),
        (
            {"embedWorkers": {"autoscaling": {"enabled": True, "maxReplicas": 9}}},
            "exceeds kafka.partitions.uploads",
        ),
        ({"shards": {"count": 9}}, "exceeds kafka.partitions.embeddings"),
    ],
)
def test_render_refuses_topologies_that_cannot_work(values: dict[str, Any], message: str) -> None:
    code, _, err = render_text(values)
    assert code == 2 and message in err, err

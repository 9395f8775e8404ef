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

from feedback.consumer import checkpoint_path
from index.shard import owned_partitions
from streams.settings import PREFIX, Settings
from streams.topics import topic_specs

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
    "background_fetch_max_wait_ms",
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
    "feedback_http_port",
    "feedback_url",
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_cafile",
    "kafka_ssl_certfile",
    "kafka_ssl_keyfile",
}
# `visearch run` only. model_precision: in a cluster every pod must embed with the same
# model version, so the operator picks the model directory once (VISEARCH_MODEL_DIR)
# instead of each pod choosing on its own CPU.
EMBEDDED_ONLY = {"broker_host", "broker_port", "model_precision"}


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
    assert seen >= 5  # api, embed, shard, topics, feedback


def test_schema_settings_enum_covers_every_field() -> None:
    """A new Settings field must be reachable: chart-managed or allowed under `settings:`."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    allowed = set(schema["properties"]["settings"]["propertyNames"]["enum"])
    field_names = {f.name for f in fields(Settings)}
    assert allowed <= field_names, f"not Settings fields: {allowed - field_names}"
    unreachable = field_names - allowed - CHART_MANAGED - EMBEDDED_ONLY
    assert not unreachable, f"add {sorted(unreachable)} to values.schema.json settings enum"
    assert not allowed & CHART_MANAGED


def shard_sets(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        s
        for s in find(docs, "StatefulSet")
        if s["metadata"]["labels"]["app.kubernetes.io/component"] == "shard"
    ]


def test_default_topology() -> None:
    docs = render()
    api = one(docs, "Deployment", "api")
    embed = one(docs, "Deployment", "embed")
    shards = shard_sets(docs)
    assert [c["args"] for c in pod_spec(api)["containers"]] == [["api"]]
    assert [c["args"] for c in pod_spec(embed)["containers"]] == [["worker"]]
    assert len(shards) == 1 and shards[0]["spec"]["replicas"] == 2
    feedback = one(docs, "StatefulSet", "feedback")
    assert [c["args"] for c in pod_spec(feedback)["containers"]] == [["feedback"]]
    job = one(docs, "Job", "topics")
    assert pod_spec(job)["containers"][0]["args"] == ["topics"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    # `visearch topics` creates every topic the code uses (the models topic too),
    # with the chart's partition counts.
    job_settings = container_settings(pod_spec(job)["containers"][0])
    specs = {s.name: s.partitions for s in topic_specs(job_settings)}
    assert set(specs) == set(vars(job_settings.topics).values())
    assert specs["visearch.models"] == 1 and specs["visearch.interactions"] == 4
    assert specs["visearch.embeddings"] == 8
    # No PDB for the single feedback pod: it could only block node drains.
    assert {p["metadata"]["name"] for p in find(docs, "PodDisruptionBudget")} == {
        f"{RELEASE}-visearch-{n}" for n in ("api", "embed", "shards")
    }
    assert len(find(docs, "NetworkPolicy")) == 4
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
    shard = container_settings(pod_spec(shard_sets(docs)[0])["containers"][0], 3)
    assert shard.index_factory == "IVF4096,PQ64" and shard.replication_factor == 3


@pytest.mark.parametrize(("count", "copies", "partitions"), [(3, 2, 8), (1, 1, 4), (16, 2, 64)])
def test_shard_ordinal_maps_to_shard_id(count: int, copies: int, partitions: int) -> None:
    docs = render(
        {
            "shards": {"count": count, "replicasPerShard": copies},
            "kafka": {"partitions": {"embeddings": partitions}},
        }
    )
    statefulsets = shard_sets(docs)
    assert len(statefulsets) == copies
    for sts in statefulsets:
        assert sts["spec"]["replicas"] == count
        container = pod_spec(sts)["containers"][0]
        owned: list[int] = []
        for ordinal in range(count):
            settings = container_settings(container, pod_index=ordinal)
            assert settings.resolved_shard_id == ordinal
            assert settings.shard_search_threads == 2  # the pod's CPU limit
            owned += owned_partitions(
                settings.embedding_partitions, settings.resolved_shard_id, settings.index_shards
            )
        # Every copy owns every embeddings partition exactly once.
        assert sorted(owned) == list(range(partitions))
    # The API knows every copy of every shard, in order, by its stable pod name.
    api = container_settings(pod_spec(one(docs, "Deployment", "api"))["containers"][0])
    assert api.index_shards == count
    for k, urls in enumerate(api.remote_shards):
        assert urls == [
            f"http://{RELEASE}-visearch-shard-r{r}-{k}.{RELEASE}-visearch-shards.{NAMESPACE}.svc:8180"
            for r in range(copies)
        ]
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
    assert "nvidia.com/gpu" not in json.dumps(find(docs, "StatefulSet"))  # shards, feedback


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


KAFKA_COMPONENTS = {"api", "embed", "shard", "feedback", "topics"}


def kafka_files(workload: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """VISEARCH_KAFKA_SSL_* path -> the Secret it is mounted from (read-only, checked)."""
    volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
    files = {}
    for name, entry in env_of(container).items():
        if not name.startswith("VISEARCH_KAFKA_SSL_"):
            continue
        path = entry["value"]
        mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
        assert mount["readOnly"] is True, mount
        secret = volumes[mount["name"]]["secret"]
        relative = path[len(mount["mountPath"]) + 1 :]
        assert relative in {item["path"] for item in secret["items"]}, (path, secret)
        files[name] = secret["secretName"]
    return files


def test_plaintext_by_default_with_nothing_mounted() -> None:
    for workload, container in containers(render()):
        assert not [n for n in env_of(container) if n.startswith("VISEARCH_KAFKA_S")]
        assert not [v for v in pod_spec(workload)["volumes"] if v["name"].startswith("kafka-")]
        assert container_settings(container).kafka_security_protocol == "PLAINTEXT"


def test_production_kafka_credentials_come_from_secrets_in_every_component() -> None:
    docs = render(production=True)
    components = set()
    for workload, container in containers(docs):
        components.add(workload["metadata"]["labels"]["app.kubernetes.io/component"])
        env = env_of(container)
        for name, key in (("USERNAME", "username"), ("PASSWORD", "password")):
            entry = env[f"VISEARCH_KAFKA_SASL_{name}"]
            assert "value" not in entry
            assert entry["valueFrom"] == {
                "secretKeyRef": {"name": "visearch-kafka-user", "key": key}
            }
        assert kafka_files(workload, container) == {"VISEARCH_KAFKA_SSL_CAFILE": "kafka-cluster-ca"}
        settings = container_settings(container)
        assert settings.kafka_security_protocol == "SASL_SSL"
        assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
        assert settings.kafka_bootstrap.endswith(":9093")
    assert components >= KAFKA_COMPONENTS
    assert not find(docs, "Secret"), "the chart must not hold Kafka credentials itself"


def test_mutual_tls_mounts_the_client_certificate_readable_by_the_pod_only() -> None:
    docs = render({"kafka": {"tls": {"enabled": True, "caSecret": "ca", "clientSecret": "me"}}})
    components = set()
    for workload, container in containers(docs):
        components.add(workload["metadata"]["labels"]["app.kubernetes.io/component"])
        assert kafka_files(workload, container) == {
            "VISEARCH_KAFKA_SSL_CAFILE": "ca",
            "VISEARCH_KAFKA_SSL_CERTFILE": "me",
            "VISEARCH_KAFKA_SSL_KEYFILE": "me",
        }
        client = next(v for v in pod_spec(workload)["volumes"] if v["name"] == "kafka-client")
        assert client["secret"]["defaultMode"] == 0o440
        settings = container_settings(container)
        assert settings.kafka_security_protocol == "SSL"
        assert not any(n.startswith("VISEARCH_KAFKA_SASL") for n in env_of(container))
    assert components >= KAFKA_COMPONENTS


def test_strimzi_with_tls_and_scram_creates_the_user_and_uses_its_secrets() -> None:
    docs = render(
        {
            "strimzi": {"enabled": True},
            "kafka": {"tls": {"enabled": True}, "sasl": {"enabled": True}},
        }
    )
    kafka = find(docs, "Kafka")[0]["spec"]
    (listener,) = kafka["kafka"]["listeners"]
    assert listener["tls"] is True and listener["port"] == 9093
    assert listener["authentication"] == {"type": "scram-sha-512"}
    assert "userOperator" in kafka["entityOperator"]
    (user,) = find(docs, "KafkaUser")
    assert user["metadata"]["labels"]["strimzi.io/cluster"] == f"{RELEASE}-visearch-kafka"
    assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
    for workload, container in containers(docs):
        env = env_of(container)
        assert env["VISEARCH_KAFKA_SASL_USERNAME"]["value"] == user["metadata"]["name"]
        assert env["VISEARCH_KAFKA_SASL_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": user["metadata"]["name"], "key": "password"}
        }
        assert kafka_files(workload, container) == {
            "VISEARCH_KAFKA_SSL_CAFILE": f"{RELEASE}-visearch-kafka-cluster-ca-cert"
        }
        settings = container_settings(container)
        assert settings.kafka_security_protocol == "SASL_SSL"
        assert settings.kafka_bootstrap == f"{RELEASE}-visearch-kafka-kafka-bootstrap:9093"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and In expressions) selects these labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def allows(policy: dict[str, Any], direction: str, peer: dict[str, str], port: int) -> bool:
    """Whether a NetworkPolicy rule lets this pod (by labels) in or out on this port."""
    side = "from" if direction == "ingress" else "to"
    for rule in policy["spec"].get(direction, []):
        if port not in [p["port"] for p in rule.get("ports", [])]:
            continue
        peers = rule.get(side)
        if peers is None or any(
            "podSelector" in p and selects(p["podSelector"], peer) for p in peers
        ):
            return True
    return False


def test_api_reads_the_one_feedback_aggregator() -> None:
    """The API gets the feedback Service's URL and a path to it; the aggregator is one pod."""
    docs = render({"feedback": {"port": 9123}})
    feedback = one(docs, "StatefulSet", "feedback")
    assert feedback["spec"]["replicas"] == 1
    pod_labels = feedback["spec"]["template"]["metadata"]["labels"]
    container = pod_spec(feedback)["containers"][0]
    settings = container_settings(container)
    assert settings.feedback_http_port == 9123
    assert container["ports"] == [{"name": "http", "containerPort": 9123}]
    assert not settings.feedback_url  # it aggregates; only the API reads a URL
    # The checkpoint lands on the claim, so a restart resumes instead of replaying.
    (claim,) = feedback["spec"]["volumeClaimTemplates"]
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}[
        claim["metadata"]["name"]
    ]
    assert checkpoint_path(settings).is_relative_to(mount)
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"

    service = one(docs, "Service", "feedback")
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    api_deployment = one(docs, "Deployment", "api")
    api = container_settings(pod_spec(api_deployment)["containers"][0])
    name = service["metadata"]["name"]
    assert api.feedback_url == f"http://{name}.{NAMESPACE}.svc:{port['port']}"

    api_labels = api_deployment["spec"]["template"]["metadata"]["labels"]
    api_policy = one(docs, "NetworkPolicy", "api")
    feedback_policy = one(docs, "NetworkPolicy", "feedback")
    assert selects(feedback_policy["spec"]["podSelector"], pod_labels)
    assert allows(api_policy, "egress", pod_labels, 9123)
    assert allows(feedback_policy, "ingress", api_labels, 9123)
    assert not allows(feedback_policy, "ingress", {"app": "other"}, 9123)
    assert not allows(api_policy, "egress", pod_labels, 8190)
    # The workers' policy no longer claims the feedback pod.
    workers = one(docs, "NetworkPolicy", "workers")["spec"]["podSelector"]
    assert not selects(workers, pod_labels)


def test_feedback_can_run_in_the_api_or_without_a_volume() -> None:
    docs = render({"feedback": {"enabled": False}})
    assert not find(docs, "StatefulSet", "feedback") and not find(docs, "Service", "feedback")
    assert not find(docs, "NetworkPolicy", "feedback")
    api = container_settings(pod_spec(one(docs, "Deployment", "api"))["containers"][0])
    assert api.feedback_url == ""  # the API aggregates in-process
    docs = render({"feedback": {"persistence": {"enabled": False}}})
    feedback = one(docs, "StatefulSet", "feedback")
    assert "volumeClaimTemplates" not in feedback["spec"]
    volumes = {v["name"]: v for v in pod_spec(feedback)["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}


def test_prometheus_scrapes_api_and_feedback() -> None:
    docs = render(production=True)
    (monitor,) = find(docs, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    scraped = [
        s
        for s in find(docs, "Service")
        if selects(monitor["spec"]["selector"], s["metadata"]["labels"])
    ]
    assert sorted(s["metadata"]["name"] for s in scraped) == [
        f"{RELEASE}-visearch-{n}" for n in ("api", "feedback")
    ]
    for service in scraped:
        assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    # The NetworkPolicies let Prometheus (networkPolicy.metricsFrom) reach both pods.
    metrics_from = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    for name, port in (("api", 8080), ("feedback", 8190)):
        rules = one(docs, "NetworkPolicy", name)["spec"]["ingress"]
        assert any(
            r.get("from") == metrics_from and {"protocol": "TCP", "port": port} in r["ports"]
            for r in rules
        ), name


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
        # One aggregator, always: there is no replicas value to raise.
        ({"feedback": {"replicas": 2}}, "replicas"),
        # The chart points the API at its feedback Service itself.
        ({"settings": {"feedback_url": "http://elsewhere:8190"}}, "feedback_url"),
        # The password has no value to put it in: only a Secret reference.
        ({"kafka": {"sasl": {"password": "hunter2"}}}, "password"),
        ({"settings": {"kafka_sasl_password": "hunter2"}}, "kafka_sasl_password"),
        ({"kafka": {"sasl": {"mechanism": "GSSAPI"}}}, "mechanism"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    code, out, err = render_text(values)
    assert code == 2 and not out, out[:200]
    assert message in err, err


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka": {"sasl": {"enabled": True}}}, "needs kafka.sasl.existingSecret"),
        ({"kafka": {"tls": {"caSecret": "ca"}}}, "kafka.tls.enabled is false"),
        ({"kafka": {"sasl": {"existingSecret": "user"}}}, "kafka.sasl.enabled is false"),
        (
            {
                "strimzi": {"enabled": True},
                "kafka": {"sasl": {"enabled": True, "mechanism": "PLAIN"}},
            },
            "set kafka.sasl.mechanism to SCRAM-SHA-512",
        ),
        (
            {
                "strimzi": {"enabled": True},
                "kafka": {"tls": {"enabled": True, "clientSecret": "c"}},
            },
            "not certificates",
        ),
        (
            {"embedWorkers": {"autoscaling": {"enabled": True, "maxReplicas": 9}}},
            "exceeds kafka.partitions.uploads",
        ),
        ({"shards": {"count": 9}}, "exceeds kafka.partitions.embeddings"),
        (
            {
                "monitoring": {"serviceMonitor": {"enabled": True}},
                "networkPolicy": {"apiIngressFrom": [{"podSelector": {}}]},
            },
            "set networkPolicy.metricsFrom",
        ),
    ],
)
def test_render_refuses_topologies_that_cannot_work(values: dict[str, Any], message: str) -> None:
    code, _, err = render_text(values)
    assert code == 2 and message in err, err

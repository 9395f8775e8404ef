"""Kafka SASL/TLS: settings validation and the one mapping to client options.

No broker here speaks SASL or TLS (the embedded Tansu build has neither),
so these check what can be checked without one: the combinations the
settings refuse, the options every client gets, that kafka-python's own SASL
code and aiokafka accept them, and that the TLS context completes a real
handshake (in memory) against a test CA and presents the client certificate.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import faust
import pytest

from streams.app import create_app, faust_credentials
from streams.kafka_connection import KafkaConnection, KafkaConnectionError, Secret
from streams.settings import Settings, SettingsError

CLUSTER = {"VISEARCH_KAFKA_BOOTSTRAP": "kafka-0:9093,kafka-1:9093"}
SASL = {
    **CLUSTER,
    "VISEARCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "VISEARCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "VISEARCH_KAFKA_SASL_USERNAME": "visearch",
    "VISEARCH_KAFKA_SASL_PASSWORD": "s3cret-pw",
}


def test_plaintext_is_the_default_and_maps_to_the_options_of_before() -> None:
    assert Settings().kafka.client_options() == {
        "bootstrap_servers": "127.0.0.1:19092",
        "security_protocol": "PLAINTEXT",
    }
    assert faust_credentials(Settings().kafka) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({**CLUSTER, "VISEARCH_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of PLAINTEXT"),
        (
            {"VISEARCH_KAFKA_SECURITY_PROTOCOL": "SSL"},
            "the embedded broker has no SASL or TLS",
        ),
        ({**SASL, "VISEARCH_KAFKA_SASL_MECHANISM": ""}, "VISEARCH_KAFKA_SASL_MECHANISM must be"),
        ({**SASL, "VISEARCH_KAFKA_SASL_MECHANISM": "GSSAPI"}, "VISEARCH_KAFKA_SASL_MECHANISM"),
        ({**SASL, "VISEARCH_KAFKA_SASL_PASSWORD": ""}, "VISEARCH_KAFKA_SASL_PASSWORD are required"),
        ({**SASL, "VISEARCH_KAFKA_SASL_USERNAME": ""}, "VISEARCH_KAFKA_SASL_USERNAME and"),
        # Silently ignored credentials would be a misconfiguration found in production.
        ({**CLUSTER, "VISEARCH_KAFKA_SASL_USERNAME": "u"}, "does not use SASL"),
        ({**SASL, "VISEARCH_KAFKA_SSL_CAFILE": "/ca.crt"}, "does not use TLS"),
        (
            {
                **CLUSTER,
                "VISEARCH_KAFKA_SECURITY_PROTOCOL": "SSL",
                "VISEARCH_KAFKA_SSL_KEYFILE": "/client.key",
            },
            "VISEARCH_KAFKA_SSL_KEYFILE needs VISEARCH_KAFKA_SSL_CERTFILE",
        ),
    ],
)
def test_settings_refuse_combinations_that_cannot_work(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_with_overrides_validates_security_too() -> None:
    with pytest.raises(SettingsError, match="embedded broker"):
        Settings().with_overrides(kafka_security_protocol="SASL_SSL")


def test_validation_does_not_open_the_tls_files() -> None:
    """The files are read by clients at start; settings build where they are not mounted."""
    env = {**SASL, "VISEARCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    env["VISEARCH_KAFKA_SSL_CAFILE"] = "/not/mounted/ca.crt"
    settings = Settings.from_env(env)
    with pytest.raises(KafkaConnectionError, match="VISEARCH_KAFKA_SSL_CAFILE='/not/mounted"):
        settings.kafka.client_options()


def test_sasl_options_and_the_password_never_printed(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.from_env(SASL)
    options = settings.kafka.client_options()
    assert options == {
        "bootstrap_servers": "kafka-0:9093,kafka-1:9093",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "visearch",
        "sasl_plain_password": "s3cret-pw",
    }
    assert isinstance(options["sasl_plain_password"], Secret)
    credentials = faust_credentials(settings.kafka)
    # kafka-python's admin client logs its configuration at DEBUG: repr must hide it.
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").debug("config %s %r", options, credentials)
    for text in (repr(settings), repr(settings.kafka), str(options), caplog.text):
        assert "s3cret-pw" not in text
        assert "visearch" in text  # the user name is not a secret


@pytest.mark.parametrize(
    ("mechanism", "first_message"),
    [
        ("PLAIN", b"visearch\0visearch\0s3cret-pw"),
        ("SCRAM-SHA-256", b"n,,n=visearch,r="),
        ("SCRAM-SHA-512", b"n,,n=visearch,r="),
    ],
)
def test_kafka_python_sasl_reads_the_options(mechanism: str, first_message: bytes) -> None:
    """kafka-python's own SASL mechanism, built from the options, starts the exchange."""
    from kafka.net.sasl import get_sasl_mechanism

    options = Settings.from_env({**SASL, "VISEARCH_KAFKA_SASL_MECHANISM": mechanism}).kafka
    config = options.client_options()
    sasl = get_sasl_mechanism(config["sasl_mechanism"])(**config)
    assert sasl.auth_bytes().startswith(first_message)


def test_kafka_python_clients_accept_the_option_names() -> None:
    """A misspelt option is refused when the client is built (no broker needed with api_version)."""
    from kafka import KafkaConsumer

    options = Settings.from_env(SASL).kafka.client_options()
    consumer = KafkaConsumer(**options, api_version=(2, 8), client_id="visearch-test")
    consumer.close()


def test_aiokafka_under_faust_gets_the_same_protocol_and_credentials() -> None:
    """What Faust hands aiokafka, and aiokafka's own validation of it."""
    from aiokafka.client import AIOKafkaClient
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    app = create_app(Settings.from_env(SASL))
    auth = dict(credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context))
    assert auth == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "visearch",
        "sasl_plain_password": "s3cret-pw",
        "ssl_context": None,
    }

    async def build() -> None:
        await AIOKafkaClient(bootstrap_servers="127.0.0.1:1", **auth).close()

    asyncio.run(build())


# ------------------------------------------------------------------------- TLS


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


def issue(pki: Path, name: str, cn: str, ca: str | None) -> None:
    """An EC key and certificate ``name``, self-signed as a CA or signed by ``ca``."""
    key, crt = pki / f"{name}.key", pki / f"{name}.crt"
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    if ca is None:
        openssl("req", "-x509", *curve, "-keyout", key, "-out", crt, "-days", "1",
                "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
        return
    csr, ext = pki / f"{name}.csr", pki / f"{name}.ext"
    ext.write_text(f"subjectAltName=DNS:{cn}\n")
    openssl("req", *curve, "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
    openssl("x509", "-req", "-in", csr, "-CA", pki / f"{ca}.crt", "-CAkey", pki / f"{ca}.key",
            "-CAcreateserial", "-out", crt, "-days", "1", "-extfile", ext)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to issue test certificates")
    pki = tmp_path_factory.mktemp("pki")
    issue(pki, "ca", "visearch test CA", None)
    issue(pki, "other-ca", "someone else's CA", None)
    issue(pki, "broker", "kafka-0.test", "ca")
    issue(pki, "client", "visearch", "ca")
    return pki


def tls_connection(pki: Path, **files: str) -> KafkaConnection:
    env = {**CLUSTER, "VISEARCH_KAFKA_SECURITY_PROTOCOL": "SSL"}
    env.update({f"VISEARCH_KAFKA_SSL_{k.upper()}": str(pki / v) for k, v in files.items()})
    return Settings.from_env(env).kafka


def handshake(client: ssl.SSLContext, pki: Path, hostname: str = "kafka-0.test") -> Any:
    """A TLS handshake in memory against a broker certificate that requires a client one.

    Returns the client certificate the broker saw.
    """
    broker = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    broker.load_cert_chain(pki / "broker.crt", pki / "broker.key")
    broker.load_verify_locations(pki / "ca.crt")
    broker.verify_mode = ssl.CERT_REQUIRED
    to_broker, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    ends = [
        client.wrap_bio(to_client, to_broker, server_hostname=hostname),
        broker.wrap_bio(to_broker, to_client, server_side=True),
    ]
    pending = list(ends)
    for _ in range(20):
        for end in list(pending):
            try:
                end.do_handshake()
                pending.remove(end)
            except ssl.SSLWantReadError:
                pass
        if not pending:
            return ends[1].getpeercert()
    raise AssertionError("the handshake did not finish")


def test_tls_context_verifies_the_broker_and_presents_the_client_certificate(pki: Path) -> None:
    kafka = tls_connection(pki, cafile="ca.crt", certfile="client.crt", keyfile="client.key")
    options = kafka.client_options()
    context = options["ssl_context"]
    assert options["security_protocol"] == "SSL"
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    seen = handshake(context, pki)
    assert dict(item[0] for item in seen["subject"])["commonName"] == "visearch"
    # Faust gets the same verification (its own context from the same files).
    credentials = faust_credentials(kafka)
    assert isinstance(credentials, faust.SSLCredentials)
    assert handshake(credentials.context, pki)


def test_tls_refuses_a_broker_signed_by_another_ca_or_for_another_host(pki: Path) -> None:
    cert = {"certfile": "client.crt", "keyfile": "client.key"}
    wrong_ca = tls_connection(pki, cafile="other-ca.crt", **cert).ssl_context()
    assert wrong_ca is not None
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        handshake(wrong_ca, pki)
    right_ca = tls_connection(pki, cafile="ca.crt", **cert).ssl_context()
    assert right_ca is not None
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(right_ca, pki, hostname="kafka-9.elsewhere")


def test_sasl_ssl_maps_to_sasl_credentials_with_the_tls_context(pki: Path) -> None:
    env = {**SASL, "VISEARCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    env["VISEARCH_KAFKA_SSL_CAFILE"] = str(pki / "ca.crt")
    settings = Settings.from_env(env)
    options = settings.kafka.client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(faust_credentials(settings.kafka))
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)


def test_an_unreadable_client_key_names_both_variables(pki: Path) -> None:
    kafka = tls_connection(pki, cafile="ca.crt", certfile="client.crt", keyfile="broker.key")
    with pytest.raises(KafkaConnectionError, match="VISEARCH_KAFKA_SSL_KEYFILE="):
        kafka.client_options()

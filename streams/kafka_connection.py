"""How every visearch Kafka client connects: the one mapping from settings to client options.

kafka-python (publisher, log followers, admin client, dead-letter reader,
pairs export) and aiokafka under Faust (embedding workers) spell their
security options differently, and a client that silently connects in
plaintext while the others use TLS is the kind of drift that only shows in
production. So the settings become a :class:`KafkaConnection` once
(``Settings.kafka``), and every client takes its options from here:
:meth:`KafkaConnection.client_options` for kafka-python,
:func:`streams.app.faust_credentials` (built on :meth:`KafkaConnection.ssl_context`)
for Faust.

One TLS context serves both libraries, so certificate verification is the
same everywhere: the CA file (else the system trust store), hostname
checking on, TLS 1.2 at least, an optional client certificate for mutual
TLS. The files are read when a client is built (at process start), not when
the settings are validated, so settings stay buildable where the files are
not mounted (tests, tools); a missing file fails there naming its variable.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from streams.errors import VisearchError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# Error messages name the variable to fix, not the dataclass field.
_FILE_VARIABLES = {
    "ssl_cafile": "VISEARCH_KAFKA_SSL_CAFILE",
    "ssl_certfile": "VISEARCH_KAFKA_SSL_CERTFILE",
    "ssl_keyfile": "VISEARCH_KAFKA_SSL_KEYFILE",
}


class KafkaConnectionError(VisearchError, ValueError):
    """A TLS file named by the settings cannot be used."""


class Secret(str):
    """A string whose ``repr`` hides it.

    kafka-python's admin client logs its whole configuration at DEBUG, and
    any dict of options printed in a traceback or a log line goes through
    ``repr``; the password must not. It is still a ``str`` for the SASL code
    that encodes it.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<redacted>'"


@dataclass(frozen=True)
class KafkaConnection:
    """Where the cluster is and how to authenticate to it (validated by ``Settings``)."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)  # never printed
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context, or None without TLS; reads the files now."""
        if not self.uses_tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ssl_cafile or None)
        except (OSError, ssl.SSLError) as exc:
            raise self._file_error("ssl_cafile", exc) from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ssl_certfile:
            try:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile or None)
            except (OSError, ssl.SSLError) as exc:
                raise self._file_error("ssl_certfile", exc) from exc
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's KafkaConsumer, KafkaProducer and admin client."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        context = self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        if self.uses_sasl:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = Secret(self.sasl_password)
        return options

    def _file_error(self, name: str, exc: BaseException) -> KafkaConnectionError:
        if name == "ssl_certfile" and self.ssl_keyfile:
            where = (
                f"{_FILE_VARIABLES['ssl_certfile']}={self.ssl_certfile!r} with "
                f"{_FILE_VARIABLES['ssl_keyfile']}={self.ssl_keyfile!r}"
            )
        else:
            where = f"{_FILE_VARIABLES[name]}={getattr(self, name)!r}"
        return KafkaConnectionError(f"{where}: cannot load for Kafka TLS: {exc}")

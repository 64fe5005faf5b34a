"""One exception tree. Each class says whether retrying the same thing can help (`retriable`).

The connection loop and the CLI decide what to do from the class alone: config errors exit 2,
auth errors back off harder and are reported distinctly, everything retriable reconnects.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""

    retriable: bool = False


class ConfigError(BridgeError):
    """The configuration is invalid; the message names the key path. Never retried."""


class ParseError(BridgeError):
    """A venue frame could not be turned into records. It becomes a dead-letter record.

    `reason` is a short stable code (used as a metric label and in the dead-letter record),
    `detail` is the human explanation naming the offending field.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class EncodeError(BridgeError):
    """A record did not fit its Avro schema. The record goes to the dead-letter topic instead."""


class ConnectionLost(BridgeError):
    """The venue connection ended; `reason` is the reconnect reason label."""

    retriable = True

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class AuthRejected(ConnectionLost):
    """The venue refused our signature or key. Retried, but with the slower auth backoff."""

    def __init__(self, detail: str) -> None:
        super().__init__("auth_rejected", detail)


class SinkError(BridgeError):
    """Kafka refused or lost a record beyond the producer's own retries."""

    retriable = True


class RegistryError(BridgeError):
    """The schema registry did not do what the bridge needs at start (register or look up a
    schema, set a subject's compatibility). Network faults and 5xx/429 answers are retriable;
    any other refusal (bad credentials, an unknown subject with registration turned off) is not:
    retrying the same request cannot change the answer."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: int | None = None,
        retriable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.retriable = retriable


class IncompatibleSchema(RegistryError):
    """The registry refused a schema version as incompatible with the subject's history (HTTP
    409): shipping it would break consumers, so the bridge does not start."""

    def __init__(self, subject: str, detail: str, what: str = "the schema") -> None:
        super().__init__(
            f"subject {subject}: the registry refused {what} as incompatible: {detail}",
            status=409,
            error_code=409,
        )
        self.subject = subject
        self.detail = detail

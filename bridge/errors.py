"""One exception tree. Each error says whether retrying the same thing can help (`retriable`).

    BridgeError                 retriable  who decides on it
    ├── ConfigError             no         cli: exit 2
    ├── ParseError              no         venue modules: the frame becomes a dead letter
    ├── EncodeError             no         sink: the record becomes a dead letter
    ├── ConnectionLost          yes        connection: reconnect with backoff (reason label)
    │   └── AuthRejected        yes        connection: reconnect on the slower auth series
    ├── SnapshotFailed          by kind    snapshot: retry a call while retriable, then the run
    ├── SinkError               by case    app: start retried while retriable; else exit 1
    │   └── DiskBufferError     no         app: exit 1 (an fsync failed: the disk buffer's
    │                                      data can no longer be trusted; a restart replays it)
    ├── RegistryError           by status  app: start retried while retriable; cli: exit 2
    │   └── IncompatibleSchema  no
    └── KafkaAccessError        by reason  kafka edge: unreachable is retried; auth, TLS,
                                           topics, authorization: cli exit 2 (at start) or
                                           bridge_kafka_up 0 (while running)

The reason vocabularies below are metric labels: `bridge.metrics` creates every one of them at
zero per stream, and mypy checks that nothing raises a reason outside them.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

# The `reason` label of bridge_ws_reconnects_total.
ReconnectReason = Literal[
    "network",  # connect failed, or the TCP connection broke (close code 1006)
    "close",  # the venue closed the websocket normally
    "auth_rejected",  # HTTP 401/403, close 1008/4001/4003, or an auth error frame
    "watchdog",  # a ping got no pong in time
    "silence",  # no frame at all for `silence_timeout`
    "server_error",  # an error frame or a refused handshake
    "subscribe_rejected",  # the venue refused a subscription (not for auth)
    "subscribe_timeout",  # no ack within `subscribe_timeout`
    "internal_error",  # the session crashed on a bug (logged with its traceback)
]
# The `reason` label of bridge_deadletter_total and the dead-letter records' `reason`.
DeadLetterReason = Literal[
    "invalid_json",  # not strict JSON, or beyond its limits: depth, duplicate keys, surrogates
    "missing_field",  # a required field is absent
    "invalid_field",  # a field of the wrong type, or an amount decimal(38, 18) cannot hold
    "unknown_type",  # a push type this version does not know (Aquanow `type`)
    "unknown_event",  # likewise (Satori `event`)
    "stale_version",  # a balance older than one already published (Satori `logId`)
    "encode_error",  # the record did not fit its Avro schema
    "oversized_record",  # the broker refused the record as too large
    "oversized_frame",  # the frame exceeded `max_frame_bytes`
    "internal_error",  # the venue module crashed on the frame (a bug; traceback in the log)
]
# What a REST answer that is not data means (the `reason` of bridge_snapshot_failures_total).
RestErrorKind = Literal[
    "auth",  # credentials refused
    "rate_limited",  # slow down, then retry
    "retry",  # a server fault or an unreadable answer: retry
    "fatal",  # a request this bridge got wrong: retrying the same call cannot help
]
RETRIABLE_REST_ERRORS: frozenset[RestErrorKind] = frozenset({"rate_limited", "retry"})
# Why the bridge cannot use Kafka (logged as `reason`; only `unreachable` is worth retrying).
KafkaProblem = Literal[
    "unreachable",  # no broker answered (network, DNS, a broker down)
    "auth",  # SASL authentication failed, or the identity provider refused the client
    "tls",  # certificate verification or the TLS handshake failed
    "topics",  # configured topics do not exist
    "authorization",  # the principal may not describe or write a configured topic
    "create",  # the cluster refused to create a topic
]


class ExitCode(IntEnum):
    """What `bridge run` exits with; each code means one thing (README "Exit status")."""

    OK = 0  # a clean stop: everything handed over was acknowledged
    CRASH = 1  # a bug or an unexpected failure (a traceback says where)
    CONFIG = 2  # bad config or credentials, missing topics, refused schemas: fix, then restart
    UNACKED = 3  # stopped with records the broker had not acknowledged (grace period ran out)


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

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: DeadLetterReason = reason
        self.detail = detail


class EncodeError(BridgeError):
    """A record did not fit its Avro schema. The record goes to the dead-letter topic instead."""


class ConnectionLost(BridgeError):
    """The venue connection ended; `reason` is the reconnect reason label."""

    retriable = True

    def __init__(self, reason: ReconnectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: ReconnectReason = reason
        self.detail = detail


class AuthRejected(ConnectionLost):
    """The venue refused our signature or key. Retried, but with the slower auth backoff."""

    def __init__(self, detail: str) -> None:
        super().__init__("auth_rejected", detail)


class SnapshotFailed(BridgeError):
    """A REST call of a snapshot failed (after its retries, when `retriable`). The snapshot run
    is retried with backoff, on the slower auth series for `auth`."""

    def __init__(self, kind: RestErrorKind, detail: str, call: str) -> None:
        super().__init__(f"{call}: {kind}: {detail}")
        self.kind: RestErrorKind = kind
        self.detail = detail
        self.retriable = kind in RETRIABLE_REST_ERRORS


class SinkError(BridgeError):
    """Kafka refused or lost a record beyond the producer's own retries."""

    retriable = True


class DiskBufferError(SinkError):
    """The disk buffer cannot keep its promise (an fsync failed: the kernel may have dropped
    the written pages). The process stops; the next start replays what the log holds."""

    retriable = False


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


class KafkaAccessError(BridgeError):
    """The bridge cannot use the cluster: `problem` says why, the message names the broker, the
    listener's security settings or the topics. Only `unreachable` is retriable: a wrong
    password, an untrusted certificate or a missing topic stays wrong until someone acts."""

    def __init__(self, problem: KafkaProblem, message: str) -> None:
        super().__init__(message)
        self.problem: KafkaProblem = problem
        self.retriable = problem == "unreachable"

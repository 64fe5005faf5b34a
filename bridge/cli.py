"""The `bridge` command: run, check [--connect], topics, schemas, tail, resync, simulate, demo.

Exit codes (`bridge.errors.ExitCode`), each meaning one thing: 0 a clean stop; 1 a crash (a
bug or an unexpected failure: the traceback says where); 2 bad configuration, usage or
credentials — a key path, a Kafka sign-in or certificate refused, missing topics, schemas the
registry refuses — which restarting cannot fix; 3 stopped with records the broker had not
acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bridge import __version__
from bridge.errors import ConfigError, ExitCode, KafkaAccessError, RegistryError
from bridge.settings import KafkaSettings, Settings, load_settings, secrets_of

if TYPE_CHECKING:
    from bridge.codec import SchemaStore

EXIT_CONFIG = ExitCode.CONFIG


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        _fail("configuration error", exc)
        return EXIT_CONFIG
    except RegistryError as exc:
        _fail("schema registry error", exc)
        return EXIT_CONFIG if not exc.retriable else ExitCode.CRASH
    except KafkaAccessError as exc:
        _fail(f"kafka error ({exc.problem})", exc)
        return EXIT_CONFIG if not exc.retriable else ExitCode.CRASH
    except KeyboardInterrupt:
        return 130
    return code


def _fail(what: str, exc: Exception) -> None:
    """One line per problem on stderr, each one whole: a log collector keeps it as one event."""
    for line in str(exc).splitlines() or [""]:
        print(f"bridge: {what}: {line}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"bridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the bridge")
    run.add_argument("--config", "-c", type=Path, required=True)
    run.set_defaults(handler=_run)

    check = commands.add_parser(
        "check",
        help="validate a config and print what it would use (no network unless --connect)",
    )
    check.add_argument("--config", "-c", type=Path, required=True)
    check.add_argument(
        "--connect",
        action="store_true",
        help="also reach Kafka, the registry and each venue's REST endpoint (changes nothing)",
    )
    check.set_defaults(handler=_check)

    topics = commands.add_parser(
        "topics", help="describe the configured topics, or create the missing ones"
    )
    topics.add_argument("action", choices=["create", "describe"])
    topics.add_argument("--config", "-c", type=Path, required=True)
    topics.set_defaults(handler=_topics)

    schemas = commands.add_parser(
        "schemas", help="list topics, schema versions and fingerprints; print one schema"
    )
    schemas.add_argument("topic", nargs="?", help="print this topic's schema (newest version)")
    schemas.add_argument("--version", "-v", type=int, default=None, help="print version N")
    schemas.set_defaults(handler=_schemas)

    tail = commands.add_parser(
        "tail", help="print a topic's records as JSON lines (exact decimals as strings)"
    )
    tail.add_argument(
        "topics",
        nargs="+",
        metavar="TOPIC",
        help="logical name (balances, orders, positions, trades, credit, deadletter) "
        "or a Kafka topic name",
    )
    tail.add_argument("--config", "-c", type=Path, help="take Kafka and registry settings here")
    tail.add_argument("--bootstrap-servers", "-b", help="overrides kafka.bootstrap_servers")
    tail.add_argument("--registry-url", help="overrides serialization.registry_url")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    tail.add_argument("--count", "-n", type=int, default=None, help="stop after N records")
    tail.add_argument(
        "--timeout", type=float, default=None, help="stop when no record came for this long (s)"
    )
    tail.set_defaults(handler=_tail)

    resync = commands.add_parser(
        "resync",
        help="ask the running bridge to reconcile one stream now (a signal on the control topic)",
    )
    resync.add_argument("stream", metavar="STREAM", help="the stream's name in the config")
    resync.add_argument("--config", "-c", type=Path, required=True)
    resync.add_argument("--reason", default=None, help="free text kept with the request")
    resync.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wait this long for the bridge's answer and print it (exit 1 without one)",
    )
    resync.set_defaults(handler=_resync)

    simulate = commands.add_parser("simulate", help="serve a venue simulator on loopback")
    simulate.add_argument("venue", choices=["aquanow", "satori"])
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=0, help="0 picks a free port")
    simulate.add_argument("--rest-port", type=int, default=0, help="REST; 0 picks a free port")
    simulate.add_argument("--rate", type=float, default=5.0, help="pushes per second")
    simulate.add_argument("--count", type=int, default=None, help="stop after N pushes")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--api-key", default=None, help="default: the demo's key")
    simulate.add_argument("--api-secret", default=None, help="aquanow: HMAC secret")
    simulate.add_argument(
        "--wallet-address",
        default=None,
        help="satori: the API wallet subscriptions must recover to",
    )
    simulate.add_argument("--coins", default="USD", help="satori: comma-separated coins")
    simulate.add_argument("--pairs", default="ETH-USD", help="satori: comma-separated pairs")
    simulate.add_argument("--legacy", action="store_true", help="aquanow: Legacy account payloads")
    simulate.set_defaults(handler=_simulate)

    demo = commands.add_parser(
        "demo", help="simulators → bridge → real Kafka → decoded records on screen"
    )
    demo.add_argument("--count", type=int, default=None, help="stop after N records")
    demo.add_argument("--rate", type=float, default=5.0, help="pushes per second per venue")
    demo.set_defaults(handler=_demo)
    return parser


# Python's cyclic collector ran a young collection every 700 allocations of containers and,
# every hundred of those, a full one over every live object: ~11 % of the CPU of a stream at
# full rate, and full collections holding the loop 0.1 s (0.6 s with 3,000 streams; tests/
# bench, issue 17). Records die by reference counting; cycles are rare and small. So: a young
# collection every 50,000 allocations, and what start-up built (settings, codec, restored
# state) frozen out of later collections (`gc.freeze`, bridge/app.py).
GC_YOUNG_THRESHOLD: Final = 50_000


def tune_gc() -> None:
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _run(args: argparse.Namespace) -> int:
    from bridge.app import App
    from bridge.logs import configure

    settings = load_settings(args.config)
    configure(settings.log.level, settings.log.format, secrets=secrets_of(settings))
    tune_gc()
    return asyncio.run(App(settings, config_path=args.config).run())


def _check(args: argparse.Namespace) -> int:
    from bridge.kafka import KafkaAccess

    settings = load_settings(args.config)
    KafkaAccess(settings.kafka)  # loads the TLS files: a wrong key password is a config error
    print(describe(settings))
    if not args.connect:
        return ExitCode.OK
    from bridge.preflight import preflight

    print("\nconnect:")
    ok = asyncio.run(preflight(settings, args.config, out=sys.stdout))
    return ExitCode.OK if ok else EXIT_CONFIG


def _topics(args: argparse.Namespace) -> int:
    from bridge import topics
    from bridge.kafka import KafkaAccess

    settings = load_settings(args.config)
    access = KafkaAccess(settings.kafka)

    async def run() -> str:
        if args.action == "create":
            created = await topics.ensure_topics(access, create=True)
            done = f"created: {', '.join(created)}" if created else "every topic exists already"
            return f"{done}\n\n{await topics.describe(access)}"
        return await topics.describe(access)

    print(asyncio.run(run()))
    return ExitCode.OK


def describe(settings: Settings) -> str:
    """What `bridge check` prints: streams, topics and endpoints. No secrets."""
    lines = [f"config OK: {len(settings.streams)} stream(s)", "", "streams:"]
    for s in settings.streams:
        lines.append(f"  {s.name:<20} {s.venue:<8} {s.url}  ({s.scope()})")
        if s.rest_url:
            lines.append(f"  {'':<20} {'':<8} snapshots from {s.rest_url}")
    k, registry = settings.kafka, settings.serialization.registry_url
    lines += ["", "topics:"]
    lines += [
        f"  {logical:<11} → {k.topics.name(logical)}" for logical in type(k.topics).model_fields
    ]
    lines += [
        "",
        "endpoints:",
        f"  kafka       {_kafka_line(k)}",
        f"  serializer  {settings.serialization.mode}" + (f" at {registry}" if registry else ""),
        f"  metrics     http://{settings.metrics.host}:{settings.metrics.port}/metrics "
        "(/healthz, /readyz)",
    ]
    return "\n".join(lines)


def _kafka_line(k: KafkaSettings) -> str:
    """How the bridge reaches Kafka, without secrets: `host:port (SASL_SSL, SCRAM-SHA-512 as
    'bridge', CA /etc/bridge/ca.crt)`."""
    parts: list[str] = [k.security_protocol]
    if k.sasl_mechanism:
        parts.append(k.sasl_mechanism + (f" as {k.sasl_username!r}" if k.sasl_username else ""))
    if k.oauth is not None:
        parts.append(f"token from {k.oauth.provider}")
    if k.ssl_cafile:
        parts.append(f"CA {k.ssl_cafile}")
    if k.ssl_certfile:
        parts.append(f"client certificate {k.ssl_certfile}")
    parts.append("creates missing topics" if k.create_topics else "topics must exist")
    return f"{k.bootstrap_servers} ({', '.join(parts)})"


def _schemas(args: argparse.Namespace) -> int:
    from bridge.codec import SchemaStore

    store = SchemaStore.load()
    if args.topic is None:
        if args.version is not None:
            raise ConfigError("--version: needs a TOPIC")
        print(describe_schemas(store))
        return 0
    if args.topic not in store.topics():
        raise ConfigError(f"TOPIC: {args.topic!r} is not one of {store.topics()}")
    versions = {sv.version: sv for sv in store.versions(args.topic)}
    number = args.version if args.version is not None else max(versions)
    if number not in versions:
        raise ConfigError(f"--version: {args.topic} has versions {sorted(versions)}")
    print(versions[number].text, end="" if versions[number].text.endswith("\n") else "\n")
    return 0


def describe_schemas(store: SchemaStore) -> str:
    """What `bridge schemas` prints: one line per released schema version."""
    rows = [("topic", "version", "record", "fingerprint", "file")]
    for topic in store.topics():
        newest = store.latest(topic).version
        for sv in store.versions(topic):
            mark = " (writes)" if sv.version == newest else ""
            path = f"schemas/{topic}/v{sv.version}.avsc"
            rows.append((topic, f"v{sv.version}{mark}", sv.full_name, sv.fingerprint.hex(), path))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[4]])
        for row in rows
    ]
    lines.append("")
    lines.append(
        "fingerprint: the CRC-64-AVRO of the schema's parsing canonical form, as the 8 bytes "
        "after C3 01 in each single-object value"
    )
    return "\n".join(lines)


def _tail(args: argparse.Namespace) -> int:
    from bridge.consume import tail_main

    return tail_main(
        topics=args.topics,
        config=args.config,
        bootstrap_servers=args.bootstrap_servers,
        registry_url=args.registry_url,
        from_beginning=args.from_beginning,
        count=args.count,
        timeout=args.timeout,
    )


def _resync(args: argparse.Namespace) -> int:
    from bridge.logs import configure
    from bridge.resync import resync

    settings = load_settings(args.config)
    configure("warning", "console", secrets=secrets_of(settings))
    return asyncio.run(resync(settings, args.stream, args.reason, args.wait))


def _simulate(args: argparse.Namespace) -> int:
    try:
        from bridge.dev.simulator.command import simulate
    except ModuleNotFoundError as exc:
        return _without_lab(exc, "simulate")
    return simulate(args)


def _demo(args: argparse.Namespace) -> int:
    try:
        from bridge.dev.demo import main as demo_main
    except ModuleNotFoundError as exc:
        return _without_lab(exc, "demo")
    return demo_main(count=args.count, rate=args.rate)


def _without_lab(exc: ModuleNotFoundError, command: str) -> int:
    """The image deletes bridge/dev (the lab): say so in one line, exit 2 (usage)."""
    if exc.name != "bridge.dev":
        raise exc
    print(
        f"bridge: `{command}` needs bridge.dev (simulators, dev servers), which this "
        "installation does not include; run it from a source checkout",
        file=sys.stderr,
    )
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())

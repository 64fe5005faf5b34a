"""``python -m bridge.devkafka``: run a local Kafka broker for the demo until Ctrl-C / SIGTERM.

Prints ``KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port>`` on stdout (so a shell can ``eval`` or grep
it); everything else goes to stderr. ``--fetch-only`` only fills the jar cache (CI pre-fetch).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from types import FrameType

from bridge.devkafka.broker import DevKafkaError, LocalKafka, ensure_jars


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.devkafka",
        description="Run a single-node Apache Kafka broker (KRaft) from Maven Central jars.",
    )
    parser.add_argument(
        "--fetch-only", action="store_true", help="only fetch the broker jars into the cache"
    )
    parser.add_argument(
        "--startup-timeout", type=float, default=60.0, help="seconds to wait for the broker"
    )
    args = parser.parse_args(argv)

    try:
        if args.fetch_only:
            t0 = time.monotonic()
            libs = ensure_jars()
            print(f"Kafka jars ready in {libs} ({time.monotonic() - t0:.1f}s)", file=sys.stderr)
            return 0

        stop = threading.Event()

        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)

        broker = LocalKafka(startup_timeout=args.startup_timeout)
        try:
            broker.start()
            print(
                f"Kafka broker ready in {broker.startup_seconds:.1f}s; log: {broker.log_path}; "
                "Ctrl-C to stop",
                file=sys.stderr,
            )
            print(f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}", flush=True)
            while not stop.wait(0.5):
                if not broker.is_running:
                    print(
                        f"Kafka broker died unexpectedly; last log lines:\n{broker.log_tail()}",
                        file=sys.stderr,
                    )
                    return 1
            print("stopping Kafka broker...", file=sys.stderr)
        finally:
            broker.close()
    except DevKafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

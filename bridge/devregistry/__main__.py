"""``python -m bridge.devregistry``: run Apicurio Registry locally until Ctrl-C / SIGTERM.

Prints ``SCHEMA_REGISTRY_URL=http://127.0.0.1:<port>/apis/ccompat/v7`` on stdout; everything
else goes to stderr. ``--fetch-only`` only fills the cache (CI pre-fetch).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from types import FrameType

from bridge.devregistry.server import DevRegistryError, LocalRegistry, ensure_registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.devregistry",
        description="Run Apicurio Registry (Confluent-compatible API) from Maven Central.",
    )
    parser.add_argument("--fetch-only", action="store_true", help="only fetch into the cache")
    parser.add_argument("--startup-timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    try:
        if args.fetch_only:
            t0 = time.monotonic()
            app = ensure_registry()
            print(
                f"Apicurio Registry ready in {app} ({time.monotonic() - t0:.1f}s)", file=sys.stderr
            )
            return 0
        stop = threading.Event()

        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        with LocalRegistry(startup_timeout=args.startup_timeout) as server:
            print(
                f"Apicurio Registry ready in {server.startup_seconds:.1f}s; log: "
                f"{server.log_path}; Ctrl-C to stop",
                file=sys.stderr,
            )
            print(f"SCHEMA_REGISTRY_URL={server.url}", flush=True)
            while not stop.wait(0.5):
                if not server.is_running:
                    print(f"registry died; last log lines:\n{server.log_tail()}", file=sys.stderr)
                    return 1
    except DevRegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

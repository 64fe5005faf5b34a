"""GET /healthz every INTERVAL seconds until stdin closes, then print the response times (ms)
as a JSON list. Its own process: a thread in the benchmark process would wait for the GIL
behind the simulators, and time that instead of the bridge's loop.

    python -m tests.bench.probe PORT INTERVAL
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request


def main(port: int, interval: float) -> list[float]:
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    url = f"http://127.0.0.1:{port}/healthz"
    times: list[float] = []
    while not stop.wait(interval):
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:
                answer.read()
        except OSError:
            continue
        times.append((time.perf_counter() - started) * 1000)
    return times


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), float(sys.argv[2]))))

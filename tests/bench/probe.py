"""GET PATH (/healthz unless given) every INTERVAL seconds until stdin closes, then print the
response times (ms) as a JSON list. Its own process, as Prometheus is: a thread or a task in the
benchmark process would wait behind the simulators, and time that instead of the bridge.

    python -m tests.bench.probe PORT INTERVAL [PATH]
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request


def main(port: int, interval: float, path: str = "/healthz") -> list[float]:
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    url = f"http://127.0.0.1:{port}{path}"
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
    print(json.dumps(main(int(sys.argv[1]), float(sys.argv[2]), *sys.argv[3:4])))

"""What a `bridge run` process's memory is held by, per stream: loaded only by the fan-out
bench with `--owners` (tests/bench/figures.py puts this directory on the bridge's PYTHONPATH
and names the output file in `BENCH_OWNERS_OUT`). On SIGUSR1 the process writes a JSON
report there and goes on; the bench sends it after its measured windows, so the walk's cost
(seconds at 1,000 streams) is never in a figure.

The report (the bench adds the RSS it read before the signal: the walk allocates too): the
bytes of small Python objects (pymalloc's allocated blocks, read from
`sys._debugmallocstats`); per stream, the objects each attribute of a `StreamState` and a
`StreamConnection` reaches that nothing else does (averaged); what a websocket connection
holds, attribute by attribute (each walked on its own: an object two attributes reach, or one
every connection shares such as the logging tree, counts under each, so read it for ranks);
the metrics' bytes and series; and the gc-tracked types by shallow size. Objects reached through the sink, the
event loop or a metric family are shared by every stream and counted once, under their own
heading. Strings, bytes and decimals are not gc-tracked: only the walks see them.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import json
import os
import re
import signal
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

_OWNED = ("StreamState", "StreamConnection")
_LEAVES = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType)
# Shared by every stream: a walk from a stream stops at them (they get headings of their own).
_SHARED_TYPES = frozenset({"Sink", "Metrics", "BaseEventLoop", "_UnixSelectorEventLoop", "App"})
_FAMILY = re.compile(r"(Counter|Gauge|Histogram)Family")


def _size(root: Any, seen: set[int]) -> int:
    """Bytes of `root` and of what it reaches that `seen` does not hold yet (added to it)."""
    total, stack = 0, [root]
    while stack:
        obj = stack.pop()
        kind = type(obj)
        if id(obj) in seen or isinstance(obj, _LEAVES) or kind.__name__ in _SHARED_TYPES:
            continue
        if _FAMILY.fullmatch(kind.__name__):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset | collections.deque):
            stack.extend(obj)
        else:
            slots = getattr(kind, "__slots__", ())
            for name in (slots,) if isinstance(slots, str) else slots:
                with contextlib.suppress(AttributeError):
                    stack.append(getattr(obj, name))
            attrs = getattr(obj, "__dict__", None)
            if isinstance(attrs, dict):
                stack.append(attrs)
    return total


def _attributes(obj: Any) -> dict[str, Any]:
    found = dict(getattr(obj, "__dict__", {}))
    for name in getattr(type(obj), "__slots__", ()):
        with contextlib.suppress(AttributeError):
            found[name] = getattr(obj, name)
    return found


def _pymalloc_bytes() -> int | None:
    """`# bytes in allocated blocks` of `sys._debugmallocstats` (it writes to fd 2)."""
    with tempfile.TemporaryFile("w+") as capture:
        saved = os.dup(2)
        try:
            os.dup2(capture.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        found = re.search(r"# bytes in allocated blocks\s*=\s*([\d,]+)", capture.read())
    return int(found.group(1).replace(",", "")) if found else None


def report() -> dict[str, Any]:
    gc.unfreeze()  # bridge/app.py froze start-up's objects: get_objects would not list them
    gc.collect()
    objects = gc.get_objects()
    by_type: dict[str, list[Any]] = collections.defaultdict(list)
    shallow: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    for obj in objects:
        name = type(obj).__qualname__
        counts[name] += 1
        shallow[name] += sys.getsizeof(obj)
        if name in _OWNED or name in _SHARED_TYPES:
            by_type[name].append(obj)
    streams = max(len(by_type["StreamState"]), 1)
    per_stream: collections.Counter[str] = collections.Counter()
    seen: set[int] = set()
    for kind in _OWNED:  # states first: a connection's `state` is then already counted
        for owner in by_type[kind]:
            seen.add(id(owner))
            per_stream[f"{kind}"] += sys.getsizeof(owner)
            for name, value in _attributes(owner).items():
                per_stream[f"{kind}.{name}"] += _size(value, seen)
    within: collections.Counter[str] = collections.Counter()  # what a connection holds
    for owner in by_type["StreamConnection"]:
        for path in ("_ws", "_ws.protocol", "_ws.transport"):
            held: Any = owner
            for name in path.split("."):
                held = getattr(held, name, None)
            for name, value in (_attributes(held) if held is not None else {}).items():
                within[f"{path}.{name}"] += _size(value, {id(owner), id(owner.state)})
    metrics: dict[str, Any] = {}
    for registry in by_type["Metrics"]:
        values = list(_attributes(registry).values())
        values += [item for value in values if isinstance(value, list) for item in value]
        families = {id(v): v for v in values if _FAMILY.fullmatch(type(v).__name__)}.values()
        family_seen: set[int] = set()
        size = sum(_size(vars(family), family_seen) for family in families)
        metrics = {
            "series_per_stream": round(sum(len(f.children) for f in families) / streams, 1),
            "bytes_per_stream": round(size / streams),
        }
    return {
        "streams": streams,
        "pymalloc_allocated_mb": round((_pymalloc_bytes() or 0) / 1e6, 1),
        "per_stream_bytes": {k: round(v / streams) for k, v in per_stream.most_common(25)},
        "connection_bytes": {k: round(v / streams) for k, v in within.most_common(25)},
        "metrics": metrics,
        "gc_types_mb": {
            f"{name} ({counts[name]})": round(size / 1e6, 2)
            for name, size in shallow.most_common(20)
        },
    }


def _install() -> None:
    out = os.environ.get("BENCH_OWNERS_OUT")
    if out is None or b"bridge\x00run" not in Path("/proc/self/cmdline").read_bytes():
        return

    def dump(*_: object) -> None:
        Path(out + ".tmp").write_text(json.dumps(report(), indent=1))
        os.replace(out + ".tmp", out)

    signal.signal(signal.SIGUSR1, dump)


_install()

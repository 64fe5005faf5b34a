"""Lock-free metric series and a cheap exposition of them.

prometheus_client takes a lock on every `inc()`/`observe()` and, at scrape time, builds a
sample object per series and formats it label by label: with 1,000 streams (80 series each) a
scrape took over a second of CPU, all of it on the event loop. The bridge runs its hot path on
one thread (the event loop), so a series here is a plain number updated in place, and each
series' line prefix (name and labels) is formatted once, when the series is created.

The families look like prometheus_client's (`labels(...)`, `inc`, `set`, `observe`,
`set_function`) and render the same text format, byte for byte (tests/unit/test_series.py).
`FamiliesCollector` also exposes them through prometheus_client's collector protocol, so a
`CollectorRegistry` (and `get_sample_value` in tests) sees the same values.
"""

from __future__ import annotations

import bisect
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Final

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_format: Final = lru_cache(maxsize=8192)(floatToGoString)
# Label values of every family's children, one tuple per distinct value set (`Family._child`).
_KEYS: Final[dict[tuple[str, ...], tuple[str, ...]]] = {}


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _label_text(pairs: Iterable[tuple[str, str]]) -> str:
    """`{a="x",b="y"}`, names sorted as prometheus_client sorts them; "" without labels."""
    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(pairs))
    return "{" + inner + "}" if inner else ""


class CounterChild:
    __slots__ = ("labels", "value")

    def __init__(self, labels: str) -> None:
        self.labels = labels  # `{a="x",b="y"}`, formatted once
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class GaugeChild:
    __slots__ = ("_function", "labels", "value")

    def __init__(self, labels: str) -> None:
        self.labels = labels
        self.value = 0.0
        self._function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def set_function(self, function: Callable[[], float]) -> None:
        """Read the value from `function` at scrape time."""
        self._function = function

    def get(self) -> float:
        return float(self._function()) if self._function is not None else self.value


class HistogramChild:
    """Per-bucket (non-cumulative) counts and the sum; cumulated when rendered."""

    __slots__ = ("_bounds", "counts", "labels", "sum")

    def __init__(self, labels: str, bounds: tuple[float, ...]) -> None:
        self.labels = labels
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value


Child = CounterChild | GaugeChild | HistogramChild


class Family:
    """One metric: its name, help, type, label names and a child per label-value tuple."""

    kind = "untyped"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.children: dict[tuple[str, ...], Child] = {}  # label values → series
        escaped_help = documentation.replace("\\", r"\\").replace("\n", r"\n")
        self.header = f"# HELP {name} {escaped_help}\n# TYPE {name} {self.kind}\n"

    def _init_unlabelled(self) -> None:
        """A family without labels has its one series from the start (as in prometheus_client)."""
        if not self.labelnames:
            self._child(())

    def _new(self, labels: str) -> Child:
        raise NotImplementedError

    def _child(self, values: tuple[str, ...]) -> Child:
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            # Families with the same label names (most: stream and venue) share one text and
            # one key per stream: ~4 KB a stream (tests/bench --owners).
            labels = sys.intern(_label_text(zip(self.labelnames, values, strict=True)))
            values = _KEYS.setdefault(values, values)
            child = self.children[values] = self._new(labels)
        return child

    def _labels(self, values: tuple[str, ...]) -> dict[str, str]:
        return dict(zip(self.labelnames, values, strict=True))

    def text(self, values: list[tuple[str, ...]]) -> str:
        """The exposition lines of these children."""
        raise NotImplementedError

    def chunks(self, size: int) -> Iterator[str]:
        """The family's text (header first) in pieces of at most `size` children."""
        yield self.header
        keys = list(self.children)
        for start in range(0, len(keys), size):
            yield self.text(keys[start : start + size])

    def metric(self) -> Metric:
        """The family in prometheus_client's collector form."""
        raise NotImplementedError


class CounterFamily(Family):
    kind = "counter"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        self._init_unlabelled()

    def _new(self, labels: str) -> CounterChild:
        return CounterChild(labels)

    def labels(self, *values: str) -> CounterChild:
        child = self._child(values)
        assert isinstance(child, CounterChild)
        return child

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def text(self, values: list[tuple[str, ...]]) -> str:
        name, children = self.name, self.children
        return "".join(
            [f"{name}{c.labels} {_format(c.value)}\n" for c in map(children.__getitem__, values)]  # type: ignore[union-attr]
        )

    def metric(self) -> Metric:
        metric = Metric(self.name.removesuffix("_total"), self.documentation, "counter")
        for values, child in self.children.items():
            assert isinstance(child, CounterChild)
            metric.add_sample(self.name, self._labels(values), child.value)
        return metric


class GaugeFamily(Family):
    kind = "gauge"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        self._init_unlabelled()

    def _new(self, labels: str) -> GaugeChild:
        return GaugeChild(labels)

    def labels(self, *values: str) -> GaugeChild:
        child = self._child(values)
        assert isinstance(child, GaugeChild)
        return child

    def set(self, value: float) -> None:
        self.labels().set(value)

    def set_function(self, function: Callable[[], float]) -> None:
        self.labels().set_function(function)

    def text(self, values: list[tuple[str, ...]]) -> str:
        name, children = self.name, self.children
        return "".join(
            [f"{name}{c.labels} {_format(c.get())}\n" for c in map(children.__getitem__, values)]  # type: ignore[union-attr]
        )

    def metric(self) -> Metric:
        metric = Metric(self.name, self.documentation, "gauge")
        for values, child in self.children.items():
            assert isinstance(child, GaugeChild)
            metric.add_sample(self.name, self._labels(values), child.get())
        return metric


class HistogramFamily(Family):
    kind = "histogram"

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.bounds = tuple(float(b) for b in buckets if b != math.inf)
        self._les = [*(_format(b) for b in self.bounds), "+Inf"]
        # A bucket's labels are the series' with `le` among them, sorted: `le` first when it
        # sorts before every label name (the bridge's own histograms), so a bucket line is
        # written from the series' label text; otherwise each series' bucket texts are cached.
        self._le_first = all(n > "le" for n in self.labelnames)
        self._le_heads = [f'{name}_bucket{{le="{le}"' for le in self._les]
        self._bucket_prefixes: dict[tuple[str, ...], list[str]] = {}
        self._init_unlabelled()

    def _new(self, labels: str) -> HistogramChild:
        return HistogramChild(labels, self.bounds)

    def labels(self, *values: str) -> HistogramChild:
        child = self._child(values)
        assert isinstance(child, HistogramChild)
        return child

    def _buckets(self, values: tuple[str, ...], labels: str) -> list[str]:
        """Each bucket's line up to its value."""
        if self._le_first:
            rest = ("," + labels[1:] if labels else "}") + " "
            return [f"{le}{rest}" for le in self._le_heads]
        prefixes = self._bucket_prefixes.get(values)
        if prefixes is None:
            pairs = list(zip(self.labelnames, values, strict=True))
            prefixes = [
                f"{self.name}_bucket{_label_text([*pairs, ('le', le)])} " for le in self._les
            ]
            self._bucket_prefixes[values] = prefixes
        return prefixes

    def text(self, values: list[tuple[str, ...]]) -> str:
        out: list[str] = []
        add = out.append
        count_name, sum_name = f"{self.name}_count", f"{self.name}_sum"
        for v in values:
            child = self.children[v]
            assert isinstance(child, HistogramChild)
            counts, total = list(child.counts), child.sum  # one consistent copy
            labels = child.labels
            cumulative = 0
            for prefix, count in zip(self._buckets(v, labels), counts, strict=True):
                cumulative += count
                add(f"{prefix}{_format(cumulative)}\n")
            add(f"{count_name}{labels} {_format(cumulative)}\n")
            add(f"{sum_name}{labels} {_format(total)}\n")
        return "".join(out)

    def metric(self) -> Metric:
        metric = Metric(self.name, self.documentation, "histogram")
        for values, child in self.children.items():
            assert isinstance(child, HistogramChild)
            labels = self._labels(values)
            cumulative = 0
            for le, count in zip(self._les, child.counts, strict=True):
                cumulative += count
                metric.add_sample(f"{self.name}_bucket", {**labels, "le": le}, cumulative)
            metric.add_sample(f"{self.name}_count", labels, cumulative)
            metric.add_sample(f"{self.name}_sum", labels, child.sum)
        return metric


def render_chunks(families: Iterable[Family], size: int = 100) -> Iterator[str]:
    """The text exposition format, one family after the other, series in creation order, in
    pieces of at most `size` children (a caller may yield to its event loop in between)."""
    for family in families:
        yield from family.chunks(size)


def render_lines(families: Iterable[Family]) -> str:
    return "".join(render_chunks(families, size=1_000_000))


class FamiliesCollector(Collector):
    """The families as a prometheus_client collector (for a `CollectorRegistry`)."""

    def __init__(self, families: Callable[[], Iterable[Family]]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return [f.metric() for f in self._families()]

"""Export `loop.stats()` to Prometheus and OpenTelemetry.

Both read the statistics of every open oxloop loop of the process (or of the loops given),
when the exporter asks, from whatever thread it asks on; neither library is a dependency of
oxloop: each is imported when its exporter is made.

    from prometheus_client import REGISTRY
    REGISTRY.register(oxloop.metrics.PrometheusCollector())

    oxloop.metrics.instrument_opentelemetry()      # on the global MeterProvider
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from oxloop._stats import LoopStats, live_loops

#: The upper bounds of the exported lag histogram, in seconds.
LAG_BUCKETS = (1e-5, 1e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, math.inf)

# (name, LoopStats attribute, help); counters are cumulative since the loop was made.
_COUNTERS = (
    ("iterations", "iterations", "Iterations of the event loop."),
    ("callbacks", "callbacks", "Callbacks the event loop ran."),
    ("io_events", "io_events", "Readiness reports from the poller."),
    ("timers_fired", "timers_fired", "Timers whose deadline came."),
    ("poll_seconds", "poll_time", "Seconds the event loop spent blocked waiting."),
    ("callback_seconds", "callback_time", "Seconds the event loop spent running callbacks."),
)
_GAUGES = (
    ("ready", "ready", "Callbacks waiting for the next iteration."),
    ("timers", "timers", "Scheduled timers."),
    ("transports", "transports", "Open transports."),
    ("servers", "servers", "Servers accepting connections."),
    ("fd_watchers", "fd_watchers", "File descriptors watched by add_reader / add_writer."),
    ("children", "children", "Child processes the event loop waits for."),
    ("lag_p50_seconds", "lag.p50", "Median lag of callbacks, seconds."),
    ("lag_p99_seconds", "lag.p99", "99th percentile lag of callbacks, seconds."),
    ("lag_max_seconds", "lag.max", "Largest lag of a callback, seconds."),
)


def loop_label(loop: Any) -> str:
    """The `loop` label of a loop's series: its id, as `repr()` shows it."""
    return f"{id(loop):#x}"


def _value(stats: LoopStats, attr: str) -> float:
    obj: Any = stats
    for part in attr.split("."):
        obj = getattr(obj, part)
    return float(obj)


def _snapshots(loops: Iterable[Any] | None) -> Iterator[tuple[str, LoopStats]]:
    for loop in live_loops() if loops is None else loops:
        if not loop.is_closed():
            yield loop_label(loop), loop.stats()


def lag_buckets(stats: LoopStats) -> list[tuple[float, int]]:
    """The lag histogram in `LAG_BUCKETS`, cumulative: each fine bucket of the loop's own
    counts under the first bound at or above its upper end."""
    counts = [0] * len(LAG_BUCKETS)
    for upper, n in stats.lag.buckets:
        i = next(i for i, bound in enumerate(LAG_BUCKETS) if upper <= bound)
        counts[i] += n
    total = 0
    out = []
    for bound, n in zip(LAG_BUCKETS, counts, strict=True):
        total += n
        out.append((bound, total))
    return out


class PrometheusCollector:
    """A `prometheus_client` collector: `oxloop_*` series, one per loop (label `loop`)."""

    def __init__(self, loops: Iterable[Any] | None = None, namespace: str = "oxloop") -> None:
        self._loops = None if loops is None else list(loops)
        self._namespace = namespace

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        snapshots = list(_snapshots(self._loops))
        ns = self._namespace
        for name, attr, doc in _COUNTERS:
            family = CounterMetricFamily(f"{ns}_{name}", doc, labels=["loop"])
            for label, stats in snapshots:
                family.add_metric([label], _value(stats, attr))
            yield family
        for name, attr, doc in _GAUGES:
            gauge = GaugeMetricFamily(f"{ns}_{name}", doc, labels=["loop"])
            for label, stats in snapshots:
                gauge.add_metric([label], _value(stats, attr))
            yield gauge
        lag = HistogramMetricFamily(
            f"{ns}_lag_seconds",
            "How late callbacks started after they were due, seconds.",
            labels=["loop"],
        )
        for label, stats in snapshots:
            buckets = [("+Inf" if b == math.inf else repr(b), n) for b, n in lag_buckets(stats)]
            lag.add_metric([label], buckets, stats.lag.sum)
        yield lag

    def describe(self) -> list[Any]:
        # Registering must not read any loop (the collector reads them at each scrape).
        return []


def instrument_opentelemetry(
    meter_provider: Any = None, loops: Iterable[Any] | None = None
) -> list[Any]:
    """Observable OpenTelemetry instruments (`oxloop.loop.*`, attribute `loop`) read at each
    collection; returns them. `meter_provider` defaults to the global one."""
    from opentelemetry import metrics
    from opentelemetry.metrics import Observation

    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    meter = provider.get_meter("oxloop")
    chosen = None if loops is None else list(loops)

    def reader(attr: str) -> Callable[[Any], list[Any]]:
        def observe(options: Any) -> list[Any]:
            return [
                Observation(_value(stats, attr), {"loop": label})
                for label, stats in _snapshots(chosen)
            ]

        return observe

    instruments = []
    # A counter of seconds is a time spent (`oxloop.loop.poll.time`); a gauge of seconds a lag.
    kinds = [(meter.create_observable_counter, _COUNTERS, ".time"),
             (meter.create_observable_gauge, _GAUGES, "")]
    for create, table, seconds_suffix in kinds:
        for name, attr, doc in table:
            seconds = name.endswith("_seconds")
            otel_name = "oxloop.loop." + name.removesuffix("_seconds").replace("_", ".")
            if seconds:
                otel_name += seconds_suffix
            instruments.append(
                create(
                    otel_name,
                    callbacks=[reader(attr)],
                    unit="s" if seconds else "1",
                    description=doc,
                )
            )
    return instruments

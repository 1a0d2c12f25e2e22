"""`oxloop.metrics`: the statistics scraped by Prometheus and read by OpenTelemetry.

Each workload runs on both loops; the exporters report oxloop's loops alone, so asyncio's
loop must be absent from what they report.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

import oxloop
import pytest
from oxloop.metrics import PrometheusCollector, instrument_opentelemetry, loop_label

prometheus_client = pytest.importorskip("prometheus_client")


def workload(loop):
    async def main():
        for _ in range(200):
            await asyncio.sleep(0)
        await asyncio.sleep(0.001)
        # What is queued behind a callback that blocks for 20 ms starts 20 ms late.
        loop.call_soon(time.sleep, 0.02)
        loop.call_soon(lambda: None)
        await asyncio.sleep(0.03)

    loop.run_until_complete(main())


def test_prometheus_scrape_over_http(loop, loop_name):
    from prometheus_client.parser import text_string_to_metric_families

    workload(loop)
    registry = prometheus_client.CollectorRegistry()
    registry.register(PrometheusCollector())
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    label = {"loop": loop_label(loop)}
    ours = [s for s in families["oxloop_callbacks"].samples if s.labels == label]
    if loop_name == "asyncio":
        assert ours == []
        return
    [callbacks] = ours
    assert callbacks.name == "oxloop_callbacks_total" and callbacks.value >= 200
    assert families["oxloop_iterations"].type == "counter"
    [transports] = [s for s in families["oxloop_transports"].samples if s.labels == label]
    assert transports.value == 0
    lag = [s for s in families["oxloop_lag_seconds"].samples if s.labels["loop"] == label["loop"]]
    buckets = {s.labels["le"]: s.value for s in lag if s.name.endswith("_bucket")}
    count = next(s.value for s in lag if s.name.endswith("_count"))
    total = next(s.value for s in lag if s.name.endswith("_sum"))
    assert buckets["+Inf"] == count >= 200
    # The callbacks queued behind the 20 ms sleep waited for it.
    assert buckets["0.01"] < count and total >= 0.015
    values = [buckets[k] for k in sorted(buckets, key=float)]
    assert values == sorted(values)


def test_opentelemetry_instruments_read_the_loop(loop, loop_name):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    workload(loop)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        instrument_opentelemetry(provider)
        data = reader.get_metrics_data()
    finally:
        provider.shutdown()
    points = {
        m.name: [p for p in m.data.data_points if p.attributes.get("loop") == loop_label(loop)]
        for rm in (data.resource_metrics if data is not None else ())
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    if loop_name == "asyncio":
        assert all(not p for p in points.values()), points
        return
    assert points, "nothing was collected"
    [callbacks] = points["oxloop.loop.callbacks"]
    assert callbacks.value >= 200
    [lag_max] = points["oxloop.loop.lag.max"]
    assert lag_max.value >= 0.015
    [poll] = points["oxloop.loop.poll.time"]
    assert poll.value > 0


def test_a_closed_loop_is_no_longer_reported():
    loop = oxloop.new_event_loop()
    loop.run_until_complete(asyncio.sleep(0))
    label = loop_label(loop)
    assert label in reported_loops()
    loop.close()
    assert label not in reported_loops()


def reported_loops():
    return {s.labels["loop"] for f in PrometheusCollector().collect() for s in f.samples}

"""OpenTelemetry metrics and spans, read back with the SDK's in-memory reader and exporter."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pgmarina import AsyncPool, Pool, PoolTimeout
from pgmarina.contrib.otel import POOL_NAME, PoolMetrics, instrument


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


def _value(points: dict[str, list[Any]], name: str, pool: str, **attrs: str) -> Any:
    found = [
        p for p in points[name]
        if p.attributes.get(POOL_NAME) == pool
        and all(p.attributes.get(k) == v for k, v in attrs.items())
    ]
    assert len(found) == 1, (name, pool, attrs, points.get(name))
    return found[0]


def _providers() -> tuple[MeterProvider, InMemoryMetricReader, TracerProvider,
                          InMemorySpanExporter]:
    reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    return MeterProvider(metric_readers=[reader]), reader, tracer_provider, spans


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_thread_pool_metrics_follow_the_semantic_conventions(pg: Any, driver: str) -> None:
    meters, reader, tracers, spans = _providers()
    pool = Pool(pg.dsn, driver=driver, name=f"otel-{driver}", min_size=1, max_size=1,
                check_window=None)
    pool.open(wait=True)
    try:
        instrument(pool, meter_provider=meters, spans=True, tracer_provider=tracers)
        held = pool.acquire()

        def release_once_waited_for() -> None:
            while pool.stats().waiting == 0:
                time.sleep(0.001)
            time.sleep(0.08)
            pool.release(held)

        released = threading.Thread(target=release_once_waited_for)
        released.start()
        with pool.connection():  # waits ~80 ms for the one connection: a span
            points = _points(reader)
            name = f"otel-{driver}"
            assert _value(points, "db.client.connection.count", name, **{
                "db.client.connection.state": "used"}).value == 1
            assert _value(points, "db.client.connection.count", name, **{
                "db.client.connection.state": "idle"}).value == 0
            assert _value(points, "db.client.connection.max", name).value == 1
            assert _value(points, "db.client.connection.idle.min", name).value == 1
            assert _value(points, "db.client.connection.pending_requests", name).value == 0
        released.join()
        with pytest.raises(PoolTimeout, match="no connection available"), pool.connection():
            pool.acquire(timeout=0.01)
        points = _points(reader)
        assert _value(points, "db.client.connection.timeouts", name).value == 1
        wait = _value(points, "db.client.connection.wait_time", name)
        use = _value(points, "db.client.connection.use_time", name)
        assert wait.count == 3  # held, the waiting block, the block of the timeout
        assert wait.max >= 0.07
        assert use.count == 3
        assert wait.sum == pytest.approx(pool.stats().wait_time_total, abs=1e-6)
        waits = [s for s in spans.get_finished_spans() if s.name == "pgmarina acquire wait"]
        assert len(waits) == 2  # the waiting block and the acquire that timed out
        assert all(s.attributes[POOL_NAME] == name for s in waits)
        assert any(s.status.status_code.name == "ERROR" for s in waits)
    finally:
        pool.close()


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
def test_async_pool_metrics_and_spans_of_waits(pg: Any, driver: str) -> None:
    meters, reader, tracers, spans = _providers()

    async def main() -> None:
        pool = AsyncPool(pg.dsn, driver=driver, name=f"otel-a-{driver}", min_size=1,
                         max_size=1, check_window=None, max_uses=2)
        await pool.open(wait=True)
        metrics = PoolMetrics(meters, pools=[])
        metrics.track(pool, spans=True, tracer_provider=tracers)
        with pytest.raises(ValueError, match="tracked already"):
            metrics.track(pool)
        held = await pool.acquire()
        waiter = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0.05)
        await pool.release(held)  # second use: retired, so the waiter waits for a connect
        conn = await waiter
        await pool.release(conn)
        for _ in range(3):
            async with pool.connection():
                pass
        name = pool.name
        points = _points(reader)
        assert _value(points, "db.client.connection.wait_time", name).count == 5
        assert _value(points, "db.client.connection.use_time", name).count == 5
        assert _value(points, "pgmarina.pool.connections.retired", name,
                      **{"pgmarina.cause": "uses"}).value == pool.stats().closed_uses >= 1
        assert _value(points, "pgmarina.pool.leaks", name).value == 0
        waits = [s for s in spans.get_finished_spans() if s.name == "pgmarina acquire wait"]
        assert len(waits) >= 1
        assert waits[0].end_time - waits[0].start_time >= 40_000_000  # ns: it waited
        await pool.close()
        assert name not in str(_points(reader).get("db.client.connection.count", []))

    asyncio.run(main())


def test_untracked_pools_report_gauges_only_and_pay_no_recorder(pg: Any) -> None:
    meters, reader, _, _ = _providers()
    pool = Pool(pg.dsn, name="otel-plain", min_size=1, max_size=2)
    pool.open(wait=True)
    try:
        PoolMetrics(meters)  # every live pool
        with pool.connection():
            pass
        points = _points(reader)
        assert _value(points, "db.client.connection.max", "otel-plain").value == 2
        assert "db.client.connection.wait_time" not in points
        assert "checkout" not in vars(pool._core)  # the class's own hot path
        with pytest.raises(TypeError, match="pgmarina pool"):
            PoolMetrics(meters).track(object())
    finally:
        pool.close()

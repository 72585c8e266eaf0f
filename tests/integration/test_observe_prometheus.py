"""The Prometheus collector, read back through prometheus_client's own parser."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pgmarina import AsyncPool, Pool
from pgmarina.contrib.prometheus import PoolCollector

PASSWORD = "Prom-s3cret-pw"


def _dsn_with_password(pg: Any) -> str:
    # Trust auth: the server never asks for it, but the DSN carries it.
    return (
        f"postgresql://{quote(pg.user)}:{PASSWORD}@{pg.host}:{pg.port}/{quote(pg.dbname)}"
    )


def _scrape(registry: CollectorRegistry) -> tuple[str, dict[tuple[str, frozenset[Any]], float]]:
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def _get(samples: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_the_collector_exposes_every_pool_with_a_pool_label_and_no_dsn(pg: Any) -> None:
    registry = CollectorRegistry()
    registry.register(PoolCollector())
    dsn = _dsn_with_password(pg)
    threaded = Pool(dsn, name="prom-threads", min_size=1, max_size=3, check_window=None)
    threaded.open(wait=True)

    async def async_side() -> None:
        apool = AsyncPool(dsn, name="prom-async", min_size=2, max_size=4, max_uses=1)
        await apool.open(wait=True)
        held = await apool.acquire()
        conn = await apool.acquire()
        await apool.release(conn)  # max_uses=1: retired, "uses"
        _, samples = _scrape(registry)
        assert _get(samples, "pgmarina_pool_connections", pool="prom-async", state="in_use") == 1
        assert _get(samples, "pgmarina_pool_max_size", pool="prom-async") == 4
        assert _get(samples, "pgmarina_acquires_total", pool="prom-async") == 2
        assert _get(samples, "pgmarina_connections_retired_total",
                    pool="prom-async", cause="uses") == 1
        await apool.release(held)
        await apool.close()

    with threaded.connection():
        pass
    asyncio.run(async_side())
    text, samples = _scrape(registry)
    s = threaded.stats()
    assert _get(samples, "pgmarina_acquires_total", pool="prom-threads") == s.acquires == 1
    assert _get(samples, "pgmarina_pool_size", pool="prom-threads") == 1
    assert _get(samples, "pgmarina_pool_connections", pool="prom-threads", state="idle") == 1
    count = _get(samples, "pgmarina_acquire_wait_seconds_count", pool="prom-threads")
    assert count == 1
    assert _get(samples, "pgmarina_acquire_wait_seconds_bucket",
                pool="prom-threads", le="0.0001") == 1
    assert _get(samples, "pgmarina_connection_use_seconds_bucket",
                pool="prom-threads", le="+Inf") == 1
    assert _get(samples, "pgmarina_connection_use_seconds_sum",
                pool="prom-threads") == pytest.approx(s.usage_time_total)
    for cause in ("lifetime", "idle", "broken", "uses", "expired", "check_failed", "other"):
        assert _get(samples, "pgmarina_connections_retired_total",
                    pool="prom-threads", cause=cause) == 0
    # The closed async pool dropped out; no DSN, host or password anywhere.
    assert "prom-async" not in text
    assert PASSWORD not in text and "postgresql://" not in text
    assert f"{pg.host}:{pg.port}" not in text
    threaded.close()
    assert "prom-threads" not in generate_latest(registry).decode()


def test_a_collector_for_given_pools_exports_only_those(pg: Any) -> None:
    mine = Pool(pg.dsn, name="prom-mine", min_size=1, max_size=1)
    other = Pool(pg.dsn, name="prom-other", min_size=1, max_size=1)
    try:
        registry = CollectorRegistry()
        registry.register(PoolCollector([mine], namespace="app"))
        text, samples = _scrape(registry)
        assert _get(samples, "app_pool_max_size", pool="prom-mine") == 1
        assert "prom-other" not in text
        with pytest.raises(TypeError, match="namespace"):
            PoolCollector(namespace=3)  # type: ignore[arg-type]
    finally:
        mine.close()
        other.close()


def test_histogram_buckets_are_cumulative_and_end_with_the_count(pg: Any) -> None:
    pool = Pool(pg.dsn, name="prom-hist", min_size=1, max_size=1)
    pool.open(wait=True)
    try:
        for _ in range(5):
            with pool.connection():
                pass
        registry = CollectorRegistry()
        registry.register(PoolCollector([pool]))
        families = {
            f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
        }
        hist = families["pgmarina_connection_use_seconds"]
        buckets = [
            (s.labels["le"], s.value) for s in hist.samples if s.name.endswith("_bucket")
        ]
        values = [v for _, v in buckets]
        assert values == sorted(values)  # cumulative
        assert buckets[-1] == ("+Inf", 5)
        assert hist.type == "histogram"
        assert families["pgmarina_leaks"].type == "counter"
    finally:
        pool.close()

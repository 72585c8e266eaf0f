"""Prometheus metrics for pgmarina pools (the ``prometheus`` extra).

::

    from prometheus_client import REGISTRY, start_http_server
    from pgmarina.contrib.prometheus import PoolCollector

    REGISTRY.register(PoolCollector())  # every pool of the process
    start_http_server(9100)

The collector reads each pool's :meth:`~pgmarina.AsyncPool.stats` when
Prometheus scrapes, so it costs the pools nothing in between.  Every series
carries a ``pool`` label with the pool's ``name`` (give pools distinct
names); no series carries a DSN, a host or a user.

Series (with the default ``namespace="pgmarina"``):

* gauges ``pgmarina_pool_connections{pool, state}`` (``idle``, ``in_use``,
  ``connecting``), ``pgmarina_pool_size``, ``pgmarina_pool_min_size``,
  ``pgmarina_pool_max_size``, ``pgmarina_pool_waiting``;
* counters ``pgmarina_acquires_total``, ``pgmarina_waited_acquires_total``,
  ``pgmarina_timeouts_total``, ``pgmarina_too_many_waiters_total``,
  ``pgmarina_connections_opened_total``, ``pgmarina_connections_closed_total``,
  ``pgmarina_connections_lost_total``, ``pgmarina_connections_failed_total``,
  ``pgmarina_resets_total``, ``pgmarina_checks_failed_total``,
  ``pgmarina_leaks_total``, and ``pgmarina_connections_retired_total{cause}``
  (``lifetime``, ``idle``, ``broken``, ``uses``, ``expired``,
  ``check_failed``, ``other``);
* histograms ``pgmarina_acquire_wait_seconds`` and
  ``pgmarina_connection_use_seconds``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .._core.stats import CLOSE_CAUSES, Histogram, PoolStats
from .._observe import live_pools, snapshot

__all__ = ["PoolCollector"]

_GAUGES = (
    ("pool_size", "size", "Connections open or opening."),
    ("pool_min_size", "min_size", "Connections kept open even when idle."),
    ("pool_max_size", "max_size", "Most connections the pool may hold."),
    ("pool_waiting", "waiting", "Callers queued for a connection."),
)
_STATES = (("idle", "idle"), ("in_use", "in_use"), ("connecting", "connecting"))
_COUNTERS = (
    ("acquires", "Connections handed out."),
    ("waited_acquires", "Acquires that had to queue."),
    ("timeouts", "Acquires that gave up waiting."),
    ("too_many_waiters", "Acquires refused because max_waiting callers waited."),
    ("connections_opened", "Connects that succeeded."),
    ("connections_closed", "Connections closed."),
    ("connections_lost", "Connections found broken."),
    ("connections_failed", "Connect attempts that failed."),
    ("resets", "Releases that needed a reset round trip."),
    ("checks_failed", "Health checks and keepalive pings that failed."),
    ("leaks", "Leases reported held past leak_timeout."),
)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class PoolCollector(Collector):
    """A Prometheus collector for pgmarina pools.

    Args:
        pools: The pools to export; by default (``None``) every live pool of
            the process, found at each scrape (closed and collected pools
            drop out by themselves).
        namespace: Prefix of every metric name.

    Raises:
        TypeError: ``namespace`` is not a str.
    """

    def __init__(self, pools: Iterable[Any] | None = None, *, namespace: str = "pgmarina"):
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
        self._pools = None if pools is None else list(pools)
        self._ns = namespace

    def _name(self, name: str) -> str:
        return f"{self._ns}_{name}" if self._ns else name

    def describe(self) -> Iterator[Metric]:
        """The metric families, without samples (read at registration)."""
        return self._families([])

    def collect(self) -> Iterator[Metric]:
        """One sample set per pool, read from its stats now."""
        pools = live_pools() if self._pools is None else self._pools
        return self._families([(p.name, snapshot(p)) for p in pools])

    def _families(self, stats: list[tuple[str, PoolStats]]) -> Iterator[Metric]:
        name = self._name
        conns = GaugeMetricFamily(
            name("pool_connections"), "Connections by state.", labels=["pool", "state"]
        )
        for pool, s in stats:
            for state, field in _STATES:
                conns.add_metric([pool, state], getattr(s, field))
        yield conns
        for metric, field, doc in _GAUGES:
            gauge = GaugeMetricFamily(name(metric), doc, labels=["pool"])
            for pool, s in stats:
                gauge.add_metric([pool], getattr(s, field))
            yield gauge
        for field, doc in _COUNTERS:
            counter = CounterMetricFamily(name(field), doc, labels=["pool"])
            for pool, s in stats:
                counter.add_metric([pool], getattr(s, field))
            yield counter
        retired = CounterMetricFamily(
            name("connections_retired"), "Connections retired, by cause.",
            labels=["pool", "cause"],
        )
        for pool, s in stats:
            for cause in CLOSE_CAUSES:
                retired.add_metric([pool, cause], getattr(s, f"closed_{cause}"))
        yield retired
        for metric, field, doc in (
            ("acquire_wait_seconds", "wait_histogram", "How long acquires waited."),
            ("connection_use_seconds", "usage_histogram", "How long leases were held."),
        ):
            hist = HistogramMetricFamily(name(metric), doc, labels=["pool"])
            for pool, s in stats:
                h: Histogram = getattr(s, field)
                hist.add_metric(
                    [pool],
                    [(_le(bound), n) for bound, n in h.cumulative()],
                    sum_value=h.sum,
                )
            yield hist

"""OpenTelemetry metrics (and optional spans) for pgmarina pools (the ``otel`` extra).

Metrics follow OpenTelemetry's semantic conventions for database client
connection pools, each with the ``db.client.connection.pool.name`` attribute
(the pool's ``name``; never a DSN)::

    db.client.connection.count            {connection}  state = idle | used
    db.client.connection.idle.max         {connection}
    db.client.connection.idle.min         {connection}
    db.client.connection.max              {connection}
    db.client.connection.pending_requests {request}
    db.client.connection.timeouts         {timeout}     (counter)
    db.client.connection.wait_time        s             (histogram)
    db.client.connection.use_time         s             (histogram)

plus two of pgmarina's own: ``pgmarina.pool.leaks`` and
``pgmarina.pool.connections.retired`` (attribute ``pgmarina.cause``: why).

The gauges and counters are read from each pool's stats when the SDK
collects, so they cost the pools nothing in between.  The two histograms
take one record per acquire and per release, so they are kept only for the
pools you :meth:`~PoolMetrics.track` (a few hundred nanoseconds a cycle;
``bench/bench_observe.py`` measures it); the pool's own
``stats().wait_histogram`` is there either way.  With ``spans=True`` an
acquire that cannot be served at once (it queues, or checks a connection
first) runs in a span, ``pgmarina acquire wait``.

::

    from pgmarina.contrib.otel import PoolMetrics

    metrics = PoolMetrics()         # gauges and counters for every live pool
    metrics.track(pool, spans=True) # wait/use histograms and spans for this one
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from .. import __version__
from .._core.stats import BUCKETS, CLOSE_CAUSES, PoolStats
from .._observe import live_pools, snapshot

__all__ = ["POOL_NAME", "PoolMetrics", "instrument"]

#: The attribute that names the pool, per the semantic conventions.
POOL_NAME = "db.client.connection.pool.name"
_STATE = "db.client.connection.state"


class PoolMetrics:
    """OpenTelemetry instruments for pgmarina pools, on one meter.

    Make one per meter provider (per process, usually): each makes its own
    instruments, and two of them on one provider would report every pool
    twice.

    Args:
        meter_provider: Where the metrics go (default: the global one).
        pools: The pools whose gauges and counters to report; by default
            (``None``) every live pool of the process, found at each
            collection.  :meth:`track` adds a pool to an explicit list.
    """

    def __init__(self, meter_provider: Any = None, *, pools: Iterable[Any] | None = None):
        self._meter = metrics.get_meter("pgmarina", __version__, meter_provider=meter_provider)
        self._pools = None if pools is None else list(pools)
        meter = self._meter
        gauge = meter.create_observable_up_down_counter
        gauge("db.client.connection.count", [self._count], unit="{connection}",
              description="Connections in the pool, by state (idle or used).")
        for name, field, doc in (
            ("db.client.connection.idle.max", "max_size", "Most idle connections allowed."),
            ("db.client.connection.idle.min", "min_size", "Fewest idle connections kept."),
            ("db.client.connection.max", "max_size", "Most open connections allowed."),
        ):
            gauge(name, [self._field(field)], unit="{connection}", description=doc)
        gauge("db.client.connection.pending_requests", [self._field("waiting")],
              unit="{request}", description="Callers waiting for a connection.")
        meter.create_observable_counter(
            "db.client.connection.timeouts", [self._field("timeouts")], unit="{timeout}",
            description="Acquires that timed out waiting for a connection.",
        )
        meter.create_observable_counter(
            "pgmarina.pool.leaks", [self._field("leaks")], unit="{lease}",
            description="Leases reported held past leak_timeout.",
        )
        meter.create_observable_counter(
            "pgmarina.pool.connections.retired", [self._retired], unit="{connection}",
            description="Connections retired, by cause.",
        )
        self._wait = meter.create_histogram(
            "db.client.connection.wait_time", unit="s",
            description="Time it took to obtain an open connection from the pool.",
            explicit_bucket_boundaries_advisory=list(BUCKETS),
        )
        self._use = meter.create_histogram(
            "db.client.connection.use_time", unit="s",
            description="Time between borrowing a connection and returning it to the pool.",
            explicit_bucket_boundaries_advisory=list(BUCKETS),
        )
        self._tracked: set[int] = set()

    # -- read at collection time ------------------------------------------------

    def _stats(self) -> Iterator[tuple[dict[str, str], PoolStats]]:
        pools = live_pools() if self._pools is None else [p for p in self._pools if not p.closed]
        for pool in pools:
            yield {POOL_NAME: pool.name}, snapshot(pool)

    def _field(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(getattr(s, field), attrs) for attrs, s in self._stats()]

        return observe

    def _count(self, options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for attrs, s in self._stats():
            out.append(Observation(s.idle, {**attrs, _STATE: "idle"}))
            out.append(Observation(s.in_use, {**attrs, _STATE: "used"}))
        return out

    def _retired(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(getattr(s, f"closed_{cause}"), {**attrs, "pgmarina.cause": cause})
            for attrs, s in self._stats()
            for cause in CLOSE_CAUSES
        ]

    # -- recorded per acquire ---------------------------------------------------

    def track(self, pool: Any, *, spans: bool = False, tracer_provider: Any = None) -> None:
        """Record ``pool``'s acquire waits and lease times in the histograms.

        Args:
            pool: An :class:`~pgmarina.AsyncPool` or :class:`~pgmarina.Pool`.
            spans: Also run every acquire that is not served at once in a
                span (``pgmarina acquire wait``), child of the caller's span.
            tracer_provider: Where the spans go (default: the global one).

        Raises:
            ValueError: ``pool`` is tracked already.
            TypeError: ``pool`` is not a pgmarina pool.
        """
        core = getattr(pool, "_core", None)
        if core is None or not hasattr(core, "observe"):
            raise TypeError(f"pool must be a pgmarina pool, not {type(pool).__name__}")
        if id(pool) in self._tracked or core._on_wait is not None:
            raise ValueError(f"pool {pool.name!r} is tracked already")
        attrs = {POOL_NAME: pool.name}
        wait, use = self._wait.record, self._use.record
        core.observe(
            functools.partial(_record, wait, attrs), functools.partial(_record, use, attrs)
        )
        self._tracked.add(id(pool))
        if self._pools is not None and pool not in self._pools:
            self._pools.append(pool)
        if spans:
            _trace_waits(pool, trace.get_tracer("pgmarina", __version__, tracer_provider))


def _record(record: Callable[..., None], attrs: dict[str, str], seconds: float) -> None:
    record(seconds, attrs)


def _trace_waits(pool: Any, tracer: Any) -> None:
    """Run ``pool``'s slow acquires in a span.

    Only the path an acquire takes when no idle connection is ready goes
    through the span (``AsyncPool._acquire_slow``, ``Pool._acquire_rest``),
    so an acquire served at once costs nothing more.  The wrapper is put on
    the instance, where the shells look first.
    """
    name = "pgmarina acquire wait"
    attrs = {POOL_NAME: pool.name}
    if hasattr(type(pool), "_acquire_slow") and inspect.iscoroutinefunction(
        type(pool)._acquire_slow
    ):
        slow = pool._acquire_slow

        async def traced_slow(*args: Any) -> Any:
            with tracer.start_as_current_span(name, attributes=attrs):
                return await slow(*args)

        pool._acquire_slow = traced_slow
    else:
        rest = pool._acquire_rest

        def traced_rest(*args: Any) -> Any:
            with tracer.start_as_current_span(name, attributes=attrs):
                return rest(*args)

        pool._acquire_rest = traced_rest


def instrument(
    pool: Any, *, meter_provider: Any = None, spans: bool = False, tracer_provider: Any = None
) -> PoolMetrics:
    """Metrics for ``pool`` alone, histograms included: ``PoolMetrics(...).track(pool)``."""
    pm = PoolMetrics(meter_provider, pools=[pool])
    pm.track(pool, spans=spans, tracer_provider=tracer_provider)
    return pm

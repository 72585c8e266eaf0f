"""A secrets sweep: everything the pool shows, across a run of faults, is searched for the password.

A private cluster asks for scram-sha-256 from a role with a known password.  The sweep runs
pool operations that succeed and that fail in every way the suite knows (a PoolTimeout, the
server restarting under idle and leased connections, connections reset, a wrong password of
another length, a port nobody listens on, a host that is not the server's, malformed DSNs,
the password as a keyword), and collects what a person would see: every log record of the
``pgmarina`` logger at DEBUG (with its formatted traceback), the ``repr``/``str`` of pools,
leases and stats, and every error the pool raised, formatted as Python prints it, with its
``__cause__``/``__context__`` chain.  Neither password may appear anywhere.

Errors the *driver* raises while a borrower uses a connection are passed through untouched and
are the driver's words about the borrower's own query; they are not the pool's and not swept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from conformance_harness import Combo, dsn_via, run_async
from faultkit import chain, measure

from faultproxy import FaultProxy
from pgmarina import PoolError, PoolTimeout

pytestmark = [pytest.mark.private_cluster, pytest.mark.slow]

ROLE = "sweeper"


class Sweep:
    """Everything shown during the test, and the secrets it must not contain."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = secrets
        self.texts: list[tuple[str, str]] = []  # (where, text)
        self.errors = 0

    def saw(self, where: str, *objects: Any) -> None:
        for obj in objects:
            self.texts.append((where, repr(obj)))
            self.texts.append((where, str(obj)))

    def error(self, where: str, exc: BaseException) -> None:
        self.errors += 1
        self.texts.append((where, "".join(traceback.format_exception(exc))))
        for e in chain(exc):
            self.saw(where, e)
            self.texts += [(where, repr(a)) for a in e.args]

    def leaks(self) -> list[str]:
        return [
            f"{where}: {text!r}"
            for where, text in self.texts
            for secret in self.secrets
            if secret in text
        ]


def _use_scram(cluster: Any) -> None:
    """The superuser keeps trust (the test's admin side); everyone else needs a password."""
    cluster.data_dir.joinpath("pg_hba.conf").write_text(
        "local all all trust\n"
        f"host all {cluster.user} 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )


async def _attempt(
    sweep: Sweep, combo: Combo, server: Any, where: str, dsn: str, **options: Any
) -> Any:
    """Make, open and use a pool as far as it goes; sweep whatever comes out.  Returns the
    pool if it served, else ``None`` (it is closed by the harness in any case)."""
    options = {
        "min_size": 1, "max_size": 1, "connect_timeout": 1, "fail_fast_after": 0.3,
        "backoff_max": 0.1, "name": None, **options,
    }  # fmt: skip
    try:
        pool = await combo.make_pool(server, dsn=dsn, opened=False, **options)
    except (TypeError, ValueError, PoolError) as exc:
        sweep.error(f"{where}: constructor", exc)
        return None
    sweep.saw(f"{where}: new pool", pool)
    try:
        await combo.open(pool, timeout=1.5)
        async with combo.connection(pool, timeout=1.5) as conn:
            sweep.saw(f"{where}: lease", conn, pool, pool.stats())
            assert await combo.query_value(conn, "SELECT 1") == 1
    except (PoolError, TimeoutError) as exc:
        sweep.error(f"{where}: open/acquire", exc)
        sweep.saw(f"{where}: failed pool", pool, pool.stats())
        return None
    sweep.saw(f"{where}: pool", pool, pool.stats())
    return pool


@run_async
async def test_no_password_appears_in_any_log_repr_stats_or_error_across_a_run_of_faults(
    combo: Combo,
    make_private_pg: Callable[..., Any],
    fault_proxy: Callable[[str, int], FaultProxy],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pgmarina")
    secret = f"Sw33p{uuid.uuid4().hex[:14]}"
    wrong = f"Wr0ng{uuid.uuid4().hex[:6]}"  # another length: no error may echo either
    sweep = Sweep([secret, wrong])
    server = make_private_pg()
    admin = await combo.admin(server)
    await admin.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{secret}'")
    _use_scram(server)
    await admin.execute("SELECT pg_reload_conf()")
    host, port, db = server.host, server.port, server.dbname
    good = f"postgresql://{ROLE}:{secret}@{host}:{port}/{db}"

    # -- what works: a pool, its lease, a timeout, stats
    pool = await _attempt(sweep, combo, server, "good", good, check_window=0)
    assert pool is not None, sweep.texts[-3:]
    lease = await combo.acquire(pool)
    assert await combo.query_value(lease, "SELECT current_user") == ROLE
    sweep.saw("leased", lease, pool, pool.stats())
    try:
        await combo.acquire(pool, timeout=0.05)
    except PoolTimeout as exc:
        sweep.error("timeout", exc)
    # -- the server restarts under a lease and an idle connection
    await asyncio.to_thread(server.restart)
    # The driver's own error about the borrower's query is passed through untouched.
    with contextlib.suppress(*combo.driver_errors):
        await combo.query_value(lease, "SELECT 1")
    await combo.release(pool, lease)
    sweep.saw("released across a restart", lease, pool, pool.stats())
    async with combo.connection(pool, timeout=5) as conn:  # checked, replaced, served
        assert await combo.query_value(conn, "SELECT 1") == 1
    assert pool.stats().connections_lost >= 1

    # -- connections reset under the pool, through a proxy
    proxy = fault_proxy(host, port)
    via = dsn_via(server, proxy).replace(f"{server.user}@", f"{ROLE}:{secret}@")
    proxied = await _attempt(sweep, combo, server, "proxied", via, check_window=0)
    assert proxied is not None
    proxy.reset_all()
    proxy.stop_accepting()
    try:
        async with combo.connection(proxied, timeout=1):
            pass
    except PoolError as exc:
        sweep.error("reset, then refused", exc)
    proxy.start_accepting()

    # -- how a connect fails
    failing = {
        "wrong password": f"postgresql://{ROLE}:{wrong}@{host}:{port}/{db}",
        "nobody listens": f"postgresql://{ROLE}:{secret}@{host}:1/{db}",
        "not the server's host": f"postgresql://{ROLE}:{secret}@127.0.0.2:{port}/{db}",
        "port not a number": f"postgresql://{ROLE}:{secret}@{host}:notaport/{db}",
        "@ in the password": f"postgresql://{ROLE}:{secret}@x@{host}:1/{db}",
        "space in the password": f"postgresql://{ROLE}:{secret} x@{host}:1/{db}",
        "key=value": f"host={host} port=1 user={ROLE} password={secret} dbname={db}",
        "key=value, space typed": f"host={host} port=1 password=ab {secret} dbname={db}",
        "key=value, quoted": f"host={host} port=1 password='ab {secret}' dbname={db}",
        "in the query": f"postgresql://{ROLE}@{host}:1/{db}?password={secret}&bogus=1",
        "/ in the password": f"postgresql://{ROLE}:{secret}/x@{host}:1/{db}",
        "percent-encoded": f"postgresql://{ROLE}:{quote(secret + '/%', safe='')}@{host}:1/{db}",
    }
    for where, dsn in failing.items():
        assert await _attempt(sweep, combo, server, where, dsn) is None, where
    keyword = await _attempt(
        sweep, combo, server, "keyword", f"postgresql://{ROLE}@{host}:{port}/{db}",
        password=secret,
    )  # fmt: skip
    assert keyword is not None
    rejected = await _attempt(
        sweep, combo, server, "wrong keyword", f"postgresql://{ROLE}@{host}:{port}/{db}",
        password=wrong,
    )  # fmt: skip
    assert rejected is None

    for p in (pool, proxied, keyword):
        await combo.close(p)
        sweep.saw("closed", p, p.stats())

    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    for record in caplog.records:
        sweep.texts.append((f"log {record.levelname}", formatter.format(record)))
    assert any("connect failed" in t for _, t in sweep.texts)  # the failures were logged
    assert any("password authentication failed" in t for _, t in sweep.texts)
    assert sweep.errors >= len(failing)
    measure(
        "secrets", pair=combo.id, texts=len(sweep.texts), errors=sweep.errors,
        log_records=len(caplog.records), leaks=len(sweep.leaks()),
    )  # fmt: skip
    leaks = sweep.leaks()
    for leak in leaks:
        print("LEAK", leak)
    assert leaks == []


@run_async
async def test_a_dsn_with_a_slash_typed_into_the_password_never_shows_the_password(
    combo: Combo, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: with a ``/`` typed into the password (not percent-encoded), the driver
    reads the password as the port, and only when it connects: asyncpg said ``invalid
    literal for int() with base 10: '<password>'``, libpq (psycopg2) ``invalid integer value
    "<password>" for connection option "port"``; the pool logged that at every retry and
    passed it on as the cause of its callers' errors."""
    caplog.set_level(logging.DEBUG, logger="pgmarina")
    secret = f"Sl4sh{uuid.uuid4().hex[:10]}"
    sweep = Sweep([secret])
    try:
        pool = await combo.make_pool(
            None, dsn=f"postgresql://someone:{secret}/x@127.0.0.1:1/db", min_size=1,
            max_size=1, fail_fast_after=0.2, backoff_max=0.05, opened=False,
        )  # fmt: skip
        sweep.saw("pool", pool)
        await combo.open(pool, timeout=1)
    except (TypeError, ValueError, PoolError) as exc:  # refused up front, or at connect
        sweep.error("open", exc)
    for record in caplog.records:
        sweep.texts.append((f"log {record.levelname}", record.getMessage()))
    assert sweep.errors == 1
    assert sweep.leaks() == []

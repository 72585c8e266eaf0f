"""psqlpy's ``ConnectionPool`` over pgmarina's :class:`~pgmarina.AsyncPool` (asyncpg).

psqlpy's pool is lazy (minimum size 0, nothing opens before the first
query) and is usually built at import time, then used from whatever event
loop runs, one per test with pytest-asyncio.  An asyncpg connection belongs
to the loop that opened it, so the façade holds one ``AsyncPool`` for the
loop that is running: at first use it opens one there, and when it is used
from another loop it drops the old loop's pool, closing its sockets even if
that loop is closed, and starts a fresh one.  Nothing fails for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import weakref
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from ...errors import PoolClosed, PoolConnectError, PoolError
from ...shells.aio import AsyncPool
from . import exceptions as exc
from ._connection import Connection, QueryResult
from ._connection import _option as _member
from ._listener import Listener

__all__ = [
    "ConnRecyclingMethod", "ConnectionPool", "ConnectionPoolBuilder", "ConnectionPoolStatus",
    "LoadBalanceHosts", "SslMode", "TargetSessionAttrs", "build_dsn", "connect", "connect_pool",
]

logger = logging.getLogger("pgmarina.compat.psqlpy")


# ---------------------------------------------------------------------------
# psqlpy's enums (psqlpy's own members are accepted as well, by name)


class ConnRecyclingMethod:
    """How a connection is made ready again, mapped onto pgmarina's check and reset.

    ``Fast``: pgmarina's defaults (a rollback if the lease left a
    transaction, a ``SELECT 1`` for a connection idle longer than
    ``check_window``).  ``Verified``: a ``SELECT 1`` on every checkout.
    ``Clean``: that, and asyncpg's full session reset on every release.
    """

    Fast = "Fast"
    Verified = "Verified"
    Clean = "Clean"


class TargetSessionAttrs:
    """Which server a multi-host pool may use."""

    Any = "any"
    ReadWrite = "read-write"
    ReadOnly = "read-only"


class LoadBalanceHosts:
    """``Disable``: hosts in the order given; ``Random``: in a random order."""

    Disable = "disable"
    Random = "random"


class SslMode:
    """libpq's ``sslmode`` values."""

    Disable = "disable"
    Allow = "allow"
    Prefer = "prefer"
    Require = "require"
    VerifyCa = "verify-ca"
    VerifyFull = "verify-full"


_RECYCLING: dict[str, dict[str, Any]] = {
    "Fast": {},
    "Verified": {"check_window": 0},
    "Clean": {"check_window": 0, "reset": "full"},
}


# ---------------------------------------------------------------------------
# parameters -> DSN and asyncpg's connect keywords


def build_dsn(
    *, username: str | None = None, password: str | None = None, host: str | None = None,
    hosts: Sequence[str] | None = None, port: int | None = None,
    ports: Sequence[int] | None = None, db_name: str | None = None,
    target_session_attrs: Any = None, load_balance_hosts: Any = None,
    ssl_mode: Any = None, ca_file: str | None = None,
) -> str:
    """A libpq-style URI for psqlpy's separate connection parameters.

    Several hosts become ``postgresql://u@h1:p1,h2:p2/db``; one port for
    several hosts is used for each of them.  Unix-socket directories (a host
    starting with ``/``) go in the query string, where a path may stand.

    Raises:
        ValueError: ``ports`` does not match ``hosts``; an enum value is unknown.
    """
    for argument, value in (("hosts", hosts), ("ports", ports)):
        if value is not None and (
            isinstance(value, (str, bytes)) or not isinstance(value, Sequence)
        ):
            raise TypeError(f"{argument} must be a list, not {type(value).__name__}")
    for h in [*(hosts or ()), *([host] if host is not None else [])]:
        if not isinstance(h, str):
            raise TypeError(f"hosts and host must be str, not {type(h).__name__}")
    all_hosts = [*(hosts or ()), *([host] if host else [])]
    all_ports = [*(ports or ()), *([port] if port is not None else [])]
    for p in all_ports:
        if isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536:
            raise ValueError(f"ports must be port numbers, not {p!r}")
    if len(all_ports) > 1 and len(all_ports) != len(all_hosts):
        raise ValueError(
            f"ports: give one port, or one per host ({len(all_hosts)}), not {len(all_ports)}"
        )
    if len(all_ports) == 1 and len(all_hosts) > 1:
        all_ports *= len(all_hosts)
    query: dict[str, str] = {}
    netloc = ""
    if username:
        netloc = quote(username, safe="")
        if password:
            netloc += ":" + quote(password, safe="")
        netloc += "@"
    elif password:
        query["password"] = password
    if any(h.startswith("/") for h in all_hosts):
        query["host"] = ",".join(all_hosts)
        if all_ports:
            query["port"] = ",".join(map(str, all_ports))
    elif all_hosts:
        netloc += ",".join(
            (f"[{h}]" if ":" in h else h) + (f":{all_ports[i]}" if all_ports else "")
            for i, h in enumerate(all_hosts)
        )
    elif all_ports:
        query["port"] = ",".join(map(str, all_ports))
    tsa = _member(TargetSessionAttrs, target_session_attrs, "target_session_attrs")
    if tsa is not None and tsa != TargetSessionAttrs.Any:
        query["target_session_attrs"] = tsa
    query.update(_extra_query(load_balance_hosts, ssl_mode, ca_file, len(all_hosts) > 1))
    path = "/" + quote(db_name, safe="") if db_name else ""
    return f"postgresql://{netloc}{path}" + (f"?{urlencode(query)}" if query else "")


def _extra_query(
    load_balance_hosts: Any, ssl_mode: Any, ca_file: str | None, several_hosts: bool
) -> dict[str, str]:
    """The query parameters that apply with a ``dsn`` too.

    ``load_balance_hosts`` is for pgmarina's multi-host pools; with one host
    it means nothing and is left out, since asyncpg alone would send it to
    the server as a setting, which the server refuses.
    """
    query: dict[str, str] = {}
    lb = _member(LoadBalanceHosts, load_balance_hosts, "load_balance_hosts")
    if lb is not None and lb != LoadBalanceHosts.Disable and several_hosts:
        query["load_balance_hosts"] = lb
    mode = _member(SslMode, ssl_mode, "ssl_mode")
    if mode is not None:
        query["sslmode"] = mode
    if ca_file is not None:
        query["sslrootcert"] = ca_file
    return query


def _with_query(dsn: str, extra: Mapping[str, str]) -> str:
    """``dsn`` with ``extra`` added to its query string, where it does not set them."""
    present = {kv.split("=", 1)[0] for kv in urlsplit(dsn).query.split("&") if kv}
    extra = {k: v for k, v in extra.items() if k not in present}
    if not extra:
        return dsn
    return dsn + ("&" if "?" in dsn else "?") + urlencode(extra)


def _seconds(name: str, sec: Any, nanosec: Any) -> float | None:
    if sec is None:
        if nanosec is not None:
            raise ValueError(f"{name}_nanosec can be used only with {name}_sec")
        return None
    for argument, value in ((f"{name}_sec", sec), (f"{name}_nanosec", nanosec or 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{argument} must be a non-negative int, not {value!r}")
    return float(sec + (nanosec or 0) / 1e9)


@dataclass(frozen=True)
class _SocketOptions:
    """TCP options psqlpy sets through libpq's parameters; asyncpg has no
    keywords for them, so the façade sets them on the socket after connect."""

    keepalives: bool | None
    idle: float | None
    interval: float | None
    retries: int | None
    user_timeout: float | None

    def apply(self, con: Any) -> None:
        sock = con._transport.get_extra_info("socket") if con._transport else None
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return  # Unix sockets: ignored, as libpq does
        if self.keepalives is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(self.keepalives))
        for option, value in (
            ("TCP_KEEPIDLE", self.idle), ("TCP_KEEPINTVL", self.interval),
            ("TCP_KEEPCNT", self.retries),
        ):
            if value is not None and hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), max(1, int(value)))
        if self.user_timeout is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.user_timeout * 1000)
            )


async def _configure(con: Any, options: _SocketOptions | None) -> None:
    """What each new connection gets: psqlpy's conversions, and the TCP options."""
    # psqlpy returns json/jsonb as Python objects and uuid as str, and takes
    # dicts and lists for json/jsonb parameters.
    for kind in ("json", "jsonb"):
        await con.set_type_codec(
            kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
    await con.set_type_codec("uuid", encoder=str, decoder=str, schema="pg_catalog")
    if options is not None:
        options.apply(con)


# ---------------------------------------------------------------------------
# the pool


@dataclass(frozen=True)
class ConnectionPoolStatus:
    """psqlpy's ``status()``: ``max_size``, ``size`` (open connections),
    ``available`` (idle ones) and ``waiting`` (queued callers)."""

    max_size: int
    size: int
    available: int
    waiting: int

    def __str__(self) -> str:
        return (
            f"Connection Pool Status - [max_size: {self.max_size}, size: {self.size}, "
            f"available: {self.available}, waiting: {self.waiting}]"
        )


class ConnectionPool:
    """psqlpy's ``ConnectionPool``, run by pgmarina on asyncpg.

    Takes psqlpy 0.13's parameters (see :func:`build_dsn` for how the
    connection ones become a DSN; ``dsn`` overrides them).  Lazy, with a
    minimum size of 0.  Usable as ``with pool:`` (closed at the end).

    Raises:
        ValueError: a parameter is wrong (also a ``ConnectionPoolConfigurationError``).
    """

    def __init__(
        self,
        dsn: str | None = None,
        username: str | None = None,
        password: str | None = None,
        host: str | None = None,
        hosts: list[str] | None = None,
        port: int | None = None,
        ports: list[int] | None = None,
        db_name: str | None = None,
        target_session_attrs: Any = None,
        options: str | None = None,
        application_name: str | None = None,
        connect_timeout_sec: int | None = None,
        connect_timeout_nanosec: int | None = None,
        tcp_user_timeout_sec: int | None = None,
        tcp_user_timeout_nanosec: int | None = None,
        keepalives: bool | None = None,
        keepalives_idle_sec: int | None = None,
        keepalives_idle_nanosec: int | None = None,
        keepalives_interval_sec: int | None = None,
        keepalives_interval_nanosec: int | None = None,
        keepalives_retries: int | None = None,
        load_balance_hosts: Any = None,
        max_db_pool_size: int = 2,
        conn_recycling_method: Any = None,
        ssl_mode: Any = None,
        ca_file: str | None = None,
    ) -> None:
        try:
            self._setup(
                dsn, username, password, host, hosts, port, ports, db_name,
                target_session_attrs, options, application_name,
                _seconds("connect_timeout", connect_timeout_sec, connect_timeout_nanosec),
                _seconds("tcp_user_timeout", tcp_user_timeout_sec, tcp_user_timeout_nanosec),
                keepalives,
                _seconds("keepalives_idle", keepalives_idle_sec, keepalives_idle_nanosec),
                _seconds(
                    "keepalives_interval", keepalives_interval_sec, keepalives_interval_nanosec
                ),
                keepalives_retries, load_balance_hosts, max_db_pool_size,
                conn_recycling_method, ssl_mode, ca_file,
            )
        except ValueError as problem:
            raise _ConfigError(str(problem)) from None

    def _setup(
        self, dsn: str | None, username: str | None, password: str | None, host: str | None,
        hosts: list[str] | None, port: int | None, ports: list[int] | None,
        db_name: str | None, target_session_attrs: Any, options: str | None,
        application_name: str | None, connect_timeout: float | None,
        tcp_user_timeout: float | None, keepalives: bool | None, idle: float | None,
        interval: float | None, retries: int | None, load_balance_hosts: Any,
        max_db_pool_size: int, conn_recycling_method: Any, ssl_mode: Any, ca_file: str | None,
    ) -> None:
        if isinstance(max_db_pool_size, bool) or not isinstance(max_db_pool_size, int):
            raise TypeError(
                f"max_db_pool_size must be an int, not {type(max_db_pool_size).__name__}"
            )
        if max_db_pool_size < 1:
            raise ValueError(f"max_db_pool_size must be at least 1, not {max_db_pool_size}")
        if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)):
            raise ValueError(f"keepalives_retries must be an int, not {retries!r}")
        if dsn is not None:
            if not isinstance(dsn, str):
                raise TypeError(f"dsn must be a str, not {type(dsn).__name__}")
            # dsn overrides the parts, not the settings that only have a keyword.
            several = "," in urlsplit(dsn).netloc or "," in urlsplit(dsn).query
            self._dsn = _with_query(
                dsn, _extra_query(load_balance_hosts, ssl_mode, ca_file, several)
            )
        else:
            self._dsn = build_dsn(
                username=username, password=password, host=host, hosts=hosts, port=port,
                ports=ports, db_name=db_name, target_session_attrs=target_session_attrs,
                load_balance_hosts=load_balance_hosts, ssl_mode=ssl_mode, ca_file=ca_file,
            )
        server_settings: dict[str, str] = {}
        if application_name is not None:
            server_settings["application_name"] = application_name
        if options is not None:
            server_settings["options"] = options  # a startup parameter, as libpq sends it
        # asyncpg's connect keywords, and pgmarina's pool settings, apart:
        # both have a ``timeout``.
        connect_kwargs: dict[str, Any] = {}
        settings: dict[str, Any] = {}
        if server_settings:
            connect_kwargs["server_settings"] = server_settings
        if connect_timeout is not None:
            connect_kwargs["timeout"] = connect_timeout or None  # 0: no limit, as in libpq
            settings["connect_timeout"] = connect_timeout or float("inf")
        recycling = _member(ConnRecyclingMethod, conn_recycling_method, "conn_recycling_method")
        settings.update(_RECYCLING[recycling or "Fast"])
        sockopts = None
        if any(v is not None for v in (keepalives, idle, interval, retries, tcp_user_timeout)):
            sockopts = _SocketOptions(keepalives, idle, interval, retries, tcp_user_timeout)
        self._sockopts = sockopts
        self._connect_kwargs = connect_kwargs
        self._settings = settings
        self._max_size = max_db_pool_size
        # The pool of the running loop, in a list a finalizer can share: a
        # ConnectionPool forgotten (or left at exit) drops its connections.
        self._slot: list[_Shell | None] = [None]
        weakref.finalize(self, _abandon_slot, self._slot)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # -- the pool of the running loop -----------------------------------

    def _current(self) -> _Shell:
        """The pool for the running loop, made at first use or after a loop change."""
        loop = asyncio.get_running_loop()
        pool = self._slot[0]
        if pool is not None and self._loop is loop:
            return pool
        if self._closed:
            raise exc.ConnectionPoolExecuteError("Pool has been closed")
        if pool is not None:
            _abandon(pool)
        sockopts = self._sockopts

        async def configure(con: Any) -> None:
            await _configure(con, sockopts)

        pool = _Shell(
            self._dsn, driver="asyncpg", min_size=0, max_size=self._max_size,
            configure=configure, connect_kwargs=self._connect_kwargs, name="psqlpy-compat",
            **self._settings,
        )
        pool._start()  # min_size 0: nothing to wait for
        pool._release_lease = _releaser(pool)
        self._slot[0] = pool
        self._loop = loop
        return pool

    async def _lease(self) -> tuple[_Shell, Any]:
        pool = self._current()
        try:
            return pool, await pool.acquire()
        except PoolClosed as closed:
            raise exc.ConnectionPoolExecuteError("Pool has been closed") from closed
        except PoolConnectError as failed:
            raise exc.ConnectionPoolExecuteError(f"Cannot get a connection: {failed}") from failed
        except PoolError as failed:
            raise exc.ConnectionPoolExecuteError(str(failed)) from failed

    async def connection(self) -> Connection:
        """A connection from the pool; give it back with ``close()``.

        Raises:
            ConnectionPoolExecuteError: the pool is closed or cannot connect
                (the pgmarina error is the cause).
        """
        pool, lease = await self._lease()
        return Connection(lease, pool._release_lease)

    def acquire(self) -> _Acquire:
        """``async with pool.acquire() as conn:``: a connection for the block."""
        return _Acquire(self)

    async def execute(
        self, querystring: str, parameters: Any = None, prepared: bool | None = None
    ) -> QueryResult:
        """Run one query on a pooled connection (psqlpy's pool-level ``execute``)."""
        pool, lease = await self._lease()
        conn = Connection(lease, None)
        try:
            return await conn.execute(querystring, parameters, prepared)
        finally:
            conn._lease = None
            reset = pool._return(lease)
            if reset is not None:
                await reset

    fetch = execute

    def listener(self) -> Listener:
        """A LISTEN/NOTIFY listener on the pool's listener connection.

        pgmarina's listener (:meth:`pgmarina.AsyncPool.listener`): one
        connection outside the pool's slots, which re-``LISTEN``s after it is
        lost and comes back; see
        :class:`~pgmarina.compat.psqlpy.Listener`.
        """
        if self._closed:
            raise exc.ConnectionPoolExecuteError("Pool has been closed")
        return Listener(lambda: self._current().listener())

    def status(self) -> ConnectionPoolStatus:
        """Sizes now: ``max_size``, ``size``, ``available`` (idle), ``waiting``."""
        pool = self._slot[0]
        if pool is None or pool.closed:
            return ConnectionPoolStatus(self._max_size, 0, 0, 0)
        stats = pool.stats()
        return ConnectionPoolStatus(stats.max_size, stats.size, stats.idle, stats.waiting)

    def resize(self, new_max_size: int) -> None:
        """Change the most connections at once; idle ones above it are closed.

        Raises:
            ValueError: ``new_max_size`` is less than 1.
        """
        if isinstance(new_max_size, bool) or not isinstance(new_max_size, int):
            raise TypeError(f"new_max_size must be an int, not {type(new_max_size).__name__}")
        if new_max_size < 1:
            raise ValueError(f"new_max_size must be at least 1, not {new_max_size}")
        self._max_size = new_max_size
        pool = self._slot[0]
        if pool is not None and not pool.closed:
            # AsyncPool.resize does not wait for anything: run it here, at once.
            _run_now(pool.resize(0, new_max_size))

    def close(self) -> None:
        """Close the pool: idle connections now, leased ones as they come back.

        psqlpy's ``close()`` is not awaited, and is often the last thing
        before ``asyncio.run()`` returns, which cancels whatever is left to
        run: so the idle connections are dropped at once rather than closed
        politely in tasks.  Leased ones keep working and are closed when they
        come back.
        """
        self._closed = True
        pool = self._slot[0]
        self._slot[0] = None
        if pool is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and running is self._loop:
            _close_now(pool)
        else:
            _abandon(pool)

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.status()
        state = "closed" if self._closed else "open"
        return (
            f"<psqlpy-compat ConnectionPool [{state}] max_size={s.max_size} size={s.size} "
            f"available={s.available} waiting={s.waiting}>"
        )


class _Shell(AsyncPool):
    """The pool under the façade.  A connection it retires is dropped where it
    is retired (a release after ``close()``, say), not closed in a task: psqlpy
    code often ends its loop right after, and a task cancelled before it ran
    would leave the socket open."""

    _log = logger
    _close_inline = True
    #: Dropped for another event loop: its connections are gone, and a lease
    #: given back late (from a Connection kept across loops) is just forgotten.
    _abandoned = False
    #: ``release(lease)`` for the façade's connections (made once per pool).
    _release_lease: Any = None


class _ConfigError(exc.ConnectionPoolConfigurationError, ValueError):
    """A wrong pool parameter: psqlpy's error, and pgmarina's ValueError."""


def _releaser(pool: _Shell) -> Any:
    def release(lease: Any) -> None:
        if pool._abandoned:
            return
        reset = pool._return(lease)
        if reset is not None:
            task = asyncio.ensure_future(reset)
            _resets.add(task)
            task.add_done_callback(_resets.discard)
    return release


_resets: set[asyncio.Future[Any]] = set()


class _Acquire:
    """``async with pool.acquire() as conn``: the connection goes back at the end."""

    __slots__ = ("_conn", "_owner")

    def __init__(self, owner: ConnectionPool) -> None:
        self._owner = owner
        self._conn: Connection | None = None

    async def __aenter__(self) -> Connection:
        self._conn = await self._owner.connection()
        return self._conn

    async def __aexit__(self, *exc_info: object) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.__aexit__(*exc_info)

    def __await__(self) -> Any:
        return self._owner.connection().__await__()


def _run_now(coro: Any) -> None:
    """Run a coroutine that never waits, to its end, without a loop."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("expected a coroutine that does not wait")


def _close_now(pool: AsyncPool) -> None:
    """``AsyncPool.close(wait=False)`` without the tasks: the idle connections'
    sockets are aborted now, so nothing is left for a loop about to end."""
    if pool.closed:
        return
    pool._shut("closed")
    core = pool._core
    work, core.pending = core.pending, []
    for entry in work:
        pool._hard_close(entry)


def _abandon_slot(slot: list[_Shell | None]) -> None:
    pool, slot[0] = slot[0], None
    if pool is not None and not pool.closed:
        _abandon(pool)


def _abandon(pool: _Shell) -> None:
    """Drop a pool made on another event loop than the running one.

    Usually that loop has ended (``asyncio.run()`` returned, a test's loop
    was closed): its tasks are gone, and its connections cannot be closed
    politely, which needs the loop.  Their sockets are closed here, and the
    pool is forgotten.  A loop still running in another thread is asked to
    terminate the pool itself.
    """
    pool._abandoned = True
    loop = pool._loop
    if loop is not None and loop.is_running():
        loop.call_soon_threadsafe(pool.terminate)
        return
    for entry in list(pool._core.entries):
        if entry.conn is not None:
            _drop_connection(entry.conn)
    pool._closed = True


def _drop_connection(con: Any) -> None:
    """Close an asyncpg connection's socket without its (stopped) event loop."""
    transport = getattr(con, "_transport", None)
    sock = getattr(transport, "_sock", None)
    if transport is not None and sock is not None:
        sock.close()
        # What the transport's own close would have recorded, so that
        # neither it nor the connection warns of being left open.
        transport._sock = None
        transport._closing = True
    con._aborted = True
    con._protocol = None


def connect_pool(**kwargs: Any) -> ConnectionPool:
    """``ConnectionPool(**kwargs)`` (psqlpy's ``connect_pool``)."""
    return ConnectionPool(**kwargs)


class _Connect(ConnectionPool):
    """What :func:`connect` returns: a pool, and, awaited, a lone connection."""

    def __await__(self) -> Generator[Any, None, Connection]:
        return self._alone().__await__()

    async def _alone(self) -> Connection:
        conn = await self.connection()
        give_back = conn._release
        assert give_back is not None

        def release(lease: Any) -> None:
            give_back(lease)
            self.close()  # the pool was this connection's alone

        conn._release = release
        return conn


def connect(**kwargs: Any) -> ConnectionPool:
    """A pool with :class:`ConnectionPool`'s parameters, as the pool
    documentation's ``connect(...)`` makes.

    ``await connect(...)`` gives one connection instead, as psqlpy 0.13's
    ``connect`` does: its ``close()`` closes it for good.
    """
    return _Connect(**kwargs)


class ConnectionPoolBuilder:
    """psqlpy's builder: ``ConnectionPoolBuilder().user("u").host("h").build()``.

    Each method sets one :class:`ConnectionPool` parameter and returns the
    builder; ``host`` and ``port`` add one more each time.
    """

    def __init__(self) -> None:
        self._kwargs: dict[str, Any] = {}

    def build(self) -> ConnectionPool:
        """The pool, with the parameters set so far."""
        return ConnectionPool(**self._kwargs)

    def _set(self, name: str, value: Any) -> ConnectionPoolBuilder:
        self._kwargs[name] = value
        return self

    def _add(self, name: str, value: Any) -> ConnectionPoolBuilder:
        self._kwargs.setdefault(name, []).append(value)
        return self

    def max_pool_size(self, pool_size: int) -> ConnectionPoolBuilder:
        return self._set("max_db_pool_size", pool_size)

    def conn_recycling_method(self, conn_recycling_method: Any) -> ConnectionPoolBuilder:
        return self._set("conn_recycling_method", conn_recycling_method)

    def user(self, user: str) -> ConnectionPoolBuilder:
        return self._set("username", user)

    def password(self, password: str) -> ConnectionPoolBuilder:
        return self._set("password", password)

    def dbname(self, dbname: str) -> ConnectionPoolBuilder:
        return self._set("db_name", dbname)

    def options(self, options: str) -> ConnectionPoolBuilder:
        return self._set("options", options)

    def application_name(self, application_name: str) -> ConnectionPoolBuilder:
        return self._set("application_name", application_name)

    def ssl_mode(self, ssl_mode: Any) -> ConnectionPoolBuilder:
        return self._set("ssl_mode", ssl_mode)

    def ca_file(self, ca_file: str) -> ConnectionPoolBuilder:
        return self._set("ca_file", ca_file)

    def host(self, host: str) -> ConnectionPoolBuilder:
        return self._add("hosts", host)

    def hostaddr(self, hostaddr: Any) -> ConnectionPoolBuilder:
        """An IP address to connect to, added as a host."""
        return self._add("hosts", str(hostaddr))

    def port(self, port: int) -> ConnectionPoolBuilder:
        return self._add("ports", port)

    def connect_timeout(self, connect_timeout: int) -> ConnectionPoolBuilder:
        return self._set("connect_timeout_sec", connect_timeout)

    def tcp_user_timeout(self, tcp_user_timeout: int) -> ConnectionPoolBuilder:
        return self._set("tcp_user_timeout_sec", tcp_user_timeout)

    def target_session_attrs(self, target_session_attrs: Any) -> ConnectionPoolBuilder:
        return self._set("target_session_attrs", target_session_attrs)

    def load_balance_hosts(self, load_balance_hosts: Any) -> ConnectionPoolBuilder:
        return self._set("load_balance_hosts", load_balance_hosts)

    def keepalives(self, keepalives: bool) -> ConnectionPoolBuilder:
        return self._set("keepalives", keepalives)

    def keepalives_idle(self, keepalives_idle: int) -> ConnectionPoolBuilder:
        return self._set("keepalives_idle_sec", keepalives_idle)

    def keepalives_interval(self, keepalives_interval: int) -> ConnectionPoolBuilder:
        return self._set("keepalives_interval_sec", keepalives_interval)

    def keepalives_retries(self, keepalives_retries: int) -> ConnectionPoolBuilder:
        return self._set("keepalives_retries", keepalives_retries)

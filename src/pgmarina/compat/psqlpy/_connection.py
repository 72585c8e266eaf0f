"""psqlpy's ``Connection``, ``Transaction``, ``Cursor`` and results, over asyncpg.

A psqlpy query method takes ``(querystring, parameters=None, prepared=None)``
and returns a :class:`QueryResult` whose ``result()`` is a list of dicts.  The
façade runs the query with asyncpg's ``fetch`` (``$1`` parameters are the
same in both) and keeps asyncpg's records; the conversions happen only when
``result()``, ``as_class()`` or ``row_factory()`` asks for them.

Errors: asyncpg's error becomes the psqlpy error of the object that ran the
query (``ConnectionExecuteError`` on a connection, ``TransactionExecuteError``
in a transaction, ``CursorFetchError`` in a cursor), with asyncpg's error as
its ``__cause__``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from itertools import count
from typing import Any, TypeVar

from . import exceptions as exc
from .extra_types import _Wrapper

__all__ = [
    "Column",
    "Connection",
    "Cursor",
    "IsolationLevel",
    "PreparedStatement",
    "QueryResult",
    "ReadVariant",
    "SingleQueryResult",
    "Transaction",
]

_T = TypeVar("_T")
_Decoders = Mapping[str, Callable[[bytes], Any]]


# ---------------------------------------------------------------------------
# parameters


_NAMED = re.compile(r"\$\((\w+)\)p")


@lru_cache(maxsize=256)
def _numbered(querystring: str) -> tuple[str, tuple[str, ...]]:
    """psqlpy's named parameters (``$(name)p``) as ``$1``..., and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _NAMED.sub(number, querystring), tuple(names)


def _args(querystring: str, parameters: Any) -> tuple[str, Sequence[Any]]:
    """The query and positional arguments asyncpg takes for psqlpy's ``parameters``."""
    if parameters is None:
        return querystring, ()
    if isinstance(parameters, Mapping):
        querystring, names = _numbered(querystring)
        try:
            values: Sequence[Any] = [parameters[name] for name in names]
        except KeyError as missing:
            raise exc.PyToRustValueMappingError(
                f"parameters has no value for $({missing.args[0]})p"
            ) from None
    elif isinstance(parameters, (str, bytes)) or not isinstance(parameters, Sequence):
        raise TypeError(
            f"parameters must be a sequence or a mapping, not {type(parameters).__name__}"
        )
    else:
        values = parameters
    for value in values:
        if isinstance(value, _Wrapper):
            return querystring, [v.inner_value if isinstance(v, _Wrapper) else v for v in values]
    return querystring, values


# ---------------------------------------------------------------------------
# results


def _decoded(row: Any, decoders: _Decoders) -> dict[str, Any]:
    out = dict(row.items())
    for column, decode in decoders.items():
        if column in out and out[column] is not None:
            value = out[column]
            # asyncpg has already decoded every column it knows; a type it
            # does not know comes as text, which the decoder gets as bytes.
            out[column] = decode(value.encode() if isinstance(value, str) else value)
    return out


class QueryResult:
    """The rows of a query, converted on demand (psqlpy's ``QueryResult``)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def result(
        self, custom_decoders: _Decoders | None = None, as_tuple: bool | None = None
    ) -> list[Any]:
        """The rows as dicts (``as_tuple=True``: as tuples).

        Args:
            custom_decoders: ``{column: decode(bytes)}``, applied to those
                columns' values (see the README for how they differ from psqlpy's).
            as_tuple: Tuples in column order instead of dicts.
        """
        if custom_decoders:
            rows = [_decoded(row, custom_decoders) for row in self._rows]
            return [tuple(r.values()) for r in rows] if as_tuple else rows
        if as_tuple:
            return [tuple(row) for row in self._rows]
        return [dict(row.items()) for row in self._rows]

    def as_class(self, as_class: Callable[..., _T]) -> list[_T]:
        """``as_class(**row)`` for each row: dataclasses, pydantic or msgspec models."""
        return [as_class(**dict(row.items())) for row in self._rows]

    def row_factory(
        self, row_factory: Callable[[dict[str, Any]], _T], custom_decoders: _Decoders | None = None
    ) -> list[_T]:
        """``row_factory(row_dict)`` for each row, after ``custom_decoders``."""
        return [row_factory(row) for row in self.result(custom_decoders)]

    def records(self) -> list[Any]:
        """The rows as asyncpg ``Record`` objects (psqlpy's ``Record`` is modelled on it)."""
        return list(self._rows)

    def __repr__(self) -> str:
        return f"<QueryResult rows={len(self._rows)}>"


class SingleQueryResult:
    """One row (psqlpy's ``SingleQueryResult``, from ``fetch_row``)."""

    __slots__ = ("_row",)

    def __init__(self, row: Any) -> None:
        self._row = row

    def result(
        self, custom_decoders: _Decoders | None = None, as_tuple: bool | None = None
    ) -> Any:
        """The row as a dict (``as_tuple=True``: as a tuple); see :meth:`QueryResult.result`."""
        if custom_decoders:
            row = _decoded(self._row, custom_decoders)
            return tuple(row.values()) if as_tuple else row
        return tuple(self._row) if as_tuple else dict(self._row.items())

    def as_class(self, as_class: Callable[..., _T]) -> _T:
        """``as_class(**row)``."""
        return as_class(**dict(self._row.items()))

    def row_factory(
        self, row_factory: Callable[[dict[str, Any]], _T], custom_decoders: _Decoders | None = None
    ) -> _T:
        """``row_factory(row_dict)``, after ``custom_decoders``."""
        return row_factory(self.result(custom_decoders))

    def __repr__(self) -> str:
        return "<SingleQueryResult>"


# ---------------------------------------------------------------------------
# transaction options (psqlpy's enums; psqlpy's own members are accepted too)


class IsolationLevel:
    """Isolation levels for ``Connection.transaction(isolation_level=...)``."""

    ReadUncommitted = "READ UNCOMMITTED"
    ReadCommitted = "READ COMMITTED"
    RepeatableRead = "REPEATABLE READ"
    Serializable = "SERIALIZABLE"


class ReadVariant:
    """``ReadOnly`` or ``ReadWrite``, for ``Connection.transaction(read_variant=...)``."""

    ReadOnly = "READ ONLY"
    ReadWrite = "READ WRITE"


def _option(kind: type, value: Any, argument: str) -> str | None:
    """``IsolationLevel.Serializable`` (ours, or psqlpy's enum member) as our value.

    psqlpy's enums are Rust enums: no ``.name``, but a ``repr`` of
    ``Kind.Member`` and a class of the same name as ours.
    """
    if value is None:
        return None
    if isinstance(value, str) and value in vars(kind).values():
        return value
    name = getattr(value, "name", None)
    if name is None and type(value).__name__ == kind.__name__:
        name = repr(value).rpartition(".")[2]
    if isinstance(name, str) and not name.startswith("_"):
        ours = vars(kind).get(name)
        if isinstance(ours, str):
            return ours
    raise ValueError(f"{argument} must be a {kind.__name__} member, not {value!r}")


# ---------------------------------------------------------------------------
# what a failed query raises


class ConnectionQueryError(exc.ConnectionExecuteError, exc.DatabaseError):
    """A query on a connection failed.

    psqlpy raises ``ConnectionExecuteError`` when a query fails as it runs
    and ``DatabaseError`` when it cannot be prepared (a syntax error, an
    unknown table), by method; asyncpg does not say which step failed, so
    this error is both, and either ``except`` catches it.
    """


class TransactionQueryError(exc.TransactionExecuteError, ConnectionQueryError):
    """A query in a transaction failed; also a ``ConnectionExecuteError`` and a
    ``DatabaseError``, which psqlpy raises there."""


class CursorQueryError(exc.CursorStartError, exc.DatabaseError):
    """A cursor could not be declared (psqlpy raises ``DatabaseError`` there)."""


# ---------------------------------------------------------------------------
# the query methods shared by Connection and Transaction


class _Queries:
    """psqlpy's query methods, run on ``self._driver()`` (an asyncpg connection).

    Subclasses set ``_error`` (what a failed query raises) and ``_driver``
    (which raises their closed error once they cannot be used).
    """

    __slots__ = ()

    _error: type[exc.Error] = ConnectionQueryError

    def _driver(self) -> Any:
        raise NotImplementedError

    async def _ready(self) -> Any:
        """The driver connection, once the cursor closes under way are done."""
        raise NotImplementedError

    async def _run(self, method: str, querystring: str, parameters: Any) -> Any:
        con = await self._ready()
        query, args = _args(querystring, parameters)
        try:
            return await getattr(con, method)(query, *args)
        except exc.Error:
            raise
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:
            raise self._error(f"Cannot execute query, error - {error}") from error

    async def execute(
        self, querystring: str, parameters: Any = None, prepared: bool | None = None
    ) -> QueryResult:
        """Run a query; its rows, if any, are in the result.

        Args:
            querystring: SQL with ``$1``-style (or ``$(name)p`` with a
                mapping) parameters.
            parameters: A sequence of values, or a mapping for named ones.
            prepared: Accepted for psqlpy's sake: asyncpg always prepares and
                caches statements (see the README).
        """
        return QueryResult(await self._run("fetch", querystring, parameters))

    fetch = execute

    async def execute_many(
        self, querystring: str, parameters: Iterable[Sequence[Any]] | None = None,
        prepared: bool | None = None,
    ) -> None:
        """Run a statement once per parameter list (asyncpg's ``executemany``)."""
        con = await self._ready()
        rows = list(parameters or ())
        if not rows:
            return
        query, first = _args(querystring, rows[0])
        args = [first] + [_args(querystring, r)[1] for r in rows[1:]]
        try:
            await con.executemany(query, args)
        except Exception as error:
            raise self._error(f"Cannot execute query, error - {error}") from error

    async def execute_batch(self, querystring: str) -> None:
        """Run statements separated by semicolons, with the simple query protocol."""
        await self._run("execute", querystring, None)

    async def fetch_row(
        self, querystring: str, parameters: Any = None, prepared: bool | None = None
    ) -> SingleQueryResult:
        """The one row of a query; another number of rows raises ``..ExecuteError``."""
        rows = await self._run("fetch", querystring, parameters)
        if len(rows) != 1:
            raise self._error("query returned an unexpected number of rows")
        return SingleQueryResult(rows[0])

    async def fetch_val(
        self, querystring: str, parameters: Any = None, prepared: bool | None = None
    ) -> Any:
        """The first value of the one row of a query (as :meth:`fetch_row`)."""
        rows = await self._run("fetch", querystring, parameters)
        if len(rows) != 1:
            raise self._error("query returned an unexpected number of rows")
        return rows[0][0]

    async def prepare(self, querystring: str, parameters: Any = None) -> PreparedStatement:
        """Prepare ``querystring`` with its ``parameters``, to execute later.

        Returns:
            A :class:`PreparedStatement` (asyncpg's prepared statement inside).
        """
        con = await self._ready()
        query, args = _args(querystring, parameters)
        try:
            statement = await con.prepare(query)
        except Exception as error:
            raise self._error(f"Cannot prepare statement, error - {error}") from error
        return PreparedStatement(self, statement, querystring, parameters, args)

    async def copy_records_to_table(
        self, table_name: str, records: Iterable[Sequence[Any]],
        columns: Sequence[str] | None = None, schema_name: str | None = None,
    ) -> int:
        """COPY ``records`` into a table (asyncpg's own ``copy_records_to_table``).

        Returns:
            The number of rows copied.
        """
        con = await self._ready()
        try:
            status = await con.copy_records_to_table(
                table_name, records=records, columns=columns, schema_name=schema_name
            )
        except Exception as error:
            raise self._error(f"Cannot copy records, error - {error}") from error
        return int(status.split()[-1])

    async def binary_copy_to_table(
        self, source: Any, table_name: str, columns: Sequence[str] | None = None,
        schema_name: str | None = None,
    ) -> int:
        """COPY binary-format bytes (or a file-like object) into a table.

        Returns:
            The number of rows copied.
        """
        con = await self._ready()
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = BytesIO(bytes(source))
        try:
            status = await con.copy_to_table(
                table_name, source=source, columns=columns, schema_name=schema_name,
                format="binary",
            )
        except Exception as error:
            raise self._error(f"Cannot copy records, error - {error}") from error
        return int(status.split()[-1])

    # psqlpy's connection facts

    @property
    def conn_dbname(self) -> str | None:
        return self._driver()._params.database  # type: ignore[no-any-return]

    @property
    def user(self) -> str | None:
        return self._driver()._params.user  # type: ignore[no-any-return]

    @property
    def hosts(self) -> list[str]:
        addr = self._driver()._addr
        return [addr[0]] if isinstance(addr, tuple) else [addr]

    @property
    def ports(self) -> list[int]:
        addr = self._driver()._addr
        return [addr[1]] if isinstance(addr, tuple) else []

    @property
    def host_addrs(self) -> list[str]:
        return []


# ---------------------------------------------------------------------------
# prepared statements


@dataclass(frozen=True)
class Column:
    """A result column of a prepared statement: ``name`` (and ``table_oid``, None here)."""

    name: str
    table_oid: int | None


class PreparedStatement:
    """psqlpy's ``PreparedStatement``: a query prepared once, with its parameters."""

    __slots__ = ("_args", "_owner", "_parameters", "_querystring", "_statement")

    def __init__(
        self, owner: _Queries, statement: Any, querystring: str, parameters: Any,
        args: Sequence[Any],
    ) -> None:
        self._owner = owner
        self._statement = statement
        self._querystring = querystring
        self._parameters = parameters
        self._args = args

    async def execute(self) -> QueryResult:
        """Run the statement with the parameters it was prepared with."""
        await self._owner._ready()  # raises once the connection or transaction is gone
        try:
            rows = await self._statement.fetch(*self._args)
        except Exception as error:
            raise self._owner._error(f"Cannot execute query, error - {error}") from error
        return QueryResult(rows)

    def cursor(self) -> Cursor:
        """A server-side cursor over the statement's query and parameters."""
        owner = self._owner
        conn = owner._conn if isinstance(owner, Transaction) else owner
        assert isinstance(conn, Connection)
        return Cursor(conn, self._querystring, self._parameters, None)

    def columns(self) -> list[Column]:
        """The statement's result columns (``table_oid`` is None: asyncpg does not
        keep the column's table)."""
        return [Column(a.name, None) for a in self._statement.get_attributes()]


# ---------------------------------------------------------------------------
# Connection


class Connection(_Queries):
    """A pooled connection speaking psqlpy's ``Connection`` API.

    Give it back with :meth:`close` (or :meth:`back_to_pool`), or use it as
    ``async with``; one that is dropped unclosed goes back to the pool when
    it is garbage-collected, as psqlpy's does.  :attr:`driver_connection` is
    the asyncpg connection underneath, for what the façade does not cover.
    """

    __slots__ = ("__weakref__", "_lease", "_release", "_work")

    _error = ConnectionQueryError

    def __init__(self, lease: Any, release: Callable[[Any], None] | None) -> None:
        self._lease = lease
        # ``release(lease)`` gives the lease back without awaiting; None for a
        # connection the façade does not pool (the listener's).
        self._release = release
        # Sync close()es (of cursors) that still have a round trip to make:
        # the next query waits for them, so they never overlap with it.
        self._work: list[asyncio.Task[Any]] = []

    def _driver(self) -> Any:
        lease = self._lease
        if lease is None:
            raise exc.ConnectionClosedError("Underlying connection is returned to the pool")
        return lease

    async def _settle(self) -> None:
        work, self._work = self._work, []
        for task in work:
            await task

    async def _ready(self) -> Any:
        if self._work:
            await self._settle()
        return self._driver()

    @property
    def driver_connection(self) -> Any:
        """The asyncpg connection underneath (pgmarina's lease of it).

        Use it for what psqlpy's API lacks (``copy_from_query``,
        ``set_type_codec``, ...); it stops working once this connection
        goes back to the pool.
        """
        return self._driver()

    def in_transaction(self) -> bool:
        """Whether a transaction is open on the connection."""
        return bool(self._driver().is_in_transaction())

    def is_closed(self) -> bool:
        """Whether the connection went back to the pool (or was lost)."""
        return self._lease is None or bool(self._lease.is_closed())

    def transaction(
        self, isolation_level: Any = None, read_variant: Any = None, deferrable: bool | None = None
    ) -> Transaction:
        """A transaction on this connection: ``async with`` it, or ``begin()`` it.

        Args:
            isolation_level: An :class:`IsolationLevel` member (the server's
                default if None).
            read_variant: ``ReadVariant.ReadOnly`` or ``ReadVariant.ReadWrite``.
            deferrable: ``DEFERRABLE`` (True) or ``NOT DEFERRABLE`` (False).
        """
        self._driver()
        return Transaction(self, isolation_level, read_variant, deferrable)

    def cursor(
        self, querystring: str | None = None, parameters: Any = None,
        array_size: int | None = None, *, fetch_number: int | None = None,
    ) -> Cursor:
        """A server-side cursor over ``querystring``; see :class:`Cursor`.

        Args:
            array_size: Rows per fetch when iterating (psqlpy's older
                ``fetch_number`` is taken too).
        """
        self._driver()
        return Cursor(self, querystring, parameters, array_size or fetch_number)

    def close(self) -> None:
        """Give the connection back to the pool; using it afterwards raises.

        A transaction left open is rolled back by the pool.
        """
        lease = self._lease
        if lease is None:
            return
        self._lease = None
        if self._release is None:
            return
        if self._work:
            # Let the cursors close first: the lease goes back after them.
            work, self._work = self._work, []
            _background(_release_after(work, lease, self._release))
            return
        self._release(lease)

    back_to_pool = close

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._work:
            await self._settle()
        self.close()

    def __del__(self) -> None:
        # Dropped without close(): give the lease back from the loop (never
        # from here, which may run in the middle of the pool's bookkeeping).
        lease = self._lease
        if lease is not None and self._release is not None:
            self._lease = None
            with contextlib.suppress(Exception):  # at interpreter exit, say
                _call_soon(self._release, lease)

    def __repr__(self) -> str:
        state = "returned" if self._lease is None else "in use"
        return f"<psqlpy-compat Connection [{state}] {id(self):#x}>"


_tasks: set[asyncio.Task[Any]] = set()


def _background(coro: Awaitable[Any]) -> None:
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _release_after(
    work: list[asyncio.Task[Any]], lease: Any, release: Callable[[Any], None]
) -> None:
    try:
        await asyncio.gather(*work, return_exceptions=True)
    finally:
        release(lease)


def _call_soon(release: Callable[[Any], None], lease: Any) -> None:
    loop = _lease_loop(lease)
    if loop is None or loop.is_closed():
        return  # the loop is gone: the façade drops its pool when it sees another
    with contextlib.suppress(RuntimeError):  # closed meanwhile
        loop.call_soon_threadsafe(release, lease)


def _lease_loop(lease: Any) -> asyncio.AbstractEventLoop | None:
    try:
        return lease._con._loop  # type: ignore[no-any-return]
    except Exception:
        return None


# ---------------------------------------------------------------------------
# Transaction


class Transaction(_Queries):
    """psqlpy's ``Transaction``: ``BEGIN`` .. ``COMMIT``/``ROLLBACK`` on a connection.

    ``async with conn.transaction() as tx:`` begins, and commits when the
    block ends (rolls back if it raised).  Or call :meth:`begin`,
    :meth:`commit` and :meth:`rollback` yourself.  After the end, using it
    raises ``TransactionClosedError``.
    """

    __slots__ = ("_begin", "_conn", "_state")

    _error = TransactionQueryError

    def __init__(
        self, conn: Connection, isolation_level: Any, read_variant: Any, deferrable: bool | None
    ) -> None:
        parts = ["BEGIN"]
        level = _option(IsolationLevel, isolation_level, "isolation_level")
        if level is not None:
            parts.append(f"ISOLATION LEVEL {level}")
        variant = _option(ReadVariant, read_variant, "read_variant")
        if variant is not None:
            parts.append(variant)
        if deferrable is not None:
            parts.append("DEFERRABLE" if deferrable else "NOT DEFERRABLE")
        self._begin = " ".join(parts)
        self._conn = conn
        self._state = "new"  # -> "open" -> "done"

    def _driver(self) -> Any:
        if self._state == "done" or self._conn._lease is None:
            raise exc.TransactionClosedError("Transaction is already committed or rolled back"
                                             if self._conn._lease is not None else
                                             "Underlying connection is returned to the pool")
        return self._conn._driver()

    async def _ready(self) -> Any:
        if self._conn._work:
            await self._conn._settle()
        return self._driver()

    async def _command(self, sql: str, error: type[exc.Error]) -> None:
        con = await self._ready()
        try:
            await con.execute(sql)
        except Exception as failure:
            raise error(f"{sql.split()[0]} failed: {failure}") from failure

    async def begin(self) -> None:
        """``BEGIN`` with the options given; only once."""
        if self._state != "new":
            raise exc.TransactionBeginError("Transaction is already started")
        await self._command(self._begin, exc.TransactionBeginError)
        self._state = "open"

    async def commit(self) -> None:
        """``COMMIT``; the transaction is over."""
        await self._end("COMMIT", exc.TransactionCommitError)

    async def rollback(self) -> None:
        """``ROLLBACK``; the transaction is over."""
        await self._end("ROLLBACK", exc.TransactionRollbackError)

    async def _end(self, sql: str, error: type[exc.Error]) -> None:
        """``COMMIT`` or ``ROLLBACK`` a begun transaction; it is over even if that fails."""
        self._opened(sql.lower())
        try:
            await self._command(sql, error)
        finally:
            self._state = "done"

    def _opened(self, what: str) -> None:
        if self._state == "done":
            self._driver()  # raises TransactionClosedError
        if self._state == "new":
            raise exc.TransactionClosedError(f"cannot {what}: the transaction was not begun")

    async def create_savepoint(self, savepoint_name: str) -> None:
        """``SAVEPOINT name``."""
        await self._command(f"SAVEPOINT {_ident(savepoint_name)}", exc.TransactionSavepointError)

    async def rollback_savepoint(self, savepoint_name: str) -> None:
        """``ROLLBACK TO SAVEPOINT name``."""
        await self._command(
            f"ROLLBACK TO SAVEPOINT {_ident(savepoint_name)}", exc.TransactionSavepointError
        )

    async def release_savepoint(self, savepoint_name: str) -> None:
        """``RELEASE SAVEPOINT name``."""
        await self._command(
            f"RELEASE SAVEPOINT {_ident(savepoint_name)}", exc.TransactionSavepointError
        )

    async def pipeline(
        self, queries: Sequence[tuple[str, Any]] | None = None, prepared: bool | None = None
    ) -> list[QueryResult]:
        """Run ``[(querystring, parameters), ...]`` and return their results, in order.

        asyncpg has no pipelining: the queries run one after the other.
        """
        return [await self.execute(q, p) for q, p in queries or ()]

    def cursor(
        self, querystring: str | None = None, parameters: Any = None,
        array_size: int | None = None, *, fetch_number: int | None = None,
    ) -> Cursor:
        """A server-side cursor in this transaction; see :class:`Cursor`."""
        self._driver()
        return Cursor(self._conn, querystring, parameters, array_size or fetch_number)

    def is_closed(self) -> bool:
        return self._state == "done" or self._conn.is_closed()

    async def __aenter__(self) -> Transaction:
        await self.begin()
        return self

    async def __aexit__(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        if self._state != "open":
            return  # ended inside the block
        if exc_type is None:
            await self.commit()
        else:
            await self.rollback()


def _ident(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError("savepoint_name must be a non-empty str")
    return '"' + name.replace('"', '""') + '"'


# ---------------------------------------------------------------------------
# Cursor


_cursor_names = count(1)


class Cursor:
    """psqlpy's ``Cursor``: a server-side cursor read in chunks.

    ``async with conn.cursor(query, params, array_size=100) as cur:`` then
    ``async for chunk in cur:`` (each chunk a :class:`QueryResult` of up to
    ``array_size`` rows), or :meth:`start` and the ``fetch...`` methods, then
    :meth:`close`.  Outside a transaction the cursor opens one of its own
    and ends it when it closes, as a cursor needs one in PostgreSQL.
    """

    __slots__ = ("_conn", "_name", "_own_tx", "_state", "array_size", "parameters", "querystring")

    def __init__(
        self, conn: Connection, querystring: str | None, parameters: Any, array_size: int | None
    ) -> None:
        if array_size is not None and (not isinstance(array_size, int) or array_size < 1):
            raise ValueError(f"array_size must be a positive int, not {array_size!r}")
        self._conn = conn
        self.querystring = querystring
        self.parameters = parameters
        self.array_size = array_size or 10
        self._name = f"pgmarina_psqlpy_{next(_cursor_names)}"
        self._own_tx = False
        self._state = "new"  # -> "open" -> "closed"

    def _driver(self) -> Any:
        if self._state == "closed":
            raise exc.CursorClosedError("Cursor is closed")
        try:
            return self._conn._driver()
        except exc.ConnectionClosedError as gone:
            raise exc.CursorClosedError("Underlying connection is returned to the pool") from gone

    async def start(self) -> None:
        """``DECLARE`` the cursor (begin a transaction first if none is open)."""
        if self._state != "new":
            raise exc.CursorStartError("Cursor is already started" if self._state == "open"
                                       else "Cursor is closed")
        if self.querystring is None:
            raise exc.CursorStartError("the cursor has no querystring")
        if self._conn._work:
            await self._conn._settle()
        con = self._driver()
        query, args = _args(self.querystring, self.parameters)
        try:
            if not con.is_in_transaction():
                await con.execute("BEGIN")
                self._own_tx = True
            await con.execute(f'DECLARE "{self._name}" NO SCROLL CURSOR FOR {query}', *args)
        except Exception as error:
            if self._own_tx:
                await _quietly(con.execute("ROLLBACK"))
                self._own_tx = False
            raise CursorQueryError(f"Cannot start cursor, error - {error}") from error
        self._state = "open"

    async def execute(self, querystring: str, parameters: Any = None) -> QueryResult:
        """Start the cursor on ``querystring`` and fetch its first ``array_size`` rows."""
        self.querystring, self.parameters = querystring, parameters
        await self.start()
        return await self.fetchmany()

    async def _fetch(self, how_many: str) -> QueryResult:
        if self._state != "open":
            raise exc.CursorClosedError("Cursor is not started" if self._state == "new"
                                        else "Cursor is closed")
        con = self._driver()
        try:
            rows = await con.fetch(f'FETCH {how_many} FROM "{self._name}"')
        except Exception as error:
            raise exc.CursorFetchError(f"Cannot fetch from cursor, error - {error}") from error
        return QueryResult(rows)

    async def fetchone(self) -> QueryResult:
        """The next row (in a :class:`QueryResult` of one row, or none at the end)."""
        return await self._fetch("1")

    async def fetchmany(self, size: int | None = None) -> QueryResult:
        """The next ``size`` rows (default ``array_size``)."""
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ValueError(f"size must be a positive int, not {size!r}")
        return await self._fetch(str(size or self.array_size))

    async def fetchall(self, size: int | None = None) -> QueryResult:
        """Every row left."""
        return await self._fetch("ALL")

    def close(self) -> None:
        """Close the cursor (psqlpy's ``close`` is not awaited).

        The ``CLOSE`` round trip runs in the background; the connection's next
        query, or its return to the pool, waits for it.
        """
        if self._state == "closed":
            return
        was_open, self._state = self._state == "open", "closed"
        conn = self._conn
        if not was_open or conn._lease is None:
            return
        conn._work.append(asyncio.ensure_future(self._close(conn._lease)))

    async def _close(self, con: Any) -> None:
        try:
            if self._own_tx:
                await con.execute("COMMIT")  # also closes the cursor
            else:
                await con.execute(f'CLOSE "{self._name}"')
        except Exception as error:
            raise exc.CursorCloseError(f"Cannot close cursor, error - {error}") from error

    def is_closed(self) -> bool:
        return self._state == "closed"

    async def __aenter__(self) -> Cursor:
        if self._state == "new":
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self._conn._settle()

    def __aiter__(self) -> Cursor:
        return self

    async def __anext__(self) -> QueryResult:
        chunk = await self.fetchmany()
        if not chunk._rows:
            raise StopAsyncIteration
        return chunk


async def _quietly(aw: Awaitable[Any]) -> None:
    with contextlib.suppress(Exception):
        await aw

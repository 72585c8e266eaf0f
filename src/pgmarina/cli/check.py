"""``pgmarina check DSN``: can this DSN serve a pool, host by host?

For each host of the DSN (``postgresql://u@h1:5432,h2:5433/db`` or
``host=h1,h2 port=5432,5433``), it connects on its own (libpq's
``target_session_attrs`` and ``load_balance_hosts`` are set aside: every
host is asked) and reports:

* whether it answers, the connect time and the round trip of ``SELECT 1``;
* the server version, and its role: *primary*, or *standby* when
  ``pg_is_in_recovery()``; a primary whose sessions start read-only
  (``default_transaction_read_only``) is reported as such;
* ``max_connections``, the connections reserved for superusers and the
  client connections open now;
* whether the connection uses TLS (libpq's view, which is the client's);
* whether a connection pooler sits in between.

Pooler detection is a heuristic, and the report says which clue it found.
A pooler hands the client a cancel key of its own at login, so the backend
process id libpq was given differs from ``pg_backend_pid()`` on the server.
That tells a pooler apart from a direct connection, not PgBouncer from
another pooler; PgBouncer itself is named only when its admin console (the
``pgbouncer`` database) answers ``SHOW VERSION`` for this user.

The exit code is 0 when at least one host can serve a read-write pool
(reachable, primary, not read-only, a free connection slot), 1 when none
can, 2 when the DSN cannot be read.  Passwords are never printed: hosts are
shown as ``user@host:port/db`` and errors are scrubbed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from .._redact import describe_error, redact, scrub

__all__ = ["HostReport", "add_check_arguments", "check_host", "run_check", "split_hosts"]

#: libpq parameters that choose among hosts: each host is checked on its own.
_HOST_CHOICE = ("target_session_attrs", "load_balance_hosts")


def split_hosts(dsn: str) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """The ``(host, port)`` pairs of a DSN, and its other parameters.

    libpq reads the DSN (URI or ``key=value``), so quoting, percent-encoding
    and ``[::1]`` work as they do for a connect; a single port applies to
    every host.  An empty host is libpq's default (``PGHOST`` or the local
    socket).

    Raises:
        ValueError: the DSN cannot be read, or gives as many ports as hosts
            neither.  The message carries no password.
    """
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError as exc:
        raise ValueError(f"dsn: {redact(scrub(str(exc), dsn, {}))}") from None
    hosts = str(params.pop("host", "") or "").split(",")
    ports = str(params.pop("port", "") or "").split(",")
    params.pop("hostaddr", None)
    for key in _HOST_CHOICE:
        params.pop(key, None)
    if len(ports) == 1:
        ports *= len(hosts)
    if len(ports) != len(hosts):
        raise ValueError(f"dsn: {len(ports)} ports for {len(hosts)} hosts")
    return [(h, p or "5432") for h, p in zip(hosts, ports, strict=True)], params


@dataclass
class HostReport:
    """What ``pgmarina check`` found about one host."""

    target: str  #: ``user@host:port/db``, no password
    reachable: bool = False
    error: str | None = None
    connect_ms: float | None = None
    rtt_ms: float | None = None
    version: str | None = None
    role: str | None = None  #: "primary" or "standby"
    read_only: bool | None = None  #: sessions start read-only
    max_connections: int | None = None
    reserved_connections: int | None = None
    connections_used: int | None = None
    tls: bool | None = None  #: libpq's view: this client's connection
    tls_protocol: str | None = None
    pooler: str | None = None  #: None: none detected; else what was found

    @property
    def free_slots(self) -> int | None:
        if self.max_connections is None or self.connections_used is None:
            return None
        return self.max_connections - (self.reserved_connections or 0) - self.connections_used

    @property
    def read_write(self) -> bool:
        """Whether this host can serve a read-write pool now."""
        free = self.free_slots
        return (self.reachable and self.role == "primary" and self.read_only is False
                and (free is None or free > 0))

    def problems(self) -> list[str]:
        if not self.reachable:
            return [f"unreachable: {self.error}"]
        out = []
        if self.role == "standby":
            out.append("a standby (in recovery): read-only")
        if self.read_only:
            out.append("sessions are read-only (default_transaction_read_only)")
        free = self.free_slots
        if free is not None and free <= 0:
            out.append("no free connection slot")
        if self.error:
            out.append(self.error)
        return out


_FACTS = """
SELECT current_setting('server_version'),
       pg_is_in_recovery(),
       current_setting('transaction_read_only'),
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
       pg_backend_pid(),
       (SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid())
"""


def _mask(text: str, params: dict[str, Any]) -> str:
    """A connect error's text with the password blanked wherever it shows.

    The DSN was read, so its password is known, and hosts and ports stay
    readable (:func:`~pgmarina._redact.scrub` would blank every word of the
    DSN, which a malformed one needs, but a parsed one does not).
    """
    password = str(params.get("password") or "")
    if password:
        text = text.replace(password, "***")
    return redact(text)


def _target(params: dict[str, Any], host: str, port: str) -> str:
    user = params.get("user") or ""
    db = params.get("dbname") or ""
    where = f"[{host}]" if ":" in host else (host or "(default)")
    return f"{user + '@' if user else ''}{where}:{port}{'/' + db if db else ''}"


def check_host(
    params: dict[str, Any], host: str, port: str, timeout: float
) -> HostReport:
    """Connect to one host and fill in a :class:`HostReport` (never raises)."""
    import psycopg

    report = HostReport(_target(params, host, port))
    kwargs = dict(params, port=port, connect_timeout=max(2, int(timeout + 0.999)),
                  application_name="pgmarina check", autocommit=True)
    if host:
        kwargs["host"] = host
    t0 = time.perf_counter()
    try:
        conn = psycopg.connect(**kwargs)
    except Exception as exc:
        report.error = _mask(describe_error(exc), params)
        return report
    report.connect_ms = (time.perf_counter() - t0) * 1000
    report.reachable = True
    try:
        pgconn = conn.pgconn
        report.tls = bool(pgconn.ssl_in_use)
        trips = []
        for _ in range(3):
            t = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            trips.append((time.perf_counter() - t) * 1000)
        report.rtt_ms = statistics.median(trips)
        row = conn.execute(_FACTS).fetchone()
        assert row is not None
        version, recovery, read_only, max_conn, reserved, used, server_pid, tls = row
        report.version = str(version)
        report.role = "standby" if recovery else "primary"
        report.read_only = read_only == "on"
        report.max_connections, report.reserved_connections = int(max_conn), int(reserved)
        report.connections_used = int(used)
        if conn.info.backend_pid != server_pid:
            report.pooler = _name_pooler(kwargs, conn.info.backend_pid, server_pid)
        elif report.tls:
            # The server's view of the same connection (with a pooler in
            # between, it would describe the pooler's connection instead).
            report.tls_protocol = tls
    except Exception as exc:
        report.error = f"query failed: {_mask(describe_error(exc), params)}"
    finally:
        conn.close()
    return report


def _name_pooler(kwargs: dict[str, Any], login_pid: int, server_pid: int) -> str:
    """A pooler is there; ask PgBouncer's admin console whether it is PgBouncer."""
    import psycopg

    clue = f"the backend pid given at login ({login_pid}) is not the server's ({server_pid})"
    try:
        with psycopg.connect(**dict(kwargs, dbname="pgbouncer")) as admin:
            # The admin console speaks only the simple query protocol.
            result = admin.pgconn.exec_(b"SHOW VERSION")
            value = result.get_value(0, 0) if result.ntuples else None
    except Exception:
        return f"a pooler, maybe PgBouncer ({clue}; its admin console did not answer)"
    text = value.decode() if value else "PgBouncer"
    return f"{text} ({clue}; confirmed by SHOW VERSION)"


def _rows(reports: list[HostReport]) -> list[list[str]]:
    rows = []
    for r in reports:
        if not r.reachable:
            rows.append([r.target, "no (see below)", "", "", "", "", ""])
            continue
        conns = ""
        if r.max_connections is not None:
            conns = f"{r.connections_used}/{r.max_connections}"
            if r.reserved_connections:
                conns += f" ({r.reserved_connections} reserved)"
        role = r.role or "?"
        if r.read_only and r.role == "primary":
            role += " (read-only sessions)"
        tls = ("yes" + (f" ({r.tls_protocol})" if r.tls_protocol else "")) if r.tls else "no"
        rows.append([
            r.target,
            f"yes: {r.connect_ms:.1f} ms, SELECT 1 {r.rtt_ms or 0:.2f} ms",
            r.version or "?", role, conns, tls, r.pooler or "none detected",
        ])
    return rows


def _verdict(reports: list[HostReport]) -> tuple[bool, str]:
    good = [r.target for r in reports if r.read_write]
    if good:
        return True, f"read-write pool: yes, on {', '.join(good)}"
    why = "; ".join(f"{r.target}: {', '.join(r.problems()) or 'unknown'}" for r in reports)
    return False, f"read-write pool: NO ({why})"


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dsn", metavar="DSN",
                        help="a libpq connection string or URI; several hosts are allowed")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="connect timeout per host, in seconds (default 5)")
    parser.add_argument("--json", action="store_true",
                        help="print the reports as JSON instead of a table")


def run_check(args: argparse.Namespace) -> int:
    """Run ``pgmarina check``; returns the exit code (0 ok, 1 cannot serve, 2 bad DSN)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        print("pgmarina check needs psycopg: pip install 'pgmarina[psycopg]'", file=sys.stderr)
        return 2
    if not args.timeout > 0:
        print(f"--timeout must be > 0 seconds, got {args.timeout!r}", file=sys.stderr)
        return 2
    try:
        hosts, params = split_hosts(args.dsn)
    except ValueError as exc:
        print(f"pgmarina check: {exc}", file=sys.stderr)
        return 2
    from rich.console import Console

    err = Console(stderr=True)
    status = (err.status(f"checking {len(hosts)} host(s)…") if err.is_terminal
              else contextlib.nullcontext())
    with status, ThreadPoolExecutor(max(1, min(8, len(hosts)))) as workers:
        reports = list(workers.map(
            lambda hp: check_host(params, hp[0], hp[1], args.timeout), hosts
        ))
    ok, verdict = _verdict(reports)
    if args.json:
        out = {"read_write": ok, "verdict": verdict,
               "hosts": [dict(asdict(r), read_write=r.read_write) for r in reports]}
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0 if ok else 1
    from rich.table import Table
    from rich.text import Text

    table = Table(title="pgmarina check")
    table.add_column("host", no_wrap=True)
    table.add_column("reachable: connect, round trip", no_wrap=True)
    for col in ("version", "role", "connections", "TLS", "pooler"):
        table.add_column(col, overflow="fold")
    for row in _rows(reports):
        table.add_row(*(Text(cell) for cell in row))  # Text: no markup, no :emoji:
    console = Console(width=max(140, Console().width), emoji=False, highlight=False)
    console.print(table)
    for r in reports:
        if r.error:
            console.print(Text(f"{r.target}: {r.error}"))
    console.print(Text(verdict, style="green" if ok else "bold red"))
    return 0 if ok else 1

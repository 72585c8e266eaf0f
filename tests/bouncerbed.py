"""A real PgBouncer in transaction pooling mode, in front of a test server.

The test bed's PostgreSQL side lives in :mod:`pgbed`; this is its PgBouncer side, for the
Scale-out issue's "tested PgBouncer mode".  :class:`Bouncer` writes a config and an auth
file into a directory of its own, starts ``pgbouncer`` on a free loopback port (as the same
unprivileged user the clusters run as, since PgBouncer refuses to run as root), waits until
it accepts connections, and stops it on :meth:`Bouncer.stop`.

The bouncer is set up to show what transaction pooling does to sessions: few server
connections (``server_pool_size``) shared by many clients, handed to a client for one
transaction at a time.  PgBouncer 1.18 (Debian's) does not track prepared statements, so a
named statement prepared in one transaction is missing (or, under another client's same name,
already there) when the next transaction runs on another server connection.

Clients are trusted (``auth_type = trust``); PgBouncer still wants the user in its
``auth_file``, and logs into the server with the password written there (the server's, if
it has one: the test bed's clusters trust loopback connections and have none).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pgbed

__all__ = ["PGBOUNCER", "Bouncer", "find_pgbouncer"]

#: Where Debian's package puts it; ``$PATH`` is searched too.
PGBOUNCER = "/usr/sbin/pgbouncer"


def find_pgbouncer() -> str | None:
    """The ``pgbouncer`` executable, or ``None`` when it is not installed."""
    if os.access(PGBOUNCER, os.X_OK):
        return PGBOUNCER
    return shutil.which("pgbouncer")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((pgbed.HOST, 0))
        port: int = s.getsockname()[1]
    return port


class Bouncer:
    """One PgBouncer process in front of ``server``, in ``pool_mode = transaction``.

    Args:
        server: The PostgreSQL server behind it (trust authentication).
        server_pool_size: Server connections per user and database: few, so that clients
            share them and a client's next transaction often runs on another one.
        max_client_conn: Client connections PgBouncer accepts.
        pool_mode: PgBouncer's ``pool_mode`` (``"session"`` to leave sessions whole).
        admin: Make the server's user an admin of the bouncer's console (database
            ``pgbouncer``), where ``SHOW VERSION`` and the like answer.
    """

    def __init__(
        self, server: Any, *, server_pool_size: int = 4, max_client_conn: int = 400,
        pool_mode: str = "transaction", admin: bool = False,
    ) -> None:
        exe = find_pgbouncer()
        if exe is None:
            raise pgbed.PgBedError("pgbouncer is not installed (apt-get install pgbouncer)")
        self._exe = exe
        self.server = server
        self.host = pgbed.HOST
        self.port = 0
        self._run_as = pgbed._run_as()
        self._dir = Path(tempfile.mkdtemp(prefix="pgmarina-bouncer-"))
        os.chmod(self._dir, 0o755)
        self._run_as.chown(self._dir)
        self._pool_size = server_pool_size
        self._max_client_conn = max_client_conn
        self._pool_mode = pool_mode
        self._admin = admin
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """The DSN clients use: the server's user and database, the bouncer's address."""
        return f"postgresql://{self.server.user}@{self.host}:{self.port}/{self.server.dbname}"

    @property
    def log_path(self) -> Path:
        return self._dir / "pgbouncer.log"

    def _write_files(self) -> Path:
        users = self._dir / "userlist.txt"
        password = (self.server.password or "").replace('"', '""')
        users.write_text(f'"{self.server.user}" "{password}"\n')
        users.chmod(0o600)
        ini = self._dir / "pgbouncer.ini"
        admin = f"admin_users = {self.server.user}\n" if self._admin else ""
        ini.write_text(
            "[databases]\n"
            f"* = host={self.server.host} port={self.server.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {self.host}\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            f"pool_mode = {self._pool_mode}\n"
            f"{admin}"
            f"default_pool_size = {self._pool_size}\n"
            f"max_client_conn = {self._max_client_conn}\n"
            f"logfile = {self.log_path}\n"
            f"pidfile = {self._dir / 'pgbouncer.pid'}\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
            "server_check_delay = 0\n"
        )
        for path in (users, ini):
            self._run_as.chown(path)
        return ini

    def start(self, timeout: float = 15.0) -> Bouncer:
        """Start PgBouncer and wait until it accepts connections.

        Raises:
            PgBedError: it exited, or did not listen within ``timeout`` seconds.
        """
        for _ in range(5):  # another process may take the port between pick and bind
            self.port = _free_port()
            ini = self._write_files()
            self._proc = subprocess.Popen(
                [self._exe, str(ini)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=str(self._dir),
                env=pgbed._server_env(),
                start_new_session=True,
                **self._run_as.popen_kwargs(),
            )
            if self._wait_listening(timeout):
                return self
            log = self._log_tail()
            self.stop()
            if "Address already in use" not in log:
                raise pgbed.PgBedError(f"pgbouncer did not start:\n{log}")
        raise pgbed.PgBedError("pgbouncer found no free port")

    def _wait_listening(self, timeout: float) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(
                (self.host, self.port), timeout=1.0
            ):
                return True
            time.sleep(0.02)
        return False

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop PgBouncer (if running) and remove its directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10.0)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<Bouncer {self.host}:{self.port} -> {self.server!r} pool_mode=transaction>"

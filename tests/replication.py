"""A real primary and a streaming standby, for the multi-host tests.

The primary is a throwaway :class:`~pgbed.Cluster` with replication turned on;
the standby is made from it with ``pg_basebackup -R -X stream`` (run as the
server's own user, as every cluster here is) and started on a port of its
own.  :func:`promote` runs ``pg_ctl promote`` and returns once the standby
accepts writes.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from typing import Any

import pgbed
from pgbed import Cluster, PgBedError

#: What the primary needs for a standby to stream from it (the bed's clusters
#: have ``wal_level=minimal`` and no WAL senders).
PRIMARY_SETTINGS: dict[str, object] = {
    "wal_level": "replica",
    "max_wal_senders": 4,
    "hot_standby": "on",
    "max_connections": 60,
}


class Standby(Cluster):
    """A cluster made by ``pg_basebackup -R -X stream`` from ``primary``."""

    def __init__(self, primary: Cluster, settings: Mapping[str, object] | None = None) -> None:
        super().__init__(settings, install=primary._install)
        self.primary = primary

    def _materialize(self) -> None:
        ws = pgbed._get_workspace(self._install)
        directory = ws.next_dir()
        data = directory / "data"
        cmd = [
            ws.install.exe("pg_basebackup"), "-D", str(data), "-R", "-X", "stream",
            "-h", self.primary.host, "-p", str(self.primary.port), "-U", pgbed.SUPERUSER,
            "-c", "fast", "--no-sync",
        ]  # fmt: skip
        result = subprocess.run(
            cmd, capture_output=True, text=True, cwd=str(directory), env=pgbed._server_env(),
            check=False, timeout=60, **ws.run_as.popen_kwargs(),
        )  # fmt: skip
        if result.returncode != 0:
            raise PgBedError(f"pg_basebackup failed ({result.returncode}):\n{result.stderr}")
        self._ws, self._dir = ws, directory
        self._write_cluster_conf()  # its own port and socket, over the primary's copy

    def promote(self) -> float:
        """``pg_ctl promote`` (which waits until it is done); returns the seconds it took."""
        assert self._ws is not None
        t0 = time.perf_counter()
        result = subprocess.run(
            [self._ws.install.exe("pg_ctl"), "promote", "-w", "-D", str(self.data_dir)],
            capture_output=True, text=True, env=pgbed._server_env(), check=False, timeout=60,
            **self._ws.run_as.popen_kwargs(),
        )  # fmt: skip
        if result.returncode != 0:
            raise PgBedError(f"pg_ctl promote failed ({result.returncode}):\n{result.stderr}")
        return time.perf_counter() - t0


def start_pair(make_private_pg: Any) -> tuple[Cluster, Standby]:
    """A started primary (from ``make_private_pg``) and a started, streaming standby."""
    primary = make_private_pg(PRIMARY_SETTINGS)
    standby = Standby(primary, PRIMARY_SETTINGS)
    try:
        standby.start()
    except BaseException:
        standby.destroy()
        raise
    return primary, standby

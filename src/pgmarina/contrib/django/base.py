"""Django's PostgreSQL backend with pgmarina's pool in place of psycopg_pool's.

Django (5.1 and newer) pools connections when ``OPTIONS["pool"]`` is set:
its backend builds a ``psycopg_pool.ConnectionPool`` once per database alias,
keeps it in a class-level dict, and takes connections from it with
``getconn()`` and gives them back with ``conn._pool.putconn(conn)``.  This
backend changes one thing: the ``pool`` property builds pgmarina's
psycopg_pool façade (:class:`pgmarina.compat.psycopg_pool.ConnectionPool`)
instead.  The connections handed out are the same ``psycopg.Connection``
objects, so the rest of Django's backend (cursors, time zones, roles,
isolation levels, transactions, introspection, schema editing) runs
unchanged, and Django still sees ``vendor == "postgresql"``.

Usage::

    DATABASES = {
        "default": {
            "ENGINE": "pgmarina.contrib.django",
            "NAME": "app",
            "OPTIONS": {"pool": {"min_size": 2, "max_size": 10, "timeout": 5}},
        }
    }

Fork safety
-----------
The pools live in a class attribute, so a process forked after a pool was
opened (gunicorn with ``--preload``, multiprocessing's fork, Django's
parallel test runner) inherits it: the same sockets, open in two processes.
Right after a fork, the child forgets every inherited pool and every
inherited pooled connection of the thread that forked, without touching
them (a close would say goodbye to the server on the parent's socket), and
builds a pool of its own on first use.  The parent's connections stay the
parent's.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base as _postgresql

from ...compat.psycopg_pool import ConnectionPool

__all__ = ["DatabaseWrapper"]

# The pool arguments this backend sets itself, and why they can't be given.
_OWN_ARGUMENTS = {
    "kwargs": "it is made from NAME, USER, PASSWORD, HOST, PORT and OPTIONS",
    "open": "Django opens the pool when it first connects",
    "configure": "Django configures each new connection itself",
    "check": "set CONN_HEALTH_CHECKS instead",
}


class DatabaseWrapper(_postgresql.DatabaseWrapper):  # type: ignore[misc]  # Django is untyped
    """Django's PostgreSQL ``DatabaseWrapper``, taking connections from pgmarina."""

    # One pool per alias, shared by the threads of this process; separate
    # from the stock backend's dict, which belongs to psycopg_pool's pools.
    _connection_pools: ClassVar[dict[str, ConnectionPool[Any]]] = {}

    @property
    def pool(self) -> ConnectionPool[Any] | None:
        """This alias's pool, built on first use from ``OPTIONS["pool"]``; ``None`` if unset.

        ``OPTIONS["pool"]`` is ``True`` (the defaults) or a dict of
        :class:`~pgmarina.compat.psycopg_pool.ConnectionPool` arguments,
        such as ``min_size``, ``max_size``, ``timeout``, ``max_idle``,
        ``max_lifetime``, ``name``.

        Raises:
            ImproperlyConfigured: ``CONN_MAX_AGE`` is not 0 (Django keeps
                no connection of its own when pooling), or ``OPTIONS["pool"]``
                is not ``True`` or a dict, or names an argument this
                backend sets itself.
        """
        options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not options:
            return None
        pools = self._connection_pools
        pool = pools.get(self.alias)
        if pool is not None:
            return pool
        if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
            raise ImproperlyConfigured(
                f"DATABASES[{self.alias!r}]: OPTIONS['pool'] and CONN_MAX_AGE="
                f"{self.settings_dict['CONN_MAX_AGE']!r} don't mix: the pool keeps the "
                "connections, so set CONN_MAX_AGE to 0 (the default)"
            )
        if options is True:
            options = {}
        if not isinstance(options, dict):
            raise ImproperlyConfigured(
                f"DATABASES[{self.alias!r}]['OPTIONS']['pool'] must be True or a dict of "
                f"pool arguments, not {type(options).__name__}"
            )
        clash = sorted(options.keys() & _OWN_ARGUMENTS.keys())
        if clash:
            raise ImproperlyConfigured(
                f"DATABASES[{self.alias!r}]['OPTIONS']['pool'] cannot set {clash[0]!r}: "
                f"{_OWN_ARGUMENTS[clash[0]]}"
            )
        kwargs = self.get_connection_params()
        kwargs["autocommit"] = True  # as Django's own pool: Django sets it per connection
        options = {"name": f"django-{self.alias}", **options}
        built = ConnectionPool(
            kwargs=kwargs,
            open=False,  # Django opens it at the first connect
            configure=self._configure_connection,
            check=ConnectionPool.check_connection
            if self.settings_dict["CONN_HEALTH_CHECKS"]
            else None,
            **options,
        )
        # Threads racing here each build one (unopened, so nothing to undo):
        # the first one stored is everyone's.
        return pools.setdefault(self.alias, built)


def _after_fork_in_child() -> None:
    """Forget, without touching them, the pools and pooled connections inherited from the
    parent: their sockets are the parent's (see the module's docstring)."""
    inherited = list(DatabaseWrapper._connection_pools.values())
    DatabaseWrapper._connection_pools.clear()
    if not inherited:
        return
    # Only the thread that forked exists in the child: its Django connections
    # are the only ones the child can reach.
    from django.db import connections

    for wrapper in connections.all(initialized_only=True):
        conn = getattr(wrapper, "connection", None)
        if conn is not None and any(getattr(conn, "_pool", None) is p for p in inherited):
            # Django's next query connects again, from the child's own pool,
            # and starts with a clean transaction state.
            wrapper.connection = None


os.register_at_fork(after_in_child=_after_fork_in_child)

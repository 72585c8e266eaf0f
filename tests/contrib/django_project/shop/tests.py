"""The project's suite, run by Django's test runner on ``pgmarina.contrib.django``.

Every test runs against the real server of the pytest session (see
``tests/contrib/test_django_backend.py``); ``PGM_DJ_EXPECT_TESTS`` there
counts the tests below.
"""

from __future__ import annotations

import atexit
import gc
import json
import multiprocessing
import os
import time
import warnings
from typing import Any

import psycopg
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, OperationalError, connection, connections, transaction
from django.db.models import F, Sum
from django.test import TestCase, TransactionTestCase

from pgmarina.compat.psycopg_pool import ConnectionPool, PoolTimeout
from pgmarina.contrib.django.base import DatabaseWrapper

from .models import Item


def backend_pid(alias: str = "default") -> int:
    """The server process behind the calling thread's connection of ``alias``."""
    wrapper = connections[alias]
    wrapper.ensure_connection()
    return int(wrapper.connection.info.backend_pid)


def admin_connection() -> psycopg.Connection[Any]:
    """A connection of the test's own, outside Django and its pool."""
    s = connection.settings_dict
    return psycopg.connect(
        host=s["HOST"],
        port=s["PORT"],
        user=s["USER"],
        password=s["PASSWORD"] or None,
        dbname=s["NAME"],
        autocommit=True,
    )


def fork_quietly() -> int:
    # The pool's threads run in this process: Python 3.12+ warns that a fork
    # with threads may deadlock. Only this thread's state is used in the child.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


class EngineTests(TestCase):
    def test_connections_are_psycopg_connections_lent_by_a_pgmarina_pool(self) -> None:
        self.assertEqual(connection.vendor, "postgresql")
        self.assertIsInstance(connections["default"], DatabaseWrapper)
        pool = connection.pool
        self.assertIsInstance(pool, ConnectionPool)
        connection.ensure_connection()
        self.assertIsInstance(connection.connection, psycopg.Connection)
        self.assertIs(connection.connection._pool, pool)
        self.assertEqual(pool.name, "django-default")
        self.assertEqual(pool.get_stats()["pool_max"], 4)

    def test_orm_reads_and_writes(self) -> None:
        Item.objects.create(name="apple", quantity=3)
        Item.objects.bulk_create([Item(name="pear", quantity=2), Item(name="plum", quantity=5)])
        self.assertEqual(Item.objects.count(), 3)
        Item.objects.filter(name__startswith="p").update(quantity=F("quantity") + 10)
        self.assertEqual(
            list(Item.objects.values_list("name", "quantity")),
            [("apple", 3), ("pear", 12), ("plum", 15)],
        )
        self.assertEqual(Item.objects.aggregate(total=Sum("quantity"))["total"], 30)
        Item.objects.get(name="pear").delete()
        self.assertFalse(Item.objects.filter(name="pear").exists())
        # USE_TZ with TIME_ZONE set: the connection's time zone was configured.
        added = Item.objects.get(name="apple").added
        self.assertIsNotNone(added.tzinfo)


class TransactionTests(TransactionTestCase):
    def test_nested_atomic_blocks_commit_together_and_a_failing_inner_one_rolls_back_alone(
        self,
    ) -> None:
        with transaction.atomic():
            Item.objects.create(name="outer")
            with transaction.atomic():
                Item.objects.create(name="inner")
            try:
                with transaction.atomic():
                    Item.objects.create(name="doomed")
                    Item.objects.create(name="outer")  # unique name: IntegrityError
            except IntegrityError:
                pass
            Item.objects.create(name="after")
        self.assertEqual(
            list(Item.objects.values_list("name", flat=True)), ["after", "inner", "outer"]
        )
        # Committed for real: another session sees it.
        with admin_connection() as other:
            seen = other.execute("SELECT count(*) FROM shop_item").fetchone()
        self.assertEqual(seen, (3,))

    def test_a_failing_atomic_block_leaves_nothing_behind(self) -> None:
        with self.assertRaises(ZeroDivisionError), transaction.atomic():
            Item.objects.create(name="ghost")
            with transaction.atomic():
                Item.objects.create(name="ghost-inner")
            1 / 0  # noqa: B018
        self.assertEqual(Item.objects.count(), 0)
        self.assertTrue(connection.get_autocommit())

    def test_on_commit_runs_after_the_commit_and_never_after_a_rollback(self) -> None:
        ran: list[str] = []
        with transaction.atomic():
            Item.objects.create(name="kept")
            transaction.on_commit(lambda: ran.append("kept"))
            self.assertEqual(ran, [])
        self.assertEqual(ran, ["kept"])
        with self.assertRaises(RuntimeError), transaction.atomic():
            transaction.on_commit(lambda: ran.append("dropped"))
            raise RuntimeError("roll back")
        self.assertEqual(ran, ["kept"])


class PoolTests(TransactionTestCase):
    databases = {"default", "tight"}

    def tearDown(self) -> None:
        # "tight" mirrors "default": Django closes the pool of the alias whose
        # test database it drops, not a mirror's, whose connections would
        # keep that database busy.
        connections["tight"].close()
        connections["tight"].close_pool()
        super().tearDown()

    def test_health_checks_replace_connections_whose_backends_were_terminated(self) -> None:
        before = backend_pid()
        connection.close()  # back to the pool, idle
        with admin_connection() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'pgm-default'"
            )
            for _ in range(100):  # until the server has seen them all go
                left = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = 'pgm-default'"
                ).fetchone()
                if left == (0,):
                    break
                time.sleep(0.05)
        # At once (before the pool's own idle ping would be due): the
        # CONN_HEALTH_CHECKS check finds the dead ones and serves a live one.
        self.assertEqual(Item.objects.count(), 0)
        self.assertNotEqual(backend_pid(), before)

    def test_a_pool_timeout_is_djangos_operational_error(self) -> None:
        tight = connections["tight"]
        pool = tight.pool
        pool.open()
        held = pool.getconn()  # the only connection "tight" may have
        try:
            start = time.monotonic()
            with self.assertRaises(OperationalError) as caught:
                tight.ensure_connection()
            waited = time.monotonic() - start
        finally:
            pool.putconn(held)
        self.assertIsInstance(caught.exception.__cause__, PoolTimeout)
        self.assertGreaterEqual(waited, 0.4)
        # And the alias works again once the connection is back.
        self.assertEqual(Item.objects.using("tight").count(), 0)

    def test_closing_the_pool_with_a_connection_out_closes_it_when_given_back(self) -> None:
        # Django does this when settings change (time zone) and around test databases.
        connection.ensure_connection()
        lent = connection.connection
        old = connection.pool
        connection.close_pool()
        self.assertTrue(old.closed)
        connection.close()  # putconn into the closed pool: no error
        self.assertTrue(lent.closed)
        self.assertEqual(Item.objects.count(), 0)
        self.assertIsNot(connection.pool, old)

    def test_conn_max_age_with_a_pool_is_refused(self) -> None:
        wrapper = DatabaseWrapper({**connection.settings_dict, "CONN_MAX_AGE": 60}, "conflict")
        with self.assertRaisesRegex(ImproperlyConfigured, "CONN_MAX_AGE"):
            _ = wrapper.pool
        self.assertNotIn("conflict", DatabaseWrapper._connection_pools)

    def test_pool_arguments_the_backend_sets_itself_are_refused(self) -> None:
        settings = {**connection.settings_dict, "OPTIONS": {"pool": {"check": None}}}
        wrapper = DatabaseWrapper(settings, "clash")
        with self.assertRaisesRegex(ImproperlyConfigured, "'check'.*CONN_HEALTH_CHECKS"):
            _ = wrapper.pool
        settings = {**connection.settings_dict, "OPTIONS": {"pool": 5}}
        with self.assertRaisesRegex(ImproperlyConfigured, "True or a dict"):
            _ = DatabaseWrapper(settings, "clash").pool


def _worker_view(_task: int) -> tuple[int, int, int]:
    """In a multiprocessing worker: what the ORM sees, and through which server process."""
    count = Item.objects.count()
    return count, backend_pid(), os.getpid()


class ForkTests(TransactionTestCase):
    def test_a_forked_worker_uses_a_pool_of_its_own_and_leaves_the_parents_connection_alone(
        self,
    ) -> None:
        Item.objects.create(name="parent")
        parent_backend = backend_pid()  # lent to this thread, and inherited by the child
        parent_pool = connection.pool
        read_end, write_end = os.pipe()
        child = fork_quietly()
        if child == 0:  # pragma: no cover - the child's report is checked below
            code = 1
            try:
                os.close(read_end)
                report: dict[str, Any] = {"inherited_dropped": connection.connection is None}
                report["count"] = Item.objects.count()
                Item.objects.create(name="child")
                report["backend"] = backend_pid()
                report["own_pool"] = connection.pool is not parent_pool
                # Collect the inherited pool and its connections here: that
                # must not touch the parent's sockets either.
                del parent_pool
                gc.collect()
                report["after_collect"] = Item.objects.count()
                connection.close()
                connection.close_pool()
                # What a normal exit runs (a gunicorn worker's sys.exit):
                # finalizers of pools never closed, the inherited one's too.
                atexit._run_exitfuncs()
                code = 0
            except BaseException as exc:
                report = {"error": repr(exc)}
            finally:
                os.write(write_end, json.dumps(report).encode())
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            report = json.loads(pipe.read() or b"{}")
        _, status = os.waitpid(child, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0, report)
        self.assertEqual(
            report,
            {"inherited_dropped": True, "count": 1, "backend": report["backend"],
             "own_pool": True, "after_collect": 2},
        )
        self.assertNotEqual(report["backend"], parent_backend)
        # The parent's connection is still its own, and still works.
        self.assertEqual(connection.connection.info.backend_pid, parent_backend)
        self.assertEqual(list(Item.objects.values_list("name", flat=True)), ["child", "parent"])
        self.assertIs(connection.pool, parent_pool)

    def test_multiprocessing_fork_workers_each_connect_through_a_pool_of_their_own(
        self,
    ) -> None:
        if multiprocessing.current_process().daemon:
            self.skipTest("a worker of Django's parallel runner may not have children")
        Item.objects.create(name="shared")
        parent_backend = backend_pid()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with multiprocessing.get_context("fork").Pool(2) as workers:
                results = workers.map(_worker_view, range(4), chunksize=1)
        self.assertEqual({count for count, _, _ in results}, {1})
        self.assertNotIn(parent_backend, {backend for _, backend, _ in results})
        # One server process per worker process: each pool is its own.
        by_worker: dict[int, set[int]] = {}
        for _, backend, worker in results:
            by_worker.setdefault(worker, set()).add(backend)
        self.assertTrue(all(len(backends) == 1 for backends in by_worker.values()))
        self.assertEqual(backend_pid(), parent_backend)
        self.assertEqual(Item.objects.count(), 1)


class AsyncViewTests(TransactionTestCase):
    async def test_an_async_view_uses_the_orm_through_sync_to_async(self) -> None:
        await sync_to_async(Item.objects.create)(name="first")
        response = await self.async_client.get("/items/add/second/")
        self.assertEqual(response.status_code, 200)
        response = await self.async_client.get("/items/")
        self.assertEqual(response.status_code, 200)
        body = response.json()
        self.assertEqual(body["names"], ["first", "second"])
        self.assertEqual(body["count"], 2)
        self.assertIsInstance(body["backend"], int)

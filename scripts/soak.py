"""A bounded soak: every driver x shell pair under mixed load while random faults strike.

    python scripts/soak.py --seconds 60 [--seed 1] [--json report.json]

One throwaway cluster (pgbed, as the tests use) sits behind a fault proxy
(tests/faultproxy.py).  Four pools, one per pair (asyncpg and psycopg on AsyncPool,
psycopg and psycopg2 on the thread Pool), reach it through the proxy and serve a mixed
load: plain queries, transactions left open, failed statements, short and long holds,
impatient acquires.  Meanwhile a fault strikes every second or two, at random: every
connection reset, latency, a blackhole, the server refusing connections, backends
terminated, the server restarted.

When the time is up the faults stop and the script checks what the fault suite checks:

* every operation ended, in success or in an error that is counted by kind (nothing lost);
* every pool settles back with nothing lent out, and ``size == idle``;
* the server holds exactly the pools' sessions, none idle in a transaction; after the pools
  close, none at all (leaked connections: must be 0);
* each pool's ``acquires`` equals the operations that got a connection (plus, at most, the
  connections found dead as they were handed out, which are counted and then replaced);
* RSS stays flat: growth from the end of the warm-up to the end of the run at most
  ``--max-rss-growth`` MiB (default 20).  Why 20: the process holds four pools of at most
  five connections, so its steady state does not grow with the number of operations; a
  leak of one small object per operation (a few hundred thousand operations a minute) would
  add tens of MiB, while the allocator's noise and the drivers' caches stay within a few.

Exit status 0 when every invariant holds, 1 otherwise; the report goes to stdout (and, with
``--json``, to a file).  Loopback only; bounded in time; it stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # faultproxy lives with the tests

import psycopg  # noqa: E402

from faultproxy import FaultProxy  # noqa: E402
from pgmarina import AsyncPool, Pool, PoolConnectError, PoolTimeout  # noqa: E402
from pgmarina.contrib.embedded import Cluster  # noqa: E402

PAIRS = [("asyncpg", AsyncPool), ("psycopg", AsyncPool), ("psycopg", Pool), ("psycopg2", Pool)]
WORKERS = 6  # per pool: tasks for AsyncPool, threads for Pool
SETTINGS: dict[str, Any] = {
    "min_size": 2, "max_size": 5, "timeout": 2.0, "check_window": 0.5, "connect_timeout": 2,
    "reset_timeout": 1.0, "max_lifetime": 8.0, "max_idle": 2.0, "housekeeping_interval": 0.2,
    "fail_fast_after": 1.0, "backoff_max": 0.2, "keepalive": 1.0,
}  # fmt: skip


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Tally:
    """Operations started and ended per pool, and how each ended (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: Counter[str] = Counter()
        self.leased: Counter[str] = Counter()
        self.ended: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.unexpected: list[str] = []  # errors that are neither the pool's nor a driver's

    def start(self, pool: str) -> None:
        with self.lock:
            self.started[pool] += 1

    def lease(self, pool: str) -> None:
        with self.lock:
            self.leased[pool] += 1

    def end(self, pool: str, error: BaseException | None) -> None:
        kind = "ok" if error is None else type(error).__name__
        with self.lock:
            self.ended[pool] += 1
            self.kinds[kind] += 1
            if error is not None and not _expected(error):
                self.unexpected.append(f"{pool}: {error!r}")


def _expected(error: BaseException) -> bool:
    """The pool's own errors about connections, or a driver's (or the network's) about a
    connection a fault broke under its borrower."""
    if isinstance(error, (PoolTimeout, PoolConnectError, OSError)):
        return True
    return type(error).__module__.split(".")[0] in {"asyncpg", "psycopg", "psycopg2"}


# ------------------------------------------------------------------------------------------
# the load


def _choose(rng: random.Random) -> tuple[str, float]:
    """What an operation does, and the acquire timeout it uses."""
    op = rng.choices(
        ["select", "open_tx", "fail", "hold", "sleep"], weights=[60, 10, 10, 10, 10]
    )[0]
    timeout = 0.05 if rng.random() < 0.1 else 2.0
    return op, timeout


async def async_worker(
    name: str, pool: AsyncPool, driver: str, tally: Tally, stop: asyncio.Event, seed: int
) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        op, timeout = _choose(rng)
        tally.start(name)
        error: BaseException | None = None
        try:
            async with pool.connection(timeout=timeout) as conn:
                tally.lease(name)
                if driver == "asyncpg":
                    if op == "open_tx":
                        await conn.execute("BEGIN")
                        await conn.execute("SELECT 1")
                    elif op == "fail":
                        with contextlib.suppress(Exception):
                            await conn.execute("SELECT 1/0")
                    elif op == "sleep":
                        await conn.execute("SELECT pg_sleep(0.02)")
                    else:
                        await conn.fetchval("SELECT 1")
                else:
                    if op == "fail":
                        with contextlib.suppress(psycopg.errors.DivisionByZero):
                            await conn.execute("SELECT 1/0")
                    elif op == "sleep":
                        await conn.execute("SELECT pg_sleep(0.02)")
                    else:
                        await conn.execute("SELECT 1")
                if op == "hold":
                    await asyncio.sleep(rng.uniform(0.005, 0.05))
        except Exception as exc:
            error = exc
        tally.end(name, error)
        await asyncio.sleep(rng.uniform(0, 0.01))


def thread_worker(
    name: str, pool: Pool, driver: str, tally: Tally, stop: threading.Event, seed: int
) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        op, timeout = _choose(rng)
        tally.start(name)
        error: BaseException | None = None
        try:
            with pool.connection(timeout=timeout) as conn:
                tally.lease(name)
                cur = conn.cursor()
                try:
                    if op == "fail":
                        with contextlib.suppress(Exception):
                            cur.execute("SELECT 1/0")
                    elif op == "sleep":
                        cur.execute("SELECT pg_sleep(0.02)")
                    else:
                        cur.execute("SELECT 1")
                finally:
                    cur.close()
                if op == "hold":
                    time.sleep(rng.uniform(0.005, 0.05))
        except Exception as exc:
            error = exc
        tally.end(name, error)
        time.sleep(rng.uniform(0, 0.01))


# ------------------------------------------------------------------------------------------
# the faults


class Faults:
    def __init__(self, cluster: Cluster, proxy: FaultProxy, apps: list[str], seed: int) -> None:
        self.cluster = cluster
        self.proxy = proxy
        self.apps = apps
        self.rng = random.Random(seed)
        self.struck: Counter[str] = Counter()

    def strike(self) -> None:
        kind = self.rng.choices(
            ["reset", "delay", "blackhole", "refuse", "terminate", "restart"],
            weights=[25, 20, 15, 15, 20, 5],
        )[0]
        self.struck[kind] += 1
        proxy = self.proxy
        if kind == "reset":
            proxy.reset_all()
        elif kind == "delay":
            proxy.delay(self.rng.uniform(0.05, 0.3))
            time.sleep(self.rng.uniform(0.3, 1.0))
            proxy.pass_through()
        elif kind == "blackhole":
            proxy.blackhole()
            time.sleep(self.rng.uniform(0.2, 1.2))
            proxy.pass_through()
            proxy.reset_all()  # bytes were dropped: those connections are desynchronised
        elif kind == "refuse":
            proxy.stop_accepting()
            time.sleep(self.rng.uniform(0.2, 1.0))
            proxy.start_accepting()
        elif kind == "terminate":
            with psycopg.connect(self.cluster.dsn, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = ANY(%s) AND random() < 0.5",
                    (self.apps,),
                )
        else:
            self.cluster.restart("fast")

    def calm(self) -> None:
        self.proxy.pass_through()
        if not self.proxy.accepting:
            self.proxy.start_accepting()


# ------------------------------------------------------------------------------------------
# the run


def sessions(cluster: Cluster, app: str) -> list[str]:
    with psycopg.connect(cluster.dsn, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT state FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchall()
    return [r[0] for r in rows]


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


async def run(seconds: float, seed: int, warmup: float) -> dict[str, Any]:
    cluster = Cluster({"max_connections": 100}).start()
    proxy = FaultProxy(cluster.host, cluster.port)
    dsn = f"postgresql://{cluster.user}@{proxy.host}:{proxy.port}/{cluster.dbname}"
    pools: dict[str, Any] = {}
    apps: dict[str, str] = {}
    tally = Tally()
    report: dict[str, Any] = {"seconds": seconds, "seed": seed, "problems": []}
    problems: list[str] = report["problems"]
    try:
        for driver, cls in PAIRS:
            name = f"{driver}-{cls.__name__}"
            app = f"soak_{driver}_{cls.__name__}".lower()
            kw = {"server_settings": {"application_name": app}} if driver == "asyncpg" else {
                "application_name": app
            }
            pool = cls(dsn, driver=driver, name=name, **SETTINGS, **kw)
            if isinstance(pool, AsyncPool):
                await pool.open(wait=True)
            else:
                await asyncio.to_thread(pool.open, wait=True)
            pools[name], apps[name] = pool, app
        faults = Faults(cluster, proxy, list(apps.values()), seed)
        stop_async = asyncio.Event()
        stop_threads = threading.Event()
        tasks = []
        threads = []
        for i, (name, pool) in enumerate(pools.items()):
            for w in range(WORKERS):
                wseed = seed * 1000 + i * 100 + w
                if isinstance(pool, AsyncPool):
                    tasks.append(asyncio.create_task(async_worker(
                        name, pool, pool.driver, tally, stop_async, wseed)))
                else:
                    t = threading.Thread(
                        target=thread_worker, name=f"soak {name} {w}", daemon=True,
                        args=(name, pool, pool.driver, tally, stop_threads, wseed),
                    )
                    t.start()
                    threads.append(t)
        t0 = time.monotonic()
        rss_start = rss_mib()
        rss_warm: float | None = None
        while time.monotonic() - t0 < seconds:
            if rss_warm is None and time.monotonic() - t0 >= warmup:
                gc.collect()
                rss_warm = rss_mib()
            await asyncio.sleep(faults.rng.uniform(0.5, 2.0))
            if time.monotonic() - t0 < seconds - 2:  # the last seconds are calm
                await asyncio.to_thread(faults.strike)
        await asyncio.to_thread(faults.calm)
        stop_async.set()
        stop_threads.set()
        await asyncio.gather(*tasks)
        for t in threads:
            await asyncio.to_thread(t.join, 30)
            if t.is_alive():
                problems.append(f"{t.name} did not stop")
        gc.collect()
        rss_end = rss_mib()
        report["struck"] = dict(faults.struck)
        report["ops"] = sum(tally.ended.values())
        report["ops_per_second"] = round(report["ops"] / seconds)
        report["outcomes"] = dict(tally.kinds.most_common())
        report["rss_mib"] = {
            "start": round(rss_start, 1),
            "after_warmup": round(rss_warm or rss_start, 1),
            "end": round(rss_end, 1),
            "growth": round(rss_end - (rss_warm or rss_start), 1),
        }
        # -- invariants
        problems += tally.unexpected[:10]
        for name in pools:
            if tally.started[name] != tally.ended[name]:
                problems.append(f"{name}: {tally.started[name] - tally.ended[name]} ops lost")
        per_pool = {}
        for name, pool in pools.items():

            def settled(pool: Any = pool) -> bool:
                s = pool.stats()
                return (
                    s.in_use == 0 and s.waiting == 0 and s.connecting == 0
                    and s.size == s.idle >= pool.min_size
                    and s.connections_opened - s.connections_closed == s.size
                )  # fmt: skip

            ok = await asyncio.to_thread(wait_until, settled, 15)
            s = pool.stats()
            if not ok:
                problems.append(f"{name} did not settle: {s}")

            def server_agrees(app: str = apps[name], pool: Any = pool) -> bool:
                states = sessions(cluster, app)
                return len(states) == pool.stats().size and all(st == "idle" for st in states)

            if not await asyncio.to_thread(wait_until, server_agrees, 10):
                problems.append(
                    f"{name}: server sessions {sessions(cluster, apps[name])} "
                    f"vs pool size {pool.stats().size}"
                )
            # A connection handed to a caller and only then found dead is counted as an
            # acquire and discarded (the caller is served by another): so acquires may
            # exceed the leases callers got by at most the connections lost.
            if not tally.leased[name] <= s.acquires <= tally.leased[name] + s.connections_lost:
                problems.append(
                    f"{name}: acquires {s.acquires}, leased {tally.leased[name]}, "
                    f"lost {s.connections_lost}"
                )
            per_pool[name] = {
                "ops": tally.ended[name], "acquires": s.acquires, "opened": s.connections_opened,
                "lost": s.connections_lost, "failed_connects": s.connections_failed,
                "timeouts": s.timeouts, "resets": s.resets, "size": s.size,
            }  # fmt: skip
        report["pools"] = per_pool
    finally:
        for pool in pools.values():
            try:
                if isinstance(pool, AsyncPool):
                    await pool.close(timeout=5)
                else:
                    await asyncio.to_thread(pool.close, 5)
            except Exception as exc:
                problems.append(f"closing {pool.name}: {exc!r}")
        leaked = 0
        with contextlib.suppress(Exception):
            for app in apps.values():
                await asyncio.to_thread(wait_until, lambda app=app: not sessions(cluster, app), 10)
                leaked += len(sessions(cluster, app))
        leaked += sum(p.stats().size for p in pools.values())
        report["leaked_connections"] = leaked
        proxy.close()
        cluster.destroy()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long (default 60)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds before the RSS baseline (default: a fifth of the run)")
    parser.add_argument("--max-rss-growth", type=float, default=20.0,
                        help="MiB the RSS may grow after the warm-up (default 20)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    warmup = args.warmup if args.warmup is not None else args.seconds / 5
    report = asyncio.run(run(args.seconds, args.seed, warmup))
    problems = report["problems"]
    if report["leaked_connections"]:
        problems.append(f"{report['leaked_connections']} leaked connections")
    growth = report.get("rss_mib", {}).get("growth", 0.0)
    if growth > args.max_rss_growth:
        problems.append(f"RSS grew {growth} MiB after the warm-up (max {args.max_rss_growth})")
    report["ok"] = not problems
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print("soak: OK" if report["ok"] else f"soak: FAILED: {'; '.join(problems)}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

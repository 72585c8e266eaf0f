"""Benchmark: pgmarina's thread Pool against the raw driver and the peer pools.

One cycle is: acquire a connection, run ``SELECT 1``, fetch the row, release
it.  ``threads`` threads run cycles for ``--seconds``; contenders take turns
in rounds, in a fresh random order each round, and every ratio is taken
within a round (see ``_rounds.py``).

Contenders (driver psycopg):
  raw           one dedicated psycopg connection per thread
  psycopg_pool  psycopg_pool.ConnectionPool(min_size=size, max_size=size)
  marina        pgmarina.Pool(driver="psycopg") with its default settings
  bw=W          the same with barge_window=W, for each W of --barge (0: strict FIFO)
  fifo-floor    a bare strict-FIFO pool (one lock, an idle list, a deque of parked threads,
                no timeouts or anything else): what any strict FIFO hand-off costs here
  facade        pgmarina.compat.psycopg_pool.ConnectionPool: psycopg_pool's API on marina
                (its ratio to marina is the façade's cost)

Contenders (driver psycopg2):
  raw           one dedicated psycopg2 connection per thread
  threaded      psycopg2.pool.ThreadedConnectionPool, bounded by a semaphore
                (it raises instead of waiting when exhausted)
  marina        pgmarina.Pool(driver="psycopg2") with its default settings
  bw=W          the same with barge_window=W, for each W of --barge
  fifo-floor    the bare strict-FIFO pool, as above

Beside the speed, each line shows how evenly the threads were served: the
median over rounds of (fewest cycles of one thread) / (most cycles of one
thread).  1.0 is perfectly even; near 0 means some threads starved.

All connections run in autocommit, so every contender does exactly one
round trip per cycle.

Usage:
  python bench/bench_sync.py [--driver psycopg|psycopg2] [--dsn DSN]
                             [--threads 1,10,50] [--size 10] [--seconds 1] [--rounds 7]
                             [--barge 0,0.05]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pgmarina
from _rounds import orders, parse_args, report, run_threads
from pgmarina.contrib import embedded

Cycle = Callable[[], None]


class BareFifo:
    """The least a strict FIFO hand-off can do: the measuring stick for ``marina``.

    A returned connection goes straight to the thread that has waited longest, which
    then has to be woken: the cost that barging avoids.
    """

    def __init__(self, conns: list[Any]) -> None:
        self.conns = conns
        self.idle = list(conns)
        self.lock = threading.Lock()
        self.waiters: collections.deque[list[Any]] = collections.deque()

    def get(self) -> Any:
        with self.lock:
            if self.idle and not self.waiters:
                return self.idle.pop()
            gate = threading.Lock()
            gate.acquire()
            box = [gate, None]
            self.waiters.append(box)
        gate.acquire()
        return box[1]

    def put(self, conn: Any) -> None:
        with self.lock:
            if self.waiters:
                box = self.waiters.popleft()
                box[1] = conn
                box[0].release()
            else:
                self.idle.append(conn)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        conn = self.get()
        try:
            yield conn
        finally:
            self.put(conn)


def _marinas(
    dsn: str, size: int, windows: list[float], **kwargs: object
) -> dict[str, pgmarina.Pool]:
    """pgmarina with its defaults, and with each barge window of ``windows``."""
    pools = {"marina": pgmarina.Pool(dsn, min_size=size, max_size=size, **kwargs)}
    for window in windows:
        pools[f"bw={window:g}"] = pgmarina.Pool(
            dsn, min_size=size, max_size=size, barge_window=window, **kwargs
        )
    for pool in pools.values():
        pool.open(wait=True)
    return pools


@contextlib.contextmanager
def psycopg_contenders(
    dsn: str, threads: int, size: int, windows: list[float]
) -> Iterator[dict[str, Callable[[int], Cycle]]]:
    import psycopg
    import psycopg_pool

    raws = [psycopg.connect(dsn, autocommit=True) for _ in range(threads)]
    peer = psycopg_pool.ConnectionPool(
        dsn, min_size=size, max_size=size, kwargs={"autocommit": True}, open=False
    )
    peer.open(wait=True)
    marinas = _marinas(dsn, size, windows, driver="psycopg", autocommit=True)
    floor = BareFifo([psycopg.connect(dsn, autocommit=True) for _ in range(size)])
    from pgmarina.compat.psycopg_pool import ConnectionPool as Facade

    facade = Facade(dsn, min_size=size, max_size=size, kwargs={"autocommit": True}, open=False)
    facade.open(wait=True)

    def raw(i: int) -> Cycle:
        conn = raws[i]

        def cycle() -> None:
            conn.execute("SELECT 1").fetchone()

        return cycle

    def pooled(pool: Any) -> Callable[[int], Cycle]:
        def make(i: int) -> Cycle:
            def cycle() -> None:
                with pool.connection() as conn:
                    conn.execute("SELECT 1").fetchone()

            return cycle

        return make

    try:
        yield {"raw": raw, "psycopg_pool": pooled(peer), "fifo-floor": pooled(floor)} | {
            name: pooled(pool) for name, pool in marinas.items()
        } | {"facade": pooled(facade)}
    finally:
        for pool in marinas.values():
            pool.close()
        facade.close()
        peer.close()
        for c in raws + floor.conns:
            c.close()


@contextlib.contextmanager
def psycopg2_contenders(
    dsn: str, threads: int, size: int, windows: list[float]
) -> Iterator[dict[str, Callable[[int], Cycle]]]:
    import psycopg2
    import psycopg2.pool

    def autocommit(conn: Any) -> None:
        conn.autocommit = True

    raws = [psycopg2.connect(dsn) for _ in range(threads)]
    peer = psycopg2.pool.ThreadedConnectionPool(size, size, dsn)
    conns = [peer.getconn() for _ in range(size)]
    for conn in [*raws, *conns]:
        autocommit(conn)
    for conn in conns:
        peer.putconn(conn)
    gate = threading.BoundedSemaphore(size)
    marinas = _marinas(dsn, size, windows, driver="psycopg2", configure=autocommit)
    floor = BareFifo([psycopg2.connect(dsn) for _ in range(size)])
    for conn in floor.conns:
        autocommit(conn)

    def raw(i: int) -> Cycle:
        cur = raws[i].cursor()

        def cycle() -> None:
            cur.execute("SELECT 1")
            cur.fetchone()

        return cycle

    def peer_cycle(i: int) -> Cycle:
        def cycle() -> None:
            with gate:
                conn = peer.getconn()
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                        cur.fetchone()
                finally:
                    peer.putconn(conn)

        return cycle

    def pooled(pool: Any) -> Callable[[int], Cycle]:
        def make(i: int) -> Cycle:
            def cycle() -> None:
                with pool.connection() as conn, conn.cursor() as cur:
                    cur.execute("SELECT 1")
                    cur.fetchone()

            return cycle

        return make

    try:
        yield {"raw": raw, "threaded": peer_cycle, "fifo-floor": pooled(floor)} | {
            name: pooled(pool) for name, pool in marinas.items()
        }
    finally:
        for pool in marinas.values():
            pool.close()
        peer.closeall()
        for c in raws + floor.conns:
            c.close()


def bench(args: argparse.Namespace, dsn: str) -> None:
    make = psycopg_contenders if args.driver == "psycopg" else psycopg2_contenders
    peer = "psycopg_pool" if args.driver == "psycopg" else "threaded"
    print(f"driver={args.driver} size={args.size} seconds={args.seconds} rounds={args.rounds}")
    for threads in args.threads:
        with make(dsn, threads, args.size, args.barge) as contenders:
            results: dict[str, list[float]] = {name: [] for name in contenders}
            evenness: dict[str, list[float]] = {name: [] for name in contenders}
            for factory in contenders.values():  # warm-up
                run_threads(factory, threads, 0.3)
            for order in orders(list(contenders), args.rounds):
                for name in order:
                    ops, even = run_threads(contenders[name], threads, args.seconds)
                    results[name].append(ops)
                    evenness[name].append(even)
        bases = ["raw", peer, "marina"] if args.driver == "psycopg" else ["raw", peer]
        report(f"threads={threads}", results, bases, evenness)


def main() -> None:
    parser = parse_args((__doc__ or "").splitlines()[0], "threads", [1, 10, 50])
    parser.add_argument("--driver", choices=["psycopg", "psycopg2"], default="psycopg")
    parser.add_argument("--dsn")
    parser.add_argument("--barge", type=lambda s: [float(x) for x in s.split(",") if x],
                        default=[0.0, 0.05], help="barge windows to run besides the default")
    args = parser.parse_args()
    if args.dsn:
        bench(args, args.dsn)
        return
    cluster = embedded.Cluster()
    cluster.start()
    try:
        bench(args, cluster.dsn)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()

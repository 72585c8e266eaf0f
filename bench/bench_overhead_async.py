"""Benchmark: AsyncPool's own cost per cycle, with no server at all.

A "query" here is one trip through the event loop (``await asyncio.sleep(0)``), so what is
left is the pool's acquire, hand-off and release, plus the loop.  The lean pool
(``LeanPool``: an idle list and a deque of waiter futures, nothing else) runs the same cycle
in the same rounds: the difference between the two is what pgmarina's features cost on the
waiting path.  Many tasks on few connections is the case that matters (``--conc 100``).

Usage:
  python bench/bench_overhead_async.py [--conc 1,10,100] [--size 10] [--seconds 1]
                                       [--rounds 7] [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
from collections.abc import Awaitable, Callable, Mapping
from operator import attrgetter
from typing import Any

import pgmarina
from _rounds import orders, parse_args, report, run_tasks, same, use_loop
from pgmarina import Lease
from pgmarina._lease import forward
from pgmarina.adapters import CLEAN, AsyncAdapter

Cycle = Callable[[], Awaitable[None]]


class _Conn:
    __slots__ = ()
    status = CLEAN

    async def query(self) -> None:
        await asyncio.sleep(0)


class _NullLease(Lease):
    __slots__ = ()


forward(_NullLease, "query")  # as the real drivers' leases forward their hot methods


class NullAdapter(AsyncAdapter):
    """A driver whose connections cost nothing and are always clean."""

    name = "null"
    lease_class = _NullLease
    quick_status = staticmethod(attrgetter("status"))  # type: ignore[assignment]

    async def connect(self, dsn: str | None, kwargs: Mapping[str, Any]) -> Any:
        return _Conn()

    def is_closed(self, conn: Any) -> bool:
        return False

    def status(self, conn: Any) -> int:
        return CLEAN

    def terminate(self, conn: Any) -> None:
        pass

    async def close(self, conn: Any, timeout: float) -> None:
        pass


class LeanPool:
    """The measuring stick: idle list, FIFO deque of futures, no timeouts, no checks."""

    def __init__(self, size: int) -> None:
        self.idle = [_Conn() for _ in range(size)]
        self.waiters: collections.deque[asyncio.Future[_Conn]] = collections.deque()

    async def acquire(self) -> _Conn:
        if self.idle and not self.waiters:
            return self.idle.pop()
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        return await fut

    def release(self, conn: _Conn) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        self.idle.append(conn)


def _contenders(lean: LeanPool, pool: pgmarina.AsyncPool) -> dict[str, Cycle]:
    async def lean_cycle() -> None:
        conn = await lean.acquire()
        try:
            await conn.query()
        finally:
            lean.release(conn)

    async def marina_cycle() -> None:
        async with pool.connection() as conn:
            await conn.query()

    async def acquire_cycle() -> None:
        async with pool.acquire() as conn:
            await conn.query()

    return {"lean": lean_cycle, "marina": marina_cycle, "acquire": acquire_cycle}


async def bench(args: argparse.Namespace) -> None:
    print(f"loop={args.loop} size={args.size} seconds={args.seconds} rounds={args.rounds}")
    for conc in args.conc:
        pool = pgmarina.AsyncPool(driver=NullAdapter(), min_size=args.size, max_size=args.size)
        await pool.open(wait=True)
        contenders = _contenders(LeanPool(args.size), pool)
        results: dict[str, list[float]] = {name: [] for name in contenders}
        for cycle in contenders.values():
            await run_tasks(same(cycle), conc, 0.2)
        for order in orders(list(contenders), args.rounds):
            for name in order:
                results[name].append(
                    await run_tasks(same(contenders[name]), conc, args.seconds)
                )
        await pool.close()
        report(f"conc={conc}", results, ["lean"])


def main() -> None:
    parser = parse_args((__doc__ or "").splitlines()[0], "conc", [1, 10, 100], loop=True)
    args = parser.parse_args()
    use_loop(args)
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()

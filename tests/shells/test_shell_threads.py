"""Pool (threads): many threads at once on a small pool."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from fakes import FakeSyncAdapter
from harness import QUIET

from pgmarina import Pool, PoolTimeout, unwrap


@pytest.mark.parametrize("barge_window", [0.0, 0.01, float("inf")])
def test_twenty_threads_sharing_four_connections_never_lose_or_share_one(
    barge_window: float,
) -> None:
    fake = FakeSyncAdapter()
    pool = Pool(
        driver=fake,
        **{**QUIET, "min_size": 0, "max_size": 4, "timeout": 10, "barge_window": barge_window},
    )
    pool.open()
    errors: list[BaseException] = []
    holders: dict[int, int] = {}  # raw connection id -> thread ident holding it
    holders_lock = threading.Lock()
    start = threading.Barrier(20)

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        me = threading.get_ident()
        try:
            start.wait()
            for _ in range(200):
                lease = pool.acquire()
                raw = unwrap(lease)
                with holders_lock:
                    assert raw.id not in holders, f"{raw!r} leased twice at once"
                    holders[raw.id] = me
                r = rnd.random()
                if r < 0.1:
                    lease.begin()  # released in a transaction: rolled back
                elif r < 0.12:
                    lease.start_query()  # released busy: settled
                if rnd.random() < 0.5:
                    time.sleep(rnd.random() * 0.0005)
                with holders_lock:
                    del holders[raw.id]
                pool.release(lease)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert not any(t.is_alive() for t in threads), "workers hung"
        assert errors == []
        s = pool.stats()
        assert s.size <= 4
        assert s.in_use == 0
        assert s.waiting == 0
        assert s.acquires == 4000
        assert s.waited_acquires > 0  # the threads did contend
        assert s.timeouts == 0
        assert s.connections_opened <= 4  # rollback and settle kept every connection
        assert fake.count("rollback") + fake.count("settle") == s.resets
    finally:
        pool.close()


def test_a_thread_that_times_out_waiting_leaves_the_queue() -> None:
    fake = FakeSyncAdapter()
    pool = Pool(driver=fake, **{**QUIET, "max_size": 1})
    pool.open(wait=True)
    try:
        held = pool.acquire()
        outcome: list[Any] = []

        def waiter() -> None:
            try:
                outcome.append(pool.acquire(timeout=0.05))
            except PoolTimeout as exc:
                outcome.append(exc)

        t = threading.Thread(target=waiter)
        t.start()
        t.join(5)
        assert len(outcome) == 1 and isinstance(outcome[0], PoolTimeout)
        s = pool.stats()
        assert (s.waiting, s.timeouts, s.in_use) == (0, 1, 1)
        pool.release(held)
        lease = pool.acquire(timeout=0)
        assert unwrap(lease) is fake.connections[0]
        pool.release(lease)
    finally:
        pool.close()


def test_many_threads_timing_out_at_once_leave_no_waiter_behind() -> None:
    fake = FakeSyncAdapter()
    pool = Pool(driver=fake, **{**QUIET, "max_size": 1})
    pool.open(wait=True)
    try:
        held = pool.acquire()
        timeouts: list[BaseException] = []

        def waiter() -> None:
            with pytest.raises(PoolTimeout) as info:
                pool.acquire(timeout=0.05)
            timeouts.append(info.value)

        threads = [threading.Thread(target=waiter) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert len(timeouts) == 10
        assert pool.stats().waiting == 0
        pool.release(held)
        assert pool.stats().idle == 1
    finally:
        pool.close()


def test_the_connection_block_commits_nothing_for_a_plain_adapter_and_returns_the_lease() -> None:
    fake = FakeSyncAdapter()
    pool = Pool(driver=fake, **QUIET)
    pool.open(wait=True)
    try:
        with pool.connection() as conn:
            assert conn.execute("SELECT 1") == "ok: SELECT 1"
        assert conn.released
        with pytest.raises(ZeroDivisionError), pool.connection() as conn:
            conn.begin()
            1 / 0  # noqa: B018
        assert fake.count("rollback") == 1
        assert pool.stats().idle == 1
    finally:
        pool.close()


# ---------------------------------------------------------------------------
# barging (barge_window > 0)


def _churn(pool: Pool, stop: threading.Event, counts: list[int], i: int) -> None:
    while not stop.is_set():
        lease = pool.acquire()
        time.sleep(0.0002)
        pool.release(lease)
        counts[i] += 1


def test_with_a_barge_window_every_thread_is_still_served() -> None:
    pool = Pool(driver=FakeSyncAdapter(), **{**QUIET, "min_size": 2, "max_size": 2,
                                             "barge_window": 0.02, "timeout": 5})
    pool.open(wait=True)
    stop = threading.Event()
    counts = [0] * 12
    threads = [threading.Thread(target=_churn, args=(pool, stop, counts, i)) for i in range(12)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(10)
        assert not any(t.is_alive() for t in threads), "workers hung"
        # Nobody starves: past 20 ms of waiting, hand-off is strict FIFO.
        assert min(counts) > 0, counts
        s = pool.stats()
        assert (s.in_use, s.waiting, s.timeouts) == (0, 0, 0)
        assert s.acquires == sum(counts)
        assert s.idle == 2
    finally:
        stop.set()
        pool.close()


def test_an_unbounded_barge_window_can_starve_a_waiter_until_its_timeout() -> None:
    # The honest cost of barging: with no bound, a thread that keeps taking the
    # connection back can starve a waiter.  The waiter must still leave
    # cleanly with PoolTimeout, and the nudges it got must not be lost.
    pool = Pool(driver=FakeSyncAdapter(), **{**QUIET, "min_size": 1, "max_size": 1,
                                             "barge_window": float("inf"), "timeout": 5})
    pool.open(wait=True)
    stop = threading.Event()
    counts = [0]
    hog = threading.Thread(target=_churn, args=(pool, stop, counts, 0))
    hog.start()
    try:
        time.sleep(0.05)
        outcomes: list[Any] = []
        for _ in range(3):
            try:
                pool.release(pool.acquire(timeout=0.3))
                outcomes.append("served")
            except PoolTimeout:
                outcomes.append("timeout")
        stop.set()
        hog.join(5)
        s = pool.stats()
        assert s.waiting == 0 and s.in_use == 0 and s.idle == 1
        assert s.timeouts == outcomes.count("timeout")
        assert counts[0] > 0
        # Whoever won each race, the pool still serves at once afterwards.
        pool.release(pool.acquire(timeout=1))
    finally:
        stop.set()
        hog.join(5)
        pool.close()


def test_the_async_pool_refuses_a_barge_window_naming_it() -> None:
    from pgmarina import AsyncPool

    with pytest.raises(ValueError, match="barge_window"):
        AsyncPool(driver="asyncpg", barge_window=0.1)


class _SlowGate:
    """A waiter's gate whose thread takes 0.2 s to get going once it opens."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got:
            time.sleep(0.2)
        return got

    def release(self) -> None:
        self._lock.release()


def test_a_nudged_waiter_that_comes_too_late_still_carries_out_the_pools_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # W1 is nudged for an idle connection but comes for it only after the
    # connection expired and its own deadline passed.  Coming for it retired
    # the connection and asked for a replacement: that work must run before
    # W1's PoolTimeout is raised, or W2 waits with nobody connecting for it.
    import pgmarina.shells.threaded as threaded

    plain_init = threaded._Waiter.__init__

    def init(self: Any, start: float) -> None:
        plain_init(self, start)
        if threading.current_thread().name == "W1":
            self.gate = _SlowGate()

    monkeypatch.setattr(threaded._Waiter, "__init__", init)
    pool = Pool(driver=FakeSyncAdapter(), **{**QUIET, "min_size": 1, "max_size": 1,
                                             "barge_window": 10.0, "max_lifetime": 0.3,
                                             "lifetime_jitter": 0.0, "timeout": 5,
                                             "housekeeping_interval": 10.0})
    pool.open(wait=True)
    results: dict[str, str] = {}

    def wait_for_one(name: str, timeout: float) -> None:
        try:
            pool.release(pool.acquire(timeout=timeout))
            results[name] = "served"
        except PoolTimeout:
            results[name] = "timeout"

    try:
        held = pool.acquire()
        w1 = threading.Thread(target=wait_for_one, args=("W1", 0.25), name="W1")
        w1.start()
        time.sleep(0.01)
        w2 = threading.Thread(target=wait_for_one, args=("W2", 2.0), name="W2")
        w2.start()
        time.sleep(0.19)
        pool.release(held)  # not yet expired: goes idle, W1 is nudged
        w1.join(5)
        w2.join(5)
        assert results == {"W1": "timeout", "W2": "served"}
        s = pool.stats()
        assert (s.timeouts, s.connections_opened, s.connections_closed) == (1, 2, 1)
    finally:
        pool.close()

"""The thread Pool under contention: its own default barge window, and a wait that is
interrupted (Hot path under contention issue, thread half).

Strict FIFO wakes a parked thread for every connection handed over; the thread
``Pool`` therefore defaults to a short ``barge_window`` (``AsyncPool``, whose
hand-off wakes no thread, stays strict FIFO).  Each shell shows its own default
in its signature, and it is the one a pool made without the keyword gets.
"""

from __future__ import annotations

import inspect
import threading
import time
from typing import Any

import pytest
from fakes import FakeSyncAdapter
from harness import QUIET

from pgmarina import AsyncPool, Pool
from pgmarina.shells import threaded
from pgmarina.shells._common import PoolBase, with_defaults
from pgmarina.shells.threaded import BARGE_WINDOW


def test_the_thread_pool_barges_by_default_and_its_signature_says_so() -> None:
    default = inspect.signature(Pool).parameters["barge_window"].default
    assert default == BARGE_WINDOW > 0
    assert Pool(driver=FakeSyncAdapter())._config.barge_window == BARGE_WINDOW
    assert Pool(driver=FakeSyncAdapter(), barge_window=0)._config.barge_window == 0.0


def test_the_async_pool_stays_strict_fifo_by_default_and_its_signature_says_so() -> None:
    assert inspect.signature(AsyncPool).parameters["barge_window"].default == 0.0
    assert AsyncPool(driver="asyncpg")._config.barge_window == 0.0


def test_a_shells_own_defaults_leave_every_other_default_as_the_shared_constructor_has_it() -> (
    None
):
    shared = inspect.signature(PoolBase.__init__).parameters
    own = inspect.signature(Pool.__init__).parameters
    assert list(own) == list(shared)
    differ = [name for name in shared if own[name].default != shared[name].default]
    assert differ == ["barge_window"]


def test_with_defaults_refuses_a_keyword_the_constructor_does_not_take() -> None:
    with pytest.raises(TypeError, match="barge_windw"):
        with_defaults(PoolBase.__init__, barge_windw=0.1)


def test_with_its_defaults_fifty_threads_on_ten_connections_are_all_served() -> None:
    """The default trades evenness for throughput, within bounds: nobody starves."""
    pool = Pool(driver=FakeSyncAdapter(), **{**QUIET, "min_size": 10, "max_size": 10,
                                             "timeout": 10})
    pool.open(wait=True)
    stop = threading.Event()
    counts = [0] * 50
    errors: list[BaseException] = []

    def churn(i: int) -> None:
        try:
            while not stop.is_set():
                with pool.connection():
                    time.sleep(0.0001)
                counts[i] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(50)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.6)
        stop.set()
        for t in threads:
            t.join(10)
        assert not any(t.is_alive() for t in threads), "workers hung"
        assert errors == []
        assert min(counts) > 0, counts
        s = pool.stats()
        assert (s.in_use, s.waiting, s.idle, s.timeouts) == (0, 0, 10, 0)
        assert s.acquires == sum(counts)
        assert s.waited_acquires > 0  # they did contend
    finally:
        stop.set()
        pool.close()


def test_with_a_barge_window_a_fresh_connection_reaches_its_waiter_unchecked() -> None:
    """Regression: with a window the fresh connection went idle, the waiter was only
    nudged, and met it as an idle one: ``check_window=0`` pinged a brand-new connection."""
    fake = FakeSyncAdapter()
    pool = Pool(driver=fake, **{**QUIET, "min_size": 0, "max_size": 1, "check_window": 0,
                                "barge_window": 0.02})
    pool.open()
    try:
        with pool.connection():
            pass
        assert fake.count("ping") == 0
        assert fake.count("connect") == 1
    finally:
        pool.close()


class _Interrupt(BaseException):
    """Stands for KeyboardInterrupt raised in a thread parked in ``acquire``."""


def _gates_that_raise(monkeypatch: pytest.MonkeyPatch, *, after_hand_off: bool) -> None:
    """Make each parked waiter's wait raise, before or just after it is handed a connection."""

    class Gate:
        def __init__(self, lock: Any) -> None:
            self._lock = lock

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            if after_hand_off:
                assert self._lock.acquire(True, 10), "never handed a connection"
            raise _Interrupt

        def release(self) -> None:
            self._lock.release()

    class Waiter(threaded._Waiter):
        __slots__ = ()

        def __init__(self, start: float) -> None:
            super().__init__(start)
            self.gate = Gate(self.gate)  # type: ignore[assignment]

    monkeypatch.setattr(threaded, "_Waiter", Waiter)


@pytest.mark.parametrize("after_hand_off", [False, True], ids=["while-queued", "just-served"])
def test_a_thread_interrupted_while_parked_leaves_the_queue_and_loses_no_connection(
    monkeypatch: pytest.MonkeyPatch, after_hand_off: bool
) -> None:
    pool = Pool(driver=FakeSyncAdapter(), **{**QUIET, "min_size": 1, "max_size": 1,
                                             "barge_window": 0})
    pool.open(wait=True)
    try:
        held = pool.acquire()
        _gates_that_raise(monkeypatch, after_hand_off=after_hand_off)
        raised: list[BaseException] = []

        def waiter() -> None:
            try:
                pool.acquire(timeout=10)
            except BaseException as exc:
                raised.append(exc)

        thread = threading.Thread(target=waiter)
        thread.start()
        if after_hand_off:
            deadline = time.monotonic() + 5
            while pool.stats().waiting == 0:
                assert time.monotonic() < deadline, "never queued"
                time.sleep(0.001)
            pool.release(held)
        thread.join(10)
        assert [type(e) for e in raised] == [_Interrupt]
        if not after_hand_off:
            pool.release(held)
        s = pool.stats()
        assert (s.waiting, s.in_use, s.idle, s.size) == (0, 0, 1, 1)
        monkeypatch.undo()
        lease = pool.acquire(timeout=0)  # back in the pool, not stranded
        pool.release(lease)
    finally:
        monkeypatch.undo()
        pool.close()

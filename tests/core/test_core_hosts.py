"""Several hosts in the core, on a fake clock: host choice, per-host backoff, roles,
routing of read-write and read-only waiters, and promotions."""

from __future__ import annotations

import heapq
from typing import Any

import pytest

from pgmarina._core import PoolConfig, PoolCore
from pgmarina._core.entry import CLOSING, CONNECTING, IDLE, IN_USE
from pgmarina._core.hosts import READ_ONLY, READ_WRITE, HostBook

H1, H2 = ("h1", 5432), ("h2", 5433)


class Bed:
    """A core over two hosts; waiters are strings, served ones land in ``served``."""

    def __init__(self, target: str = "any", hosts: Any = (H1, H2), **config: Any) -> None:
        config.setdefault("min_size", 0)
        config.setdefault("max_size", 4)
        config.setdefault("backoff_initial", 0.1)
        config.setdefault("backoff_max", 1.0)
        self.book = HostBook(
            list(hosts), target, backoff_initial=config["backoff_initial"],
            backoff_max=config["backoff_max"], rand=lambda: 0.999999,
        )  # fmt: skip
        self.served: dict[str, Any] = {}
        self.core: PoolCore[str] = PoolCore(
            PoolConfig(**config), self._wake, hosts=self.book, rand=lambda: 0.5
        )
        self.core.open(0.0)

    def _wake(self, waiter: str, entry: Any) -> bool:
        self.served[waiter] = entry
        return True

    def host(self, name: str) -> Any:
        return next(h for h in self.book.hosts if h.address == name)

    def connecting(self) -> list[Any]:
        """The entries the core asked to connect (taken out of ``pending``)."""
        work = [e for e in self.core.pending if e.state is CONNECTING]
        self.core.pending = [e for e in self.core.pending if e.state is not CONNECTING]
        return work

    def land(self, entry: Any, standby: bool, now: float) -> bool:
        assert self.core.aim(entry, now) == 0.0
        return self.core.connect_landed(entry, object(), standby, now)


# ---------------------------------------------------------------------------------------------
# the host book


def test_pick_goes_in_order_and_skips_a_host_that_is_down_until_its_backoff_ends() -> None:
    bed = Bed()
    book, h1, h2 = bed.book, bed.host("h1"), bed.host("h2")
    assert book.pick(0.0) is h1
    book.failed(h1, 0.0)
    assert book.pick(0.0) is h2
    assert book.pick(0.0998) is h2  # backoff_initial 0.1 (jitter at its top)
    assert book.pick(0.1) is h1
    book.failed(h1, 0.1)  # the second failure doubles it
    assert book.pick(0.2998) is h2
    assert book.pick(0.3) is h1


def test_when_every_host_is_down_pick_says_not_now_and_wait_says_how_long() -> None:
    bed = Bed()
    book = bed.book
    book.failed(bed.host("h1"), 0.0)
    book.failed(bed.host("h2"), 0.05)
    assert book.pick(0.06) is None
    assert book.wait(0.06) == pytest.approx(0.04, rel=1e-3)
    assert book.pick(0.1) is bed.host("h1")


def test_load_balance_random_spreads_connects_over_the_hosts() -> None:
    values = iter([0.9, 0.1, 0.1, 0.9] * 50)
    book = HostBook([H1, H2], "any", balance=True, rand=lambda: next(values))
    picked = {book.pick(0.0).address for _ in range(20)}  # type: ignore[union-attr]
    assert picked == {"h1", "h2"}


def test_target_session_attrs_outside_libpqs_values_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="target_session_attrs"):
        HostBook([H1], "master")


# ---------------------------------------------------------------------------------------------
# connects and routing


def test_a_dead_host_costs_one_failed_connect_per_backoff_period_not_one_per_caller() -> None:
    bed = Bed(max_size=4, max_connecting=4)
    core = bed.core
    for i in range(4):
        core.enqueue_for(f"c{i}", READ_ONLY, 0.0)
    entries = bed.connecting()
    assert len(entries) == 4
    # Only the first attempt goes to h1 (dead); it fails, and the others go to h2.
    first = entries[0]
    assert core.aim(first, 0.0) == 0.0 and first.host is bed.host("h1")
    core.connect_failed(first, OSError("refused"), 0.0)
    for at, entry in enumerate(entries[1:]):
        assert core.aim(entry, 0.001 + at * 0.03) == 0.0
        assert entry.host is bed.host("h2")
    assert bed.host("h1").connects_failed == 1
    assert not bed.host("h1").down_until <= 0.09  # down for its backoff
    assert bed.book.pick(0.1) is bed.host("h1")  # and tried again after it


def test_a_read_write_waiter_is_never_handed_a_standby_connection() -> None:
    bed = Bed()
    core = bed.core
    core.enqueue_for("writer", READ_WRITE, 0.0)
    (entry,) = bed.connecting()
    entry.host = None
    # Both hosts unknown: the connect goes to h1, which turns out to be a standby.
    assert bed.land(entry, True, 0.0)
    assert "writer" not in bed.served
    assert entry.state is IDLE
    # A reader arriving now takes the standby connection; the writer still waits.
    assert core.checkout_for(READ_ONLY, 0.01) is entry
    assert list(core.waiters) == ["writer"]
    # The next connect for the writer skips the standby and lands on the primary.
    (second,) = bed.connecting()
    assert bed.land(second, False, 0.02)
    assert second.host is bed.host("h2")
    assert bed.served["writer"] is second


def test_a_reader_takes_the_primary_only_when_no_standby_can_be_had() -> None:
    bed = Bed()
    core = bed.core
    core.enqueue_for("w", READ_WRITE, 0.0)
    (entry,) = bed.connecting()
    assert bed.land(entry, False, 0.0)
    core.checkin(bed.served.pop("w"), 0.1)
    # h2's role is not known yet, and it is up: a reader waits for it.
    assert core.checkout_for(READ_ONLY, 0.2) is None
    core.enqueue_for("r", READ_ONLY, 0.2)
    (probe,) = bed.connecting()
    assert core.aim(probe, 0.2) == 0.0 and probe.host is bed.host("h2")
    # h2 is down: now no standby can be had, and the reader gets the primary.
    core.connect_failed(probe, OSError("refused"), 0.3)
    got = bed.served.get("r")
    assert got is entry and got.state is IN_USE


def test_a_role_the_pool_does_not_take_is_refused_and_the_standby_asked_again_after_backoff() -> (
    None
):
    bed = Bed(target="read-write", hosts=(H1,))
    core = bed.core
    core.enqueue("w", 0.0)
    (entry,) = bed.connecting()
    assert not bed.land(entry, True, 0.0)  # a standby: refused, still connecting
    assert entry.state is CONNECTING
    wait = core.aim(entry, 0.0)
    assert wait == pytest.approx(0.1, rel=0.01)  # the recheck backoff
    assert core.aim(entry, 0.1) == 0.0
    assert not bed.land(entry, True, 0.1)
    assert core.aim(entry, 0.1) == pytest.approx(0.2, rel=0.01)  # doubled
    # Promoted meanwhile: the next connect lands and serves the waiter.
    assert bed.land(entry, False, 0.3)
    assert bed.served["w"] is entry
    assert bed.host("h1").role_changes == 1


def test_a_promotion_seen_by_a_ping_hands_that_hosts_connections_to_waiting_writers() -> None:
    bed = Bed(max_size=2)
    core = bed.core
    core.enqueue_for("r", READ_ONLY, 0.0)
    (entry,) = bed.connecting()
    entry.host = None
    assert bed.land(entry, True, 0.0)
    core.checkin(bed.served.pop("r"), 0.1)
    core.enqueue_for("w", READ_WRITE, 0.2)  # only a standby connection: it waits
    assert "w" not in bed.served and len(bed.connecting()) == 1
    # A keepalive ping on some connection to h1 finds it promoted.
    core.role_seen(entry, False, 0.5)
    assert bed.host("h1").role == "primary"
    assert bed.served.get("w") is entry


def test_a_demotion_retires_idle_connections_now_and_leased_ones_when_they_come_back() -> None:
    bed = Bed(target="primary", hosts=(H1,), max_size=2)
    core = bed.core
    core.enqueue("a", 0.0)
    core.enqueue("b", 0.0)
    a, b = bed.connecting()
    assert bed.land(a, False, 0.0) and bed.land(b, False, 0.0)
    core.checkin(bed.served["b"], 0.1)  # b idle, a leased
    core.role_seen(a, True, 0.2)  # h1 is a standby now
    assert b.state is CLOSING
    core.checkin(a, 0.3)
    assert a.state is CLOSING


def test_a_writer_on_a_standby_only_pool_is_refused_at_once() -> None:
    bed = Bed(target="standby")
    with pytest.raises(ValueError, match="none is read-write"):
        bed.core.checkout_for(READ_WRITE, 0.0)


def test_stats_list_each_host_with_its_role_and_connections() -> None:
    bed = Bed()
    core = bed.core
    core.enqueue_for("w", READ_WRITE, 0.0)
    (entry,) = bed.connecting()
    assert bed.land(entry, False, 0.0)
    h1, h2 = core.stats().hosts
    assert (h1.host, h1.role, h1.size, h1.in_use, h1.connects) == ("h1:5432", "primary", 1, 1, 1)
    assert (h2.host, h2.role, h2.size) == ("h2:5433", "unknown", 0)


def test_a_single_host_core_has_no_hosts_and_no_host_stats() -> None:
    core: PoolCore[str] = PoolCore(PoolConfig(min_size=0), lambda w, e: True)
    assert core.hosts is None
    assert core.stats().hosts == ()


def test_a_timeout_on_a_multi_host_pool_says_what_each_host_is() -> None:
    bed = Bed()
    core = bed.core
    core.enqueue_for("w", READ_WRITE, 0.0)
    (entry,) = bed.connecting()
    core.aim(entry, 0.0)
    core.connect_failed(entry, OSError("refused"), 0.0)
    msg = core.timeout_message(3.0)
    assert msg.endswith("; hosts: h1:5432 unknown (down), h2:5433 unknown"), msg


class Driver:
    """The shell's connect loop, played on the fake clock: every connect the core asks for
    is aimed, then fails (a dead host) or lands with the host's role; waits and backoffs
    are honoured.  ``attempts`` counts the connects tried."""

    def __init__(self, bed: Bed) -> None:
        self.bed = bed
        self.todo: list[tuple[float, int, Any, str]] = []
        self.seq = 0
        self.now = 0.0
        self.attempts = 0

    def _push(self, at: float, entry: Any, step: str) -> None:
        self.seq += 1
        heapq.heappush(self.todo, (at, self.seq, entry, step))

    def run(self, until: float, standby_hosts: set[str], dead_hosts: set[str]) -> None:
        bed, core = self.bed, self.bed.core
        for _ in range(100_000):
            for entry in bed.connecting():
                self._push(self.now, entry, "aim")
            for entry in core.pending:
                if entry.state is CLOSING:
                    core.closed(entry)
            core.pending = [e for e in core.pending if e.state is CONNECTING]
            if not self.todo or self.todo[0][0] > until:
                self.now = until
                return
            self.now, _, entry, step = heapq.heappop(self.todo)
            now = self.now
            if entry.state is not CONNECTING:
                continue
            if step == "retry" and not core.retry_due(entry, now):
                continue
            wait = core.aim(entry, now)
            if wait:
                self._push(now + wait, entry, "retry")
                continue
            self.attempts += 1
            if entry.host.address in dead_hosts:
                delay = core.connect_failed(entry, OSError("refused"), now)
                if delay is not None:
                    self._push(now + delay, entry, "retry")
            elif not core.connect_landed(
                entry, object(), entry.host.address in standby_hosts, now
            ):
                self._push(now, entry, "aim")
        raise AssertionError(f"a connect storm: 100,000 steps and the clock is at {self.now}")


def test_a_writer_waiting_for_a_primary_causes_no_connect_storm() -> None:
    """The primary is dead and the only live host a standby: for the 10 s a writer waits,
    connects go at the pace of the backoffs (capped at backoff_max = 1 s), not in a loop."""
    bed = Bed(max_size=3, backoff_initial=0.01, backoff_max=1.0)
    bed.core.enqueue_for("writer", READ_WRITE, 0.0)
    driver = Driver(bed)
    driver.run(10.0, standby_hosts={"h2"}, dead_hosts={"h1"})
    assert "writer" not in bed.served
    # Each host: about log2(1 / 0.01) ramp-up attempts, then one per 0.5..1 s.
    assert driver.attempts <= 2 * (8 + 10 * 2), driver.attempts
    assert bed.core.size <= 3


def test_a_standby_promoted_while_a_writer_waits_serves_it_within_backoff_max() -> None:
    bed = Bed(max_size=3, backoff_initial=0.01, backoff_max=1.0)
    bed.core.enqueue_for("writer", READ_WRITE, 0.0)
    driver = Driver(bed)
    driver.run(5.0, standby_hosts={"h2"}, dead_hosts={"h1"})
    assert "writer" not in bed.served
    driver.run(6.0, standby_hosts=set(), dead_hosts={"h1"})  # promoted at 5.0
    assert bed.served["writer"].host is bed.host("h2")


def test_a_checkout_check_that_finds_a_role_the_pool_no_longer_takes_hands_nothing_out() -> None:
    bed = Bed(target="standby", hosts=(H1,), check_window=1.0)
    core = bed.core
    core.enqueue("r", 0.0)
    (entry,) = bed.connecting()
    assert bed.land(entry, True, 0.0)
    core.checkin(bed.served.pop("r"), 0.1)
    got = core.checkout(5.0)  # idle past check_window: to be checked
    assert got is entry and got.state.value == "checking"
    core.role_seen(entry, False, 5.1)  # the check finds h1 promoted
    assert not core.check_done(entry, True, 5.1)
    assert entry.state is CLOSING

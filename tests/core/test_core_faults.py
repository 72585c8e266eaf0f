"""What the fault suite (tests/faults) found, pinned down in the core with a fake clock."""

from __future__ import annotations

from coresim import ConnectError, Shell


def test_a_timeout_while_connects_are_under_way_says_so_not_all_in_use() -> None:
    """Regression: with the pool's connections still being made (a slow server), a timed
    out caller was told they were "all in use"."""
    sh = Shell(min_size=2, max_size=3)
    sh.open(0.0)
    assert "(size=2, max_size=3, 2 connects under way)" in sh.core.timeout_message(1.0)
    sh.succeed(0.5, 1)
    sh.take(0.5)
    message = sh.core.timeout_message(1.0)
    assert "1 connect under way, the rest in use" in message
    sh.succeed(0.6)
    assert "all in use" in sh.core.timeout_message(1.0)


def test_a_successful_connect_forgets_the_error_of_the_outage() -> None:
    """Regression: ``last_connect_error`` outlived the outage, so a later PoolTimeout (all in
    use) carried a stale connect error as its cause."""
    sh = Shell(min_size=1, max_size=1)
    sh.open(0.0)
    delay = sh.fail(0.0, ConnectError("refused"))
    assert delay is not None
    assert isinstance(sh.core.last_connect_error, ConnectError)
    sh.retry(delay)
    sh.succeed(delay)
    assert sh.core.last_connect_error is None
    assert "cannot connect" not in sh.core.timeout_message(1.0)

"""PoolConfig validation: TypeError for wrong types, ValueError out of range."""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError
from typing import Any

import pytest

from pgmarina._core import PoolConfig

INTS = ["min_size", "max_size", "max_waiting", "max_uses", "max_connecting"]
NUMBERS = [
    "timeout",
    "max_lifetime",
    "lifetime_jitter",
    "max_idle",
    "check_window",
    "keepalive",
    "reconnect_timeout",
    "fail_fast_after",
    "backoff_initial",
    "backoff_max",
    "housekeeping_interval",
    "barge_window",
    "leak_timeout",
]
# their checks: tests/core/test_core_fail_fast_waiters.py, tests/integration/test_pgbouncer_mode.py
BOOLS = ["configure_fails_waiter", "fail_fast_waiters", "pgbouncer", "prefill"]
# their checks: tests/core/test_core_idle_order.py
CHOICES = ["idle_order"]
NULLABLE = {
    "timeout", "max_lifetime", "max_idle", "check_window", "keepalive", "fail_fast_after",
    "leak_timeout",
}

# (name, value) pairs that are of the right type but out of range.
OUT_OF_RANGE: list[tuple[str, Any]] = [
    ("min_size", -1),
    ("max_size", 0),
    ("max_size", -3),
    ("max_waiting", -1),
    ("max_uses", -1),
    ("max_connecting", 0),
    ("timeout", -0.001),
    ("max_lifetime", 0),
    ("max_lifetime", -1.0),
    ("lifetime_jitter", -0.1),
    ("lifetime_jitter", 0.51),
    ("check_window", -1),
    ("keepalive", 0.0),
    ("reconnect_timeout", -1),
    ("fail_fast_after", -0.5),
    ("backoff_initial", 0),
    ("backoff_max", 0),
    ("housekeeping_interval", 0),
    ("housekeeping_interval", -1.0),
    ("barge_window", -0.01),
    ("leak_timeout", 0),
    ("leak_timeout", -1.0),
]

# Values at the edge of the allowed range.
EDGES: list[tuple[str, Any]] = [
    ("min_size", 0),
    ("max_size", 1),
    ("max_waiting", 0),
    ("max_uses", 0),
    ("max_connecting", 1),
    ("timeout", 0),
    ("timeout", None),
    ("max_lifetime", 0.001),
    ("max_lifetime", None),
    ("lifetime_jitter", 0),
    ("lifetime_jitter", 0.5),
    ("max_idle", None),
    ("max_idle", 0),
    ("check_window", 0),
    ("check_window", None),
    ("keepalive", None),
    ("reconnect_timeout", 0),
    ("fail_fast_after", 0),
    ("fail_fast_after", None),
    ("backoff_initial", 0.001),
    ("housekeeping_interval", 0.01),
    ("barge_window", 0),
    ("barge_window", float("inf")),
    ("leak_timeout", None),
    ("leak_timeout", 0.001),
]


def settings_for(name: str, value: Any) -> dict[str, Any]:
    """Settings that make ``name=value`` the only thing that can be wrong."""
    kwargs: dict[str, Any] = {name: value}
    if name == "min_size":
        kwargs["max_size"] = 100
    if name == "max_size":
        kwargs["min_size"] = 0
    if name == "backoff_initial":
        kwargs["backoff_max"] = 100.0
    if name == "backoff_max":
        kwargs["backoff_initial"] = 0.001
    return kwargs


def test_defaults_are_valid_and_names_lists_every_field() -> None:
    config = PoolConfig()
    assert config.min_size <= config.max_size
    assert PoolConfig.names() == frozenset(INTS + NUMBERS + BOOLS + CHOICES)


def test_config_is_frozen() -> None:
    config = PoolConfig()
    with pytest.raises(FrozenInstanceError):
        config.max_size = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", INTS)
@pytest.mark.parametrize("value", ["3", 3.0, True, False, None, [3]])
def test_int_settings_of_the_wrong_type_raise_type_error_naming_them(name: str, value: Any) -> None:
    with pytest.raises(TypeError) as info:
        PoolConfig(**settings_for(name, value))
    assert str(info.value).startswith(name)


@pytest.mark.parametrize("name", NUMBERS)
@pytest.mark.parametrize("value", ["1", True, False, b"1", 1j, [1.0]])
def test_number_settings_of_the_wrong_type_raise_type_error_naming_them(
    name: str, value: Any
) -> None:
    with pytest.raises(TypeError) as info:
        PoolConfig(**settings_for(name, value))
    assert str(info.value).startswith(name)


@pytest.mark.parametrize("name", sorted(set(NUMBERS) - NULLABLE))
def test_number_settings_that_cannot_be_none_raise_type_error_on_none(name: str) -> None:
    with pytest.raises(TypeError) as info:
        PoolConfig(**settings_for(name, None))
    assert str(info.value).startswith(name)


@pytest.mark.parametrize("name", NUMBERS)
def test_number_settings_reject_nan_with_value_error_naming_them(name: str) -> None:
    with pytest.raises(ValueError) as info:
        PoolConfig(**settings_for(name, math.nan))
    assert str(info.value).startswith(name)


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE)
def test_settings_out_of_range_raise_value_error_naming_them(name: str, value: Any) -> None:
    with pytest.raises(ValueError) as info:
        PoolConfig(**settings_for(name, value))
    assert str(info.value).startswith(name)


@pytest.mark.parametrize(("name", "value"), EDGES)
def test_settings_at_the_edge_of_their_range_are_accepted(name: str, value: Any) -> None:
    config = PoolConfig(**settings_for(name, value))
    assert getattr(config, name) == value


def test_max_size_below_min_size_raises_value_error_naming_max_size() -> None:
    with pytest.raises(ValueError) as info:
        PoolConfig(min_size=5, max_size=3)
    assert str(info.value).startswith("max_size")
    assert "min_size" in str(info.value)


def test_max_size_equal_to_min_size_is_accepted() -> None:
    assert PoolConfig(min_size=4, max_size=4).max_size == 4


def test_backoff_max_below_backoff_initial_raises_value_error_naming_backoff_max() -> None:
    with pytest.raises(ValueError) as info:
        PoolConfig(backoff_initial=2.0, backoff_max=1.0)
    assert str(info.value).startswith("backoff_max")


def test_integral_floats_are_not_accepted_where_an_int_is_required() -> None:
    with pytest.raises(TypeError, match=r"^max_size must be an int, not float"):
        PoolConfig(max_size=5.0)  # type: ignore[arg-type]


def test_bool_is_rejected_for_int_settings_even_though_it_is_an_int_subclass() -> None:
    with pytest.raises(TypeError, match=r"^max_uses must be an int, not bool"):
        PoolConfig(max_uses=True)  # type: ignore[arg-type]


def test_ints_are_accepted_where_a_number_is_required() -> None:
    assert PoolConfig(timeout=5, backoff_max=2).timeout == 5

"""psqlpy's row factories, for ``QueryResult.row_factory(...)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["class_row", "tuple_row"]

_T = TypeVar("_T")


def tuple_row(row: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Turn a row dict into ``(("column", value), ...)``, in column order."""
    return tuple(row.items())


class class_row(Generic[_T]):  # psqlpy's name
    """Build ``class_(**row)`` from each row: ``row_factory(class_row(User))``."""

    __slots__ = ("_class",)

    def __init__(self, class_: Callable[..., _T]) -> None:
        self._class = class_

    def __call__(self, row: dict[str, Any]) -> _T:
        return self._class(**row)

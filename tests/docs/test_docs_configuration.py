"""The configuration reference (docs/configuration.md) lists every parameter of both pool
constructors with the default their signatures show, and nothing else: the table cannot drift
from the code (Documentation site issue: "every parameter, its default, and why")."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from pgmarina import AsyncPool, Pool

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _rows() -> dict[str, str]:
    """``{parameter: default cell}`` of the page's Parameters table."""
    text = PAGE.read_text().split("## Parameters", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", text, re.M)
    return {name: cell.strip() for name, cell in rows}


def _parameters(cls: type) -> dict[str, object]:
    return {
        name: p.default
        for name, p in inspect.signature(cls).parameters.items()
        if p.kind is not p.VAR_KEYWORD
    }


def test_the_configuration_table_lists_every_constructor_parameter_and_no_other() -> None:
    rows = _rows()
    assert set(rows) == set(_parameters(AsyncPool)) | set(_parameters(Pool))


def test_the_configuration_table_shows_each_pools_default() -> None:
    rows = _rows()
    for cls in (AsyncPool, Pool):
        for name, default in _parameters(cls).items():
            assert f"`{default!r}`" in rows[name], (
                f"{cls.__name__}'s {name} defaults to {default!r}; the table says {rows[name]}"
            )

"""The common ones of psqlpy's parameter wrappers.

psqlpy needs a wrapper where Rust must be told a parameter's type
(``BigInt(10)``, ``JSONB({...})``).  asyncpg learns every parameter's type
from the server when it prepares the statement, so the façade simply
unwraps these and sends the value inside.  Wrappers not listed here (the
geometric types, the ``...Array`` wrappers, ``PgVector``, ``CustomType``)
are not provided: pass the plain value (a list for an array), which asyncpg
encodes from the column's type.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "JSON", "JSONB", "BigInt", "Float32", "Float64", "Integer", "Money", "SmallInt", "Text",
    "VarChar",
]


class _Wrapper:
    """A value with the type psqlpy would send it as; the façade sends ``inner_value``."""

    __slots__ = ("inner_value",)

    def __init__(self, inner_value: Any) -> None:
        self.inner_value = inner_value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner_value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and other.inner_value == self.inner_value

    def __hash__(self) -> int:
        return hash((type(self), self.inner_value))


class SmallInt(_Wrapper):
    """A ``smallint`` parameter."""


class Integer(_Wrapper):
    """An ``integer`` parameter."""


class BigInt(_Wrapper):
    """A ``bigint`` parameter."""


class Money(_Wrapper):
    """A ``money`` parameter (asyncpg sends it as text: give a ``str``)."""


class Float32(_Wrapper):
    """A ``real`` parameter."""


class Float64(_Wrapper):
    """A ``double precision`` parameter."""


class Text(_Wrapper):
    """A ``text`` parameter."""


class VarChar(_Wrapper):
    """A ``varchar`` parameter."""


class JSON(_Wrapper):
    """A ``json`` parameter: a dict or list, encoded as JSON by the façade's codec."""


class JSONB(_Wrapper):
    """A ``jsonb`` parameter: a dict or list, encoded as JSON by the façade's codec."""

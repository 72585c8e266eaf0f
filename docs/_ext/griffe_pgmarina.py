"""griffe extensions for the API reference (mkdocs.yml lists them).

PoolDefaults: the pools' signatures show their real defaults.  The constructors read their
defaults from one place (``_D = PoolConfig()`` in ``pgmarina/shells/_common.py``), and the thread
``Pool`` takes a copy of the constructor with its own ``barge_window`` (``with_defaults``).  Read
statically, the signatures would say ``min_size=_D.min_size`` and the ``Pool`` would show
``AsyncPool``'s ``barge_window``.  This extension writes the values in, from the code itself, so
the reference cannot drift either.

SphinxRoles: the docstrings' reStructuredText habits (Sphinx roles, ``::`` before a literal
block, simple tables) show as Markdown does them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import griffe

# The reference documents this checkout's code, which the signatures' values come from too.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from pgmarina._core.config import PoolConfig
from pgmarina.shells.threaded import Pool

_DEFAULTS = PoolConfig()
_POOL_OWN = {
    name: repr(value)
    for name, value in (Pool.__init__.__kwdefaults__ or {}).items()
    if name in PoolConfig.names() and value != getattr(_DEFAULTS, name)
}


def _write_values(func: griffe.Function, own: dict[str, str]) -> None:
    for param in func.parameters:
        text = str(param.default) if param.default is not None else ""
        if param.name in own:
            param.default = own[param.name]
        elif text.startswith("_D."):
            param.default = repr(getattr(_DEFAULTS, text[3:]))


class PoolDefaults(griffe.Extension):
    """Write the pool settings' default values into the constructors' signatures."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "pgmarina":
            return
        base = pkg["shells._common.PoolBase.__init__"]
        _write_values(base, {})
        pool = pkg["shells.threaded.Pool"]
        # ``__init__ = with_defaults(PoolBase.__init__, ...)``: an attribute, read statically.
        # The docs show it as what it is, the base constructor with the thread pool's defaults.
        init = griffe.Function(
            "__init__",
            lineno=base.lineno,
            endlineno=base.endlineno,
            parameters=griffe.Parameters(*(
                griffe.Parameter(p.name, annotation=p.annotation, kind=p.kind, default=p.default)
                for p in base.parameters
            )),
            returns=base.returns,
            docstring=base.docstring,
        )
        _write_values(init, _POOL_OWN)
        pool.set_member("__init__", init)
        # PoolStats' histograms default to a shared empty one, ``_EMPTY``: show what it is.
        for field in pkg["_core.stats.PoolStats"].attributes.values():
            if str(field.value) == "_EMPTY":
                field.value = "Histogram()"


_ROLE = re.compile(r":(?:class|meth|func|data|mod|attr|exc|obj):`(~?)([^`]+)`")


def _plain(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


_CODE = re.compile(r"`+([^`]+)`+")  # ``literal``, or a role already made `code`
_BORDER = re.compile(r"^\s*=+(?: +=+)+\s*$")


def _markdown(text: str) -> str:
    """``text`` with its reStructuredText habits written as Markdown."""
    text = _ROLE.sub(_plain, text)
    lines = text.split("\n")
    out: list[str] = []
    in_table = False
    starts: list[int] = []
    rows: list[list[str]] = []
    for i, line in enumerate(lines):
        if line.rstrip().endswith("::"):
            # "Usage::" introduces the indented block after it, which Markdown already shows
            # as code; a "::" alone on its line goes.
            line = line.rstrip()[:-2].rstrip()
            line = f"{line}:" if line else ""
        if _BORDER.match(line):
            following = lines[i + 1] if i + 1 < len(lines) else ""
            if not in_table:
                in_table = True
                starts = [m.start() for m in re.finditer(r"=+", line)]
                rows = []
                continue
            if not following.strip():
                out += ["```text", *_table(rows), "```"]
                in_table = False
                continue
            continue  # the rule under a header row
        if in_table:
            # No markup inside a code block: drop the ``quotes`` cell by cell.
            ends: list[int | None] = [*starts[1:], None]
            cells = [line[a:b] for a, b in zip(starts, ends, strict=True)]
            rows.append([_CODE.sub(r"\1", cell).strip() for cell in cells])
            continue
        out.append(line.rstrip())
    if in_table:  # a table with no closing rule: show what there is
        out += ["```text", *_table(rows), "```"]
    return "\n".join(out)


def _table(rows: list[list[str]]) -> list[str]:
    """A simple table's rows, each column as wide as its widest cell without the quotes
    (the docstring's columns, sized for the quotes, would run past the page's code width)."""
    if not rows:
        return []
    widths = [max(len(row[k]) for row in rows) + 2 for k in range(len(rows[0]) - 1)]
    return [
        ("".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + row[-1]).rstrip()
        for row in rows
    ]


class SphinxRoles(griffe.Extension):
    """Show the docstrings' reStructuredText as Markdown.

    The docstrings are read by ``help()`` and editors too, where ``:class:`~pgmarina.Pool```,
    ``Usage::`` and simple tables are the usual spelling; mkdocstrings reads Markdown, so on
    the site a role becomes code (``Pool``), ``::`` a colon, and a simple table a fixed-width
    block.
    """

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _markdown(obj.docstring.value)

"""Find the Python examples in a Markdown file, and run one the way a reader would.

Shared by the README's example test (tests/integration/test_readme_examples.py) and the docs
site's (tests/docs/test_docs_examples.py), so that both read Markdown by the same rules:

* A fenced block whose language is ``python`` (or ``py``, ``python3``) is an example.  Fences
  may be indented (inside an admonition or a content tab); the indent is removed.
* The ```` ```text ```` block right after it, if there is one, is its expected output.
* An example that cannot run on the test bed (a Django settings excerpt, a fragment) is
  preceded by the comment ``<!-- example: skip (why it cannot run) -->``, and the reason is
  required: a skip that does not say why is an error, so no example escapes quietly.
* Examples connect to ``DSN = "postgresql://postgres@127.0.0.1:5432/postgres"``; the runner
  puts the test server's DSN in its place, and writes the server's ``host:port/dbname`` back
  as ``127.0.0.1:5432/postgres`` in the output, so ``repr(pool)`` compares.

:func:`run` runs an example as a reader would paste it: a fresh interpreter with ``-W error``,
pgmarina from this checkout first on the path.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pgmarina
from pgmarina._redact import describe_target

#: The DSN every example is written with, and the target ``repr(pool)`` shows for it.
EXAMPLE_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
EXAMPLE_TARGET = "127.0.0.1:5432/postgres"

PYTHON_LANGUAGES = frozenset({"python", "py", "python3"})

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$")
_SKIP = re.compile(r"^\s*<!--\s*example:\s*skip\b(?P<rest>.*?)-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown file."""

    language: str
    code: str
    line: int  #: 1-based line of the opening fence
    skip: str | None  #: the reason given by a skip comment right before it, else None


@dataclass(frozen=True)
class Example:
    """A Python block, with the output block that follows it (if any)."""

    path: Path
    line: int
    language: str
    code: str
    output: str | None
    skip: str | None

    @property
    def id(self) -> str:
        """``file.md:LINE``, for test ids and failure messages."""
        return f"{self.path.name}:{self.line}"


def blocks(text: str) -> list[Block]:
    """Every fenced block of ``text``, in order.

    Raises:
        ValueError: A fence is not closed, or a skip comment gives no reason.
    """
    lines = text.split("\n")
    found: list[Block] = []
    skip: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        comment = _SKIP.match(line)
        if comment:
            reason = comment.group("rest").strip().strip("()").strip(" :-—")
            if not reason:
                raise ValueError(f"line {i + 1}: an example skip must say why")
            skip = reason
            i += 1
            continue
        match = _FENCE.match(line)
        if not match:
            if line.strip():
                skip = None  # a skip comment covers only the block right after it
            i += 1
            continue
        indent, fence = match.group("indent"), match.group("fence")
        language = match.group("info").strip().split(" ")[0].lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (
            lines[j].strip().startswith(fence) and lines[j].strip().strip(fence[0]) == ""
        ):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j == len(lines):
            raise ValueError(f"line {i + 1}: a {fence} fence is never closed")
        found.append(Block(language, "\n".join(body) + "\n", i + 1, skip))
        skip = None
        i = j + 1
    return found


def examples(path: Path) -> list[Example]:
    """The Python examples of the Markdown file ``path``, each with its expected output."""
    found = blocks(path.read_text())
    result = []
    for k, block in enumerate(found):
        if block.language not in PYTHON_LANGUAGES:
            continue
        after = found[k + 1] if k + 1 < len(found) else None
        output = after.code if after is not None and after.language == "text" else None
        result.append(Example(path, block.line, block.language, block.code, output, block.skip))
    return result


def run(code: str, dsn: str, cwd: Path, timeout: float = 60) -> tuple[int, str, str]:
    """Run ``code`` with the test server's ``dsn`` in place of :data:`EXAMPLE_DSN`.

    Returns:
        ``(returncode, stdout, stderr)``, with the server's target in stdout written back as
        :data:`EXAMPLE_TARGET`.
    """
    script = cwd / "example.py"
    script.write_text(code.replace(EXAMPLE_DSN, dsn))
    src = str(Path(pgmarina.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (src, os.environ.get("PYTHONPATH")) if p
    )}
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, check=False,
    )
    output = proc.stdout.replace(describe_target(dsn, {}), EXAMPLE_TARGET)
    return proc.returncode, output, proc.stderr

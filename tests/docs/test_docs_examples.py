"""Every Python example on the docs site runs against the test bed, to the output the page
shows after it, with no warning and nothing on stderr (Documentation site issue: "every code
example in the docs is executed by the tests, so the docs cannot rot").

The rules for finding examples, skipping one (with a reason) and running one are in
tests/docexamples.py, shared with README's example test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import docexamples

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
EXAMPLES = [e for page in PAGES for e in docexamples.examples(page)]
RUNNABLE = [e for e in EXAMPLES if e.skip is None]


def test_the_docs_have_examples_and_a_skip_must_say_why() -> None:
    assert len(RUNNABLE) >= 10
    # The skip rule has teeth: a skip comment without a reason is refused (at collection, for
    # the pages), and one with a reason covers only the block right after it.
    with pytest.raises(ValueError, match="must say why"):
        docexamples.blocks("<!-- example: skip -->\n```python\nprint(1)\n```\n")
    first, second = docexamples.blocks(
        "<!-- example: skip (a fragment) -->\n```python\nx\n```\ntext\n```python\ny\n```\n"
    )
    assert (first.skip, second.skip) == ("a fragment", None)


def test_the_example_reader_finds_indented_blocks_and_their_output() -> None:
    text = (
        '=== "asyncio"\n\n    ```python\n    print("tab")\n    ```\n\n'
        "    ```text\n    tab\n    ```\n"
    )
    (block, output) = docexamples.blocks(text)
    assert (block.language, block.code, output.code) == ("python", 'print("tab")\n', "tab\n")


@pytest.mark.parametrize("example", RUNNABLE, ids=[e.id for e in RUNNABLE])
def test_a_docs_example_runs_to_the_output_the_page_shows(
    pg: Any, tmp_path: Path, example: docexamples.Example
) -> None:
    returncode, output, stderr = docexamples.run(example.code, pg.dsn, tmp_path)
    assert stderr == "", f"{example.id} wrote to stderr"
    assert returncode == 0, f"{example.id} failed"
    if example.output is not None:
        assert output == example.output, f"{example.id} printed something else"

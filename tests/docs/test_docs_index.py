"""The home page links every page of the site (Documentation site issue: a newcomer finds each
page from the home page, not only from the menu); mkdocs' own check covers the menu."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_home_page_links_every_page_of_the_site() -> None:
    home = (DOCS / "index.md").read_text()
    linked = {m.split("#", 1)[0] for m in re.findall(r"\]\(([^)\s]+\.md(?:#[^)\s]*)?)\)", home)}
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")} - {"index.md"}
    assert pages, "no pages found"
    assert not pages - linked, f"index.md does not link {sorted(pages - linked)}"

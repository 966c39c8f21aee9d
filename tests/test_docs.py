"""The API reference lists every public name of every namespace (the docs build itself runs in CI with ``-W -n``)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
NAMESPACES = ["io", "pp", "tl", "pl", "datasets", "models", "data", "train"]


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_every_public_name_has_an_api_entry(namespace):
    module = importlib.import_module(f"storm.{namespace}")
    page = (DOCS / "api" / f"{namespace}.md").read_text()
    listed = {line.strip() for line in page.splitlines()}
    # constants (upper case) are described in the page's text, not given pages of their own
    missing = [n for n in module.__all__ if not n.isupper() and f"{namespace}.{n}" not in listed]
    assert not missing, f"docs/api/{namespace}.md lacks {missing}"


def test_api_index_links_every_page():
    index = (DOCS / "api" / "index.md").read_text()
    assert all(f"\n{name}\n" in index for name in [*NAMESPACES, "settings"])

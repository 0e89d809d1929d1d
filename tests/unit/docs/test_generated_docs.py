"""The reference docs must say what the code does: regenerate with `make docs`."""

from __future__ import annotations

from pathlib import Path

import pytest

from milterd.docgen import render_config_reference, render_rule_guide, render_symbols

DOCS = Path(__file__).resolve().parents[3] / "docs"


@pytest.mark.parametrize(
    ("name", "render"),
    [("configuration-reference.md", render_config_reference), ("symbols.md", render_symbols)],
)
def test_generated_doc_is_current(name: str, render: object) -> None:
    assert callable(render)
    current = (DOCS / name).read_text(encoding="utf-8")
    assert current == render(), f"docs/{name} is stale: run `make docs`"


def test_rule_guide_lists_every_function() -> None:
    current = (DOCS / "writing-a-rule.md").read_text(encoding="utf-8")
    assert current == render_rule_guide(current), "docs/writing-a-rule.md is stale: make docs"

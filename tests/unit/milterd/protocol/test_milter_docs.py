"""``docs/milter-protocol.md`` shows the state tables of ``state.py``; keep them equal.

Run this file as a script to rewrite the generated section after changing the tables:
``.venv/bin/python tests/unit/milterd/protocol/test_milter_docs.py``.
"""

from __future__ import annotations

from pathlib import Path

from milterd.protocol.state import (
    MTA_TRANSITIONS,
    OUT_OF_ORDER,
    REPLY_TRANSITIONS,
    ReplyKind,
)

DOC = Path(__file__).resolve().parents[4] / "docs" / "milter-protocol.md"
BEGIN = "<!-- BEGIN GENERATED: state tables (tests/unit/milterd/protocol/test_milter_docs.py) -->"
END = "<!-- END GENERATED -->"


def render() -> str:
    """The Markdown for both tables."""
    lines = [
        "Rule 1 — MTA commands in the expected order (`state.MTA_TRANSITIONS`):",
        "",
        "| State | Command → next state |",
        "|---|---|",
    ]
    for state, moves in MTA_TRANSITIONS.items():
        cell = ", ".join(f"{c.name} → {s.name}" for c, s in moves.items()) or "(none)"
        lines.append(f"| {state.name} | {cell} |")
    lines += [
        "",
        "Out-of-order commands in a live state (NEGOTIATED … BODY) are tolerated and lead to"
        " (`state.OUT_OF_ORDER`): "
        + ", ".join(f"{c.name} → {s.name}" for c, s in OUT_OF_ORDER.items())
        + ".",
        "",
        "Rule 2 — filter replies by owed command (`state.REPLY_TRANSITIONS`;"
        " `=` keeps the state, `✗` is refused):",
        "",
        "| Owed | " + " | ".join(k.value for k in ReplyKind) + " |",
        "|---|" + "---|" * len(ReplyKind),
    ]
    for command, kinds in REPLY_TRANSITIONS.items():
        cells = []
        for kind in ReplyKind:
            if kind not in kinds:
                cells.append("✗")
            else:
                target = kinds[kind]
                cells.append("=" if target is None else target.name)
        lines.append(f"| {command.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _generated_section(text: str) -> str:
    start = text.index(BEGIN) + len(BEGIN) + 1
    return text[start : text.index(END)]


def test_doc_tables_match_state_module() -> None:
    assert _generated_section(DOC.read_text(encoding="utf-8")) == render()


if __name__ == "__main__":
    text = DOC.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{BEGIN}\n{render()}{END}{tail}", encoding="utf-8")

"""``milterd.verdict``: authentication headers go on top of the message (INSHEADER at 0)."""

from __future__ import annotations

from engine import Action, ScanResult
from milterd.protocol import Accept, ActionFlag, AddHeader, InsertHeader
from milterd.settings import MilterSettings
from milterd.verdict import verdict_actions

DEFAULTS = MilterSettings.defaults()


def result(*headers: tuple[str, str]) -> ScanResult:
    return ScanResult(
        action=Action.NO_ACTION,
        score=0.0,
        required_score=15.0,
        thresholds={},
        symbols={},
        add_headers=headers,
    )


def test_authentication_headers_are_inserted_on_top_in_the_order_given() -> None:
    actions = verdict_actions(
        result(
            ("X-Spamd-Result", "default: False"),
            ("DKIM-Signature", "v=1; d=a.test"),
            ("ARC-Seal", "i=1"),
            ("ARC-Message-Signature", "i=1"),
            ("ARC-Authentication-Results", "i=1; mx"),
            ("Authentication-Results", "mx; none"),
        ),
        DEFAULTS,
        {},
    )
    # Each insert at 0 lands above the previous one: sent in reverse, they read in order.
    assert actions == [
        InsertHeader(0, "Authentication-Results", "mx; none"),
        InsertHeader(0, "ARC-Authentication-Results", "i=1; mx"),
        InsertHeader(0, "ARC-Message-Signature", "i=1"),
        InsertHeader(0, "ARC-Seal", "i=1"),
        InsertHeader(0, "DKIM-Signature", "v=1; d=a.test"),
        AddHeader("X-Spamd-Result", "default: False"),
        Accept(),
    ]


def test_inserting_needs_the_add_headers_grant() -> None:
    actions = verdict_actions(
        result(("Authentication-Results", "mx; none")), DEFAULTS, {}, ActionFlag.CHGHDRS
    )
    assert actions == [Accept()]

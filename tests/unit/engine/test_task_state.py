"""The scan request's invariant and the typed stash checks share."""

from __future__ import annotations

import pytest

from engine import Envelope, ScanRequest
from engine.task import Stash, StashKey


def test_scan_request_takes_raw_or_fields_exactly_once() -> None:
    assert ScanRequest(raw=b"x").headers is None
    assert ScanRequest(headers=()).raw is None
    for bad in ({}, {"raw": b"x", "headers": ()}):
        with pytest.raises(ValueError, match="exactly one of them"):
            ScanRequest(**bad)  # type: ignore[arg-type]


def test_envelope_defaults() -> None:
    envelope = Envelope()
    assert (envelope.mail_from, envelope.rcpts, dict(envelope.macros)) == (None, (), {})


def test_stash_is_typed_by_key_identity() -> None:
    stash = Stash()
    first, same_name = StashKey[int]("n"), StashKey[int]("n")
    stash[first] = 1
    assert first in stash
    assert same_name not in stash
    assert stash[first] == 1
    assert stash.get(same_name, 7) == 7
    assert repr(first) == "StashKey('n')"
    with pytest.raises(KeyError):
        stash[same_name]

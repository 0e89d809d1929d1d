"""Protocol errors.

``MilterProtocolError`` is abstract in spirit: code raises ``LocalProtocolError`` (we, or
the code driving us, misused the protocol) or ``RemoteProtocolError`` (the peer sent
something that breaks the protocol).  Internally the state machine and the value-type
constructors always raise ``LocalProtocolError``; ``MilterConnection`` re-types it as
``RemoteProtocolError`` when the offending item came off the wire, so each error tells
whose fault it was.  After either is raised by a ``MilterConnection`` method the
connection is in state ``ERROR`` and must be closed.
"""

from __future__ import annotations

from .constants import Response

__all__ = ["LocalProtocolError", "MilterProtocolError", "RemoteProtocolError"]


class MilterProtocolError(Exception):
    """Base class of all milter protocol errors.

    Attributes:
        default_reply: what a filter should treat as the outcome of the session once
            the connection is dead.  The filter cannot send it any more (the stream is
            out of sync); the MTA applies its own ``milter_default_action``, which is
            ``tempfail`` in Postfix ≤ 3.10, so that is the hint by default.
    """

    default_reply: Response

    def __init__(self, msg: str, *, default_reply: Response = Response.TEMPFAIL) -> None:
        super().__init__(msg)
        self.default_reply = default_reply


class LocalProtocolError(MilterProtocolError):
    """We tried to do something the protocol does not allow (our bug or misuse)."""


class RemoteProtocolError(MilterProtocolError):
    """The peer sent a malformed, oversized or out-of-place frame."""

"""Test helpers: a FILTER and an MTA ``MilterConnection`` joined by a fake wire.

Modelled on h11's ``ConnectionPair``: every ``send`` goes through the real encoder on one
side and the real decoder on the other, and the helper checks that what arrives equals
what was sent, so each test exercises both roles at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from milterd.protocol import (
    NEED_DATA,
    Action,
    ActionFlag,
    ConnectionClosed,
    Event,
    MacroStage,
    MilterConnection,
    Negotiate,
    ProtocolFlag,
    Role,
    negotiate_reply,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

#: What Postfix 2.6+ offers with ``milter_protocol = 6`` (spec §5.1).
POSTFIX_OFFER = Negotiate(6, ActionFlag(0x1FF), ProtocolFlag(0x1FFFFF))

#: The flags our design asks for (spec §13): no reply for CONNECT/HELO/DATA/headers/body,
#: answers at MAIL, RCPT and end of message.
OUR_PROTOCOL = (
    ProtocolFlag.NR_CONN
    | ProtocolFlag.NR_HELO
    | ProtocolFlag.NR_DATA
    | ProtocolFlag.NR_HDR
    | ProtocolFlag.NR_EOH
    | ProtocolFlag.NR_BODY
    | ProtocolFlag.NOUNKNOWN
)
OUR_ACTIONS = ActionFlag.ADDHDRS | ActionFlag.CHGHDRS | ActionFlag.QUARANTINE


def drain(conn: MilterConnection) -> list[Event | Action]:
    """Every value currently parseable from ``conn`` (up to and including ConnectionClosed)."""
    out: list[Event | Action] = []
    while True:
        item = conn.next_event()
        if item is NEED_DATA:
            return out
        out.append(item)
        if isinstance(item, ConnectionClosed):
            return out  # it repeats forever, like h11's


def feed_bytewise(conn: MilterConnection, data: bytes) -> list[Event | Action]:
    """Feed ``data`` one byte at a time, draining after each byte."""
    out: list[Event | Action] = []
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        out.extend(drain(conn))
    return out


class ConnectionPair:
    """A FILTER-role and an MTA-role connection talking over an in-memory wire."""

    def __init__(self) -> None:
        self.filter = MilterConnection(Role.FILTER)
        self.mta = MilterConnection(Role.MTA)
        #: every byte that crossed the wire, in order, per direction
        self.mta_to_filter = bytearray()
        self.filter_to_mta = bytearray()

    def mta_sends(self, *events: Event) -> list[Event | Action]:
        """MTA sends ``events``; assert the filter receives exactly them."""
        data = self.mta.send_many(events)
        self.mta_to_filter += data
        self.filter.receive_data(data)
        got = drain(self.filter)
        assert got == list(events)
        return got

    def filter_sends(self, *actions: Action) -> bytes:
        """Filter sends ``actions``; assert the MTA receives exactly them.  Returns the bytes."""
        data = self.filter.send_many(actions)
        self.filter_to_mta += data
        self.mta.receive_data(data)
        assert drain(self.mta) == list(actions)
        return data

    def negotiate(
        self,
        *,
        offer: Negotiate = POSTFIX_OFFER,
        actions: ActionFlag = OUR_ACTIONS,
        protocol: ProtocolFlag = OUR_PROTOCOL,
        macros: Iterable[tuple[MacroStage, str]] = (),
    ) -> None:
        """Run OPTNEG both ways with ``negotiate_reply``."""
        self.mta_sends(offer)
        self.filter_sends(negotiate_reply(offer, actions=actions, protocol=protocol, macros=macros))
        assert self.filter.negotiated == self.mta.negotiated

    def states(self) -> tuple[object, object]:
        """(filter state, MTA state); they must always agree in a healthy pair."""
        return self.filter.state, self.mta.state

    def assert_in_sync(self, expected: object, owed: object = None) -> None:
        """Both ends agree on state and on the outstanding reply."""
        assert self.filter.state is expected
        assert self.mta.state is expected
        assert self.filter.reply_owed is owed
        assert self.mta.reply_owed is owed


def events_of(items: Sequence[Event | Action]) -> list[type]:
    """Types of ``items``, for compact assertions."""
    return [type(i) for i in items]

"""The Received chain: how many hops, and whether any of them looks wrong.

The chain is built once per message and shared through ``RECEIVED_CHAIN``; other
modules call ``received_chain(task)`` rather than parsing the headers again.

Counting hops: a milter sees the headers *before* the MTA prepends its own Received
line, while a file or an HTTP upload usually has it. So when the envelope names the
client and the newest Received line does not mention that client's address, the
receiving MTA's own hop is counted as well: the same message counts the same through
either door. Mail-retrieval lines (fetchmail's ``with POP3``/``IMAP``) are not hops.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.config.schema import Key, Section, at_least
from engine.mime.received import Hop
from engine.modules.base import Module, check
from engine.symbols.spec import SymbolSpec
from engine.task.stash import StashKey

if TYPE_CHECKING:
    from engine.task.task import Task

__all__ = ["RECEIVED_CHAIN", "Received", "ReceivedChain", "received_chain"]

_G = "received"
_COUNTS = (
    (12, "TWELVE"),
    (7, "SEVEN"),
    (5, "FIVE"),
    (3, "THREE"),
    (2, "TWO"),
    (1, "ONE"),
    (0, "ZERO"),
)
# RFC 5321 §4.4 trace fields are ASCII; control characters other than TAB never belong.
_ILLEGAL = re.compile(r"[^\t\n\x20-\x7e]")
_ADDR_BEFORE = frozenset("<, \t\n:;\"'")
_ADDR_AFTER = frozenset(">, \t\n;\"'")


@dataclass(slots=True, frozen=True)
class ReceivedChain:
    """The transport hops, newest first, and whether our own MTA's hop is not among them."""

    hops: tuple[Hop, ...]
    own_hop_missing: bool

    @property
    def count(self) -> int:
        return len(self.hops) + self.own_hop_missing


RECEIVED_CHAIN: StashKey[ReceivedChain] = StashKey("received.chain")


def received_chain(task: Task) -> ReceivedChain:
    """The message's Received chain, parsed on first use and shared through the stash."""
    if RECEIVED_CHAIN in task.stash:
        return task.stash[RECEIVED_CHAIN]
    hops = tuple(
        h for h in map(Hop, task.message.headers.get_all("received")) if not h.is_retrieval
    )
    client = task.envelope.client_addr
    own_missing = client is not None and client != "" and (not hops or client not in hops[0].raw)
    chain = ReceivedChain(hops, own_missing)
    task.stash[RECEIVED_CHAIN] = chain
    return chain


class Received(Module):
    name = "received"
    description = "Received header chain: hop count, illegal characters, authenticated hand-offs."
    settings_schema = Section(
        {
            "max_hops": Key(
                (int,),
                25,
                "More hops than this is RCVD_CHAIN_TOO_LONG "
                "(RFC 5321 §6.3 loop detection counts far higher).",
                check=at_least(1),
            ),
        }
    )
    symbols = (
        *(
            SymbolSpec(
                f"RCVD_COUNT_{label}",
                0.0,
                _G,
                f"Message has {low}{'+' if low >= 3 else ''} Received headers (hops)",
            )
            for low, label in _COUNTS
        ),
        SymbolSpec("ONCE_RECEIVED", 0.1, _G, "One received header in a message"),
        SymbolSpec(
            "RCVD_CHAIN_TOO_LONG", 1.0, _G, "More Received hops than max_hops (a loop or forgery)"
        ),
        SymbolSpec(
            "RCVD_ILLEGAL_CHARS", 2.0, _G, "Received header has raw 8-bit or control characters"
        ),
        SymbolSpec(
            "RCVD_VIA_SMTP_AUTH", 0.0, _G, "Authenticated hand-off was seen in Received headers"
        ),
        SymbolSpec(
            "PREVIOUSLY_DELIVERED",
            0.0,
            _G,
            "Message either to a list or was forwarded (a Received 'for' names a To/Cc address)",
        ),
    )

    def setup(self) -> None:
        self._max_hops = int(self.settings["max_hops"])  # type: ignore[call-overload]

    @check(
        produces=(
            *(f"RCVD_COUNT_{label}" for _, label in _COUNTS),
            "ONCE_RECEIVED",
            "RCVD_CHAIN_TOO_LONG",
            "RCVD_ILLEGAL_CHARS",
            "RCVD_VIA_SMTP_AUTH",
            "PREVIOUSLY_DELIVERED",
        )
    )
    def chain(self, task: Task) -> None:
        chain = received_chain(task)
        count = chain.count
        label = next(label for low, label in _COUNTS if count >= low)
        task.insert_result(f"RCVD_COUNT_{label}", options=[str(count)])
        if count == 1:
            task.insert_result("ONCE_RECEIVED")
        elif count > self._max_hops:
            task.insert_result("RCVD_CHAIN_TOO_LONG", options=[str(count)])
        for hop in chain.hops:
            raw = hop.raw
            # SMTPUTF8 (RFC 6531 §4.3) hops may carry UTF-8 legitimately.
            if (not raw.isascii() or _ILLEGAL.search(raw)) and "UTF8" not in raw.upper():
                task.insert_result("RCVD_ILLEGAL_CHARS")
                break
        if any(hop.authenticated for hop in chain.hops):
            task.insert_result("RCVD_VIA_SMTP_AUTH")
        self._previously_delivered(task, chain)

    @staticmethod
    def _previously_delivered(task: Task, chain: ReceivedChain) -> None:
        headers = task.message.headers
        if "to" not in headers and "cc" not in headers:
            return
        for hop in chain.hops:
            if " for " not in hop.raw and "\tfor " not in hop.raw and "\nfor " not in hop.raw:
                continue
            recipient = hop.fields.recipient
            if recipient is None:
                continue
            # Only the newest hop that names a recipient counts (Rspamd's rule).
            visible = "\n".join(headers.get_all("to") + headers.get_all("cc")).lower()
            if _mentions(visible, recipient):
                task.insert_result("PREVIOUSLY_DELIVERED", options=[recipient])
            return


def _mentions(text: str, address: str) -> bool:
    """Whether ``address`` occurs in an address-list text as a whole address."""
    at = text.find(address)
    while at >= 0:
        end = at + len(address)
        if (at == 0 or text[at - 1] in _ADDR_BEFORE) and (
            end == len(text) or text[end] in _ADDR_AFTER
        ):
            return True
        at = text.find(address, at + 1)
    return False

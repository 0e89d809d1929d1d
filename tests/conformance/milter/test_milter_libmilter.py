"""Our MTA-role codec against Sendmail's libmilter (pymilter) as the filter.

Each test starts ``pymilter_filter.py`` in a subprocess on a unix socket in ``tmp_path``,
speaks to it as Postfix would (version 6, actions 0x1FF, protocol 0x1FFFFF offered), and
checks both that libmilter saw exactly our envelope, headers, body and macros, and that
its replies decode into the actions we expect.
"""

from __future__ import annotations

import base64
import json
import select
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from milterd.protocol import (
    NEED_DATA,
    Abort,
    Accept,
    Action,
    ActionFlag,
    AddHeader,
    AddRcpt,
    AddRcptWithArgs,
    BodyChunk,
    ChangeFrom,
    ChangeHeader,
    Command,
    Connect,
    ConnectionClosed,
    Continue,
    Data,
    DelRcpt,
    Discard,
    EndOfHeaders,
    EndOfMessage,
    Event,
    Family,
    Header,
    Helo,
    InsertHeader,
    Macros,
    MailFrom,
    MilterConnection,
    Negotiate,
    NegotiateReply,
    Progress,
    ProtocolFlag,
    Quarantine,
    Quit,
    RcptTo,
    Reject,
    ReplaceBody,
    ReplyCode,
    Role,
    State,
    TempFail,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytest.importorskip("Milter")

pytestmark = pytest.mark.pymilter

SCRIPT = Path(__file__).with_name("pymilter_filter.py")
TIMEOUT = 10.0
POSTFIX_OFFER = Negotiate(6, ActionFlag(0x1FF), ProtocolFlag(0x1FFFFF))


class Mta:
    """Our MTA-role codec over a blocking unix socket."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(str(path))
        self.conn = MilterConnection(Role.MTA)

    def send(self, *events: Event) -> list[Action]:
        """Send ``events``; return the filter's replies to any that owed one."""
        replies: list[Action] = []
        for event in events:
            self.sock.sendall(self.conn.send(event))
            while self.conn.reply_owed is not None:
                replies.append(self._next())
        return replies

    def _next(self) -> Action:
        while True:
            item = self.conn.next_event()
            if item is NEED_DATA:
                self.conn.receive_data(self.sock.recv(65536))
                continue
            assert isinstance(item, Action), item
            return item

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def reference_filter(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Run the pymilter filter; yield (socket path, record path)."""
    sock = tmp_path / "filter.sock"
    record = tmp_path / "record.json"
    stderr_path = tmp_path / "filter.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(sock), str(record)],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        line = proc.stdout.readline() if ready else b""
        if line.strip() != b"READY":
            pytest.fail(f"pymilter filter did not start: {line!r}")
        yield sock, record
    finally:
        proc.kill()
        proc.communicate(timeout=TIMEOUT)
        # Shown by pytest with a failing test: libmilter/pymilter tracebacks land here.
        print(stderr_path.read_text(encoding="utf-8", errors="replace"))


@pytest.fixture
def mta(reference_filter: tuple[Path, Path]) -> Iterator[Mta]:
    client = Mta(reference_filter[0])
    yield client
    client.close()


def _record(reference_filter: tuple[Path, Path]) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(reference_filter[1].read_text(encoding="utf-8"))
    return data


def _negotiate(mta: Mta) -> NegotiateReply:
    (reply,) = mta.send(POSTFIX_OFFER)
    assert isinstance(reply, NegotiateReply)
    return reply


BODY = b"Hello,\r\n\r\nthis is the body, 100% ours.\r\n" + b"x" * 65535 + b"\r\nbye\r\n"


def _message(
    mta: Mta, action: str, *, rcpts: tuple[str, ...] = ("<bob@example.net>",)
) -> list[Action]:
    """A whole Postfix-like transaction; returns the replies to EOM."""
    assert mta.send(Macros(Command.MAIL, (("{auth_authen}", "alice"),))) == []
    assert mta.send(MailFrom("<alice@example.org>", ("SIZE=1234", "BODY=8BITMIME"))) == [Continue()]
    for rcpt in rcpts:
        assert mta.send(Macros(Command.RCPT, (("{rcpt_addr}", rcpt.strip("<>")),))) == []
        replies = mta.send(RcptTo(rcpt, ("NOTIFY=NEVER",)))
        assert replies == [Reject() if "reject" in rcpt else Continue()]
    # libmilter negotiated NR for DATA/HEADER/EOH/BODY: these stream without replies.
    assert mta.send(Macros(Command.DATA, (("i", "4QueueID"),)), Data()) == []
    headers = [
        ("From", "Alice <alice@example.org>"),
        ("To", "bob@example.net,\n\tcarol@example.net"),
        ("Subject", "hello w\u00f6rld"),
        ("X-Test-Action", action),
    ]
    for name, value in headers:
        assert mta.send(Macros(Command.HEADER, (("i", "4QueueID"),)), Header(name, value)) == []
    assert mta.send(EndOfHeaders()) == []
    for i in range(0, len(BODY), 65535):
        assert mta.send(BodyChunk(BODY[i : i + 65535])) == []
    return mta.send(
        Macros(Command.BODYEOB, (("i", "4QueueID"), ("{msg_id}", "<m@x>"))), EndOfMessage()
    )


def _start(mta: Mta, connect: Connect) -> None:
    reply = _negotiate(mta)
    negotiated = mta.conn.negotiated
    assert negotiated is not None
    assert not negotiated.needs_reply(Command.HEADER)
    assert negotiated.needs_reply(Command.MAIL)
    assert reply.version == 6
    macros = (("j", "mx.example"), ("{daemon_name}", "smtpd"), ("{client_addr}", "192.0.2.1"))
    assert mta.send(Macros(Command.CONNECT, macros), connect) == [Continue()]
    assert mta.send(Macros(Command.HELO), Helo("client.example")) == [Continue()]


def test_libmilter_sees_exactly_our_session(mta: Mta, reference_filter: tuple[Path, Path]) -> None:
    reply = _negotiate(mta)
    # libmilter keeps the offered actions and answers with NR/NO bits for its decorated
    # callbacks (data, header, eoh, body) plus SKIP.
    assert reply.actions == ActionFlag(0x1FF)
    expected_nr = (
        ProtocolFlag.NR_DATA | ProtocolFlag.NR_HDR | ProtocolFlag.NR_EOH | ProtocolFlag.NR_BODY
    )
    assert reply.protocol & expected_nr == expected_nr
    assert not reply.protocol & (ProtocolFlag.NR_MAIL | ProtocolFlag.NR_RCPT)
    macros = (("j", "mx.example"), ("{daemon_name}", "smtpd"), ("{client_addr}", "192.0.2.1"))
    assert mta.send(
        Macros(Command.CONNECT, macros), Connect("[192.0.2.1]", Family.INET, 40123, "192.0.2.1")
    ) == [Continue()]
    assert mta.send(Helo("client.example")) == [Continue()]
    assert _message(mta, "addheader", rcpts=("<bob@example.net>", "<carol@example.net>")) == [
        AddHeader("X-Added", "yes"),
        Accept(),
    ]
    assert mta.conn.state is State.CONNECTED

    record = _record(reference_filter)
    by_callback: dict[str, list[dict[str, Any]]] = {}
    for entry in record:
        by_callback.setdefault(entry["callback"], []).append(entry)
    (connect,) = by_callback["connect"]
    assert connect["hostname"] == "[192.0.2.1]"
    assert connect["family"] == "inet"
    assert connect["hostaddr"] == ["192.0.2.1", 40123]
    assert connect["macros"] == {
        "j": "mx.example",
        "{daemon_name}": "smtpd",
        "{client_addr}": "192.0.2.1",
    }
    assert by_callback["helo"][0]["name"] == "client.example"
    (envfrom,) = by_callback["envfrom"]
    assert envfrom["address"] == "<alice@example.org>"
    assert envfrom["args"] == ["SIZE=1234", "BODY=8BITMIME"]
    assert envfrom["macros"]["{auth_authen}"] == "alice"
    assert [
        (e["address"], e["args"], e["macros"]["{rcpt_addr}"]) for e in by_callback["envrcpt"]
    ] == [
        ("<bob@example.net>", ["NOTIFY=NEVER"], "bob@example.net"),
        ("<carol@example.net>", ["NOTIFY=NEVER"], "carol@example.net"),
    ]
    assert len(by_callback["data"]) == 1
    assert [(h["name"], h["value"]) for h in by_callback["header"]] == [
        ("From", "Alice <alice@example.org>"),
        ("To", "bob@example.net,\n\tcarol@example.net"),
        ("Subject", "hello w\u00f6rld"),
        ("X-Test-Action", "addheader"),
    ]
    assert by_callback["header"][0]["macros"]["i"] == "4QueueID"
    assert len(by_callback["eoh"]) == 1
    assert [b["length"] for b in by_callback["body"]] == [65535, len(BODY) - 65535]
    (eom,) = by_callback["eom"]
    assert base64.b64decode(eom["body"]) == BODY
    assert eom["macros"]["{msg_id}"] == "<m@x>"
    assert eom["macros"]["i"] == "4QueueID"

    assert mta.send(Abort(), Quit()) == []
    mta.sock.shutdown(socket.SHUT_WR)
    mta.conn.receive_data(mta.sock.recv(1))  # libmilter closes after QUIT
    assert mta.conn.next_event() == ConnectionClosed()


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("accept", [Accept()]),
        ("insheader", [InsertHeader(0, "X-Inserted", "top"), Continue()]),
        (
            "chgheader",
            [
                ChangeHeader(1, "Subject", "changed subject"),
                ChangeHeader(1, "X-Test-Action", ""),
                Accept(),
            ],
        ),
        ("quarantine", [Quarantine("held for review"), Accept()]),
        # libmilter sends the text with the % still doubled; we decode it back to one.
        ("replycode", [ReplyCode(554, "5.7.1 Rejected 100% spam")]),
        ("tempfail", [TempFail()]),
        ("tempfail-text", [ReplyCode(451, "4.7.1 Try again later")]),
        ("discard", [Discard()]),
        ("progress", [Progress(), Continue()]),
        (
            "envelope",
            [
                ChangeFrom("<new@example.org>", ("RET=HDRS", "ENVID=abc")),
                AddRcpt("<added@example.net>"),
                AddRcptWithArgs("<added2@example.net>", ("NOTIFY=NEVER",)),
                DelRcpt("<bob@example.net>"),
                Accept(),
            ],
        ),
        ("replacebody", [ReplaceBody(b"new body\r\n"), ReplaceBody(b"second chunk\r\n"), Accept()]),
    ],
)
def test_libmilter_end_of_message_replies_decode(
    mta: Mta, action: str, expected: list[Action]
) -> None:
    _start(mta, Connect("[192.0.2.1]", Family.INET, 25, "192.0.2.1"))
    assert _message(mta, action) == expected
    assert mta.conn.state is State.CONNECTED
    assert mta.conn.reply_owed is None


def test_two_messages_and_per_recipient_reject(
    mta: Mta, reference_filter: tuple[Path, Path]
) -> None:
    _start(mta, Connect("client.example", Family.INET6, 2525, "2001:db8::7"))
    assert _message(mta, "quarantine", rcpts=("<reject@example.net>", "<bob@example.net>")) == [
        Quarantine("held for review"),
        Accept(),
    ]
    assert mta.send(Abort(), Abort()) == []
    assert _message(mta, "discard") == [Discard()]
    assert mta.send(Abort()) == []
    record = _record(reference_filter)
    connect = next(e for e in record if e["callback"] == "connect")
    assert connect["family"] == "inet6"
    assert connect["hostaddr"][:2] == ["2001:db8::7", 2525]
    assert [e["callback"] for e in record].count("eom") == 2
    assert [e["address"] for e in record if e["callback"] == "envrcpt"] == [
        "<reject@example.net>",
        "<bob@example.net>",
        "<bob@example.net>",
    ]


@pytest.mark.parametrize(
    ("connect", "family", "hostaddr"),
    [
        (Connect("localhost", Family.UNIX, 0, "/run/postfix/smtpd"), "unix", "/run/postfix/smtpd"),
        (Connect("unknown", Family.UNKNOWN), None, None),
    ],
)
def test_connect_families(
    mta: Mta,
    reference_filter: tuple[Path, Path],
    connect: Connect,
    family: str | None,
    hostaddr: object,
) -> None:
    _start(mta, connect)
    assert _message(mta, "accept") == [Accept()]
    entry = next(e for e in _record(reference_filter) if e["callback"] == "connect")
    assert entry["hostname"] == connect.hostname
    if family is not None:
        assert entry["family"] == family
    assert entry["hostaddr"] == hostaddr

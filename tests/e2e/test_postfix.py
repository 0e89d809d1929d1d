"""Through a real Postfix: each rung of the ladder as the sending client and the recipient see it.

Postfix (private instance, ``milter_protocol = 6``) passes every message to milterd over
``smtpd_milters``. The client claims 203.0.113.5 (mail.sender.test) with XCLIENT. A plain,
well-formed message stays under the shipped thresholds; the score-driven rungs are reached
with configurations whose threshold sits far below any score (every other rung off), and
the GTUBE strings force their rung whatever the thresholds.
"""

from __future__ import annotations

import grp
import re
import stat
from typing import TYPE_CHECKING

import pytest
from e2e_support import CLIENT_IP, RCPT, SENDER, gtube, message, transaction

if TYPE_CHECKING:
    from email.message import Message

    from e2e_support import Milterd, Postfix

pytestmark = [pytest.mark.e2e, pytest.mark.postfix]

MILTER_TEXTS = """
[milter]
greylist_message = "Greylisted by e2e, please come back later"
soft_reject_message = "e2e soft reject, try again later"
reject_message = "e2e spam rejected"
"""
BASE = '[options]\ngtube_patterns = "all"\n' + MILTER_TEXTS
_OFF = ("greylist", "add_header", "rewrite_subject", "soft_reject", "reject")


def only_rung(rung: str) -> str:
    """A config where any plain message lands on ``rung``: its threshold far below any score
    a clean message gets, every other rung off."""
    actions = "\n".join(f"{key} = {'-1000.0' if key == rung else 'false'}" for key in _OFF)
    return f"[actions]\n{actions}\n" + MILTER_TEXTS


def headers(msg: Message, name: str) -> list[str]:
    return [" ".join(v.split()) for v in msg.get_all(name, [])]


def assert_result_headers(msg: Message, *, spam: bool) -> None:
    [result] = headers(msg, "X-Spamd-Result")
    assert result.startswith("default: ")
    [status] = headers(msg, "X-Spam-Status")
    assert status.startswith("Yes, score=" if spam else "No, score=")
    assert headers(msg, "X-Spam") == (["Yes"] if spam else [])


def test_no_action_delivers_with_result_headers(postfix: Postfix, milterd: Milterd) -> None:
    milterd.use(BASE)
    offset = milterd.log_offset()

    reply = postfix.send(message("lunch on friday"))

    assert reply.code == 250, reply
    assert reply.queue_id is not None
    delivered = postfix.delivered(reply.queue_id)
    assert_result_headers(delivered, spam=False)
    assert re.match(
        r"default: False \[-?\d+\.\d\d / 15\.00\]", headers(delivered, "X-Spamd-Result")[0]
    )
    assert headers(delivered, "Subject") == ["lunch on friday"]
    # milterd saw this very message, from the XCLIENT address, with Postfix's queue id
    # (macro i), over milter protocol 6
    milterd.wait_log(
        rf"qid={reply.queue_id} client={re.escape(CLIENT_IP)} "
        rf"from=<{re.escape(SENDER)}> rcpts={re.escape(RCPT)} .*action=no_action",
        offset,
    )
    assert postfix.postconf("milter_protocol") == "6"


@pytest.mark.parametrize(
    ("rung", "expected"),
    [
        ("greylist", "451 4.7.1 Greylisted by e2e, please come back later"),
        ("soft_reject", "450 4.7.1 e2e soft reject, try again later"),
        ("reject", "554 5.7.1 e2e spam rejected"),
    ],
)
def test_refusing_rungs_give_their_smtp_reply(
    postfix: Postfix, milterd: Milterd, rung: str, expected: str
) -> None:
    milterd.use(only_rung(rung))

    reply = postfix.send(message(f"plain message for {rung}"))

    assert str(reply) == expected
    assert reply.queue_id is None  # refused at end of DATA: nothing was queued


def test_add_header_rung_marks_the_delivered_copy(postfix: Postfix, milterd: Milterd) -> None:
    milterd.use(only_rung("add_header"))

    reply = postfix.send(message("quarterly figures"))

    assert reply.code == 250, reply
    assert reply.queue_id is not None
    delivered = postfix.delivered(reply.queue_id)
    assert_result_headers(delivered, spam=True)
    assert headers(delivered, "Subject") == ["quarterly figures"]


def test_rewrite_subject_rung_changes_the_one_subject(postfix: Postfix, milterd: Milterd) -> None:
    milterd.use(only_rung("rewrite_subject"))

    reply = postfix.send(message("quarterly figures"))

    assert reply.code == 250, reply
    assert reply.queue_id is not None
    delivered = postfix.delivered(reply.queue_id)
    assert headers(delivered, "Subject") == ["*** SPAM *** quarterly figures"]
    assert_result_headers(delivered, spam=True)


@pytest.mark.parametrize(
    ("letter", "code", "spam", "subject"),
    [
        ("X", 554, None, None),
        ("Y", 250, True, "gtube Y"),
        ("Z", 250, True, "*** SPAM *** gtube Z"),
        ("A", 250, False, "gtube A"),
    ],
)
def test_gtube_strings(
    postfix: Postfix,
    milterd: Milterd,
    letter: str,
    code: int,
    spam: bool | None,
    subject: str | None,
) -> None:
    milterd.use(BASE)

    reply = postfix.send(gtube(letter, f"gtube {letter}"))

    assert reply.code == code, reply
    if code == 554:
        assert str(reply) == "554 5.7.1 Gtube pattern"
        return
    assert reply.queue_id is not None
    delivered = postfix.delivered(reply.queue_id)
    assert spam is not None
    assert_result_headers(delivered, spam=spam)
    assert headers(delivered, "Subject") == [subject]


def test_forged_verdict_headers_are_removed(postfix: Postfix, milterd: Milterd) -> None:
    """A sender cannot pre-fill the verdict: upstream X-Spam* headers do not survive."""
    milterd.use(BASE)
    forged = (
        "X-Spam: No\nX-Spamd-Result: default: False [-100.00 / 15.00]\n"
        "X-Spam-Status: No, score=-100.00\n"
    )

    reply = postfix.send(message("forged", extra_headers=forged.replace("\n", "\r\n")))

    assert reply.code == 250, reply
    assert reply.queue_id is not None
    delivered = postfix.delivered(reply.queue_id)
    assert headers(delivered, "X-Spam") == []
    [status] = headers(delivered, "X-Spam-Status")
    assert status.startswith("No, score=")
    assert "-100" not in status
    assert len(headers(delivered, "X-Spamd-Result")) == 1
    assert "-100" not in headers(delivered, "X-Spamd-Result")[0]


def test_several_messages_on_one_smtp_session(postfix: Postfix, milterd: Milterd) -> None:
    """Each message gets its own verdict; nothing leaks from one to the next (ABORT/RSET)."""
    milterd.use(BASE)
    offset = milterd.log_offset()

    with postfix.session() as smtp:
        first = transaction(smtp, gtube("Y", "first"))
        second = transaction(smtp, gtube("X", "second"))
        smtp.rset()
        # a transaction abandoned before DATA: Postfix sends ABORT, nothing is scanned
        assert smtp.mail(SENDER)[0] == 250
        assert smtp.rcpt(RCPT)[0] == 250
        assert smtp.rset()[0] == 250
        third = transaction(smtp, message("third"))
        fourth = transaction(smtp, gtube("Z", "fourth"))

    assert first.code == 250, first
    assert str(second) == "554 5.7.1 Gtube pattern"
    assert third.code == 250, third
    assert fourth.code == 250, fourth
    assert first.queue_id
    assert third.queue_id
    assert fourth.queue_id
    first_copy = postfix.delivered(first.queue_id)
    assert_result_headers(first_copy, spam=True)
    assert headers(first_copy, "Subject") == ["first"]
    third_copy = postfix.delivered(third.queue_id)
    assert_result_headers(third_copy, spam=False)
    assert headers(third_copy, "Subject") == ["third"]
    fourth_copy = postfix.delivered(fourth.queue_id)
    assert headers(fourth_copy, "Subject") == ["*** SPAM *** fourth"]
    # one scan per message that reached end of DATA, each with its own queue id
    milterd.wait_log(rf"qid={fourth.queue_id} .*action=rewrite_subject", offset)
    scans = re.findall(r"milterd\.scan: qid=(\S+) .* action=(\S+)", milterd.log_text(offset))
    assert [action for _, action in scans] == [
        "add_header",
        "reject",
        "no_action",
        "rewrite_subject",
    ]
    assert [qid for qid, _ in scans][::2] == [first.queue_id, third.queue_id]


QUARANTINE = BASE.replace("[milter]\n", '[milter]\nreject_action = "quarantine"\n')
DISCARD = BASE.replace("[milter]\n", '[milter]\nreject_action = "discard"\n')


def test_quarantine_puts_the_message_on_hold(postfix: Postfix, milterd: Milterd) -> None:
    milterd.use(QUARANTINE)
    offset = postfix.log_offset()

    reply = postfix.send(gtube("X", "quarantine me"))

    assert reply.code == 250, reply  # the client believes it was delivered
    qid = reply.queue_id
    assert qid is not None
    postfix.wait_log(rf"{qid}: milter-hold: END-OF-MESSAGE", offset)
    assert postfix.queue().get(qid) == "hold"
    held = postfix.queued_headers(qid)
    assert headers(held, "X-Spam") == ["Yes"]
    assert len(headers(held, "X-Spamd-Result")) == 1
    assert postfix.find_delivered(qid) is None


def test_discard_accepts_and_drops(postfix: Postfix, milterd: Milterd) -> None:
    milterd.use(DISCARD)
    offset = postfix.log_offset()

    reply = postfix.send(gtube("X", "discard me"))

    assert reply.code == 250, reply
    qid = reply.queue_id
    assert qid is not None
    postfix.wait_log(rf"{qid}: milter-discard: END-OF-MESSAGE", offset)
    assert qid not in postfix.queue()
    assert postfix.find_delivered(qid) is None


def test_unix_socket_in_the_queue_directory(postfix: Postfix, milterd: Milterd) -> None:
    """``smtpd_milters = unix:milterd/milter.sock``: the socket milterd creates (mode 0660,
    group postfix from the setgid directory) is usable by smtpd, which runs as postfix."""
    milterd.use(BASE)

    reply = postfix.send(gtube("Y", "over the unix socket"), "unix")

    assert reply.code == 250, reply
    assert reply.queue_id is not None
    assert headers(postfix.delivered(reply.queue_id), "X-Spam") == ["Yes"]
    info = postfix.milter_socket.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert grp.getgrgid(info.st_gid).gr_name == "postfix"

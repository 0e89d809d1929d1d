"""``milterd bench``: the generated corpus, the in-process mode, and the milter driver
against a daemon on loopback. No timing assertions: timing belongs in ``make bench``."""

from __future__ import annotations

import json
import socket
import threading
from email import message_from_bytes
from email.policy import default as default_policy
from typing import TYPE_CHECKING

import pytest
import trio

from engine import Engine
from engine.modules.gtube import Gtube
from engine.modules.milter_headers import MilterHeaders
from milterd.bench import (
    _decoded,
    _drive,
    _drive_http,
    _http_requests,
    _milter_plan,
    generate_corpus,
)
from milterd.cli import main
from milterd.daemon import run_daemon
from milterd.mta import (
    OFFER_FRAME,
    QUIT_FRAME,
    MilterReply,
    SmtpEnvelope,
    encode_transaction,
    milter_exchange,
    milter_transaction,
    split_for_milter,
)
from milterd.protocol import (
    NEED_DATA,
    Accept,
    ActionFlag,
    AddHeader,
    BodyChunk,
    EndOfMessage,
    MilterConnection,
    Negotiate,
    NegotiateReply,
    Progress,
    ProtocolFlag,
    Reject,
    ReplyCode,
    Role,
    negotiate_reply,
)
from milterd.protocol.codec import encode_action
from milterd.session import WANTED_ACTIONS, WANTED_PROTOCOL
from milterd.settings import MILTER_SECTION, MilterSettings

if TYPE_CHECKING:
    from pathlib import Path

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def test_generated_corpus_is_deterministic() -> None:
    assert generate_corpus(25) == generate_corpus(25)
    assert generate_corpus(10) == generate_corpus(25)[:10]
    assert generate_corpus(10, seed=1) != generate_corpus(10)
    assert generate_corpus(0) == []


def test_generated_corpus_has_the_shapes_of_real_mail() -> None:
    corpus = generate_corpus(10)
    assert len(corpus) == 10
    assert len(set(corpus)) == 10
    for raw in corpus:
        message = message_from_bytes(raw, policy=default_policy)
        assert message["From"]
        assert message["Subject"]
        assert message["Message-ID"]
        assert b"\r\n\r\n" in raw
        assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    kinds = [
        message_from_bytes(raw, policy=default_policy).get_content_type() for raw in corpus[:5]
    ]
    assert kinds == [
        "text/plain",
        "multipart/alternative",
        "multipart/mixed",
        "multipart/mixed",
        "text/plain",
    ]
    assert b'filename="report.pdf"' in corpus[2]
    assert b"--broken--" not in corpus[3]  # broken MIME: the closing boundary is missing
    subject = message_from_bytes(corpus[4], policy=default_policy)["Subject"]
    assert subject == subject.upper()


@pytest.mark.usefixtures("isolated_env")
def test_bench_in_process(capsys: pytest.CaptureFixture[str], isolated_env: Path) -> None:
    code = main(
        ["bench", "--config-dir", str(isolated_env), "--in-process", "--count", "20", "--runs", "1"]
    )
    out = capsys.readouterr().out
    assert code == 0
    run_line, median_line = out.splitlines()
    assert run_line.split()[:4] == ["run", "in-process", "20", "msgs"]
    assert median_line.split()[:4] == ["median", "in-process", "20", "msgs"]
    assert median_line.endswith("errors 0")


@pytest.mark.usefixtures("isolated_env")
def test_bench_in_process_json(capsys: pytest.CaptureFixture[str], isolated_env: Path) -> None:
    code = main(
        [
            "bench",
            "--config-dir",
            str(isolated_env),
            "--in-process",
            "--count",
            "5",
            "--runs",
            "2",
            "--json",
        ]
    )
    assert code == 0
    *runs, median = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert len(runs) == 2
    assert all(r["mode"] == "in-process" and r["messages"] == 5 and r["errors"] == 0 for r in runs)
    assert median["median"]["messages"] == 5
    assert set(median["median"]) == set(runs[0])


@pytest.mark.usefixtures("isolated_env")
def test_bench_with_a_corpus_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_env: Path
) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    for i, raw in enumerate(generate_corpus(3)):
        (corpus / ("sub" if i else ".") / f"{i}.eml").write_bytes(raw)
    code = main(
        [
            "bench",
            "--config-dir",
            str(isolated_env),
            "--in-process",
            "--corpus",
            str(corpus),
            "--runs",
            "1",
        ]
    )
    assert code == 0
    assert " 3 msgs " in capsys.readouterr().out


@pytest.mark.usefixtures("isolated_env")
def test_bench_with_an_empty_corpus(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_env: Path
) -> None:
    (tmp_path / "empty").mkdir()
    code = main(
        [
            "bench",
            "--config-dir",
            str(isolated_env),
            "--in-process",
            "--corpus",
            str(tmp_path / "empty"),
        ]
    )
    assert code == 1
    assert capsys.readouterr().err == "milterd bench: no messages\n"


async def _daemon_port(tmp_path: Path, nursery: trio.Nursery) -> int:
    """A single-process daemon (GTUBE and the milter headers) on a loopback port."""
    modules = (Gtube, MilterHeaders)
    config = Engine.load_config(
        None,
        {"milter": MILTER_SECTION},
        modules=modules,
        environ={"MILTERD_DATA_DIR": str(tmp_path / "data")},
    )
    engine = Engine.from_config(config, modules=modules)
    listeners = await nursery.start(
        lambda task_status: run_daemon(
            engine, MilterSettings.defaults(), listen=["127.0.0.1:0"], task_status=task_status
        )
    )
    return int(listeners[0].socket.getsockname()[1])


async def test_milter_driver_against_a_daemon(tmp_path: Path, nursery: trio.Nursery) -> None:
    port = await _daemon_port(tmp_path, nursery)
    messages = generate_corpus(12)
    with trio.fail_after(30):
        # The driver is a blocking socket loop: off the thread the daemon runs on.
        plan = await trio.to_thread.run_sync(_milter_plan, "127.0.0.1", port, messages)
        latencies, errors = await trio.to_thread.run_sync(_drive, "127.0.0.1", port, plan, 4)
    assert plan.negotiated[4:5] == b"O"
    assert all(plan.transactions)  # milterd waives every reply before end of message
    assert errors == 0
    assert len(latencies) == 12
    nursery.cancel_scope.cancel()


def _messages() -> list[bytes]:
    """Plain, multipart, broken, GTUBE (rejected), no body, and a body of several chunks."""
    head = b"From: a@sender.test\r\nTo: rcpt@example.test\r\nSubject: x\r\n"
    return [
        *generate_corpus(5),
        head + b"\r\n" + GTUBE + b"\r\n",
        head + b"\r\n",
        head + b"\r\n" + b"0123456789abcdef" * 10_000 + b"\r\n",
    ]


@pytest.mark.parametrize("on_plan", [True, False], ids=["planned", "step-by-step"])
async def test_the_lean_driver_is_answered_as_milter_exchange_is(
    tmp_path: Path, nursery: trio.Nursery, on_plan: bool
) -> None:
    port = await _daemon_port(tmp_path, nursery)
    messages = _messages()
    with trio.fail_after(30):
        plan = await trio.to_thread.run_sync(_milter_plan, "127.0.0.1", port, messages)
        if not on_plan:
            # A filter that answers the offer otherwise than before the run: each
            # connection is then driven by milter_transaction.
            plan.negotiated = encode_action(
                NegotiateReply(6, ActionFlag.ADDHDRS, ProtocolFlag.NR_HDR)
            )
        lean: dict[int, MilterReply] = {}
        _, errors = await trio.to_thread.run_sync(_drive, "127.0.0.1", port, plan, 3, lean)
        expected = []
        for (headers, body), envelope in zip(plan.prepared, plan.envelopes, strict=True):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                expected.append(await milter_exchange(stream, headers, body, envelope))
    assert errors == 0
    assert [lean[i] for i in range(len(messages))] == expected
    assert expected[5].final == ReplyCode(554, "5.7.1 Gtube pattern")
    assert all(r.final == Accept() for i, r in enumerate(expected) if i != 5)
    assert all(r.edits for i, r in enumerate(expected) if i != 5)  # the result headers
    nursery.cancel_scope.cancel()


def test_the_milter_driver_counts_failures_as_errors() -> None:
    messages = generate_corpus(4)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def hang_up() -> None:
            # The plan's probe, then filters that negotiate and close without a verdict.
            for _ in range(1 + len(messages)):
                conn, _ = server.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(encode_action(_milterd_negotiation()))
                    conn.recv(65536)

        thread = threading.Thread(target=hang_up)
        thread.start()
        plan = _milter_plan("127.0.0.1", port, messages)
        latencies, errors = _drive("127.0.0.1", port, plan, 2)
        thread.join()
    assert all(plan.transactions)
    assert (len(latencies), errors) == (4, 4)
    # Nobody listening: no plan, and every message an error.
    plan = _milter_plan("127.0.0.1", port, messages)
    assert plan.negotiated == b""
    assert plan.transactions == [None] * 4
    assert _drive("127.0.0.1", port, plan, 2)[1] == 4


def _milterd_negotiation() -> NegotiateReply:
    return negotiate_reply(
        Negotiate(6, ActionFlag(0x1FF), ProtocolFlag(0x1FFFFF)),
        actions=WANTED_ACTIONS,
        protocol=WANTED_PROTOCOL,
    )


def test_a_transaction_is_encoded_as_milter_exchange_sends_it() -> None:
    headers, body = split_for_milter(_messages()[-1])
    envelope = SmtpEnvelope(queue_id="Q1")
    negotiated = encode_action(_milterd_negotiation())
    blob = encode_transaction(headers, body, envelope, negotiated)
    assert blob is not None
    # The same bytes as the step-by-step exchange writes before the end-of-message reply.
    steps = milter_transaction(headers, body, envelope)
    assert next(steps) == OFFER_FRAME
    assert steps.send(negotiated) == blob
    # A filter that negotiated so reads it all without owing a reply before the end.
    filter_side = MilterConnection(Role.FILTER)
    filter_side.receive_data(OFFER_FRAME)
    assert isinstance(filter_side.next_event(), Negotiate)
    filter_side.send(_milterd_negotiation())
    filter_side.receive_data(blob)
    events = []
    while (event := filter_side.next_event()) is not NEED_DATA:
        assert filter_side.reply_owed is None or isinstance(event, EndOfMessage)
        events.append(event)
    assert isinstance(events[-1], EndOfMessage)
    assert sum(isinstance(e, BodyChunk) for e in events) == 3  # 160 kB in ≤ 64 KiB chunks
    with pytest.raises(StopIteration) as done:
        steps.send(encode_action(Accept()))
    reply, last = done.value.value
    assert isinstance(reply.final, Accept)
    assert last == QUIT_FRAME


def test_no_transaction_at_once_for_a_filter_that_wants_replies_before_the_end() -> None:
    headers, body = split_for_milter(generate_corpus(1)[0])
    chatty = encode_action(NegotiateReply(6, ActionFlag.ADDHDRS, ProtocolFlag.NR_CONN))
    assert encode_transaction(headers, body, SmtpEnvelope(), chatty) is None
    with pytest.raises(ValueError, match="OPTNEG"):
        encode_transaction(headers, body, SmtpEnvelope(), chatty + chatty)


def test_replies_are_decoded_as_milter_exchange_returns_them() -> None:
    frames = encode_action(_milterd_negotiation()) + b"".join(
        encode_action(a) for a in (Progress(), AddHeader("X-Spam", "yes"), Reject())
    )
    reply = _decoded(frames)
    assert isinstance(reply.negotiated, NegotiateReply)
    assert reply.edits == [AddHeader("X-Spam", "yes")]
    assert reply.final == Reject()


def test_the_http_driver_counts_what_is_not_200_ok() -> None:
    requests = _http_requests("127.0.0.1", generate_corpus(3))
    statuses = [b"200 OK", b"503 Service Unavailable", b"200 OK"]
    received = []
    with socket.create_server(("127.0.0.1", 0)) as server:

        def serve() -> None:
            for request, status in zip(requests, statuses, strict=True):
                conn, _ = server.accept()
                with conn:
                    data = b""
                    while len(data) < len(request):
                        data += conn.recv(65536)
                    received.append(data)
                    conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\n{}")

        thread = threading.Thread(target=serve)
        thread.start()
        latencies, errors = _drive_http("127.0.0.1", server.getsockname()[1], requests, 1)
        thread.join()
    assert (len(latencies), errors) == (3, 1)
    assert received == requests
    assert requests[1].startswith(b"POST /checkv2 HTTP/1.1\r\n")
    assert b"\r\nQueue-Id: B00000001\r\n" in requests[1]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["milter", "http"])
@pytest.mark.usefixtures("isolated_env")
def test_bench_spawns_a_daemon_and_measures_it(
    capsys: pytest.CaptureFixture[str], isolated_env: Path, mode: str
) -> None:
    # The default mode: `python -m milterd run` on a free loopback port, stopped with SIGTERM.
    code = main(
        [
            "bench",
            "--config-dir",
            str(isolated_env),
            "--count",
            "10",
            "--runs",
            "1",
            "--concurrency",
            "2",
            "--json",
            *(["--http"] if mode == "http" else []),
        ]
    )
    assert code == 0
    run, median = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert (run["mode"], run["messages"], run["errors"]) == (mode, 10, 0)
    assert run["cpu_ms_per_msg"] is not None  # the daemon's own CPU, read from /proc
    assert run["client_cpu_ms_per_msg"] is not None  # and the bench's own
    assert median["median"]["errors"] == 0

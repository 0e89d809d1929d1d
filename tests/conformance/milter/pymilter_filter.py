"""A reference filter on Sendmail's own libmilter (through pymilter), run as a subprocess.

Usage: ``python pymilter_filter.py <socket path> <record path>``.

libmilter's main loop is process-global and blocking, hence a separate process.  The filter
prints ``READY`` once its socket is listening, records everything it is told (callbacks and
macros) as JSON in <record path> at each end of message, and answers end of message as the
message's ``X-Test-Action`` header says.  The tests in this directory drive it with our
``MilterConnection(Role.MTA)``.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
from typing import Any

import Milter
import milter

MACROS = ("j", "{daemon_name}", "{client_addr}", "i", "{auth_authen}", "{rcpt_addr}", "{msg_id}")

_FAMILIES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6", socket.AF_UNIX: "unix"}


class RecordingFilter(Milter.Base):
    """Records every callback; replies at EOM according to X-Test-Action."""

    record_path = ""

    def __init__(self) -> None:
        self.log_entries: list[dict[str, Any]] = []
        self.action = "accept"
        self.body_bytes = b""

    def _note(self, callback: str, **fields: Any) -> None:
        macros = {}
        for name in MACROS:
            value = self.getsymval(name)
            if value is not None:
                macros[name] = value
        self.log_entries.append({"callback": callback, "macros": macros, **fields})

    def _flush(self) -> None:
        tmp = self.record_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.log_entries, fh)
        os.replace(tmp, self.record_path)

    def negotiate(self, opts: list[int]) -> Any:
        result = super().negotiate(opts)
        self._negotiated = list(opts)
        return result

    def connect(self, hostname: str, family: int, hostaddr: Any) -> Any:
        self._note(
            "connect",
            hostname=hostname,
            family=_FAMILIES.get(family, str(family)),
            hostaddr=list(hostaddr) if isinstance(hostaddr, tuple) else hostaddr,
            negotiated=self._negotiated,
        )
        return Milter.CONTINUE

    def hello(self, hostname: str) -> Any:
        self._note("helo", name=hostname)
        return Milter.CONTINUE

    def envfrom(self, f: str, *args: str) -> Any:
        self.body_bytes = b""
        self.action = "accept"
        self._note("envfrom", address=f, args=list(args))
        return Milter.CONTINUE

    def envrcpt(self, to: str, *args: str) -> Any:
        self._note("envrcpt", address=to, args=list(args))
        if to == "<reject@example.net>":
            return Milter.REJECT
        return Milter.CONTINUE

    @Milter.noreply
    def data(self) -> Any:
        self._note("data")
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name: str, value: str) -> Any:
        self._note("header", name=name, value=value)
        if name.lower() == "x-test-action":
            self.action = value.strip()
        return Milter.CONTINUE

    @Milter.noreply
    def eoh(self) -> Any:
        self._note("eoh")
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> Any:
        self.body_bytes += chunk
        self._note("body", length=len(chunk))
        return Milter.CONTINUE

    def eom(self) -> Any:
        self._note(
            "eom", body=base64.b64encode(self.body_bytes).decode("ascii"), action=self.action
        )
        self._flush()
        return self._answer(self.action)

    def _answer(self, action: str) -> Any:
        if action == "addheader":
            self.addheader("X-Added", "yes")
            return Milter.ACCEPT
        if action == "insheader":
            self.addheader("X-Inserted", "top", 0)
            return Milter.CONTINUE
        if action == "chgheader":
            self.chgheader("Subject", 1, "changed subject")
            self.chgheader("X-Test-Action", 1, "")
            return Milter.ACCEPT
        if action == "quarantine":
            self.quarantine("held for review")
            return Milter.ACCEPT
        if action == "replycode":
            self.setreply("554", "5.7.1", "Rejected 100%% spam")
            return Milter.REJECT
        if action == "tempfail":
            return Milter.TEMPFAIL
        if action == "tempfail-text":
            self.setreply("451", "4.7.1", "Try again later")
            return Milter.TEMPFAIL
        if action == "discard":
            return Milter.DISCARD
        if action == "progress":
            self.progress()
            return Milter.CONTINUE
        if action == "envelope":
            self.chgfrom("<new@example.org>", "RET=HDRS ENVID=abc")
            self.addrcpt("<added@example.net>")
            self.addrcpt("<added2@example.net>", "NOTIFY=NEVER")
            self.delrcpt("<bob@example.net>")
            return Milter.ACCEPT
        if action == "replacebody":
            self.replacebody(b"new body\r\n")
            self.replacebody(b"second chunk\r\n")
            return Milter.ACCEPT
        return Milter.ACCEPT

    def abort(self) -> Any:
        self._note("abort")
        return Milter.CONTINUE

    def close(self) -> Any:
        return Milter.CONTINUE


def main() -> None:
    socket_path, record_path = sys.argv[1], sys.argv[2]
    RecordingFilter.record_path = record_path
    Milter.factory = RecordingFilter
    # The steps of Milter.runmilter, split so we can announce readiness after the socket
    # exists instead of making the test poll for it.
    milter.set_connect_callback(Milter.connect_callback)
    milter.set_helo_callback(lambda ctx, host: ctx.getpriv().hello(host))
    milter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
    milter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
    milter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
    milter.set_eoh_callback(lambda ctx: ctx.getpriv().eoh())
    milter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
    milter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    milter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    milter.set_close_callback(Milter.close_callback)
    milter.setconn("unix:" + socket_path)
    milter.settimeout(10)
    milter.register(
        "milterd-conformance",
        data=lambda ctx: ctx.getpriv().data(),
        unknown=lambda ctx, cmd: Milter.CONTINUE,
        negotiate=Milter.negotiate_callback,
    )
    milter.opensocket(True)
    print("READY", flush=True)
    milter.main()


if __name__ == "__main__":
    main()

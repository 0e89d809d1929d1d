"""Engines for the sender-authentication tests: real modules, real DNS on loopback.

``auth_engine`` builds an engine holding only the given modules, asking the loopback
server. ``StashedDkim`` stands in for the DKIM module where a test needs chosen DKIM
outcomes rather than signed mail: it publishes ``DKIM_RESULTS`` from an ``X-Test-DKIM``
header (``d=result`` pairs), through the same stash key the real module fills.
``AuthProbe`` reports what SPF, DMARC and whitelist left in the stash, as symbol options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine import Engine, Envelope, ScanRequest
from engine.auth.results import DKIM_RESULTS, DMARC_RESULT, SPF_RESULT, DkimResult, stashed
from engine.modules.base import Module, check
from engine.pipeline.stages import Stage
from engine.symbols.spec import SymbolSpec

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from dnsserver import DnsServer

    from engine.task.task import Task

__all__ = ["AuthProbe", "StashedDkim", "auth_engine", "message", "request"]


class StashedDkim(Module):
    name = "dkim"  # takes the real module's place (and config section)
    description = "Test stand-in: DKIM results from an X-Test-DKIM header."
    symbols = (SymbolSpec("TEST_DKIM_STASHED", 0.0, "test", "DKIM results stashed"),)

    @check(produces=("TEST_DKIM_STASHED",))
    def verify(self, task: Task) -> None:
        results = []
        for value in task.message.headers.get_all("x-test-dkim"):
            for pair in value.split():
                domain, _, result = pair.partition("=")
                results.append(DkimResult(domain, "sel", result))  # type: ignore[arg-type]
        task.stash[DKIM_RESULTS] = results


class AuthProbe(Module):
    name = "auth_probe"
    description = "Test probe: what the authentication checks stashed."
    symbols = (
        SymbolSpec("PROBE_SPF", 0.0, "test", "SPF_RESULT"),
        SymbolSpec("PROBE_DMARC", 0.0, "test", "DMARC_RESULT"),
    )

    @check(produces=("PROBE_SPF", "PROBE_DMARC"), stage=Stage.POST)
    def report(self, task: Task) -> None:
        spf = stashed(task.stash, SPF_RESULT)
        if spf is not None:
            task.insert_result(
                "PROBE_SPF",
                options=[spf.result, spf.identity, spf.domain, spf.sender, str(spf.skipped)],
            )
        dmarc = stashed(task.stash, DMARC_RESULT)
        if dmarc is not None:
            task.insert_result(
                "PROBE_DMARC",
                options=[
                    dmarc.result,
                    dmarc.from_domain,
                    dmarc.policy_domain,
                    str(dmarc.policy),
                    dmarc.disposition,
                    f"spf={dmarc.spf_aligned}",
                    f"dkim={dmarc.dkim_domain or '-'}",
                ],
            )


def auth_engine(
    tmp_path: Path, server: DnsServer, modules: Sequence[type[Module]], toml: str = ""
) -> Engine:
    """An engine of ``modules`` asking ``server``, with ``toml`` appended to its config."""
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "milterd.toml").write_text(
        f'[options]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[dns]\nnameservers = ["{server.nameserver}"]\ntimeout = 0.3\nattempts = 1\n'
        f"lifetime = 1.0\n{toml}"
    )
    return Engine.from_config(Engine.load_config(conf, modules=modules), modules=modules)


def message(
    from_header: str = "Alice <alice@example.test>",
    *,
    message_id: str = "<1@example.test>",
    dkim: str = "",
) -> bytes:
    lines = [f"From: {from_header}", f"Message-ID: {message_id}", "Subject: hello"]
    if dkim:
        lines.append(f"X-Test-DKIM: {dkim}")
    return ("\r\n".join(lines) + "\r\n\r\nhello\r\n").encode()


def request(
    raw: bytes,
    *,
    client: str = "192.0.2.10",
    mail_from: str | None = "bounce@example.test",
    helo: str = "mail.example.test",
    auth_user: str | None = None,
    received_at: float | None = None,
) -> ScanRequest:
    envelope = Envelope(client_addr=client, mail_from=mail_from, helo=helo, auth_user=auth_user)
    return ScanRequest(envelope=envelope, raw=raw, received_at=received_at)

"""ARC (RFC 8617): the chain a message arrives with is validated; a forwarder seals.

Validation (filter stage): the keys of every ARC-Seal and ARC-Message-Signature are
fetched through ``ctx.dns`` at once, then dkimpy checks the chain in a worker thread
(``engine.auth.arc_chain``). Symbols as in Rspamd: ``ARC_ALLOW`` (the chain validates,
the sealing domains in the options), ``ARC_REJECT`` (a seal or the newest message
signature does not verify), ``ARC_INVALID`` (a broken structure), ``ARC_DNSFAIL`` (a
key could not be fetched: temporary), ``ARC_NA`` (no chain). The result goes to the
stash (``ARC_RESULT``) for DMARC and the Authentication-Results header.

Sealing (idempotent stage) is for mail this host forwards, decided by configuration:
mail to ``seal_recipients`` (forwarding addresses, list domains), from
``seal_networks`` or from authenticated users (``seal_authenticated``). The seal carries
our Authentication-Results (the one ``auth_results`` adds, built from the same stash, with
the same authserv-id) and goes on top of the message. A chain whose keys could not be
fetched is not sealed: a ``cv=fail`` over a passing chain would end it for everyone
downstream; the message is forwarded unsealed instead.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from engine.auth.ar_header import authserv_id_for, authserv_id_of, build_value, system_hostname
from engine.auth.arc_chain import ARC_HEADERS, SealError, seal, verify_chain
from engine.auth.dkim_dns import fetch_keys
from engine.auth.dkim_keys import DkimKeyError, SigningKey, load_key_file
from engine.auth.dkim_sign import DEFAULT_HEADERS
from engine.auth.dkim_verify import signature_keys
from engine.auth.origin import Networks, networks_key
from engine.auth.outgoing import outgoing_headers
from engine.auth.results import ARC_RESULT, ArcResult
from engine.config.schema import Key, Section
from engine.errors import ConfigError
from engine.mime.addresses import domain_of
from engine.mime.headers import HeaderList
from engine.modules.base import Module, check
from engine.pipeline.actions import Action
from engine.pipeline.stages import Stage
from engine.symbols.spec import SymbolSpec

if TYPE_CHECKING:
    from engine.task.task import Task

__all__ = ["Arc"]

log = logging.getLogger(__name__)

_SYMBOL = {
    "pass": "ARC_ALLOW",
    "reject": "ARC_REJECT",
    "invalid": "ARC_INVALID",
    "dnsfail": "ARC_DNSFAIL",
    "none": "ARC_NA",
}
_UNSEALED_ACTIONS = (Action.REJECT, Action.SOFT_REJECT, Action.GREYLIST)
_AR = "Authentication-Results"


def _strings(value: object) -> str | None:
    ok = isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)
    return None if ok else "must be a list of non-empty strings"


class Arc(Module):
    name = "arc"
    description = "ARC chain validation, and sealing of mail this host forwards."
    symbols = (
        SymbolSpec("ARC_ALLOW", -1.0, "arc", "ARC checks success"),
        SymbolSpec("ARC_REJECT", 1.0, "arc", "ARC checks failed"),
        SymbolSpec("ARC_INVALID", 0.5, "arc", "ARC structure invalid"),
        SymbolSpec("ARC_DNSFAIL", 0.0, "arc", "DNS error while checking ARC"),
        SymbolSpec("ARC_NA", 0.0, "arc", "ARC signature absent"),
    )
    settings_schema = Section(
        {
            "seal": Key((bool,), False, "Seal forwarded mail (needs domain, selector, key)."),
            "domain": Key((str,), "", "Sealing domain (d=)."),
            "selector": Key((str,), "", "Sealing selector (s=)."),
            "key": Key((str,), "", "Private RSA key file of the sealing selector."),
            "authserv_id": Key(
                (str,),
                "",
                "authserv-id of the results sealed ('': [auth_results] authserv_id, else "
                "the MTA's host name).",
            ),
            "seal_recipients": Key(
                (list,),
                [],
                "Seal mail to these recipients: addresses, or @domain for a whole domain "
                "(forwarding addresses, mailing lists).",
                check=_strings,
            ),
            "seal_networks": networks_key([], "Seal mail from these client networks."),
            "seal_authenticated": Key((bool,), False, "Seal mail from SMTP-authenticated users."),
        },
        "ARC validation and sealing: [arc].",
    )

    def setup(self) -> None:
        self._limiter = trio.CapacityLimiter(2)  # the "dkim_crypto" pool of this module
        self._networks = Networks(self.settings["seal_networks"])
        recipients = [str(r).lower() for r in self.settings["seal_recipients"]]  # type: ignore[attr-defined]
        self._rcpt_domains = {r[1:] for r in recipients if r.startswith("@")}
        self._rcpt_addresses = {r for r in recipients if not r.startswith("@")}
        self._hostname = system_hostname()
        self._key: SigningKey | None = self._load_key() if self.settings["seal"] else None

    def _load_key(self) -> SigningKey:
        config = self.ctx.config
        for setting in ("domain", "selector", "key"):
            if not self.settings[setting]:
                problem = config.problem((self.name, setting), "is required when seal = true")
                raise ConfigError([problem])
        try:
            key = load_key_file(Path(str(self.settings["key"])))
        except DkimKeyError as exc:
            raise ConfigError([config.problem((self.name, "key"), str(exc))]) from None
        if key.key_type != "rsa":
            message = "ARC seals with RSA keys only (RFC 8617 §4.1.2)"
            raise ConfigError([config.problem((self.name, "key"), message)])
        return key

    @check(produces=tuple(_SYMBOL.values()))
    async def verify(self, task: Task) -> None:
        headers = task.message.headers
        values = [
            v for name in ("arc-seal", "arc-message-signature") for v in headers.get_all(name)
        ]
        if not values and not headers.get_all("arc-authentication-results"):
            task.stash[ARC_RESULT] = ArcResult("none")
            task.insert_result("ARC_NA")
            return
        if task.message.truncated:
            log.info("arc: message only partly kept (max_message_size); chain not checked")
            return
        keys = signature_keys(values)
        lookups = await fetch_keys(self.ctx.dns, (k.name for k in keys if k.name))
        job = partial(verify_chain, task.message.raw, lookups)
        checked = await trio.to_thread.run_sync(job, limiter=self._limiter)
        task.stash[ARC_RESULT] = checked.result
        symbol = _SYMBOL[checked.status]
        if checked.status == "pass":
            options = [f"{d}:i={i}" for i, d in enumerate(checked.result.sealers, start=1)]
        else:
            options = [checked.result.reason] if checked.result.reason else []
        task.insert_result(symbol, options=options)

    def _wanted(self, task: Task) -> bool:
        env = task.envelope
        if self.settings["seal_authenticated"] and env.auth_user:
            return True
        if self._networks.holds_client(env):
            return True
        return any(
            r.lower() in self._rcpt_addresses or domain_of(r) in self._rcpt_domains
            for r in env.rcpts
        )

    @check(produces=(), stage=Stage.IDEMPOTENT, priority=18)
    async def seal(self, task: Task) -> None:
        key = self._key
        if key is None or task.action in _UNSEALED_ACTIONS or not self._wanted(task):
            return
        if task.message.truncated or task.has("ARC_DNSFAIL"):
            log.info("arc: chain unchecked or message partly kept; forwarded unsealed")
            return
        configured = str(self.settings["authserv_id"]) or str(
            self.ctx.config.section("auth_results").get("authserv_id", "")
        )
        authserv_id = authserv_id_for(task, configured, self._hostname)
        message = self._with_our_results(task, authserv_id)
        present = {name.lower() for name, _ in task.message.headers}
        include = [h for h in DEFAULT_HEADERS if h in present and h not in ARC_HEADERS]
        job = partial(
            seal,
            message,
            key,
            str(self.settings["domain"]),
            str(self.settings["selector"]),
            authserv_id,
            include,
        )
        try:
            arc_set = await trio.to_thread.run_sync(job, limiter=self._limiter)
        except SealError as exc:
            log.warning("arc: not sealed: %s", exc)
            return
        task.milter.add_headers.extend(arc_set)

    def _with_our_results(self, task: Task, authserv_id: str) -> bytes:
        """The message with our Authentication-Results on top and none forged below."""
        headers = [(_AR, build_value(task, authserv_id))]
        headers.extend(
            (name, value)
            for name, value in outgoing_headers(task, self.ctx.config)
            if name.lower() != _AR.lower() or authserv_id_of(value) != authserv_id
        )
        return HeaderList(headers).to_bytes() + b"\r\n" + task.message.body

"""DKIM signing of outbound mail: our users' and our networks' messages leave signed.

Theory of operation: a message is signed when it comes from an SMTP-authenticated user
(``sign_authenticated``) or from ``sign_networks``, and its signing domain (the From
header's, or the envelope sender's with ``use_domain = "envelope"``) has a key. Keys
come from ``key_dir`` (``<domain>.<selector>.key``, as ``milterd dkim-keygen`` writes
them; every key of the domain signs, so an RSA and an Ed25519 key give two signatures)
and from ``[dkim_signing.domains."example.com"]`` entries; all are read at start and at
reload, so a missing or unreadable key stops milterd there, not a message later.

The signature is computed in the idempotent stage, over the message as it will leave
(the rewritten Subject when that is the verdict), in a worker thread, and handed to the
MTA as a ``DKIM-Signature`` header at the top of the message. A message refused, greylisted
or kept only in part is not signed; nor is one whose From domain differs from the
envelope sender's unless ``allow_hdrfrom_mismatch``: a user must not sign for domains
that are not theirs.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from engine.auth.dkim_keys import DkimKeyError, SigningKey, key_directory, load_key_file
from engine.auth.dkim_sign import (
    DEFAULT_HEADERS,
    DEFAULT_OVERSIGN,
    NEVER_SIGN,
    SigningError,
    sign,
    signed_header_list,
)
from engine.auth.origin import LOOPBACK, Networks, networks_key
from engine.auth.outgoing import outgoing_headers
from engine.config.schema import Key, Section, TableOf
from engine.errors import ConfigError
from engine.mime.addresses import domain_of, parse_address_list
from engine.mime.headers import HeaderList
from engine.modules.base import Module, check
from engine.pipeline.actions import Action
from engine.pipeline.stages import Stage

if TYPE_CHECKING:
    from engine.errors import ConfigProblem
    from engine.task.task import Task

__all__ = ["DkimSigning"]

log = logging.getLogger(__name__)

DEFAULT_KEY_DIR = "/etc/milterd/dkim"
_UNSIGNED_ACTIONS = (Action.REJECT, Action.SOFT_REJECT, Action.GREYLIST)
_SIGN_THREADS = 2


def _header_names(value: object) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return "must be a list of header names"
    bad = sorted({v.lower() for v in value} & NEVER_SIGN)
    return f"{', '.join(bad)} must not be signed (RFC 6376 §5.4)" if bad else None


class DkimSigning(Module):
    name = "dkim_signing"
    description = "DKIM signatures on outbound mail (authenticated users, local networks)."
    settings_schema = Section(
        {
            "sign_authenticated": Key((bool,), True, "Sign mail from SMTP-authenticated users."),
            "sign_networks": networks_key(LOOPBACK, "Sign mail from these client networks."),
            "use_domain": Key(
                (str,),
                "header",
                "Which domain signs: the From header's ('header', what DMARC aligns) or "
                "the envelope sender's ('envelope').",
                choices=("header", "envelope"),
            ),
            "allow_hdrfrom_mismatch": Key(
                (bool,),
                False,
                "Sign even when the From header's domain is not the envelope sender's.",
            ),
            "sign_subdomains": Key(
                (bool,),
                True,
                "A domain with no key of its own is signed with its closest parent "
                "domain's key (sub.example.com with example.com's; DMARC relaxed "
                "alignment accepts it).",
            ),
            "key_dir": Key(
                (str,),
                DEFAULT_KEY_DIR,
                "Directory of keys named <domain>.<selector>.key (missing: no keys).",
            ),
            "selector": Key((str,), "", "Only keys of this selector from key_dir ('': every one)."),
            "domains": TableOf(
                Section(
                    {
                        "selector": Key((str,), "", "The selector.", required=True),
                        "path": Key((str,), "", "The private key file.", required=True),
                    }
                ),
                'Keys given one by one: [dkim_signing.domains."example.com"].',
            ),
            "canonicalization": Key(
                (str,),
                "relaxed/relaxed",
                "Header/body canonicalization (RFC 6376 §3.4).",
                choices=("relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple"),
            ),
            "headers": Key(
                (list,),
                list(DEFAULT_HEADERS),
                "Headers signed as often as they occur.",
                check=_header_names,
            ),
            "oversign": Key(
                (list,),
                list(DEFAULT_OVERSIGN),
                "Headers signed once more than they occur, so none can be added in transit.",
                check=_header_names,
            ),
        },
        "DKIM signing: [dkim_signing].",
    )

    def setup(self) -> None:
        self._networks = Networks(self.settings["sign_networks"])
        self._keys = self._load_keys()
        self._limiter = trio.CapacityLimiter(_SIGN_THREADS)
        header, body = str(self.settings["canonicalization"]).split("/")
        self._canon = (header, body)

    def _load_keys(self) -> dict[str, list[tuple[str, SigningKey]]]:
        keys: dict[str, list[tuple[str, SigningKey]]] = {}
        problems: list[ConfigProblem] = []
        config = self.ctx.config
        wanted = str(self.settings["selector"])
        try:
            found = key_directory(Path(str(self.settings["key_dir"])))
        except DkimKeyError as exc:
            raise ConfigError([config.problem((self.name, "key_dir"), str(exc))]) from None
        sources: dict[tuple[str, str], tuple[tuple[str, ...], Path]] = {
            (domain, selector): ((self.name, "key_dir"), path)
            for (domain, selector), path in found.items()
            if not wanted or selector == wanted
        }
        domains = self.settings["domains"]
        assert isinstance(domains, dict)
        for domain, entry in domains.items():
            path = Path(str(entry["path"]))
            sources[(domain.lower().rstrip("."), str(entry["selector"]))] = (
                (self.name, "domains", domain, "path"),
                path,
            )
        for (domain, selector), (where, path) in sources.items():
            try:
                keys.setdefault(domain, []).append((selector, load_key_file(path)))
            except DkimKeyError as exc:
                problems.append(config.problem(where, str(exc)))
        if problems:
            raise ConfigError(problems)
        log.debug("dkim_signing: keys for %d domains", len(keys))
        return keys

    def _wanted(self, task: Task) -> bool:
        env = task.envelope
        if self.settings["sign_authenticated"] and env.auth_user:
            return True
        return self._networks.holds_client(env)

    def _domain(self, task: Task) -> str | None:
        """The signing domain, or None when the message must not be signed."""
        froms = task.message.headers.get_all("from")
        addresses = parse_address_list(froms[0]) if len(froms) == 1 else []
        header = domain_of(addresses[0][1]) if len(addresses) == 1 else ""
        envelope = domain_of(task.envelope.mail_from or "")
        if self.settings["use_domain"] == "envelope":
            return envelope or None
        if not header:
            return None  # no From, several, or a group: nothing DMARC could align anyway
        if envelope and envelope != header and not self.settings["allow_hdrfrom_mismatch"]:
            log.info("dkim_signing: From domain %s is not the sender's %s", header, envelope)
            return None
        return header

    def _keys_for(self, domain: str) -> tuple[str, list[tuple[str, SigningKey]]] | None:
        labels = domain.split(".")
        for start in range(len(labels) - 1):
            candidate = ".".join(labels[start:])
            if candidate in self._keys:
                return candidate, self._keys[candidate]
            if not self.settings["sign_subdomains"]:
                break
        return None

    @check(produces=(), stage=Stage.IDEMPOTENT, priority=20)
    async def sign(self, task: Task) -> None:
        if not self._keys or task.action in _UNSIGNED_ACTIONS or not self._wanted(task):
            return
        domain = self._domain(task)
        found = self._keys_for(domain) if domain else None
        if found is None:
            log.debug("dkim_signing: no key for %s", domain or "(no domain)")
            return
        if task.message.truncated:
            log.warning("dkim_signing: message only partly kept (max_message_size); unsigned")
            return
        signer, keys = found
        message = self._outgoing(task)
        counts: dict[str, int] = {}
        for name, _ in task.message.headers:
            counts[name.lower()] = counts.get(name.lower(), 0) + 1
        include = signed_header_list(
            counts,
            [str(h) for h in self.settings["headers"]],  # type: ignore[attr-defined]
            [str(h) for h in self.settings["oversign"]],  # type: ignore[attr-defined]
        )
        for selector, key in keys:
            job = partial(sign, message, key, signer, selector, include, self._canon)
            try:
                value = await trio.to_thread.run_sync(job, limiter=self._limiter)
            except SigningError as exc:
                log.warning("dkim_signing: %s s=%s: not signed: %s", signer, selector, exc)
                continue
            task.milter.add_headers.append(("DKIM-Signature", value))

    def _outgoing(self, task: Task) -> bytes:
        """The message as the MTA will pass it on (the verdict may rewrite the Subject)."""
        if task.action is not Action.REWRITE_SUBJECT:
            return task.message.raw
        headers = HeaderList(outgoing_headers(task, self.ctx.config))
        return headers.to_bytes() + b"\r\n" + task.message.body

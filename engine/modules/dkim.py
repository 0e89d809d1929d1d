"""DKIM verification (RFC 6376; Ed25519 signatures, RFC 8463): every signature checked.

Theory of operation: the DKIM-Signature headers are read for their ``d=`` and ``s=``; the
keys are looked up concurrently through ``ctx.dns`` (so the resolver's cache, in-flight
sharing and failure classes apply); then dkimpy checks every signature in one worker
thread from the ``dkim_crypto`` pool, with the keys already in hand. Each signature's
outcome goes to the stash (``DKIM_RESULTS``, header order) for DMARC and the
Authentication-Results header; the symbols summarise them with the domains as options,
as Rspamd writes them (``example.com:s=selector``):

* ``R_DKIM_ALLOW``: a signature verified;
* ``R_DKIM_REJECT``: a signature did not (altered body or header, wrong key);
* ``R_DKIM_TEMPFAIL``: a key could not be fetched (DNS trouble: never a verdict);
* ``R_DKIM_PERMFAIL``: a signature or key that cannot be used (no key, malformed,
  expired, too short a key);
* ``R_DKIM_NA``: no signature at all.

One message can carry several of them (a good and a broken signature). Mail from the
local networks or from authenticated users is not checked by default (it is ours; the
signing module signs it). A message milterd only kept part of (``max_message_size``) is
not checked either: its body hash could only fail.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

import trio

from engine.auth.dkim_dns import fetch_keys
from engine.auth.dkim_verify import signature_keys, verify_signatures
from engine.auth.origin import LOOPBACK, Networks, networks_key
from engine.auth.results import DKIM_RESULTS
from engine.config.schema import Key, Section, between
from engine.modules.base import Module, check
from engine.symbols.spec import SymbolSpec

if TYPE_CHECKING:
    from engine.auth.results import DkimResult
    from engine.task.task import Task

__all__ = ["CRYPTO_THREADS", "Dkim"]

log = logging.getLogger(__name__)

# Verification is Python code holding the GIL (canonicalisation, pow): more threads than
# this add switching, not throughput; the thread is there to keep the event loop answering
# while a large message is hashed.
CRYPTO_THREADS = 2
_KEY_CACHE_SIZE = 512
_SYMBOL_FOR = {
    "pass": "R_DKIM_ALLOW",
    "fail": "R_DKIM_REJECT",
    "temperror": "R_DKIM_TEMPFAIL",
    "permerror": "R_DKIM_PERMFAIL",
}


class Dkim(Module):
    name = "dkim"
    description = "DKIM signature verification (RSA and Ed25519)."
    symbols = (
        SymbolSpec("R_DKIM_ALLOW", -0.2, "dkim", "DKIM verification succeed"),
        SymbolSpec("R_DKIM_REJECT", 1.0, "dkim", "DKIM verification failed"),
        SymbolSpec("R_DKIM_TEMPFAIL", 0.0, "dkim", "DKIM verification soft-failed"),
        SymbolSpec("R_DKIM_PERMFAIL", 0.0, "dkim", "DKIM verification hard-failed (invalid)"),
        SymbolSpec("R_DKIM_NA", 0.0, "dkim", "Missing DKIM signature"),
    )
    settings_schema = Section(
        {
            "max_signatures": Key(
                (int,),
                5,
                "Signatures checked per message, from the top; the rest are ignored (each "
                "costs a DNS lookup and a hash of the body).",
                check=between(1, 50),
            ),
            "min_key_bits": Key(
                (int,),
                1024,
                "Shortest RSA key accepted (RFC 8301 §3.2: 1024); shorter ones permerror.",
                check=between(512, 4096),
            ),
            "skip_authenticated": Key(
                (bool,), True, "Do not check mail from SMTP-authenticated users."
            ),
            "skip_networks": networks_key(
                LOOPBACK, "Do not check mail from these client networks (our own)."
            ),
        },
        "DKIM verification: [dkim].",
    )

    def setup(self) -> None:
        self._skip = Networks(self.settings["skip_networks"])
        self._limiter = trio.CapacityLimiter(CRYPTO_THREADS)  # the "dkim_crypto" pool
        # dkimpy's parse of a key record (base64, ASN.1) costs more than the cached DNS
        # answer it comes from; keyed by the record text, so a changed key is re-read.
        self._keys: dict[bytes, tuple[object, int, bytes, bool]] = {}

    def _skipped(self, task: Task) -> bool:
        env = task.envelope
        if self.settings["skip_authenticated"] and env.auth_user:
            return True
        return self._skip.holds_client(env)

    @check(
        produces=(
            "R_DKIM_ALLOW",
            "R_DKIM_REJECT",
            "R_DKIM_TEMPFAIL",
            "R_DKIM_PERMFAIL",
            "R_DKIM_NA",
        )
    )
    async def verify(self, task: Task) -> None:
        if self._skipped(task):
            return
        values = task.message.headers.get_all("dkim-signature")
        if not values:
            task.stash[DKIM_RESULTS] = []
            task.insert_result("R_DKIM_NA")
            return
        if task.message.truncated:
            log.info("dkim: message only partly kept (max_message_size); not verified")
            return
        limit = int(self.settings["max_signatures"])  # type: ignore[call-overload]
        keys = signature_keys(values[:limit])
        lookups = await fetch_keys(self.ctx.dns, (k.name for k in keys if k.name))
        if len(self._keys) > _KEY_CACHE_SIZE:
            self._keys.clear()
        verify = partial(
            verify_signatures,
            task.message.raw,
            keys,
            lookups,
            minkey=int(self.settings["min_key_bits"]),  # type: ignore[call-overload]
            key_cache=self._keys,
        )
        results = await trio.to_thread.run_sync(verify, limiter=self._limiter)
        task.stash[DKIM_RESULTS] = results
        self._insert(task, results)

    @staticmethod
    def _insert(task: Task, results: list[DkimResult]) -> None:
        options: dict[str, list[str]] = {}
        for result in results:
            symbol = _SYMBOL_FOR.get(result.result)
            if symbol is not None:
                options.setdefault(symbol, []).append(f"{result.domain}:s={result.selector}")
            if result.result != "pass":
                log.debug(
                    "dkim: %s s=%s: %s (%s)",
                    result.domain,
                    result.selector,
                    result.result,
                    result.reason,
                )
        for symbol, domains in options.items():
            task.insert_result(symbol, options=domains)

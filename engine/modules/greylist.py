"""Greylisting: the greylist rung tempfails only a sender that has not yet retried.

A message whose score lands on the greylist rung is identified by its triplet (client
network, envelope sender, recipients). The first attempt is recorded and refused with
451; a retry before ``timeout`` is refused again; a retry after it passes, and the rung
falls back to no action. Real MTAs retry within minutes, most spam engines never do.
Records expire after ``expire`` seconds. Without a client address (a file scanned from
the command line) there is no triplet and the rung is reported as it is. When the store
cannot answer, the message passes: greylisting without memory would tempfail every retry
until the sender gave up and bounced the mail.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import struct
import time
from typing import TYPE_CHECKING

from engine.config.schema import Key, Section, at_least, between
from engine.modules.base import Module, check
from engine.pipeline.actions import Action
from engine.pipeline.stages import Stage
from engine.storage import StoreError
from engine.symbols.spec import SymbolSpec

if TYPE_CHECKING:
    from engine.task.task import Task

__all__ = ["Greylist"]

log = logging.getLogger(__name__)


class Greylist(Module):
    name = "greylist"
    description = "Greylisting of messages that land on the greylist rung."
    symbols = (
        SymbolSpec("GREYLIST_NEW", 0.0, "greylist", "First delivery attempt: greylisted"),
        SymbolSpec("GREYLIST_EARLY", 0.0, "greylist", "Retried before the greylisting delay"),
        SymbolSpec("GREYLIST_PASS", 0.0, "greylist", "Retried after the greylisting delay: passed"),
    )
    settings_schema = Section(
        {
            "timeout": Key(
                (float,),
                300.0,
                "Seconds a sender must wait before a retry passes.",
                check=at_least(0),
            ),
            "expire": Key(
                (float,), 86400.0, "Seconds a triplet is remembered.", check=at_least(60)
            ),
            "ipv4_mask": Key(
                (int,), 24, "Client IPv4 prefix that counts as one sender.", check=between(8, 32)
            ),
            "ipv6_mask": Key(
                (int,), 64, "Client IPv6 prefix that counts as one sender.", check=between(16, 128)
            ),
        }
    )

    @check(produces=("GREYLIST_NEW", "GREYLIST_EARLY", "GREYLIST_PASS"), stage=Stage.POST)
    async def triplet(self, task: Task) -> None:
        key = self._key(task) if task.action is Action.GREYLIST else None
        if key is None:
            return
        store = self.ctx.store
        now = time.time()
        try:
            seen = await store.get(key)
            if seen is None:
                expire = float(self.settings["expire"])  # type: ignore[arg-type]
                await store.set(key, struct.pack("!d", now), ttl=expire)
        except StoreError as exc:
            log.warning("greylist: store unavailable (%s); letting the message pass", exc)
            task.force_action(Action.NO_ACTION, self.name)
            return
        if seen is None:
            task.insert_result("GREYLIST_NEW")
            return
        waited = now - struct.unpack("!d", seen)[0]
        timeout = float(self.settings["timeout"])  # type: ignore[arg-type]
        if waited < timeout:
            task.insert_result("GREYLIST_EARLY", options=[f"{timeout - waited:.0f}s left"])
            return
        task.insert_result("GREYLIST_PASS")
        task.force_action(Action.NO_ACTION, self.name)

    def _key(self, task: Task) -> str | None:
        env = task.envelope
        if not env.client_addr:
            return None
        try:
            address = ipaddress.ip_address(env.client_addr)
        except ValueError:
            return None
        mask = self.settings["ipv4_mask"] if address.version == 4 else self.settings["ipv6_mask"]
        network = ipaddress.ip_network(f"{address}/{mask}", strict=False)
        rcpts = ",".join(sorted(r.lower() for r in env.rcpts))
        triplet = f"{network}|{(env.mail_from or '').lower()}|{rcpts}"
        return (
            "gl:"
            + hashlib.blake2b(
                triplet.encode("utf-8", "surrogateescape"), digest_size=16
            ).hexdigest()
        )

"""The Authentication-Results header (RFC 8601): what SPF, DKIM, DMARC and ARC found.

The header is added at the top of the message by the milter (see ``milterd/verdict.py``)
under our authserv-id: ``authserv_id`` if set, else the MTA's own name (the ``j`` macro,
Postfix's ``$myhostname``), else this host's name. Downstream filters and mail clients
trust a header only when its authserv-id is one of their own ADMD's, so a header that
arrives with the message claiming our authserv-id is a forgery and is removed (RFC 8601
§5), whatever else happens; headers of other authserv-ids are left alone.

Mail from our own networks and authenticated users gets no header by default (as in
Rspamd): the checks skip it, and a header on outbound mail would only tell the
recipient's filters about our internals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.auth.ar_header import authserv_id_for, authserv_id_of, build_value, system_hostname
from engine.auth.origin import LOOPBACK, Networks, networks_key
from engine.config.schema import Key, Section
from engine.modules.base import Module, check
from engine.pipeline.stages import Stage

if TYPE_CHECKING:
    from engine.task.task import Task

__all__ = ["HEADER", "AuthResults"]

HEADER = "Authentication-Results"


class AuthResults(Module):
    name = "auth_results"
    description = "The Authentication-Results header, and removal of forged ones."
    settings_schema = Section(
        {
            "authserv_id": Key(
                (str,),
                "",
                "Our authserv-id ('': the MTA's host name from the j macro, else this "
                "host's name). Keep it the same on every MX of the domain.",
            ),
            "skip_authenticated": Key(
                (bool,), True, "No header on mail from SMTP-authenticated users."
            ),
            "skip_networks": networks_key(LOOPBACK, "No header on mail from these networks."),
        },
        "The Authentication-Results header: [auth_results].",
    )

    def setup(self) -> None:
        self._skip = Networks(self.settings["skip_networks"])
        self._hostname = system_hostname()

    def authserv_id(self, task: Task) -> str:
        return authserv_id_for(task, str(self.settings["authserv_id"]), self._hostname)

    @check(produces=(), stage=Stage.IDEMPOTENT, priority=15)
    def header(self, task: Task) -> None:
        ours = self.authserv_id(task)
        forged = [
            index
            for index, value in enumerate(task.message.headers.get_all(HEADER), start=1)
            if authserv_id_of(value) == ours
        ]
        if forged:
            # One index per name is what the result can carry: one forgery goes alone, and
            # with several every copy goes (RFC 8601 §5 lets us drop other ADMDs' too).
            task.milter.remove_headers[HEADER] = forged[0] if len(forged) == 1 else 0
        env = task.envelope
        if (self.settings["skip_authenticated"] and env.auth_user) or self._skip.holds_client(env):
            return
        task.milter.add_headers.append((HEADER, build_value(task, ours)))

"""When the milter is gone or broken, Postfix's own ``milter_default_action`` decides.

The same Postfix instance has one smtpd service per case (``master.cf`` ``-o`` overrides):
a milter address that refuses connections, and one that answers the negotiation with
bytes that are no milter packet, each with ``milter_default_action`` tempfail and accept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from e2e_support import message

if TYPE_CHECKING:
    from e2e_support import MilterEndpoints, Postfix

pytestmark = [pytest.mark.e2e, pytest.mark.postfix]


@pytest.mark.parametrize("milter", ["dead", "garbage"])
def test_tempfail_default_action_defers_the_client(
    postfix: Postfix, milter_endpoints: MilterEndpoints, milter: str
) -> None:
    accepted_before = milter_endpoints.garbage.accepted

    reply = postfix.send(message(f"{milter} milter, tempfail"), f"{milter}_tempfail")

    # Postfix answers 451 at the first command it consults the milter for (not
    # necessarily DATA): the code is what the client acts on.
    assert reply.code == 451, reply
    assert reply.text.startswith("4.7.1 "), reply
    assert reply.queue_id is None
    if milter == "garbage":
        assert milter_endpoints.garbage.accepted > accepted_before


@pytest.mark.parametrize("milter", ["dead", "garbage"])
def test_accept_default_action_delivers_unfiltered(
    postfix: Postfix, milter_endpoints: MilterEndpoints, milter: str
) -> None:
    accepted_before = milter_endpoints.garbage.accepted
    offset = postfix.log_offset()

    reply = postfix.send(message(f"{milter} milter, accept"), f"{milter}_accept")

    assert reply.code == 250, reply
    assert reply.queue_id is not None
    delivered = postfix.delivered(reply.queue_id)
    assert delivered.get_all("Subject") == [f"{milter} milter, accept"]
    for name in ("X-Spamd-Result", "X-Spam-Status", "X-Spam"):
        assert delivered.get_all(name) is None, name
    # Postfix noticed and said so
    port = milter_endpoints.dead_port if milter == "dead" else milter_endpoints.garbage.port
    postfix.wait_log(rf"(?i)warning: .*milter.*inet:127\.0\.0\.1:{port}\b", offset)
    if milter == "garbage":
        assert milter_endpoints.garbage.accepted > accepted_before

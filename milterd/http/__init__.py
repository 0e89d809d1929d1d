"""The HTTP side of milterd: Rspamd's scan API and controller, on h11 and trio.

One file one job: ``protocol`` (h11 driving, limits), ``compression`` (zstd),
``scan_api`` (``/checkv2``), ``controller`` (its endpoints), ``auth`` (passwords, trusted
networks), ``policy`` (saving actions, scores, maps), ``metrics`` (``/stat``,
``/metrics``), ``history`` (``/history`` in the Store), ``errors`` (``/errors``),
``settings`` (``[http]``, ``[controller]``), ``server`` (listeners and connections).
"""

from milterd.http.auth import hash_password, verify_password
from milterd.http.context import HttpContext
from milterd.http.server import HttpFrontend
from milterd.http.settings import (
    CONTROLLER_SECTION,
    HTTP_SECTION,
    ControllerSettings,
    HttpSettings,
)

__all__ = [
    "CONTROLLER_SECTION",
    "HTTP_SECTION",
    "ControllerSettings",
    "HttpContext",
    "HttpFrontend",
    "HttpSettings",
    "hash_password",
    "verify_password",
]

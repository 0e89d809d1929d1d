"""The ``[http]`` (scan API) and ``[controller]`` sections, and their typed values.

Listen addresses are bound at start-up and change only at a restart; everything else
(passwords, trusted networks, limits) is read again at every reload.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.config import Config, Key, Section, at_least, validate
from milterd.http.auth import HASH_PREFIX, parse_networks

if TYPE_CHECKING:
    from collections.abc import Mapping

    from milterd.http.auth import Network

__all__ = [
    "CONTROLLER_SECTION",
    "DEFAULT_CONTROLLER_LISTEN",
    "DEFAULT_HTTP_LISTEN",
    "HTTP_SECTION",
    "ControllerSettings",
    "HttpSettings",
    "check_listen",
]

DEFAULT_HTTP_LISTEN = "127.0.0.1:11333"
DEFAULT_CONTROLLER_LISTEN = "127.0.0.1:11334"


def check_listen(value: object) -> str | None:
    """HOST:PORT, [IPv6]:PORT or unix:/path; a list of them; ``[]`` switches the listener off."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str) or not item:
            return "must be an address string or a list of them ([] for none)"
        if item.startswith("unix:"):
            if not item[5:].startswith("/"):
                return f"{item!r}: unix sockets need an absolute path"
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
            return f"{item!r}: expected HOST:PORT, [IPv6]:PORT or unix:/path"
    return None


def _password_hash(value: object) -> str | None:
    # Plain-text passwords are refused: a config file is read by more people than should
    # know the password, and backups keep it forever.
    if value == "" or (isinstance(value, str) and value.startswith(HASH_PREFIX)):
        return None
    return "must be a hash made by `milterd pw` ($scrypt$...), or '' for none"


def _networks(value: object) -> str | None:
    if not isinstance(value, list):
        return "must be a list of addresses or CIDR networks"
    for item in value:
        try:
            ipaddress.ip_network(str(item).strip(), strict=False)
        except ValueError:
            return f"{item!r} is not an IP address or CIDR network"
    return None


_MESSAGE_SIZE = Key(
    (int,),
    50 * 1024 * 1024,
    "Largest request body accepted (bytes, after decompression); a larger one gets 413 "
    "before it is read.",
    check=at_least(1024),
)
_REQUEST_TIMEOUT = Key(
    (float,),
    60.0,
    "Seconds a client has to send a whole request (and an idle keep-alive connection stays open).",
    check=at_least(0.1),
)

HTTP_SECTION = Section(
    {
        "listen": Key(
            (str, list),
            DEFAULT_HTTP_LISTEN,
            "Where the Rspamd-compatible scan API listens (/checkv2, /ping): HOST:PORT, "
            "[IPv6]:PORT or unix:/path; a list; [] for none.",
            check=check_listen,
        ),
        "socket_mode": Key((int,), 0o660, "Permissions of a unix socket."),
        "max_message_size": _MESSAGE_SIZE,
        "request_timeout": _REQUEST_TIMEOUT,
        "scan_timeout": Key(
            (float,),
            20.0,
            "Seconds a scan may take before the client gets 504.",
            check=at_least(0.01),
        ),
    },
    "The HTTP scan API, compatible with Rspamd's protocol (see docs/http-api.md).",
)

CONTROLLER_SECTION = Section(
    {
        "listen": Key(
            (str, list),
            DEFAULT_CONTROLLER_LISTEN,
            "Where the controller listens (/stat, /history, /learnspam, /metrics …): "
            "HOST:PORT, [IPv6]:PORT or unix:/path; a list; [] for none.",
            check=check_listen,
        ),
        "socket_mode": Key(
            (int,),
            0o660,
            "Permissions of a unix socket (its clients need no password: see the docs).",
        ),
        "password": Key(
            (str,),
            "",
            "Hash of the password for read-only endpoints (`milterd pw` makes it); the "
            "enable password is accepted there too.",
            check=_password_hash,
        ),
        "enable_password": Key(
            (str,),
            "",
            "Hash of the password for endpoints that change something (learn, save, reset).",
            check=_password_hash,
        ),
        "trusted_networks": Key(
            (list,),
            [],
            "Client networks that need no password, with full rights (Rspamd's secure_ip). "
            "local.d files add to this list.",
            check=_networks,
            extend=True,
        ),
        "history_rows": Key(
            (int,), 200, "Recent scans kept for /history (in the Store).", check=at_least(1)
        ),
        "max_message_size": _MESSAGE_SIZE,
        "request_timeout": _REQUEST_TIMEOUT,
    },
    "The controller: statistics, history, learning, actions and scores, maps, metrics.",
)


def _listen_tuple(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)


def _section(config: Config, name: str, schema: Section) -> Mapping[str, object]:
    """The section as configured, or its defaults when the config was loaded without it."""
    section = config.data.get(name)
    if isinstance(section, dict):
        return section
    defaults, problems = validate(schema, {})
    assert not problems, problems
    return defaults


@dataclass(slots=True, frozen=True)
class ControllerSettings:
    """``[controller]`` as typed values."""

    listen: tuple[str, ...]
    socket_mode: int
    password: str
    enable_password: str
    trusted_networks: tuple[Network, ...]
    history_rows: int
    max_message_size: int
    request_timeout: float

    @classmethod
    def from_section(cls, section: Mapping[str, object]) -> ControllerSettings:
        trusted = section["trusted_networks"]
        assert isinstance(trusted, list)
        return cls(
            listen=_listen_tuple(section["listen"]),
            socket_mode=int(section["socket_mode"]),  # type: ignore[call-overload]
            password=str(section["password"]),
            enable_password=str(section["enable_password"]),
            trusted_networks=parse_networks(str(t) for t in trusted),
            history_rows=int(section["history_rows"]),  # type: ignore[call-overload]
            max_message_size=int(section["max_message_size"]),  # type: ignore[call-overload]
            request_timeout=float(section["request_timeout"]),  # type: ignore[arg-type]
        )


@dataclass(slots=True, frozen=True)
class HttpSettings:
    """``[http]`` and ``[controller]`` together: what the daemon's HTTP side needs."""

    listen: tuple[str, ...]
    socket_mode: int
    max_message_size: int
    request_timeout: float
    scan_timeout: float
    controller: ControllerSettings

    @classmethod
    def from_config(cls, config: Config) -> HttpSettings:
        http = _section(config, "http", HTTP_SECTION)
        return cls(
            listen=_listen_tuple(http["listen"]),
            socket_mode=int(http["socket_mode"]),  # type: ignore[call-overload]
            max_message_size=int(http["max_message_size"]),  # type: ignore[call-overload]
            request_timeout=float(http["request_timeout"]),  # type: ignore[arg-type]
            scan_timeout=float(http["scan_timeout"]),  # type: ignore[arg-type]
            controller=ControllerSettings.from_section(
                _section(config, "controller", CONTROLLER_SECTION)
            ),
        )

    @classmethod
    def defaults(cls) -> HttpSettings:
        """The shipped defaults (tests replace ``listen`` with ``dataclasses.replace``)."""
        return cls.from_config(Config({}))

"""Controller authentication, Rspamd's two-level model with hashed passwords.

Theory of operation:

* Two passwords, both stored as scrypt hashes (``milterd pw`` makes them; the hash
  carries its own parameters, so they can be raised later without breaking old hashes):
  ``password`` opens the read-only endpoints, ``enable_password`` every endpoint. A
  password travels in the ``Password`` header (or, as Rspamd allows, ``?password=``).
* Rule 1: a client in ``trusted_networks`` (Rspamd's ``secure_ip``) or on a unix socket
  needs no password and has full rights, unless it forwards for someone else
  (``X-Forwarded-For``'s last hop, or ``X-Real-IP``) who is not trusted: a reverse proxy
  on localhost must not make the whole Internet trusted. Nothing is trusted by default.
* Rule 2: an endpoint that changes something needs the enable password; there is no
  "legacy mode" where the read password would do.
* Rule 3: a wrong or missing password is answered 403 and logged with the client's
  address; each further failure from that address waits longer before the password is
  even checked (0.5 s doubling to 8 s, forgotten after 10 quiet minutes), so guessing
  is slow and costs us no KDF time. The wait holds only that client's connection.
* scrypt is deliberately slow (about 0.1 s); it runs in a worker thread (two at most)
  so other connections go on, and a password that matched is remembered (by a digest of
  it and the hash) so that a script polling /stat does not pay the KDF every time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import secrets
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from collections.abc import Iterable

    from milterd.http.protocol import HttpRequest
    from milterd.http.settings import ControllerSettings

__all__ = [
    "HASH_PREFIX",
    "Access",
    "Authenticator",
    "Level",
    "Network",
    "hash_password",
    "parse_networks",
    "verify_password",
]

log = logging.getLogger(__name__)

HASH_PREFIX: Final = "$scrypt$"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_LN = 15  # N = 2^15, r = 8: 32 MiB and ~0.1 s, the usual interactive-login setting
_MAX_LN = 20
_KEY_BYTES = 32
_FIRST_DELAY = 0.5
_MAX_DELAY = 8.0
_FORGET_AFTER = 600.0
_MAX_TRACKED = 4096
_MAX_CACHED = 64


class Level(Enum):
    """What an endpoint needs."""

    NONE = "none"
    READ = "read"
    ENABLE = "enable"


@dataclass(slots=True, frozen=True)
class Access:
    """The answer for one request: allowed or not, and whether it may change things."""

    allowed: bool
    read_only: bool = True
    reason: str = ""


# -- hashes -------------------------------------------------------------------------------


def hash_password(password: str, *, ln: int = _DEFAULT_LN, r: int = 8, p: int = 1) -> str:
    """``$scrypt$ln=15,r=8,p=1$<salt>$<key>`` (base64 without padding), as passlib writes it."""
    salt = secrets.token_bytes(16)
    key = _scrypt(password, salt, ln, r, p)
    return f"{HASH_PREFIX}ln={ln},r={r},p={p}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the hash ``stored``; False for a malformed hash."""
    try:
        params, salt, key = _parse_hash(stored)
    except ValueError:
        return False
    expected = _scrypt(password, salt, params["ln"], params["r"], params["p"])
    return hmac.compare_digest(expected, key)


def _scrypt(password: str, salt: bytes, ln: int, r: int, p: int) -> bytes:
    n = 1 << ln
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * r * n * p + (1 << 20),
        dklen=_KEY_BYTES,
    )


def _parse_hash(stored: str) -> tuple[dict[str, int], bytes, bytes]:
    if not stored.startswith(HASH_PREFIX):
        raise ValueError("not an scrypt hash")
    fields = stored[len(HASH_PREFIX) :].split("$")
    if len(fields) != 3:
        raise ValueError("expected $scrypt$PARAMS$SALT$KEY")
    params: dict[str, int] = {}
    for item in fields[0].split(","):
        name, _, value = item.partition("=")
        params[name] = int(value)
    if set(params) != {"ln", "r", "p"} or not 1 <= params["ln"] <= _MAX_LN:
        raise ValueError("bad scrypt parameters")
    if not (1 <= params["r"] <= 32 and 1 <= params["p"] <= 16):
        raise ValueError("bad scrypt parameters")
    return params, _unb64(fields[1]), _unb64(fields[2])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """CIDR networks (a bare address is a /32 or /128); the config check already ran."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items)


# -- deciding -----------------------------------------------------------------------------


class Authenticator:
    """Decides each controller request; ``settings`` may be replaced at a reload."""

    def __init__(self, settings: ControllerSettings) -> None:
        self.settings = settings
        self._failures: dict[str, tuple[int, float]] = {}
        self._matched: dict[bytes, None] = {}
        self._kdf = trio.CapacityLimiter(2)

    async def check(self, request: HttpRequest, level: Level) -> Access:
        """Allow or refuse ``request`` for an endpoint of ``level`` (may wait: Rule 3)."""
        if level is Level.NONE:
            return Access(True, read_only=False)
        peer_trusted = self._is_trusted(request.client)
        forwarded = _forwarded_for(request)
        if peer_trusted and (forwarded is None or self._is_trusted(forwarded)):
            return Access(True, read_only=False)
        # Whom to blame and slow down: the peer, or whom a trusted proxy forwards for.
        who = (forwarded if peer_trusted else None) or request.client or "unix"
        password = request.header("password") or request.query.get("password") or ""
        if not password:
            return self._refuse(who, request.path, "a password is required")
        delay = self.penalty(who)
        if delay:
            await trio.sleep(delay)
        settings = self.settings
        if settings.enable_password and await self._matches(password, settings.enable_password):
            self._failures.pop(who, None)
            return Access(True, read_only=False)
        if (
            level is Level.READ
            and settings.password
            and await self._matches(password, settings.password)
        ):
            self._failures.pop(who, None)
            return Access(True, read_only=True)
        what = "the enable password is required" if level is Level.ENABLE else "wrong password"
        return self._refuse(who, request.path, what)

    def penalty(self, client: str) -> float:
        """Seconds the next password check from ``client`` waits (0 without recent failures)."""
        entry = self._failures.get(client)
        if entry is None:
            return 0.0
        count, last = entry
        if trio.current_time() - last > _FORGET_AFTER:
            del self._failures[client]
            return 0.0
        return float(min(_FIRST_DELAY * 2.0 ** (count - 1), _MAX_DELAY))

    def _refuse(self, client: str, path: str, reason: str) -> Access:
        count = self._failures.pop(client, (0, 0.0))[0] + 1
        self._failures[client] = (count, trio.current_time())  # re-inserted: newest last
        if len(self._failures) > _MAX_TRACKED:
            del self._failures[next(iter(self._failures))]  # the longest quiet address
        log.warning("controller: refused %s from %s: %s (failure %d)", path, client, reason, count)
        return Access(False, reason=reason)

    def _is_trusted(self, client: str | None) -> bool:
        """A unix-socket peer (None) or an address in ``trusted_networks``."""
        if client is None:
            return True
        address = _address(client)
        return address is not None and any(address in net for net in self.settings.trusted_networks)

    async def _matches(self, password: str, stored: str) -> bool:
        digest = hashlib.sha256(f"{stored}\0{password}".encode()).digest()
        if digest in self._matched:
            return True
        ok = await trio.to_thread.run_sync(verify_password, password, stored, limiter=self._kdf)
        if ok:
            if len(self._matched) >= _MAX_CACHED:
                self._matched.clear()
            self._matched[digest] = None
        return ok


def _forwarded_for(request: HttpRequest) -> str | None:
    """Whom the peer says it forwards for: X-Forwarded-For's last hop, or X-Real-IP."""
    forwarded = request.header("x-forwarded-for")
    if forwarded:
        return forwarded.rsplit(",", 1)[-1].strip() or "?"
    real = request.header("x-real-ip")
    if real is not None:
        return real.strip() or "?"
    return None


def _address(text: str | None) -> _Address | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address

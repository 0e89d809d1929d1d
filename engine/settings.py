"""Per-message settings: which symbols run and which thresholds hold for one message.

Theory of operation (Rspamd's settings module, the static part):

* Each ``[settings.NAME]`` table is compiled once, when the engine is built, into a
  ``SettingsRule``: its match conditions and a ``Profile``, everything a scan needs
  already resolved (the checks of each stage that still run, the composites, the symbol
  specs with their scores, the thresholds). Choosing settings at scan time is therefore a
  few comparisons and no allocation.
* Choice: a request's inline settings (``ScanRequest.settings``, Rspamd's ``Settings``
  header) win over everything, ``settings_id`` included, as in Rspamd; then a request's
  ``settings_id`` naming a table; otherwise the tables are tried by priority (highest
  first, then by name) and the first whose conditions all hold applies. None matching:
  the default profile (the global configuration).
* Inline settings say what a table's "what applies" keys say (``INLINE_KEYS``), checked
  by the same schema (``InlineSettings.parse``: shapes, without an engine) and compiled
  by the same code into the same ``Profile`` (``SettingsSelector.select``: names, against
  the engine that scans). A refused block is an ``InvalidSettings`` naming its keys. The
  compiled profiles of the last few distinct blocks are kept: a client sends the same
  block with every message.
* Rule 1: a table without conditions applies only by Settings-ID, never to all mail (the
  global configuration is already that).
* Rule 2: a disabled symbol is never inserted (``Task.insert_result`` drops it), and a
  check whose produced symbols are all disabled does not run, unless a check that does
  run depends on it: its dependants need its facts, so it runs and its symbols are dropped.
  Checks that produce no symbol (result headers) always run. The engine's own symbols are
  never switched off by an enabled list; they score nothing and say why a scan was partial.
* Every name (symbol, group, rung), network and regex is checked here, at build time; a
  problem is a ``ConfigProblem`` naming file, line and key, never a scan-time surprise.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from engine.config.core import SETTINGS
from engine.config.schema import Section, validate
from engine.errors import EngineError
from engine.pipeline.actions import Action, Thresholds
from engine.pipeline.stages import Stage
from engine.symbols import SymbolType

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from engine.config import Config
    from engine.errors import ConfigProblem
    from engine.symbols import CheckSpec, Composite, SymbolRegistry, SymbolSpec
    from engine.task import Envelope, ScanRequest

__all__ = [
    "INLINE_KEYS",
    "InlineSettings",
    "InvalidSettings",
    "Profile",
    "SettingsRule",
    "SettingsSelector",
    "build_settings",
]

log = logging.getLogger(__name__)

# What a [settings.NAME] table applies (its other keys say when it applies, which means
# nothing for a block that comes with the message).
INLINE_KEYS: Final = (
    "symbols_enabled",
    "symbols_disabled",
    "groups_enabled",
    "groups_disabled",
    "actions",
    "scores",
)
_INLINE_SCHEMA: Final = Section({key: SETTINGS.item.keys[key] for key in INLINE_KEYS})
_INLINE_CACHE: Final = 64  # compiled inline blocks kept per engine

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(slots=True, frozen=True)
class Profile:
    """What holds for one message: its settings' name (``None``: the global configuration),
    the symbol specs in force, the disabled symbols, and what to run and how to decide."""

    name: str | None
    symbols: Mapping[str, SymbolSpec]
    disabled: frozenset[str]
    thresholds: Thresholds
    stages: Mapping[Stage, list[CheckSpec]]
    composites: list[Composite]


class InvalidSettings(EngineError):
    """An inline settings block is refused; ``problems`` are ``(key, why)`` pairs, the key
    dotted (``actions.rejectt``), every problem found."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {why}" if key else why for key, why in problems))


@dataclass(slots=True, frozen=True)
class InlineSettings:
    """A settings block that comes with one message (Rspamd's ``Settings`` header): the
    ``INLINE_KEYS`` of a ``[settings.NAME]`` table, defaults filled in. Make one with
    ``parse``; the engine that scans checks its symbol and group names."""

    table: Mapping[str, object]
    key: str  # the block as canonical JSON: equal blocks share one compiled profile

    @classmethod
    def parse(cls, block: Mapping[str, object]) -> InlineSettings:
        """Check ``block`` (decoded JSON) against the settings tables' schema.

        Raises:
            InvalidSettings: an unknown key, or a value of the wrong type.
        """
        data = dict(block)
        actions = data.get("actions")
        if isinstance(actions, dict):
            # JSON's null is how Rspamd switches a rung off; a table (TOML) says false.
            data["actions"] = {k: False if v is None else v for k, v in actions.items()}
        table, problems = validate(_INLINE_SCHEMA, data)
        if problems:
            raise InvalidSettings([(".".join(path), why) for path, why in problems])
        key = json.dumps(table, sort_keys=True, separators=(",", ":"))
        return cls(MappingProxyType(table), key)


@dataclass(slots=True, frozen=True)
class _Patterns:
    """Address (or login) patterns: exact, ``@domain``, ``/regex/``, ``<>`` (null sender)."""

    exact: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    regexes: tuple[re.Pattern[str], ...] = ()
    null: bool = False
    fold_case: bool = True

    def match(self, value: str) -> bool:
        if value == "":
            return self.null
        key = value.lower() if self.fold_case else value
        if key in self.exact:
            return True
        _, at, domain = key.rpartition("@")
        if at and self.domains and domain.rstrip(".") in self.domains:
            return True
        return any(r.search(value) for r in self.regexes)


@dataclass(slots=True, frozen=True)
class SettingsRule:
    """One ``[settings.NAME]`` table: conditions (``None``: not given) and its profile."""

    name: str
    priority: int
    profile: Profile
    networks: tuple[_Network, ...] | None = None
    senders: _Patterns | None = None
    recipients: _Patterns | None = None
    users: _Patterns | None = None
    authenticated: bool | None = None

    @property
    def has_conditions(self) -> bool:
        return any(
            c is not None
            for c in (self.networks, self.senders, self.recipients, self.users, self.authenticated)
        )

    def matches(self, envelope: Envelope) -> bool:
        """Every condition given holds (any entry of a list may satisfy its condition)."""
        if not self.has_conditions:
            return False  # Rule 1
        if self.authenticated is not None and bool(envelope.auth_user) != self.authenticated:
            return False
        if self.users is not None and not (
            envelope.auth_user and self.users.match(envelope.auth_user)
        ):
            return False
        if self.networks is not None:
            address = _client_address(envelope.client_addr)
            if address is None or not any(address in net for net in self.networks):
                return False
        if self.senders is not None and (
            envelope.mail_from is None or not self.senders.match(envelope.mail_from)
        ):
            return False
        return self.recipients is None or any(self.recipients.match(r) for r in envelope.rcpts)


@dataclass(slots=True, frozen=True)
class SettingsSelector:
    """Chooses the profile for each message (see the module docstring)."""

    default: Profile
    rules: tuple[SettingsRule, ...] = ()
    by_name: Mapping[str, SettingsRule] = field(default_factory=dict)
    inline: _InlineProfiles | None = None

    def __post_init__(self) -> None:
        if self.inline is None:  # built by hand: the default profile's groups only
            groups = _groups_of((), self.default.symbols)
            object.__setattr__(self, "inline", _InlineProfiles(self.default, groups))

    def select(self, request: ScanRequest) -> Profile:
        """The profile for ``request``.

        Raises:
            InvalidSettings: the request's inline settings name an unknown symbol, group
                or rung, or give a score that is not a number.
        """
        if request.settings is not None:
            if request.settings_id is not None:
                log.debug(
                    "%s: inline settings given; Settings-ID %s is ignored",
                    request.log_tag or "scan",
                    request.settings_id,
                )
            assert self.inline is not None
            return self.inline.profile(request.settings)
        if request.settings_id is not None:
            named = self.by_name.get(request.settings_id)
            if named is not None:
                return named.profile
            log.warning(
                "%s: no [settings.%s]; choosing settings by the envelope",
                request.log_tag or "scan",
                request.settings_id,
            )
        for rule in self.rules:
            if rule.matches(request.envelope):
                return rule.profile
        return self.default


def _client_address(text: str | None) -> _Address | None:
    if not text:
        return None
    if text[:5].lower() == "ipv6:":  # an SMTP address literal, as some MTAs pass it
        text = text[5:]
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack listener's view of an IPv4 client
    return address


# -- building ---------------------------------------------------------------------------


def build_settings(
    config: Config,
    registry: SymbolRegistry,
    composites: list[Composite],
    thresholds: Thresholds,
    problems: list[ConfigProblem],
) -> SettingsSelector:
    """Compile every ``[settings.NAME]`` table; append what is wrong to ``problems``.

    Call once the registry holds every symbol (modules' and composites') and has been
    validated: the checks each profile runs are taken from its stage order.
    """
    stages = {stage: registry.checks_for(stage) for stage in Stage}
    default = Profile(None, registry.symbols, frozenset(), thresholds, stages, composites)
    groups = _groups_of(config.section("groups"), registry.symbols)

    def report(path: tuple[str, ...], message: str) -> None:
        problems.append(config.problem(path, message))

    builder = _Builder(default, groups, report)
    rules = []
    for name, table in config.section("settings").items():
        assert isinstance(table, dict)
        rule = builder.rule(name, table)
        if rule is not None:
            rules.append(rule)
    rules.sort(key=lambda r: (-r.priority, r.name))
    return SettingsSelector(
        default,
        tuple(r for r in rules if r.has_conditions),
        {r.name: r for r in rules},
        _InlineProfiles(default, groups),
    )


def _groups_of(declared: Iterable[str], symbols: Mapping[str, SymbolSpec]) -> dict[str, set[str]]:
    """Each group's symbols; a group declared in [groups] without any is known (empty)."""
    groups: dict[str, set[str]] = {name: set() for name in declared}
    for spec in symbols.values():
        groups.setdefault(spec.group, set()).add(spec.name)
    return groups


class _InlineProfiles:
    """Compiles inline settings, as ``_Builder`` compiles a table's, and keeps the last
    ``_INLINE_CACHE`` distinct ones (a client sends the same block with every message)."""

    def __init__(self, default: Profile, groups: Mapping[str, set[str]]) -> None:
        self.default = default
        self.groups = groups
        self._cache: dict[str, Profile] = {}

    def profile(self, settings: InlineSettings) -> Profile:
        found = self._cache.get(settings.key)
        if found is not None:
            return found
        problems: list[tuple[str, str]] = []

        def report(path: tuple[str, ...], message: str) -> None:
            problems.append((".".join(path), message))

        profile = _Builder(self.default, self.groups, report).profile(None, (), settings.table)
        if problems:
            raise InvalidSettings(problems)
        if len(self._cache) >= _INLINE_CACHE:
            del self._cache[next(iter(self._cache))]  # the oldest
        self._cache[settings.key] = profile
        return profile


class _Builder:
    """Compiles tables into rules and profiles; each problem goes to ``report`` with the
    key path it is about."""

    def __init__(
        self,
        default: Profile,
        groups: Mapping[str, set[str]],
        report: Callable[[tuple[str, ...], str], None],
    ) -> None:
        self.symbols = default.symbols
        self.default = default
        self.groups = groups
        self.report = report
        self.problem_count = 0

    def problem(self, path: tuple[str, ...], message: str) -> None:
        self.problem_count += 1
        self.report(path, message)

    def rule(self, name: str, table: Mapping[str, object]) -> SettingsRule | None:
        before = self.problem_count
        where = ("settings", name)
        networks = self._networks((*where, "ip"), table["ip"])
        senders = self._patterns((*where, "from"), table["from"])
        recipients = self._patterns((*where, "rcpt"), table["rcpt"])
        users = self._patterns((*where, "user"), table["user"], fold_case=False)
        profile = self.profile(name, where, table)
        if self.problem_count > before:
            return None
        priority, authenticated = table["priority"], table["authenticated"]
        assert isinstance(priority, int)
        assert authenticated is None or isinstance(authenticated, bool)
        return SettingsRule(
            name, priority, profile, networks, senders, recipients, users, authenticated
        )

    # -- conditions --

    def _networks(self, path: tuple[str, ...], value: object) -> tuple[_Network, ...] | None:
        entries = _as_list(value)
        if not entries:
            return None
        networks = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                self.problem(path, f"{entry!r} is not an IP address or CIDR network")
        return tuple(networks)

    def _patterns(
        self, path: tuple[str, ...], value: object, *, fold_case: bool = True
    ) -> _Patterns | None:
        entries = _as_list(value)
        if not entries:
            return None
        exact: set[str] = set()
        domains: set[str] = set()
        regexes: list[re.Pattern[str]] = []
        null = False
        for raw in entries:
            entry = raw.strip()
            if len(entry) > 2 and entry.startswith("/") and entry.endswith("/"):
                try:
                    regexes.append(re.compile(entry[1:-1], re.IGNORECASE))
                except re.error as exc:
                    self.problem(path, f"{entry!r} is not a valid regular expression: {exc}")
            elif entry == "<>":
                null = True
            elif fold_case and entry.startswith("@") and len(entry) > 1:
                domains.add(entry[1:].lower().rstrip("."))
            else:
                exact.add(entry.lower() if fold_case else entry)
        return _Patterns(frozenset(exact), frozenset(domains), tuple(regexes), null, fold_case)

    # -- what applies --

    def profile(
        self, name: str | None, where: tuple[str, ...], table: Mapping[str, object]
    ) -> Profile:
        """What ``table`` applies; its keys' paths start with ``where``."""
        disabled = self._disabled(where, table)
        thresholds = self._thresholds((*where, "actions"), table["actions"])
        symbols = self._scores((*where, "scores"), table["scores"])
        default = self.default
        if not disabled:
            stages = default.stages
            composites = default.composites
        else:
            stages = {s: _runnable(checks, disabled) for s, checks in default.stages.items()}
            composites = [c for c in default.composites if c.name not in disabled]
        return Profile(name, symbols, disabled, thresholds, stages, composites)

    def _disabled(self, where: tuple[str, ...], table: Mapping[str, object]) -> frozenset[str]:
        # In the schema's key order, so that problems come in the order the docs list keys.
        enabled_symbols = self._symbol_names((*where, "symbols_enabled"), table["symbols_enabled"])
        disabled = self._symbol_names((*where, "symbols_disabled"), table["symbols_disabled"])
        enabled_groups = self._group_members((*where, "groups_enabled"), table["groups_enabled"])
        disabled |= self._group_members((*where, "groups_disabled"), table["groups_disabled"])
        if enabled_symbols or enabled_groups:
            enabled = enabled_symbols | enabled_groups
            disabled |= {
                name
                for name, spec in self.symbols.items()
                if name not in enabled and spec.type is not SymbolType.INTERNAL
            }
        return frozenset(disabled)

    def _symbol_names(self, path: tuple[str, ...], value: object) -> set[str]:
        names = set()
        for name in _as_list(value):
            if name in self.symbols:
                names.add(name)
            else:
                self.problem(path, f"unknown symbol {name} (no enabled module declares it)")
        return names

    def _group_members(self, path: tuple[str, ...], value: object) -> set[str]:
        members: set[str] = set()
        for group in _as_list(value):
            if group in self.groups:
                members |= self.groups[group]
            else:
                self.problem(path, f"unknown group {group}")
        return members

    def _scores(self, path: tuple[str, ...], value: object) -> Mapping[str, SymbolSpec]:
        assert isinstance(value, dict)
        if not value:
            return self.default.symbols
        specs = dict(self.default.symbols)
        for name, score in value.items():
            if name not in specs:
                self.problem((*path, name), "unknown symbol (no enabled module declares it)")
            elif not _is_number(score):
                self.problem((*path, name), f"must be a number, not {score!r}")
            else:
                specs[name] = replace(specs[name], score=float(score))
        return specs

    def _thresholds(self, path: tuple[str, ...], value: object) -> Thresholds:
        assert isinstance(value, dict)
        if not value:
            return self.default.thresholds
        levels = dict(self.default.thresholds.levels)
        rungs = ", ".join(a.config_key for a in Action if a is not Action.NO_ACTION)
        for key, threshold in value.items():
            try:
                action = Action.parse(key)
            except ValueError:
                action = Action.NO_ACTION
            if action is Action.NO_ACTION:
                self.problem((*path, key), f"not a rung with a threshold (one of: {rungs})")
            elif threshold is False:
                levels[action] = None
            elif not _is_number(threshold):
                self.problem((*path, key), "must be a score, or false to switch this rung off")
            else:
                levels[action] = float(threshold)
        return Thresholds(levels)


def _runnable(checks: Sequence[CheckSpec], disabled: frozenset[str]) -> list[CheckSpec]:
    """The checks that still run (Rule 2). ``checks`` is in dependency order, so walking it
    backwards meets every dependant before the checks it depends on."""
    needed: set[str] = set()
    keep: list[CheckSpec] = []
    for check in reversed(checks):
        if (
            not check.produces
            or check.name in needed
            or any(s not in disabled for s in check.produces)
        ):
            keep.append(check)
            needed.update(check.depends_on)
    keep.reverse()
    return keep


def _as_list(value: object) -> list[str]:
    items: Iterable[object] = value if isinstance(value, list) else [value]
    return [str(item) for item in items]


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )

"""Per-message settings: which symbols run and which thresholds hold for one message.

Theory of operation (Rspamd's settings module, the static part):

* Each ``[settings.NAME]`` table is compiled once, when the engine is built, into a
  ``SettingsRule``: its match conditions and a ``Profile``, everything a scan needs
  already resolved (the checks of each stage that still run, the composites, the symbol
  specs with their scores, the thresholds). Choosing settings at scan time is therefore a
  few comparisons and no allocation.
* Choice: a request's ``settings_id`` naming a table wins; otherwise the tables are tried
  by priority (highest first, then by name) and the first whose conditions all hold
  applies. None matching: the default profile (the global configuration).
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
import logging
import math
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from engine.pipeline.actions import Action, Thresholds
from engine.pipeline.stages import Stage
from engine.symbols import SymbolType

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from engine.config import Config
    from engine.errors import ConfigProblem
    from engine.symbols import CheckSpec, Composite, SymbolRegistry, SymbolSpec
    from engine.task import Envelope, ScanRequest

__all__ = ["Profile", "SettingsRule", "SettingsSelector", "build_settings"]

log = logging.getLogger(__name__)

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

    def select(self, request: ScanRequest) -> Profile:
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
    builder = _Builder(config, registry, default, problems)
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
    )


class _Builder:
    def __init__(
        self,
        config: Config,
        registry: SymbolRegistry,
        default: Profile,
        problems: list[ConfigProblem],
    ) -> None:
        self.config = config
        self.symbols = registry.symbols
        self.default = default
        self.problems = problems
        self.groups: dict[str, set[str]] = {name: set() for name in config.section("groups")}
        for spec in self.symbols.values():
            self.groups.setdefault(spec.group, set()).add(spec.name)

    def problem(self, path: tuple[str, ...], message: str) -> None:
        self.problems.append(self.config.problem(path, message))

    def rule(self, name: str, table: Mapping[str, object]) -> SettingsRule | None:
        before = len(self.problems)
        where = ("settings", name)
        networks = self._networks((*where, "ip"), table["ip"])
        senders = self._patterns((*where, "from"), table["from"])
        recipients = self._patterns((*where, "rcpt"), table["rcpt"])
        users = self._patterns((*where, "user"), table["user"], fold_case=False)
        profile = self._profile(name, table)
        if len(self.problems) > before:
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

    def _profile(self, name: str, table: Mapping[str, object]) -> Profile:
        where = ("settings", name)
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

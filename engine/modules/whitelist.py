"""Whitelisting by authentication: trust listed domains only when their mail proves it.

A domain on the map earns its negative score only when an authentication method vouches
for it (Rspamd's whitelist module): a spammer can put any domain in MAIL FROM or From,
but cannot make SPF, DKIM or DMARC pass for it. The map's lines are::

    # domain        method     mode (optional)
    paypal.com      dmarc
    example.org     spf_dkim   both

- ``method`` is what must pass: ``spf`` (SPF for the MAIL FROM/HELO domain),
  ``dkim`` (a valid signature with this ``d=``), ``spf_dkim`` (both), ``dmarc`` (DMARC
  for the From domain). The symbol is ``WHITELIST_<METHOD>``.
- ``mode`` is ``wl`` (default: the whitelist symbol when it passes), ``bl`` (the
  ``BLACKLIST_<METHOD>`` symbol when it fails: the domain always authenticates, so a
  failure is forgery) or ``both``.

An entry covers the domain and its subdomains. A temporary failure (DNS trouble) never
blacklists. The check runs after the filters (CLASSIFY), so SPF and DKIM results are in,
and after ``dmarc.evaluate`` when the DMARC module is enabled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from engine.auth.psl import normalize_domain, organizational_domain, warm_up
from engine.auth.results import DKIM_RESULTS, DMARC_RESULT, SPF_RESULT, stashed
from engine.config.schema import Key, Section
from engine.errors import ConfigError, ConfigProblem
from engine.maps import MapError, read_map_entries
from engine.modules.base import Module, check
from engine.pipeline.stages import Stage
from engine.symbols.spec import SymbolSpec

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from engine.symbols.spec import CheckSpec
    from engine.task.task import Task

__all__ = ["Whitelist"]

Method = Literal["spf", "dkim", "spf_dkim", "dmarc"]
_METHODS: Final[tuple[Method, ...]] = ("spf", "dkim", "spf_dkim", "dmarc")
_MODES: Final = {"wl": (True, False), "bl": (False, True), "both": (True, True)}
_SHIPPED_MAP = "auth_whitelist.map"


@dataclass(slots=True, frozen=True)
class _Entry:
    whitelist: bool
    blacklist: bool


# What one method found for one map domain: True passed, False failed, None no verdict.
_Outcome = dict[str, bool | None]


class Whitelist(Module):
    name = "whitelist"
    description = "Trusts listed domains only when SPF, DKIM or DMARC passes for them."
    symbols = (
        SymbolSpec("WHITELIST_SPF", -1.0, "whitelist", "Listed domain with a valid SPF policy"),
        SymbolSpec("BLACKLIST_SPF", 1.0, "whitelist", "Listed domain without a valid SPF"),
        SymbolSpec("WHITELIST_DKIM", -1.0, "whitelist", "Listed domain with a valid DKIM"),
        SymbolSpec("BLACKLIST_DKIM", 2.0, "whitelist", "Listed domain with a bad DKIM"),
        SymbolSpec(
            "WHITELIST_SPF_DKIM", -3.0, "whitelist", "Listed domain with valid SPF and DKIM"
        ),
        SymbolSpec(
            "BLACKLIST_SPF_DKIM", 3.0, "whitelist", "Listed domain without valid SPF and DKIM"
        ),
        SymbolSpec("WHITELIST_DMARC", -7.0, "whitelist", "Listed domain with a DMARC pass"),
        SymbolSpec("BLACKLIST_DMARC", 6.0, "whitelist", "Listed domain failing DMARC"),
    )
    settings_schema = Section(
        {
            "maps": Key(
                (list,),
                [],
                "Map files of 'domain method [mode]' lines, besides "
                f"{_SHIPPED_MAP} (shipped_map); relative paths are under the config "
                "directory.",
                extend=True,
            ),
            "shipped_map": Key(
                (bool,),
                True,
                f"Use the map {_SHIPPED_MAP}: the shipped one, or the config directory's "
                f"maps/{_SHIPPED_MAP} when there is one.",
            ),
        }
    )

    def setup(self) -> None:
        warm_up()
        self.entries: dict[Method, dict[str, _Entry]] = {m: {} for m in _METHODS}
        sources: list[tuple[Path, list[str], tuple[str, ...]]] = []
        problems: list[ConfigProblem] = []
        if self.settings["shipped_map"]:
            key = ("whitelist", "shipped_map")
            path = self.ctx.maps.path(_SHIPPED_MAP)
            try:
                sources.append((path, self.ctx.maps.entries(_SHIPPED_MAP), key))
            except MapError as exc:
                problems.extend(self.ctx.config.problem(key, str(p)) for p in exc.problems)
        base = self.ctx.config.config_dir or Path()
        extra = self.settings["maps"]
        assert isinstance(extra, list)
        for entry in extra:
            # The site's own files, named in [whitelist] maps: read as they are given.
            path = base / str(entry)
            try:
                sources.append((path, read_map_entries(path), ("whitelist", "maps")))
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(
                    self.ctx.config.problem(("whitelist", "maps"), f"cannot read {path}: {exc}")
                )
        for path, lines, where in sources:
            for line in lines:
                problem = self._add(line)
                if problem:
                    problems.append(self.ctx.config.problem(where, f"{path}: {problem}"))
        if problems:
            raise ConfigError(problems)

    def _add(self, line: str) -> str:
        fields = line.split()
        if len(fields) not in (2, 3):
            return f"{line!r}: expected 'domain method [mode]'"
        domain, method = normalize_domain(fields[0]), fields[1].lower()
        mode = fields[2].lower() if len(fields) == 3 else "wl"
        if method not in _METHODS:
            return f"{line!r}: method must be one of {', '.join(_METHODS)}"
        if mode not in _MODES:
            return f"{line!r}: mode must be wl, bl or both"
        self.entries[method][domain] = _Entry(*_MODES[mode])
        return ""

    def checks(self) -> list[CheckSpec]:
        # After dmarc.evaluate when the DMARC module is on (a hard dependency on a check
        # that is switched off would stop the engine from starting).
        dmarc = self.ctx.config.section("dmarc")
        if not dmarc.get("enabled", False):
            return super().checks()
        return [dataclasses.replace(c, depends_on=("dmarc.evaluate",)) for c in super().checks()]

    @check(produces=tuple(s.name for s in symbols), stage=Stage.CLASSIFY)
    def authenticated(self, task: Task) -> None:
        spf = stashed(task.stash, SPF_RESULT)
        spf_outcome: _Outcome = {}
        if spf is not None and not spf.skipped and spf.domain:
            spf_outcome[spf.domain] = _verdict(spf.result == "pass", spf.result == "temperror")
        dkim_outcome: _Outcome = {}
        for sig in stashed(task.stash, DKIM_RESULTS) or []:
            passed = sig.result == "pass"
            # Only a bad signature counts against the domain; a broken or unfetchable
            # one says nothing about who sent the message.
            verdict = True if passed else (False if sig.result == "fail" else None)
            if dkim_outcome.get(sig.domain) is not True:
                dkim_outcome[sig.domain] = verdict
        dmarc = stashed(task.stash, DMARC_RESULT)
        dmarc_outcome: _Outcome = {}
        if dmarc is not None and dmarc.from_domain:
            verdict = (
                True if dmarc.result == "pass" else (False if dmarc.result == "fail" else None)
            )
            dmarc_outcome[dmarc.from_domain] = verdict
        self._apply(task, "spf", spf_outcome)
        self._apply(task, "dkim", dkim_outcome)
        self._apply(task, "dmarc", dmarc_outcome)
        self._apply_spf_dkim(task, spf_outcome, dkim_outcome)

    def _apply(self, task: Task, method: Method, outcome: _Outcome) -> None:
        listed = self.entries[method]
        for domain, verdict in outcome.items():
            match = _lookup(listed, domain)
            if match is not None and verdict is not None:
                _insert(task, method, match[0], match[1], verdict)

    def _apply_spf_dkim(self, task: Task, spf: _Outcome, dkim: _Outcome) -> None:
        """Both must pass for the same listed domain; either failing is a failure."""
        listed = self.entries["spf_dkim"]
        found: dict[str, tuple[_Entry, _Outcome]] = {}
        for method, outcome in (("spf", spf), ("dkim", dkim)):
            for domain, verdict in outcome.items():
                match = _lookup(listed, domain)
                if (
                    match is not None
                    and found.setdefault(match[0], (match[1], {}))[1].get(method) is not True
                ):
                    found[match[0]][1][method] = verdict
        for domain, (entry, verdicts) in found.items():
            if verdicts.get("spf") and verdicts.get("dkim"):
                _insert(task, "spf_dkim", domain, entry, True)
            elif False in verdicts.values():
                _insert(task, "spf_dkim", domain, entry, False)


def _verdict(passed: bool, temporary: bool) -> bool | None:
    return True if passed else (None if temporary else False)


def _lookup(listed: Mapping[str, _Entry], domain: str) -> tuple[str, _Entry] | None:
    """The map entry covering ``domain``: itself or a parent, down to its organisational
    domain (an entry for a public suffix would cover strangers, so none is looked up)."""
    for candidate in _parents(normalize_domain(domain)):
        entry = listed.get(candidate)
        if entry is not None:
            return candidate, entry
    return None


def _parents(domain: str) -> Iterable[str]:
    org = organizational_domain(domain)
    labels = domain.split(".")
    for start in range(len(labels)):
        candidate = ".".join(labels[start:])
        yield candidate
        if candidate == org:
            return


def _insert(task: Task, method: Method, domain: str, entry: _Entry, passed: bool) -> None:
    if passed and entry.whitelist:
        task.insert_result(f"WHITELIST_{method.upper()}", options=[domain])
    elif not passed and entry.blacklist:
        task.insert_result(f"BLACKLIST_{method.upper()}", options=[domain])

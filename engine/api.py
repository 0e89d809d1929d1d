"""The engine's only door: build it from configuration, scan messages, close it.

``Engine.from_config`` does all validation (config, registry, composites) before it
returns, so a running engine never meets a configuration problem mid-scan.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from engine.config import CORE_SECTIONS, DEFAULT_DATA_DIR, Config, Section, TableOf, load_config
from engine.data import shipped_dir
from engine.dns import DnsSettings, Resolver
from engine.errors import ConfigError, ConfigProblem
from engine.maps import MAPS, Maps
from engine.mime.message import ParsedMessage
from engine.modules import BUILTIN_MODULES, Module, ModuleContext
from engine.modules.bayes import Bayes
from engine.pipeline.actions import Action, Thresholds
from engine.pipeline.executor import MODULE_ERROR, MODULE_TIMEOUT, run_stage
from engine.pipeline.stages import Stage
from engine.result import ScanResult, url_report
from engine.settings import build_settings
from engine.stats.learn import LearnResult
from engine.storage import Store, open_store
from engine.symbols import (
    Composite,
    CompositeError,
    Policy,
    SymbolRegistry,
    SymbolSpec,
    SymbolType,
    evaluate_composites,
    parse_expression,
    score_symbols,
)
from engine.task import ScanRequest, Task

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from engine.settings import Profile, SettingsSelector

__all__ = ["SCAN_TIMEOUT", "Engine"]

log = logging.getLogger(__name__)

SCAN_TIMEOUT = "ENGINE_SCAN_TIMEOUT"
_ENGINE_SYMBOLS = (
    SymbolSpec(
        MODULE_ERROR,
        0.0,
        "engine",
        "A check failed (see the log); the scan went on",
        SymbolType.INTERNAL,
    ),
    SymbolSpec(
        MODULE_TIMEOUT,
        0.0,
        "engine",
        "A check ran out of time; the scan went on",
        SymbolType.INTERNAL,
    ),
    SymbolSpec(
        SCAN_TIMEOUT,
        0.0,
        "engine",
        "The scan's deadline passed; the result is partial",
        SymbolType.INTERNAL,
    ),
)
_IDEMPOTENT_BUDGET = 1.0


class Engine:
    """The embedded scoring engine. Use ``async with`` or call ``aclose`` when done."""

    def __init__(
        self,
        config: Config,
        registry: SymbolRegistry,
        modules: list[Module],
        composites: list[Composite],
        thresholds: Thresholds,
        group_max: Mapping[str, float],
        store: Store,
        settings: SettingsSelector | None = None,
        maps: Maps | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.modules = modules
        self.composites = composites
        self.thresholds = thresholds
        self.group_max = group_max
        self.store = store
        options = config.section("options")
        self._task_timeout = float(options["task_timeout"])  # type: ignore[arg-type]
        self._check_timeout = float(options["check_timeout"])  # type: ignore[arg-type]
        self._subject_template = str(config.section("actions")["subject"])
        if settings is None:
            problems: list[ConfigProblem] = []
            settings = build_settings(config, registry, composites, thresholds, problems)
            if problems:
                raise ConfigError(problems)
        # Per-message settings: chosen before the pre-filters, from the envelope or the
        # request's settings_id; the default profile is the global configuration.
        self.settings = settings
        self.maps = maps if maps is not None else Maps(config.config_dir)

    # -- construction -----------------------------------------------------------------

    @staticmethod
    def config_schema(
        extra: Mapping[str, Section | TableOf] | None = None,
        modules: Sequence[type[Module]] | None = None,
    ) -> Section:
        """The whole configuration schema: core sections, every module's, and ``extra``.

        ``modules`` replaces the built-in module list (tests build engines from their own).
        """
        keys: dict[str, Section | TableOf] = dict(CORE_SECTIONS)
        for module in BUILTIN_MODULES if modules is None else modules:
            keys[module.name] = module.schema()
        keys.update(extra or {})
        return Section(keys)

    @classmethod
    def load_config(
        cls,
        config_dir: str | os.PathLike[str] | None,
        extra: Mapping[str, Section | TableOf] | None = None,
        environ: Mapping[str, str] | None = None,
        modules: Sequence[type[Module]] | None = None,
        rules_dir: Path | None = None,
    ) -> Config:
        """Layer the shipped policy (``rules_dir``, default the shipped ``rules/``), then
        ``config_dir``, then the environment, and validate against the whole schema."""
        policy = shipped_dir("rules") if rules_dir is None else rules_dir
        return load_config(
            config_dir,
            cls.config_schema(extra, modules),
            environ=environ,
            base_files=sorted(policy.glob("*.toml")),
        )

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        modules: Sequence[type[Module]] | None = None,
    ) -> Engine:
        """Build and validate everything; raise ``ConfigError`` naming every problem.

        ``modules`` (default: the built-in ones) lets tests build an engine from their own.
        """
        problems: list[ConfigProblem] = []
        module_classes = BUILTIN_MODULES if modules is None else modules
        data_dir = _resolve_data_dir(config, problems)
        dns_settings, dns_problems = DnsSettings.from_section(config.section("dns"))
        problems.extend(config.problem(("dns", key), message) for key, message in dns_problems)
        try:
            store = open_store(config, data_dir)
        except ConfigError as exc:
            raise ConfigError([*problems, *exc.problems]) from None
        maps = Maps(config.config_dir)
        ctx = ModuleContext(
            config=config,
            data_dir=data_dir,
            rules_dir=shipped_dir("rules"),
            maps=maps,
            store=store,
            dns=Resolver.from_settings(dns_settings),
        )
        registry = SymbolRegistry()
        for spec in _ENGINE_SYMBOLS:
            registry.add_symbol(spec)
        instances: list[Module] = []
        for module_cls in module_classes:
            settings = config.section(module_cls.name)
            if not settings.get("enabled", True):
                continue
            try:
                module = module_cls(ctx, settings)
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            instances.append(module)
            for spec in module.symbols:
                if spec.name in registry.symbols:
                    problems.append(
                        config.problem(
                            module.config_path(spec.name),
                            f"symbol {spec.name} is already declared by another module",
                        )
                    )
                    continue
                registry.add_symbol(spec)
            for check_spec in module.checks():
                registry.add_check(check_spec)
        problems.extend(maps.load_all())  # the maps no module has read, for the rules
        group_max = _groups(config)
        # Module symbols take their configured policy first, so composites see the
        # configured groups; then the composites' own symbols, then the leftovers are errors.
        _apply_symbol_policy(config, registry, problems, report_unknown=False)
        composites = _composites(config, registry, problems)
        _apply_symbol_policy(config, registry, problems, report_unknown=True)
        if not problems:
            # A module refused at setup leaves a hole in the check graph: its dependants'
            # RegistryError would hide the configuration problem that caused it.
            registry.validate()
        actions = config.section("actions")
        thresholds = Thresholds(
            {a: _threshold(actions[a.config_key]) for a in Action if a is not Action.NO_ACTION}
        )
        # Settings name symbols and groups, so they come last; their problems are reported
        # with all the others, in one go.
        selector = build_settings(config, registry, composites, thresholds, problems)
        if problems:
            raise ConfigError(problems)
        return cls(
            config,
            registry,
            instances,
            composites,
            thresholds,
            group_max,
            ctx.store,
            selector,
            maps,
        )

    async def aclose(self) -> None:
        for module in self.modules:
            await module.aclose()
        await self.store.aclose()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- scanning ---------------------------------------------------------------------

    async def scan(self, request: ScanRequest) -> ScanResult:
        """Scan one message. Never raises for a module's failure; cancellation propagates."""
        # A checkpoint even when every check is synchronous: a cancelled caller gets
        # Cancelled, not a verdict.
        await trio.lowlevel.checkpoint_if_cancelled()
        started = time.perf_counter()
        if request.raw is not None:
            message = ParsedMessage.from_bytes(request.raw)
        else:
            message = ParsedMessage.from_fields(
                request.headers or (), request.body, truncated=request.body_truncated
            )
        profile = self.settings.select(request)
        task = Task(
            request,
            message,
            profile.symbols,
            disabled=profile.disabled,
            settings_id=profile.name,
        )
        task.stash[MAPS] = self.maps
        stages = profile.stages
        timeout = self._check_timeout
        with trio.move_on_after(self._task_timeout) as deadline:
            await run_stage(Stage.PRE, stages[Stage.PRE], task, timeout)
            if task.pre_result is None:
                await run_stage(Stage.FILTER, stages[Stage.FILTER], task, timeout)
                await run_stage(Stage.CLASSIFY, stages[Stage.CLASSIFY], task, timeout)
            if profile.composites:
                evaluate_composites(profile.composites, task.hits, profile.symbols)
            self._decide(task, profile)
            if task.pre_result is None:
                await run_stage(Stage.POST, stages[Stage.POST], task, timeout)
                self._decide(task, profile)
        if deadline.cancelled_caught:
            log.warning("scan deadline of %.3gs passed; result is partial", self._task_timeout)
            task.partial = True
            task.insert_result(SCAN_TIMEOUT)
            self._decide(task, profile)
        with trio.move_on_after(_IDEMPOTENT_BUDGET):
            await run_stage(Stage.IDEMPOTENT, stages[Stage.IDEMPOTENT], task, timeout)
        return self._result(task, profile, time.perf_counter() - started)

    # -- learning ---------------------------------------------------------------------

    async def learn(self, request: ScanRequest, *, is_spam: bool) -> LearnResult:
        """Teach the statistics that a message is spam (or ham), once: learning the same
        message again as the same class is refused, as the other class moves it (see
        ``engine.stats.learn``). The result is true when the statistics changed, and says
        what happened ("learned as spam", "already learned as spam" …).

        Raises:
            StoreUnavailable: the store could not answer; nothing was learned.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        bayes = next((m for m in self.modules if isinstance(m, Bayes)), None)
        if bayes is None:
            return LearnResult(False, "not learned: the bayes module is disabled")
        if request.raw is not None:
            message = ParsedMessage.from_bytes(request.raw)
        else:
            message = ParsedMessage.from_fields(
                request.headers or (), request.body, truncated=request.body_truncated
            )
        return await bayes.learn(message, request.envelope, is_spam=is_spam)

    def _decide(self, task: Task, profile: Profile) -> None:
        task.score, task.scored = score_symbols(task.hits, profile.symbols, self.group_max)
        thresholds = profile.thresholds
        task.required_score = thresholds.required_score
        decided = task.pre_result or task.forced
        task.action = decided.action if decided else thresholds.action_for(task.score)

    def _result(self, task: Task, profile: Profile, elapsed: float) -> ScanResult:
        decided = task.pre_result or task.forced
        messages = dict(task.messages)
        if decided is not None and decided.message and "smtp_message" not in messages:
            messages["smtp_message"] = decided.message
        subject = None
        if task.action is Action.REWRITE_SUBJECT:
            subject = self._subject_template.replace("%s", task.message.subject or "")
        message_id = (task.message.headers.get("message-id") or "").strip().strip("<>")
        url_format = task.request.url_format  # None (the milter): not worth the work
        urls, emails = (None, ()) if url_format is None else url_report(task.message, url_format)
        return ScanResult(
            action=task.action,
            score=task.score,
            required_score=task.required_score,
            thresholds=profile.thresholds.as_dict(),
            symbols=task.scored,
            message_id=message_id,
            messages=messages,
            subject=subject,
            add_headers=tuple(task.milter.add_headers),
            remove_headers=dict(task.milter.remove_headers),
            forced=decided,
            partial=task.partial,
            time_real=elapsed,
            settings_id=profile.name,
            urls=urls,
            emails=emails,
        )


def _threshold(value: object) -> float | None:
    return None if value is False else float(value)  # type: ignore[arg-type]


def _resolve_data_dir(config: Config, problems: list[ConfigProblem]) -> Path:
    configured = Path(str(config.section("options")["data_dir"])).expanduser()
    try:
        configured.mkdir(parents=True, exist_ok=True)
        if os.access(configured, os.W_OK):
            return configured
    except OSError:
        pass
    if str(configured) != DEFAULT_DATA_DIR:
        problems.append(config.problem(("options", "data_dir"), f"{configured} is not writable"))
        return configured
    # The packaged default needs root; a user's `make run` falls back to their own state dir.
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    fallback = state / "milterd"
    fallback.mkdir(parents=True, exist_ok=True)
    log.info("data_dir %s is not writable; using %s", configured, fallback)
    return fallback


def _groups(config: Config) -> dict[str, float]:
    """Group caps: the shipped ``rules/groups.toml`` layered under ``[groups]``."""
    caps: dict[str, float] = {}
    for name, table in config.section("groups").items():
        assert isinstance(table, dict)
        if table["max_score"] is not False:
            caps[name] = float(table["max_score"])
    return caps


def _composites(
    config: Config, registry: SymbolRegistry, problems: list[ConfigProblem]
) -> list[Composite]:
    parsed: list[tuple[Composite, dict[str, object]]] = []
    for name, table in config.section("composites").items():
        assert isinstance(table, dict)
        if not table["enabled"]:
            continue
        try:
            spec = SymbolSpec(
                name,
                float(table["score"]),
                str(table["group"]),  # type: ignore[arg-type,unused-ignore]
                str(table["description"]),
                SymbolType.COMPOSITE,
            )
        except ValueError as exc:  # the name: [composites.lower_case]
            problems.append(config.problem(("composites", name), str(exc)))
            continue
        try:
            tree = parse_expression(str(table["expression"]))
        except CompositeError as exc:
            problems.append(config.problem(("composites", name, "expression"), str(exc)))
            continue
        if name in registry.symbols:
            problems.append(
                config.problem(("composites", name), "a module already declares this symbol")
            )
            continue
        composite = Composite(name, str(table["expression"]), tree, Policy(table["policy"]))
        registry.add_symbol(spec)
        parsed.append((composite, table))
    known_groups = {s.group for s in registry.symbols.values()}
    usable: list[Composite] = []
    for composite, _ in parsed:
        where = ("composites", composite.name, "expression")
        unknown = [f"symbol {r}" for r in sorted(composite.symbol_refs - set(registry.symbols))]
        unknown += [f"group {r}" for r in sorted(composite.group_refs - known_groups)]
        if unknown and _is_shipped(config, ("composites", composite.name, "expression")):
            # A shipped composite over a module the site switched off is not a typo of
            # theirs: it stays out quietly (its symbol scores nothing).
            log.debug("composite %s left out: %s unknown", composite.name, ", ".join(unknown))
            continue
        problems.extend(config.problem(where, f"refers to unknown {what}") for what in unknown)
        usable.append(composite)
    return _order_composites(usable, problems, config)


def _is_shipped(config: Config, path: tuple[str, ...]) -> bool:
    source = Path(config.source_of(path))
    try:
        return source.resolve().is_relative_to(shipped_dir("rules").resolve())
    except (OSError, ValueError):
        return False


def _order_composites(
    composites: list[Composite], problems: list[ConfigProblem], config: Config
) -> list[Composite]:
    """Composites that use other composites come after them; a cycle is refused."""
    by_name = {c.name: c for c in composites}
    order: list[Composite] = []
    state: dict[str, int] = {}

    def visit(c: Composite) -> None:
        if state.get(c.name) == 2:
            return
        if state.get(c.name) == 1:
            problems.append(
                config.problem(("composites", c.name), "composite refers to itself in a cycle")
            )
            return
        state[c.name] = 1
        for ref in sorted(c.symbol_refs & by_name.keys()):
            visit(by_name[ref])
        state[c.name] = 2
        order.append(c)

    for composite in composites:
        visit(composite)
    return order


def _apply_symbol_policy(
    config: Config, registry: SymbolRegistry, problems: list[ConfigProblem], *, report_unknown: bool
) -> None:
    for name, table in config.section("symbols").items():
        assert isinstance(table, dict)
        if name not in registry.symbols:
            if report_unknown:
                problems.append(config.problem(("symbols", name), "no module declares this symbol"))
            continue
        changes: dict[str, object] = {}
        for key in ("score", "description", "group"):
            if ("symbols", name, key) in config.sources and table[key] != "":
                changes[key] = table[key]
        if changes:
            registry.replace_symbol(name, **changes)

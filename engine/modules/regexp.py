"""Rules as data: every enabled ``[rules.NAME]`` is a symbol, judged by one check.

The rules (shipped ones in ``rules/*.toml``, the site's in ``local.d``) are compiled at
start (``engine.rules``): their regexps into one Hyperscan database per scope, cached on
disk, their expressions into closures. The one FILTER check is CPU-only and runs inline;
it scans each scope a message needs once, however many rules use it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config.schema import Key, Section
from engine.modules.base import Module, check
from engine.rules import BACKENDS, compile_rules
from engine.symbols.spec import SymbolSpec

if TYPE_CHECKING:
    from engine.symbols.spec import CheckSpec
    from engine.task.task import Task

__all__ = ["Regexp"]


class Regexp(Module):
    name = "regexp"
    description = "Regexp and expression rules from the [rules] section (rules/*.toml)."
    settings_schema = Section(
        {
            "engine": Key(
                (str,),
                "hyperscan",
                "Regexp backend: 'hyperscan' (one database per scope; falls back to 're', "
                "with a warning, when hyperscan is not installed) or 're' (Python).",
                choices=BACKENDS,
            ),
            "cache_dir": Key(
                (str,),
                "",
                "Where compiled Hyperscan databases are kept between restarts "
                "(empty: <data_dir>/hs_cache).",
            ),
        }
    )

    def setup(self) -> None:
        configured = str(self.settings["cache_dir"])
        cache_dir = Path(configured).expanduser() if configured else self.ctx.data_dir / "hs_cache"
        self.ruleset = compile_rules(
            self.ctx.config, backend=str(self.settings["engine"]), cache_dir=cache_dir
        )
        # Symbols are per instance here (they come from the config), unlike other modules'.
        self.symbols = tuple(
            SymbolSpec(rule.name, rule.score, rule.group, rule.description)
            for rule in self.ruleset.rules
        )

    def config_path(self, symbol: str) -> tuple[str, ...]:
        return ("rules", symbol)

    def checks(self) -> list[CheckSpec]:
        produces = tuple(rule.name for rule in self.ruleset.rules)
        return [dataclasses.replace(spec, produces=produces) for spec in super().checks()]

    @check(produces=())
    def rules(self, task: Task) -> None:
        for name in self.ruleset.evaluate(task).fired:
            task.insert_result(name)

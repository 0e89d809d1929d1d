"""The engine's own configuration sections: options, actions, symbols, groups, composites."""

from __future__ import annotations

from engine.config.schema import Key, Section, TableOf, at_least

__all__ = ["CORE_SECTIONS", "DEFAULT_DATA_DIR"]

DEFAULT_DATA_DIR = "/var/lib/milterd"


def _threshold(value: object) -> str | None:
    if value is True:
        return "must be a score, or false to switch this rung off"
    return None


def _threshold_key(default: float | bool, doc: str) -> Key:
    return Key((float, bool), default, doc, check=_threshold)


OPTIONS = Section(
    {
        "data_dir": Key(
            (str,),
            DEFAULT_DATA_DIR,
            "Where the embedded store lives. When it is the default and not writable, a "
            "per-user directory is used instead ($XDG_STATE_HOME/milterd or ~/.local/state/milterd).",
        ),
        "gtube_patterns": Key(
            (str,),
            "reject",
            "GTUBE test strings: 'reject' honours the standard XJS… string (forces reject); "
            "'all' also YJS… (add header), ZJS… (rewrite subject) and AJS… (no action); "
            "'disabled' ignores them.",
            choices=("reject", "all", "disabled"),
        ),
        "task_timeout": Key(
            (float,),
            8.0,
            "Seconds a whole scan may take; past it the result is partial.",
            check=at_least(0.01),
        ),
        "check_timeout": Key(
            (float,),
            5.0,
            "Default seconds for one asynchronous check (DNS, Redis …).",
            check=at_least(0.001),
        ),
    },
    "General engine options.",
)

ACTIONS = Section(
    {
        "greylist": _threshold_key(4.0, "Score from which mail is greylisted (false: off)."),
        "add_header": _threshold_key(6.0, "Score from which the spam header is added."),
        "rewrite_subject": _threshold_key(False, "Score from which the Subject is rewritten."),
        "soft_reject": _threshold_key(False, "Score from which mail is tempfailed (450)."),
        "reject": _threshold_key(15.0, "Score from which mail is rejected."),
        "subject": Key((str,), "*** SPAM *** %s", "Rewritten Subject; %s is the original."),
    },
    "The action ladder: a score threshold per rung.",
)

SYMBOLS = TableOf(
    Section(
        {
            "score": Key((float,), 0.0, "Weight of the symbol."),
            "description": Key((str,), "", "What it means, for the people reading headers."),
            "group": Key((str,), "", "Group it belongs to (for max_score and composites)."),
        }
    ),
    "Per-symbol policy overriding what its module declares: [symbols.NAME].",
)

GROUPS = TableOf(
    Section(
        {
            "max_score": Key(
                (float, bool),
                False,
                "Cap on the group's positive total (false: none).",
                check=_threshold,
            ),
            "description": Key((str,), ""),
        }
    ),
    "Symbol groups: [groups.NAME].",
)

COMPOSITES = TableOf(
    Section(
        {
            "expression": Key(
                (str,), "", "Boolean expression over symbols and g:groups.", required=True
            ),
            "score": Key((float,), 0.0),
            "group": Key((str,), "composite"),
            "description": Key((str,), ""),
            "policy": Key(
                (str,),
                "remove_all",
                "What happens to the atoms that matched.",
                choices=("remove_all", "remove_weight", "remove_symbol", "leave"),
            ),
            "enabled": Key((bool,), True),
        }
    ),
    "Composite symbols: [composites.NAME].",
)

RULES = TableOf(
    Section(
        {
            "expression": Key(
                (str,),
                "",
                "What the rule matches: regexp atoms, function atoms and operators "
                "(see docs/writing-a-rule.md).",
                required=True,
            ),
            "score": Key((float,), 0.0, "Weight of the symbol the rule inserts."),
            "group": Key((str,), "rules", "Group of the symbol (for max_score and composites)."),
            "description": Key((str,), "", "What it means, for the people reading headers."),
            "enabled": Key((bool,), True, "false keeps the rule out of the engine."),
        }
    ),
    "Regexp and expression rules: [rules.NAME]. Shipped ones are in rules/*.toml.",
)

LOGGING = Section(
    {
        "level": Key((str,), "info", choices=("debug", "info", "warning", "error")),
    },
    "Logging.",
)

CORE_SECTIONS: dict[str, Section | TableOf] = {
    "options": OPTIONS,
    "actions": ACTIONS,
    "symbols": SYMBOLS,
    "groups": GROUPS,
    "composites": COMPOSITES,
    "rules": RULES,
    "logging": LOGGING,
}

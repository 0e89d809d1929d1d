"""The engine's own configuration sections: options, actions, symbols, groups, composites,
rules, settings."""

from __future__ import annotations

from engine.config.schema import Key, Section, TableOf, at_least
from engine.dns.config import DNS_SECTION
from engine.storage.config import REDIS, STORE

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


def _strings(value: object) -> str | None:
    items = value if isinstance(value, list) else [value]
    if all(isinstance(item, str) and item.strip() for item in items):
        return None
    return "must be a non-empty string or a list of them"


def _string_list(default_doc: str) -> Key:
    return Key((str, list), [], default_doc, check=_strings)


# What a [settings.NAME] table matches is checked here for shape only; networks, regexes,
# symbol and group names are checked by the engine (engine/settings.py), which knows them.
SETTINGS = TableOf(
    Section(
        {
            "priority": Key(
                (int,),
                0,
                "Tables are tried highest priority first (then by name); the first that "
                "matches applies, and no other.",
            ),
            "ip": _string_list(
                "Client addresses or networks (CIDR, IPv4 or IPv6); any of them matches."
            ),
            "from": _string_list(
                "Envelope senders: an address, `@domain`, `/regex/` or `<>` (the null "
                "sender); any of them matches."
            ),
            "rcpt": _string_list(
                "Envelope recipients, written as for `from`; matches when any recipient "
                "matches any entry."
            ),
            "user": _string_list(
                "SMTP AUTH login names (exactly, or `/regex/`); any of them matches."
            ),
            "authenticated": Key(
                (bool,),
                None,
                "true: only mail from an SMTP-authenticated client; false: only mail from "
                "an unauthenticated one; unset: either.",
            ),
            "symbols_enabled": _string_list(
                "Only these symbols (and those of `groups_enabled`) are inserted; checks "
                "that produce none of them do not run. Empty: all symbols."
            ),
            "symbols_disabled": _string_list(
                "These symbols are never inserted; a check whose symbols are all disabled "
                "does not run. Wins over the enabled lists."
            ),
            "groups_enabled": _string_list("Only the symbols of these groups, as above."),
            "groups_disabled": _string_list("No symbol of these groups, as above."),
            "actions": Key(
                (dict,),
                {},
                "Thresholds replacing those of [actions] for this mail, per rung "
                "(greylist, add_header, rewrite_subject, soft_reject, reject); false "
                "switches a rung off.",
            ),
            "scores": Key(
                (dict,),
                {},
                "Scores replacing the symbols' own for this mail: { SYMBOL = score }.",
            ),
        }
    ),
    "Per-message settings: [settings.NAME] chooses, by client address, envelope sender or "
    "recipient or SMTP AUTH login (or by Settings-ID, the table's name), which symbols run "
    "and which thresholds hold. A table with no condition applies only by Settings-ID.",
)

LOGGING = Section(
    {
        "level": Key((str,), "info", choices=("debug", "info", "warning", "error")),
        "target": Key(
            (str,),
            "stderr",
            "Where log lines go: stderr (journald, docker logs), a file, or syslog (/dev/log).",
            choices=("stderr", "file", "syslog"),
        ),
        "file": Key((str,), "", "The log file with target = 'file' (SIGUSR1 reopens it)."),
        "format": Key(
            (str,), "text", "One text line, or one JSON object a line.", choices=("text", "json")
        ),
        "syslog_facility": Key((str,), "mail", "Facility with target = 'syslog'."),
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
    "settings": SETTINGS,
    "store": STORE,
    "redis": REDIS,
    "dns": DNS_SECTION,
    "logging": LOGGING,
}

"""Function atoms: plain Python that rule expressions call, e.g. ``has_html_part()``.

A function lives in any module of this package and registers itself::

    from engine.rules.functions import function

    @function("header_count", args=(str,), cost=1)
    def header_count(task: Task, name: str) -> int:
        \"\"\"How many NAME headers the message has.\"\"\"
        return task.message.headers.count(name)

``args`` are the argument types (``str``, ``int``, ``float``); ``required`` (default: all)
how many of them must be given; ``cost`` a rough relative cost, so ``&`` and ``|``
evaluate cheap operands first (1: a header lookup; 3: needs the MIME tree; 5+: walks the
text). A function never raises on broken mail; if it does anyway, the rule engine treats
the call as false and logs it once. Its docstring's first line is its documentation.

Every module in the package is imported the first time ``registry()`` is called, so a
new file here is all it takes to add functions.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["FunctionResult", "RuleFunction", "function", "function_table", "registry"]

FunctionResult = bool | int | float
F = TypeVar("F", bound="Callable[..., FunctionResult]")

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_ARG_TYPES = (str, int, float)
_REGISTRY: dict[str, RuleFunction] = {}
_loaded = False


@dataclass(slots=True, frozen=True)
class RuleFunction:
    """A registered function atom."""

    name: str
    call: Callable[..., FunctionResult]
    args: tuple[type, ...]
    required: int
    cost: int
    doc: str
    module: str

    @property
    def signature(self) -> str:
        names = [t.__name__ for t in self.args]
        shown = names[: self.required] + [f"[{n}]" for n in names[self.required :]]
        return f"{self.name}({', '.join(shown)})"


def function(
    name: str,
    args: tuple[type, ...] = (),
    cost: int = 1,
    *,
    required: int | None = None,
) -> Callable[[F], F]:
    """Register the decorated callable as the function atom ``name``.

    Args:
        name: the name rules call it by (lower_snake_case).
        args: types of the arguments after ``task``: ``str``, ``int`` or ``float``.
        cost: relative cost (see the package docstring).
        required: how many leading arguments must be given (default: all).

    Raises:
        ValueError: a bad name or argument type, or a name registered twice (a bug in
            the package, found at start-up).
    """
    if not _NAME.match(name):
        raise ValueError(f"rule function name {name!r} must be lower_snake_case")
    if any(t not in _ARG_TYPES for t in args):
        raise ValueError(f"rule function {name}: argument types must be str, int or float")
    needed = len(args) if required is None else required
    if not 0 <= needed <= len(args):
        raise ValueError(f"rule function {name}: required must be between 0 and {len(args)}")

    def register(fn: F) -> F:
        if name in _REGISTRY:
            other = _REGISTRY[name].module
            raise ValueError(f"rule function {name} is defined twice ({other}, {fn.__module__})")
        doc = " ".join((fn.__doc__ or "").strip().split("\n\n", 1)[0].split())
        _REGISTRY[name] = RuleFunction(name, fn, args, needed, cost, doc, fn.__module__)
        return fn

    return register


def registry() -> Mapping[str, RuleFunction]:
    """Every function atom, by name (imports the package's modules on first use)."""
    global _loaded  # the registry is code, filled once per process like an import
    if not _loaded:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True
    return _REGISTRY


def function_table() -> str:
    """The function atoms as a Markdown table, for docs/writing-a-rule.md."""
    lines = ["| function | returns | what it tells |", "| --- | --- | --- |"]
    for fn in sorted(registry().values(), key=lambda f: f.name):
        returns = _return_type(fn)
        doc = fn.doc.replace("|", "\\|")
        lines.append(f"| `{fn.signature}` | {returns} | {doc} |")
    return "\n".join(lines) + "\n"


def _return_type(fn: RuleFunction) -> str:
    annotation = getattr(fn.call, "__annotations__", {}).get("return", "")
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return {"bool": "true/false", "int": "number", "float": "number"}.get(text, "number")

"""Symbols: specs, the registry, results and composites."""

from engine.symbols.composites import (
    Composite,
    CompositeError,
    Policy,
    evaluate_composites,
    parse_expression,
)
from engine.symbols.registry import RegistryError, SymbolRegistry
from engine.symbols.results import ScoredSymbol, SymbolHit, score_symbols
from engine.symbols.spec import CheckFn, CheckSpec, SymbolSpec, SymbolType

__all__ = [
    "CheckFn",
    "CheckSpec",
    "Composite",
    "CompositeError",
    "Policy",
    "RegistryError",
    "ScoredSymbol",
    "SymbolHit",
    "SymbolRegistry",
    "SymbolSpec",
    "SymbolType",
    "evaluate_composites",
    "parse_expression",
    "score_symbols",
]

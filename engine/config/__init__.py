"""Configuration: schemas, layered TOML loading, and where each value came from."""

from engine.config.core import CORE_SECTIONS, DEFAULT_DATA_DIR
from engine.config.loader import DEFAULT_SOURCE, ENV_OVERRIDES, Config, load_config
from engine.config.schema import Key, Section, TableOf, at_least, between, validate

__all__ = [
    "CORE_SECTIONS",
    "DEFAULT_DATA_DIR",
    "DEFAULT_SOURCE",
    "ENV_OVERRIDES",
    "Config",
    "Key",
    "Section",
    "TableOf",
    "at_least",
    "between",
    "load_config",
    "validate",
]

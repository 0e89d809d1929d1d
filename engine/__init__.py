"""The embedded scoring engine. Importable and testable with no daemon running.

The only types that cross into ``milterd`` are the scan request and the scan result.
"""

from engine.api import Engine
from engine.config import Config
from engine.errors import ConfigError, ConfigProblem, EngineError, ScanError
from engine.pipeline.actions import Action
from engine.result import ScanResult
from engine.task import Envelope, ScanRequest

__all__ = [
    "Action",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "Engine",
    "EngineError",
    "Envelope",
    "ScanError",
    "ScanRequest",
    "ScanResult",
]

"""One message's state during a scan."""

from engine.task.envelope import Envelope, ScanRequest
from engine.task.stash import Stash, StashKey
from engine.task.task import MilterEdits, Task, UnknownSymbolError

__all__ = [
    "Envelope",
    "MilterEdits",
    "ScanRequest",
    "Stash",
    "StashKey",
    "Task",
    "UnknownSymbolError",
]

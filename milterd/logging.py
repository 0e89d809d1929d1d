"""Logging for every milterd process: where lines go, their shape, and the scan line.

* ``[logging] target``: ``stderr`` (the default: systemd's journal and ``docker logs``
  take it from there), ``file`` (``[logging] file``, appended to; SIGUSR1 reopens it
  after logrotate moved it) or ``syslog`` (``/dev/log``, ``[logging] syslog_facility``).
* ``[logging] format``: ``text`` (one human line) or ``json`` (one JSON object a line;
  the scan line's fields are keys of their own, so a log pipeline needs no regexp).
* Every line names its process (``[pid]``): a supervisor and its workers share the
  target. Workers inherit the handlers across ``fork``; each appends with ``O_APPEND``,
  so lines from different processes do not overwrite each other.
* ``log_scan`` writes the one line per scanned message, the same for the milter and the
  HTTP scan API: queue id, client, sender, recipients, score, action, symbols, time.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine import ScanRequest, ScanResult

__all__ = ["LogSettings", "log_scan", "reopen_logs", "setup_logging"]

scan_log = logging.getLogger("milterd.scan")

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
SYSLOG_FORMAT: Final = "milterd[%(process)d]: %(levelname)s %(name)s: %(message)s"
_SCAN_FIELDS: Final = "scan"


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"
    target: str = "stderr"
    file: str = ""
    format: str = "text"
    syslog_facility: str = "mail"

    @classmethod
    def from_section(cls, section: Mapping[str, object]) -> LogSettings:
        def text(key: str, default: str) -> str:
            value = section.get(key, default)
            return str(value) if value is not None else default

        return cls(
            level=text("level", "info"),
            target=text("target", "stderr"),
            file=text("file", ""),
            format=text("format", "text"),
            syslog_facility=text("syslog_facility", "mail"),
        )


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, pid, logger, msg, and a scan line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(record.created)),
            "level": record.levelname.lower(),
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, _SCAN_FIELDS, None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _ReopenableFileHandler(logging.FileHandler):
    """A log file that SIGUSR1 reopens: logrotate moves it, the next line starts a new one."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


_handler: logging.Handler | None = None


def setup_logging(settings: LogSettings, level: str | None = None) -> None:
    """Replace the root logger's handlers with the one ``settings`` asks for."""
    global _handler
    handler: logging.Handler
    if settings.target == "file" and settings.file:
        handler = _ReopenableFileHandler(settings.file, mode="a", encoding="utf-8", delay=False)
    elif settings.target == "syslog":
        facility = logging.handlers.SysLogHandler.facility_names.get(
            settings.syslog_facility, logging.handlers.SysLogHandler.LOG_MAIL
        )
        try:
            handler = logging.handlers.SysLogHandler(address="/dev/log", facility=facility)
        except OSError as exc:  # no syslog daemon (a container): say so, keep logging
            print(f"milterd: no syslog at /dev/log ({exc}); logging to stderr", file=sys.stderr)
            handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(SYSLOG_FORMAT if settings.target == "syslog" else TEXT_FORMAT)
        )
    root = logging.getLogger()
    root.setLevel((level or settings.level).upper())
    if any(h is not _handler for h in root.handlers):
        # Someone else configured logging first (pytest's capture, an embedding program):
        # as logging.basicConfig does, leave their handlers alone and add none.
        handler.close()
        return
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close()
    root.addHandler(handler)
    _handler = handler


def reopen_logs() -> None:
    """SIGUSR1: reopen the log file (nothing to do for stderr and syslog)."""
    if isinstance(_handler, _ReopenableFileHandler):
        _handler.reopen()
        logging.getLogger(__name__).info("log file reopened")


def log_scan(
    request: ScanRequest,
    result: ScanResult,
    elapsed: float,
    *,
    qid: str | None,
    via: str,
) -> None:
    """The line for one scanned message (``via``: milter or http)."""
    if not scan_log.isEnabledFor(logging.INFO):
        return
    env = request.envelope
    action = result.action.value.replace(" ", "_")
    symbols = [(s.name, round(s.score, 2)) for s in result.symbols.values()]
    fields = {
        "qid": qid or "-",
        "client": env.client_addr or "-",
        "from": env.mail_from or "",
        "rcpts": list(env.rcpts),
        "score": round(result.score, 2),
        "required_score": round(result.required_score, 2),
        "action": action,
        "symbols": dict(symbols),
        "time_ms": round(elapsed * 1000, 1),
        "via": via,
    }
    if result.settings_id:
        fields["settings"] = result.settings_id
    scan_log.info(
        "qid=%s client=%s from=<%s> rcpts=%s score=%.2f/%.2f action=%s%s symbols=[%s] "
        "time=%.1fms via=%s",
        fields["qid"],
        fields["client"],
        fields["from"],
        ",".join(env.rcpts) or "-",
        result.score,
        result.required_score,
        action,
        f" settings={result.settings_id}" if result.settings_id else "",
        ",".join(f"{name}({score:.2f})" for name, score in symbols),
        elapsed * 1000,
        via,
        extra={_SCAN_FIELDS: fields},
    )

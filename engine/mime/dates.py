"""RFC 5322 §3.3 dates, parsed the tolerant way (obsolete forms and junk included)."""

from __future__ import annotations

import calendar
import datetime as _dt
from email.utils import parsedate_tz

__all__ = ["parse_date"]


def parse_date(value: str) -> float | None:
    """``Date:`` text → POSIX timestamp (UTC), or ``None`` when it is not a date.

    Accepts what ``email.utils`` accepts (two-digit years, missing weekday, named zones);
    a missing or ``-0000`` zone counts as UTC (RFC 5322 §3.3). Never raises.
    """
    try:
        parts = parsedate_tz(value.replace("\n", " "))
    except (ValueError, IndexError, TypeError):  # junk that trips the stdlib parser
        return None
    if parts is None:
        return None
    year, month, day, hour, minute, second = parts[:6]
    try:
        # datetime validates the fields (day 31 of February, hour 99 ...), timegm does not.
        _dt.datetime(year, month, day, hour, minute, min(second, 59))
    except (ValueError, OverflowError):
        return None
    offset = parts[9] or 0
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset)

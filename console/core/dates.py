"""The dates an operator types, for `ops list --since/--until`, `log --since/--until` and the console's date bar.

    2026-11-20                 that day's start, local time
    2026-11-20T10:00           local time (also with a space, and with :SS)
    2026-11-20T10:00Z          UTC; also +02:00 and the other zones ISO 8601 writes
    -7d  -24h  -30m  -90s      that long before now (also w for weeks)

A start (`--since`) is inclusive, an end (`--until`) exclusive: `--since 2026-11-20 --until 2026-11-21` is that day.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from console.core.errors import UsageError

FORMS = "2026-11-20, 2026-11-20T10:00 (local time unless it ends in Z or +HH:MM), -7d, -24h or -30m"
_RELATIVE = re.compile(r"^-(\d{1,6})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_ABSOLUTE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:?\d{2})?$")


def parse_when(text: str, what: str = "date", now: float | None = None) -> datetime:
    """The instant `text` names, as an aware UTC datetime; UsageError (one line, exit 2) when it names none."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        span = timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
        return datetime.fromtimestamp(time.time() if now is None else now, UTC) - span
    if _ABSOLUTE.match(value):
        try:
            when = datetime.fromisoformat(value.replace(" ", "T", 1))
        except ValueError as exc:  # 2026-02-30, 25:00
            raise UsageError(f"{what}: not a date: {_shown(text)} ({exc})") from None
        if when.tzinfo is None:
            when = when.astimezone()  # local time, as the operator's clock reads (TZ honoured)
        return when.astimezone(UTC)
    raise UsageError(f"{what}: not a date: {_shown(text)} (use {FORMS})")


def to_ms(when: datetime) -> int:
    """Milliseconds since the epoch (what the operation log keeps)."""
    return int(when.timestamp() * 1000)


def utc_text(when: datetime) -> str:
    """The instant in the form a request carries it: UTC with milliseconds, 'Z'."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def local_text(stamp: str) -> str:
    """'2026-11-20T10:00:05Z' as the operator's clock shows it: '2026-11-20 11:00:05' (in CET)."""
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def local_zone() -> str:
    """The local time zone's name and offset now, as the console says which times it shows: 'CET, UTC+01:00'."""
    now = datetime.now().astimezone()
    offset = now.strftime("%z")
    if now.utcoffset() == timedelta(0) and now.tzname() in ("UTC", "GMT", "Z"):
        return "UTC"
    return f"{now.tzname()}, UTC{offset[:3]}:{offset[3:]}" if offset else str(now.tzname())


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")

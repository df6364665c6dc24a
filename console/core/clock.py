"""Timestamps in the one format the product shows: UTC, second precision, 'Z'."""

from __future__ import annotations

import time
from datetime import datetime, UTC


def utc_iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

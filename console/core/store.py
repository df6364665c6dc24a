"""The store (tinydb): desired unit states, known-host records and the operation record.

Writes are atomic (temp file + os.replace). A corrupt file is moved aside with a log line and the store
starts empty, so the daemon carries on from the config.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage

from console.core.clock import utc_iso
from console.core.paths import atomic_write

log = logging.getLogger("console.store")


class AtomicJSONStorage(Storage):
    """tinydb storage that never leaves a half-written file behind."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, Any] | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        if not raw.strip():
            return None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("top level is not an object")
            return data
        except ValueError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{utc_iso().replace(':', '')}")
            os.replace(self.path, aside)
            log.error("store %s is corrupt (%s); moved aside to %s, starting from the config", self.path, exc, aside)
            return None

    def write(self, data: dict[str, Any]) -> None:
        atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True).encode(), mode=0o600)

    def close(self) -> None:
        pass


class Store:
    def __init__(self, path: Path) -> None:
        self.db = TinyDB(str(path), storage=AtomicJSONStorage)
        self._units = self.db.table("units")
        self._hosts = self.db.table("known_hosts")
        self._ops = self.db.table("operations")

    # -- desired states
    def desired(self, unit: str, default: str = "started") -> str:
        row = self._units.get(Query().unit == unit)
        return row["desired"] if row else default

    def set_desired(self, unit: str, desired: str) -> None:
        self._units.upsert({"unit": unit, "desired": desired}, Query().unit == unit)

    # -- known-host metadata (the keys themselves live in known_hosts)
    def record_host_key(self, server: str, fingerprint: str, how: str, who: str) -> None:
        self._hosts.upsert(
            {"server": server, "fingerprint": fingerprint, "how": how, "who": who, "at": utc_iso()},
            Query().server == server,
        )

    # -- operation record
    def record(self, action: str, who: str, unit: str | None = None, detail: str | None = None) -> None:
        self._ops.insert({"at": utc_iso(), "who": who, "action": action, "unit": unit, "detail": detail})

    def operations(self, limit: int = 100) -> list[dict[str, Any]]:
        return list(self._ops.all())[-limit:]

    def close(self) -> None:
        self.db.close()

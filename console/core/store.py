"""The store (tinydb): desired unit states, known-host records, the hub's clients, the endpoints (those added at run
time, the scope associated at run time with any endpoint, each one's last check), and the proxy rules added at run
time. (The operation record is the operation log, console/core/oplog.py, in SQLite; a store an older version wrote
may still hold its `operations` table until the daemon copies it there: `old_operations`, `drop_old_operations`.)

Writes are atomic (temp file + os.replace); after each one the same data is written to STORE.good, the last good
store. On load the file's shape is checked (tables of records with the fields the code reads). A file that is
not a store (bad JSON, the wrong shape, a directory) is moved aside with a log line and the store carries on from
STORE.good, or starts empty when there is none; either way `Store.notices` says what happened, in words for the
operator. A full disk is an OperationFailed naming the device and the file (console.core.paths.atomic_write);
the store on disk stays what it was.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage

from console.core.clock import utc_iso
from console.core.errors import OperationFailed, os_reason
from console.core.paths import atomic_write
from console.core.status import EndpointCheck
from console.core.words import noun

log = logging.getLogger("console.store")

_TEXT = (str,)
_TEXT_OR_NONE = (str, type(None))
# The fields the code reads from each table's records, with their types. A record may carry more, except a
# client's: console.hub.registry builds Client(**record), so its fields are exactly these.
RECORD_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "units": {"unit": _TEXT, "desired": _TEXT},
    "known_hosts": {"server": _TEXT, "fingerprint": _TEXT},
    "operations": {"at": _TEXT, "who": _TEXT, "action": _TEXT, "unit": _TEXT_OR_NONE, "detail": _TEXT_OR_NONE},
    "clients": {"id": _TEXT, "key": _TEXT, "fingerprint": _TEXT, "quota": (int,), "ports": (list,),
                "created": _TEXT, "last_seen": _TEXT_OR_NONE},
    "endpoints": {"id": _TEXT, "name": _TEXT, "host": _TEXT, "port": (int,), "username": _TEXT,
                  "created": _TEXT, "updated": _TEXT},
    "endpoint_scope": {"endpoint": _TEXT, "subnets": (list,), "vpcs": (list,), "updated": _TEXT},
    "endpoint_checks": {"endpoint": _TEXT, "check": (dict,)},
    "rules": {"direction": _TEXT, "rule": _TEXT, "via": _TEXT, "created": _TEXT},
}
EXACT_TABLES = ("clients",)
_DOC_ID = re.compile(r"^[0-9]{1,18}$")


def shape_problem(data: Any) -> str | None:
    """Why `data` is not a store this code can use, in one phrase; None when it is."""
    if not isinstance(data, dict):
        return f"the top level is {_kind(data)}, not an object of tables"
    for name, table in data.items():
        if not isinstance(table, dict):
            return f"table {name!r} is {_kind(table)}, not an object of records"
        fields = RECORD_FIELDS.get(name, {})
        for doc_id, record in table.items():
            where = f"{name} record {doc_id}"
            if not _DOC_ID.match(doc_id):
                return f"table {name!r} has a record numbered {doc_id!r}"
            if not isinstance(record, dict):
                return f"{where} is {_kind(record)}, not an object"
            for field, types in fields.items():
                if field not in record:
                    return f"{where} lacks {field!r}"
                value = record[field]
                if isinstance(value, bool) or not isinstance(value, types):
                    return f"{where}: {field!r} is {_kind(value)}"
            if name in EXACT_TABLES:
                extra = sorted(set(record) - set(fields))
                if extra:
                    return f"{where} has unknown {noun(len(extra), 'field')} {', '.join(map(repr, extra))}"
            if name == "clients":
                if record["quota"] < 0:
                    return f"{where}: quota is {record['quota']}"
                if not all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535
                           for p in record["ports"]):
                    return f"{where}: ports are not all port numbers"
    return None


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


class AtomicJSONStorage(Storage):
    """tinydb storage that never leaves a half-written file behind, checks the shape of what it reads, and keeps
    the last good store beside the file (PATH.good)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.good = self.path.with_name(self.path.name + ".good")
        self.notices: list[str] = []

    def read(self) -> dict[str, Any] | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            return self._recover("it is a directory")
        except OSError as exc:
            raise OperationFailed(f"cannot read the store {self.path}: {os_reason(exc)}") from None
        if not raw.strip():
            # An empty file is a new store, unless a good copy says there was one (lost by a crash or a disk).
            return self._recover("it is empty") if self.good.is_file() else None
        try:
            data = json.loads(raw)
        except ValueError as exc:  # UnicodeDecodeError included
            return self._recover(f"not JSON: {exc}")
        problem = shape_problem(data)
        if problem is not None:
            return self._recover(f"not a store: {problem}")
        return data

    def _recover(self, why: str) -> dict[str, Any] | None:
        """Move the bad file aside; carry on from the good copy (written back as the store) or from nothing."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{utc_iso().replace(':', '')}")
        n = 1
        while aside.exists() or aside.is_symlink():  # two in one second: keep both
            n += 1
            aside = aside.with_name(f"{aside.name.rsplit('~', 1)[0]}~{n}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:  # another process (the daemon, a CLI command) recovered it a moment ago
            return self._read_again()
        except OSError as exc:
            raise OperationFailed(f"the store {self.path} is unusable ({why}) and cannot be moved aside: "
                                  f"{os_reason(exc)}") from None
        data, good_problem = self._read_good()
        if data is not None:
            atomic_write(self.path, self.good.read_bytes(), mode=0o600)
            when = utc_iso(self.good.stat().st_mtime)
            outcome = f"carried on from the last good copy, {self.good.name}, written {when}"
        else:
            outcome = f"started empty ({good_problem}): units take their state from the config"
            if self.path.name == "store.json":
                outcome += "; the hub's clients, if any, must be added again"
        notice = f"store {self.path} was unusable ({why}); moved aside to {aside.name}; {outcome}"
        log.error("%s", notice)
        self.notices.append(notice)
        return data

    def _read_again(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return None
        return data if shape_problem(data) is None else None

    def _read_good(self) -> tuple[dict[str, Any] | None, str]:
        try:
            data = json.loads(self.good.read_bytes())
        except FileNotFoundError:
            return None, f"no good copy at {self.good.name}"
        except (OSError, ValueError) as exc:
            return None, f"the good copy {self.good.name} is unusable too: {exc}"
        problem = shape_problem(data)
        if problem is not None:
            return None, f"the good copy {self.good.name} is unusable too: {problem}"
        return data, ""

    def write(self, data: dict[str, Any]) -> None:
        raw = json.dumps(data, indent=1, sort_keys=True).encode()
        atomic_write(self.path, raw, mode=0o600)  # the store itself first: it is the truth
        try:
            atomic_write(self.good, raw, mode=0o600)
        except OSError as exc:  # the write the caller asked for happened; an older good copy stays
            notice = f"could not refresh the store's good copy {self.good}: {exc}"
            log.warning("%s", notice)
            self.notices.append(notice)

    def close(self) -> None:
        pass


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Temp files (.NAME.tmp-PID, .NAME.good.tmp-PID) left by a process that died mid-write; a live process's
    file is left alone (it may be writing it now)."""
    removed = []
    for stem in (path.name, path.name + ".good"):
        for tmp in path.parent.glob(f".{stem}.tmp-*"):
            pid = tmp.name.rsplit("-", 1)[1]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            try:
                tmp.unlink()
                removed.append(tmp)
            except FileNotFoundError:
                pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stored_check(row: dict[str, Any]) -> EndpointCheck | None:
    try:
        return EndpointCheck.from_json(row["check"])
    except (ValueError, TypeError) as exc:  # written by another version: the endpoint shows unchecked
        log.warning("ignoring the stored check of endpoint %s: %s", row["endpoint"], exc)
        return None


class Store:
    def __init__(self, path: Path) -> None:
        path = Path(path)
        for tmp in remove_stale_temp_files(path):
            log.info("removed %s, left by a process that stopped while writing the store", tmp)
        self.db = TinyDB(str(path), storage=AtomicJSONStorage)
        self.db.storage.read()  # check the shape now, so a bad file is recovered (and said) at start
        self._units = self.db.table("units")
        self._hosts = self.db.table("known_hosts")
        self._endpoints = self.db.table("endpoints")
        self._scopes = self.db.table("endpoint_scope")
        self._checks = self.db.table("endpoint_checks")
        self._rules = self.db.table("rules")

    @property
    def notices(self) -> list[str]:
        """What happened to the file that the operator should hear of (a corrupt store recovered, a good copy
        not refreshed), oldest first; one sentence each."""
        return list(self.db.storage.notices)

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

    # -- the operation record of an older version (now the operation log, console/core/oplog.py)
    def old_operations(self) -> list[dict[str, Any]]:
        """The records of the old `operations` table, oldest first (none once it was dropped)."""
        if "operations" not in self.db.tables():
            return []
        return [dict(record) for record in self.db.table("operations").all()]

    def drop_old_operations(self) -> None:
        if "operations" in self.db.tables():
            self.db.drop_table("operations")

    # -- endpoints added at run time (console.core.endpoint_table reads and checks them)
    def endpoint_records(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._endpoints.all()]

    def add_endpoint(self, record: dict[str, Any]) -> None:
        """Keep a new runtime endpoint; a scope or check left under its name by an earlier one is dropped."""
        self.forget_endpoint(record["name"])
        self._endpoints.insert(record)

    def forget_endpoint(self, name: str) -> None:
        """Drop a runtime endpoint (if any) with its run-time scope and its last check."""
        self._endpoints.remove(Query().name == name)
        self._scopes.remove(Query().endpoint == name)
        self._checks.remove(Query().endpoint == name)

    # -- scope associated at run time, with any endpoint
    def endpoint_scopes(self) -> dict[str, dict[str, Any]]:
        """Endpoint name -> {"subnets": [...], "vpcs": [...], "updated": time}: what was associated at run time."""
        return {row["endpoint"]: dict(row) for row in self._scopes.all()}

    def set_endpoint_scope(self, name: str, subnets: list[str], vpcs: list[str]) -> str:
        """Keep what is associated with `name` at run time (nothing: the record goes); the time it changed."""
        now = utc_iso()
        if subnets or vpcs:
            self._scopes.upsert({"endpoint": name, "subnets": list(subnets), "vpcs": list(vpcs), "updated": now},
                                Query().endpoint == name)
        else:
            self._scopes.remove(Query().endpoint == name)
        return now

    # -- each endpoint's last login check
    def set_endpoint_check(self, check: EndpointCheck) -> None:
        self._checks.upsert({"endpoint": check.endpoint, "check": check.to_json()}, Query().endpoint == check.endpoint)

    def endpoint_check(self, name: str) -> EndpointCheck | None:
        """The last check of `name`; None when there is none (or it is of a shape this version cannot read)."""
        row = self._checks.get(Query().endpoint == name)
        return _stored_check(row) if row is not None else None

    def endpoint_checks(self) -> dict[str, EndpointCheck]:
        """Every endpoint's last check, by name (one read of the store, for a list)."""
        return {row["endpoint"]: check for row in self._checks.all() if (check := _stored_check(row)) is not None}

    def forget_endpoint_check(self, name: str) -> None:
        self._checks.remove(Query().endpoint == name)

    # -- proxy rules added at run time (console.core.rule_table reads and checks them)
    def rule_records(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._rules.all()]

    def add_rule(self, record: dict[str, Any]) -> None:
        self._rules.insert(record)

    def forget_rule(self, direction: str, rule: str, via: str) -> None:
        q = Query()
        self._rules.remove((q.direction == direction) & (q.rule == rule) & (q.via == via))

    def close(self) -> None:
        self.db.close()

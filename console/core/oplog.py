"""The operation log: every operation that changes something or reveals a secret, from every door (the CLI, the
console, a config reload, the daemon itself), in SQLite: `oplog.sqlite` in the state dir.

Why not tinydb, where the rest of the state lives: tinydb keeps a database as one JSON document, so every insert
rewrites the whole file and every query reads and parses all of it. A log that only grows (a year of operations,
a million rows) would cost more on each insert than the last, and the daemon's loop would wait for it. SQLite
appends a row (WAL, `synchronous=NORMAL`: a sequential write and no fsync per insert), pages through an index
(newest first, keyset paging: `before` an entry's id, never OFFSET), and lets a reader (the CLI, the console
through the daemon) read while the daemon writes.

- Writes (`Recorder.record`) run on the daemon's loop: one INSERT, tens of microseconds (bench/oplog.py). The
  daemon's connection never checkpoints on its own (`wal_autocheckpoint=0`): `maintain()` does, in a thread, at
  start, once the log has been quiet for MAINTAIN_IDLE seconds (with retention: `oplog.keep_days`,
  `oplog.max_rows`, in batches of DELETE_BATCH), and every MAINTAIN_EVERY inserts of a burst (a checkpoint only).
  A burst that outruns retention by its slack has each insert take a few of the oldest with it. (A checkpoint's
  copying and fsync slow the writes made meanwhile: measured, one every 256 inserts of a burst took the insert's
  p99 from 0.2 ms to 1-2 ms; one every 4096, 0.4-0.5 ms.) Reads run in threads, each on its own connection.
- Details never hold a secret: a parameter named like a password, secret, token, private or key material is
  replaced by "(secret)", and so is any value that holds a private key (`scrubbed`). Results are not recorded,
  unless an operation names what of its result to keep (a private key `clients.add` returns never is).
- A database SQLite calls damaged (not a database, malformed) is moved aside as `oplog.sqlite.corrupt-TIMESTAMP`
  (its WAL beside it), with one log line and a notice, and a new one is started.
- The old tinydb `operations` table (store.json) is copied in once (`migrate`), then dropped from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from console.core.clock import utc_iso
from console.core.errors import OperationFailed, UsageError
from console.core.events import Event, OperationRecorded
from console.core.status import OpEntry
from console.core.syslog import ERR, NOTICE, Syslog

if TYPE_CHECKING:
    from console.core.config import Config

log = logging.getLogger("console.oplog")

KEEP_DAYS = 365
MAX_ROWS = 1_000_000
MAINTAIN_EVERY = 4096     # inserts between two maintenance passes (WAL checkpoint, retention) in a burst
MAINTAIN_IDLE = 2.0       # seconds without an insert after which the daemon runs one (so the WAL stays small)
DELETE_BATCH = 100        # rows one retention transaction deletes: an insert waits for one batch at most
TRIM_PER_INSERT = 4       # of the oldest entries an insert may take away with it, once retention is behind...
SLACK_ROWS = 0.01         # ...by more than 1% of max_rows (at least 100), or a day of keep_days (a long burst)
PAGE_MAX = 1000           # entries one page may ask for
_CLIP = 300               # characters of one detail value kept

SCHEMA = """
CREATE TABLE IF NOT EXISTS ops (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    who TEXT NOT NULL,
    ssh_from TEXT,
    via TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    outcome TEXT NOT NULL,
    reason TEXT,
    duration_ms REAL NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ops_ts ON ops(ts);
CREATE INDEX IF NOT EXISTS ops_action ON ops(action, ts);
CREATE INDEX IF NOT EXISTS ops_target ON ops(target, ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = "id, ts, who, ssh_from, via, action, target, outcome, reason, duration_ms, details"
_EXPORTED = {"at": "strftime('%Y-%m-%dT%H:%M:%SZ', ts / 1000, 'unixepoch')"}  # the other columns are as kept
# A CSV cell a spreadsheet would run as a formula (=, +, -, @, and a tab or a carriage return before one) is
# written with a ' in front (OWASP's advice against CSV injection): names, targets and reasons can come from
# outside (a client's name, a server's words). Only in CSV, and only these text columns; JSON stays exact.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_TEXT_COLUMNS = ("who", "ssh_from", "via", "action", "target", "outcome", "reason")
_DEFUSED = "CASE WHEN substr({0}, 1, 1) IN ('=', '+', '-', '@', char(9), char(13)) THEN '''' || {0} ELSE {0} END"
_INSERT = ("INSERT INTO ops (ts, who, ssh_from, via, action, target, outcome, reason, duration_ms, details) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SECRET_NAME = re.compile(r"pass|secret|private|token|credential|(^|_)key($|_)|key_?material", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"PRIVATE KEY|BEGIN OPENSSH|BEGIN RSA|BEGIN EC|BEGIN DSA")
_DAMAGED = (11, 26)       # SQLITE_CORRUPT, SQLITE_NOTADB


# ---------------------------------------------------------------------------------------------- what is kept


def scrubbed(args: dict[str, Any]) -> dict[str, Any]:
    """Parameters as the log keeps them: a secret replaced by "(secret)", long values clipped, None left out."""
    kept = {}
    for name, value in args.items():
        if value is None:
            continue
        if _SECRET_NAME.search(str(name)) or (isinstance(value, str) and _SECRET_VALUE.search(value)):
            kept[str(name)] = "(secret)"
            continue
        if not isinstance(value, (str, int, float, bool)):
            value = json.dumps(value, default=str)
            if _SECRET_VALUE.search(value):
                kept[str(name)] = "(secret)"
                continue
        if isinstance(value, str) and len(value) > _CLIP:
            value = f"{value[:_CLIP]}... ({len(value)} characters)"
        kept[str(name)] = value
    return kept


@dataclass(frozen=True)
class OpQuery:
    """Which entries, newest first: a time range (ms since the epoch; `since` inclusive, `until` exclusive), an
    action (exact, or a prefix ending in '*': 'clients.*'), who (the user, or the SSH address said), a target; then
    `limit` entries older than entry `before`, or the entries newer than entry `after` (the console's live view)."""

    since: int | None = None
    until: int | None = None
    action: str | None = None
    who: str | None = None
    target: str | None = None
    before: int | None = None
    after: int | None = None
    limit: int = 20

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= PAGE_MAX:
            raise UsageError(f"limit must be 1-{PAGE_MAX}, got {self.limit}")
        if self.before is not None and self.after is not None:
            raise UsageError("before and after do not go together")

    def where(self) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.since is not None:
            clauses.append("ts >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("ts < ?")
            params.append(self.until)
        if self.action:
            if self.action.endswith("*"):
                clauses.append("action >= ? AND action < ?")
                params += [self.action[:-1], self.action[:-1] + "\U0010ffff"]
            else:
                clauses.append("action = ?")
                params.append(self.action)
        if self.who:
            clauses.append("(who = ? OR ssh_from = ?)")
            params += [self.who, self.who]
        if self.target:
            clauses.append("target = ?")
            params.append(self.target)
        return clauses, params


def _entry(row: tuple) -> OpEntry:
    id_, ts, who, ssh_from, via, action, target, outcome, reason, duration, details = row
    try:
        kept = json.loads(details)
    except ValueError:
        kept = {"details": details}
    at = datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return OpEntry(id_, at, who, ssh_from, via, action, target, outcome, reason, duration,
                   kept if isinstance(kept, dict) else {"details": kept})


def _damaged(exc: sqlite3.Error) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in _DAMAGED


# ---------------------------------------------------------------------------------------------- the database


class OpLog:
    """The log's file. `daemon=True`: the daemon's own (no checkpoint on the writer's path: `maintain` does it);
    `read_only=True`: a reader that never writes (the CLI with no daemon, an export); a missing file reads empty.
    `keep_days` / `max_rows` None: no retention here (a command that does not know the configuration)."""

    def __init__(self, path: Path, *, keep_days: int | None = KEEP_DAYS, max_rows: int | None = MAX_ROWS,
                 daemon: bool = False, read_only: bool = False) -> None:
        self.path = Path(path)
        self.keep_days, self.max_rows = keep_days, max_rows
        self.daemon, self.read_only = daemon, read_only
        self.notices: list[str] = []
        self.inserts = 0                    # since the last maintenance pass
        self._idle: list[sqlite3.Connection] = []   # readers not in use (each used by one thread at a time)
        self._lock = threading.Lock()
        # Held by each write: an insert waits for one retention batch to end, not SQLite's busy handler (which
        # sleeps 1, 2, 5, 10 ... ms between tries: the daemon's loop would wait that long for a lock freed sooner)
        self._writing = threading.Lock()
        # What retention needs without a query, kept under _writing: the first and last id (their difference is
        # the number of entries: only the oldest are ever deleted) and the oldest time.
        self._first_id: int | None = None
        self._last_id: int | None = None
        self._oldest_ts: int | None = None
        self._maintaining = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if daemon:  # at start, so a damaged file is moved aside (and said) now; a command opens it when it writes
            try:
                self._db = self._open()
            except OperationFailed as exc:  # a full disk: the operations go on; each tries to open it again
                log.warning("%s; operations are not recorded until it opens", exc.message)
                self.notices.append(f"{exc.message}: operations are not recorded until it opens")

    # -- opening, and a damaged file moved aside

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except OSError as exc:
            raise OperationFailed(f"cannot open the operation log {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            if not (_damaged(exc) or self.path.is_dir()):
                raise OperationFailed(f"cannot open the operation log {self.path}: {exc}") from None
            self._move_aside(str(exc) if not self.path.is_dir() else "it is a directory")
        try:
            return self._connect()
        except (sqlite3.Error, OSError) as exc:
            raise OperationFailed(f"cannot open the operation log {self.path}: {exc}") from None

    def _connect(self) -> sqlite3.Connection:
        created = not self.path.exists()
        if created:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # 0600 from the start
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=2.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA journal_size_limit=4194304")
            if self.daemon:
                db.execute("PRAGMA wal_autocheckpoint=0")
            db.executescript(SCHEMA)
            self._bounds(db)
        except BaseException:
            db.close()
            if created:  # a log that could not even be made (a full disk) leaves no empty file behind
                for path in (self.path, *(self.path.with_name(self.path.name + tail) for tail in ("-wal", "-shm"))):
                    path.unlink(missing_ok=True)
            raise
        return db

    def _move_aside(self, why: str) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{utc_iso().replace(':', '')}")
        n = 1
        while aside.exists():
            n += 1
            aside = aside.with_name(f"{aside.name.rsplit('~', 1)[0]}~{n}")
        try:
            os.replace(self.path, aside)
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists():
                os.replace(wal, aside.with_name(aside.name + "-wal"))
            self.path.with_name(self.path.name + "-shm").unlink(missing_ok=True)
        except OSError as exc:
            raise OperationFailed(f"the operation log {self.path} is unusable ({why}) and cannot be moved aside: "
                                  f"{exc}") from None
        with self._lock:
            idle, self._idle = self._idle, []
        for db in idle:  # readers of the file moved aside
            db.close()
        notice = f"operation log {self.path} was unusable ({why}); moved aside to {aside.name}; a new one was started"
        log.error("%s", notice)
        self.notices.append(notice)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for db in idle:
            db.close()
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- writing

    def insert(self, entry: OpEntry, ts: int) -> int:
        """Write one entry; its id. OperationFailed when it cannot be written (a full disk). Retention is the
        maintenance's (in a thread, once the log is quiet); only when a burst leaves it behind by its slack does
        an insert take up to TRIM_PER_INSERT of the oldest away with it, in its transaction (measured: an insert
        at the limit that also deletes costs twice as much, p99 0.2 -> 1.3 ms, so not every insert does)."""
        if self.read_only:
            raise OperationFailed("the operation log is open read-only")
        if self._db is None:
            self._db = self._open()
        values = (ts, entry.who, entry.ssh_from, entry.via, entry.action, entry.target, entry.outcome, entry.reason,
                  entry.duration_ms, json.dumps(entry.details, ensure_ascii=False))
        try:
            new_id = self._write(self._db, values, ts)
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise OperationFailed(f"cannot write the operation log {self.path}: {exc}") from None
            self._db.close()
            self._move_aside(str(exc))
            self._db = self._connect()
            new_id = self._write(self._db, values, ts)
        self.inserts += 1
        return new_id

    def _write(self, db: sqlite3.Connection, values: tuple, ts: int) -> int:
        with self._writing:
            over = self._over(ts, slack=True)
            if over is None:
                new_id = int(db.execute(_INSERT, values).lastrowid)
            else:
                db.execute("BEGIN IMMEDIATE")
                try:
                    new_id = int(db.execute(_INSERT, values).lastrowid)
                    self._trim(db, *over, TRIM_PER_INSERT)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    self._bounds(db)
                    raise
            self._last_id = new_id
            if self._first_id is None:
                self._first_id, self._oldest_ts = new_id, ts
            return new_id

    def _over(self, now_ms: int, coming: int = 1, slack: bool = False) -> tuple[int, int | None] | None:
        """What retention wants gone (with `coming` entries more): (entries beyond max_rows, the time before
        which they are older than keep_days); None when nothing, or with `slack` nothing beyond the slack."""
        beyond = 0
        if self.max_rows is not None and self._first_id is not None and self._last_id is not None:
            beyond = self._last_id + coming - self._first_id + 1 - self.max_rows
            if slack and beyond <= max(100, int(self.max_rows * SLACK_ROWS)):
                beyond = 0
        cutoff = None
        if self.keep_days is not None and self._oldest_ts is not None:
            cutoff = now_ms - self.keep_days * 86_400_000
            if self._oldest_ts >= cutoff - (86_400_000 if slack else 0):
                cutoff = None
        return (beyond, cutoff) if beyond > 0 or cutoff is not None else None

    def _trim(self, db: sqlite3.Connection, beyond: int, cutoff: int | None, most: int) -> int:
        """Delete up to `most` of the oldest entries: those older than `cutoff`, then those beyond max_rows."""
        deleted = 0
        if cutoff is not None:
            deleted += db.execute("DELETE FROM ops WHERE id IN (SELECT id FROM ops WHERE ts < ? ORDER BY ts LIMIT ?)",
                                  (cutoff, most)).rowcount
        if beyond - deleted > 0:
            deleted += db.execute("DELETE FROM ops WHERE id IN (SELECT id FROM ops ORDER BY id LIMIT ?)",
                                  (min(beyond - deleted, most),)).rowcount
        if deleted:
            self._bounds(db)
        return deleted

    def _bounds(self, db: sqlite3.Connection) -> None:
        self._first_id = db.execute("SELECT min(id) FROM ops").fetchone()[0]
        self._last_id = db.execute("SELECT max(id) FROM ops").fetchone()[0]
        self._oldest_ts = db.execute("SELECT min(ts) FROM ops").fetchone()[0]

    def migrate(self, records: list[dict[str, Any]]) -> int:
        """Copy the old store's operation records in, once (a mark in the log says it was done); how many."""
        if self._db is None:
            self._db = self._open()
        if self._db.execute("SELECT value FROM meta WHERE key = 'tinydb_migrated'").fetchone():
            return 0
        rows = []
        for record in records:
            try:
                ts = int(datetime.fromisoformat(str(record.get("at"))).timestamp() * 1000)
            except ValueError:
                ts = 0
            detail = record.get("detail")
            rows.append((ts, str(record.get("who") or "unknown"), None, "migrated", str(record.get("action") or "?"),
                         record.get("unit"), "ok", None, 0.0,
                         json.dumps(scrubbed({"detail": detail}) if detail else {}, ensure_ascii=False)))
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(_INSERT, rows)
                self._db.execute("INSERT INTO meta (key, value) VALUES ('tinydb_migrated', ?)", (str(len(rows)),))
                self._db.execute("COMMIT")
                with self._writing:
                    self._bounds(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise OperationFailed(f"cannot write the operation log {self.path}: {exc}") from None
        return len(rows)

    def maintain(self, now: float | None = None, retain: bool = True) -> int:
        """Retention (older than keep_days, beyond max_rows: the oldest go; not with `retain` False, in a burst),
        then a WAL checkpoint; on its own connection, so a thread can run it while the daemon writes. Rows
        deleted; 0 when another pass runs."""
        if self.read_only or not self._maintaining.acquire(blocking=False):
            return 0
        self.inserts = 0  # from now: a burst that goes on asks for the next pass after as many again
        try:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            try:
                deleted = self._retain(db, time.time() if now is None else now) if retain else 0
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                db.close()
        except sqlite3.Error as exc:
            log.warning("operation log %s: maintenance failed: %s", self.path, exc)
            return 0
        finally:
            self._maintaining.release()
        return deleted

    def _retain(self, db: sqlite3.Connection, now: float) -> int:
        """What the inserts have not trimmed yet (a log that waited long, a smaller keep_days or max_rows): in
        batches of DELETE_BATCH, each under the write lock, so an insert waits for one batch at most."""
        deleted = 0
        while True:
            with self._writing:
                self._bounds(db)
                over = self._over(int(now * 1000), coming=0)
                n = self._trim(db, *over, DELETE_BATCH) if over else 0
            deleted += n
            if n == 0:
                break
        if deleted:
            log.info("operation log: %d old entries dropped (keep_days %s, max_rows %s)", deleted, self.keep_days,
                     self.max_rows)
        return deleted

    # -- reading (any thread)

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection | None]:
        with self._lock:
            db = self._idle.pop() if self._idle else None
        if db is None:
            if self.read_only and not self.path.exists():
                yield None
                return
            try:
                db = sqlite3.connect(f"file:{quote(str(self.path))}?mode=ro", uri=True, check_same_thread=False,
                                     timeout=2.0)
                db.execute("PRAGMA query_only=1")
            except sqlite3.Error as exc:
                raise OperationFailed(f"cannot read the operation log {self.path}: {exc}") from None
        try:
            yield db
        except sqlite3.Error as exc:
            db.close()
            db = None
            raise OperationFailed(f"cannot read the operation log {self.path}: {exc}") from None
        finally:
            if db is not None:
                with self._lock:
                    self._idle.append(db)

    def page(self, query: OpQuery) -> dict[str, Any]:
        """{"entries": [OpEntry ...] newest first, "next_before": the id to page on from, or None at the end}."""
        with self._reader() as db:
            if db is None:
                return {"entries": [], "next_before": None}
            clauses, params = query.where()
            if query.before is not None or query.after is not None:
                mark = query.before if query.before is not None else query.after
                row = db.execute("SELECT ts FROM ops WHERE id = ?", (mark,)).fetchone()
                if row is None and query.before is not None:  # retention took it, and what is older with it
                    return {"entries": [], "next_before": None}
                if row is None:
                    clauses.append("id > ?")
                    params.append(mark)
                elif query.before is not None:
                    clauses.append("ts <= ? AND (ts < ? OR id < ?)")
                    params += [row[0], row[0], mark]
                else:
                    clauses.append("ts >= ? AND (ts > ? OR id > ?)")
                    params += [row[0], row[0], mark]
            where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
            order = "ASC" if query.after is not None else "DESC"
            rows = db.execute(f"SELECT {_COLUMNS} FROM ops{where} ORDER BY ts {order}, id {order} LIMIT ?",
                              (*params, query.limit + 1)).fetchall()
        more = len(rows) > query.limit
        entries = [_entry(row) for row in rows[:query.limit]]
        if query.after is not None:
            entries.reverse()
            return {"entries": entries, "next_before": None, "more_after": more}
        return {"entries": entries, "next_before": entries[-1].id if more else None}

    def get(self, entry_id: int) -> OpEntry | None:
        with self._reader() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM ops WHERE id = ?", (entry_id,)).fetchone() if db else None
        return _entry(row) if row else None

    def entries(self, query: OpQuery) -> Iterator[OpEntry]:
        """Every entry the query selects (no limit), newest first: for an export."""
        with self._reader() as db:
            if db is None:
                return
            clauses, params = query.where()
            where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
            cursor = db.execute(f"SELECT {_COLUMNS} FROM ops{where} ORDER BY ts DESC, id DESC", params)
            while rows := cursor.fetchmany(2000):
                for row in rows:
                    yield _entry(row)

    def rows(self, query: OpQuery, columns: tuple[str, ...], fmt: str = "csv") -> Iterator[tuple | str]:
        """The same entries as export rows (write_export), made by SQLite: for CSV tuples of the columns' values
        (details as JSON text), for JSON each object's text (json_object): a million in a few seconds."""
        with self._reader() as db:
            if db is None:
                return
            clauses, params = query.where()
            where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
            values = [_EXPORTED.get(c, c) for c in columns]
            if fmt == "csv":
                select = ", ".join(_DEFUSED.format(v) if v in _TEXT_COLUMNS else v for v in values)
            else:
                select = "json_object(" + ", ".join(
                    f"'{c}', " + ("json(details)" if c == "details" else v) for c, v in zip(columns, values)) + ")"
            cursor = db.execute(f"SELECT {select} FROM ops{where} ORDER BY ts DESC, id DESC", params)
            while rows := cursor.fetchmany(5000):
                if fmt == "csv":
                    yield from rows
                else:
                    yield from (row[0] for row in rows)


# ---------------------------------------------------------------------------------------------- export

FORMATS = ("csv", "json")


def export_columns(text: str | None) -> tuple[str, ...]:
    """'at,who,action' as columns of an export (every column when None); UsageError naming an unknown one."""
    if not text:
        return OpEntry.COLUMNS
    columns = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in columns if c not in OpEntry.COLUMNS]
    if unknown or not columns:
        raise UsageError(f"--columns: unknown {', '.join(map(repr, unknown)) or 'nothing given'} "
                         f"(columns: {','.join(OpEntry.COLUMNS)})")
    return columns


def export_rows(entries: Iterable[OpEntry], columns: tuple[str, ...], fmt: str) -> Iterator[tuple | str]:
    """Entries (the console's, as shown) as `OpLog.rows` gives them from the file: for CSV a tuple of the columns'
    values (details as JSON text), for JSON an object's text."""
    for entry in entries:
        if fmt == "csv":
            yield tuple(json.dumps(entry.details, ensure_ascii=False) if c == "details" else
                        defused(getattr(entry, c)) if c in _TEXT_COLUMNS else getattr(entry, c) for c in columns)
        else:
            yield json.dumps({c: getattr(entry, c) for c in columns}, ensure_ascii=False, separators=(",", ":"))


def defused(value: str | None) -> str | None:
    """A text cell of a CSV export as a spreadsheet should show it, never run it (FORMULA_STARTS)."""
    return "'" + value if value and value.startswith(FORMULA_STARTS) else value


def write_export(rows: Iterable[tuple | str], columns: tuple[str, ...], fmt: str, out: IO[str]) -> int:
    """Write export rows (`OpLog.rows`, `export_rows`) as CSV (a header, then one row each; quoting as the csv
    module does it, so a comma, a quote or a newline in a value survives; details as a JSON object) or as a JSON
    list of objects, one a line. How many."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(row)
            count += 1
        return count
    out.write("[")
    for text in rows:
        out.write(",\n " if count else "\n ")
        out.write(text)  # type: ignore[arg-type]
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


# ---------------------------------------------------------------------------------------------- the one writer


class Recorder:
    """The one way an entry is written, from every door: the log, then the event a console follows, then syslog.
    `background(fn)` runs the log's maintenance off the caller's thread (the daemon: its executor); without it
    maintenance runs inline (a command, which records one entry and leaves)."""

    def __init__(self, oplog: OpLog, *, publish: Callable[[Event], None] | None = None,
                 syslog: Syslog | None = None, background: Callable[[Callable[[], Any]], Any] | None = None) -> None:
        self.oplog = oplog
        self.publish = publish
        self.syslog = syslog
        self.background = background
        self._failing: str | None = None
        self._idle: asyncio.TimerHandle | None = None

    def record(self, action: str, *, who: str, via: str, target: str | None = None, ok: bool = True,
               reason: str | None = None, duration_ms: float = 0.0, details: dict[str, Any] | None = None,
               ssh_from: str | None = None) -> OpEntry:
        """Write one entry (details are scrubbed here too). A log that cannot be written (a full disk) is said
        once (the daemon's log; a command's stderr); the entry still goes to syslog. The entry, with id 0 when it
        was not written."""
        now = time.time()
        entry = OpEntry(0, utc_iso(now), who, ssh_from, via, action, target, "ok" if ok else "failed",
                        " ".join((reason or "").splitlines()) or None, round(duration_ms, 1),
                        scrubbed(details or {}))
        try:
            entry.id = self.oplog.insert(entry, int(now * 1000))
        except OperationFailed as exc:
            # said once per reason, for an operation that went through (one that failed, on a full disk say,
            # has said why already)
            if ok and exc.message != self._failing:
                log.warning("%s; the entry goes to syslog only (if on): %s %s", exc.message, action, target or "")
                self._failing = exc.message
        else:
            self._failing = None
            if self.publish is not None:
                self.publish(OperationRecorded(entry.id, action))
        if self.syslog is not None and self.syslog.enabled:
            self.syslog.send(syslog_line(entry), NOTICE if ok else ERR)
        if self.oplog.inserts >= MAINTAIN_EVERY:
            self.maintain(retain=False)  # a burst: a checkpoint; retention once it is quiet, or by its inserts
        if self.background is not None and entry.id:
            self._when_quiet()
        return entry

    def _when_quiet(self) -> None:
        """Maintenance once no entry has come for MAINTAIN_IDLE seconds (a burst is not slowed by it)."""
        if self._idle is not None:
            self._idle.cancel()
        try:
            self._idle = asyncio.get_running_loop().call_later(MAINTAIN_IDLE, self.maintain)
        except RuntimeError:  # no loop here
            self._idle = None

    def maintain(self, retain: bool = True) -> None:
        if self.background is not None:
            self.background(lambda: self.oplog.maintain(retain=retain))
        else:
            self.oplog.maintain(retain=retain)

    def close(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self.oplog.close()
        if self.syslog is not None:
            self.syslog.close()


def recorder_for(path: Path, config: Config | None = None) -> Recorder:
    """The recorder of a command that writes the log itself (no daemon runs): retention and syslog as the
    configuration says; without one, no retention here (the daemon applies the configured one) and no syslog."""
    if config is None:
        return Recorder(OpLog(path, keep_days=None, max_rows=None))
    return Recorder(OpLog(path, keep_days=config.oplog.keep_days, max_rows=config.oplog.max_rows),
                    syslog=Syslog(config.log.syslog_target))


def syslog_line(entry: OpEntry) -> str:
    """'operation 42 clients.add acme by operator via cli: ok (3.1 ms) quota=5'."""
    outcome = "ok" if entry.outcome == "ok" else f"failed: {entry.reason}"
    head = f"operation {entry.id} {entry.action}{' ' + entry.target if entry.target else ''}"
    details = entry.details_text()
    return f"{head} by {entry.who_text} via {entry.via}: {outcome} ({entry.duration_ms:g} ms)" + \
        (f" {details}" if details else "")

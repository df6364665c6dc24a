"""The operation log (console/core/oplog.py) on real SQLite files: paging, date ranges, export, retention, the
tinydb migration, a damaged file, and secrets that never reach the file; the recorder through `perform`."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import eventually, run

from console.control.operations import OPERATIONS, Call, operation, perform
from console.core.dates import parse_when, to_ms
from console.core.errors import UsageError
from console.core.oplog import OpLog, OpQuery, Recorder, export_columns, export_rows, scrubbed, write_export
from console.core.status import OpEntry
from console.core.store import Store
from console.hub.admin import ClientsAdmin
from console.hub.registry import Registry

T0 = to_ms(datetime(2026, 11, 20, 10, 0, tzinfo=UTC))


def entry(action: str = "start", target: str | None = "master", **fields) -> OpEntry:
    values = dict(id=0, at="", who="operator", ssh_from=None, via="cli", action=action, target=target, outcome="ok",
                  reason=None, duration_ms=1.0, details={})
    values.update(fields)
    return OpEntry(**values)


def filled(path: Path, n: int, step_ms: int = 1000, **kwargs) -> OpLog:
    log = OpLog(path, **kwargs)
    for i in range(n):
        log.insert(entry(details={"n": i}), T0 + i * step_ms)
    return log


def ids(page: dict) -> list[int]:
    return [e.id for e in page["entries"]]


# ---------------------------------------------------------------------------------------------- paging


def test_pages_newest_first_without_gaps_or_repeats_while_entries_arrive(tmp_path):
    log = filled(tmp_path / "oplog.sqlite", 95)
    seen, before, page_no = [], None, 0
    while True:
        page = log.page(OpQuery(before=before, limit=20))
        seen += ids(page)
        # a new operation between two pages (at a later time, as they come): it goes above, not into the pages
        log.insert(entry("stop", details={"arrived_after_page": page_no}), T0 + 10_000_000 + page_no)
        page_no += 1
        if page["next_before"] is None:
            break
        assert page["next_before"] == seen[-1]
        before = page["next_before"]
    assert seen == list(range(95, 0, -1)) and page_no == 5
    # the entries that arrived meanwhile are the newest page now, newest first
    assert ids(log.page(OpQuery(limit=5))) == [100, 99, 98, 97, 96]


def test_paging_while_another_thread_writes(tmp_path):
    """A reader paging on its own connection while the writer inserts as fast as it can (WAL): every entry that
    was there when paging started is seen exactly once."""
    log = filled(tmp_path / "oplog.sqlite", 500)
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            log.insert(entry("stop"), T0 + 100_000_000 + n)
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        page = log.page(OpQuery(limit=37))
        seen = ids(page)
        while page["next_before"] is not None:
            page = log.page(OpQuery(before=page["next_before"], limit=37))
            seen += ids(page)
    finally:
        stop.set()
        writer.join()
    assert seen == list(range(seen[0], 0, -1)) and seen[0] >= 500
    assert log.page(OpQuery(limit=1))["entries"][0].id > seen[0]  # the writer went on writing meanwhile


def test_entries_newer_than_one_for_a_live_view(tmp_path):
    log = filled(tmp_path / "oplog.sqlite", 10)
    page = log.page(OpQuery(after=7, limit=20))
    assert ids(page) == [10, 9, 8] and page["more_after"] is False
    assert log.page(OpQuery(after=7, limit=2))["more_after"] is True


def test_filters_by_action_prefix_who_and_target(tmp_path):
    log = OpLog(tmp_path / "oplog.sqlite")
    log.insert(entry("clients.add", "acme"), T0)
    log.insert(entry("clients.remove", "acme", who="alice"), T0 + 1)
    log.insert(entry("start", "master", ssh_from="10.0.0.5"), T0 + 2)
    assert ids(log.page(OpQuery(action="clients.*"))) == [2, 1]
    assert ids(log.page(OpQuery(action="clients.add"))) == [1]
    assert ids(log.page(OpQuery(who="alice"))) == [2]
    assert ids(log.page(OpQuery(who="10.0.0.5"))) == [3]
    assert ids(log.page(OpQuery(target="master"))) == [3]
    with pytest.raises(UsageError, match="limit must be 1-1000"):
        OpQuery(limit=0)


# ---------------------------------------------------------------------------------------------- dates


def test_a_date_range_includes_its_start_and_excludes_its_end(tmp_path):
    log = filled(tmp_path / "oplog.sqlite", 10, step_ms=60_000)  # 10:00, 10:01, ... 10:09 UTC
    since = to_ms(parse_when("2026-11-20T10:03Z"))
    until = to_ms(parse_when("2026-11-20T10:06:00+00:00"))
    page = log.page(OpQuery(since=since, until=until))
    assert [e.at for e in page["entries"]] == ["2026-11-20T10:05:00Z", "2026-11-20T10:04:00Z", "2026-11-20T10:03:00Z"]
    one_ms_later = log.page(OpQuery(since=since + 1, until=until + 1))
    assert [e.at for e in one_ms_later["entries"]] == ["2026-11-20T10:06:00Z", "2026-11-20T10:05:00Z",
                                                       "2026-11-20T10:04:00Z"]
    # paging inside a range stays inside it
    page = log.page(OpQuery(since=since, until=until, limit=2))
    rest = log.page(OpQuery(since=since, until=until, before=page["next_before"], limit=2))
    assert ids(page) + ids(rest) == [6, 5, 4] and rest["next_before"] is None


@pytest.mark.parametrize("text, expected", [
    ("2026-11-20T10:00Z", "2026-11-20T10:00:00+00:00"),
    ("2026-11-20T10:00+02:00", "2026-11-20T08:00:00+00:00"),
    ("2026-11-20 10:00:30Z", "2026-11-20T10:00:30+00:00"),
])
def test_dates_with_a_zone(text, expected):
    assert parse_when(text).isoformat() == expected


def test_relative_dates_and_refusals():
    now = datetime(2026, 11, 20, 10, 0, tzinfo=UTC).timestamp()
    assert parse_when("-7d", now=now).isoformat() == "2026-11-13T10:00:00+00:00"
    assert parse_when("-24h", now=now).isoformat() == "2026-11-19T10:00:00+00:00"
    assert parse_when("-30m", now=now).isoformat() == "2026-11-20T09:30:00+00:00"
    for bad in ("yesterday", "2026-13-01", "2026-02-30", "-7y", "7d", ""):
        with pytest.raises(UsageError, match=r"^since: not a date: "):
            parse_when(bad, "since")


# ---------------------------------------------------------------------------------------------- export


def test_export_columns_and_csv_quoting_survive_commas_quotes_and_newlines(tmp_path):
    log = OpLog(tmp_path / "oplog.sqlite")
    tricky = 'a, "quoted" value\nand a second line'
    log.insert(entry("clients.add", "acme,corp", reason=None, details={"note": tricky, "quota": 5}), T0)
    log.insert(entry("stop", 'say "hi"', outcome="failed", reason="it, failed"), T0 + 1000)
    log.insert(entry("start", "two\nlines\r", who="élodie", duration_ms=18.0, details={"n": 0.1}), T0 + 2000)
    out = io.StringIO()
    columns = export_columns("id,at,target,outcome,reason,details")
    assert write_export(log.rows(OpQuery(until=T0 + 2000), columns), columns, "csv", out) == 2
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert rows[0] == ["id", "at", "target", "outcome", "reason", "details"]
    assert rows[1] == ["2", "2026-11-20T10:00:01Z", 'say "hi"', "failed", "it, failed", "{}"]
    assert rows[2][:5] == ["1", "2026-11-20T10:00:00Z", "acme,corp", "ok", ""]
    assert json.loads(rows[2][5]) == {"note": tricky, "quota": 5}
    out = io.StringIO()
    write_export(log.rows(OpQuery(action="stop"), ("action", "who"), "json"), ("action", "who"), "json", out)
    assert json.loads(out.getvalue()) == [{"action": "stop", "who": "operator"}]
    # what the console exports (the entries it shows) is the same, cell for cell, as what the file gives
    every = OpEntry.COLUMNS
    written = {}
    for fmt in ("csv", "json"):
        from_file, shown = io.StringIO(), io.StringIO()
        write_export(log.rows(OpQuery(), every, fmt), every, fmt, from_file)
        write_export(export_rows(log.page(OpQuery())["entries"], every, fmt), every, fmt, shown)
        assert from_file.getvalue() == shown.getvalue()
        written[fmt] = from_file.getvalue()
    assert json.loads(written["json"])[2]["details"] == {"note": tricky, "quota": 5}
    newest = list(csv.reader(io.StringIO(written["csv"], newline="")))[1]
    assert (newest[2], newest[6], newest[9], newest[10]) == ("élodie", "two\nlines\r", "18.0", '{"n": 0.1}')
    with pytest.raises(UsageError, match="unknown 'colour'"):
        export_columns("at,colour")


def test_a_csv_export_never_hands_a_spreadsheet_a_formula(tmp_path):
    """Names and reasons can come from outside (a client's name, a server's words): a cell starting as a formula
    gets a ' in front in CSV, from the file and from the console's rows alike; JSON keeps the value exact."""
    log = OpLog(tmp_path / "oplog.sqlite")
    evil = ['=HYPERLINK("http://x","y")', "+1+1", "-2", "@SUM(A1)", "\t=1", "\r=1"]
    for n, text in enumerate(evil):
        log.insert(entry("clients.add", text, who=text, reason=text, details={"v": text}), T0 + n * 1000)
    log.insert(entry("clients.add", "a-b=c", who="ops"), T0 + 9000)
    columns = ("target", "who", "reason", "details", "duration_ms")
    for rows in (log.rows(OpQuery(), columns, "csv"),
                 export_rows(log.page(OpQuery())["entries"], columns, "csv")):
        out = io.StringIO()
        write_export(rows, columns, "csv", out)
        cells = list(csv.reader(io.StringIO(out.getvalue(), newline="")))[1:]
        assert cells[0][0] == "a-b=c"   # only the first character matters
        assert sorted(row[0] for row in cells[1:]) == sorted("'" + text for text in evil)
        assert all(row[0] == row[1] == row[2] for row in cells[1:])
        assert all(json.loads(row[3])["v"] == row[0][1:] for row in cells[1:])   # details: JSON, exact
    out = io.StringIO()
    write_export(log.rows(OpQuery(), ("target",), "json"), ("target",), "json", out)
    assert sorted(e["target"] for e in json.loads(out.getvalue())) == sorted([*evil, "a-b=c"])


# ---------------------------------------------------------------------------------------------- retention


def test_retention_drops_the_oldest_by_age_and_by_count(tmp_path):
    day = 86_400_000
    log = filled(tmp_path / "oplog.sqlite", 10, step_ms=day, keep_days=None, max_rows=None)  # one a day
    now = (T0 + 9 * day) / 1000
    log.keep_days = 5  # a smaller keep_days (a reload): the next maintenance drops what is older
    assert log.maintain(now=now) == 4  # days 0-3 are more than 5 days old
    assert [e.id for e in log.entries(OpQuery())] == list(range(10, 4, -1))
    log.keep_days, log.max_rows = None, 4
    assert log.maintain(now=now) == 2
    assert [e.id for e in log.entries(OpQuery())] == [10, 9, 8, 7]
    assert log.maintain(now=now) == 0


def test_a_burst_beyond_the_slack_trims_as_it_inserts(tmp_path):
    """Between two quiet moments, inserts keep the log within max_rows plus 1% (at least 100), and within a day
    of keep_days, taking up to four of the oldest each."""
    day = 86_400_000
    log = filled(tmp_path / "oplog.sqlite", 4, keep_days=None, max_rows=4)
    for i in range(100):
        log.insert(entry(), T0 + 10_000 + i)
    assert len(list(log.entries(OpQuery()))) == 104  # within the slack: nothing deleted on the writer's path
    log.insert(entry(), T0 + 20_000)
    kept = [e.id for e in log.entries(OpQuery())]
    assert len(kept) == 101 and kept[-1] == 5  # 1-4, the oldest, went with it
    log.max_rows, log.keep_days = None, 5
    log.insert(entry(), T0 + 6 * day)  # nothing is a day past keep_days yet
    assert len(list(log.entries(OpQuery()))) == 102
    log.insert(entry(), T0 + 7 * day)  # now all the others are: four go with each insert
    assert len(list(log.entries(OpQuery()))) == 99
    assert log.maintain(now=(T0 + 7 * day) / 1000) == 97  # the quiet moment takes the rest
    assert [e.id for e in log.entries(OpQuery())] == [107, 106]


def test_the_recorder_checkpoints_in_a_burst_and_keeps_retention_for_a_quiet_moment(tmp_path, monkeypatch):
    from console.core import oplog

    monkeypatch.setattr(oplog, "MAINTAIN_EVERY", 10)
    monkeypatch.setattr(oplog, "MAINTAIN_IDLE", 0.2)
    log = OpLog(tmp_path / "oplog.sqlite", max_rows=5, daemon=True)  # below what the config allows, to see it

    async def body():
        loop = asyncio.get_running_loop()
        recorder = Recorder(log, background=lambda work: loop.run_in_executor(None, work))
        for _ in range(10):  # the tenth asks for a checkpoint, in a thread
            recorder.record("start", who="op", via="cli")
        await eventually(lambda: log.inserts == 0, what="the burst's checkpoint")
        assert len(list(log.entries(OpQuery()))) == 10  # no retention in the burst
        await eventually(lambda: len(list(log.entries(OpQuery()))) == 5, what="retention when quiet")
        assert [e.id for e in log.entries(OpQuery())] == [10, 9, 8, 7, 6]
        recorder.close()
    run(body())


# ---------------------------------------------------------------------------------------------- files


def test_the_old_tinydb_operations_are_migrated_once_then_dropped_from_the_store(tmp_path, state):
    from console.core.config import Config
    from console.engine import Engine

    old = {"operations": {"1": {"at": "2026-11-01T08:00:00Z", "who": "alice", "action": "stop", "unit": "master",
                                "detail": None},
                          "2": {"at": "2026-11-01T08:05:00Z", "who": "bob", "action": "key install",
                                "unit": "clone", "detail": "installed SHA256:abc"}},
           "units": {"1": {"unit": "master", "desired": "stopped"}}}
    state.database.write_text(json.dumps(old))

    async def start_and_stop() -> None:
        engine = Engine(Config(), state)
        await engine.start()
        await engine.shutdown()

    run(start_and_stop())
    log = OpLog(state.oplog, read_only=True)
    moved = list(log.entries(OpQuery()))
    assert [(e.at, e.who, e.action, e.target, e.via, e.details) for e in moved] == [
        ("2026-11-01T08:05:00Z", "bob", "key install", "clone", "migrated", {"detail": "installed SHA256:abc"}),
        ("2026-11-01T08:00:00Z", "alice", "stop", "master", "migrated", {}),
    ]
    store = json.loads(state.database.read_text())
    assert "operations" not in store and store["units"]["1"]["desired"] == "stopped"
    assert "operation log: 2 records of the store's operations moved" in state.tunnel_log.read_text()
    # a store that has the table again (an older version ran meanwhile) is not copied twice
    state.database.write_text(json.dumps(old))
    run(start_and_stop())
    assert len(list(OpLog(state.oplog, read_only=True).entries(OpQuery()))) == 2
    assert "operations" not in json.loads(state.database.read_text())


@pytest.mark.parametrize("damage", ["garbage", "truncated-header", "directory"])
def test_a_damaged_log_is_moved_aside_with_one_log_line_and_a_new_one_started(tmp_path, caplog, damage):
    path = tmp_path / "oplog.sqlite"
    filled(path, 3).close()
    if damage == "garbage":
        path.write_bytes(b"this is not a database " * 200)
    elif damage == "truncated-header":
        path.write_bytes(path.read_bytes()[:50] + b"\0" * 4000)
    else:
        for p in tmp_path.glob("oplog.sqlite*"):
            p.unlink()
        path.mkdir()
    caplog.set_level(logging.INFO, logger="console.oplog")
    log = OpLog(path, daemon=True)
    lines = [r for r in caplog.records if r.name == "console.oplog"]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR
    assert "was unusable" in lines[0].getMessage() and "moved aside to oplog.sqlite.corrupt-" in lines[0].getMessage()
    (aside,) = tmp_path.glob("oplog.sqlite.corrupt-*[!l]")  # not its -wal
    assert aside.exists() and "moved aside" in log.notices[0]
    assert log.insert(entry(), T0) == 1 and ids(log.page(OpQuery())) == [1]
    assert (path.stat().st_mode & 0o777) == 0o600


def test_a_read_only_reader_of_a_missing_log_reads_nothing(tmp_path):
    log = OpLog(tmp_path / "nothing.sqlite", read_only=True)
    assert log.page(OpQuery()) == {"entries": [], "next_before": None}
    assert list(log.entries(OpQuery())) == [] and log.get(1) is None
    assert not (tmp_path / "nothing.sqlite").exists()


# ---------------------------------------------------------------------------------------------- secrets


def test_scrubbed_replaces_secrets_by_name_and_by_value():
    kept = scrubbed({"password": "hunter2", "new_password": "x", "client_secret": "s", "private_key": "k",
                     "pub_key": "ssh-ed25519 AAAA", "token": "t", "note": "-----BEGIN OPENSSH PRIVATE KEY-----\n",
                     "id": "acme", "quota": 5, "force": False, "unit": None, "long": "x" * 1000})
    assert kept == {"password": "(secret)", "new_password": "(secret)", "client_secret": "(secret)",
                    "private_key": "(secret)", "pub_key": "(secret)", "token": "(secret)", "note": "(secret)",
                    "id": "acme", "quota": 5, "force": False, "long": "x" * 300 + "... (1000 characters)"}


def test_secrets_never_reach_the_log_file(tmp_path, state):
    """clients.add without a public key returns a private key; an operation with a password parameter: the
    log's files (database and WAL, byte for byte) hold neither, and the entries say "(secret)"."""
    password = "correct-horse-battery-staple-31337"

    @operation("t.login", hub=True)
    def t_login(call: Call, user: str, password: str) -> dict:
        """A test operation that takes a password."""
        return {"ok": True, "echo": password}

    store = Store(state.database)
    log = OpLog(state.oplog, daemon=True)
    call = Call("operator", clients=ClientsAdmin(Registry(store, (2200, 2299), 5)), via="cli",
                recorder=Recorder(log))
    try:
        async def body():
            await perform(call, "t.login", {"user": "alice", "password": password})
            return await perform(call, "clients.add", {"id": "acme"})
        added = run(body())
    finally:
        OPERATIONS.pop("t.login")
    private = added["private_key"]
    body_line = private.splitlines()[2]  # a line of the key's base64 body
    assert "BEGIN OPENSSH PRIVATE KEY" in private
    raw = b"".join(p.read_bytes() for p in state.root.glob("oplog.sqlite*"))
    assert password.encode() not in raw and body_line.encode() not in raw and b"PRIVATE KEY" not in raw
    log.close()
    store.close()
    entries = list(OpLog(state.oplog, read_only=True).entries(OpQuery()))
    assert [(e.action, e.target, e.details) for e in entries] == [
        ("clients.add", "acme", {"id": "acme"}),
        ("t.login", None, {"user": "alice", "password": "(secret)"}),
    ]


def test_perform_records_failures_with_their_reason_and_skips_read_only_operations(tmp_path, state):
    store = Store(state.database)
    log = OpLog(state.oplog)
    call = Call("operator", clients=ClientsAdmin(Registry(store, (2200, 2299), 5)), via="console",
                ssh_from="10.0.0.5", recorder=Recorder(log))

    async def body():
        with pytest.raises(UsageError):
            await perform(call, "clients.change", {"id": "nobody", "quota": 3})
        await perform(call, "clients.list", {})
    run(body())
    (failed,) = log.entries(OpQuery())
    assert (failed.action, failed.target, failed.outcome, failed.via, failed.ssh_from) == \
        ("clients.change", "nobody", "failed", "console", "10.0.0.5")
    assert failed.reason.startswith("no client 'nobody'") and failed.duration_ms >= 0
    assert failed.who_text == "operator (ssh from 10.0.0.5, as its client said)"
    store.close()


def test_a_full_log_write_does_not_fail_the_operation(tmp_path, caplog):
    """The log's file cannot be written (here: read-only): the entry is lost, said once, the caller goes on."""
    path = tmp_path / "oplog.sqlite"
    log = OpLog(path)
    log.insert(entry(), T0)
    log.close()
    os.chmod(path, 0o400)
    log._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)  # as a full disk refuses
    recorder = Recorder(log)
    first = recorder.record("start", who="op", via="cli")
    recorder.record("start", who="op", via="cli")
    assert first.id == 0
    assert len([r for r in caplog.records if "cannot write the operation log" in r.getMessage()]) == 1

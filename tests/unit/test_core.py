"""Store, tunnel log, events and layering: the pieces under the engine."""

from __future__ import annotations

import os
import threading
import time

import pytest
from support import run

from console.core.events import EventBus, UnitStateChanged, event_from_dict
from console.core.store import Store
from console.core.tunnel_log import TunnelLog, follow, tail



def test_store_survives_a_corrupt_file(tmp_path, caplog):
    path = tmp_path / "store.json"
    store = Store(path)
    store.set_desired("master", "stopped")
    store.close()
    assert Store(path).desired("master") == "stopped"
    path.write_text('{"units": {"1": {"unit": "mas')  # a torn write by something else
    store = Store(path)
    assert store.desired("master") == "stopped"  # carries on from the last good copy
    aside = list(tmp_path.glob("store.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text().startswith('{"units"')
    assert "was unusable (not JSON" in caplog.text
    path.write_text('{"units": {"1": {"unit": "mas')
    (tmp_path / "store.json.good").unlink()
    store = Store(path)
    assert store.desired("master") == "started"  # no good copy: carries on from the config's default
    assert len(list(tmp_path.glob("store.json.corrupt-*"))) == 2 and "started empty" in store.notices[0]
    store.set_desired("clone", "stopped")
    assert Store(path).desired("clone") == "stopped"
    assert (path.stat().st_mode & 0o777) == 0o600


def test_store_writes_leave_no_temp_files(tmp_path):
    (tmp_path / "s").mkdir()
    store = Store(tmp_path / "s" / "store.json")
    for i in range(20):
        store.set_desired("master", "stopped" if i % 2 else "started")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["store.json", "store.json.good"]
    assert store.desired("master") == "stopped"


def test_tunnel_log_format_rotation_and_tail(tmp_path):
    (tmp_path / "log").mkdir()
    path = tmp_path / "log" / "tunnel.log"
    log = TunnelLog(path, max_bytes=4096, backups=2)
    for i in range(400):
        log.write("master", f"event {i}\nwith a newline")
    log.close()
    last = tail(path, 3)
    assert len(last) == 3 and last[-1].endswith("master event 399 with a newline")
    stamp, unit, _ = last[-1].split(" ", 2)
    assert len(stamp) == 20 and stamp.endswith("Z") and stamp[10] == "T" and unit == "master"
    assert path.stat().st_size <= 4096
    assert sorted(p.name for p in path.parent.iterdir()) == ["tunnel.log", "tunnel.log.1", "tunnel.log.2"]
    assert tail(tmp_path / "missing.log", 5) == []


def test_follow_survives_rotation_and_truncation(tmp_path):
    path = tmp_path / "tunnel.log"
    path.write_text("old line\n")
    seen: list[str] = []
    done = threading.Event()

    def reader():
        for line in follow(path, interval=0.01, stop=done.is_set):
            seen.append(line)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        time.sleep(0.1)
        with open(path, "a") as handle:
            handle.write("one\n")
        _wait(lambda: seen == ["one"])
        path.rename(tmp_path / "tunnel.log.1")  # rotation
        path.write_text("two\n")
        _wait(lambda: seen == ["one", "two"])
        path.write_text("")  # truncation
        time.sleep(0.05)
        path.write_text("three\n")
        _wait(lambda: seen[-1:] == ["three"])
    finally:
        done.set()
        thread.join(2)
    assert "old line" not in seen


def _wait(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_event_bus_drops_a_slow_subscriber_not_the_engine():
    async def body():
        bus = EventBus()
        slow = bus.subscribe(maxsize=3)
        fast = bus.subscribe()
        for i in range(10):
            bus.publish(UnitStateChanged("master", "up", str(i)))
        assert slow.overflowed
        got = [await slow.get() for _ in range(3)]
        assert got[-1] is None  # told it ended
        assert fast.queue.qsize() == 10
        event = await fast.get()
        assert event_from_dict(event.to_dict()) == event
    run(body())


def test_backoff_probes_fast_first_then_doubles_to_the_ceiling():
    from console.tunnel.worker import FAST_RETRIES, backoff

    for attempt in range(FAST_RETRIES):
        assert 0.05 <= backoff(attempt, 0.1, 30) <= 0.1
    assert 0.1 <= backoff(FAST_RETRIES, 0.1, 30) <= 0.2
    assert 0.2 <= backoff(FAST_RETRIES + 1, 0.1, 30) <= 0.4
    assert 15 <= backoff(10_000, 0.1, 30) <= 30  # capped, no overflow


def test_every_tunnel_log_file_is_0600_live_and_rotated(tmp_path):
    (tmp_path / "log").mkdir()
    path = tmp_path / "log" / "tunnel.log"
    (tmp_path / "log" / "tunnel.log.3").write_text("left 0644 by an older version\n")
    os.chmod(tmp_path / "log" / "tunnel.log.3", 0o644)
    old_umask = os.umask(0o022)
    try:
        log = TunnelLog(path, max_bytes=4096, backups=3)
        assert (path.stat().st_mode & 0o777) == 0o600
        assert (path.with_name("tunnel.log.3").stat().st_mode & 0o777) == 0o600
        for i in range(600):  # several rotations: each makes a new live file and renames the old ones
            log.write("master", f"event {i}")
        log.close()
    finally:
        os.umask(old_umask)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in path.parent.iterdir()}
    assert modes == {name: "0o600" for name in ("tunnel.log", "tunnel.log.1", "tunnel.log.2", "tunnel.log.3")}


def test_a_new_key_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    """A key is written under a name of its own and linked into place: a full disk while writing it leaves no key
    file (nor a temp file) for a reader to find half-written; the next call makes a whole one, 0600."""
    from console.core import keys

    path = tmp_path / "keys" / "master_ed25519"
    real_fsync = os.fsync

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keys.os, "fsync", disk_full)
    with pytest.raises(OSError):
        keys.load_or_create_key(path, "sop-console-master")
    assert not path.exists() and list(path.parent.iterdir()) == []
    monkeypatch.setattr(keys.os, "fsync", real_fsync)
    key = keys.load_or_create_key(path, "sop-console-master")
    assert keys.load_or_create_key(path, "sop-console-master").public_data == key.public_data
    assert oct(path.stat().st_mode & 0o777) == "0o600" and sorted(p.name for p in path.parent.iterdir()) == [
        "master_ed25519", "master_ed25519.pub"]

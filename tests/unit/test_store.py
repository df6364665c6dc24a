"""The store on disk: a file of the wrong shape is moved aside and the store carries on from its last good copy,
saying so; stale temp files are cleaned up; the hub's clients survive. Real files, and the real CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from console.core.store import RECORD_FIELDS, Store
from console.hub.registry import Client, Registry

ROOT = Path(__file__).parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def registered(path: Path) -> None:
    """A store with one unit stopped and one hub client, as a daemon leaves it."""
    store = Store(path)
    store.set_desired("master", "stopped")
    Registry(store, (2200, 2299), 5).add("acme", KEY)
    store.close()


def client_without_quota(path: Path) -> None:
    data = json.loads(path.read_text())
    del data["clients"]["1"]["quota"]
    path.write_text(json.dumps(data))


def store_a_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "x").write_text("x")


BAD = {
    "clients-not-a-table": lambda p: p.write_text('{"clients": 5}'),
    "client-missing-a-field": client_without_quota,
    "client-with-an-unknown-field": lambda p: p.write_text(p.read_text().replace('"quota"', '"colour": 1, "quota"')),
    "a-directory": store_a_directory,
    "not-json": lambda p: p.write_text('{"units": {"1": {"unit": "mas'),
    "empty": lambda p: p.write_text(""),
}


@pytest.mark.parametrize("damage", BAD, ids=list(BAD))
def test_a_bad_store_carries_on_from_its_last_good_copy(tmp_path, damage, caplog):
    path = tmp_path / "store.json"
    registered(path)
    BAD[damage](path)
    store = Store(path)
    registry = Registry(store, (2200, 2299), 5)
    assert [c.id for c in registry.all()] == ["acme"] and registry.get("acme").ports == [2200, 2201, 2202, 2203,
                                                                                         2204]
    assert store.desired("master") == "stopped"
    (notice,) = store.notices
    (aside,) = tmp_path.glob("store.json.corrupt-*")
    assert notice.startswith(f"store {path} was unusable (")
    assert f"moved aside to {aside.name}; carried on from the last good copy, store.json.good, written 20" in notice
    assert notice in caplog.text
    assert json.loads(path.read_text()) == json.loads((tmp_path / "store.json.good").read_text())
    assert (path.stat().st_mode & 0o777) == 0o600
    registry.add("beta", KEY.replace("IOMq", "IOMr"))  # and it carries on writing
    assert [c.id for c in Registry(Store(path), (2200, 2299), 5).all()] == ["acme", "beta"]


def test_without_a_good_copy_it_starts_empty_and_says_so(tmp_path):
    path = tmp_path / "store.json"
    registered(path)
    (tmp_path / "store.json.good").unlink()
    path.write_text('{"clients": 5}')
    store = Store(path)
    assert Registry(store, (2200, 2299), 5).all() == []
    (notice,) = store.notices
    assert "not a store: table 'clients' is a number, not an object of records" in notice
    assert "started empty (no good copy at store.json.good)" in notice


def test_a_good_copy_follows_every_write_0600(tmp_path):
    path = tmp_path / "store.json"
    old_umask = os.umask(0o022)
    try:
        store = Store(path)
        for unit in ("master", "clone"):
            store.set_desired(unit, "stopped")
            assert (tmp_path / "store.json.good").read_bytes() == path.read_bytes()
    finally:
        os.umask(old_umask)
    assert ((tmp_path / "store.json.good").stat().st_mode & 0o777) == 0o600
    assert store.notices == []


def test_stale_temp_files_are_removed_at_start_a_live_writers_are_not(tmp_path):
    tmp_path = tmp_path / "state"
    tmp_path.mkdir()
    path = tmp_path / "store.json"
    registered(path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for name in (f".store.json.tmp-{dead.pid}", f".store.json.good.tmp-{dead.pid}", f".store.json.tmp-{live.pid}"):
            (tmp_path / name).write_text('{"units": {')
        Store(path).close()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["store.json", "store.json.good", f".store.json.tmp-{live.pid}"])
    finally:
        live.kill()
        live.wait()


def test_the_stores_client_fields_are_the_registrys():
    assert list(RECORD_FIELDS["clients"]) == [f.name for f in dataclasses.fields(Client)]


def test_clients_commands_work_on_a_store_of_the_wrong_shape(tmp_path):
    """The CLI without a daemon reads the store itself: `clients list` once failed with an AttributeError."""
    config = tmp_path / "console.yaml"
    config.write_text("hub: {listen: '127.0.0.1:2222', ports: 2200-2299, default_quota: 5}\n")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    registered(state / "store.json")
    (state / "store.json").write_text('{"clients": 5}')
    done = subprocess.run([sys.executable, "-m", "console", "clients", "list", "--config", str(config),
                           "--state-dir", str(state)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "acme" in done.stdout
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr

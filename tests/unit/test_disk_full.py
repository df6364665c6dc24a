"""A full disk, for real: a small tmpfs filled to the last page. Writes fail with "no space left on DEVICE writing
FILE" (an OperationFailed, exit 1), never a traceback, and leave every file whole."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from console.core.config import load_config
from console.core.config_form import form_from_config, save_form
from console.core.errors import EXIT_FAILED, OperationFailed
from console.core.paths import atomic_write
from console.core.store import Store
from console.core.tunnel_log import TunnelLog, tail
from console.hub.registry import Registry

ROOT = Path(__file__).parents[2]
IN_CI = bool(os.environ.get("CI"))
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def _cannot(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"the full-disk tests must run in CI: {reason}")
    pytest.skip(reason)


class SmallDisk:
    def __init__(self, root: Path) -> None:
        self.root = root

    def fill(self) -> None:
        """Take every free page: a new file then cannot get a single block."""
        with open(self.root / "filler", "ab", buffering=0) as handle:
            try:
                while handle.write(b"\0" * 4096):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        with pytest.raises(OSError) as err:
            (self.root / "probe").write_bytes(b"x" * 4096)
        assert err.value.errno == errno.ENOSPC
        (self.root / "probe").unlink(missing_ok=True)

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.name != "filler")


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        _cannot("mounting a tmpfs needs root")
    root = tmp_path / "disk"
    root.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(root)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        _cannot(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_store_write_on_a_full_disk(small_disk):
    path = small_disk.root / "state" / "store.json"
    path.parent.mkdir()
    store = Store(path)
    store.set_desired("master", "stopped")
    registry = Registry(store, (2200, 2299), 5)
    registry.add("acme", KEY)
    before = path.read_bytes()
    small_disk.fill()
    with pytest.raises(OperationFailed) as err:
        registry.add("beta", KEY.replace("IOMq", "IOMr"))
    assert err.value.exit_code == EXIT_FAILED
    assert str(err.value) == f"no space left on tmpfs (mounted on {small_disk.root}) writing {path}"
    with pytest.raises(OperationFailed):
        store.set_desired("clone", "stopped")
    assert path.read_bytes() == before  # the store is what it was, whole
    assert [c.id for c in registry.all()] == ["acme"]
    assert small_disk.files() == ["state", "state/store.json", "state/store.json.good"]  # no temp files
    (small_disk.root / "filler").unlink()
    store.set_desired("clone", "stopped")  # space again: it carries on
    assert Store(path).desired("clone") == "stopped"


def test_clients_add_on_a_full_disk_is_one_line_exit_1(small_disk, tmp_path):
    config = tmp_path / "console.yaml"
    config.write_text("hub: {listen: '127.0.0.1:2222', ports: 2200-2299, default_quota: 5}\n")
    state = small_disk.root / "state"
    state.mkdir(mode=0o700)
    (state / "keys").mkdir(mode=0o700)
    small_disk.fill()
    done = subprocess.run([sys.executable, "-m", "console", "clients", "add", "acme", "--config", str(config),
                           "--state-dir", str(state)], input=KEY + "\n", cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"sop-console: no space left on tmpfs (mounted on {small_disk.root}) writing " \
                          f"{state / 'store.json'}\n"
    # no store, no temp file; the lock the command held (taken without a daemon) is an empty file
    assert small_disk.files() == ["state", "state/daemon.lock", "state/keys"]
    assert (state / "daemon.lock").stat().st_size == 0


def test_config_save_on_a_full_disk(small_disk):
    path = small_disk.root / "console.yaml"
    original = "server: {host: 203.0.113.7}\nunits:\n  master: {username: sop001, ssh_port: 10022}\n"
    path.write_text(original)
    form = form_from_config(load_config(path))
    form.units["master"].http_port = "10080"
    small_disk.fill()
    with pytest.raises(OperationFailed) as err:
        save_form(path, form)
    assert str(err.value) == f"no space left on tmpfs (mounted on {small_disk.root}) writing {path}.bak"
    assert path.read_text() == original
    assert small_disk.files() == ["console.yaml"]  # no half-written .bak, no temp file


def test_config_save_with_room_for_the_backup_only(small_disk):
    """The .bak fits, the new config does not: the config stays whole and as it was."""
    path = small_disk.root / "console.yaml"
    original = "server: {host: 203.0.113.7}\nunits:\n  master: {username: sop001, ssh_port: 10022}\n"
    path.write_text(original)
    form = form_from_config(load_config(path))
    form.units["master"].http_port = "10080"
    (small_disk.root / "console.yaml.bak").write_text("an older backup\n")  # holds the page .bak will reuse
    small_disk.fill()
    (small_disk.root / "console.yaml.bak").unlink()  # one page free: room for one new small file
    with pytest.raises(OperationFailed) as err:
        save_form(path, form)
    assert str(err.value).endswith(f"writing {path}")
    assert path.read_text() == original
    assert json.dumps(small_disk.files()) == json.dumps(["console.yaml", "console.yaml.bak"])
    assert (small_disk.root / "console.yaml.bak").read_text() == original


def test_other_write_failures_name_the_file(tmp_path):
    target = tmp_path / "no-such-dir" / "store.json"
    with pytest.raises(OperationFailed) as err:
        atomic_write(target, b"{}")
    assert str(err.value) == f"cannot write {target}: No such file or directory"
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOENT  # still an OSError for I/O handlers


def test_tunnel_log_on_a_full_disk_warns_once_not_a_traceback_a_line(small_disk, capfd, caplog):
    path = small_disk.root / "tunnel.log"
    seen: list[str] = []
    log = TunnelLog(path, max_bytes=1 << 20, backups=2, on_line=seen.append)
    log.write("master", "before")
    small_disk.fill()
    for i in range(50):
        log.write("master", f"event {i} " + "x" * 200)  # a page's worth and more: the disk refuses
    (small_disk.root / "filler").unlink()
    log.write("master", "after")
    log.close()
    assert len(seen) == 52  # the engine's subscribers still hear every line
    assert tail(path, 1)[0].endswith("master after")
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err
    warnings = [r.getMessage() for r in caplog.records if r.name == "console.tunnel_log"]
    assert warnings == [f"no space left on tmpfs (mounted on {small_disk.root}) writing {path}; tunnel log lines are "
                        "dropped until it can be written",
                        f"the tunnel log {path} is written again (after: no space left on tmpfs (mounted on "
                        f"{small_disk.root}) writing {path})"]

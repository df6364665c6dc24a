"""Where the configuration and the runtime files live.

Config: --config PATH, else $SOP_CONSOLE_CONFIG, else $XDG_CONFIG_HOME/sop-console/console.yaml.
State:  --state-dir DIR, else $SOP_CONSOLE_STATE, else $XDG_STATE_HOME/sop-console.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from console.core.errors import OperationFailed, WriteFailed, os_reason

APP_DIR = "sop-console"
CONFIG_NAME = "console.yaml"


def _chosen(explicit: str | None, env: str, xdg: str, fallback: str, *tail: str) -> Path:
    """The option, else $env, else $xdg (when absolute), else ~/fallback; then tail."""
    if explicit:
        return Path(explicit)
    if value := os.environ.get(env):
        return Path(value)
    base = os.environ.get(xdg)
    return (Path(base) if base and os.path.isabs(base) else Path.home() / fallback).joinpath(APP_DIR, *tail)


def config_path(explicit: str | None = None) -> Path:
    return _chosen(explicit, "SOP_CONSOLE_CONFIG", "XDG_CONFIG_HOME", ".config", CONFIG_NAME)


def state_dir(explicit: str | None = None) -> Path:
    return _chosen(explicit, "SOP_CONSOLE_STATE", "XDG_STATE_HOME", ".local/state")


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make sure only its owner can enter it (0700)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != 0o700:
            os.chmod(path, 0o700)
    except OSError as exc:
        raise OperationFailed(f"cannot prepare private directory {path}: {os_reason(exc)}") from None
    return path


class _InState:
    """A file's place under the state dir, as a read-only attribute: `paths.tunnel_log` is root/tunnel.log."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __get__(self, paths: StatePaths | None, owner: type) -> Path:
        if paths is None:
            raise AttributeError("a path under a state dir: ask a StatePaths for it")
        return paths.root.joinpath(*self.parts)


@dataclass(frozen=True)
class StatePaths:
    """Every runtime file under one state dir (0700)."""

    root: Path

    keys_dir = _InState("keys")
    hub_key = _InState("keys", "hub_ed25519")
    known_hosts = _InState("known_hosts")
    database = _InState("store.json")
    oplog = _InState("oplog.sqlite")
    tunnel_log = _InState("tunnel.log")
    control_socket = _InState("control.sock")
    daemon_lock = _InState("daemon.lock")

    def unit_key(self, unit: str) -> Path:
        return self.keys_dir / f"{unit}_ed25519"

    def prepare(self) -> StatePaths:
        ensure_private_dir(self.root)
        ensure_private_dir(self.keys_dir)
        return self


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half of one. A failed write
    (a full disk above all) leaves the old file as it was and raises WriteFailed, naming the device and file."""
    with atomic_file(path, mode, binary=True) as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o600, *, binary: bool = False) -> Iterator[IO]:
    """A file to write `path` through, in pieces (an export of a million rows): a temp file beside it (created
    `mode`), flushed to disk and renamed over `path` when the block ends without an error; removed otherwise.
    Text files are UTF-8 with the newlines as written (what the csv module needs). WriteFailed as atomic_write."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    except WriteFailed:
        raise
    except OSError as exc:
        raise write_failure(exc, path) from exc


def write_failure(exc: OSError, path: Path) -> WriteFailed:
    """An OSError from writing `path` in an operator's words: which device is full, which file was not written."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return WriteFailed(f"{what} on {file_system(path)} writing {path}", exc.errno, str(path))
    return WriteFailed(f"cannot write {path}: {os_reason(exc)}", exc.errno, str(path))


def file_system(path: Path) -> str:
    """'/dev/sda1 (mounted on /var)' for a path under /var: the device df would name, and its mount point."""
    mount = Path(os.path.abspath(path))
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    source = None
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) >= 2 and _unescape(fields[1]) == str(mount):
                    source = _unescape(fields[0])  # the last one listed is the one mounted on top
    except OSError:
        pass
    return f"{source} (mounted on {mount})" if source else str(mount)


def _unescape(field: str) -> str:
    """/proc/self/mounts writes a space as \\040, a tab as \\011, a backslash as \\134."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)

"""The state dir's lock (daemon.lock): one daemon per state dir, and a command that changes the store while no
daemon runs holds it too. Here, not in console/daemon.py, so a command takes it without importing the engine
(asyncssh and the rest: most of a command's start-up time)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from console.core.errors import OperationFailed


class StateDirBusy(OperationFailed):
    """Another process holds a state dir's lock: `role` is "daemon" or the command that holds it."""

    def __init__(self, message: str, pid: int | None, role: str) -> None:
        super().__init__(message)
        self.pid = pid
        self.role = role


class DaemonLock:
    """One daemon per state dir: an flock on daemon.lock, released by the kernel if we die. A command that
    changes the store while no daemon runs holds it too (role: the command), so a daemon cannot start under it
    and read a store that is being changed; such a holder lets go within moments, so `acquire` waits for it."""

    def __init__(self, path: Path, role: str = "daemon") -> None:
        self.path = path
        self.role = role
        self._fd: int | None = None

    def acquire(self, wait: float = 5.0) -> None:
        """Take the lock, waiting up to `wait` seconds while a command (not a daemon) holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pid, role = self.holder()
                if role != "daemon" and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                os.close(fd)
                if role in ("daemon", None):
                    raise StateDirBusy(f"another daemon already runs on state dir {self.path.parent}"
                                       + (f" (pid {pid})" if pid else ""), pid, "daemon") from None
                raise StateDirBusy(f"state dir {self.path.parent} is in use by `sop-console {role}`"
                                   + (f" (pid {pid})" if pid else ""), pid, role) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {self.role}\n".encode())
        except OSError:
            pass  # the flock is the lock; the note of who holds it is a courtesy that a full disk may refuse
        self._fd = fd

    def holder(self) -> tuple[int | None, str | None]:
        """Who holds the lock, as it wrote: (pid, role); a lock file of an older version has the pid alone.
        (None, None) while the holder has not written yet."""
        try:
            pid, _, role = self.path.read_text(encoding="utf-8", errors="replace").strip().partition(" ")
            return int(pid), role or "daemon"
        except (OSError, ValueError):
            return None, None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DaemonLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

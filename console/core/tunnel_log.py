"""The tunnel log: one line per event, ``2026-11-22T10:00:00Z master <event>``, rotated by size.

Writing uses logging's RotatingFileHandler (rotation done right, by the standard library); reading
(`tail`, `follow`) works on the file alone, so `sop-console log` needs no daemon.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path
from collections.abc import Callable, Iterator

from console.core.clock import utc_iso
from console.core.paths import write_failure

log = logging.getLogger("console.tunnel_log")


LOG_MODE = 0o600


def _tighten(path: Path | str) -> None:
    try:
        os.chmod(path, LOG_MODE)
    except OSError:  # gone (FileNotFoundError), or not ours to change
        pass


class _PrivateRotatingHandler(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler whose files are all 0600: the live log is created 0600 (not the umask's 0644, not even
    for an instant), and every file rotation renames is made 0600 too (files an older version left wider)."""

    def _open(self):  # noqa: ANN202  (logging's own signature)
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE)
        try:
            os.fchmod(fd, LOG_MODE)
            return open(fd, self.mode, encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(fd)
            raise

    def rotate(self, source: str, dest: str) -> None:
        super().rotate(source, dest)
        _tighten(dest)

    # A line that cannot be written (a full disk) is dropped: logging's default prints a traceback to stderr for
    # each one. Here it is one warning when writing stops working, and one when it works again.
    _failing: str | None = None
    _failed_now = False

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_now = False
        super().emit(record)  # calls handleError on failure
        if not self._failed_now and self._failing is not None:
            log.warning("the tunnel log %s is written again (after: %s)", self.baseFilename, self._failing)
            self._failing = None

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802  (logging's name)
        self._failed_now = True
        exc = sys.exc_info()[1]
        reason = write_failure(exc, Path(self.baseFilename)).message if isinstance(exc, OSError) else repr(exc)
        if reason != self._failing:
            log.warning("%s; tunnel log lines are dropped until it can be written", reason)
            self._failing = reason


class TunnelLog:
    def __init__(self, path: Path, max_bytes: int = 1_048_576, backups: int = 3,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._on_line = on_line
        self._logger = logging.Logger(f"tunnel-log:{path}")
        self._logger.propagate = False
        handler = _PrivateRotatingHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._handler = handler
        self._logger.addHandler(handler)
        for n in range(1, backups + 1):  # rotated files an older version left 0644
            _tighten(f"{path}.{n}")

    def write(self, unit: str, event: str) -> str:
        line = f"{utc_iso()} {unit} {' '.join(event.splitlines())}"
        self._logger.info(line)
        if self._on_line is not None:
            self._on_line(line)
        return line

    def close(self) -> None:
        self._handler.close()
        self._logger.removeHandler(self._handler)


def tail(path: Path, n: int) -> list[str]:
    """The last n lines, read backwards from the end in blocks (a large log costs what the lines cost)."""
    if n <= 0:
        return []
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return []
    with handle:
        handle.seek(0, os.SEEK_END)
        pos = handle.tell()
        data = b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(65536, pos)
            pos -= step
            handle.seek(pos)
            data = handle.read(step) + data
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-n:]


def between(path: Path, since: str | None, until: str | None) -> Iterator[str]:
    """The lines stamped from `since` (inclusive) to `until` (exclusive), both '2026-11-20T10:00:00Z', oldest
    first, over the rotated files too (PATH.N ... PATH.1, then PATH). A line without a stamp of its own goes with
    the line before it."""
    rotated = sorted((p for p in path.parent.glob(f"{path.name}.*") if p.name[len(path.name) + 1:].isdigit()),
                     key=lambda p: -int(p.name[len(path.name) + 1:]))
    keep = False
    for file in (*rotated, path):
        try:
            handle = open(file, "rb")
        except FileNotFoundError:
            continue
        with handle:
            for raw in handle:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                stamp = line[:20]
                if len(stamp) == 20 and stamp[10] == "T" and stamp.endswith("Z"):
                    keep = (since is None or stamp >= since) and (until is None or stamp < until)
                if keep:
                    yield line


def follow(path: Path, interval: float = 0.2, stop: Callable[[], bool] = lambda: False) -> Iterator[str]:
    """Lines appended after now, `tail -F` style: survives rotation (new inode) and truncation."""
    handle = None
    inode = None
    buffer = b""

    def reopen(at_end: bool):
        nonlocal handle, inode
        if handle:
            handle.close()
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            handle, inode = None, None
            return
        inode = os.fstat(handle.fileno()).st_ino
        if at_end:
            handle.seek(0, os.SEEK_END)

    reopen(at_end=True)
    while not stop():
        if handle is not None:
            chunk = handle.read()
            if chunk:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace")
                continue
        try:
            info = os.stat(path)
        except FileNotFoundError:
            info = None
        if handle is None:
            if info is not None:
                reopen(at_end=False)
        elif info is None or info.st_ino != inode:
            rest = handle.read()  # what was written before the rotation
            if rest:
                buffer += rest
                continue
            reopen(at_end=False)
        elif info.st_size < handle.tell():  # truncated in place
            handle.seek(0)
            buffer = b""
        time.sleep(interval)

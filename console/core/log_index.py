"""A line index over a log file, for a viewer that reads only the lines on screen.

The file is mmapped; line starts go into an ``array('q')`` (8 bytes a line). The tail is indexed first by
scanning back from the end, so the last screenful shows at once; the whole file is indexed afterwards in
chunks (`index_more`), which a caller runs off the UI thread. `refresh` gives `tail -F` semantics: growth is
indexed incrementally, truncation and rotation (a new inode) start over.
"""

from __future__ import annotations

import mmap
import os
import re
from array import array
from bisect import bisect_right
from pathlib import Path

CHUNK = 8 * 1024 * 1024
_NEWLINE = re.compile(b"\n")


class LogIndex:
    def __init__(self, path: Path, tail_lines: int = 2000) -> None:
        self.path = path
        self.tail_lines = tail_lines
        self._file = None
        self._map: mmap.mmap | None = None
        self._inode: int | None = None
        self.size = 0
        # starts[i] is where the i-th indexed line begins; until complete, only the tail is indexed.
        self.starts = array("q")
        self._scanned_to = 0         # how far the forward scan has indexed (for the complete index)
        self.complete = False

    # ------------------------------------------------------------------ opening and following

    def open(self) -> None:
        self.close()
        try:
            self._file = open(self.path, "rb")
        except FileNotFoundError:
            self.size, self.starts, self.complete = 0, array("q"), True
            return
        info = os.fstat(self._file.fileno())
        self._inode = info.st_ino
        self._remap(info.st_size)
        self._index_tail()

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def _remap(self, size: int) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        self.size = size
        if size > 0 and self._file is not None:
            self._map = mmap.mmap(self._file.fileno(), size, access=mmap.ACCESS_READ)

    def _index_tail(self) -> None:
        """Index only the last `tail_lines` lines, scanning back from the end: the tail shows at once."""
        mm, size = self._map, self.size
        self.starts = array("q")
        self.complete = False
        if mm is None:
            self.complete = True
            self._scanned_to = 0
            return
        found: list[int] = []
        pos = size - 1 if mm[size - 1:size] == b"\n" else size
        while len(found) < self.tail_lines:
            nl = mm.rfind(b"\n", 0, pos)
            if nl < 0:
                found.append(0)
                break
            found.append(nl + 1)
            pos = nl
        found.reverse()
        self.starts.extend(found)
        self.complete = found[0] == 0
        self._scanned_to = size if self.complete else 0
        self._tail_from = found[0]
        if not self.complete:
            self._head = array("q", [0])

    def index_more(self, budget: int = CHUNK) -> bool:
        """Index up to `budget` more bytes of the head of the file. True once the index is complete."""
        if self.complete:
            return True
        mm = self._map
        assert mm is not None
        end = min(self._tail_from, self._scanned_to + budget)
        head = self._head
        head.extend(m.end() for m in _NEWLINE.finditer(mm, self._scanned_to, end))
        self._scanned_to = end
        if end >= self._tail_from:
            if head and head[-1] == self._tail_from:
                head.pop()
            head.extend(self.starts)
            self.starts = head
            del self._head
            self.complete = True
        return self.complete

    def index_all(self) -> None:
        while not self.index_more():
            pass

    def refresh(self) -> str:
        """Catch up with the file: 'same', 'grew', 'truncated' or 'rotated'."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return "same"  # rotated away and not recreated yet: keep showing what we have
        if self._file is None or info.st_ino != self._inode:
            self.open()
            return "rotated"
        if info.st_size < self.size:
            self.open()
            return "truncated"
        if info.st_size == self.size:
            return "same"
        old = self.size
        self._remap(info.st_size)
        mm = self._map
        assert mm is not None
        if not self.starts:
            self.starts.append(0)
        # Lines that began after `old`: the last indexed line may have been partial and now continues.
        self.starts.extend(m.end() for m in _NEWLINE.finditer(mm, max(old - 1, 0), self.size)
                           if m.end() > self.starts[-1])
        if self.complete:
            self._scanned_to = self.size
        return "grew"

    # ------------------------------------------------------------------ reading

    @property
    def count(self) -> int:
        """Lines indexed (a trailing newline does not start another line)."""
        n = len(self.starts)
        if n and self.starts[-1] >= self.size:
            n -= 1
        return n

    def line(self, i: int) -> str:
        mm = self._map
        if mm is None or not 0 <= i < self.count:
            return ""
        start = self.starts[i]
        end = self.starts[i + 1] - 1 if i + 1 < len(self.starts) else self.size
        data = mm[start:end]
        if data.endswith(b"\n"):
            data = data[:-1]
        return data.decode("utf-8", "replace")

    def lines(self, start: int, stop: int) -> list[str]:
        return [self.line(i) for i in range(max(0, start), min(stop, self.count))]

    def line_at_offset(self, offset: int) -> int:
        return bisect_right(self.starts, offset) - 1

    def matching(self, text: str, *, regex: bool = False, ignore_case: bool = True) -> array:
        """Numbers of the indexed lines containing `text` (or matching the regex), in order.

        The search runs over the mapped file in C, so a 100 MB log is searched without reading it into Python."""
        result = array("q")
        mm = self._map
        if mm is None or not text or not self.starts:
            return result
        flags = re.IGNORECASE if ignore_case else 0
        pattern = re.compile(text.encode() if regex else re.escape(text.encode()), flags | re.MULTILINE)
        last = -1
        for m in pattern.finditer(mm, self.starts[0], self.size):
            n = self.line_at_offset(m.start())
            if n != last and n < self.count:
                result.append(n)
                last = n
        return result

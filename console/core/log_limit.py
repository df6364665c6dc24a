"""Saying a repeated thing once: the first line of a key, then one summary line a window with the count of lines
held back, so nothing a peer can make us say repeatedly (a refused request, a refused forward) floods the tunnel
log or rotates it away. The hub (refusals per client or address and reason) and the units (refused forwards per
forward and reason) share it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

LOG_WINDOW = 60.0           # seconds the lines of one key are summed up before its summary line
LOG_KEYS = 1_000            # distinct keys held; beyond, they share one key per reason (the key's last part)


@dataclass
class _Held:
    started: float
    summary: str
    count: int = 0

    def line(self, now: float) -> str:
        return f"{self.summary}: {self.count:,} more in the last {max(1, round(now - self.started))} s"


class LogLimiter:
    """say(key, line, summary): the first line of a key is said; the same key again within `window` seconds is
    only counted, and `tick()` (called often by the hub) says "<summary>: N more in the last 60 s" once the window
    is over. A key quiet for a whole window is forgotten, so its next line is said again."""

    def __init__(self, say: Callable[[str], None], window: float = LOG_WINDOW, max_keys: int = LOG_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._say, self.window, self.max_keys, self._clock = say, window, max_keys, clock
        self._held: dict[tuple, _Held] = {}

    def __call__(self, key: tuple, line: str, summary: str) -> None:
        held = self._held.get(key)
        if held is None and len(self._held) >= self.max_keys:
            key, summary = ("*", key[-1]), f"{summary} (and others like it)"
            held = self._held.get(key)
        if held is None:
            self._held[key] = _Held(self._clock(), summary)
            self._say(line)
        else:
            held.count += 1
            held.summary = summary

    def tick(self, *, everything: bool = False) -> None:
        """Summarise the keys whose window is over (all of them with everything=True, at shutdown)."""
        now = self._clock()
        for key, held in list(self._held.items()):
            if not everything and now - held.started < self.window:
                continue
            if held.count:
                self._say(held.line(now))
                self._held[key] = _Held(now, held.summary)  # the next window counts on; its first line is not said
            else:
                del self._held[key]

    def settle(self, first: Hashable) -> None:
        """Say now what is held back for the keys that start with `first` (a forward that came back up), and
        forget them: the next line of theirs is said at once."""
        now = self._clock()
        for key, held in list(self._held.items()):
            if key[0] != first:
                continue
            if held.count:
                self._say(held.line(now))
            del self._held[key]

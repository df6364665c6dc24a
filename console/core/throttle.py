"""Saying a repeated thing once: the first time, then at most once a period while it stays the same, with how many
times it happened in between. What a peer can make us log is bounded this way (README: one line a minute per
reason)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


class Throttle:
    def __init__(self, every: float = 60.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.max_keys = max_keys
        self._clock = clock
        self._said: OrderedDict[Hashable, tuple[str, float, int]] = OrderedDict()  # key -> reason, when, held back

    def check(self, key: Hashable, reason: str) -> int | None:
        """None: stay quiet this time. Otherwise say it, with the number of times it was held back since it was
        last said (0: new, or nothing held back). A new reason for the same key is said at once."""
        now = self._clock()
        last = self._said.get(key)
        if last is not None and last[0] == reason and now - last[1] < self.every:
            self._said[key] = (reason, last[1], last[2] + 1)
            return None
        held = last[2] if last is not None and last[0] == reason else 0
        self._said[key] = (reason, now, 0)
        self._said.move_to_end(key)
        while len(self._said) > self.max_keys:
            self._said.popitem(last=False)
        return held

    def forget(self, key: Hashable) -> None:
        self._said.pop(key, None)


def held_back(count: int, every: float) -> str:
    """' (12 more times in the last 60 s)', or '' when nothing was held back."""
    if not count:
        return ""
    return f" ({count} more time{'s' if count != 1 else ''} in the last {every:.0f} s)"

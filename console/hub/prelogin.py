"""Connections to the hub that end on an error before they log in: a key exchange that failed (a client asyncssh
does not get along with), a scanner, something that does not speak SSH. Each gets a line in the hub's log, told
as failed logins are (failures 1, 2, 3, 4, 8, 16 ... of an address within the hub's FAILURE_WINDOW), so a scanner
cannot flood the log. The hub gives no second line to a connection whose failed login it has told."""

from __future__ import annotations

import time
from collections.abc import Callable


class PreLoginFailures:
    def __init__(self, say: Callable[[str], None], window: float, max_addresses: int) -> None:
        self._say = say
        self.window = window                # seconds a failure counts against its address
        self.max_addresses = max_addresses  # addresses remembered before the quiet ones are forgotten
        self._counts: dict[str, tuple[int, float]] = {}  # address -> (failures in the window, last one)

    def count(self, address: str) -> int:
        """Count one failure of an address; how many it has within the window now."""
        now = time.monotonic()
        count, last = self._counts.get(address, (0, now))
        if now - last > self.window:
            count = 0
        if address not in self._counts and len(self._counts) >= self.max_addresses:
            self._counts = {a: (c, t) for a, (c, t) in self._counts.items() if now - t <= self.window}
        self._counts[address] = (count + 1, now)
        return count + 1

    def ended(self, peer: str, client_version: str | None, exc: BaseException) -> None:
        """A connection from `peer` ("address:port") ended on `exc` before login."""
        address = peer.rsplit(":", 1)[0]
        count = self.count(address)
        if count <= 3 or count & (count - 1) == 0:
            reason = _printable((getattr(exc, "reason", None) or str(exc) or type(exc).__name__).strip()[:200])
            software = f" ({_printable(client_version[:80])})" if client_version else ""
            self._say(f"connection from {peer}{software} ended before login: {reason} "
                      f"(failure {count} from {address} within {self.window:.0f}s)")


def _printable(text: str) -> str:
    """The peer chose this text (a disconnect reason, a version string): one line, no control characters."""
    return "".join(char if char.isprintable() else "?" for char in text)

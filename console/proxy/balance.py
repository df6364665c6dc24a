"""Round robin over the destinations sharing one listener, skipping a destination that just failed.

Each destination is a rule (`Member`). Connections (UDP: flows) take turns in the order the rules are listed. A
destination that refused or failed a connection is marked down and skipped for DOWN_FOR seconds, so the next one
takes the connection and no client connection fails while another destination is up; past that it is tried again
in its turn, and a connection it takes marks it up. When every destination is skipped, all are tried anyway (one
may be back). A destination stays `down` (with why, and since when) until it takes a connection again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from console.core.clock import utc_iso
from console.core.rules import Rule
from console.core.states import DestinationState
from console.core.status import RuleDestination
from console.relay import ForwardStats

DOWN_FOR = 5.0   # seconds a destination that refused or failed a connection is skipped


class Member:
    """One rule of a listener: its destination, counters, and whether it is down."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.stats = ForwardStats()
        self.down_reason: str | None = None
        self.down_since: str | None = None
        self.skip_until = 0.0          # monotonic
        self.reported: tuple[int, ...] = (0, 0, 0, 0)

    @property
    def down(self) -> bool:
        return self.down_reason is not None

    def skipped(self, now: float) -> bool:
        return self.skip_until > now

    def failed(self, reason: str) -> bool:
        """Mark it down (skipped for DOWN_FOR seconds); True when it was up until now."""
        was_up = not self.down
        self.skip_until = time.monotonic() + DOWN_FOR
        self.down_reason = f"{reason} ({utc_iso()})"
        if was_up:
            self.down_since = utc_iso()
        return was_up

    def succeeded(self) -> bool:
        """It took a connection: up; True when it was down until now."""
        was_down = self.down
        self.down_reason, self.down_since, self.skip_until = None, None, 0.0
        return was_down

    def destination(self) -> RuleDestination:
        state = DestinationState.DOWN if self.down else DestinationState.UP
        return RuleDestination(self.rule.destination, self.rule.id, state, self.down_reason, self.down_since)


class RoundRobin:
    def __init__(self, changed: Callable[[Member, bool], None] = lambda member, down: None) -> None:
        """`changed(member, down)`: a destination went down or came back."""
        self.members: list[Member] = []
        self._next = 0
        self._changed = changed

    def set(self, members: list[Member]) -> None:
        current = self.members[self._next % len(self.members)] if self.members else None
        self.members = members
        self._next = members.index(current) if current in members else 0

    def order(self) -> list[Member]:
        """The destinations to try for a new connection: from whose turn it is, those not skipped first. The
        turn passes at once to the one after the first of them, so connections arriving together take turns too."""
        if not self.members:
            return []
        start = self._next % len(self.members)
        turn = self.members[start:] + self.members[:start]
        now = time.monotonic()
        order = [m for m in turn if not m.skipped(now)] + [m for m in turn if m.skipped(now)]
        self._next = self.members.index(order[0]) + 1
        return order

    def took(self, member: Member, order: list[Member]) -> None:
        """`member` took the connection; when it was not the first of its `order` (that one failed), the turn
        passes to the one after it, so it does not take two turns in a row."""
        if member.succeeded():
            self._changed(member, False)
        if order and member is not order[0] and member in self.members:
            self._next = self.members.index(member) + 1

    def failed(self, member: Member, reason: str) -> None:
        if member.failed(reason):
            self._changed(member, True)

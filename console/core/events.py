"""Small frozen events and the bus that carries them from workers to the control server and the console."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["event"] = type(self).__name__
        return data


@dataclass(frozen=True)
class UnitStateChanged(Event):
    unit: str
    state: str
    since: str
    last_error: str | None = None
    next_retry: str | None = None
    server_key: str | None = None  # fingerprint shown when the host key is unknown or changed


@dataclass(frozen=True)
class ForwardChanged(Event):
    unit: str
    forward: str
    state: str
    remote: str
    error: str | None = None


@dataclass(frozen=True)
class ForwardTraffic(Event):
    unit: str
    forward: str
    open: int
    total: int
    bytes_in: int
    bytes_out: int


@dataclass(frozen=True)
class LogLine(Event):
    line: str


@dataclass(frozen=True)
class ClientChanged(Event):
    """A hub client changed: "connected", "disconnected", "forwards", "announced", "traffic", "added",
    "quota", "key", "removed" (several joined by ", "; at most one event per client a quarter second)."""

    client: str
    change: str


@dataclass(frozen=True)
class EndpointChanged(Event):
    """An endpoint changed: "added", "removed", "scope" (associated or unassociated), "checked" (a new login check
    stored), "changed" (its settings, by a reload), "rules" (a rule that uses it added or removed);
    `endpoints.show` has the rest. `problem` is what its units'
    status says of it now (UnitStatus.endpoint_problem): its last check's state and message while unavailable."""

    endpoint: str
    change: str
    problem: str | None = None


@dataclass(frozen=True)
class RuleChanged(Event):
    """A proxy rule changed: "added", "removed", "state" (its listener's), "destination" (a destination went
    down or came back), "traffic" (its counters: at most one a second); `proxy.list` has the rest."""

    rule: str       # the rule's id
    change: str


@dataclass(frozen=True)
class Reloaded(Event):
    """The configuration was reloaded: units or forwards may have come or gone; fetch a fresh status."""

    summary: str


@dataclass(frozen=True)
class ReloadRefused(Event):
    """A reload (SIGHUP, `reload`) was refused: the config file does not check, the running configuration stays.
    One `FILE:LINE: ...` per problem, as `check` prints them. A later Reloaded says a good file was read."""

    problems: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "problems", tuple(self.problems))  # a list after the JSON round trip


@dataclass(frozen=True)
class OperationRecorded(Event):
    """An entry was written to the operation log (console/core/oplog.py): a console showing its newest page
    fetches the entries newer than its first."""

    id: int
    action: str


EVENT_TYPES = {cls.__name__: cls for cls in (UnitStateChanged, ForwardChanged, ForwardTraffic, LogLine, ClientChanged,
                                             EndpointChanged, RuleChanged, Reloaded, ReloadRefused,
                                             OperationRecorded)}


def event_from_dict(data: dict[str, Any]) -> Event:
    data = dict(data)
    cls = EVENT_TYPES[data.pop("event")]
    return cls(**data)


class Subscription:
    """One listener's queue. A listener too slow to keep up is dropped, never the engine slowed."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self.overflowed = False

    def put(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            self._bus.unsubscribe(self)
            self.queue.get_nowait()
            self.queue.put_nowait(None)

    async def get(self) -> Event | None:
        """The next event; None once the subscription has ended (closed, or overflowed)."""
        return await self.queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []

    def subscribe(self, maxsize: int = 10_000) -> Subscription:
        sub = Subscription(self, maxsize)
        self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    def publish(self, event: Event) -> None:
        for sub in list(self._subscribers):
            sub.put(event)

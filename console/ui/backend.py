"""Where the console's data comes from: the daemon's control socket, or fixed data for snapshots."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from console.control.client import ControlClient
from console.core.events import Event


class DaemonBackend:
    """Two connections to the daemon: one for requests, one for the event stream."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._requests = ControlClient(socket_path, via="console")
        self._stream = ControlClient(socket_path, via="console")
        self._events: AsyncIterator[Event] | None = None

    async def connect(self) -> dict:
        await self._requests.connect()
        await self._stream.connect()
        status, self._events = await self._stream.subscribe()
        return status

    async def events(self) -> AsyncIterator[Event]:
        assert self._events is not None, "connect() first"
        async for event in self._events:
            yield event

    async def request(self, op: str, **args: Any) -> Any:
        return await self._requests.request(op, **args)

    async def close(self) -> None:
        await self._requests.close()
        await self._stream.close()


class StaticBackend:
    """A fixed status and no events: for snapshot tests and for looking at the console without an engine.
    Requests are recorded, not carried out; each is answered with `answers[op]` (an empty list by default)."""

    def __init__(self, status: dict, answers: dict[str, Any] | None = None) -> None:
        self.status = copy.deepcopy(status)
        self.answers = copy.deepcopy(answers or {})
        self.requests: list[tuple[str, dict]] = []

    async def connect(self) -> dict:
        return copy.deepcopy(self.status)

    async def events(self) -> AsyncIterator[Event]:
        await asyncio.Event().wait()  # nothing ever happens
        yield  # pragma: no cover

    async def request(self, op: str, **args: Any) -> Any:
        self.requests.append((op, args))
        return copy.deepcopy(self.answers.get(op, []))

    async def close(self) -> None:
        pass

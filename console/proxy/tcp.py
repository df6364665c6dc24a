"""TCP rules: a listener here relays each connection socket to socket (console/relay.py's Splice) to the
destination whose turn it is; through a unit, connections are streams the Carrier opens or hands over."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from console.proxy.balance import Member
from console.proxy.listener import CONNECT_TIMEOUT, Listener
from console.relay import Splice, pipe_streams

BACKLOG = 1024
MAX_CONNECTIONS = 4096   # connections one listener holds at once (relayed or connecting); more are closed at once

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class TcpListener(Listener):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._server: asyncio.AbstractServer | None = None
        self._far = None                              # a listener at a unit's far end (the Carrier's)
        self._tasks: set[asyncio.Task] = set()

    async def _listen(self) -> None:
        rule = self.rule
        if not self.here:       # ingress via a unit: its server listens; connections come to us to deliver
            self._far = await self.carrier.listen_tcp(rule.via, rule.port, self._arrived)
        elif self.carried:      # egress via a unit: we listen; each connection is carried to the far side
            self._server = await asyncio.start_server(self._carry, rule.listen, rule.port, reuse_address=True,
                                                      backlog=BACKLOG)
        else:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(lambda: Splice(self._accepted).client, rule.listen, rule.port,
                                                    reuse_address=True, backlog=BACKLOG)

    def _close(self) -> None:
        if self._server is not None:
            self._server.close()   # connections in flight go on to their end
            self._server = None
        if self._far is not None:
            self._far.close()
            self._far = None

    async def _ended(self) -> None:
        await self._far.wait_closed()

    def _spawn(self, coro: Awaitable) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- via local: socket to socket

    def _full(self) -> bool:
        """One connection more than MAX_CONNECTIONS: it is turned away (counted, said once a minute)."""
        if sum(m.stats.open for m in self.members) + len(self._tasks) < MAX_CONNECTIONS:
            return False
        self.dropped += 1
        self.runtime.say(("tcp-full", self.rule.group), f"tcp {self.rule.listener}: {MAX_CONNECTIONS} connections "
                         "open: one more closed at once", f"tcp {self.rule.listener}: connections closed at once")
        return True

    def _accepted(self, splice: Splice) -> None:
        if self._full():
            splice.client.transport.close()
            return
        self._spawn(self._connect(splice))

    async def _connect(self, splice: Splice) -> None:
        loop = asyncio.get_running_loop()
        order = self.balance.order()
        for member in order:
            splice.stats = member.stats
            try:
                await asyncio.wait_for(loop.create_connection(lambda: splice.upstream, member.rule.host,
                                                              member.rule.dest_port), CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                self.failed(member, exc)
                continue
            self.balance.took(member, order)
            splice.link()
            return
        transport = splice.client.transport
        self.log_no_destination(transport.get_extra_info("peername") if transport else None)
        if transport is not None:
            transport.close()

    # -- through a unit: streams

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._deliver(reader, writer, writer.get_extra_info("peername"),
                            lambda m: self.carrier.open_tcp(self.carrying_unit(), m.rule.host, m.rule.dest_port))

    async def _arrived(self, reader, writer, peer: tuple[str, int]) -> None:
        await self._deliver(reader, writer, peer, lambda m: asyncio.open_connection(m.rule.host, m.rule.dest_port))

    async def _deliver(self, reader, writer, peer, open_: Callable[[Member], Awaitable[Streams]]) -> None:
        if self._full():
            writer.close()
            return
        order = self.balance.order()
        for member in order:
            try:
                far_reader, far_writer = await asyncio.wait_for(open_(member), CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                self.failed(member, exc)
                continue
            self.balance.took(member, order)
            await _relay(member, reader, writer, far_reader, far_writer)
            return
        self.log_no_destination(peer)
        writer.close()


async def _relay(member: Member, reader, writer, far_reader, far_writer) -> None:
    """Both ways until both have ended; a failure either way ends both (a reset, a channel closed)."""
    stats = member.stats
    stats.open += 1
    stats.total += 1

    def toward(n: int) -> None:
        stats.bytes_in += n

    def back(n: int) -> None:
        stats.bytes_out += n

    tasks = [asyncio.ensure_future(pipe_streams(reader, far_writer, toward)),
             asyncio.ensure_future(pipe_streams(far_reader, writer, back))]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        if pending and any(t.exception() is not None for t in done):
            far_writer.close()
            writer.close()
            await asyncio.wait(pending)
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()      # seen: a reset on one end is how connections end, not a fault of ours
    finally:
        for task in tasks:
            task.cancel()
        stats.open -= 1
        for end in (far_writer, writer):
            with contextlib.suppress(Exception):   # asyncio's or asyncssh's writer, already closing or not
                end.close()

"""A client's UDP port on the hub (ingress UDP through a unit): the client asked for a remote forward with the
listen host UDP_LISTEN_HOST, so the hub listens UDP on that port of the client's own (same quota and port policy
as TCP, console.hub.server.Hub.open_port) and carries each source address's datagrams to the client as one flow,
on a `forwarded-tcpip` channel of its own whose originator address is the source (console.core.udp_frames).

Bounded: flows per port and per client (udp_max_flows, over all its UDP ports and egress flows), each flow's
held datagrams, idle flows end after udp_idle_timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from console.core import udp_frames

if TYPE_CHECKING:
    from console.hub.server import Hub
    from console.hub.session import HubSession


class HubUdpPort:
    """What asyncssh holds as the listener of the forward: get_port() and close() (the client cancels the
    forward, or its connection ends)."""

    def __init__(self, hub: Hub, session: HubSession, listen_host: str, port: int,
                 on_close: Callable[[HubUdpPort], None]) -> None:
        self.hub, self.session, self.listen_host, self.port = hub, session, listen_host, port
        self._on_close = on_close
        settings = hub.settings
        self.listener = udp_frames.FlowListener(
            f"client {session.user}", self._open_channel, idle_timeout=settings.udp_idle_timeout,
            max_flows=settings.udp_max_flows,
            on_refused=lambda line: hub.refuse(session, "a UDP flow", f"UDP port {port}: {line}"))

    @property
    def stats(self) -> udp_frames.ListenerStats:
        return self.listener.stats

    @property
    def flows(self) -> udp_frames.FlowSet:
        return self.listener.flows

    async def start(self, bind: str) -> HubUdpPort:
        """Listen on bind:port (OSError when it cannot)."""
        await self.listener.start(bind, self.port)
        return self

    def get_port(self) -> int:
        return self.port

    def close(self) -> None:
        self.listener.close("the client's forward ended")
        self._on_close(self)

    async def wait_closed(self) -> None:
        await asyncio.sleep(0)

    async def _open_channel(self, flow: udp_frames.Flow, source: tuple) -> None:
        held = self.hub.udp_flows_of(self.session.user)
        if held > self.hub.settings.udp_max_flows:
            raise RuntimeError(f"the client holds {held - 1} UDP flows (udp_max_flows)")
        conn = self.session.conn
        if conn is None:
            raise RuntimeError("the client's connection is gone")
        # The client matches the channel on the exact host and port it asked for.
        await conn.create_connection(lambda: udp_frames.FlowSession(flow), self.listen_host, self.port,
                                     str(source[0]), int(source[1]), window=udp_frames.WINDOW)

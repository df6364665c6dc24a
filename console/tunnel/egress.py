"""Egress rules through a unit: a port on this machine whose connections (TCP) or flows (UDP) the unit's SSH
connection carries to a destination on the far side, as `ssh -L` does.

TCP: each connection is a `direct-tcpip` channel to the destination, relayed with the shared counted relay
(console/relay.py). Any SSH server does this unless its policy forbids it (sshd's `AllowTcpForwarding remote` or
`no`, `PermitOpen`; our hub allows only what its `hub.egress_allow` lists): the refusal is shown in the server's
own words, "administratively prohibited: open failed".

UDP: each source address's datagrams are one flow on a session channel of their own (console.core.udp_frames);
only our hub speaks it. Against any other server the rule is refused up front with a line saying it needs a
SOP Console hub at the far end.

The proxy rules reach these through console.tunnel.carrier (the Carrier the rule runtime asks); used alone
(the unit's worker is given; nothing here keeps it):

    chan = await open_connection(worker, host, port, session, orig)   # one TCP connection, relayed by `session`
    server = await serve_tcp(worker, listen_host, listen_port, host, port, stats, ...)   # a whole TCP rule
    egress = await UdpEgress(worker, host, port, ...).start(listen_host, listen_port)    # a whole UDP rule
    await open_udp_flow(worker, flow)    # one UDP flow's channel (a udp_frames.Flow whose header is the dest)
    udp_refusal(worker)   # the line when the unit's server cannot carry UDP (None: it can, or not known yet)
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncssh

from console import relay
from console.core import announce, udp_frames
from console.core.config import join_host_port
from console.core.errors import OperationFailed, os_reason

if TYPE_CHECKING:
    from console.tunnel.worker import UnitWorker

# Flows a unit opens at once on one connection: our hub holds at most 4 session channels of a connection that
# have not said what they are (hub.session.MAX_CHANNELS), one of which the announcement may take.
OPENING_AT_ONCE = 2
_opening: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # connection -> asyncio.Semaphore

OPEN_CODES = {asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED: "administratively prohibited",
               asyncssh.OPEN_CONNECT_FAILED: "connect failed",
               asyncssh.OPEN_UNKNOWN_CHANNEL_TYPE: "unknown channel type",
               asyncssh.OPEN_RESOURCE_SHORTAGE: "resource shortage",
               asyncssh.OPEN_REQUEST_SESSION_FAILED: "request failed"}


def open_failure(exc: asyncssh.ChannelOpenError) -> str:
    """The server's refusal as OpenSSH's client prints it: 'administratively prohibited: open failed'."""
    code = OPEN_CODES.get(exc.code, f"refused (code {exc.code})")
    reason = udp_frames.clean(exc.reason or "")
    return f"{code}: {reason}" if reason else code


# ---------------------------------------------------------------------------------------------------- TCP

async def open_connection(worker: UnitWorker, host: str, port: int, session: relay.RelaySession,
                          orig: tuple[str, int] = ("127.0.0.1", 0)) -> asyncssh.SSHTCPChannel:
    """Open a `direct-tcpip` channel to host:port on the unit's server, with `session` (a relay.RelaySession,
    service_on_channel=True: the destination is behind the channel) as its end. `orig` is the address of the
    connection it carries (the server may log it). OperationFailed when the unit is not connected or the server
    refuses, with the server's own words."""
    conn = worker.connected()
    try:
        chan, _ = await conn.create_connection(lambda: session, host, port, str(orig[0]), int(orig[1]),
                                               window=relay.WINDOW, max_pktsize=relay.MAX_PACKET)
    except (asyncssh.ChannelOpenError, asyncssh.Error, OSError) as exc:
        raise OperationFailed(connection_failure(worker, host, port, exc)) from None
    return chan


def connection_failure(worker: UnitWorker, host: str, port: int, exc: Exception) -> str:
    """Why a connection through the unit to host:port did not open: the server's refusal in its own words."""
    where = join_host_port(host, port)
    if isinstance(exc, asyncssh.ChannelOpenError):
        return f"unit {worker.name}: the server {worker.server} refused a connection to {where}: {open_failure(exc)}"
    return f"unit {worker.name}: a connection to {where} through {worker.server} failed: {os_reason(exc)}"


def tcp_protocol(worker: UnitWorker, host: str, port: int, stats: relay.ForwardStats, *,
                 on_change: Callable[[], None] = lambda: None,
                 on_refused: Callable[[str], None] = lambda line: None) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for loop.create_server: each accepted connection goes through the unit to host:port,
    counted in `stats`; one that cannot is closed and `on_refused` hears why."""

    async def open_channel(session: relay.RelaySession, peer: tuple) -> None:
        try:
            await open_connection(worker, host, port, session, (str(peer[0]), int(peer[1])))
        except OperationFailed as exc:
            on_refused(str(exc))
            if session.local is not None:
                session.local.close()

    return lambda: relay.AcceptedSide(relay.RelaySession(stats, on_change, service_on_channel=True), open_channel)


async def serve_tcp(worker: UnitWorker, listen_host: str, listen_port: int, host: str, port: int,
                    stats: relay.ForwardStats, **callbacks) -> asyncio.AbstractServer:
    """Listen on listen_host:listen_port here; every connection goes through the unit to host:port (OSError when
    the port cannot be opened). `callbacks`: on_change, on_refused, as for tcp_protocol."""
    return await asyncio.get_running_loop().create_server(
        tcp_protocol(worker, host, port, stats, **callbacks), listen_host, listen_port)


# ---------------------------------------------------------------------------------------------------- UDP

def udp_refusal(worker: UnitWorker) -> str | None:
    """The line that refuses a UDP rule through this unit: its server (the last one it reached) is not our hub.
    None when it is, or when the unit has not reached its server yet. A unit whose transport cannot carry UDP says
    so first."""
    if worker.udp_refusal is not None:
        return worker.udp_refusal
    software = worker.server_software
    if software is None or announce.is_hub(software):
        return None
    return udp_frames.needs_hub(worker.name, worker.server, software)


def require_hub(worker: UnitWorker) -> asyncssh.SSHClientConnection:
    """The unit's live connection to our hub; OperationFailed when it is down or its server is no hub."""
    conn = worker.connected()
    refusal = udp_refusal(worker)
    if refusal is not None:
        raise OperationFailed(refusal)
    return conn


class UdpEgress:
    """`egress udp:PORT:HOST:DPORT via UNIT`: a UDP port on this machine; each source address's datagrams are a
    flow through the unit's connection to our hub, which sends them to HOST:DPORT in its network if its
    hub.egress_allow allows it, and returns the replies to that source. Flows end after `idle_timeout` seconds
    without a datagram either way; at most `max_flows` at once. `on_refused` hears each flow that could not open
    (the unit down, the hub's refusal in its words), for the caller's rate-limited log."""

    def __init__(self, worker: UnitWorker, host: str, port: int, *, idle_timeout: float = udp_frames.IDLE_TIMEOUT,
                 max_flows: int = udp_frames.MAX_FLOWS, on_refused: Callable[[str], None] = lambda line: None) -> None:
        self.worker = worker
        self.destination = join_host_port(host, port)
        self.listener = udp_frames.FlowListener(self.destination, self._open_channel, idle_timeout=idle_timeout,
                                                max_flows=max_flows, on_refused=on_refused,
                                                header=udp_frames.encode_dest(host, port),
                                                on_header=udp_frames.check_answer)

    @property
    def stats(self) -> udp_frames.ListenerStats:
        return self.listener.stats

    @property
    def port(self) -> int:
        return self.listener.get_port()

    def flows(self) -> list[udp_frames.FlowStatus]:
        return self.listener.flows.status()

    async def start(self, listen_host: str, listen_port: int) -> UdpEgress:
        """Listen (OSError when the port cannot be had). OperationFailed at once when the unit's server is known
        not to be our hub."""
        refusal = udp_refusal(self.worker)
        if refusal is not None:
            raise OperationFailed(refusal)
        await self.listener.start(listen_host, listen_port)
        return self

    def close(self) -> None:
        self.listener.close("the rule was removed")

    async def _open_channel(self, flow: udp_frames.Flow, source: tuple) -> None:
        await open_udp_flow(self.worker, flow)


async def open_udp_flow(worker: UnitWorker, flow: udp_frames.Flow) -> None:
    """Open an egress flow's channel on the unit's connection to our hub (the flow's header names the
    destination; the hub's answer comes as its first frame). OperationFailed when the unit is down, its server is
    no hub, or the channel does not open."""
    conn = require_hub(worker)
    async with _opening.setdefault(conn, asyncio.Semaphore(OPENING_AT_ONCE)):
        if flow.closed:
            return
        try:
            await conn.create_session(lambda: udp_frames.FlowSession(flow), subsystem=udp_frames.UDP_SUBSYSTEM,
                                      encoding=None, window=udp_frames.WINDOW)
        except asyncssh.ChannelOpenError as exc:
            raise OperationFailed(f"the hub refused the flow: {open_failure(exc)}") from None
        except (asyncssh.Error, OSError) as exc:
            raise OperationFailed(f"the flow could not open through {worker.server}: {os_reason(exc)}") from None

"""Egress through the hub: a client's unit carries connections (TCP, `direct-tcpip`) and UDP flows (session
channels with the subsystem UDP_SUBSYSTEM, console.core.udp_frames) into the hub's network, to the destinations the
hub's `hub.egress_allow` lists and no others (none by default: console.core.egress_allow).

A refused TCP connection fails its channel open with "administratively prohibited" and the reason; a refused UDP
flow hears the reason on its channel's stderr and exit status 1. Either way the unit shows the hub's words, and
the hub logs the refusal as every other (rate-limited per client and kind).
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

import asyncssh

from console import relay
from console.core import udp_frames
from console.core.config import join_host_port
from console.core.egress_allow import EgressAllow, is_address
from console.core.errors import os_reason

if TYPE_CHECKING:
    from console.hub.server import Hub
    from console.hub.session import HubSession


class Refused(Exception):
    """A destination the hub will not reach for a client; str() is the line the client hears."""


async def allowed_address(allow: EgressAllow, host: str, port: int, *, udp: bool) -> str:
    """The address (or the listed name) to connect to for host:port; Refused when egress_allow does not allow it.
    A name not listed as such is resolved, and every address it has is checked: the first allowed one is used."""
    shown = join_host_port(host, port) + ("/udp" if udp else "")
    if is_address(host):
        if allow.allows_address(host, port):
            return host
        raise Refused(allow.refusal(shown))
    if allow.allows_name(host, port):
        return host
    if not any(entry.network is not None for entry in allow.entries):
        raise Refused(allow.refusal(shown))
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    except OSError as exc:
        raise Refused(f"cannot resolve {host}: {os_reason(exc)}") from None
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        if allow.allows_address(address, port):
            return address
    raise Refused(allow.refusal(f"{shown} ({host} is {', '.join(sorted(set(addresses))[:3])})"))


def tcp_connection(hub: Hub, session: HubSession, dest_host: str, dest_port: int, orig_host: str, orig_port: int):
    """What HubSession.connection_requested answers: a coroutine giving the relay session of an allowed
    connection; ChannelOpenError (administratively prohibited, with the reason) for any other."""
    where = join_host_port(dest_host, dest_port)
    what = f"a connection into the hub's network (direct-tcpip to {where})"
    if not hub.egress:
        hub.refuse(session, "a connection into the hub's network (direct-tcpip)", what)
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                                        hub.egress.refusal(where))
    stats = hub.egress_stats.setdefault(session.user, relay.ForwardStats())

    async def connect() -> relay.RelaySession:
        try:
            address = await allowed_address(hub.egress, dest_host, dest_port, udp=False)
        except Refused as exc:
            hub.refuse(session, "a connection into the hub's network (direct-tcpip)", f"{what}: {exc}")
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, str(exc)) from None
        factory = relay.session_factory(address, dest_port, stats, on_change=lambda: None,
                                        on_refused=lambda reason: hub.quiet(
                                            (session.user, "egress failed"), f"client {session.user}: {reason}",
                                            f"client {session.user}: egress connections failed"))
        return await factory(orig_host, orig_port)

    return connect()


def udp_flow(hub: Hub, session: HubSession) -> udp_frames.Flow | str:
    """A UDP egress flow for a session channel that asked for UDP_SUBSYSTEM, or why not (refused and logged:
    the client holds udp_max_flows already). Its first frame names the destination (_start)."""
    held = hub.udp_flows_of(session.user)
    if held >= hub.settings.udp_max_flows:
        reason = f"the client holds {held} UDP flows, the most the hub allows (udp_max_flows)"
        hub.refuse(session, "a UDP flow", f"a UDP flow: {reason}")
        return reason
    flows = hub.egress_flows.get(session.user)
    if flows is None:
        flows = hub.egress_flows[session.user] = udp_frames.FlowSet(idle_timeout=hub.settings.udp_idle_timeout,
                                                                   max_flows=hub.settings.udp_max_flows)
    flow = udp_frames.Flow(f"client {session.user}", "?", flows.stats, idle_timeout=flows.idle_timeout,
                           source_on_udp=False, on_header=lambda flow, header: _start(hub, session, flow, header))
    return flows.add(id(flow), flow)


def _start(hub: Hub, session: HubSession, flow: udp_frames.Flow, header: bytes) -> None:
    try:
        host, port = udp_frames.parse_dest(header)
    except ValueError as exc:
        _refuse(hub, session, flow, "a UDP flow: bad header", f"a UDP flow: {exc}", str(exc))
        return
    flow.destination = join_host_port(host, port)
    task = asyncio.ensure_future(_connect(hub, session, flow, host, port))
    hub.flow_tasks.add(task)
    task.add_done_callback(hub.flow_tasks.discard)


async def _connect(hub: Hub, session: HubSession, flow: udp_frames.Flow, host: str, port: int) -> None:
    shown = f"{flow.destination}/udp"
    try:
        address = await allowed_address(hub.egress, host, port, udp=True)
    except Refused as exc:
        _refuse(hub, session, flow, "a UDP flow into the hub's network", f"a UDP flow to {shown}: {exc}", str(exc))
        return
    try:
        await udp_frames.connect_udp(flow, address, port, answer=udp_frames.ACCEPTED)
    except OSError as exc:
        reason = f"cannot send UDP to {shown}: {os_reason(exc)}"
        _refuse(hub, session, flow, "a UDP flow that could not open", f"a UDP flow: {reason}", reason)


def _refuse(hub: Hub, session: HubSession, flow: udp_frames.Flow, kind: str, what: str, reason: str) -> None:
    """Log it, tell the client on the channel's stderr (its unit shows that line) and end the flow."""
    hub.refuse(session, kind, what)
    chan = flow.chan
    if chan is not None and not flow.closed:
        chan.write_stderr((reason + "\n").encode())
        chan.exit(1)
    flow.close(reason)

"""Ingress rules through a unit: the far end listens on a port (a remote forward on the unit's connection) and what
arrives there is delivered to a destination on the unit's network. Added to and removed from a running unit at
run time, beside its configured forwards, none of which is touched (UnitWorker.add_rule_forward).

A rule's forward is named `rule:PROTO:PORT` (`rule:tcp:443`, `rule:udp:5353`, PORT the port asked of the server):
a configured forward's name allows no ':', so the two never clash, and the unit's status, the tunnel log and the
console show which forward is a rule's.

TCP goes to any SSH server that allows remote forwards. UDP needs our hub: the forward is asked with the listen
host UDP_LISTEN_HOST, the hub listens UDP on the port (with the same quota and port policy as TCP) and opens one
channel per flow (console.core.udp_frames); here each flow gets a socket of its own toward the destination. Against
another server the forward is refused at once, with the line saying it needs a SOP Console hub at the far end.

What the rule table calls:

    fr = await add_tcp(worker, port, host, dest_port[, factory=...])   # factory: round robin per connection
    fr = await add_udp(worker, port, host, dest_port[, idle_timeout=60, max_flows=1024, on_refused=...])
    await remove(worker, "tcp" | "udp", port)
    fr.status() -> ForwardStatus (state, error, open/total connections or flows, bytes); fr.udp.status() -> flows
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import asyncssh

from console.core import udp_frames
from console.core.config import ForwardConfig, join_host_port
from console.core.errors import os_reason

if TYPE_CHECKING:
    from console.tunnel.worker import ForwardRuntime, UnitWorker


def forward_name(protocol: str, port: int) -> str:
    return f"rule:{protocol}:{port}"


async def add_tcp(worker: UnitWorker, port: int, host: str, dest_port: int, *,
                  factory: Callable[[str, int], Awaitable[asyncssh.SSHTCPSession]] | None = None) -> ForwardRuntime:
    """`ingress tcp:PORT:HOST:DEST_PORT via UNIT`: the server listens on PORT, connections go to HOST:DEST_PORT.
    OperationFailed when the unit has that forward already."""
    return await worker.add_rule_forward(ForwardConfig(forward_name("tcp", port), port, host, dest_port),
                                         factory=factory)


async def add_udp(worker: UnitWorker, port: int, host: str, dest_port: int, *,
                  idle_timeout: float = udp_frames.IDLE_TIMEOUT, max_flows: int = udp_frames.MAX_FLOWS,
                  on_refused: Callable[[str], None] = lambda line: None) -> ForwardRuntime:
    """`ingress udp:PORT:HOST:DEST_PORT via UNIT`: our hub listens UDP on PORT, each source's datagrams come here
    as a flow and go to HOST:DEST_PORT from a socket of its own; replies go back the same way. The forward is
    refused (state and error say why) when the unit's server is not our hub."""
    flows = udp_frames.FlowSet(idle_timeout=idle_timeout, max_flows=max_flows)
    return await worker.add_rule_forward(ForwardConfig(forward_name("udp", port), port, host, dest_port),
                                         udp=flows, factory=udp_factory(host, dest_port, flows, on_refused))


async def remove(worker: UnitWorker, protocol: str, port: int) -> None:
    await worker.remove_rule_forward(forward_name(protocol, port))


def udp_factory(host: str, port: int, flows: udp_frames.FlowSet,
                on_refused: Callable[[str], None] = lambda line: None):
    """asyncssh's session factory for the channels our hub opens on a UDP forward, one per flow."""
    destination = join_host_port(host, port)

    async def factory(orig_host: str, orig_port: int) -> udp_frames.FlowSession:
        source = udp_frames.shown((orig_host, orig_port))
        if flows.full:
            flows.stats.dropped += 1
            reason = f"{flows.max_flows} UDP flows are open (the most a rule keeps)"
            on_refused(f"a flow from {source} to {destination}: {reason}")
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE, reason)
        flow = flows.add((orig_host, orig_port), udp_frames.Flow(
            source, destination, flows.stats, idle_timeout=flows.idle_timeout, source_on_udp=False))
        try:
            await udp_frames.connect_udp(flow, host, port)
        except OSError as exc:
            reason = f"cannot send UDP to {destination}: {os_reason(exc)}"
            flow.fail(reason)
            flow.close()
            on_refused(f"a flow from {source}: {reason}")
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, reason) from None
        return udp_frames.FlowSession(flow)

    return factory

"""The unit transport for proxy rules: console.core.rules.Carrier over the unit workers' SSH connections.

The rule runtime (console/proxy) keeps round robin, down destinations, counters, the UDP flows' idle timeout and
bound; this only opens and listens, through the unit the rule names:

- open_tcp: a `direct-tcpip` channel to the destination (as `ssh -L`), as asyncssh streams.
- open_udp: one UDP flow to the destination through our hub (console.core.udp_frames); it returns once the hub
  has accepted the flow, and raises with the hub's words when it refuses.
- listen_tcp: a remote forward on the unit's connection; each connection arriving at the far end is handed over
  as streams.
- listen_udp: our hub listens UDP on the port; each flow arriving is handed over.

Every failure is an OSError whose message says why in the far side's words (ConnectionRefusedError when the far
side refused); a UDP rule through a server that is not our hub fails with the line saying it needs one. The
listeners are the runtime's, not the unit's forwards: they end with the unit's connection, and the runtime
listens again once `waiting` says the unit is back.

The engine hands it its workers (the live dict: a unit replaced on reload is found by name):

    self.carrier = UnitCarrier(self.workers)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import asyncssh

from console import relay
from console.core import udp_frames
from console.core.config import join_host_port
from console.core.errors import OperationFailed
from console.tunnel.egress import connection_failure, open_udp_flow, udp_refusal

if TYPE_CHECKING:
    from console.core.rules import TcpArrival, UdpArrival
    from console.tunnel.worker import UnitWorker

ANSWER_SECONDS = 10.0   # the hub's answer to a new UDP flow (the runtime's own connect timeout is shorter)
# A flow handed to the runtime ends when the runtime closes it (its idle timeout) or the channel does; its own
# timer only guards against a flow nobody closes.
UNATTENDED = 24 * 3600.0


class UnitCarrier:
    def __init__(self, workers: Mapping[str, UnitWorker]) -> None:
        self.workers = workers
        self.flows = udp_frames.FlowSet(idle_timeout=UNATTENDED, max_flows=1 << 30)   # counters; the runtime bounds

    # ------------------------------------------------------------------ which unit, and is it up

    def waiting(self, unit: str) -> str | None:
        worker = self.workers.get(unit)
        if worker is None:
            return f"no unit named {unit} in the config"
        try:
            worker.connected()
        except OperationFailed as exc:
            return str(exc)
        return None

    def refuses(self, unit: str, protocol: str) -> str | None:
        worker = self.workers.get(unit)
        if worker is None or protocol != "udp":
            return None
        return udp_refusal(worker)

    def _connection(self, unit: str, *, udp: bool = False) -> tuple[UnitWorker, asyncssh.SSHClientConnection]:
        worker = self.workers.get(unit)
        if worker is None:
            raise OSError(f"no unit named {unit} in the config")
        try:
            conn = worker.connected()
        except OperationFailed as exc:
            raise OSError(str(exc)) from None
        if udp and (refusal := udp_refusal(worker)) is not None:
            raise OSError(refusal)
        return worker, conn

    # ------------------------------------------------------------------ egress

    async def open_tcp(self, unit: str, host: str, port: int):
        worker, conn = self._connection(unit)
        try:
            return await conn.open_connection(host, port, window=relay.WINDOW, max_pktsize=relay.MAX_PACKET)
        except asyncssh.ChannelOpenError as exc:
            raise ConnectionRefusedError(connection_failure(worker, host, port, exc)) from None
        except (asyncssh.Error, OSError) as exc:
            raise OSError(connection_failure(worker, host, port, exc)) from None

    async def open_udp(self, unit: str, host: str, port: int, received: Callable[[bytes], None]) -> CarriedFlow:
        worker, _conn = self._connection(unit, udp=True)
        destination = join_host_port(host, port)
        answered = asyncio.get_running_loop().create_future()

        def answer(flow: udp_frames.Flow, payload: bytes) -> None:
            udp_frames.check_answer(flow, payload)
            if not answered.done():
                answered.set_result(None)

        def failed(flow: udp_frames.Flow, reason: str) -> None:
            if not answered.done():
                answered.set_exception(ConnectionRefusedError(f"the hub refused UDP to {destination}: {reason}"))

        flow = self.flows.add(object(), udp_frames.Flow(
            f"unit {unit}", destination, self.flows.stats, idle_timeout=UNATTENDED, source_on_udp=True,
            header=udp_frames.encode_dest(host, port), on_header=answer, on_fail=failed))
        flow.udp_ready(_delivering(received))
        try:
            await open_udp_flow(worker, flow)
        except OperationFailed as exc:
            flow.close()
            raise OSError(f"a UDP flow to {destination}: {exc}") from None
        try:
            await asyncio.wait_for(answered, ANSWER_SECONDS)
        except TimeoutError:
            flow.close()
            raise OSError(f"the hub did not answer a UDP flow to {destination} within {ANSWER_SECONDS:g} s") from None
        except ConnectionRefusedError:
            flow.close()
            raise
        return CarriedFlow(flow)

    # ------------------------------------------------------------------ ingress

    async def listen_tcp(self, unit: str, port: int, arrived: TcpArrival) -> FarListener:
        worker, conn = self._connection(unit)

        def handler_factory(orig_host: str, orig_port: int):
            return lambda reader, writer: arrived(reader, writer, (orig_host, orig_port))

        worker.hub_refusals.pop(port, None)
        try:
            listener = await conn.start_server(handler_factory, "", port, window=relay.WINDOW,
                                               max_pktsize=relay.MAX_PACKET)
        except (asyncssh.ChannelListenError, asyncssh.Error, OSError) as exc:
            raise ConnectionRefusedError(worker.listen_refusal("", port, str(exc))) from None
        return FarListener(listener, conn)

    async def listen_udp(self, unit: str, port: int, arrived: UdpArrival) -> FarListener:
        worker, conn = self._connection(unit, udp=True)
        flows = self.flows

        def session_factory(orig_host: str, orig_port: int) -> udp_frames.FlowSession:
            source = (orig_host, orig_port)
            flow = flows.add(object(), udp_frames.Flow(
                udp_frames.shown(source), f"unit {unit}", flows.stats, idle_timeout=UNATTENDED,
                source_on_udp=False))
            carried = CarriedFlow(flow)
            flow.udp_ready(_delivering(arrived(carried, source)))
            return udp_frames.FlowSession(flow)

        worker.hub_refusals.pop(port, None)
        try:
            listener = await conn.create_server(session_factory, udp_frames.UDP_LISTEN_HOST, port,
                                                window=udp_frames.WINDOW)
        except (asyncssh.ChannelListenError, asyncssh.Error, OSError) as exc:
            raise ConnectionRefusedError(worker.listen_refusal("", port, str(exc), udp=True)) from None
        return FarListener(listener, conn)


def _delivering(deliver: Callable[[bytes], None]) -> Callable[[bytes], bool]:
    """A Flow's UDP side that hands each datagram to the rule runtime (which counts and drops on its own)."""
    def send(payload: bytes) -> bool:
        deliver(payload)
        return True
    return send


class CarriedFlow:
    """console.core.rules.UdpFlow: what the runtime sends goes framed onto the flow's channel."""

    def __init__(self, flow: udp_frames.Flow) -> None:
        self.flow = flow

    def send(self, data: bytes) -> None:
        self.flow.from_udp(data)

    def close(self) -> None:
        self.flow.close()


class FarListener:
    """console.core.rules.Listening: a listener at the unit's far end. `wait_closed` returns once it is closed or
    the unit's connection has ended (asyncssh may not finish closing a listener of a connection that is gone)."""

    def __init__(self, listener: asyncssh.SSHListener, conn: asyncssh.SSHClientConnection) -> None:
        self.listener, self.conn = listener, conn
        self._closed = asyncio.Event()

    def get_port(self) -> int:
        return self.listener.get_port()

    def close(self) -> None:
        self._closed.set()
        self.listener.close()

    async def wait_closed(self) -> None:
        waits = [asyncio.ensure_future(self._closed.wait()), asyncio.ensure_future(self.conn.wait_closed())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()


"""UDP rules: one socket per listener; a flow per source address, each with its own socket toward the destination
whose turn it was when the flow began (round robin per flow), so replies find their way back. A flow ends after
`proxy.udp_idle_timeout` seconds (60) without a datagram either way; a listener keeps at most `proxy.udp_max_flows`
(4096) at once, and a datagram from a new source past that is dropped (counted, and said once a minute).

A destination that answers with ICMP port unreachable (a refusal) is marked down and its flow ends, so the
source's next datagram starts a flow to the next destination."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from console.core.rules import UdpFlow
from console.core.udp_frames import UdpSocket, connected_socket
from console.proxy.balance import Member
from console.proxy.listener import CONNECT_TIMEOUT, Listener

PENDING_BYTES = 256 * 1024   # what a flow holds while its destination's socket opens; more is dropped
BATCH = 256                  # datagrams read from one socket each time the loop finds it readable


class UdpListener(Listener):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.flows: dict[object, Flow] = {}
        self._transport: UdpSocket | None = None
        self._far = None

    async def _listen(self) -> None:
        rule = self.rule
        if not self.here:     # ingress via a unit: its far end (our hub) listens and hands us each flow
            self._far = await self.carrier.listen_udp(rule.via, rule.port, self._arrived)
            return
        sock = socket.socket(socket.AF_INET6 if ":" in rule.listen else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((rule.listen, rule.port))
        except OSError:
            sock.close()
            raise
        self._transport = UdpSocket(sock, self.received, batch=BATCH)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._far is not None:
            self._far.close()
            self._far = None
        for flow in list(self.flows.values()):
            flow.close()

    async def _ended(self) -> None:
        await self._far.wait_closed()

    def received(self, data: bytes, source: tuple) -> None:
        flow = self.flows.get(source)
        if flow is None:
            transport = self._transport
            flow = self._new_flow(source, lambda reply: transport.send(reply, source), None)
            if flow is None:
                return
        flow.toward(data)

    def _arrived(self, carried: UdpFlow, peer: tuple[str, int]) -> Callable[[bytes], None]:
        flow = self._new_flow(("far", id(carried), peer), carried.send, carried.close)
        if flow is None:
            carried.close()
            return lambda data: None
        return flow.toward

    def _new_flow(self, key: object, send_back: Callable[[bytes], None],
                  on_close: Callable[[], None] | None) -> Flow | None:
        bound = self.runtime.settings.udp_max_flows
        if len(self.flows) >= bound:
            self.dropped += 1
            self.runtime.say(("udp-full", self.rule.group),
                             f"udp {self.rule.listener}: {bound} flows open (proxy.udp_max_flows): a datagram from "
                             "a new source dropped", f"udp {self.rule.listener}: datagrams of new sources dropped")
            return None
        flow = Flow(self, key, send_back, on_close)
        self.flows[key] = flow
        flow.start()
        return flow


class Flow:
    """One source's flow: its destination's socket, the time of its last datagram, its idle timer."""

    def __init__(self, listener: UdpListener, key: object, send_back: Callable[[bytes], None],
                 on_close: Callable[[], None] | None) -> None:
        self.listener = listener
        self.key = key
        self.send_back = send_back
        self.on_close = on_close
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.member: Member | None = None
        self.upstream = None
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.closed = False
        self._task: asyncio.Task | None = None
        self._timer = self.loop.call_at(self.last + self._timeout, self._idle)

    @property
    def _timeout(self) -> float:
        return self.listener.runtime.settings.udp_idle_timeout

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._open())

    async def _open(self) -> None:
        listener = self.listener
        order = listener.balance.order()
        for member in order:
            try:
                upstream = await asyncio.wait_for(self._upstream(member), CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                listener.failed(member, exc)
                continue
            if self.closed:
                upstream.close()
                return
            listener.balance.took(member, order)
            self.member, self.upstream = member, upstream
            member.stats.open += 1
            member.stats.total += 1
            for data in self.pending:
                member.stats.bytes_in += len(data)
                upstream.send(data)
            self.pending.clear()
            return
        listener.log_no_destination(self.key if isinstance(self.key, tuple) and len(self.key) == 2 else None,
                                    "UDP flow")
        self.close()

    async def _upstream(self, member: Member):
        rule, listener = member.rule, self.listener
        if listener.carried and listener.here:      # egress via a unit: the far side sends it on
            return await listener.carrier.open_udp(listener.carrying_unit(), rule.host, rule.dest_port, self.back)
        return await connected_socket(rule.host, rule.dest_port, lambda data, addr: self.back(data),
                                      on_error=self.refused, on_send_error=self.refused, batch=BATCH)

    def toward(self, data: bytes) -> None:
        if self.closed:
            return
        self.last = self.loop.time()
        if self.upstream is not None:
            self.member.stats.bytes_in += len(data)
            self.upstream.send(data)
        elif self.pending_bytes + len(data) <= PENDING_BYTES:
            self.pending.append(data)
            self.pending_bytes += len(data)

    def back(self, data: bytes) -> None:
        if self.closed:
            return
        self.last = self.loop.time()
        self.member.stats.bytes_out += len(data)
        self.send_back(data)

    def refused(self, exc: Exception) -> None:
        """The destination said no (ICMP port unreachable, or another error on its socket): it is down; the flow
        ends."""
        if self.closed:
            return
        if self.member is not None:
            self.listener.failed(self.member, exc)
        self.close()

    def _idle(self) -> None:
        deadline = self.last + self._timeout
        if self.loop.time() >= deadline:
            self.close()
        else:
            self._timer = self.loop.call_at(deadline, self._idle)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._timer.cancel()
        if self.listener.flows.get(self.key) is self:
            del self.listener.flows[self.key]
        if self.upstream is not None:
            self.upstream.close()
            self.member.stats.open -= 1
        if self._task is not None and not self._task.done() and self._task is not asyncio.current_task():
            self._task.cancel()
        if self.on_close is not None:
            self.on_close()

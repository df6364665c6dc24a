"""Proxy rules via local, in a real engine, against real TCP and UDP services on loopback: both directions, round
robin with a destination killed mid-test, UDP flows per source expiring, the flow bound, a port held by another
program, rules via a unit waiting while their unit is not connected, and the Carrier seam with a loopback carrier."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest
from sshd import free_port
from support import EchoServer, config_of, eventually, roundtrip, run

from console.core.events import RuleChanged
from console.core.rules import make_rule
from console.core.states import DestinationState, RuleState
from console.core.store import Store
from console.engine import Engine
from console.proxy import balance, listener, tcp
from console.proxy.runtime import ProxyRuntime


@contextlib.asynccontextmanager
async def engine_with(state, text: str):
    engine = Engine(config_of(text), state)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.shutdown()


def rule_of(engine, text: str, direction: str = "ingress"):
    found = [r for r in engine.rules.list() if r.rule == text and r.direction == direction]
    assert len(found) == 1, [r.rule for r in engine.rules.list()]
    return found[0]


class Named:
    """A TCP service that says its name and hangs up: which destination took a connection."""

    def __init__(self, name: str, port: int = 0) -> None:
        self.name, self.port = name, port
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> Named:
        async def answer(reader, writer):
            writer.write(self.name.encode())
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(answer, "127.0.0.1", self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def who_answers(port: int) -> str:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        return (await asyncio.wait_for(reader.read(100), 5)).decode()
    finally:
        writer.close()


class UdpService(asyncio.DatagramProtocol):
    """A UDP service answering each datagram with its name and the datagram (the name empty: a plain echo)."""

    def __init__(self, name: str = "") -> None:
        self.name = name.encode()
        self.transport = None
        self.port = 0

    async def start(self, port: int = 0) -> UdpService:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", port))
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    def datagram_received(self, data, addr):
        self.transport.sendto(self.name + data, addr)

    def stop(self) -> None:
        self.transport.close()


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport = None

    @classmethod
    async def to(cls, port: int) -> UdpClient:
        client = cls()
        loop = asyncio.get_running_loop()
        client.transport, _ = await loop.create_datagram_endpoint(lambda: client, remote_addr=("127.0.0.1", port))
        return client

    def datagram_received(self, data, addr):
        self.replies.put_nowait(data)

    def error_received(self, exc):
        pass

    async def ask(self, data: bytes, timeout: float = 2.0) -> bytes | None:
        self.transport.sendto(data)
        try:
            return await asyncio.wait_for(self.replies.get(), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        self.transport.close()


# ---------------------------------------------------------------------------------------------- TCP


def test_tcp_via_local_both_directions_relays_and_counts(state):
    async def body():
        async with EchoServer() as echo:
            inbound, outbound = free_port(), free_port()
            async with engine_with(state, f"proxy:\n  ingress: [tcp:{inbound}:127.0.0.1:{echo.port}]\n"
                                          f"  egress: [tcp:{outbound}:localhost:{echo.port}]\n") as engine:
                payload = bytes(range(256)) * 4096   # 1 MiB, both ways at once
                assert await roundtrip(inbound, payload) == payload
                assert await roundtrip(outbound, payload[:1000]) == payload[:1000]
                ingress = await eventually(lambda: (r := rule_of(engine, f"tcp:{inbound}:127.0.0.1:{echo.port}"))
                                           .open == 0 and r, what="the connection counted closed")
                assert (ingress.state, ingress.listener, ingress.total, ingress.bytes_in, ingress.bytes_out) == \
                    (RuleState.LISTENING, f"127.0.0.1:{inbound}", 1, len(payload), len(payload))
                egress = rule_of(engine, f"tcp:{outbound}:localhost:{echo.port}", "egress")
                assert (egress.state, egress.total, egress.bytes_in, egress.bytes_out, egress.source) == \
                    (RuleState.LISTENING, 1, 1000, 1000, "config")
                # a half-close is passed on: the client's end of sending, the service's answer still comes back
                reader, writer = await asyncio.open_connection("127.0.0.1", inbound)
                writer.write(b"last words")
                writer.write_eof()
                assert await asyncio.wait_for(reader.read(), 5) == b"last words"
                writer.close()

    run(body())


def test_round_robin_exact_rotation_and_a_destination_killed_mid_test(state, monkeypatch):
    monkeypatch.setattr(balance, "DOWN_FOR", 0.5)

    async def body():
        a, b, c = [await Named(n).start() for n in "ABC"]
        port = free_port()
        rules = "".join(f"    - tcp:{port}:127.0.0.1:{s.port}\n" for s in (a, b, c))
        async with engine_with(state, f"proxy:\n  ingress:\n{rules}") as engine:
            seen = [await who_answers(port) for _ in range(9)]
            assert seen == list("ABCABCABC")
            await b.stop()                       # killed: its port now refuses
            seen = [await who_answers(port) for _ in range(6)]
            assert seen == list("ACACAC")        # B's turn went to C; no connection failed
            many = await asyncio.gather(*(who_answers(port) for _ in range(30)))
            assert set(many) == {"A", "C"} and len(many) == 30
            b_rule = rule_of(engine, f"tcp:{port}:127.0.0.1:{b.port}")
            (down,) = b_rule.down
            assert (down.destination, down.rule, down.state) == (f"127.0.0.1:{b.port}", b_rule.id,
                                                                  DestinationState.DOWN)
            assert down.reason.startswith("connection refused (") and down.since
            assert b_rule.state is RuleState.LISTENING and b_rule.total == 3   # the listener is fine
            assert [d.state for d in rule_of(engine, f"tcp:{port}:127.0.0.1:{a.port}").destinations] == \
                [DestinationState.UP, DestinationState.DOWN, DestinationState.UP]
            assert "destination 127.0.0.1:%d down: connection refused" % b.port in state.tunnel_log.read_text()
            b = await Named("B", b.port).start()  # back on its port: once skipped long enough it takes its turn
            await asyncio.sleep(0.6)
            seen = [await who_answers(port) for _ in range(3)]
            assert sorted(seen) == ["A", "B", "C"]
            assert rule_of(engine, f"tcp:{port}:127.0.0.1:{b.port}").down == []
        for server in (a, b, c):
            with contextlib.suppress(Exception):
                await server.stop()

    run(body())


def test_when_every_destination_is_down_the_client_is_closed_and_it_is_said(state):
    async def body():
        port, dead = free_port(), free_port()
        async with engine_with(state, f"proxy:\n  ingress: [tcp:{port}:127.0.0.1:{dead}]\n") as engine:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(reader.read(), 5) == b""      # closed, nothing relayed
            writer.close()
            rule = rule_of(engine, f"tcp:{port}:127.0.0.1:{dead}")
            assert rule.down and rule.total == 0
            await eventually(lambda: "no destination took a connection" in state.tunnel_log.read_text())

    run(body())


def test_a_tcp_listener_holds_a_bounded_number_of_connections(state, monkeypatch):
    monkeypatch.setattr(tcp, "MAX_CONNECTIONS", 2)

    async def body():
        async with EchoServer() as echo:
            port = free_port()
            async with engine_with(state, f"proxy:\n  ingress: [tcp:{port}:127.0.0.1:{echo.port}]\n") as engine:
                held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
                for reader, writer in held:
                    writer.write(b"hi")
                    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"hi"
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert await asyncio.wait_for(reader.read(), 5) == b""          # the third: closed at once
                rule = rule_of(engine, f"tcp:{port}:127.0.0.1:{echo.port}")
                assert (rule.open, rule.dropped) == (2, 1)
                for _, w in [*held, (reader, writer)]:
                    w.close()
                await eventually(lambda: rule_of(engine, rule.rule).open == 0)
                assert await roundtrip(port, b"room again") == b"room again"

    run(body())


# ---------------------------------------------------------------------------------------------- UDP


def test_udp_via_local_both_directions(state):
    async def body():
        service = await UdpService().start()
        inbound, outbound = free_port(), free_port()
        async with engine_with(state, f"proxy:\n  ingress: [udp:{inbound}:127.0.0.1:{service.port}]\n"
                                      f"  egress: [udp:{outbound}:127.0.0.1:{service.port}]\n") as engine:
            one, two = await UdpClient.to(inbound), await UdpClient.to(outbound)
            for i in range(5):
                assert await one.ask(b"ping %d" % i) == b"ping %d" % i
            assert await two.ask(b"x" * 1400) == b"x" * 1400
            ingress = rule_of(engine, f"udp:{inbound}:127.0.0.1:{service.port}")
            assert (ingress.udp_flows, ingress.open, ingress.total, ingress.bytes_in, ingress.bytes_out) == \
                (1, 1, 1, 30, 30)
            egress = rule_of(engine, f"udp:{outbound}:127.0.0.1:{service.port}", "egress")
            assert (egress.udp_flows, egress.bytes_in, egress.bytes_out) == (1, 1400, 1400)
            one.close()
            two.close()
        service.stop()

    run(body())


def test_udp_round_robin_per_flow_and_a_refusing_destination(state, monkeypatch):
    monkeypatch.setattr(balance, "DOWN_FOR", 30)

    async def body():
        services = [await UdpService(n).start() for n in "ABC"]
        port = free_port()
        rules = "".join(f"    - udp:{port}:127.0.0.1:{s.port}\n" for s in services)
        async with engine_with(state, f"proxy:\n  ingress:\n{rules}") as engine:
            clients = [await UdpClient.to(port) for _ in range(3)]
            assert [await c.ask(b"hi") for c in clients] == [b"Ahi", b"Bhi", b"Chi"]    # a flow each, in turn
            assert [await c.ask(b"again") for c in clients] == [b"Aagain", b"Bagain", b"Cagain"]   # flows stick
            services[1].stop()                     # B is gone: its port answers ICMP port unreachable
            assert await clients[1].ask(b"lost", timeout=0.5) is None    # that datagram is lost (it is UDP)...
            b_rule = await eventually(lambda: (r := rule_of(engine, f"udp:{port}:127.0.0.1:{services[1].port}"))
                                      .down and r, what="B marked down")
            assert b_rule.down[0].reason.startswith("connection refused") and b_rule.udp_flows == 0
            assert await clients[1].ask(b"next") in (b"Anext", b"Cnext")   # ...the next starts a flow elsewhere
            for c in clients:
                c.close()
        for s in services:
            s.stop()

    run(body())


@contextlib.asynccontextmanager
async def udp_rule(state, direction: str, settings: str):
    """An engine with one UDP rule to a UDP echo service: (engine, the rule's text, its port)."""
    service = await UdpService().start()
    port = free_port()
    try:
        async with engine_with(state, f"proxy:\n{settings}  {direction}: [udp:{port}:127.0.0.1:{service.port}]\n"
                               ) as engine:
            yield engine, f"udp:{port}:127.0.0.1:{service.port}", port
    finally:
        service.stop()


def test_udp_flows_expire_after_the_idle_timeout(state):
    async def body():
        async with udp_rule(state, "ingress", "  udp_idle_timeout: 1\n") as (engine, text, port):
            kept = await UdpClient.to(port)
            assert await kept.ask(b"k") == b"k"
            for _ in range(5):                     # a datagram every 0.4 s keeps one flow for 2 s
                await asyncio.sleep(0.4)
                assert await kept.ask(b"k") == b"k"
            assert (rule_of(engine, text).udp_flows, rule_of(engine, text).total) == (1, 1)
            last = time.monotonic()
            await eventually(lambda: rule_of(engine, text).udp_flows == 0, timeout=5, interval=0.01,
                             what="the flow to expire")
            idle = time.monotonic() - last
            assert 0.95 <= idle <= 1.5, idle       # 1 s after its last datagram (the reply), within tolerance
            assert await kept.ask(b"back") == b"back" and rule_of(engine, text).total == 2   # a new flow
            kept.close()

    run(body())


def test_the_flow_bound_drops_new_sources_and_says_so(state):
    async def body():
        async with udp_rule(state, "egress", "  udp_idle_timeout: 1\n  udp_max_flows: 2\n") as (engine, text, port):
            clients = [await UdpClient.to(port) for _ in range(3)]
            assert await clients[0].ask(b"1") == b"1" and await clients[1].ask(b"2") == b"2"
            assert await clients[2].ask(b"3", timeout=0.5) is None
            rule = rule_of(engine, text, "egress")
            assert (rule.udp_flows, rule.dropped) == (2, 1)
            await eventually(lambda: "2 flows open (proxy.udp_max_flows): a datagram from a new source dropped"
                             in state.tunnel_log.read_text())
            await eventually(lambda: rule_of(engine, rule.rule, "egress").udp_flows == 0, timeout=5)
            assert await clients[2].ask(b"3") == b"3"      # room again once the others expired
            for c in clients:
                c.close()

    run(body())


# ---------------------------------------------------------------------------------------------- at run time


def test_a_rule_on_a_port_in_use_is_kept_refused_and_listens_once_free(state, monkeypatch):
    monkeypatch.setattr(listener, "LISTEN_RETRY", 0.2)

    async def body():
        async with EchoServer() as echo, engine_with(state, "") as engine:
            holder = socket.create_server(("127.0.0.1", 0))
            port = holder.getsockname()[1]
            sub = engine.bus.subscribe()
            added = await engine.rules.add("ingress", f"tcp:{port}:127.0.0.1:{echo.port}", None, "ops")
            assert (added.state, added.reason) == (RuleState.REFUSED, f"cannot listen on 127.0.0.1:{port}: address "
                                                                      "in use (tried again every 0.2 s)")
            assert [e for e in _drain(sub) if isinstance(e, RuleChanged)][-1] == RuleChanged(added.id, "added")
            holder.close()
            await eventually(lambda: rule_of(engine, added.rule).state is RuleState.LISTENING, timeout=5)
            assert await roundtrip(port, b"now") == b"now"
            assert any(isinstance(e, RuleChanged) and e.change == "state" for e in _drain(sub))

    run(body())


def _drain(sub) -> list:
    events = []
    while not sub.queue.empty():
        events.append(sub.queue.get_nowait())
    return events


def test_rules_via_a_unit_wait_while_the_unit_is_not_connected(state):
    async def body():
        inbound, outbound = free_port(), free_port()
        text = ("server: {host: 127.0.0.1, port: 9}\n"
                "units:\n  master: {username: sop, forwards: []}\n"
                f"proxy:\n  ingress: [{{rule: 'tcp:{inbound}:127.0.0.1:22', via: master}}]\n"
                f"  egress: [{{rule: 'udp:{outbound}:10.0.5.7:53', via: master}}]\n")
        store = Store(state.database)
        store.set_desired("master", "stopped")   # the unit does not run: its rules wait, saying why
        store.close()
        async with engine_with(state, text) as engine:
            for rule in engine.rules.list():
                assert (rule.state, rule.reason) == (RuleState.WAITING,
                                                     "unit master is not connected (state stopped)"), rule
            assert rule_of(engine, f"tcp:{inbound}:127.0.0.1:22").listener == f"*:{inbound}"
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", outbound)   # nothing listens: no fake success

    run(body())


def test_a_reload_opens_and_closes_config_rules(state):
    async def body():
        async with EchoServer() as echo, engine_with(state, "") as engine:
            port = free_port()
            changes = await engine.reload(config_of(f"proxy:\n  ingress: [tcp:{port}:127.0.0.1:{echo.port}]\n"
                                                    "  gateways: [{name: lab, subnet: 127.0.0.0/24, base: "
                                                    f"{free_port() - 40}, services: [1, 2], hosts: 1-3}}]\n"))
            assert changes[0] == f"rule ingress tcp:{port}:127.0.0.1:{echo.port} via local added"
            assert changes[1] == "gateway lab: 6 rules added"
            assert await roundtrip(port, b"hello") == b"hello"
            changes = await engine.reload(config_of(""))
            assert changes == [f"rule ingress tcp:{port}:127.0.0.1:{echo.port} via local removed",
                               "gateway lab: 6 rules removed"]
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", port)

    run(body())


# ---------------------------------------------------------------------------------------------- the Carrier seam


class LoopbackCarrier:
    """A Carrier (console/core/rules.py) whose "far end" is this machine: connections and listeners on loopback.
    It shows what the runtime does with any carrier, apart from the product's (console/tunnel/carrier.py)."""

    def __init__(self) -> None:
        self.why: str | None = None
        self.opened: list[tuple[str, str, int]] = []

    def waiting(self, unit):
        return self.why

    def refuses(self, unit, protocol):
        return None

    async def open_tcp(self, unit, host, port):
        self.opened.append((unit, host, port))
        return await asyncio.open_connection(host, port)

    async def open_udp(self, unit, host, port, received):
        loop = asyncio.get_running_loop()

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                received(data)

        transport, _ = await loop.create_datagram_endpoint(Back, remote_addr=(host, port))

        class Flow:
            send = staticmethod(transport.sendto)
            close = staticmethod(transport.close)

        return Flow()

    async def listen_tcp(self, unit, port, arrived):
        server = await asyncio.start_server(lambda r, w: arrived(r, w, w.get_extra_info("peername")), "127.0.0.1",
                                            port, reuse_address=True)
        return server

    async def listen_udp(self, unit, port, arrived):
        raise OSError("not in this test")


def test_the_carrier_seam_carries_rules_via_a_unit(state):
    async def body():
        carrier = LoopbackCarrier()
        changes = []
        runtime = ProxyRuntime(carrier=carrier, on_change=lambda rule, change: changes.append(change))
        async with EchoServer() as echo:
            service = await UdpService().start()
            inbound, outbound, udp = free_port(), free_port(), free_port()
            rules = [make_rule("ingress", f"tcp:{inbound}:127.0.0.1:{echo.port}", "master", listen=None),
                     make_rule("egress", f"tcp:{outbound}:127.0.0.1:{echo.port}", "master"),
                     make_rule("egress", f"udp:{udp}:127.0.0.1:{service.port}", "master")]
            config = config_of("")
            await runtime.apply(rules, config.proxy)
            try:
                assert [runtime.status(r).state for r in rules] == [RuleState.LISTENING] * 3
                assert await roundtrip(inbound, b"in" * 50000) == b"in" * 50000
                assert await roundtrip(outbound, b"out") == b"out"
                assert carrier.opened == [("master", "127.0.0.1", echo.port)]
                client = await UdpClient.to(udp)
                assert await client.ask(b"dgram") == b"dgram"
                client.close()
                counted = await eventually(lambda: (s := runtime.status(rules[0])).open == 0 and s)
                assert (counted.total, counted.bytes_in, counted.bytes_out) == (1, 100000, 100000)
                assert runtime.status(rules[2]).bytes_out == 5
                carrier.why = "unit master is retrying: connection refused"
                waiting = make_rule("egress", f"tcp:{free_port()}:127.0.0.1:1", "clone")
                await runtime.apply([*rules, waiting], config.proxy)
                assert (runtime.status(waiting).state, runtime.status(waiting).reason) == \
                    (RuleState.WAITING, "unit master is retrying: connection refused")
                assert runtime.status(rules[1]).state is RuleState.WAITING    # its listener is up, its unit not
            finally:
                await runtime.close()
                service.stop()
        assert "state" in changes

    run(body())

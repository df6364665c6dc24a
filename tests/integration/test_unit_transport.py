"""Transports through a unit's SSH connection, against our hub in-process (the daemon's engine runs both the hub and
the unit that logs in to it): TCP egress (direct-tcpip) only where hub.egress_allow lets it go, UDP framed on SSH
channels both ways (console.core.udp_frames), rule forwards added and removed at run time."""

from __future__ import annotations

import asyncio
import os
import time

from support import EchoServer, UdpClient, UdpEcho, eventually, fwd_of, hub_and_unit, roundtrip, run, unit_of

from console import relay
from console.core import udp_frames
from console.core.config import ForwardConfig
from console.core.errors import OperationFailed
from console.tunnel import egress, ingress


# ---------------------------------------------------------------------------------------------- TCP egress

def test_tcp_egress_through_our_hub_reaches_only_what_egress_allow_lists(state):
    async def body():
        async with EchoServer() as echo, EchoServer() as other:
            async with hub_and_unit(state, allow=(f"127.0.0.1:{echo.port}",)) as (engine, worker, _ports):
                stats = relay.ForwardStats()
                refused: list[str] = []
                server = await egress.serve_tcp(worker, "127.0.0.1", 0, "127.0.0.1", echo.port, stats,
                                                on_refused=refused.append)
                try:
                    port = server.sockets[0].getsockname()[1]
                    payload = os.urandom(3 * 1024 * 1024)  # more than a window: flow control both ways
                    assert await roundtrip(port, payload) == payload
                    await eventually(lambda: stats.snapshot() == (0, 1, len(payload), len(payload)),
                                     what="the rule's counters")
                    hub_side = engine.hub.egress_stats["acme"]
                    await eventually(lambda: hub_side.snapshot() == (0, 1, len(payload), len(payload)),
                                     what="the hub's counters for the client")
                finally:
                    server.close()
                # a destination not in the list: refused with the hub's reason, as the server's words
                try:
                    await egress.open_connection(worker, "127.0.0.1", other.port,
                                                 relay.RelaySession(relay.ForwardStats(), lambda: None))
                except OperationFailed as exc:
                    said = str(exc)
                else:
                    raise AssertionError("a destination outside egress_allow was reached")
                assert said == (f"unit master: the server 127.0.0.1:{engine.hub.port} refused a connection to "
                                f"127.0.0.1:{other.port}: administratively prohibited: egress to "
                                f"127.0.0.1:{other.port} is not allowed by the hub (hub.egress_allow: "
                                f"127.0.0.1:{echo.port})"), said
                assert refused == []
    run(body())


def test_tcp_egress_through_our_hub_is_refused_by_default_and_when_the_unit_is_down(state):
    async def body():
        async with EchoServer() as echo:
            async with hub_and_unit(state) as (engine, worker, _ports):
                session = relay.RelaySession(relay.ForwardStats(), lambda: None)
                try:
                    await egress.open_connection(worker, "127.0.0.1", echo.port, session)
                    raise AssertionError("egress allowed with no hub.egress_allow")
                except OperationFailed as exc:
                    assert str(exc).endswith(f"administratively prohibited: egress to 127.0.0.1:{echo.port} is not "
                                             f"allowed by the hub (hub.egress_allow: none allowed)"), str(exc)
                await worker.stop()
                try:
                    await egress.open_connection(worker, "127.0.0.1", echo.port, session)
                    raise AssertionError("a connection through a stopped unit")
                except OperationFailed as exc:
                    assert str(exc) == "unit master is not connected (state stopped)"
    run(body())


# ---------------------------------------------------------------------------------------------- UDP egress

def test_udp_egress_through_our_hub_two_flows_intact_in_order_and_apart(state):
    async def body():
        async with UdpEcho() as echo:
            async with hub_and_unit(state, allow=(f"127.0.0.1:{echo.port}",)) as (engine, worker, _ports):
                rule = await egress.UdpEgress(worker, "127.0.0.1", echo.port).start("127.0.0.1", 0)
                try:
                    async with UdpClient(rule.port) as one, UdpClient(rule.port) as two:
                        sent = {}
                        for client, tag in ((one, b"one"), (two, b"two")):
                            sent[tag] = [tag + b":%04d:" % i + os.urandom(i * 7 % 1400) for i in range(200)]
                        # the first datagrams wait for their flow's channel, held (up to MAX_QUEUED) meanwhile
                        for i in range(10):
                            one.send(sent[b"one"][i])
                            two.send(sent[b"two"][i])
                        for i in range(10, 200):  # then interleaved, a few in flight at a time (light load)
                            if i % 10 == 0:
                                await eventually(lambda i=i: one.replies.qsize() >= i - 10, what="replies")
                            one.send(sent[b"one"][i])
                            two.send(sent[b"two"][i])
                        got_one = [await one.reply() for _ in range(200)]
                        got_two = [await two.reply() for _ in range(200)]
                        assert got_one == sent[b"one"]  # intact, in order, and only this source's replies
                        assert got_two == sent[b"two"]
                        big = os.urandom(65507)          # the largest UDP payload, one frame
                        assert await one.exchange(big) == big
                        flows = {f.source: f for f in rule.flows()}
                        assert set(flows) == {f"127.0.0.1:{one.source[1]}", f"127.0.0.1:{two.source[1]}"}
                        assert echo.received == 401 and len(echo.sources) == 2  # one socket per flow at the hub
                        stats = rule.stats
                        assert (stats.open, stats.total, stats.datagrams_in, stats.datagrams_out,
                                stats.dropped) == (2, 2, 401, 401, 0)
                        size = sum(map(len, sent[b"one"] + sent[b"two"])) + len(big)
                        assert stats.bytes_in == stats.bytes_out == size
                        hub_flows = engine.hub.egress_flows["acme"]
                        assert len(hub_flows.flows) == 2 and hub_flows.stats.bytes_in == size
                        assert {f.destination for f in hub_flows.status()} == {f"127.0.0.1:{echo.port}"}
                finally:
                    rule.close()
    run(body())


def test_udp_egress_to_a_destination_the_hub_does_not_allow_is_refused_with_a_line_naming_it(state):
    async def body():
        async with UdpEcho() as allowed, UdpEcho() as other:
            async with hub_and_unit(state, allow=(f"127.0.0.1:{allowed.port}",)) as (engine, worker, _ports):
                refused: list[str] = []
                rule = await egress.UdpEgress(worker, "127.0.0.1", other.port, on_refused=refused.append).start(
                    "127.0.0.1", 0)
                try:
                    async with UdpClient(rule.port) as client:
                        client.send(b"hello")
                        await eventually(lambda: refused, what="the refusal")
                        assert refused == [
                            f"a flow from 127.0.0.1:{client.source[1]} to 127.0.0.1:{other.port}: egress to "
                            f"127.0.0.1:{other.port}/udp is not allowed by the hub (hub.egress_allow: "
                            f"127.0.0.1:{allowed.port})"], refused
                        client.send(b"again")  # held back for a while: no channel per datagram
                        await asyncio.sleep(0.2)
                        assert other.received == 0 and rule.stats.refused == 1 and rule.stats.dropped == 1
                        assert len(refused) == 1
                finally:
                    rule.close()
    run(body())


def test_udp_flows_expire_after_the_idle_timeout_on_both_ends(state):
    async def body():
        async with UdpEcho() as echo:
            async with hub_and_unit(state, allow=(f"127.0.0.1:{echo.port}",)) as (engine, worker, _ports):
                # this end first (1 s): the hub's flow ends with it
                rule = await egress.UdpEgress(worker, "127.0.0.1", echo.port, idle_timeout=1.0).start("127.0.0.1", 0)
                hub_flows = lambda: engine.hub.egress_flows.get("acme")  # noqa: E731
                try:
                    async with UdpClient(rule.port) as client:
                        assert await client.exchange(b"ping") == b"ping"
                        last = time.monotonic()
                        await asyncio.sleep(0.6)
                        assert await client.exchange(b"again") == b"again"  # traffic keeps it
                        last = time.monotonic()
                        assert len(rule.flows()) == 1
                        await eventually(lambda: not rule.flows(), timeout=5, what="the unit's flow gone")
                        took = time.monotonic() - last
                        assert 0.9 <= took <= 2.0, took
                        await eventually(lambda: not hub_flows().flows, timeout=2, what="the hub's flow gone")
                        # the hub's timeout first (1 s, this end's 60 s): this end's flow ends with it
                        engine.hub.settings.udp_idle_timeout = 1.0
                        del engine.hub.egress_flows["acme"]  # new flows take the new setting
                        rule.listener.flows.idle_timeout = 60.0
                        assert await client.exchange(b"three") == b"three"
                        last = time.monotonic()
                        await eventually(lambda: not rule.flows(), timeout=5, what="the flow gone at both ends")
                        took = time.monotonic() - last
                        assert 0.9 <= took <= 2.0, took
                        assert await client.exchange(b"new flow") == b"new flow"  # a new flow after expiry
                        assert rule.stats.total == 3
                finally:
                    rule.close()
    run(body())


# ---------------------------------------------------------------------------------------------- UDP ingress

def test_udp_ingress_through_our_hub_two_flows_and_the_rule_removed(state):
    async def body():
        async with UdpEcho() as echo:
            async with hub_and_unit(state) as (engine, worker, ports):
                fr = await ingress.add_udp(worker, ports[0], "127.0.0.1", echo.port)
                await eventually(lambda: fwd_of(engine, "master", "rule:udp:%d" % ports[0]).state == "listening",
                                 what="the UDP forward listening")
                assert fwd_of(engine, "master", "rule:udp:%d" % ports[0]).remote == f"127.0.0.1:{ports[0]}"
                hub_port = engine.hub.udp_ports[ports[0]]
                async with UdpClient(ports[0]) as one, UdpClient(ports[0]) as two:
                    for i in range(100):
                        one.send(b"one:%d" % i)
                        two.send(b"two:%d" % i)
                    assert [await one.reply() for _ in range(100)] == [b"one:%d" % i for i in range(100)]
                    assert [await two.reply() for _ in range(100)] == [b"two:%d" % i for i in range(100)]
                    big = os.urandom(65507)
                    assert await two.exchange(big) == big
                    assert len(echo.sources) == 2  # a socket per flow on the unit's side
                    assert {f.source for f in hub_port.flows.status()} == {f"127.0.0.1:{one.source[1]}",
                                                                           f"127.0.0.1:{two.source[1]}"}
                    assert (hub_port.stats.open, hub_port.stats.total, hub_port.stats.datagrams_in) == (2, 2, 201)
                    assert (fr.udp.stats.open, fr.udp.stats.datagrams_out) == (2, 201)
                    assert fr.status().open == 2 and fr.status().bytes_in == hub_port.stats.bytes_in
                    # the hub is told nothing of the UDP forward: its announcement stays the TCP forwards'
                    await ingress.remove(worker, "udp", ports[0])
                    await eventually(lambda: ports[0] not in engine.hub.udp_ports, what="the hub's UDP port closed")
                    assert worker.forwards == {} and fr.udp.flows == {}
                    one.send(b"gone")
                    await asyncio.sleep(0.2)
                    assert one.replies.empty() and echo.received == 201
    run(body())


def test_udp_ingress_port_obeys_the_clients_quota(state):
    async def body():
        async with UdpEcho() as echo:
            async with hub_and_unit(state, quota=1) as (engine, worker, ports):
                outside = ports[0] + 1
                await ingress.add_udp(worker, outside, "127.0.0.1", echo.port)
                name = f"rule:udp:{outside}"
                await eventually(lambda: fwd_of(engine, "master", name).state == "refused", what="refused")
                assert fwd_of(engine, "master", name).error == (
                    f"the hub refused to listen on UDP *:{outside}: not one of its ports ({ports[0]})")
                assert outside not in engine.hub.udp_ports
                await ingress.add_udp(worker, 0, "127.0.0.1", echo.port)  # port 0: its next free one
                await eventually(lambda: fwd_of(engine, "master", "rule:udp:0").state == "listening")
                assert fwd_of(engine, "master", "rule:udp:0").port == ports[0]
                await ingress.remove(worker, "udp", outside)
                # its one port is taken: a second UDP forward of port 0 is over the quota
                flows = udp_frames.FlowSet()
                await worker.add_rule_forward(ForwardConfig("rule:udp:0b", 0, "127.0.0.1", echo.port), udp=flows,
                                              factory=ingress.udp_factory("127.0.0.1", echo.port, flows))
                await eventually(lambda: fwd_of(engine, "master", "rule:udp:0b").state == "refused")
                assert fwd_of(engine, "master", "rule:udp:0b").error == (
                    "the hub refused to listen on UDP *:0: its one port is forwarded already")
                assert unit_of(engine, "master").state == "degraded"
                async with UdpClient(ports[0]) as client:  # the one that listens still carries
                    assert await client.exchange(b"still") == b"still"
    run(body())


# ---------------------------------------------------------------------------------------------- TCP ingress rules

def test_a_rule_forward_is_added_and_removed_at_run_time_and_the_configured_ones_stay(state):
    async def body():
        async with EchoServer() as echo, EchoServer() as rule_echo:
            async with hub_and_unit(state, quota=3) as (engine, worker, ports):
                configured = ForwardConfig("app", ports[0], "127.0.0.1", echo.port, "127.0.0.1")
                await worker.update_forwards((configured,))
                await eventually(lambda: fwd_of(engine, "master", "app").state == "listening")
                app_listener = worker.forwards["app"].listener
                assert await roundtrip(ports[0], b"config") == b"config"

                await ingress.add_tcp(worker, ports[1], "127.0.0.1", rule_echo.port)
                await eventually(lambda: fwd_of(engine, "master", f"rule:tcp:{ports[1]}").state == "listening")
                assert await roundtrip(ports[1], b"rule") == b"rule"
                assert worker.forwards["app"].listener is app_listener  # untouched
                # a reload of the configured forwards keeps the rule's
                await worker.update_forwards((configured, ForwardConfig("web", ports[2], "127.0.0.1", echo.port,
                                                                        "127.0.0.1")))
                await eventually(lambda: fwd_of(engine, "master", "web").state == "listening")
                assert [f.name for f in unit_of(engine, "master").forwards] == ["app", "web", f"rule:tcp:{ports[1]}"]
                assert worker.config.forwards[-1].name == "web"  # the config's list holds no rule forward
                assert await roundtrip(ports[1], b"after reload") == b"after reload"

                await ingress.remove(worker, "tcp", ports[1])
                await eventually(lambda: ports[1] not in engine.hub.forwards, what="the rule's port closed")
                assert worker.forwards["app"].listener is app_listener
                assert await roundtrip(ports[0], b"still") == b"still"
                assert unit_of(engine, "master").state == "up"
                try:
                    await ingress.remove(worker, "tcp", ports[1])
                    raise AssertionError("removed twice")
                except OperationFailed as exc:
                    assert str(exc) == f"unit master has no rule forward named rule:tcp:{ports[1]}"
                try:
                    await ingress.add_tcp(worker, ports[0], "127.0.0.1", 9)
                    await ingress.add_tcp(worker, ports[0], "127.0.0.1", 9)
                    raise AssertionError("added twice")
                except OperationFailed as exc:
                    assert str(exc) == f"unit master has a forward named rule:tcp:{ports[0]} already"
    run(body())


def test_many_udp_flows_open_at_once_and_the_clients_flow_limit_holds(state):
    """Session channels the hub bounds (4 a connection until they say what they are) must not bound UDP flows;
    the client's udp_max_flows does, with a line saying so."""
    async def body():
        async with UdpEcho() as echo:
            async with hub_and_unit(state, allow=(f"127.0.0.1:{echo.port}",)) as (engine, worker, _ports):
                refused: list[str] = []
                rule = await egress.UdpEgress(worker, "127.0.0.1", echo.port, on_refused=refused.append).start(
                    "127.0.0.1", 0)
                try:
                    clients = [UdpClient(rule.port) for _ in range(12)]
                    for client in clients:
                        await client.__aenter__()
                    for i, client in enumerate(clients):  # twelve new flows in one go
                        client.send(b"flow %d" % i)
                    assert [await client.reply() for client in clients] == [b"flow %d" % i for i in range(12)]
                    assert rule.stats.open == 12 and refused == []
                    assert engine.hub.session_channels.get("acme", 0) <= 1  # the flows hold none of them
                    engine.hub.settings.udp_max_flows = 12
                    async with UdpClient(rule.port) as extra:
                        extra.send(b"one too many")
                        await eventually(lambda: refused, what="the refusal")
                        assert refused == [f"a flow from 127.0.0.1:{extra.source[1]} to 127.0.0.1:{echo.port}: "
                                           f"the client holds 12 UDP flows, the most the hub allows "
                                           f"(udp_max_flows)"], refused
                    for client in clients:
                        await client.__aexit__()
                finally:
                    rule.close()
    run(body())


def test_udp_ingress_flows_expire_after_the_idle_timeout(state):
    async def body():
        async with UdpEcho() as echo:
            async with hub_and_unit(state) as (engine, worker, ports):
                fr = await ingress.add_udp(worker, ports[0], "127.0.0.1", echo.port, idle_timeout=1.0)
                await eventually(lambda: ports[0] in engine.hub.udp_ports, what="the hub's UDP port")
                hub_port = engine.hub.udp_ports[ports[0]]
                async with UdpClient(ports[0]) as client:
                    assert await client.exchange(b"ping") == b"ping"
                    last = time.monotonic()
                    assert len(hub_port.flows.flows) == 1 and len(fr.udp.flows) == 1
                    await eventually(lambda: not hub_port.flows.flows, timeout=5, what="the hub's flow gone")
                    took = time.monotonic() - last
                    assert 0.9 <= took <= 2.0, took  # the unit's 1 s ended it, and with it the hub's
                    assert not fr.udp.flows
                    assert await client.exchange(b"again") == b"again"  # a new flow
                    assert hub_port.stats.total == 2
    run(body())

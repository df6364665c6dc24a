"""The demo: our own hub in-process, demo services, both units."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest
from support import eventually, forward_port, run, unit_of

from console.core.keys import load_or_create_unit_key, public_line
from console.core.states import RuleState
from console.demo import DEMO_HOSTS, build_demo


def test_demo_comes_up_and_relays_through_the_hub(state):
    async def body():
        world = await build_demo(state)
        engine = world.daemon.engine
        try:
            await eventually(lambda: all(u.state == "up" for u in engine.status().units), what="demo up")
            for unit in ("master", "clone"):
                reader, writer = await asyncio.open_connection("127.0.0.1", forward_port(engine, unit, "http"))
                writer.write(b"GET / HTTP/1.0\r\n\r\n")
                page = await asyncio.wait_for(reader.read(), 5)
                writer.close()
                assert page.startswith(b"HTTP/1.0 200 OK") and b"SOP demo unit" in page
                reader, writer = await asyncio.open_connection("127.0.0.1", forward_port(engine, unit, "app"))
                writer.write(b"echo me")
                assert await asyncio.wait_for(reader.readexactly(7), 5) == b"echo me"
                writer.close()
            assert unit_of(engine, "master").username == "sop001"

            # two endpoints: the hub (both units log in with their keys) and a loopback port nothing listens on
            checked = await eventually(lambda: len(found := engine.store.endpoint_checks()) == 2 and found,
                                       what="both demo endpoints checked")
            default, spare = checked["default"], checked["spare"]
            assert default.available and "unit master" in default.message and "unit clone" in default.message
            port = world.config.endpoints["spare"].port
            assert (spare.state.value, spare.reason.value, spare.message) == \
                ("unavailable", "network", f"connection refused by 127.0.0.1:{port}")
            assert spare.hint == "nothing listens there: start sshd, or check the endpoint's port"
            assert [e.name for e in engine.endpoints.list()] == ["default", "spare"]
            assert all(u.endpoint == "default" and u.endpoint_problem is None for u in engine.status().units)
        finally:
            await world.close()
    run(body())


def test_demo_hub_gives_a_unit_nothing_but_its_forwards(state):
    async def body():
        world = await build_demo(state)
        try:
            key = load_or_create_unit_key(state, "master")
            hub_key = asyncssh.import_public_key(public_line(world.hub.host_key))
            async with asyncssh.connect("127.0.0.1", world.hub.port, username="sop001", client_keys=[key],
                                        known_hosts=([hub_key], [], []), config=None,
                                        agent_path=None) as conn:
                with pytest.raises(asyncssh.ChannelOpenError):
                    await conn.run("id")
                with pytest.raises(asyncssh.ChannelOpenError):
                    await conn.open_connection("127.0.0.1", 22)
            with pytest.raises(asyncssh.PermissionDenied):
                await asyncssh.connect("127.0.0.1", world.hub.port, username="sop002", client_keys=[key],
                                       known_hosts=([hub_key], [], []), config=None, agent_path=None)
        finally:
            await world.close()
    run(body())


async def _get(port: int) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def _udp_ask(port: int, payload: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    reply = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            if not reply.done():
                reply.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    try:
        transport.sendto(payload)
        return await asyncio.wait_for(reply, 5)
    finally:
        transport.close()


def test_demo_rules_listen_and_carry_tcp_and_udp(state):
    """The demo's proxy rules, all via local: an egress rule carries a TCP connection to the web page, a UDP rule
    a datagram to the UDP echo (and back), and the gateway plan `lab` maps hosts 1-3 of 127.0.0.0/24 by its
    formula: each of its six ports reaches its own host's web or app service."""
    async def body():
        world = await build_demo(state)
        engine = world.daemon.engine
        try:
            rules = {(r.source, r.direction, r.protocol): r for r in engine.rules.list()}
            egress, udp = rules[("config", "egress", "tcp")], rules[("config", "ingress", "udp")]
            gateway = [r for r in engine.rules.list() if r.source == "gateway"]
            assert all(r.via == "local" and r.state is RuleState.LISTENING for r in [egress, udp, *gateway])

            page = await _get(int(egress.listener.rsplit(":", 1)[1]))
            assert page.startswith(b"HTTP/1.0 200 OK") and b"SOP demo unit" in page
            assert await _udp_ask(int(udp.listener.rsplit(":", 1)[1]), b"ping over udp") == b"ping over udp"

            plan = world.config.proxy.gateway("lab")
            web, app = plan.services
            assert plan.subnet == "127.0.0.0/24" and plan.hosts == (1, 3) and len(gateway) == 6
            for n, host in enumerate(DEMO_HOSTS, start=1):
                page = await _get(plan.port_of(n, 0))   # base + n*2 + 0: host n's web page
                assert f"(host {host})".encode() in page, (n, page)
                reader, writer = await asyncio.open_connection("127.0.0.1", plan.port_of(n, 1))  # its echo
                writer.write(b"echo me")
                assert await asyncio.wait_for(reader.readexactly(7), 5) == b"echo me"
                writer.close()
            listed = {int(r.listener.rsplit(":", 1)[1]): r.destination for r in gateway}
            assert listed == {plan.port_of(n, k): f"{host}:{service}" for n, host in enumerate(DEMO_HOSTS, 1)
                              for k, service in enumerate((web, app))}

            counted = await eventually(lambda: (r := engine.rules.status(
                next(x for x in engine.rules.active() if x.id == udp.id))).total == 1 and r, what="udp flow counted")
            assert counted.bytes_in == counted.bytes_out == len(b"ping over udp")
        finally:
            await world.close()
    run(body())

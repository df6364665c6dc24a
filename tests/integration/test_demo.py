"""The demo: our own hub in-process, demo services, both units."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest
from support import eventually, forward_port, run, unit_of

from console.core.keys import load_or_create_unit_key, public_line
from console.demo import build_demo


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

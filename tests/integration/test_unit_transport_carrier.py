"""The unit transport under the proxy rules (console.tunnel.carrier.UnitCarrier as the engine's Carrier): rules
via a unit added at run time through the rule table, carried by our hub (TCP and UDP, both directions) and by a
real sshd (TCP; UDP refused with the line saying it needs our hub). The engine's own carrier (`engine.carrier`)."""

from __future__ import annotations

import os
import socket

import pytest
from sshd import free_port
from support import (EchoServer, UdpClient, UdpEcho, eventually, hub_and_unit, roundtrip, run, running_engine,
                     started_sshd, unit_of)

from console.core.states import RuleState
from console.proxy import listener
from console.tunnel.carrier import UnitCarrier


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(engine, direction: str, text: str):
    return engine.rules.status(engine.rules.find(direction, text, "master"))


async def _listening(engine, direction: str, text: str):
    await eventually(lambda: _status(engine, direction, text).state is RuleState.LISTENING, timeout=15,
                     what=f"{direction} {text} listening ({_status(engine, direction, text).reason})")


def test_rules_via_a_unit_travel_through_our_hub_both_ways_tcp_and_udp(state):
    async def body():
        async with EchoServer() as echo, UdpEcho() as udp_echo:
            allow = (f"127.0.0.1:{echo.port}", f"127.0.0.1:{udp_echo.port}")
            async with hub_and_unit(state, allow=allow, quota=2) as (engine, worker, ports):
                rules = {("egress", f"tcp:{free_port()}:127.0.0.1:{echo.port}"),
                         ("egress", f"udp:{_free_udp_port()}:127.0.0.1:{udp_echo.port}"),
                         ("ingress", f"tcp:{ports[0]}:127.0.0.1:{echo.port}"),
                         ("ingress", f"udp:{ports[1]}:127.0.0.1:{udp_echo.port}")}
                for direction, text in sorted(rules):
                    await engine.rules.add(direction, text, "master", who="test")
                for direction, text in rules:
                    await _listening(engine, direction, text)
                payload = os.urandom(1 << 20)
                for direction, text in sorted(rules):
                    protocol, port = text.split(":")[0], int(text.split(":")[1])
                    if protocol == "tcp":  # egress: listens here; ingress: the hub listens on the client's port
                        assert await roundtrip(port, payload) == payload, text
                    else:
                        async with UdpClient(port) as one, UdpClient(port) as two:
                            assert await one.exchange(b"one") == b"one" and await two.exchange(b"two") == b"two"
                            assert await one.exchange(b"one again") == b"one again"
                    status = _status(engine, direction, text)
                    await eventually(lambda: _status(engine, direction, text).total >= 1, what="counted")
                    if protocol == "udp":
                        assert status.total == 2 and status.bytes_in == len(b"one" b"two" b"one again")
                assert len(engine.hub.udp_ports) == 1 and len(engine.hub.egress_flows["acme"].flows) == 2
                # removed: the far end's listener closes, the unit's other forwards are not touched
                await engine.rules.remove("ingress", f"tcp:{ports[0]}:127.0.0.1:{echo.port}", "master")
                await eventually(lambda: ports[0] not in engine.hub.forwards, what="the hub's port closed")
                assert unit_of(engine, "master").state == "up"
    run(body())


def test_a_destination_the_hub_refuses_is_refused_in_the_hubs_words_and_marked_down(state):
    async def body():
        async with EchoServer() as echo, UdpEcho() as udp_echo:
            async with hub_and_unit(state) as (engine, worker, _ports):
                carrier = engine.carrier
                assert isinstance(carrier, UnitCarrier) and engine.proxy.carrier is carrier
                # what the carrier raises: the hub's words
                with pytest.raises(ConnectionRefusedError) as tcp_refused:
                    await carrier.open_tcp("master", "127.0.0.1", echo.port)
                assert str(tcp_refused.value) == (
                    f"unit master: the server 127.0.0.1:{engine.hub.port} refused a connection to 127.0.0.1:"
                    f"{echo.port}: administratively prohibited: egress to 127.0.0.1:{echo.port} is not allowed by "
                    "the hub (hub.egress_allow: none allowed)")
                with pytest.raises(ConnectionRefusedError) as udp_refused:
                    await carrier.open_udp("master", "127.0.0.1", udp_echo.port, lambda data: None)
                assert str(udp_refused.value) == (
                    f"the hub refused UDP to 127.0.0.1:{udp_echo.port}: egress to 127.0.0.1:{udp_echo.port}/udp is "
                    "not allowed by the hub (hub.egress_allow: none allowed)")
                with pytest.raises(OSError, match="no unit named clone in the config"):
                    await carrier.open_tcp("clone", "127.0.0.1", echo.port)
                assert carrier.waiting("clone") == "no unit named clone in the config"
                # the rules: their destination is down, nothing reached it
                tcp_rule = f"tcp:{free_port()}:127.0.0.1:{echo.port}"
                udp_rule = f"udp:{_free_udp_port()}:127.0.0.1:{udp_echo.port}"
                for text in (tcp_rule, udp_rule):
                    await engine.rules.add("egress", text, "master", who="test")
                    await _listening(engine, "egress", text)
                assert await roundtrip(int(tcp_rule.split(":")[1]), b"x") == b""  # carried nowhere: closed
                async with UdpClient(int(udp_rule.split(":")[1])) as client:
                    client.send(b"hello")
                    await eventually(lambda: _status(engine, "egress", udp_rule).destinations[0].state == "down",
                                     what="the UDP destination down")
                assert _status(engine, "egress", tcp_rule).destinations[0].state == "down"
                assert udp_echo.received == 0 and engine.hub.egress_stats == {}  # the hub relayed nothing
                await worker.stop()
                assert carrier.waiting("master") == "unit master is not connected (state stopped)"
    run(body())


def test_rules_via_a_unit_on_sshd_tcp_carried_udp_refused_with_the_line(tmp_path, state, transport):
    sshd = started_sshd(tmp_path / "sshd")
    try:
        async def body():
            async with EchoServer() as echo, UdpEcho() as udp_echo:
                async with running_engine(sshd, state, {"master": []}) as engine:
                    await eventually(lambda: unit_of(engine, "master").state == "up", timeout=15)
                    egress_tcp, ingress_tcp = f"tcp:{free_port()}:127.0.0.1:{echo.port}", \
                        f"tcp:{free_port()}:127.0.0.1:{echo.port}"
                    ingress_udp = f"udp:{_free_udp_port()}:127.0.0.1:{udp_echo.port}"
                    await engine.rules.add("egress", egress_tcp, "master", who="test")
                    await engine.rules.add("ingress", ingress_tcp, "master", who="test")
                    await engine.rules.add("ingress", ingress_udp, "master", who="test")
                    await _listening(engine, "egress", egress_tcp)
                    await _listening(engine, "ingress", ingress_tcp)
                    for text in (egress_tcp, ingress_tcp):
                        assert await roundtrip(int(text.split(":")[1]), b"through sshd") == b"through sshd"
                    await eventually(lambda: _status(engine, "ingress", ingress_udp).state is RuleState.REFUSED,
                                     what="the UDP rule refused")
                    reason = _status(engine, "ingress", ingress_udp).reason
                    if transport == "openssh":
                        assert reason == ("unit master runs on tunnel.transport openssh, which carries TCP only: "
                                          "UDP rules through it need tunnel.transport asyncssh"), reason
                    else:
                        assert "UDP rules need a SOP Console hub at the far end: unit master's server 127.0.0.1:" \
                               f"{sshd.port} is SSH-2.0-OpenSSH_" in reason, reason
        run(body())
    finally:
        sshd.stop()


def test_rules_waiting_for_their_unit_listen_as_soon_as_it_is_up(state, monkeypatch):
    """Not at their next retry: with the retry an hour away, the rule listens once its unit is up."""
    monkeypatch.setattr(listener, "LISTEN_RETRY", 3600.0)

    async def body():
        async with EchoServer() as echo:
            async with hub_and_unit(state, allow=(f"127.0.0.1:{echo.port}",)) as (engine, worker, ports):
                await engine.stop_units("master", "test")
                text = f"tcp:{free_port()}:127.0.0.1:{echo.port}"
                await engine.rules.add("egress", text, "master", who="test")
                status = _status(engine, "egress", text)
                assert (status.state, status.reason) == (RuleState.WAITING,
                                                         "unit master is not connected (state stopped)")
                await engine.start_units("master", "test")
                await _listening(engine, "egress", text)
                assert await roundtrip(int(text.split(":")[1]), b"at once") == b"at once"
    run(body())

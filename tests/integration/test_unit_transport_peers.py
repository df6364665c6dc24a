"""Transports through a unit's SSH connection against servers we did not write: OpenSSH's sshd (TCP egress allowed,
and refused by `AllowTcpForwarding remote` in the server's words; a TCP ingress rule added at run time; UDP
refused up front, as sshd carries TCP only) and Dropbear's server (TCP egress)."""

from __future__ import annotations

import asyncio
import os

import pytest
from sshd import Dropbear
from support import EchoServer, UdpEcho, eventually, fwd_of, roundtrip, run, running_engine, started_sshd, unit_of

from console import relay
from console.core.errors import OperationFailed
from console.core.keys import unit_public_key
from console.tunnel import egress, ingress

async def _through(worker, echo_port: int) -> relay.ForwardStats:
    """A TCP egress rule through the unit to the echo service: a payload over a window each way, counted."""
    stats = relay.ForwardStats()
    server = await egress.serve_tcp(worker, "127.0.0.1", 0, "127.0.0.1", echo_port, stats)
    try:
        payload = os.urandom(3 * 1024 * 1024)
        assert await roundtrip(server.sockets[0].getsockname()[1], payload) == payload
        await eventually(lambda: stats.snapshot() == (0, 1, len(payload), len(payload)), what="counters")
    finally:
        server.close()
    return stats


def test_tcp_egress_through_sshd_and_its_refusal_in_its_own_words(tmp_path, state):
    allowing = started_sshd(tmp_path / "a" / "sshd")
    refusing = started_sshd(tmp_path / "b" / "sshd", extra="AllowTcpForwarding remote")
    try:
        async def body():
            async with EchoServer() as echo:
                async with running_engine(allowing, state, {"master": []}) as engine:
                    await eventually(lambda: unit_of(engine, "master").state == "up", timeout=15)
                    await _through(engine.workers["master"], echo.port)
                async with running_engine(refusing, state, {"master": []}) as engine:
                    await eventually(lambda: unit_of(engine, "master").state == "up", timeout=15)
                    worker = engine.workers["master"]
                    refused: list[str] = []
                    server = await egress.serve_tcp(worker, "127.0.0.1", 0, "127.0.0.1", echo.port,
                                                    relay.ForwardStats(), on_refused=refused.append)
                    try:
                        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
                        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed at once
                        writer.close()
                    finally:
                        server.close()
                    assert refused == [f"unit master: the server 127.0.0.1:{refusing.port} refused a connection to "
                                       f"127.0.0.1:{echo.port}: administratively prohibited: open failed"], refused
        run(body())
    finally:
        allowing.stop()
        refusing.stop()


def test_a_tcp_ingress_rule_is_added_to_a_unit_on_sshd_at_run_time(tmp_path, state):
    sshd = started_sshd(tmp_path / "sshd")
    try:
        async def body():
            async with EchoServer() as echo, EchoServer() as rule_echo:
                async with running_engine(sshd, state, {"master": [f"app 0 127.0.0.1:{echo.port}"]}) as engine:
                    await eventually(lambda: unit_of(engine, "master").state == "up", timeout=15)
                    worker = engine.workers["master"]
                    before = worker.forwards["app"].listener
                    fr = await ingress.add_tcp(worker, 0, "127.0.0.1", rule_echo.port)
                    await eventually(lambda: fwd_of(engine, "master", "rule:tcp:0").state == "listening")
                    assert await roundtrip(fr.port, b"through sshd") == b"through sshd"
                    await ingress.remove(worker, "tcp", 0)
                    assert worker.forwards["app"].listener is before
                    assert await roundtrip(fwd_of(engine, "master", "app").port, b"app") == b"app"
                    assert unit_of(engine, "master").state == "up"
        run(body())
    finally:
        sshd.stop()


def test_udp_rules_are_refused_up_front_against_openssh(tmp_path, state):
    sshd = started_sshd(tmp_path / "sshd")
    try:
        async def body():
            async with UdpEcho() as echo:
                async with running_engine(sshd, state, {"master": []}) as engine:
                    await eventually(lambda: unit_of(engine, "master").state == "up", timeout=15)
                    worker = engine.workers["master"]
                    line = egress.udp_refusal(worker)
                    assert line is not None and line.startswith(
                        f"UDP rules need a SOP Console hub at the far end: unit master's server 127.0.0.1:"
                        f"{sshd.port} is SSH-2.0-OpenSSH_"), line
                    with pytest.raises(OperationFailed, match="UDP rules need a SOP Console hub at the far end"):
                        await egress.UdpEgress(worker, "127.0.0.1", echo.port).start("127.0.0.1", 0)
                    await ingress.add_udp(worker, 0, "127.0.0.1", echo.port)
                    await eventually(lambda: fwd_of(engine, "master", "rule:udp:0").state == "refused")
                    assert fwd_of(engine, "master", "rule:udp:0").error == line
                    assert unit_of(engine, "master").state == "degraded"
            # sshd was never asked for anything UDP
            assert "sop-udp" not in sshd.log_path.read_text()
        run(body())
    finally:
        sshd.stop()


def test_tcp_egress_through_a_dropbear_server(dropbear_tools, local_user, tmp_path, state):
    user, _password, _home = local_user
    server = Dropbear(tmp_path / "dropbear")
    server.authorize(user, unit_public_key(state, "master").line)
    server.start()
    try:
        async def body():
            async with EchoServer() as echo, running_engine(server, state, {"master": []}, authorize=False,
                                                            users={"master": user}) as engine:
                await eventually(lambda: unit_of(engine, "master").state == "up", timeout=15)
                await _through(engine.workers["master"], echo.port)
                assert egress.udp_refusal(engine.workers["master"]).startswith(
                    "UDP rules need a SOP Console hub at the far end")
        run(body())
    finally:
        server.stop()

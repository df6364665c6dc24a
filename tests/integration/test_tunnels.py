"""Units against a real OpenSSH sshd on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time

import pytest
from support import (EchoServer, authorize_units, config_of, eventually, forward_port, fwd_of, me, roundtrip, run,
                      running_engine, unit_of, unit_yaml)
from sshd import free_port

from console.control.operations import Call, perform
from console.core.known_hosts import KnownHosts
from console.core.oplog import OpQuery


pytestmark = pytest.mark.usefixtures("transport")   # every test here runs for both transports


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_bytes_relay_both_ways_through_every_forward(sshd, state):
    async def body():
        async with EchoServer() as echo1, EchoServer() as echo2, running_engine(sshd, state, {
            "master": [f"ssh 0 127.0.0.1:{echo1.port}", f"http 0 127.0.0.1:{echo2.port}"],
            "clone": [f"ssh 0 127.0.0.1:{echo2.port}"],
        }) as engine:
            await eventually(lambda: all(u.state == "up" for u in engine.status().units), what="units up")
            payload = os.urandom(3 * 1024 * 1024 + 17)  # more than one SSH window: flow control must work
            for unit, name in (("master", "ssh"), ("master", "http"), ("clone", "ssh")):
                port = forward_port(engine, unit, name)
                assert port > 0
                assert await roundtrip(port, payload) == payload
                await eventually(lambda: fwd_of(engine, unit, name).bytes_in == len(payload)
                                 and fwd_of(engine, unit, name).bytes_out == len(payload)
                                 and fwd_of(engine, unit, name).open == 0, what="counters")
                assert fwd_of(engine, unit, name).total == 1
            # The log says Starting, as the appliance's does.
            text = state.tunnel_log.read_text()
            assert f"master Starting: 2 forwards up on 127.0.0.1:{sshd.port}" in text
            assert f"clone Starting: 1 forward up on 127.0.0.1:{sshd.port}" in text
            assert " engine up with 2 units: master, clone\n" in text and "engine engine" not in text
            # Only our hub is told what the forwards lead to: a plain sshd never sees the request (it would
            # log "subsystem request for sop-announce@sop-console ... failed").
            assert "sop-announce" not in sshd.log_path.read_text()
    run(body())


def test_local_service_down_refuses_that_connection_and_tunnel_stays_up(sshd, state):
    async def body():
        dead_port = free_port()  # nothing listens here
        async with EchoServer() as echo, running_engine(sshd, state, {
                "master": [f"app 0 127.0.0.1:{dead_port}", f"ssh 0 127.0.0.1:{echo.port}"]}) as engine:
            await eventually(lambda: unit_of(engine, "master").state == "up")
            reader, writer = await asyncio.open_connection("127.0.0.1", forward_port(engine, "master", "app"))
            assert await asyncio.wait_for(reader.read(), 5) == b""  # the one connection is closed
            writer.close()
            await eventually(lambda: "refused a connection" in state.tunnel_log.read_text(), what="log line")
            assert unit_of(engine, "master").state == "up"
            assert await roundtrip(forward_port(engine, "master", "ssh"), b"still here") == b"still here"
    run(body())


def test_sshd_restart_and_the_tunnels_return(sshd, state):
    async def body():
        remote = free_port()
        async with EchoServer() as echo, running_engine(sshd, state, {
                "master": [f"ssh {remote} 127.0.0.1:{echo.port}"]}) as engine:
            await eventually(lambda: unit_of(engine, "master").state == "up")
            assert await roundtrip(remote, b"before") == b"before"
            await asyncio.to_thread(sshd.restart)
            await eventually(lambda: unit_of(engine, "master").state != "up", timeout=5, what="drop seen")
            await eventually(lambda: unit_of(engine, "master").state == "up", timeout=10, what="back up")
            assert await roundtrip(remote, b"after") == b"after"
            assert "retrying" in state.tunnel_log.read_text()
    run(body())


def test_port_held_by_another_session_is_refused_alone_and_recovers(sshd, state, tmp_path):
    async def body():
        held, free = free_port(), free_port()
        # The real OpenSSH client holds one port, as a dead session of ours would.
        client_key = tmp_path / "holder"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client_key)], check=True)
        sshd.authorize(me(), client_key.with_suffix(".pub").read_text())
        holder = subprocess.Popen(
            ["ssh", "-N", "-i", str(client_key), "-p", str(sshd.port), "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={tmp_path}/kh", "-o", "StrictHostKeyChecking=accept-new",
             "-o", "ExitOnForwardFailure=yes", "-R", f"127.0.0.1:{held}:127.0.0.1:9", f"{me()}@127.0.0.1"],
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await eventually(lambda: _listening(held), timeout=10, what="holder's forward")
            async with EchoServer() as echo, running_engine(sshd, state, {
                    "master": [f"ssh {held} 127.0.0.1:{echo.port}", f"http {free} 127.0.0.1:{echo.port}"]}) as engine:
                await eventually(lambda: unit_of(engine, "master").state == "degraded", what="degraded")
                ssh = fwd_of(engine, "master", "ssh")
                assert ssh.state == "refused"
                assert f"127.0.0.1:{held}" in ssh.error and "held by another session" in ssh.error
                assert fwd_of(engine, "master", "http").state == "listening"
                assert await roundtrip(free, b"the rest stays up") == b"the rest stays up"
                assert "ssh refused" in unit_of(engine, "master").last_error

                holder.terminate()
                holder.wait(5)
                await eventually(lambda: unit_of(engine, "master").state == "up", timeout=10, what="recovery")
                assert await roundtrip(held, b"freed") == b"freed"
                assert "forward ssh recovered" in state.tunnel_log.read_text()
        finally:
            if holder.poll() is None:
                holder.kill()
            holder.wait(5)
    run(body())


def test_stop_and_start_and_stopped_survives_restart(sshd, state):
    async def body():
        remote = free_port()
        async with EchoServer() as echo:
            forwards = {"master": [f"ssh {remote} 127.0.0.1:{echo.port}"]}
            async with running_engine(sshd, state, forwards) as engine:
                await eventually(lambda: unit_of(engine, "master").state == "up")
                await perform(Call("tester", engine, recorder=engine.recorder), "stop", {"unit": "master"})
                assert unit_of(engine, "master").state == "stopped"
                assert fwd_of(engine, "master", "ssh").state == "stopped"
                await eventually(lambda: not _listening(remote), timeout=5, what="port closed on the server")

            async with running_engine(sshd, state, forwards, authorize=False) as engine:  # a daemon restart
                await asyncio.sleep(0.3)
                assert unit_of(engine, "master").state == "stopped"  # stays stopped
                assert not _listening(remote)
                await perform(Call("tester", engine, recorder=engine.recorder), "start", {"unit": "master"})
                await eventually(lambda: unit_of(engine, "master").state == "up")
                assert await roundtrip(remote, b"again") == b"again"
                ops = [(o.action, o.who, o.target) for o in engine.oplog.page(OpQuery())["entries"]]
                assert ops == [("start", "tester", "master"), ("stop", "tester", "master")]
    run(body())


def test_frozen_server_is_detected_by_keepalive(sshd, state):
    async def body():
        async with EchoServer() as echo, running_engine(sshd, state, {
                "master": [f"ssh 0 127.0.0.1:{echo.port}"]}) as engine:
            frozen: list[int] = []
            try:
                await eventually(lambda: unit_of(engine, "master").state == "up")
                frozen = sshd.session_pids()
                assert frozen, "the unit's session processes"
                for pid in frozen:
                    os.kill(pid, signal.SIGSTOP)
                started = time.monotonic()
                # keepalive 1 s x 2: found dead within a few seconds, not the hours TCP alone takes
                await eventually(lambda: unit_of(engine, "master").state != "up", timeout=8,
                                 what="dead peer detected")
                assert time.monotonic() - started < 6
                await eventually(lambda: "keepalive" in state.tunnel_log.read_text(), timeout=3)
            finally:
                for pid in frozen:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            # The frozen session is gone now: the unit comes back on its own.
            await eventually(lambda: unit_of(engine, "master").state == "up", timeout=10, what="back up")
    run(body())


def test_strict_host_key_unknown_then_trusted(sshd, state):
    async def body():
        async with running_engine(sshd, state, {"master": []}, pin=False) as engine:
            await eventually(lambda: unit_of(engine, "master").state == "host-key-unknown")
            snap = unit_of(engine, "master")
            assert snap.server_key.startswith("SHA256:")
            assert snap.server_key in snap.last_error
            seen = await engine.trust("master", "tester", check=True)  # records nothing; says who serves it
            assert (seen["fingerprint"], seen["trusted"], seen["outcome"]) == \
                (snap.server_key, [], "not trusted yet")
            assert seen["software"].startswith("SSH-2.0-OpenSSH") and seen["hub"] is False
            assert not KnownHosts(state.known_hosts).keys_for("127.0.0.1", sshd.port)
            result = await engine.trust("master", "tester")
            assert result["outcome"] == "trusted" and result["fingerprint"] == snap.server_key
            assert result["trusted"] == [snap.server_key]
            await eventually(lambda: unit_of(engine, "master").state == "up", timeout=5, what="up after trust")
            assert KnownHosts(state.known_hosts).keys_for("127.0.0.1", sshd.port)
    run(body())


def test_changed_host_key_is_refused_and_never_accepted_silently(sshd, state):
    async def body():
        async with running_engine(sshd, state, {"master": []}, pin=False, policy="accept-new") as engine:
            await eventually(lambda: unit_of(engine, "master").state == "up")
            assert "recorded on first contact" in state.tunnel_log.read_text()
            # The server's key changes (a re-install, or someone in the middle).
            sshd.stop()
            sshd.make_host_key()
            sshd.start()
            await eventually(lambda: unit_of(engine, "master").state == "host-key-mismatch", timeout=10)
            assert "HOST KEY MISMATCH" in unit_of(engine, "master").last_error
            assert "HOST KEY MISMATCH" in state.tunnel_log.read_text()
            with pytest.raises(Exception, match="MISMATCH"):
                await engine.trust("master", "tester")  # not without --replace
            await asyncio.sleep(0.5)
            assert unit_of(engine, "master").state == "host-key-mismatch"
            result = await engine.trust("master", "tester", replace=True)
            assert result["outcome"] == "replaced"
            await eventually(lambda: unit_of(engine, "master").state == "up", timeout=5)
    run(body())


def test_pinned_host_key_mismatch(sshd, state):
    async def body():
        pin = f"SHA256:{'A' * 43}"
        async with running_engine(sshd, state, {"master": []}, pin=pin) as engine:
            await eventually(lambda: unit_of(engine, "master").state == "host-key-mismatch")
            assert pin in unit_of(engine, "master").last_error
    run(body())


def test_unauthorized_key_is_auth_failed_then_recovers_on_kick(sshd, state):
    async def body():
        async with running_engine(sshd, state, {"master": []}, authorize=False) as engine:
            await eventually(lambda: unit_of(engine, "master").state == "auth-failed")
            assert "key install master" in unit_of(engine, "master").last_error
            authorize_units(sshd, state, ["master"])
            engine.kick("master", "tester", "key installed")  # retry_max is 1 s in tests; kick is at once
            await eventually(lambda: unit_of(engine, "master").state == "up", timeout=3)
    run(body())


def test_reload_keeps_unchanged_forwards_and_adds_new(sshd, state):
    async def body():
        a, b = free_port(), free_port()
        async with EchoServer() as echo, running_engine(sshd, state, {
                "master": [f"ssh {a} 127.0.0.1:{echo.port}"]}) as engine:
            await eventually(lambda: unit_of(engine, "master").state == "up")
            reader, writer = await asyncio.open_connection("127.0.0.1", a)  # an open connection survives
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
            new = config_of(unit_yaml(sshd, {"master": [f"ssh {a} 127.0.0.1:{echo.port}",
                                                        f"http {b} 127.0.0.1:{echo.port}"]}))
            assert await engine.reload(new) == ["master forwards updated"]
            await eventually(lambda: fwd_of(engine, "master", "http").state == "listening")
            writer.write(b"y")
            assert await reader.readexactly(1) == b"y"
            assert await roundtrip(b, b"new") == b"new"
            writer.close()
    run(body())


def test_a_failing_unit_keeps_its_since_and_does_not_flood_the_log(state):
    async def body():
        from console.engine import Engine

        dead = free_port()  # no server at all
        cfg = config_of(f"server: {{host: 127.0.0.1, port: {dead}, host_key: 'SHA256:{'A' * 43}'}}\n"
                        "tunnel: {retry_min: 0.02, retry_max: 0.1, connect_timeout: 1}\n"
                        "units:\n  master: {username: nobody, ssh_port: 0}\n")
        engine = Engine(cfg, state)
        await engine.start()
        try:
            await eventually(lambda: unit_of(engine, "master").state == "retrying")
            since = unit_of(engine, "master").since
            assert "cannot reach" in unit_of(engine, "master").last_error
            await asyncio.sleep(1.5)  # a dozen or more attempts
            assert unit_of(engine, "master").state == "retrying"
            assert unit_of(engine, "master").since == since
            assert unit_of(engine, "master").next_retry is not None
            assert state.tunnel_log.read_text().count("cannot reach") == 1
        finally:
            await engine.shutdown()
    run(body())


def test_an_unusable_store_is_said_in_the_tunnel_log_and_status(sshd, state):
    state.database.write_text('{"clients": 5}')  # JSON, but not a store

    async def body():
        async with running_engine(sshd, state, {"master": ["ssh 0 127.0.0.1:22"]}) as engine:
            (notice,) = engine.status().notices
            assert "was unusable" in notice and "moved aside" in notice
            assert engine.status().to_json()["notices"] == [notice]
            assert f"notice: {notice}" in engine.status().render()
        assert notice in state.tunnel_log.read_text()
    run(body())


@pytest.mark.parametrize("cipher, works", [("3des-cbc", False), ("aes256-ctr", True), ("aes128-cbc", True)])
def test_a_unit_offers_no_weak_cipher(tmp_path, state, cipher, works, transport):
    """A server that offers only a weak cipher (3DES: 64-bit blocks; sshd 9.2 has no arcfour left to try) is not
    logged in to, and the unit says why; another one it offers is used."""
    from support import started_sshd

    sshd = started_sshd(tmp_path / "sshd", extra=f"Ciphers {cipher}\nLogLevel DEBUG\n")

    async def body():
        async with running_engine(sshd, state, {"master": []}) as engine:
            if works:
                await eventually(lambda: unit_of(engine, "master").state == "up", what="up")
            else:
                await eventually(lambda: "no algorithm in common" in (unit_of(engine, "master").last_error or ""),
                                 what="the reason")
                error = unit_of(engine, "master").last_error
                assert unit_of(engine, "master").state == "retrying" and cipher in error, error
    try:
        run(body())
    finally:
        sshd.stop()
    if works:
        assert f"kex: client->server cipher: {cipher}" in sshd.log_path.read_text()

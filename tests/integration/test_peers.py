"""Units against SSH servers we did not write, and against things that are not SSH at all: OpenSSH's sshd with
more than one host key or a narrow PubkeyAcceptedAlgorithms, Dropbear's server (Debian's dropbear-bin, 2022.83),
a web server, an echo service and a service that speaks first on the unit's server port."""

from __future__ import annotations

import asyncio
import http.server
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from support import EchoServer, eventually, forward_port, fwd_of, roundtrip, run, running_engine, unit_of
from sshd import Dropbear, Sshd, find_sshd

from console.core.keys import unit_public_key

IN_CI = bool(os.environ.get("CI"))



pytestmark = pytest.mark.usefixtures("transport")   # every test here runs for both transports

def _field(status, name: str):
    """A field of a unit's or forward's status, whether a dict or a typed record (UnitStatus, ForwardStatus)."""
    return status[name] if isinstance(status, dict) else getattr(status, name)


def _sshd(tmp_path: Path, **options) -> Sshd:
    """A test sshd with options of its own (the sshd fixture takes none)."""
    if find_sshd() is None:
        if IN_CI:
            pytest.fail("sshd is missing in CI: install openssh-server (make test does)")
        pytest.skip("sshd not installed (apt-get install openssh-server)")
    return Sshd(tmp_path / "sshd", **options).start()


# ---------------------------------------------------------------------------------------------- item 10: host keys

@pytest.mark.parametrize("pinned", ["ed25519", "rsa"])
def test_a_pinned_key_is_trusted_on_a_server_that_has_ed25519_and_rsa_keys(tmp_path, state, pinned):
    """sshd holds both; the unit must be shown the key it pins, whichever type, not the server's first choice."""
    sshd = _sshd(tmp_path, more_host_keys=("rsa",))
    try:
        rsa_line = " ".join((tmp_path / "sshd" / "host_rsa.pub").read_text().split()[:2])
        pin = sshd.host_public_key if pinned == "ed25519" else rsa_line

        async def body():
            async with EchoServer() as echo, running_engine(sshd, state, {"master": [f"app 0 127.0.0.1:{echo.port}"]},
                                                            pin=pin) as engine:
                await eventually(lambda: _field(unit_of(engine, "master"), "state") == "up", timeout=15, what="up")
                assert await roundtrip(forward_port(engine, "master", "app"), b"pinned") == b"pinned"
        run(body())
    finally:
        sshd.stop()


def test_with_nothing_known_ed25519_is_preferred_and_recorded(tmp_path, state):
    sshd = _sshd(tmp_path, more_host_keys=("rsa", "ecdsa"))
    try:
        async def body():
            async with running_engine(sshd, state, {"master": []}, pin=False, policy="accept-new") as engine:
                await eventually(lambda: _field(unit_of(engine, "master"), "state") == "up", timeout=15)
        run(body())
        recorded = (state.root / "known_hosts").read_text().split()
        assert recorded[1:3] == sshd.host_public_key.split()
    finally:
        sshd.stop()


def test_trust_records_the_key_the_unit_was_shown_on_a_server_with_ed25519_and_rsa_keys(tmp_path, state):
    sshd = _sshd(tmp_path, more_host_keys=("rsa",))
    try:
        async def body():
            async with running_engine(sshd, state, {"master": []}, pin=False) as engine:
                await eventually(lambda: _field(unit_of(engine, "master"), "state") == "host-key-unknown", timeout=15)
                shown = _field(unit_of(engine, "master"), "server_key")
                assert _field(await engine.trust("master", "tester"), "fingerprint") == shown
                await eventually(lambda: _field(unit_of(engine, "master"), "state") == "up", timeout=15)
        run(body())
    finally:
        sshd.stop()


def test_a_unit_comes_up_on_a_dropbear_server_with_only_an_ed25519_key(dropbear_tools, local_user, tmp_path, state):
    """Offered RSA first, Dropbear 2022.83 with only an ed25519 key fails an assertion (rsa.c:164) and drops us."""
    user, _password, _home = local_user
    server = Dropbear(tmp_path / "dropbear", key_types=("ed25519",))
    server.authorize(user, unit_public_key(state, "master").line)
    server.start()
    try:
        async def body():
            async with EchoServer() as echo, running_engine(
                    server, state, {"master": [f"app 0 127.0.0.1:{echo.port}"]}, authorize=False,
                    users={"master": user}) as engine:
                await eventually(lambda: _field(unit_of(engine, "master"), "state") == "up", timeout=15, what="up")
                assert _field(fwd_of(engine, "master", "app"), "state") == "listening"
                payload = os.urandom(200_000)
                assert await roundtrip(forward_port(engine, "master", "app"), payload) == payload
        run(body())
    finally:
        server.stop()
    assert "assert" not in server.log_path.read_text().lower()


# ------------------------------------------------------------------------ item 13: the server refuses our key type

def test_auth_failed_names_both_causes_when_the_server_refuses_the_key_type(tmp_path, state):
    sshd = _sshd(tmp_path, extra="PubkeyAcceptedAlgorithms rsa-sha2-512")
    try:
        async def body():
            async with running_engine(sshd, state, {"master": []}) as engine:  # the key IS in authorized_keys
                await eventually(lambda: _field(unit_of(engine, "master"), "state") == "auth-failed", timeout=15)
                error = _field(unit_of(engine, "master"), "last_error")
                assert "`sop-console key install master`" in error
                assert "does not accept ssh-ed25519 keys" in error and "PubkeyAcceptedAlgorithms" in error
        run(body())
    finally:
        sshd.stop()


# ------------------------------------------------------------------------------------- item 14: not an SSH server

class _Web(http.server.BaseHTTPRequestHandler):
    default_request_version = "HTTP/1.0"  # answer even a one-word request line with a status line

    def log_message(self, *args) -> None:
        pass


def _not_ssh(port: int) -> SimpleNamespace:
    return SimpleNamespace(port=port, host_public_key="")


def test_a_web_server_on_the_port_is_named_not_an_ssh_server(state):
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Web)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        async def body():
            port = web.server_address[1]
            async with running_engine(_not_ssh(port), state, {"master": []}, authorize=False, pin=False) as engine:
                await eventually(lambda: (_field(unit_of(engine, "master"), "last_error") or "").startswith("not an SSH"),
                                 timeout=15, what="not an SSH server")
                error = _field(unit_of(engine, "master"), "last_error")
                assert error.startswith(f"not an SSH server on 127.0.0.1:{port} (it said: 'HTTP/1.0 400 ")
                assert len(error) < 160
                assert _field(unit_of(engine, "master"), "state") == "retrying"
        run(body())
    finally:
        web.shutdown()
        web.server_close()


def test_an_echo_service_on_the_port_is_named_not_an_ssh_server(state):
    async def body():
        async with EchoServer() as echo, running_engine(_not_ssh(echo.port), state, {"master": []},
                                                        authorize=False, pin=False) as engine:
            await eventually(lambda: (_field(unit_of(engine, "master"), "last_error") or "").startswith("not an SSH"),
                             timeout=15, what="not an SSH server")
            error = _field(unit_of(engine, "master"), "last_error")
            assert error.startswith(f"not an SSH server on 127.0.0.1:{echo.port} (it sent our own greeting back")
    run(body())


def test_a_server_that_speaks_first_and_waits_is_named_not_an_ssh_server(state):
    """An SMTP-like service greets and waits for us: asyncssh takes its line for a banner and times out."""
    async def greet(reader, writer):
        writer.write(b"220 mail.example ESMTP ready\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    async def body():
        server = await asyncio.start_server(greet, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with running_engine(_not_ssh(port), state, {"master": []}, authorize=False, pin=False) as engine:
                await eventually(lambda: (_field(unit_of(engine, "master"), "last_error") or "").startswith("not an SSH"),
                                 timeout=15, what="not an SSH server")
                assert _field(unit_of(engine, "master"), "last_error") == \
                    f"not an SSH server on 127.0.0.1:{port} (it said: '220 mail.example ESMTP ready\\r\\n')"
        finally:
            server.close()
    run(body())


def test_a_real_ssh_server_that_fails_is_not_called_not_ssh(tmp_path, state):
    """A server that greets in SSH and then hangs up keeps its own reason."""
    async def hang_up(reader, writer):
        writer.write(b"SSH-2.0-OpenSSH_9.2p1\r\n")
        await writer.drain()
        await reader.readline()
        writer.close()

    async def body():
        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with running_engine(_not_ssh(port), state, {"master": []}, authorize=False, pin=False) as engine:
                await eventually(lambda: _field(unit_of(engine, "master"), "state") == "retrying", timeout=15)
                error = _field(unit_of(engine, "master"), "last_error")
                assert error and "not an SSH server" not in error
        finally:
            server.close()
    run(body())

"""The hub against SSH clients we did not write: Dropbear's dbclient (Debian's dropbear-bin, 2022.83), and
connections that never get as far as a login."""

from __future__ import annotations

import asyncio
import os
import subprocess

from support import EchoServer, HubLog, eventually, roundtrip, run
from sshd import find_dropbear

from console.core.keys import load_or_create_key
from console.core.paths import StatePaths
from console.core.store import Store
from console.demo import _free_range
from console.hub.registry import Registry
from console.hub.server import Hub, HubSettings


async def _hub(state: StatePaths) -> tuple[Hub, Registry]:
    registry = Registry(Store(state.root / "hub.json"), _free_range(4), default_quota=2)
    hub = Hub(HubSettings(), registry, load_or_create_key(state.keys_dir / "hub_ed25519", "hub"))
    await hub.start()
    return hub, registry


def test_a_dropbear_client_forwards_its_port_through_the_hub(dropbear_tools, tmp_path, state):
    """dbclient guesses its first key exchange packet; asyncssh 2.24 got the guess wrong (console/hub/compat.py)."""
    key = tmp_path / "appliance"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    subprocess.run([find_dropbear("dropbearconvert"), "openssh", "dropbear", str(key), f"{key}.dropbear"],
                   check=True, capture_output=True)

    async def body():
        hub, registry = await _hub(state)
        client = registry.add("appliance", key.with_suffix(".pub").read_text())
        proc = None
        try:
            async with EchoServer() as echo:
                with HubLog() as hub_log:
                    proc = await asyncio.create_subprocess_exec(
                        find_dropbear("dbclient"), "-y", "-y", "-i", f"{key}.dropbear", "-p", str(hub.port), "-N",
                        "-R", f"127.0.0.1:{client.ports[0]}:127.0.0.1:{echo.port}", "appliance@127.0.0.1",
                        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.PIPE)

                    def forwarded():
                        if proc.returncode is not None:
                            raise AssertionError(f"dbclient ended: {hub_log.lines}")
                        return client.ports[0] in hub.forwards
                    await eventually(forwarded, timeout=10, what="the Dropbear client's forward on the hub")
                    payload = os.urandom(300_000)
                    assert await roundtrip(client.ports[0], payload) == payload
                assert not [line for line in hub_log.lines if "before login" in line], hub_log.lines
        finally:
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
            await hub.close()
    run(body())


def test_connections_that_fail_before_login_are_logged_without_flooding(state):
    async def body():
        hub, _registry = await _hub(state)
        try:
            with HubLog() as hub_log:
                for _ in range(6):
                    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
                    await reader.readline()  # the hub's greeting
                    writer.write(b"GET / HTTP/1.0\r\n\r\n")
                    await writer.drain()
                    await reader.read()      # the hub hangs up
                    writer.close()
                await eventually(lambda: not hub.connections, what="the six connections gone")
                await asyncio.sleep(0.1)
            told = [line for line in hub_log.lines if "before login" in line]
            assert len(told) == 1, told  # the first in full; the rest in the minute's summary (LogLimiter)
            assert "connection from 127.0.0.1:" in told[0] and "Unsupported SSH version" in told[0]
        finally:
            await hub.close()
    run(body())

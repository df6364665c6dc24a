"""console/core/ssh_tuning.py against real peers. asyncssh's empty MSG_IGNORE before every packet, counted by the
peer: an OpenSSH sshd at LogLevel DEBUG3 logs "Received SSH2_MSG_IGNORE" for each one a unit sends it, and the
OpenSSH client (-vvv) for each one our hub sends it; left out under the AEAD ciphers, still sent under CBC and
CTR. And what asyncssh is handed to read: slices of IN_SLICE, every byte relayed, none after an error; what
asyncio reads at a time (READ_SIZE); asyncssh's per-packet debug line, built only at debug level 3."""

from __future__ import annotations

import asyncio
import logging
import os

import asyncssh
import pytest
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_CHANNEL_WINDOW_ADJUST, MSG_KEXINIT
from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacketLogger
from support import EchoServer, eventually, forward_port, fwd_of, me, roundtrip, run, running_engine, unit_of
from sshd import Sshd
from test_hub import World, unit_behind_our_hub

from console import relay
from console.core import ssh_tuning
from console.core.ssh_tuning import AEAD_CIPHERS, IN_SLICE, READ_SIZE

RECEIVED = "Received SSH2_MSG_IGNORE"
PAYLOAD = 1024 * 1024 + 17   # at least 32 data packets each way (32 KiB is the largest either peer sends here)


@pytest.mark.parametrize("cipher", ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                                    "aes128-ctr", "aes256-cbc"])
def test_a_unit_sends_the_empty_ignore_only_under_cbc_and_ctr(tmp_path, state, cipher):
    sshd = Sshd(tmp_path / "sshd", extra=f"Ciphers {cipher}\nLogLevel DEBUG3").start()

    async def body():
        # no endpoint check at start: its short login (console/tunnel/endpoint_check.py) is not a unit's tunnel
        # and is not tuned, so its few packets would be counted here too
        async with EchoServer() as echo, running_engine(sshd, state, {
                "master": [f"app 0 127.0.0.1:{echo.port}"]}, tunnel="  endpoint_check_interval: 0\n") as engine:
            await _echo_through_master(engine, PAYLOAD)
            await eventually(lambda: fwd_of(engine, "master", "app").bytes_out == PAYLOAD, what="counters")

    try:
        run(body())
    finally:
        sshd.stop()
    log = sshd.log_path.read_text()
    assert f"kex: client->server cipher: {cipher}" in log  # the cipher this case is about was the one used
    ignored = log.count(RECEIVED)
    if cipher in AEAD_CIPHERS:
        assert ignored == 0, f"{ignored} empty MSG_IGNORE sent under {cipher}"
    else:
        assert ignored >= PAYLOAD // 32768, f"only {ignored} MSG_IGNORE under {cipher}: asyncssh's own behaviour"


@pytest.mark.parametrize("cipher", ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr"])
def test_the_hub_sends_the_empty_ignore_only_under_ctr(tmp_path, state, cipher):
    """The hub's server connections get the same treatment (it sends the operator's bytes down to the unit)."""
    log = tmp_path / "ssh.log"

    async def body():
        world = World(tmp_path, state)
        client = world.register("acme")
        await world.hub.start()
        try:
            async with EchoServer() as echo:
                ssh = await world.ssh("acme", "-vvv", "-E", str(log), "-c", cipher, "-N",
                                      "-R", f"127.0.0.1:{client.ports[0]}:127.0.0.1:{echo.port}")
                try:
                    await eventually(lambda: client.ports[0] in world.hub.forwards, what="forward up")
                    payload = os.urandom(PAYLOAD)
                    assert await roundtrip(client.ports[0], payload) == payload
                finally:
                    ssh.kill()
                    await ssh.wait()
        finally:
            await world.hub.close()

    run(body())
    text = log.read_text()
    assert f"kex: server->client cipher: {cipher}" in text
    ignored = text.count(RECEIVED)
    if cipher in AEAD_CIPHERS:
        assert ignored == 0, f"{ignored} empty MSG_IGNORE sent by the hub under {cipher}"
    else:
        assert ignored >= PAYLOAD // 32768, f"only {ignored} MSG_IGNORE from the hub under {cipher}"


def _spy_on_what_asyncssh_reads(monkeypatch) -> list[tuple[int, int]]:
    """(size, bytes it already held) of each piece asyncssh's own data_received is handed on client connections
    (the tuning calls the class's method)."""
    calls: list[tuple[int, int]] = []
    original = asyncssh.SSHClientConnection.data_received

    def data_received(self, data, datatype=None):
        calls.append((len(data), len(self._inpbuf)))
        original(self, data, datatype)

    monkeypatch.setattr(asyncssh.SSHClientConnection, "data_received", data_received)
    return calls


MIB8 = 8 * 1024 * 1024 + 5


async def _echo_through_master(engine, size: int) -> None:
    """Once unit master is up, `size` random bytes through its forward app to the echo service and back."""
    await eventually(lambda: unit_of(engine, "master").state == "up", what="unit up")
    payload = os.urandom(size)
    assert await roundtrip(forward_port(engine, "master", "app"), payload) == payload


def _only_slices_unless_gathering(calls: list[tuple[int, int]]) -> None:
    assert sum(size for size, _ in calls) > MIB8
    assert all(size <= IN_SLICE or held > ssh_tuning.GATHERING for size, held in calls), \
        [call for call in calls if call[0] > IN_SLICE]


def test_a_unit_hands_asyncssh_what_arrives_in_slices_and_every_byte_gets_through(sshd, state, monkeypatch):
    """sshd sends 32 KiB packets: asyncio's reads of up to 256 KiB reach asyncssh in slices."""
    calls = _spy_on_what_asyncssh_reads(monkeypatch)

    async def body():
        # no endpoint check at start: its short login (console/tunnel/endpoint_check.py) is not a unit's tunnel
        # and is not tuned, so its few packets would be counted here too
        async with EchoServer() as echo, running_engine(sshd, state, {
                "master": [f"app 0 127.0.0.1:{echo.port}"]}, tunnel="  endpoint_check_interval: 0\n") as engine:
            await _echo_through_master(engine, MIB8)

    run(body())
    _only_slices_unless_gathering(calls)
    assert any(size == IN_SLICE for size, _ in calls)  # larger reads were cut


def test_behind_our_hub_a_packet_larger_than_a_slice_is_handed_on_whole(tmp_path, state, monkeypatch):
    """Our hub sends packets of up to 256 KiB (relay.MAX_PACKET): once asyncssh gathers one, the rest of the
    read goes in one piece (slices would copy what it holds again for each)."""
    from support import config_of

    from console.engine import Engine

    calls = _spy_on_what_asyncssh_reads(monkeypatch)

    async def body():
        async with EchoServer() as echo:
            text, _, _ = unit_behind_our_hub(
                state, f"      - {{name: app, remote_port: 0, local: '127.0.0.1:{echo.port}'}}\n", ports=1)
            engine = Engine(config_of(text), state)
            await engine.start()
            try:
                await _echo_through_master(engine, MIB8)
            finally:
                await engine.shutdown()

    run(body())
    _only_slices_unless_gathering(calls)
    assert any(size > IN_SLICE for size, _ in calls)  # the rest of a read, while a large packet was gathered


def test_the_slices_stop_where_asyncssh_closes_the_connection(sshd, tmp_path, monkeypatch):
    """What follows a packet asyncssh rejects is not handed on (as asyncssh drops it when it reads one piece)."""
    calls = _spy_on_what_asyncssh_reads(monkeypatch)
    key = asyncssh.generate_private_key("ssh-ed25519")
    sshd.authorize(me(), key.export_public_key().decode())

    class Client(asyncssh.SSHClient):
        def connection_made(self, conn):
            ssh_tuning.tune(conn)

    async def body():
        conn = await asyncssh.connect(
            "127.0.0.1", sshd.port, username=me(), client_keys=[key], client_factory=Client, config=None,
            agent_path=None, known_hosts=None)  # the test's own sshd, started a moment ago: its key is not the point
        calls.clear()
        conn.data_received(os.urandom(4 * IN_SLICE))  # a read of garbage: its first packet header is wrong
        await asyncio.wait_for(conn.wait_closed(), 5)

    run(body())
    assert [size for size, _ in calls] == [IN_SLICE]


def test_a_unit_reads_up_to_read_size_at_once_from_both_its_sockets(sshd, state, monkeypatch):
    """asyncio's reads on the unit's SSH socket (what asyncssh's slicing is handed) and on the forwarded
    connection's local socket (what the relay writes to the channel) go past asyncio's own 256 KiB, to READ_SIZE."""
    ssh_reads: list[tuple[int, int]] = []  # (size, the transport's max_size)
    local_reads: list[tuple[int, int]] = []
    slicing, local_side = ssh_tuning._data_received, relay._LocalSide.data_received

    def ssh_read(self, data, datatype=None):
        ssh_reads.append((len(data), self._transport.max_size))
        slicing(self, data, datatype)

    def local_read(self, data):
        local_reads.append((len(data), self.relay.local.max_size))
        local_side(self, data)

    monkeypatch.setattr(ssh_tuning, "_data_received", ssh_read)
    monkeypatch.setattr(relay._LocalSide, "data_received", local_read)

    async def body():
        async with EchoServer() as echo, running_engine(sshd, state, {
                "master": [f"app 0 127.0.0.1:{echo.port}"]}, tunnel="  endpoint_check_interval: 0\n") as engine:
            await _echo_through_master(engine, MIB8)

    run(body())
    for reads in (ssh_reads, local_reads):
        assert {size for _, size in reads} == {READ_SIZE}
        assert sum(size for size, _ in reads) >= MIB8
        assert max(size for size, _ in reads) > 256 * 1024  # more than asyncio reads by itself


@pytest.mark.parametrize("level", [1, 3])
def test_asyncssh_s_per_packet_line_is_made_only_when_it_is_logged(sshd, state, monkeypatch, caplog, level):
    """Below debug level 3 asyncssh's packet line is not built for the data packets (the channel's) nor the
    connection's; at level 3 it is built and logged as asyncssh does."""
    monkeypatch.setattr(SSHLogger, "_debug_level", level)
    built: list[int] = []
    build = SSHPacketLogger._log_packet

    def spy(self, msg, pkttype, *rest):
        built.append(pkttype)
        build(self, msg, pkttype, *rest)

    monkeypatch.setattr(SSHPacketLogger, "_log_packet", spy)
    size = 128 * 1024 + 5  # a few data packets each way (level 3 dumps each byte in Python)

    async def body():
        async with EchoServer() as echo, running_engine(sshd, state, {
                "master": [f"app 0 127.0.0.1:{echo.port}"]}, tunnel="  endpoint_check_interval: 0\n") as engine:
            await _echo_through_master(engine, size)
            await eventually(lambda: fwd_of(engine, "master", "app").bytes_out == size, what="counters")

    with caplog.at_level(logging.DEBUG, logger="asyncssh"):
        run(body())
    data = built.count(MSG_CHANNEL_DATA)
    if level == 3:
        assert data >= 2 * (size // 32768), built
        assert any(record.getMessage().startswith("[") and "MSG_CHANNEL_DATA" in record.getMessage()
                   for record in caplog.records)
    else:
        assert data == 0 and MSG_CHANNEL_WINDOW_ADJUST not in built and MSG_KEXINIT not in built, built

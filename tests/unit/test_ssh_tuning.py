"""The guards of console/core/ssh_tuning.py: what its changes rely on in asyncssh (and asyncio) is there, and when
it is not the connection is left alone with one warning. (The packets themselves, counted by real peers, bytes
relayed through the slices, the reads and the packet log: tests/integration/test_ssh_tuning_peers.py.)"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket

import asyncssh
import pytest
from asyncssh.connection import SSHConnection

from console.core import ssh_tuning


@pytest.fixture(autouse=True)
def _fresh_checks(monkeypatch):
    monkeypatch.setattr(ssh_tuning, "_matches", {})
    monkeypatch.setattr(ssh_tuning, "_warned", set())


def test_asyncssh_still_has_what_the_changes_rely_on():
    """Fails loudly when asyncssh (or asyncio) moves what the changes rely on: re-read the methods named below,
    check that the reasoning in console/core/ssh_tuning.py still holds, update its lines and CHECKED_AGAINST."""
    for change, needs in (("ignore", [ssh_tuning.COUNTERMEASURE]),
                          ("slices", [ssh_tuning.RECEIVE, ssh_tuning.CLOSE]),
                          ("reads", [ssh_tuning.READ, ssh_tuning.TRANSPORT]),
                          ("packet-log", [ssh_tuning.LOGGED, ssh_tuning.LOGGED_IN, ssh_tuning.DUMPED,
                                          ssh_tuning.DROPPED])):
        assert ssh_tuning.internals_match(change), (
            f"asyncssh {asyncssh.__version__} moved what ssh_tuning's '{change}' relies on "
            f"({[(m.__qualname__, lines) for m, lines in needs]}; checked against {ssh_tuning.CHECKED_AGAINST})")
    parameters = inspect.signature(SSHConnection.send_packet).parameters
    assert list(parameters) == ["self", "pkttype", "args", "handler"]  # what the per-connection method passes on
    assert parameters["handler"].kind is inspect.Parameter.KEYWORD_ONLY
    # the cipher the skip reads (the public extra info) switches together with the send keys
    newkeys = inspect.getsource(SSHConnection.send_newkeys)
    assert "self._send_encryption = next_enc_" in newkeys and "send_cipher=" in newkeys


@pytest.mark.parametrize("change, apply, attribute", [
    ("ignore", ssh_tuning.skip_empty_ignore_under_aead, "send_packet"),
    ("slices", ssh_tuning.read_in_slices, "data_received"),
    ("packet-log", ssh_tuning.quiet_packet_log, "_log_packet"),
])
def test_a_moved_asyncssh_leaves_the_connection_alone_and_says_so_once(monkeypatch, caplog, change, apply,
                                                                       attribute):
    monkeypatch.setattr(ssh_tuning, "_has", lambda method, lines: False)  # as if asyncssh's source had changed
    conns = [asyncssh.SSHClientConnection.__new__(asyncssh.SSHClientConnection) for _ in range(2)]
    with caplog.at_level(logging.WARNING, logger="console.ssh"):
        assert [apply(conn) for conn in conns] == [False, False]
    assert all(attribute not in vars(conn) for conn in conns)
    assert len(caplog.records) == 1  # once per process, not once per connection
    assert f"asyncssh {asyncssh.__version__} is not the one" in caplog.records[0].getMessage()


def test_a_source_line_that_is_not_there_is_noticed():
    assert not ssh_tuning._has(SSHConnection.send_packet, ("self.send_packet(MSG_IGNORE, String(b'x'))",))
    assert ssh_tuning._has(*ssh_tuning.COUNTERMEASURE)


@pytest.mark.parametrize("cls", [asyncssh.SSHClientConnection, asyncssh.SSHServerConnection])
def test_the_changes_are_the_connections_own_and_the_class_keeps_asyncssh_s(cls):
    conn = cls.__new__(cls)
    ssh_tuning.tune(conn)
    assert vars(conn)["send_packet"].__func__ is ssh_tuning._send_packet
    assert vars(conn)["data_received"].__func__ is ssh_tuning._data_received
    assert vars(conn)["_log_packet"].__func__ is ssh_tuning._log_packet
    assert cls.send_packet is SSHConnection.send_packet and cls.data_received is SSHConnection.data_received
    assert "_log_packet" not in vars(cls)


async def _socket_transport() -> tuple[asyncio.Transport, socket.socket]:
    """A real asyncio socket transport (one end of a socket pair) and the other end."""
    ours, theirs = socket.socketpair()
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(asyncio.Protocol, ours)
    return transport, theirs


def test_the_read_size_is_the_transport_s_own():
    async def body():
        transport, other = await _socket_transport()
        try:
            assert ssh_tuning.read_more_at_once(transport)
            assert vars(transport)["max_size"] == ssh_tuning.READ_SIZE > type(transport).max_size
        finally:
            transport.close()
            other.close()

    asyncio.run(body())


def test_not_asyncio_s_socket_transport_is_left_alone_without_a_word(caplog):
    with caplog.at_level(logging.WARNING, logger="console.ssh"):
        assert not ssh_tuning.read_more_at_once(None)  # a connection without a transport (yet)
        assert not ssh_tuning.read_more_at_once(asyncio.Transport())  # another kind (uvloop's, an SSH tunnel's)
    assert not caplog.records


def test_a_moved_asyncio_leaves_the_read_size_alone_and_says_so_once(monkeypatch, caplog):
    monkeypatch.setattr(ssh_tuning, "_has", lambda method, lines: False)

    async def body():
        pairs = [await _socket_transport() for _ in range(2)]
        try:
            assert [ssh_tuning.read_more_at_once(transport) for transport, _ in pairs] == [False, False]
            assert all("max_size" not in vars(transport) for transport, _ in pairs)
        finally:
            for transport, other in pairs:
                transport.close()
                other.close()

    with caplog.at_level(logging.WARNING, logger="console.ssh"):
        asyncio.run(body())
    assert len(caplog.records) == 1
    assert "asyncio is not the one" in caplog.records[0].getMessage()

"""Workarounds for asyncssh (pinned: 2.24.1) as the hub's SSH server, in one place.

The guessed first key-exchange packet (RFC 4253, 7: `first_kex_packet_follows`)
-----------------------------------------------------------------------------
A client may send its first key-exchange packet (e.g. KEX_ECDH_INIT) right after its KEXINIT, guessing the
algorithms. RFC 4253 says the guess is wrong, and the packet must be ignored, when the two sides' *preferred*
(first listed) key-exchange algorithms differ or their preferred host key algorithms differ.

asyncssh 2.24 (connection.py, `SSHConnection._process_kexinit`) decides it differently:

    self._ignore_first_kex = (first_kex_follows and self._kex.algorithm != peer_kex_algs[0])

i.e. the guess counts as right when the *negotiated* key exchange is the client's first choice, whatever the
server listed first, and the host key algorithms are not looked at. Dropbear's client (2022.83) sends a guess
on every connection and follows the RFC (`kexguess2@matt.ucc.asn.au` relaxes that only when the server lists it
too; asyncssh does not). Against asyncssh's default lists (mlkem768x25519-sha256 first), Dropbear judges its
curve25519-sha256 guess wrong and sends KEX_ECDH_INIT again after reading the server's KEXINIT; asyncssh has
already answered the guess, finished the exchange, and meets the second KEX_ECDH_INIT with "Key exchange not in
progress" (`_recv_packet`): the connection ends before authentication. docs/asyncssh-dropbear-kexguess.md has
the reproduction and the upstream report.

`use_rfc_kex_guess(conn)` gives one server connection RFC 4253's rule: it wraps `_process_kexinit` for that
connection only (an instance attribute shadowing the class's `_packet_handlers` table) and, once asyncssh has
read both KEXINITs, sets `_ignore_first_kex` from the first entries of the two lists as they were sent. Received
packets are held back until that handler returns (asyncssh buffers input while an async handler runs), so the
flag is set before the guessed packet is looked at. Nothing changes for a client that does not guess (OpenSSH,
asyncssh, PuTTY...). If asyncssh's internals are not what this was written against, the hub runs unpatched
and says so once in its log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncssh
from asyncssh.constants import MSG_KEXINIT
from asyncssh.packet import PacketDecodeError, SSHPacket

log = logging.getLogger("console.hub")

_warned = False
_tables: dict[type, dict] = {}  # connection class -> its packet handler table with the RFC rule


def _preferred(kexinit: bytes) -> tuple[bytes, bytes, bool] | None:
    """(first key exchange algorithm, first host key algorithm, first_kex_packet_follows) of a KEXINIT
    message as sent on the wire (message type byte included)."""
    try:
        packet = SSHPacket(kexinit)
        if packet.get_byte() != MSG_KEXINIT:
            return None
        packet.get_bytes(16)  # cookie
        kex_algs = packet.get_namelist()
        host_key_algs = packet.get_namelist()
        for _ in range(8):    # ciphers, MACs, compression (each way), languages (each way)
            packet.get_namelist()
        follows = packet.get_boolean()
    except PacketDecodeError:
        return None
    return (kex_algs[0] if kex_algs else b""), (host_key_algs[0] if host_key_algs else b""), follows


def guess_is_right(client_kexinit: bytes, server_kexinit: bytes) -> bool:
    """RFC 4253, 7: a client's guessed first key-exchange packet is right when both sides list the same
    key exchange algorithm first and the same host key algorithm first."""
    client, server = _preferred(client_kexinit), _preferred(server_kexinit)
    return client is not None and server is not None and client[:2] == server[:2]


def use_rfc_kex_guess(conn: asyncssh.SSHServerConnection) -> bool:
    """Give this server connection RFC 4253's rule for a guessed first key-exchange packet (see the module's
    notes). Call it before the connection has read anything: from SSHServer.connection_made."""
    global _warned
    handlers = getattr(type(conn), "_packet_handlers", None)
    original: Callable[..., Awaitable[None]] | None = (handlers or {}).get(MSG_KEXINIT)
    if original is None or not all(hasattr(conn, name) for name in
                                   ("_ignore_first_kex", "_client_kexinit", "_server_kexinit")):
        if not _warned:
            _warned = True
            log.warning("hub: asyncssh %s is not the one the Dropbear key exchange workaround was written for; "
                        "Dropbear clients may fail to connect", asyncssh.__version__)
        return False

    async def process_kexinit(self: asyncssh.SSHServerConnection, pkttype: int, pktid: int,
                              packet: SSHPacket) -> None:
        await original(self, pkttype, pktid, packet)
        # Both KEXINITs are known now (the client's as received, ours as sent); the guess, if any, is the
        # next packet and asyncssh has not read it yet.
        client = _preferred(self._client_kexinit)
        if client is not None and client[2]:
            self._ignore_first_kex = not guess_is_right(self._client_kexinit, self._server_kexinit)

    # The table depends only on the class (the wrapper gets the connection as `self`): one per class, shared by
    # its connections. A copy per connection cost the hub ~0.8 KiB a client for the connection's whole life.
    table = _tables.get(type(conn))
    if table is None:
        table = _tables[type(conn)] = {**handlers, MSG_KEXINIT: process_kexinit}
    conn._packet_handlers = table  # this connection only (the class's own table stays asyncssh's)
    return True

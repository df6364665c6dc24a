"""Two per-connection changes to how asyncssh sends and reads packets, measured by bench/throughput.py (issue 15).

Checked against asyncssh 2.24.1 (CHECKED_AGAINST). `tune(conn)` applies both to one connection; call it from the
connection's owner in `connection_made`: the units' client connections (console/tunnel/worker.py) and the hub's
server connections (console/hub/session.py: the hub sends the operator's bytes down to the unit and reads the
service's answers, the same costs in the other direction, and the same reasoning holds for a server). Each
change checks first that asyncssh's code is what it was written against; if not, it changes nothing and the
daemon says so once in its log (tests/unit/test_ssh_tuning.py fails loudly first).

1. The empty MSG_IGNORE before every packet, left out while the cipher in use is AEAD
--------------------------------------------------------------------------------------
`SSHConnection.send_packet` (connection.py) puts an empty SSH_MSG_IGNORE in front of every packet it sends once
keys are in use, for every cipher:

    # If we're encrypting and we have no data outstanding, insert an
    # ignore packet into the stream
    if self._send_encryption and pkttype > MSG_KEX_LAST:
        self.send_packet(MSG_IGNORE, String(b''))

It began (2013) as the countermeasure of RFC 4251 9.3.1 for CBC, and only when no data was outstanding; the
asyncio rewrite of 2014 (a384b12) dropped that condition and kept the comment. So every data packet costs two:
two paddings, two encryptions, two sequence numbers, two writes.

Why leaving it out is safe under AEAD: RFC 4251 9.3.1 is about CBC, where the IV of a packet is the last cipher
block of the one before it, which an attacker has seen, so plaintext the attacker chooses can be tested
(Rogaway, Dai); an ignore packet sent when nothing else waits makes the next IV unknown. The AEAD ciphers chain
nothing from one packet into the next: aes128-gcm@openssh.com / aes256-gcm@openssh.com (RFC 5647: a fresh
nonce per packet from an invocation counter) and chacha20-poly1305@openssh.com (keys derived from the packet's
sequence number), and every packet is authenticated whole. OpenSSH sends no such packet for any cipher. Under
CBC and CTR asyncssh's behaviour stays. bench/asyncssh-msg-ignore.md is the upstream proposal.

How: the connection gets a `send_packet` of its own (an instance attribute shadowing the class's method, as
console/hub/compat.py does for the key exchange table) that drops exactly that packet (type MSG_IGNORE, an empty
string) while the connection's send cipher (the public extra info `send_cipher`, which asyncssh switches
together with the keys in `send_newkeys`, so a re-key to another cipher is followed) is one of AEAD_CIPHERS, and
hands everything else to asyncssh's own method.

2. What asyncssh is given to read at a time: at most IN_SLICE bytes
-------------------------------------------------------------------
asyncio reads up to 256 KiB from the socket at once; `SSHConnection.data_received` appends that to a bytes
buffer (`self._inpbuf += data`) and takes each packet off its front by copying the rest
(`self._inpbuf = self._inpbuf[rem:]`, twice a packet). sshd sends 32 KiB packets on a forwarded channel
(almost always, whatever larger size we allow), so 256 KiB read at once is copied about eight times over before
it is all taken. Handed over in slices of IN_SLICE (memoryview slices, no copy of ours), the buffer stays small
and the copies few. A peer that sends larger packets (our hub: up to 256 KiB, console/relay.py's MAX_PACKET)
would turn that around (each slice appended to a packet still being gathered copies all of it again), so once
more than GATHERING is left in asyncssh's buffer after a slice, the rest of the read goes in one piece.
A byte stream may be delivered in any pieces (asyncio's Protocol contract), so asyncssh sees nothing else; the
slices stop when asyncssh has closed the connection in the middle (it drops its transport then), as the bytes
after an error are never handed on in one piece either. bench/throughput.py (variants "whole", "s32", "s128"
beside "shipped"): through sshd, whole reads cost 2-28% more CPU per MB inbound than 64 KiB slices (median 9%,
seven runs); 32 KiB slices did little (a packet and its header straddle every slice), 128 KiB about as well as
64 in the one run they had.
Through our hub (--server hub), plain slices cost 17% more than whole reads; with the rule above, the same.
"""

from __future__ import annotations

import inspect
import logging
import types

import asyncssh
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import String

log = logging.getLogger("console.ssh")

CHECKED_AGAINST = "2.24.1"
AEAD_CIPHERS = frozenset({"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"})
IN_SLICE = 64 * 1024
GATHERING = IN_SLICE * 3 // 4  # more left after a slice than packets of 32 KiB leave: a larger one is on its way

# What each change relies on in asyncssh's source: (method, lines it must contain).
# 1: the insertion goes through self.send_packet (so an instance attribute sees it) with exactly these arguments.
COUNTERMEASURE = (SSHConnection.send_packet, ("if self._send_encryption and pkttype > MSG_KEX_LAST:",
                                              "self.send_packet(MSG_IGNORE, String(b''))"))
# 2: what is received is appended to the buffer as it is (whose length says what is held); a forced close drops
#    the transport at once.
RECEIVE = (SSHConnection.data_received, ("self._inpbuf += data",))
CLOSE = (SSHConnection._force_close, ("self._transport = None",))

_EMPTY = (String(b""),)
_matches: dict[str, bool] = {}
_warned: set[str] = set()


def _has(method, lines: tuple[str, ...]) -> bool:
    try:
        source = inspect.getsource(method)
    except (OSError, TypeError):  # no source installed: nothing to check against, so change nothing
        return False
    return all(line in source for line in lines)


def internals_match(change: str) -> bool:
    """asyncssh's code is still what change "ignore" (1) or "slices" (2) was written against."""
    if change not in _matches:
        needs = {"ignore": [COUNTERMEASURE], "slices": [RECEIVE, CLOSE]}[change]
        _matches[change] = all(_has(method, lines) for method, lines in needs)
    return _matches[change]


def _unchanged(change: str, what: str) -> bool:
    if change not in _warned:
        _warned.add(change)
        log.warning("asyncssh %s is not the one %s was written for (%s): %s as asyncssh does", asyncssh.__version__,
                    f"console/core/ssh_tuning.py's '{change}'", CHECKED_AGAINST, what)
    return False


def _send_packet(self: SSHConnection, pkttype: int, *args: bytes, handler=None) -> None:
    if pkttype == MSG_IGNORE and args == _EMPTY and self.get_extra_info("send_cipher") in AEAD_CIPHERS:
        return
    type(self).send_packet(self, pkttype, *args, handler=handler)


def skip_empty_ignore_under_aead(conn: SSHConnection) -> bool:
    """Change 1 on this connection (see the module's notes); False when asyncssh has moved."""
    if not internals_match("ignore"):
        return _unchanged("ignore", "sending the empty MSG_IGNORE before every packet (slower under AEAD ciphers)")
    conn.send_packet = types.MethodType(_send_packet, conn)  # type: ignore[method-assign]
    return True


def _data_received(self: SSHConnection, data: bytes, datatype=None) -> None:
    receive = type(self).data_received
    if len(data) <= IN_SLICE:
        receive(self, data)
        return
    view = memoryview(data)
    for start in range(0, len(data), IN_SLICE):
        if len(self._inpbuf) > GATHERING:  # a packet larger than a slice is being gathered: the rest at once
            receive(self, view[start:])
            return
        receive(self, view[start:start + IN_SLICE])
        if self._transport is None:  # asyncssh closed the connection on what it read
            return


def read_in_slices(conn: SSHConnection) -> bool:
    """Change 2 on this connection (see the module's notes); False when asyncssh has moved."""
    if not internals_match("slices"):
        return _unchanged("slices", "reading what arrives in one piece (more copying)")
    conn.data_received = types.MethodType(_data_received, conn)  # type: ignore[method-assign]
    return True


def tune(conn: SSHConnection) -> None:
    """Both changes, on a connection that has not read or sent anything yet (its owner's connection_made)."""
    skip_empty_ignore_under_aead(conn)
    read_in_slices(conn)

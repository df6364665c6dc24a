"""Per-connection changes to how asyncssh sends and reads packets, measured by bench/throughput.py (issue 15).

Checked against asyncssh 2.24.1 (CHECKED_AGAINST) and asyncio of Python 3.11. `tune(conn)` applies them to one
connection; call it from the connection's owner in `connection_made`: the units' client connections
(console/tunnel/worker.py) and the hub's server connections (console/hub/session.py: the hub sends the operator's
bytes down to the unit and reads the service's answers, the same costs in the other direction, and the same
reasoning holds for a server). `tune_channel(chan)` applies change 4 to a forwarded connection's channel and
`read_more_at_once(transport)` change 3 to its local socket (console/relay.py). Each change checks first that
the code it changes is what it was written against; if not, it changes nothing and the daemon says so once in
its log (tests/unit/test_ssh_tuning.py fails loudly first).

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

3. What asyncio reads from a socket at a time: READ_SIZE (512 KiB) instead of 256 KiB
------------------------------------------------------------------------------------
asyncio's socket transport reads at most `max_size` (a class attribute, 256 KiB) per call (`self._sock.recv(
self.max_size)` in `_read_ready__data_received`). Set on the transport itself, for the connection's SSH socket
here and the forwarded connection's local socket in console/relay.py: a transfer then takes half as many trips
round the event loop (a poll, a read, the call into asyncssh or the relay, which itself costs per call:
`SSHChannel.write` copies and logs what it is given, then cuts it into packets). Nothing else changes: a read
returns what is there, up to that size, and the bytes object asyncio allocates for it is cut to what arrived.
512 KiB stays under console/core/malloc.py's mmap threshold (1 MiB); larger reads went to mmap and faulted
(1 MiB: 0-362 faults per MB, 2 MiB: 45-111). Only asyncio's own socket transport has `max_size`: another
event loop (uvloop) or an SSH connection tunnelled through another keeps its reads as they are.

4. asyncssh's per-packet debug line, not formatted while it would not be logged
--------------------------------------------------------------------------------
For every packet sent or received asyncssh builds a debug line (`SSHPacketLogger._log_packet`: the handler's
name for the type, a plural of the size, two f-strings) and only then hands it to `SSHLogger.packet`, which
drops it unless the debug level is 3 (`asyncssh.set_debug_level(3)`, "packet dumps"). The connection and each
relayed channel (data packets are logged by their channel) get a `_log_packet` of their own that returns at
once while its logger's debug level is below 3, the same test `SSHLogger.packet` makes, and is asyncssh's own
otherwise: at level 3 every line is there as before.

Measured beside "shipped" in the same rounds: bench/throughput.py (variant "before": both left out; "r256k",
"loud": one each) and paired A/B runs (32 MiB x 35 rounds, CPU from /proc/PID/task/*/schedstat; a throwaway
script, see issue 15).
Outbound, both left out cost 3-17% more CPU per MB in four runs (A/B: 8%; of it 256 KiB reads 6%, the line 4%;
two earlier A/B runs of each alone: reads 5-6%, line 3-4%). Inbound the runs scatter more than the effect
(-11% to +9%): how much a read finds waiting depends on who is ahead, sshd or us.
"""

from __future__ import annotations

import inspect
import logging
import platform
import types
from asyncio import selector_events

import asyncssh
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_IGNORE
from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacketLogger, String

log = logging.getLogger("console.ssh")

CHECKED_AGAINST = "2.24.1"
AEAD_CIPHERS = frozenset({"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"})
IN_SLICE = 64 * 1024
GATHERING = IN_SLICE * 3 // 4  # more left after a slice than packets of 32 KiB leave: a larger one is on its way
READ_SIZE = 512 * 1024

# What each change relies on in asyncssh's source: (method, lines it must contain).
# 1: the insertion goes through self.send_packet (so an instance attribute sees it) with exactly these arguments.
COUNTERMEASURE = (SSHConnection.send_packet, ("if self._send_encryption and pkttype > MSG_KEX_LAST:",
                                              "self.send_packet(MSG_IGNORE, String(b''))"))
# 2: what is received is appended to the buffer as it is (whose length says what is held); a forced close drops
#    the transport at once.
RECEIVE = (SSHConnection.data_received, ("self._inpbuf += data",))
CLOSE = (SSHConnection._force_close, ("self._transport = None",))
# 3: asyncio reads what its transport's max_size says; asyncssh keeps its transport before calling the owner.
READ = (selector_events._SelectorSocketTransport._read_ready__data_received, ("self._sock.recv(self.max_size)",))
TRANSPORT = (SSHConnection.connection_made, ("self._transport = cast(asyncio.Transport, transport)",
                                             "self._owner.connection_made(self)"))
# 4: both loggers go through self._log_packet, which hands its line to SSHLogger.packet, which drops it below 3.
LOGGED = (SSHPacketLogger.log_sent_packet, ("self._log_packet(",))
LOGGED_IN = (SSHPacketLogger.log_received_packet, ("self._log_packet(",))
DUMPED = (SSHPacketLogger._log_packet, ("self.logger.packet(",))
DROPPED = (SSHLogger.packet, ("if self._debug_level >= 3:",))

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
    """asyncssh's (and asyncio's) code is still what change "ignore" (1), "slices" (2), "reads" (3) or
    "packet-log" (4) was written against."""
    if change not in _matches:
        needs = {"ignore": [COUNTERMEASURE], "slices": [RECEIVE, CLOSE], "reads": [READ, TRANSPORT],
                 "packet-log": [LOGGED, LOGGED_IN, DUMPED, DROPPED]}[change]
        _matches[change] = all(_has(method, lines) for method, lines in needs)
    return _matches[change]


def _unchanged(change: str, what: str) -> bool:
    if change not in _warned:
        _warned.add(change)
        if change == "reads":
            log.warning("Python %s's asyncio is not the one %s was written for (3.11): %s as asyncio does",
                        platform.python_version(), f"console/core/ssh_tuning.py's '{change}'", what)
        else:
            log.warning("asyncssh %s is not the one %s was written for (%s): %s as asyncssh does",
                        asyncssh.__version__, f"console/core/ssh_tuning.py's '{change}'", CHECKED_AGAINST, what)
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


def read_more_at_once(transport) -> bool:
    """Change 3 on this transport (see the module's notes); False when it is not asyncio's socket transport or
    asyncio has moved."""
    if not isinstance(transport, selector_events._SelectorSocketTransport):
        return False  # another event loop's, or an SSH tunnel's: nothing to set
    if not internals_match("reads"):
        return _unchanged("reads", "reading 256 KiB at a time (more trips round the event loop)")
    transport.max_size = READ_SIZE
    return True


def _log_packet(self: SSHPacketLogger, *args) -> None:
    if self.logger._debug_level >= 3:  # what SSHLogger.packet asks before it logs
        type(self)._log_packet(self, *args)


def quiet_packet_log(handler: SSHPacketLogger) -> bool:
    """Change 4 on this connection or channel (see the module's notes); False when asyncssh has moved."""
    if not internals_match("packet-log"):
        return _unchanged("packet-log", "formatting a debug line for every packet")
    handler._log_packet = types.MethodType(_log_packet, handler)  # type: ignore[method-assign]
    return True


def tune(conn: SSHConnection) -> None:
    """The changes, on a connection that has not read or sent anything yet (its owner's connection_made)."""
    skip_empty_ignore_under_aead(conn)
    read_in_slices(conn)
    read_more_at_once(getattr(conn, "_transport", None))
    quiet_packet_log(conn)


def tune_channel(chan) -> None:
    """Change 4 on a relayed channel (console/relay.py; its data packets are logged by the channel)."""
    quiet_packet_log(chan)

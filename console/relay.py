"""Relay one forwarded connection between an SSH channel and a local socket, counting as it goes: shared by the
units (console/tunnel), the hub (console/hub) and the proxy rules to come, so none of them imports another.

Flow control runs both ways: a full local socket pauses the channel (so the SSH window stops growing), a
full channel pauses the local socket.

One meaning of the counters everywhere (a unit's forward, a hub client's port, the console, `status`, `clients
list`): "in" is what goes toward the appliance's service (what the operator's side sends), "out" what the service
sends back. On a unit the service is the local socket; on the hub it is at the far end of the channel
(`service_on_channel`), so the same bytes count the same way on both sides of a tunnel.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from collections.abc import Callable

import asyncssh

from console.core import ssh_tuning
from console.core.errors import os_reason

# SSH flow control for each forwarded connection, what we let the peer send us (asyncssh's defaults: a 2 MiB
# window, 32 KiB packets). Measured with bench/throughput.py (issue 15; README, "Measured"):
# - WINDOW: on loopback 2, 8 and 16 MiB measure alike; but one window is all one connection can have in
#   flight, so at 50 ms RTT 2 MiB caps it near 40 MB/s and 8 MiB near 160. The price: a connection whose
#   reader is slower than its writer holds up to a window in this process.
# - MAX_PACKET: the largest packet the peer may send us. sshd sends 32 KiB on forwarded channels whatever we
#   allow (a few larger), so against sshd 32 KiB and 256 KiB measure alike (within the noise: ahead in one
#   run, behind in two); our hub and units send what they read at once (up to 256 KiB), and through our hub
#   (bench/throughput.py --server hub) 256 KiB packets cost the receiving unit 7-19% less CPU per MB than
#   32 KiB in three runs.
#   The profile that found 256 KiB packets slower inbound was glibc handing every such buffer back
#   to the kernel (44% of the time in page faults): the daemon now keeps them (console/core/malloc.py).
WINDOW = 8 * 1024 * 1024
MAX_PACKET = 256 * 1024


@dataclass
class ForwardStats:
    open: int = 0
    total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def snapshot(self) -> tuple[int, int, int, int]:
        return (self.open, self.total, self.bytes_in, self.bytes_out)


class _LocalSide(asyncio.Protocol):
    def __init__(self, relay: RelaySession) -> None:
        self.relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.relay.local = transport  # type: ignore[assignment]
        ssh_tuning.read_more_at_once(transport)  # 512 KiB a read: see console/core/ssh_tuning.py

    def data_received(self, data: bytes) -> None:
        if self.relay.service_on_channel:
            self.relay.stats.bytes_in += len(data)
        else:
            self.relay.stats.bytes_out += len(data)
        self.relay.to_channel(data)

    def eof_received(self) -> bool:
        self.relay.local_eof()
        return True  # keep the half-open socket: the other way may still be sending

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.local_closed()

    def pause_writing(self) -> None:
        if self.relay.chan is not None:
            self.relay.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.relay.chan is not None:
            self.relay.chan.resume_reading()


class RelaySession(asyncssh.SSHTCPSession):
    def __init__(self, stats: ForwardStats, on_change: Callable[[], None], *,
                 service_on_channel: bool = False) -> None:
        self.stats = stats
        self.service_on_channel = service_on_channel  # the hub: the appliance's service is behind the channel
        self._on_change = on_change
        self.chan: asyncssh.SSHTCPChannel | None = None
        self.local: asyncio.Transport | None = None
        self._pending: list[bytes] = []
        self._local_eof = False
        self._chan_eof = False
        self._local_gone = False
        self._closed = False

    # channel side
    def connection_made(self, chan: asyncssh.SSHTCPChannel) -> None:
        self.chan = chan
        ssh_tuning.tune_channel(chan)  # its per-packet debug line: see console/core/ssh_tuning.py
        chan.set_write_buffer_limits(high=WINDOW // 2)
        self.stats.open += 1
        self.stats.total += 1
        self._on_change()
        for data in self._pending:  # what the local service said before the channel was open
            chan.write(data)
        self._pending.clear()
        if self._local_eof:
            chan.write_eof()
        if self._local_gone:
            chan.close()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.service_on_channel:
            self.stats.bytes_out += len(data)
        else:
            self.stats.bytes_in += len(data)
        if self.local is not None:
            self.local.write(data)

    def eof_received(self) -> bool:
        self._chan_eof = True
        if self.local is not None and self.local.can_write_eof():
            self.local.write_eof()
        self._close_if_done()
        return True

    def _close_if_done(self) -> None:
        """Both ways have ended: neither asyncio nor asyncssh closes a twice half-closed pair by itself."""
        if self._chan_eof and self._local_eof:
            if self.local is not None:
                self.local.close()
            if self.chan is not None:
                self.chan.close()

    def pause_writing(self) -> None:
        if self.local is not None:
            self.local.pause_reading()

    def resume_writing(self) -> None:
        if self.local is not None:
            self.local.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.chan is not None and not self._closed:
            self._closed = True
            self.stats.open -= 1
            self._on_change()
        if self.local is not None:
            self.local.close()

    # local side
    def to_channel(self, data: bytes) -> None:
        if self.chan is None:  # the local service spoke before the channel finished opening
            self._pending.append(data)
        else:
            self.chan.write(data)

    def local_eof(self) -> None:
        self._local_eof = True
        if self.chan is not None:
            self.chan.write_eof()
            self._close_if_done()

    def local_closed(self) -> None:
        self._local_gone = True
        if self.chan is not None:
            self.chan.close()


def session_factory(host: str, port: int, stats: ForwardStats, on_change: Callable[[], None],
                    on_refused: Callable[[str], None]):
    """asyncssh calls this for each connection arriving on the server's port."""

    async def factory(orig_host: str, orig_port: int) -> RelaySession:
        relay = RelaySession(stats, on_change)
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _LocalSide(relay), host, port)
        except OSError as exc:
            reason = f"local service {host}:{port} refused a connection from {orig_host}:{orig_port}: " \
                     f"{os_reason(exc)}"
            on_refused(reason)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, reason) from None
        return relay

    return factory


class AcceptedSide(_LocalSide):
    """The local side when the connection arrives first and the channel is opened for it (the hub's client
    ports): reading waits until the channel is open, so nothing piles up in between."""

    def __init__(self, relay: RelaySession, open_channel) -> None:
        super().__init__(relay)
        self._open_channel = open_channel
        self._task: asyncio.Task | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        transport.pause_reading()  # type: ignore[attr-defined]
        self._task = asyncio.ensure_future(self._open(transport))

    async def _open(self, transport) -> None:
        try:
            await self._open_channel(self.relay, transport.get_extra_info("peername") or ("", 0))
        except (asyncssh.Error, asyncssh.ChannelOpenError, OSError):
            transport.close()
            return
        if not transport.is_closing():
            transport.resume_reading()


# ---------------------------------------------------------------------------------------------- socket to socket


class SpliceSide(asyncio.Protocol):
    """One socket of a connection relayed between two sockets (a proxy rule via local): what it reads goes to the
    other side as it comes, counted toward the destination (the client's side) or back; a full side pauses the
    other's reading; a half-close is passed on; when one side is gone, the other is closed once flushed."""

    def __init__(self, splice: Splice, toward: bool) -> None:
        self.splice = splice
        self.toward = toward              # what this side reads goes toward the destination
        self.transport: asyncio.Transport | None = None
        self.peer: SpliceSide | None = None
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=SPLICE_BUFFER)  # type: ignore[attr-defined]
        self.splice.made(self)

    def data_received(self, data: bytes) -> None:
        stats = self.splice.stats
        if self.toward:
            stats.bytes_in += len(data)
        else:
            stats.bytes_out += len(data)
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer.transport
        if peer is not None and not peer.is_closing() and peer.can_write_eof():
            peer.write_eof()
        if self.peer.eof:
            self.transport.close()
            if peer is not None:
                peer.close()
        return True  # keep the half-open socket: the other way may still be sending

    def connection_lost(self, exc: Exception | None) -> None:
        self.splice.lost()

    def pause_writing(self) -> None:
        if self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer.transport is not None and not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()


SPLICE_BUFFER = 1 << 20   # bytes a side may hold unsent before the other side's reading pauses


class Splice:
    """A connection accepted on a listener (`client`, whose protocol the listener's factory returns) and the one
    it opens to a destination (`upstream`, the protocol for loop.create_connection). The client's reading waits
    (paused) until `link`. Set `stats` to the destination's counters before connecting to it (a destination may
    speak first); `link` counts the pair open and in total."""

    def __init__(self, accepted: Callable[[Splice], None], on_change: Callable[[], None] = lambda: None) -> None:
        self.stats = ForwardStats()
        self.client = SpliceSide(self, toward=True)
        self.upstream = SpliceSide(self, toward=False)
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self._accepted = accepted
        self._on_change = on_change
        self._linked = False
        self._gone = False

    def made(self, side: SpliceSide) -> None:
        if side is self.client:
            side.transport.pause_reading()
            self._accepted(self)

    def link(self) -> bool:
        """The upstream is connected: start relaying; False when the client went away meanwhile (the upstream is
        closed then)."""
        client = self.client.transport
        if self._gone or client is None or client.is_closing():
            if self.upstream.transport is not None:
                self.upstream.transport.close()
            return False
        self.stats.open += 1
        self.stats.total += 1
        self._linked = True
        self._on_change()
        client.resume_reading()
        return True

    def lost(self) -> None:
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.transport.is_closing():
                side.transport.close()
        if not self._gone:
            self._gone = True
            if self._linked:
                self.stats.open -= 1
                self._on_change()


async def pipe_streams(reader, writer, count: Callable[[int], None], chunk: int = 1 << 16) -> None:
    """Copy a stream to another until its end, counting each piece, then pass the end on (write_eof). The streams
    are asyncio's or asyncssh's (SSHReader/SSHWriter): a connection carried over a unit's SSH connection."""
    while True:
        data = await reader.read(chunk)
        if not data:
            break
        count(len(data))
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()

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

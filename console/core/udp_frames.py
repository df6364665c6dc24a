"""UDP over SSH. SSH carries byte streams only, so each datagram travels as one frame on an SSH channel, one
channel per flow (a flow: the datagrams between one source address and one destination):

    frame = length (2 bytes, big-endian) + payload (0-65507 bytes, the largest UDP payload over IPv4)

Egress (a unit's local UDP port -> the hub -> a destination in the hub's network): for each new source address the
unit opens a session channel with the subsystem UDP_SUBSYSTEM; its first frame is the destination, ASCII JSON
`{"v": 1, "dest": "10.0.6.9:53"}`, and it may send datagrams right after it. The hub answers with a first frame
ACCEPTED, `{"v": 1, "ok": true}`, once the flow's socket is open (then datagrams both ways), or refuses with one
line on the channel's stderr and exit status 1, so the unit shows the hub's own words.

Ingress (a UDP port on the hub -> the unit -> a destination on the unit's network): the unit asks for a remote
forward of its port P with the listen host UDP_LISTEN_HOST (a `tcpip-forward`: the hub applies the same quota and
port policy as to TCP, and asyncssh's public API serves both ends); the hub listens UDP on P and opens one
`forwarded-tcpip` channel per flow, with the datagram's source as the channel's originator address. No header.

Chisel (share/tunnel/udp.go, tunnel_in_proxy_udp.go) carries every flow of a listener on one channel, each packet
gob-encoded with its source address, and keeps at most 100 sockets at the exit with a 15 s read deadline. Ours is
simpler on the wire (a bare length; the source is in the channel's open request) and one channel per flow gives
each flow its own SSH window, so a flow whose far side is slow cannot hold up the others.

Both ends keep a flow until it has been idle for `idle_timeout` (60 s, the proxy seed's figure); whichever end
closes the channel first ends the flow at the other. Everything a peer sends is bounded: a frame by its 2-byte
length (over MAX_PAYLOAD ends the flow), the header by MAX_HEADER, datagrams held while a channel or socket opens
by MAX_QUEUED / MAX_QUEUED_BYTES, a channel's unsent data by CHANNEL_HIGH_WATER (past it datagrams are dropped, as
a full network would), flows by the owner's max_flows.

Counters: "in" is what goes toward the destination, "out" what comes back (the meaning `console/relay.py` gives
bytes of TCP forwards), per flow and summed per listener.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

import asyncssh

from console.core.config import join_host_port

UDP_SUBSYSTEM = "sop-udp@sop-console"          # egress: the session channel of one flow
UDP_LISTEN_HOST = "sop-udp-listen@sop-console"  # ingress: the listen host of a remote forward that is UDP
MAX_PAYLOAD = 65507
ACCEPTED = b'{"v":1,"ok":true}'  # the hub's first frame on an egress flow it carries
MAX_HEADER = 1024
IDLE_TIMEOUT = 60.0
MAX_FLOWS = 1024                 # flows one listener (or rule) keeps at once
MAX_QUEUED = 256                 # datagrams held for a flow while its channel (or its socket) opens...
MAX_QUEUED_BYTES = 256 * 1024    # ...and their bytes
CHANNEL_HIGH_WATER = 256 * 1024  # unsent bytes on a flow's channel past which its datagrams are dropped
READ_BATCH = 64                  # datagrams read from a socket per wake-up of the loop
# The receive and send buffers asked for each UDP socket (the kernel gives at most net.core.rmem_max / wmem_max): a
# burst while the loop is busy (or the machine is) waits there instead of being lost; 1 MiB lost 0.5-17% of a
# 20,000/s round trip on a loaded machine where 4 MiB lost none (bench/udp_hub.py). On loopback a datagram stays
# charged to its sender's buffer until it is read, hence both. The kernel takes memory only for datagrams that
# wait, within its own bound for all UDP (net.ipv4.udp_mem).
SOCKET_BUFFER = 4 * 1024 * 1024
REFUSED_HOLD = 5.0               # a flow that could not open drops its source's datagrams this long, then retries
MAX_REASON = 300                 # characters of a peer's refusal that are kept and shown
WINDOW = 1024 * 1024             # SSH window of a flow's channel
_LENGTH = struct.Struct(">H")
_DEST = re.compile(r"^(?:\[[0-9A-Fa-f:.%]+\]|[A-Za-z0-9_.-]{1,253}):\d{1,5}$")


# ---------------------------------------------------------------------------------------------------- the wire

def frame(payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"datagram of {len(payload)} bytes: at most {MAX_PAYLOAD}")
    return _LENGTH.pack(len(payload)) + payload


class Deframer:
    """Bytes off a channel in, whole payloads out. Holds at most one incomplete frame (2 + 65507 bytes)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        if self._buffer:
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        payloads = []
        start, size = 0, len(data)
        while size - start >= 2:
            length = data[start] << 8 | data[start + 1]
            if length > MAX_PAYLOAD:
                raise ValueError(f"a frame of {length} bytes (at most {MAX_PAYLOAD})")
            end = start + 2 + length
            if end > size:
                break
            payloads.append(data[start + 2:end])
            start = end
        if start < size:
            self._buffer += memoryview(data)[start:]
        return payloads


def encode_dest(host: str, port: int) -> bytes:
    return json.dumps({"v": 1, "dest": join_host_port(host, port)}, separators=(",", ":")).encode("ascii")


def parse_dest(payload: bytes) -> tuple[str, int]:
    """(host, port) from an egress flow's first frame; ValueError with the reason the peer is told."""
    if len(payload) > MAX_HEADER:
        raise ValueError(f"the first frame must be the destination, at most {MAX_HEADER} bytes")
    try:
        doc = json.loads(payload.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError('the first frame must be the destination as JSON {"v": 1, "dest": "host:port"}') from None
    dest = doc.get("dest") if isinstance(doc, dict) and doc.get("v") == 1 else None
    if not isinstance(dest, str) or not _DEST.match(dest):
        raise ValueError('the first frame must be {"v": 1, "dest": "host:port"} with a host name or address')
    host, _, port_text = dest.rpartition(":")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"destination port must be 1-65535, got {port}")
    return host.strip("[]"), port


def shown(address: tuple) -> str:
    return join_host_port(str(address[0]), int(address[1]))


def clean(text: str) -> str:
    """A peer's words, fit for one log line: printable, one line, at most MAX_REASON characters."""
    text = "".join(c if c.isprintable() else "?" for c in text.strip().replace("\n", " "))
    return text[:MAX_REASON] + ("…" if len(text) > MAX_REASON else "")


def check_answer(flow: Flow, payload: bytes) -> None:
    """The hub's first frame on an egress flow: ACCEPTED, or the flow fails."""
    if payload != ACCEPTED:
        flow.fail(f"the hub answered {clean(payload[:80].decode('ascii', 'replace'))!r}, not {ACCEPTED.decode()}")


def needs_hub(unit: str, server: str, software: str | None) -> str:
    """Why a UDP rule cannot go through a unit whose server (SSH version string `software`) is not our hub."""
    said = clean(software or "an unknown SSH server")
    return (f"UDP rules need a SOP Console hub at the far end: unit {unit}'s server {server} is {said}, which "
            f"carries TCP only")


# ---------------------------------------------------------------------------------------------------- counters

@dataclass
class ListenerStats:
    """A listener's (or a rule's) flows: the four of console.relay.ForwardStats (open and total are flows), with
    datagrams and drops besides."""

    open: int = 0
    total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    datagrams_in: int = 0
    datagrams_out: int = 0
    dropped: int = 0       # datagrams not carried: a full channel, a flow that could not open, too many flows
    refused: int = 0       # flows that could not open

    def snapshot(self) -> tuple[int, int, int, int]:
        return (self.open, self.total, self.bytes_in, self.bytes_out)


@dataclass(frozen=True)
class FlowStatus:
    """One flow as the operator sees it: `source` -> `destination`, its counters, seconds since its last datagram,
    and why it ended or could not open (`error`) when it did."""

    source: str
    destination: str
    datagrams_in: int
    datagrams_out: int
    bytes_in: int
    bytes_out: int
    dropped: int
    idle: float
    error: str | None = None


# ---------------------------------------------------------------------------------------------------- one flow

@dataclass
class _Counts:
    datagrams_in: int = 0
    datagrams_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped: int = 0
    last: float = field(default_factory=time.monotonic)


class Flow:
    """One flow on one channel. Its UDP side is `send_udp` (set once the socket is ready); its channel side is a
    FlowSession. `source_on_udp`: the datagrams arriving on the UDP side go toward the destination (they count
    "in"); else those arriving on the channel do. `header` is written first on the channel (egress, the unit);
    `on_header` takes the first frame read off it (egress, the hub)."""

    def __init__(self, source: str, destination: str, stats: ListenerStats, *, idle_timeout: float,
                 source_on_udp: bool, on_end: Callable[[Flow], None] = lambda flow: None,
                 on_fail: Callable[[Flow, str], None] = lambda flow, reason: None,
                 header: bytes | None = None, on_header: Callable[[Flow, bytes], None] | None = None) -> None:
        self.source, self.destination = source, destination
        self.stats = stats
        self.idle_timeout = idle_timeout
        self.source_on_udp = source_on_udp
        self.on_end = on_end
        self.on_fail = on_fail
        self.header = header
        self.on_header = on_header
        self.counts = _Counts()
        self.chan: asyncssh.SSHChannel | None = None
        self.send_udp: Callable[[bytes], bool] | None = None   # False: dropped (the socket's buffer is full)
        self.udp: UdpSocket | None = None                      # a socket of the flow's own, closed with it
        self.error: str | None = None                          # why it ended, or could not open
        self.closed = False
        self._to_chan: list[bytes] = []
        self._to_udp: list[bytes] = []
        self._out: list[bytes] = []     # frames waiting for this turn's write
        self._queued = 0
        self._paused = False
        self._deframer = Deframer()
        self._stderr = bytearray()
        self._open = True    # counted in stats.open
        stats.open += 1
        stats.total += 1
        self._timer = asyncio.get_running_loop().call_later(idle_timeout, self._idle)

    # -- the UDP side
    def from_udp(self, payload: bytes) -> None:
        """A datagram from the UDP side: framed onto the channel (held while it opens, dropped when full)."""
        if self.chan is None or self._paused or self.closed or self.error is not None or len(payload) > MAX_PAYLOAD:
            if self.chan is None and not self.closed and self.error is None:
                self._hold(self._to_chan, payload)
            else:
                self._drop()
            return
        # The frames of one turn of the event loop go out in one write, so one SSH packet carries many datagrams
        # (asyncssh's cost is per packet: a write per datagram topped out near 9,000 a second here). Counted
        # then too, once per write: this is the path every datagram takes.
        out = self._out
        if not out:
            asyncio.get_running_loop().call_soon(self._flush)
        out.append(_LENGTH.pack(len(payload)))
        out.append(payload)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and self.chan is not None and not self.closed:
            self._counted(len(out) // 2, sum(map(len, out)) - len(out), toward_dest=self.source_on_udp)
            self.chan.write(b"".join(out))

    def udp_ready(self, send: Callable[[bytes], bool], transport: UdpSocket | None = None) -> None:
        """The UDP side can send now: what the channel brought meanwhile goes out."""
        if self.closed:
            if transport is not None:
                transport.close()
            return
        self.send_udp, self.udp = send, transport
        held, self._to_udp = self._to_udp, []
        self._queued = 0
        self._to_udp_side(held)

    def _to_udp_side(self, payloads: list[bytes]) -> None:
        send = self.send_udp
        if send is None:
            for payload in payloads:
                self._hold(self._to_udp, payload)
            return
        sent = size = 0
        for payload in payloads:
            if send(payload):
                sent += 1
                size += len(payload)
        if sent:
            self._counted(sent, size, toward_dest=not self.source_on_udp)
        if sent < len(payloads):
            self.counts.dropped += len(payloads) - sent
            self.stats.dropped += len(payloads) - sent

    # -- the channel side (FlowSession calls these)
    def channel_open(self, chan: asyncssh.SSHChannel) -> None:
        self.chan = chan
        chan.set_write_buffer_limits(high=CHANNEL_HIGH_WATER)
        if self.closed:
            chan.close()
            return
        if self.header is not None:
            chan.write(frame(self.header))
        held, self._to_chan = self._to_chan, []
        self._queued = 0
        for payload in held:
            self.from_udp(payload)

    def from_channel(self, data: bytes, datatype: int | None) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:  # the far end says why it refuses
            self._stderr += data[:MAX_REASON + 1 - len(self._stderr)]
            return
        try:
            payloads = self._deframer.feed(data)
        except ValueError as exc:
            self.close(f"the far end sent {exc}")
            return
        if payloads and self.on_header is not None:
            on_header, self.on_header = self.on_header, None
            on_header(self, payloads.pop(0))
        if payloads:
            self._to_udp_side(payloads)

    def set_paused(self, paused: bool) -> None:
        self._paused = paused

    def channel_lost(self, exc: Exception | None) -> None:
        said = self._stderr.decode("utf-8", "replace")
        if said.strip():  # the far end refused the flow and said why
            self.fail(clean(said))
        else:
            self.close(f"channel lost: {exc}" if exc else None)

    # -- life
    def fail(self, reason: str) -> None:
        """The flow could not open: its source's datagrams are dropped for REFUSED_HOLD seconds, then it goes
        (and the next datagram tries again)."""
        if self.closed or self.error is not None:
            return
        self.error = reason
        self.stats.refused += 1
        self._uncount()
        self.on_fail(self, reason)
        self._to_chan.clear()
        self._to_udp.clear()
        self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(REFUSED_HOLD, self.close)

    def close(self, reason: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        if reason and self.error is None:
            self.error = reason
        self._timer.cancel()
        self._uncount()
        self._to_chan.clear()
        self._to_udp.clear()
        if self.chan is not None:
            self.chan.close()
        if self.udp is not None:
            self.udp.close()
        self.on_end(self)

    def _uncount(self) -> None:
        if self._open:
            self._open = False
            self.stats.open -= 1

    def _idle(self) -> None:
        idle = time.monotonic() - self.counts.last
        if idle >= self.idle_timeout:
            self.close(f"idle for {self.idle_timeout:g}s")
        else:
            self._timer = asyncio.get_running_loop().call_later(self.idle_timeout - idle, self._idle)

    def _hold(self, queue: list[bytes], payload: bytes) -> None:
        if len(queue) >= MAX_QUEUED or self._queued + len(payload) > MAX_QUEUED_BYTES:
            self._drop()
            return
        self._queued += len(payload)
        queue.append(payload)
        self.counts.last = time.monotonic()

    def _counted(self, datagrams: int, size: int, *, toward_dest: bool) -> None:
        counts, stats = self.counts, self.stats
        counts.last = time.monotonic()
        if toward_dest:
            counts.datagrams_in += datagrams
            counts.bytes_in += size
            stats.datagrams_in += datagrams
            stats.bytes_in += size
        else:
            counts.datagrams_out += datagrams
            counts.bytes_out += size
            stats.datagrams_out += datagrams
            stats.bytes_out += size

    def _drop(self) -> None:
        self.counts.dropped += 1
        self.stats.dropped += 1

    def status(self) -> FlowStatus:
        c = self.counts
        return FlowStatus(self.source, self.destination, c.datagrams_in, c.datagrams_out, c.bytes_in, c.bytes_out,
                          c.dropped, round(time.monotonic() - c.last, 1), self.error)


class FlowSession(asyncssh.SSHTCPSession, asyncssh.SSHClientSession):
    """A flow's channel as asyncssh sees it: a forwarded-tcpip channel (ingress) or a session channel (egress,
    the unit's end)."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow

    def connection_made(self, chan) -> None:
        self.flow.channel_open(chan)

    def data_received(self, data: bytes, datatype) -> None:
        self.flow.from_channel(data, datatype)

    def eof_received(self) -> bool:
        self.flow.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.flow.channel_lost(exc)

    def pause_writing(self) -> None:
        self.flow.set_paused(True)

    def resume_writing(self) -> None:
        self.flow.set_paused(False)


# ---------------------------------------------------------------------------------------------------- UDP sockets

class UdpSocket:
    """A non-blocking UDP socket read in batches: asyncio's datagram transport reads one datagram per wake-up of
    the loop, this reads up to `batch` (READ_BATCH), so a burst costs one wake-up and (Flow._flush) one SSH
    packet. Its buffers are SOCKET_BUFFER. What cannot be sent at once is dropped, as a full network drops it.

    `on_error`: a read failed (an ICMP error on a connected socket: port unreachable); `on_send_error`: a send on
    a connected socket failed for another reason than a full buffer (the same ICMP error, seen on the send)."""

    def __init__(self, sock: socket.socket, on_datagram: Callable[[bytes, tuple], None],
                 on_error: Callable[[OSError], None] = lambda exc: None,
                 on_send_error: Callable[[OSError], None] | None = None, batch: int = READ_BATCH) -> None:
        self.sock = sock
        self.on_datagram = on_datagram
        self.on_error = on_error
        self.on_send_error = on_send_error
        self.batch = batch
        self.closed = False
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _readable(self) -> None:
        recvfrom, on_datagram = self.sock.recvfrom, self.on_datagram
        for _ in range(self.batch):
            try:
                data, addr = recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP port unreachable on a connected socket: that datagram is lost
                if self.closed:
                    return
                self.on_error(exc)
                continue
            on_datagram(data, addr)

    def send(self, payload: bytes, addr: tuple | None = None) -> bool:
        """False when the datagram could not go (the socket's buffer is full, or an error): it is dropped."""
        try:
            if addr is None:
                self.sock.send(payload)
            else:
                self.sock.sendto(payload, addr)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if addr is None and self.on_send_error is not None and not self.closed:
                self.on_send_error(exc)
            return False
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()


async def _address(host: str, port: int, *, passive: bool = False) -> tuple[int, tuple]:
    """(family, sockaddr) of host:port for UDP: an address as it is, a name the first the resolver gives (OSError
    when none)."""
    if host and not passive:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return (socket.AF_INET6 if address.version == 6 else socket.AF_INET), (host, port)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                                         flags=socket.AI_PASSIVE if passive else 0)
    if not infos:
        raise OSError(f"no address for {host}")
    return infos[0][0], infos[0][4]


async def connected_socket(host: str, port: int, on_datagram: Callable[[bytes, tuple], None], *,
                           on_error: Callable[[OSError], None] = lambda exc: None,
                           on_send_error: Callable[[OSError], None] | None = None,
                           batch: int = READ_BATCH) -> UdpSocket:
    """A UDP socket of its own connected to host:port, a name resolved first (OSError when it cannot have one);
    the callbacks are UdpSocket's."""
    family, address = await _address(host, port)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect(address)
        return UdpSocket(sock, on_datagram, on_error, on_send_error, batch)
    except OSError:
        sock.close()
        raise


async def connect_udp(flow: Flow, host: str, port: int, *, answer: bytes | None = None) -> None:
    """Give the flow a socket of its own connected to host:port (OSError when it cannot have one). `answer`: a
    first frame for the channel, written once the socket is ready and before any datagram (the hub's ACCEPTED)."""
    udp = await connected_socket(host, port, lambda data, addr: flow.from_udp(data), on_error=lambda exc: flow._drop())
    if answer is not None and flow.chan is not None and not flow.closed:
        flow.chan.write(frame(answer))
    flow.udp_ready(udp.send, udp)


class FlowSet:
    """A bounded set of flows with their summed counters: a listener's or a rule's."""

    def __init__(self, *, idle_timeout: float = IDLE_TIMEOUT, max_flows: int = MAX_FLOWS) -> None:
        self.idle_timeout = idle_timeout
        self.max_flows = max_flows
        self.stats = ListenerStats()
        self.flows: dict[Hashable, Flow] = {}

    @property
    def full(self) -> bool:
        return len(self.flows) >= self.max_flows

    def add(self, key: Hashable, flow: Flow) -> Flow:
        self.flows[key] = flow
        flow.on_end = lambda ended, key=key: self._ended(key, ended)
        return flow

    def _ended(self, key: Hashable, flow: Flow) -> None:
        if self.flows.get(key) is flow:
            del self.flows[key]

    def status(self) -> list[FlowStatus]:
        return [flow.status() for flow in self.flows.values()]

    def close(self, reason: str = "closed") -> None:
        for flow in list(self.flows.values()):
            flow.close(reason)


class FlowListener:
    """A bound UDP socket whose datagrams are kept apart by source address, each source a flow on a channel of its
    own. `open_channel(flow, source)` opens that channel (FlowSession(flow) as its session); when it raises, the
    flow fails (its source's datagrams are dropped for REFUSED_HOLD seconds) and `on_refused` hears why."""

    def __init__(self, destination: str, open_channel: Callable[[Flow, tuple], Awaitable[None]], *,
                 idle_timeout: float = IDLE_TIMEOUT, max_flows: int = MAX_FLOWS,
                 on_refused: Callable[[str], None] = lambda line: None, header: bytes | None = None,
                 on_header: Callable[[Flow, bytes], None] | None = None) -> None:
        self.destination = destination
        self.open_channel = open_channel
        self.flows = FlowSet(idle_timeout=idle_timeout, max_flows=max_flows)
        self.on_refused = on_refused
        self.header = header
        self.on_header = on_header
        self.udp: UdpSocket | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def stats(self) -> ListenerStats:
        return self.flows.stats

    def get_port(self) -> int:
        assert self.udp is not None
        return self.udp.port

    async def start(self, host: str, port: int) -> FlowListener:
        """Listen on host:port (OSError when it cannot), with buffers for bursts (SOCKET_BUFFER)."""
        family, address = await _address(host, port, passive=True)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(address)
            self.udp = UdpSocket(sock, self.datagram_received)
        except OSError:
            sock.close()
            raise
        return self

    def datagram_received(self, data: bytes, addr) -> None:
        flow = self.flows.flows.get(addr)
        if flow is None:
            if self.flows.full:
                self.stats.dropped += 1
                self.on_refused(f"a new flow from {shown(addr)} to {self.destination}: "
                                f"{self.flows.max_flows} flows are open (the most a listener keeps)")
                return
            flow = self.flows.add(addr, Flow(shown(addr), self.destination, self.stats,
                                             idle_timeout=self.flows.idle_timeout, source_on_udp=True,
                                             header=self.header, on_header=self.on_header,
                                             on_fail=self._failed))
            flow.udp_ready(lambda payload, addr=addr: self.udp is not None and self.udp.send(payload, addr))
            task = asyncio.ensure_future(self._open(flow, addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        flow.from_udp(data)

    async def _open(self, flow: Flow, addr) -> None:
        try:
            await self.open_channel(flow, addr)
        except Exception as exc:  # noqa: BLE001 - any failure to open is the flow's, said in words by the opener
            flow.fail(str(exc) or type(exc).__name__)

    def _failed(self, flow: Flow, reason: str) -> None:
        self.on_refused(f"a flow from {flow.source} to {self.destination}: {reason}")

    def close(self, reason: str = "listener closed") -> None:
        for task in list(self._tasks):
            task.cancel()
        self.flows.close(reason)
        if self.udp is not None:
            self.udp.close()

    async def wait_closed(self) -> None:
        await asyncio.sleep(0)

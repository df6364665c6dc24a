"""One forward's relay for the OpenSSH transport (issue 15): `ssh -S CTL -O forward -R BIND:PORT:PATH` makes ssh
carry the server's port to a Unix socket at PATH; this listens there and relays each connection ssh makes to the
forward's local service (TCP host:port), counting as console/relay.py counts: `bytes_in` what ssh's side sends
toward the service, `bytes_out` what comes back; `open`/`total` once the service has accepted.

The point of the OpenSSH transport is CPU per megabyte, so no asyncio transports or bytes objects here: each
direction is driven by the event loop on the raw sockets (add_reader on the source, add_writer on the destination
while it is full) and moves its bytes either with os.splice through a pipe of its own (zero copy: they never
enter this process) or with recv_into/send through one scratch buffer (see MODES for which way does which, as
measured). The source is read only when nothing is held, so a slow reader stops the writer through the kernel's
own buffers: this process holds at most a pipe (PIPE_SIZE) or a read (SCRATCH) per direction. Bytes are counted
as they are passed on to the destination (what was delivered), exact once a way has ended.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

from console import relay
from console.core.config import join_host_port
from console.core.errors import os_reason

PIPE_SIZE = 1 << 20                # asked of each direction's pipe (F_SETPIPE_SZ); the kernel may give less
CONNECT_TIMEOUT = 10.0             # seconds to reach the local service
REFUSED_EVERY = 60.0               # "too many connections" said at most this often
ACCEPT_PAUSE = 0.5                 # seconds without accepting after accept failed (out of file descriptors)
BACKLOG = 1024
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
SCRATCH = 1 << 18                  # the copying ways' read size (one buffer per proxy)
_ROUNDS = 8                        # reads per wake-up while data keeps coming (fewer trips through epoll)


class ForwardProxy:
    """One forward's relay for the OpenSSH transport: listens on a Unix socket (what ssh -R forwards to), relays
    each connection to the local service, counting."""

    def __init__(self, path: Path, local_host: str, local_port: int, stats: relay.ForwardStats, *,
                 on_change: Callable[[], None] = lambda: None, on_refused: Callable[[str], None] = lambda r: None,
                 max_connections: int = 4096, mode: str | None = None) -> None:
        self.path = Path(path)
        self.local_host, self.local_port = local_host, local_port
        self.stats = stats
        self.on_change, self.on_refused = on_change, on_refused
        self.max_connections = max_connections
        self.mode = mode or DEFAULT_MODE   # how bytes are moved: see MODES
        if self.mode not in MODES or (self.mode != "copy" and not hasattr(os, "splice")):
            raise ValueError(f"no relay mode {self.mode!r} here")
        self.scratch = memoryview(bytearray(SCRATCH)) if self.mode != "splice" else memoryview(b"")
        self._listener: socket.socket | None = None
        self._inode: tuple[int, int] | None = None
        self._dialing: set[asyncio.Task] = set()
        self._conns: set[_Connection] = set()
        self._crowded_said = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resume: asyncio.TimerHandle | None = None

    @property
    def listening(self) -> bool:
        return self._listener is not None

    @property
    def service(self) -> str:
        return join_host_port(self.local_host, self.local_port)

    async def start(self) -> None:
        """Listen at `path`: a stale socket there is removed first (anything else is left alone: FileExistsError);
        the socket file is 0600 from the start (the socket's mode is set before bind, Linux takes it)."""
        if self._listener is not None:
            return
        try:
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise FileExistsError(errno.EEXIST, "exists and is not a socket", str(self.path))
            self.path.unlink()
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            os.fchmod(sock.fileno(), 0o600)
            sock.bind(str(self.path))
            os.chmod(self.path, 0o600)  # where the platform ignores the socket's own mode
            sock.listen(BACKLOG)
            info = os.stat(self.path)
        except BaseException:
            sock.close()
            raise
        self._listener, self._inode = sock, (info.st_dev, info.st_ino)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop listening and remove the socket file (if it is still ours); connections in flight go on."""
        sock, self._listener = self._listener, None
        if sock is None:
            return
        if self._resume is not None:
            self._resume.cancel()
        self._loop.remove_reader(sock.fileno())
        sock.close()
        try:
            info = os.lstat(self.path)
            if (info.st_dev, info.st_ino) == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass

    async def aclose(self) -> None:
        """close() and end every connection in flight, those still reaching the local service too."""
        self.close()
        for task in list(self._dialing):
            task.cancel()
        if self._dialing:
            await asyncio.gather(*self._dialing, return_exceptions=True)
        for conn in list(self._conns):
            conn.end()

    # --------------------------------------------------------------------------------------------- accepting

    def _accept(self) -> None:
        for _ in range(64):
            if self._listener is None:
                return
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: say so, try again a little later (not in a busy loop)
                self._crowded(f"cannot accept a connection for local service {self.service}: {os_reason(exc)}")
                self._loop.remove_reader(self._listener.fileno())
                self._resume = self._loop.call_later(ACCEPT_PAUSE, self._accept_again)
                return
            if len(self._conns) + len(self._dialing) >= self.max_connections:
                sock.close()
                self._crowded(f"local service {self.service}: {self.max_connections} connections at once, "
                              "a new one was closed")
                continue
            sock.setblocking(False)
            task = asyncio.ensure_future(self._relay(sock))
            self._dialing.add(task)
            task.add_done_callback(self._dialing.discard)

    def _accept_again(self) -> None:
        self._resume = None
        if self._listener is not None:
            self._loop.add_reader(self._listener.fileno(), self._accept)

    def _crowded(self, reason: str) -> None:
        now = time.monotonic()
        if now - self._crowded_said >= REFUSED_EVERY:
            self._crowded_said = now
            self.on_refused(reason)

    async def _relay(self, sock: socket.socket) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                local = await self._dial()
        except (OSError, TimeoutError) as exc:
            sock.close()
            reason = exc.strerror if isinstance(exc, socket.gaierror) else os_reason(exc)
            self.on_refused(f"local service {self.service} refused a connection: {reason}")
            return
        except BaseException:
            sock.close()
            raise
        try:
            conn = _Connection(self, sock, local)
        except OSError as exc:  # out of pipes (EMFILE)
            sock.close()
            local.close()
            self._crowded(f"cannot relay a connection to local service {self.service}: {os_reason(exc)}")
            return
        self._conns.add(conn)
        self.stats.open += 1
        self.stats.total += 1
        self.on_change()
        conn.start()

    async def _dial(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.local_host, self.local_port, type=socket.SOCK_STREAM)
        failure: OSError = OSError(errno.EADDRNOTAVAIL, "no address")
        for family, kind, proto, _, address in infos:
            local = socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, proto)
            try:
                await loop.sock_connect(local, address)
            except OSError as exc:
                local.close()
                failure = exc
                continue
            except BaseException:
                local.close()
                raise
            local.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return local
        raise failure

    def _gone(self, conn: _Connection) -> None:
        if conn in self._conns:
            self._conns.discard(conn)
            self.stats.open -= 1
            self.on_change()


# -------------------------------------------------------------------------------------------------- the ways

_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


class _Way:
    """One direction of a connection, `src` -> `dst`, driven by the event loop: the source is read (`fill`) only
    when nothing is held; what is read is passed on (`drain`) and counted as it goes; a full destination stops
    the reading (remove_reader) until it is writable again (add_writer). The source's end, once all held is
    passed on, half-closes the destination; an error either way (a reset) ends the connection."""

    def __init__(self, conn: _Connection, src: socket.socket, dst: socket.socket, inward: bool) -> None:
        self.conn, self.inward = conn, inward
        self.src_sock, self.dst_sock = src, dst
        self.src, self.dst = src.fileno(), dst.fileno()
        self.held = 0        # bytes read from the source and not yet passed on
        self.ended = False   # the source's end has been passed on

    def readable(self) -> None:
        for _ in range(_ROUNDS):
            try:
                n = self.fill()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.conn.end()
                return
            if n == 0:
                self.conn.loop.remove_reader(self.src)
                self.conn.way_ended(self)
                return
            self.held += n
            if not self.flush():
                if self.conn.done:
                    return
                self.hold()
                self.conn.loop.remove_reader(self.src)
                self.conn.loop.add_writer(self.dst, self.writable)
                return

    def writable(self) -> None:
        if self.flush():
            self.conn.loop.remove_writer(self.dst)
            self.conn.loop.add_reader(self.src, self.readable)

    def flush(self) -> bool:
        """Pass on what is held, counting; False while some is left (the destination is full)."""
        while self.held:
            try:
                n = self.drain()
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                self.conn.end()
                return False
            self.held -= n
            if self.inward:
                self.conn.proxy.stats.bytes_in += n
            else:
                self.conn.proxy.stats.bytes_out += n
        return True

    def fill(self) -> int:
        """Read what the source has (nothing is held now): how much, 0 at the source's end."""
        raise NotImplementedError

    def drain(self) -> int:
        """Pass some of what is held to the destination: how much."""
        raise NotImplementedError

    def hold(self) -> None:
        """The destination is full with `held` bytes left: keep them until it is writable."""

    def close(self) -> None:
        pass


class _PipeWay(_Way):
    """Zero copy: socket -> a pipe of this connection -> socket with os.splice; the bytes stay in the kernel, at
    most a pipe's worth (PIPE_SIZE) of them."""

    def __init__(self, conn: _Connection, src: socket.socket, dst: socket.socket, inward: bool) -> None:
        super().__init__(conn, src, dst, inward)
        self.rd, self.wr = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.wr, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass
        try:
            self.size = fcntl.fcntl(self.wr, _F_GETPIPE_SZ)
        except OSError:
            self.size = 1 << 16

    def fill(self) -> int:
        return os.splice(self.src, self.wr, self.size, flags=_FLAGS)

    def drain(self) -> int:
        return os.splice(self.rd, self.dst, self.held, flags=_FLAGS)

    def close(self) -> None:
        os.close(self.rd)
        os.close(self.wr)


class _CopyWay(_Way):
    """Copied: recv_into the proxy's one scratch buffer, send from it; what the destination leaves is copied out
    to this way until it is writable (so an idle connection holds no buffer)."""

    def __init__(self, conn: _Connection, src: socket.socket, dst: socket.socket, inward: bool) -> None:
        super().__init__(conn, src, dst, inward)
        self.view = conn.proxy.scratch
        self.start = 0

    def fill(self) -> int:
        self.view, self.start = self.conn.proxy.scratch, 0
        return self.src_sock.recv_into(self.view)

    def drain(self) -> int:
        n = self.dst_sock.send(self.view[self.start:self.start + self.held])
        self.start += n
        return n

    def hold(self) -> None:
        self.view, self.start = memoryview(bytes(self.view[self.start:self.start + self.held])), 0


# Each mode's ways: (ssh's side toward the service, back). "mixed", the default on Linux, is what measured
# cheapest (bench/forward_proxy.py, Linux 6.18): from ssh's Unix socket to the service's TCP socket a plain copy
# costs less CPU per MB than splice (0.31-0.37 ms against 0.46) and goes faster; back, splice costs a third of a
# copy (0.19-0.22 ms against 0.58).
MODES: dict[str, tuple[type[_Way], type[_Way]]] = {
    "mixed": (_CopyWay, _PipeWay), "splice": (_PipeWay, _PipeWay), "copy": (_CopyWay, _CopyWay)}
DEFAULT_MODE = "mixed" if hasattr(os, "splice") else "copy"


class _Connection:
    """A connection from ssh (`outer`, the Unix socket) relayed to the local service (`local`)."""

    def __init__(self, proxy: ForwardProxy, outer: socket.socket, local: socket.socket) -> None:
        self.proxy = proxy
        self.loop = asyncio.get_running_loop()
        self.socks = (outer, local)
        inward, outward = MODES[proxy.mode]
        made: list[_Way] = []
        try:
            made.append(inward(self, outer, local, inward=True))
            made.append(outward(self, local, outer, inward=False))
        except OSError:
            for way in made:
                way.close()
            raise
        self.ways = tuple(made)
        self.done = False

    def start(self) -> None:
        for way in self.ways:
            self.loop.add_reader(way.src, way.readable)

    def way_ended(self, way: _Way) -> None:
        """The source reached its end with nothing held: half-close the destination; both ways ended: close."""
        way.ended = True
        try:
            way.dst_sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.end()
            return
        if all(each.ended for each in self.ways):
            self.end()

    def end(self) -> None:
        """Both ways over, a reset either way, or the unit stopped: close everything, once."""
        if self.done:
            return
        self.done = True
        for sock in self.socks:
            self.loop.remove_reader(sock.fileno())
            self.loop.remove_writer(sock.fileno())
        for way in self.ways:
            way.close()
        for sock in self.socks:
            sock.close()
        self.proxy._gone(self)

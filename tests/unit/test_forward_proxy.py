"""console/tunnel/forward_proxy.py: the OpenSSH transport's per-forward relay, with real sockets: ssh's side is a
Unix socket client in tmp_path, the local service a real asyncio service on 127.0.0.1. Every test runs on both
modes: "mixed" (the default on Linux: copied from ssh's side, spliced back), "splice" (os.splice through a pipe both
ways), "copy" (recv_into/send both ways, where os.splice is missing)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import stat
import time

import pytest

from sshd import free_port
from support import EchoServer, eventually, run

from console.relay import ForwardStats
from console.tunnel import forward_proxy
from console.tunnel.forward_proxy import ForwardProxy

NO_SPLICE = pytest.mark.skipif(not hasattr(os, "splice"), reason="no os.splice here")
MODES = [pytest.param("mixed", marks=NO_SPLICE), pytest.param("splice", marks=NO_SPLICE), "copy"]


class Proxy:
    """A started ForwardProxy in tmp_path with what it reported: refusals and on_change calls."""

    def __init__(self, tmp_path, port: int, mode: str, **options) -> None:
        assert forward_proxy.MODES[mode]
        self.stats = ForwardStats()
        self.refused: list[str] = []
        self.changes = 0
        self.path = tmp_path / "fwd.sock"
        self.proxy = ForwardProxy(self.path, "127.0.0.1", port, self.stats, on_change=self._changed,
                                  on_refused=self.refused.append, mode=mode, **options)

    def _changed(self) -> None:
        self.changes += 1

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(str(self.path), limit=1 << 22)


@contextlib.asynccontextmanager
async def proxy_to(tmp_path, port: int, mode: str, **options):
    p = Proxy(tmp_path, port, mode, **options)
    await p.proxy.start()
    try:
        yield p
    finally:
        await p.proxy.aclose()


async def read_all(reader: asyncio.StreamReader) -> bytes:
    data = bytearray()
    while chunk := await reader.read(1 << 20):
        data += chunk
    return bytes(data)


async def echo_round(p: Proxy, payload: bytes) -> bytes:
    reader, writer = await p.connect()

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.ensure_future(send())
    got = await read_all(reader)
    await sender
    writer.close()
    return got


async def closed_on_us(reader: asyncio.StreamReader, timeout: float = 5) -> bool:
    """The other end closed (an end, or a reset when what we sent was left unread) within `timeout`, nothing read."""
    try:
        return await asyncio.wait_for(reader.read(1 << 20), timeout) == b""
    except ConnectionResetError:
        return True


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("mode", MODES)
def test_round_trip_counts_every_byte(tmp_path, mode):
    payload = os.urandom(3 * 1024 * 1024 + 17)

    async def body():
        async with EchoServer() as echo, proxy_to(tmp_path, echo.port, mode) as p:
            assert await echo_round(p, payload) == payload
            await eventually(lambda: p.stats.open == 0, what="the connection closed")
            assert p.stats.snapshot() == (0, 1, len(payload), len(payload))
            assert p.changes == 2  # open, then closed
            assert p.refused == []

    run(body())


@pytest.mark.parametrize("mode", MODES)
def test_half_close_passed_both_ways(tmp_path, mode):
    """The client sends and shuts its writing down; the service sees the end, then answers; the client reads it."""
    payload = os.urandom(700_000)

    async def digest_service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await read_all(reader)          # ends only when the proxy passes the client's end on
        writer.write(hashlib.sha256(data).digest() * 1000)
        await writer.drain()
        writer.close()

    async def body():
        server = await asyncio.start_server(digest_service, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with proxy_to(tmp_path, port, mode) as p:
            reader, writer = await p.connect()
            writer.write(payload)
            writer.write_eof()
            assert await read_all(reader) == hashlib.sha256(payload).digest() * 1000
            writer.close()
            await eventually(lambda: p.stats.open == 0, what="both ways ended")
            assert p.stats.snapshot() == (0, 1, len(payload), 32_000)
        server.close()

    run(body())


@pytest.mark.parametrize("mode", MODES)
def test_local_service_down_is_said_and_nothing_counted(tmp_path, mode):
    port = free_port()  # nothing listens there

    async def body():
        async with proxy_to(tmp_path, port, mode) as p:
            reader, writer = await p.connect()
            writer.write(b"hello")
            assert await closed_on_us(reader)
            writer.close()
            await eventually(lambda: p.refused, what="the refusal")
            assert p.refused == [f"local service 127.0.0.1:{port} refused a connection: Connection refused"]
            assert p.stats.snapshot() == (0, 0, 0, 0)
            assert p.changes == 0

    run(body())


async def push_until_stalled(sock: socket.socket, limit: int) -> tuple[int, bytes]:
    """Send from a non-blocking socket until nothing more goes for 1 s (or `limit` bytes went): how much went,
    and its digest."""
    loop = asyncio.get_running_loop()
    chunk = memoryview(os.urandom(1 << 16))
    digest = hashlib.sha256()
    sent, last = 0, loop.time()
    while sent < limit and loop.time() - last < 1.0:
        try:
            n = sock.send(chunk)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        digest.update(chunk[:n])
        sent += n
        last = loop.time()
    return sent, digest.digest()


async def drain(sock: socket.socket, size: int) -> tuple[int, bytes]:
    """Read up to `size` bytes or the end: how many arrived, and their digest."""
    loop = asyncio.get_running_loop()
    digest = hashlib.sha256()
    got = 0
    while got < size:
        data = await loop.sock_recv(sock, 1 << 20)
        if not data:
            break
        digest.update(data)
        got += len(data)
    return got, digest.digest()


async def exchange(p: Proxy, listener: socket.socket, size: int) -> None:
    """One more connection through the proxy while another is stalled: `size` bytes each way, intact."""
    loop = asyncio.get_running_loop()
    reader, writer = await p.connect()
    service, _ = await asyncio.wait_for(loop.sock_accept(listener), 5)
    there, back = os.urandom(size), os.urandom(size)
    writer.write(there)
    assert await drain(service, size) == (size, hashlib.sha256(there).digest())
    await loop.sock_sendall(service, back)
    assert await reader.readexactly(size) == back
    writer.close()
    service.close()


BOUND = 48 << 20     # kernel buffers (sockets, the pipe) and at most relay.SPLICE_BUFFER in the fallback
PUSHED = 128 << 20   # what a relay without flow control would take in


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("way", ["in", "out"])
def test_slow_reader_stalls_the_writer(tmp_path, mode, way):
    """Nobody reads at one end: the other end's writes stall within the buffers' bound (nothing piles up in the
    daemon), and once the reader reads, every byte arrives, counted exactly."""

    async def body():
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        async with proxy_to(tmp_path, listener.getsockname()[1], mode) as p:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            await loop.sock_connect(client, str(p.path))
            service, _ = await asyncio.wait_for(loop.sock_accept(listener), 5)
            service.setblocking(False)
            writer, reader = (client, service) if way == "in" else (service, client)
            sent, digest = await push_until_stalled(writer, PUSHED)
            assert sent < BOUND, f"{sent} bytes went in with nobody reading"
            await exchange(p, listener, 300_000)    # the stalled connection's bytes held meanwhile stay intact
            writer.shutdown(socket.SHUT_WR)
            assert await drain(reader, sent + 1) == (sent, digest)
            extra = 300_000                         # the other connection's, each way
            assert (p.stats.bytes_in, p.stats.bytes_out) == \
                ((sent + extra, extra) if way == "in" else (extra, sent + extra))
            for sock in (client, service):
                sock.close()
            await eventually(lambda: p.stats.open == 0, what="the connections closed")
        listener.close()

    run(body())


@pytest.mark.parametrize("mode", MODES)
def test_many_connections_at_once_exact_and_no_fd_left(tmp_path, mode):
    sizes = [1 + int.from_bytes(os.urandom(3), "big") % 100_000 for _ in range(200)]

    async def one(p: Proxy, size: int) -> bool:
        payload = os.urandom(size)
        return await echo_round(p, payload) == payload

    async def body():
        async with EchoServer() as echo, proxy_to(tmp_path, echo.port, mode) as p:
            before = open_fds()
            assert all(await asyncio.gather(*(one(p, size) for size in sizes)))
            await eventually(lambda: p.stats.open == 0, what="every connection closed")
            assert p.stats.snapshot() == (0, 200, sum(sizes), sum(sizes))
            assert p.changes == 400
            await eventually(lambda: open_fds() == before, what=f"open fds back to {before}")

    run(body())


@pytest.mark.parametrize("mode", MODES)
def test_close_stops_new_connections_the_one_in_flight_finishes(tmp_path, mode):
    async def body():
        async with EchoServer() as echo, proxy_to(tmp_path, echo.port, mode) as p:
            reader, writer = await p.connect()
            writer.write(b"first")
            assert await reader.readexactly(5) == b"first"
            p.proxy.close()
            assert not p.proxy.listening
            assert not p.path.exists()
            with pytest.raises(OSError):
                await p.connect()
            writer.write(b"second")
            writer.write_eof()
            assert await read_all(reader) == b"second"
            writer.close()
            await eventually(lambda: p.stats.open == 0, what="the connection closed")
            assert p.stats.snapshot() == (0, 1, 11, 11)

    run(body())


@pytest.mark.parametrize("mode", MODES)
def test_aclose_ends_connections_in_flight(tmp_path, mode):
    async def body():
        async with EchoServer() as echo:
            p = Proxy(tmp_path, echo.port, mode)
            await p.proxy.start()
            clients = [await p.connect() for _ in range(3)]
            for reader, writer in clients:
                writer.write(b"ping")
                assert await reader.readexactly(4) == b"ping"
            assert p.stats.open == 3
            await p.proxy.aclose()
            assert p.stats.open == 0
            assert not p.path.exists()
            for reader, writer in clients:
                assert await closed_on_us(reader)
                writer.close()

    run(body())


@pytest.mark.parametrize("mode", MODES)
def test_socket_file_private_stale_one_replaced_gone_after_close(tmp_path, mode):
    async def body():
        async with EchoServer() as echo:
            p = Proxy(tmp_path, echo.port, mode)
            stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stale.bind(str(p.path))   # what a daemon that died leaves behind
            stale.close()
            os.chmod(p.path, 0o777)
            await p.proxy.start()
            assert p.proxy.listening
            file_mode = os.lstat(p.path).st_mode
            assert stat.S_ISSOCK(file_mode) and stat.S_IMODE(file_mode) == 0o600
            assert await echo_round(p, b"hi") == b"hi"
            p.proxy.close()
            assert not p.path.exists()
            p.path.write_text("not ours")
            with pytest.raises(FileExistsError):
                await p.proxy.start()
            assert p.path.read_text() == "not ours"

    run(body())


@pytest.mark.parametrize("mode", MODES)
def test_too_many_connections_closed_and_said_once(tmp_path, mode):
    async def body():
        async with EchoServer() as echo, proxy_to(tmp_path, echo.port, mode, max_connections=2) as p:
            held = [await p.connect() for _ in range(2)]
            for reader, writer in held:
                writer.write(b"x")
                assert await reader.readexactly(1) == b"x"
            for _ in range(2):
                reader, writer = await p.connect()
                assert await closed_on_us(reader)
                writer.close()
            assert p.refused == [f"local service 127.0.0.1:{echo.port}: 2 connections at once, a new one was closed"]
            assert p.stats.snapshot()[:2] == (2, 2)
            held[0][1].close()
            await eventually(lambda: p.stats.open == 1, what="one connection closed")
            assert await echo_round(p, b"again") == b"again"

    run(body())


@pytest.mark.parametrize("mode", MODES)
def test_reset_either_way_ends_both(tmp_path, mode):
    """The service resets: the client's connection ends. The client goes away with data unread (a reset on a
    Unix socket): the service's connection ends."""
    ended = asyncio.Event

    async def body():
        service_saw_end = ended()

        async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            first = await reader.read(1)
            if first == b"r":                      # reset at once
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                           b"\x01\x00\x00\x00\x00\x00\x00\x00")
                writer.transport.abort()
                return
            writer.write(b"y" * (4 << 20))        # more than the client will read
            try:
                while await reader.read(1 << 16):
                    pass
                await writer.drain()
            except OSError:
                pass
            service_saw_end.set()
            writer.close()

        server = await asyncio.start_server(service, "127.0.0.1", 0)
        async with proxy_to(tmp_path, server.sockets[0].getsockname()[1], mode) as p:
            reader, writer = await p.connect()
            writer.write(b"r")
            assert await closed_on_us(reader)
            await eventually(lambda: p.stats.open == 0, what="the reset connection closed, the client's way too")
            writer.close()

            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(str(p.path))
            client.sendall(b"s")
            await eventually(lambda: p.stats.bytes_out > 0, what="data on its way to the client")
            client.close()                          # with data unread: the proxy's side is reset
            await asyncio.wait_for(service_saw_end.wait(), 5)
            await eventually(lambda: p.stats.open == 0, what="both sides closed")
            assert p.stats.total == 2
        server.close()

    run(body())


@pytest.mark.parametrize("mode", MODES)
def test_out_of_file_descriptors_said_no_busy_loop_then_relayed(tmp_path, mode):
    """accept() fails (no file descriptor left): said once, the listener rests instead of spinning on it, and the
    waiting connection is relayed once descriptors are back."""
    import resource

    async def body():
        loop = asyncio.get_running_loop()
        async with EchoServer() as echo, proxy_to(tmp_path, echo.port, mode) as p:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            lowest_free = os.dup(0)
            os.close(lowest_free)
            resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))   # no new descriptor from here
            try:
                await loop.sock_connect(client, str(p.path))                  # waits in the listen backlog
                await loop.sock_sendall(client, b"hello")
                cpu = time.process_time()
                await eventually(lambda: p.refused, what="accept's failure said")
                await asyncio.sleep(0.3)
                spent = time.process_time() - cpu
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            assert p.refused == [f"cannot accept a connection for local service 127.0.0.1:{echo.port}: "
                                 "Too many open files"]
            assert spent < 0.15, f"{spent:.2f} s of CPU while accept() failed"
            assert await asyncio.wait_for(loop.sock_recv(client, 10), 5) == b"hello"
            client.close()
            await eventually(lambda: p.stats.snapshot() == (0, 1, 5, 5), what="the connection relayed and closed")

    run(body())


def test_local_service_that_never_answers_times_out(tmp_path, monkeypatch):
    """A service whose accept queue is full drops the handshake: the proxy gives up at CONNECT_TIMEOUT."""
    monkeypatch.setattr(forward_proxy, "CONNECT_TIMEOUT", 0.5)

    async def body():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):   # fill the accept queue: later handshakes are dropped, connect() just waits
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.2)
        async with proxy_to(tmp_path, port, "copy") as p:
            reader, writer = await p.connect()
            assert await closed_on_us(reader, timeout=5)
            writer.close()
            assert p.refused == [f"local service 127.0.0.1:{port} refused a connection: timed out"]
            assert p.stats.snapshot() == (0, 0, 0, 0)
        for sock in (*fillers, listener):
            sock.close()

    run(body())

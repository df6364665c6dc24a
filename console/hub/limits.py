"""What a stranger, or a client gone wrong, may cost the hub: the limits sshd has and asyncssh's server lacks.

- `Gate`: connections not logged in yet, in total and per source address (sshd's MaxStartups and
  PerSourceMaxStartups). When the total is full, a newcomer from an address holding fewer of them takes the place
  of the oldest one of the address holding the most, so one flooding address (or a few) cannot lock everyone out.
  A connection that finds no place waits for one (a reconnect storm behind one NAT is slowed, not refused).
- `Doorway`: the hub's own accept loop, the one place the hub accepts TCP connections. asyncssh's `listen()` takes
  asyncio's accept loop, which on EMFILE (Python 3.11: `_accept_connection` does not return after the error) logs
  "socket.accept() out of system resource" with a traceback up to a hundred times per wake-up and re-arms itself
  as often: 150,000 lines in 40 s. Here a socket is accepted, checked at the gate (held until a place is free,
  or closed at once, before asyncssh sees it), then handed to asyncssh with `loop.connect_accepted_socket`; on
  EMFILE, ENFILE, ENOBUFS or ENOMEM accepting pauses for ACCEPT_PAUSE seconds with one log line (rate-limited,
  see LogLimiter).
- Log lines go through console.core.log_limit.LogLimiter: per key (client or address, and reason) the first line,
  then one summary line a window with the count of lines it held back, so no peer can rotate the tunnel log away.
- `raise_open_files_limit`: the soft RLIMIT_NOFILE up to the hard one.

The login grace time is asyncssh's own `login_timeout` (its default is 120 s); the auth-attempt and session
limits live in console.hub.server, where the attempts and sessions are.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from collections.abc import Callable
from dataclasses import dataclass

import asyncssh

from console.core.words import counted, noun

log = logging.getLogger("console.hub")

ACCEPT_PAUSE = 1.0          # seconds accepting waits after the process ran out of descriptors (or memory)
ACCEPT_BATCH = 100          # connections accepted per wake-up of the listening socket, as asyncio does
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
WAITING_ROOM = 10          # connections that may wait for a place, per place (Gate)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard one. Returns (before, now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_files_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------------------------------------- the gate

class Ticket:
    """One connection admitted and not logged in yet. leave() when it logs in or ends (twice is harmless)."""

    def __init__(self, gate: Gate, address: str) -> None:
        self.gate, self.address = gate, address
        self.conn: asyncssh.SSHServerConnection | None = None
        self.evicted = False
        self.left = False

    def leave(self, *, admit_next: bool = True) -> None:
        if not self.left:
            self.left = True
            self.gate._leave(self, admit_next)

    def evict(self) -> None:
        self.evicted = True
        self.leave(admit_next=False)  # its place goes to the newcomer that evicted it
        if self.conn is not None:
            self.conn.abort()


@dataclass
class _Waiting:
    address: str
    sock: socket.socket
    start: Callable[[socket.socket, Ticket], None]
    timer: asyncio.TimerHandle | None = None


class Gate:
    """Connections admitted to the SSH handshake and not logged in yet: at most `total`, `per_source` from one
    address. One that finds no place waits in a room (accepted, before any SSH: it costs a descriptor and no
    more) and is admitted, oldest first, as places free up, within `grace` seconds; so a reconnect storm from
    one customer's NAT is slowed to `per_source` handshakes at a time, not refused. When the room is full too,
    the connection is closed (a newcomer from an address with fewer waiting takes the place of the oldest
    waiting one of the address with the most). `room` is WAITING_ROOM times `total`; `fit()` bounds both by the
    open-files limit."""

    def __init__(self, total: int, per_source: int, grace: float,
                 refused: Callable[[str, str], None] = lambda address, why: None) -> None:
        self.asked = (total, per_source)
        self.total, self.per_source, self.grace = total, per_source, grace
        self.room = total * WAITING_ROOM
        self.refused = refused                          # told (address, why) for every connection closed here
        self.startups: dict[str, list[Ticket]] = {}     # address -> its admitted connections, oldest first
        self.count = 0
        self.queue: list[_Waiting] = []                 # the waiting room, oldest first
        self.queued: dict[str, int] = {}                # address -> connections waiting
        self.tickets: dict[asyncssh.SSHServerConnection, Ticket] = {}  # shared by every Doorway of the hub

    def set_limits(self, total: int, per_source: int, grace: float, open_files: int) -> str | None:
        """New limits, bounded so that admitted and waiting connections use at most half the open files
        (the rest is for the clients logged in and their forwards). Says what it lowered, if anything."""
        self.asked = (total, per_source)
        self.grace = grace
        self.total = max(1, min(total, open_files // 4))
        self.per_source = min(per_source, self.total)
        self.room = max(0, min(total * WAITING_ROOM, open_files // 4))
        self._admit_waiting()
        if self.total < total:
            return (f"max_startups {total} lowered to {self.total} (waiting room {self.room}) to fit the limit of "
                    f"{open_files} open files")
        return None

    def logged_in(self, conn: asyncssh.SSHServerConnection) -> None:
        """The connection logged in: it no longer counts."""
        ticket = self.tickets.pop(conn, None)
        if ticket is not None:
            ticket.leave()

    def enter(self, address: str, sock: socket.socket, start: Callable[[socket.socket, Ticket], None]) -> None:
        """An accepted connection: start(sock, ticket) now or once a place is free; else closed and told."""
        mine = self.startups.get(address, [])
        if len(mine) < self.per_source and not self.queued.get(address):
            if self.count >= self.total:
                busiest = max(self.startups.values(), key=len, default=[])
                if len(busiest) > len(mine) + 1:
                    busiest[0].evict()
            if self.count < self.total:
                start(sock, self._admit(address))
                return
        self._wait(address, sock, start)

    def close(self) -> None:
        """Close every waiting connection (the hub stops)."""
        for waiting in self.queue:
            if waiting.timer is not None:
                waiting.timer.cancel()
            waiting.sock.close()
        self.queue.clear()
        self.queued.clear()

    def _admit(self, address: str) -> Ticket:
        ticket = Ticket(self, address)
        self.startups.setdefault(address, []).append(ticket)
        self.count += 1
        return ticket

    def _wait(self, address: str, sock: socket.socket, start: Callable[[socket.socket, Ticket], None]) -> None:
        if len(self.queue) >= self.room:
            busiest, most = max(self.queued.items(), key=lambda item: item[1], default=("", 0))
            if most <= self.queued.get(address, 0) + 1:
                sock.close()
                self.refused(address, f"{counted(self.count, 'connection')} "
                                      f"{noun(self.count, 'is', 'are')} not logged in yet and {len(self.queue)} "
                                      f"{noun(len(self.queue), 'waits', 'wait')} (max_startups {self.asked[0]}, per source {self.asked[1]})")
                return
            self._drop(next(w for w in self.queue if w.address == busiest),
                       "its place in the waiting room went to a newcomer from an address with fewer")
        waiting = _Waiting(address, sock, start)
        waiting.timer = asyncio.get_running_loop().call_later(self.grace, self._expire, waiting)
        self.queue.append(waiting)
        self.queued[address] = self.queued.get(address, 0) + 1

    def _unqueue(self, waiting: _Waiting) -> None:
        self.queue.remove(waiting)
        self.queued[waiting.address] -= 1
        if not self.queued[waiting.address]:
            del self.queued[waiting.address]
        if waiting.timer is not None:
            waiting.timer.cancel()

    def _drop(self, waiting: _Waiting, why: str) -> None:
        self._unqueue(waiting)
        waiting.sock.close()
        self.refused(waiting.address, why)

    def _expire(self, waiting: _Waiting) -> None:
        if waiting in self.queue:
            self._drop(waiting, f"waited {self.grace:g}s for a place (max_startups {self.asked[0]}, per source "
                                f"{self.asked[1]})")

    def _leave(self, ticket: Ticket, admit_next: bool) -> None:
        mine = self.startups.get(ticket.address, [])
        if ticket in mine:
            mine.remove(ticket)
            self.count -= 1
            if not mine:
                del self.startups[ticket.address]
        if admit_next:
            self._admit_waiting()

    def _admit_waiting(self) -> None:
        """Free places go to the waiting, oldest first, skipping addresses at their own limit."""
        while self.count < self.total and self.queue:
            waiting = next((w for w in self.queue if len(self.startups.get(w.address, ())) < self.per_source),
                           None)
            if waiting is None:
                return
            self._unqueue(waiting)
            waiting.start(waiting.sock, self._admit(waiting.address))


# ---------------------------------------------------------------------------------------------- accepting

class Doorway:
    """Listening sockets with our own accept loop (see the module's note). Looks like the asyncio server
    asyncssh's create_server returns where the hub uses it: get_port(), close(), wait_closed()."""

    def __init__(self, socks: list[socket.socket], options: asyncssh.SSHServerConnectionOptions, gate: Gate,
                 connection_class: type[asyncssh.SSHServerConnection], paused: Callable[[OSError], None]) -> None:
        self.socks, self.options, self.gate = socks, options, gate
        self.connection_class = connection_class
        self.paused = paused     # told the error when accepting pauses
        self._tasks: set[asyncio.Task] = set()
        self._paused: dict[socket.socket, asyncio.TimerHandle] = {}  # listening sockets out of descriptors
        self._loop = asyncio.get_running_loop()
        self._closed = False
        for sock in socks:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def get_port(self) -> int:
        return self.socks[0].getsockname()[1]

    def close(self) -> None:
        """Stop accepting; the connections accepted go on."""
        if self._closed:
            return
        self._closed = True
        for handle in self._paused.values():
            handle.cancel()
        self._paused.clear()
        for sock in self.socks:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    async def wait_closed(self) -> None:
        """Wait for the connections accepted to end (as asyncio's Server.wait_closed does from Python 3.12)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self._loop.remove_reader(sock.fileno())
                    self._paused[sock] = self._loop.call_later(ACCEPT_PAUSE, self._resume_accepting, sock)
                    self.paused(exc)
                else:
                    log.warning("hub: accepting a connection failed: %s", exc)
                return
            self._admit(conn, addr[0])

    def _resume_accepting(self, sock: socket.socket) -> None:
        """After ACCEPT_PAUSE, or as soon as one of our connections ended and gave its descriptor back."""
        handle = self._paused.pop(sock, None)
        if handle is not None:
            handle.cancel()
            if not self._closed:
                self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _admit(self, conn: socket.socket, address: str) -> None:
        conn.setblocking(False)
        self.gate.enter(address, conn, self._start)  # now, later, or closed before asyncssh sees it

    def _start(self, conn: socket.socket, ticket: Ticket) -> None:
        task = self._loop.create_task(self._serve(conn, ticket))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, sock: socket.socket, ticket: Ticket) -> None:
        ssh_conn = self.connection_class(self._loop, self.options)
        try:
            await self._loop.connect_accepted_socket(lambda: ssh_conn, sock)
        except OSError:
            ticket.leave()
            sock.close()
            return
        ticket.conn = ssh_conn
        if ticket.evicted:
            ssh_conn.abort()
        else:
            self.gate.tickets[ssh_conn] = ticket
        try:
            await ssh_conn.wait_closed()
        finally:
            self.gate.tickets.pop(ssh_conn, None)
            ticket.leave()
            for paused in list(self._paused):  # a descriptor is free again
                self._resume_accepting(paused)


async def listen(server_factory: Callable[[], asyncssh.SSHServer], host: str, port: int, *, gate: Gate,
                 connection_class: type[asyncssh.SSHServerConnection], paused: Callable[[OSError], None],
                 backlog: int = 100, **kwargs: object) -> Doorway:
    """asyncssh.create_server(server_factory, host, port, **kwargs), accepting through a Doorway."""
    options = await asyncssh.SSHServerConnectionOptions.construct(None, server_factory=server_factory, **kwargs)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:  # every address on the port the first one was given
                address = (address[0], socks[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return Doorway(socks, options, gate, connection_class, paused)

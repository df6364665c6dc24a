"""The hub: an asyncssh SSH server where registered clients forward their own ports, and nothing else.

- Public-key auth for registered, enabled clients only (the SSH user name is the client_id).
- A client may only ask for its own ports (port 0: its next free one); the hub binds them on the address it
  chooses (`bind`, loopback by default) and echoes the requested host and port back, as the client matches
  incoming channels on that pair.
- No shell, exec, subsystem, SFTP, agent, X11 or direct-tcpip. Every refusal is logged with client, address and
  reason; repeated failed auth from one address is slowed down.
- A client's newest session takes its ports over from an older one (a peer that died without a FIN), so the
  client never waits for a TCP timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import asyncssh

from console.core.keys import fingerprint
from console.hub.registry import Client, Registry
from console.tunnel import relay

log = logging.getLogger("console.hub")
FAILURE_WINDOW = 60.0   # seconds a failed auth counts against its address
MAX_AUTH_DELAY = 5.0
SEEN_FLUSH_SECONDS = 30.0  # last_seen reaches the store this often (and at close), not once per connection


@dataclass
class HubSettings:
    host: str = "127.0.0.1"
    port: int = 0
    bind: str = "127.0.0.1"   # where client ports are opened, whatever the client asks


@dataclass
class HubForward:
    session: _HubSession
    listener: _ClientPort
    port: int
    stats: relay.ForwardStats = field(default_factory=relay.ForwardStats)  # in: arrived through the tunnel


class _ClientPort:
    """A client's port on the hub: our own listener, relayed through RelaySession so every connection and byte
    is counted. asyncssh needs only get_port() and close() of it."""

    def __init__(self, server: asyncio.AbstractServer, port: int) -> None:
        self.server, self.port = server, port

    def get_port(self) -> int:
        return self.port

    def close(self) -> None:
        self.server.close()

    async def wait_closed(self) -> None:
        await self.server.wait_closed()


@dataclass
class _Failures:
    count: int = 0
    last: float = field(default_factory=time.monotonic)


class _HubSession(asyncssh.SSHServer):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.conn: asyncssh.SSHServerConnection | None = None
        self.user = "?"
        self.peer = "?"

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.peer = f"{peer[0]}:{peer[1]}"

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub._detach(self)

    def begin_auth(self, username: str) -> bool:
        self.user = username
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        client = self.hub.registry.get(username)
        body = " ".join(key.export_public_key("openssh").decode().split()[:2])
        if client is not None and client.enabled and client.key == body:
            return True
        reason = ("unknown client" if client is None else "client disabled (quota 0)" if not client.enabled
                  else "key is not the client's")
        await self.hub._auth_failed(self, username, fingerprint(key), reason)
        return False

    def auth_completed(self) -> None:
        self.hub._attach(self)

    def session_requested(self):
        self.hub._refuse(self, "a session (shell, exec, subsystem, sftp)")
        return False

    def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
        self.hub._refuse(self, f"a connection into the hub's network (direct-tcpip to {dest_host}:{dest_port})")
        return False

    def server_requested(self, listen_host: str, listen_port: int):
        return self.hub._listen(self, listen_host, listen_port)


class Hub:
    def __init__(self, settings: HubSettings, registry: Registry, host_key: asyncssh.SSHKey) -> None:
        self.settings = settings
        self.registry = registry
        self.host_key = host_key
        self.sessions: dict[str, list[_HubSession]] = {}
        self.forwards: dict[int, HubForward] = {}
        self._failures: dict[str, _Failures] = {}
        self._server: asyncssh.SSHAcceptor | None = None
        self._flusher: asyncio.Task | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.get_port()

    async def start(self) -> None:
        self._server = await asyncssh.create_server(
            lambda: _HubSession(self), self.settings.host, self.settings.port,
            server_host_keys=[self.host_key], line_editor=False, keepalive_interval=15, keepalive_count_max=3,
            allow_scp=False, agent_forwarding=False, x11_forwarding=False, password_auth=False,
            kbdint_auth=False, gss_host=None)
        log.info("hub listening on %s:%d; client ports bind on %s", self.settings.host, self.port,
                 self.settings.bind)
        self._flusher = asyncio.create_task(self._flush_seen())

    async def _flush_seen(self) -> None:
        while True:
            await asyncio.sleep(SEEN_FLUSH_SECONDS)
            self.registry.flush()

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        self.registry.flush()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for sessions in list(self.sessions.values()):
            for session in list(sessions):
                if session.conn is not None:
                    session.conn.close()

    # ------------------------------------------------------------------ sessions

    def _attach(self, session: _HubSession) -> None:
        self.sessions.setdefault(session.user, []).append(session)
        self.registry.seen(session.user)
        log.info("hub: client %s connected from %s", session.user, session.peer)

    def _detach(self, session: _HubSession) -> None:
        for port, forward in list(self.forwards.items()):
            if forward.session is session:
                forward.listener.close()
                del self.forwards[port]
        if session in self.sessions.get(session.user, []):
            self.sessions[session.user].remove(session)
            log.info("hub: client %s from %s disconnected", session.user, session.peer)

    def disconnect(self, client_id: str, reason: str) -> int:
        """End every live session of a client at once (change 0, remove, a replaced key)."""
        sessions = list(self.sessions.get(client_id, []))
        for session in sessions:
            log.warning("hub: ending session of %s from %s: %s", client_id, session.peer, reason)
            if session.conn is not None:
                session.conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason)
        return len(sessions)

    def forwards_of(self, client: Client) -> list[HubForward]:
        """What a client forwards now: its ports are its own, so look only at those (not every forward)."""
        return [self.forwards[port] for port in client.ports if port in self.forwards]

    # ------------------------------------------------------------------ policy

    def _refuse(self, session: _HubSession, what: str) -> None:
        log.warning("hub refused %s for client %s from %s", what, session.user, session.peer)

    async def _auth_failed(self, session: _HubSession, username: str, key_fp: str, reason: str) -> None:
        address = session.peer.rsplit(":", 1)[0]
        record = self._failures.get(address)
        now = time.monotonic()
        if record is None or now - record.last > FAILURE_WINDOW:
            record = self._failures[address] = _Failures()
        record.count += 1
        record.last = now
        log.warning("hub refused auth for %s from %s with key %s: %s (failure %d)", username, session.peer,
                    key_fp, reason, record.count)
        if record.count > 3:  # slow down whoever keeps trying
            await asyncio.sleep(min(MAX_AUTH_DELAY, 0.25 * 2 ** (record.count - 4)))

    async def _listen(self, session: _HubSession, listen_host: str, listen_port: int):
        client = self.registry.get(session.user)
        if client is None or not client.enabled:
            self._refuse(session, f"port {listen_port}: client no longer enabled")
            return False
        if listen_port == 0:
            free = [p for p in client.ports if p not in self.forwards]
            if not free:
                self._refuse(session, f"port 0: all {len(client.ports)} of its ports are forwarded already")
                return False
            port = free[0]
        elif listen_port in client.ports:
            port = listen_port
        else:
            self._refuse(session, f"port {listen_port}: not one of its ports "
                                  f"({_ranges(client.ports) or 'none: quota 0'})")
            return False
        held = self.forwards.get(port)
        if held is not None:
            if held.session is session:
                self._refuse(session, f"port {port}: already forwarded by this session")
                return False
            # The same client again: its newest session wins; the old one is most likely dead.
            log.warning("hub: client %s from %s takes port %d over from its older session from %s",
                        session.user, session.peer, port, held.session.peer)
            old = held.session
            self._detach(old)
            if old.conn is not None:
                old.conn.disconnect(asyncssh.DISC_BY_APPLICATION, "replaced by a newer session of this client")
        conn = session.conn
        assert conn is not None
        stats = relay.ForwardStats()

        async def open_channel(session_relay: relay.RelaySession, peer: tuple) -> None:
            # The client matches incoming channels on the exact host and port it asked for (for port 0: the
            # port it was given).
            await conn.create_connection(lambda: session_relay, listen_host, port, str(peer[0]), int(peer[1]),
                                         window=relay.WINDOW, max_pktsize=relay.MAX_PACKET)

        def accepted() -> asyncio.Protocol:
            return relay.AcceptedSide(relay.RelaySession(stats, lambda: None), open_channel)

        try:
            server = await asyncio.get_running_loop().create_server(accepted, self.settings.bind, port)
        except OSError as exc:
            self._refuse(session, f"port {port}: cannot listen on {self.settings.bind}: {exc.strerror or exc}")
            return False
        listener = _ClientPort(server, port)
        self.forwards[port] = HubForward(session, listener, port, stats)
        log.info("hub: client %s forwards %s:%d", session.user, self.settings.bind, port)
        return listener


def _ranges(ports: list[int]) -> str:
    """[2200, 2201, 2202, 2210] -> '2200-2202, 2210'."""
    runs: list[list[int]] = []
    for port in sorted(ports):
        if runs and runs[-1][1] == port - 1:
            runs[-1][1] = port
        else:
            runs.append([port, port])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)

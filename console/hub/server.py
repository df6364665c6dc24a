"""A minimal hub: public-key logins for known users, reverse forwards bound on an address the hub chooses.

This is the first form of the hub (the demo uses it). A client gets nothing but remote forwards: no
shell, exec, subsystem or direct-tcpip. Quotas and the client registry come with the hub issue.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import asyncssh
from asyncssh.listener import create_tcp_forward_listener

log = logging.getLogger("console.hub")


@dataclass
class HubConfig:
    host: str = "127.0.0.1"
    port: int = 0
    bind: str = "127.0.0.1"                      # where client ports are opened, whatever the client asks
    users: dict[str, list[asyncssh.SSHKey]] = field(default_factory=dict)


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

    def begin_auth(self, username: str) -> bool:
        self.user = username
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        ok = any(k.public_data == key.public_data for k in self.hub.config.users.get(username, ()))
        if not ok:
            log.warning("hub refused key %s for %s from %s", key.get_fingerprint(), username, self.peer)
        return ok

    def session_requested(self):
        log.warning("hub refused a session (shell/exec/subsystem) for %s from %s", self.user, self.peer)
        return False

    def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
        log.warning("hub refused direct-tcpip to %s:%s for %s", dest_host, dest_port, self.user)
        return False

    def server_requested(self, listen_host: str, listen_port: int):
        return self._listen(listen_host, listen_port)

    async def _listen(self, listen_host: str, listen_port: int):
        conn = self.conn
        assert conn is not None
        holder: dict[str, int] = {}

        async def tunnel(session_factory, orig_host, orig_port):
            # The client matches incoming channels on the exact host and port it asked for.
            return await conn.create_connection(session_factory, listen_host, holder["port"], orig_host, orig_port)

        try:
            listener = await create_tcp_forward_listener(conn, asyncio.get_running_loop(), tunnel,
                                                         self.hub.config.bind, listen_port)
        except OSError as exc:
            log.warning("hub could not listen on %s:%s for %s: %s", self.hub.config.bind, listen_port, self.user,
                        exc.strerror or exc)
            return False
        holder["port"] = listener.get_port()
        log.info("hub: %s forwards %s:%d", self.user, self.hub.config.bind, holder["port"])
        return listener


class Hub:
    def __init__(self, config: HubConfig, host_key: asyncssh.SSHKey) -> None:
        self.config = config
        self.host_key = host_key
        self._server: asyncssh.SSHAcceptor | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.get_port()

    async def start(self) -> None:
        self._server = await asyncssh.create_server(
            lambda: _HubSession(self), self.config.host, self.config.port,
            server_host_keys=[self.host_key], line_editor=False, keepalive_interval=15, keepalive_count_max=3,
            allow_scp=False, agent_forwarding=False, x11_forwarding=False)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

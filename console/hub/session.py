"""One client's connection to the hub, as asyncssh sees it: login, the requests it may make (its own ports, the
announcement) and those it may not (shell, exec, pty, agent, X11, direct-tcpip), each refusal told to the Hub.
The policy and the state shared between connections live in console.hub.server.Hub."""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING

import asyncssh

from console.core import announce, udp_frames
from console.core.keys import fingerprint, public_line
from console.hub import compat, egress

if TYPE_CHECKING:
    from console.hub.server import Hub

ANNOUNCE_SECONDS = 10.0    # an announcement channel that has not finished by then is closed
MAX_CHANNELS = 4           # session channels one connection may hold open at once


class HubConnection(asyncssh.SSHServerConnection):
    """asyncssh decides agent and X11 forwarding in its connection, without asking the SSHServer: here the hub
    refuses them itself, so the refusal is logged like every other."""

    async def create_agent_listener(self) -> bool:
        session = self.get_owner()
        if isinstance(session, HubSession):
            session.hub.refuse(session, "agent forwarding", "agent forwarding")
        return False

    async def attach_x11_listener(self, chan, auth_proto: bytes, auth_data: bytes, screen: int) -> str | None:
        session = self.get_owner()
        if isinstance(session, HubSession):
            session.hub.refuse(session, "X11 forwarding", "X11 forwarding")
        return None


class HubSession(asyncssh.SSHServer):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.conn: asyncssh.SSHServerConnection | None = None
        self.user = "?"
        self.peer = "?"
        self.address = "?"
        self.announced: dict[int, announce.Announced] = {}  # port -> what the client said it leads to
        self.channels = 0                                   # session channels open now (announcements)
        self.auth_failures = 0
        self.logged_in = False
        self.auth_refused = False                           # a failed login was told for this connection

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        compat.use_rfc_kex_guess(conn)  # Dropbear clients: see console/hub/compat.py
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.peer, self.address = f"{peer[0]}:{peer[1]}", str(peer[0])
        self.hub.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.connections.discard(self)
        self.hub.detach(self)
        if not self.logged_in and not self.auth_refused and exc is not None and str(exc) != "Connection lost":
            # A protocol error (a client asyncssh does not get along with, a scanner, not SSH at all), the login
            # grace time: said once per address and minute, with the client's software when it said one.
            software = self.conn.get_extra_info("client_version") if self.conn is not None else None
            said = f" ({_printable(software[:80])})" if software else ""
            reason = _printable((getattr(exc, "reason", None) or str(exc) or type(exc).__name__)[:120])
            self.hub.refuse_address(self.address, "a connection before login",
                                    f"a connection from {self.peer}{said} before login: {reason}")

    def begin_auth(self, username: str) -> bool:
        self.user = username
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        client = self.hub.registry.get(username)
        body = public_line(key)  # type and base64, no comment
        if client is not None and client.enabled and client.key == body:
            return True
        reason = ("unknown client" if client is None else "client disabled (quota 0)" if not client.enabled
                  else "key is not the client's")
        self.auth_failures += 1
        await self.hub.auth_failed(self, username, fingerprint(key), reason)
        tries = self.hub.settings.max_auth_tries
        if self.auth_failures >= tries and self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                                 f"Too many authentication failures ({tries})")
        return False

    def auth_completed(self) -> None:
        self.logged_in = True
        if self.conn is not None:
            self.hub.gate.logged_in(self.conn)
        self.hub.attach(self)

    def session_requested(self):
        if self.channels >= MAX_CHANNELS:
            self.hub.refuse(self, "a session channel", f"a session channel: {MAX_CHANNELS} are open already")
            return False
        held = self.hub.session_channels.get(self.user, 0)
        if held >= self.hub.settings.max_sessions:
            self.hub.refuse(self, "a session channel", f"a session channel: the client holds {held} across its "
                                                       f"connections (max_sessions)")
            return False
        self.channels += 1
        self.hub.session_channels[self.user] = held + 1
        return _AnnounceChannel(self)

    def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
        """Egress (direct-tcpip): only to what hub.egress_allow lists (console.hub.egress)."""
        return egress.tcp_connection(self.hub, self, dest_host, dest_port, orig_host, orig_port)

    def server_requested(self, listen_host: str, listen_port: int):
        return self.hub.open_port(self, listen_host, listen_port)


class _AnnounceChannel(asyncssh.SSHServerSession):
    """The only sessions a client gets: the announcement subsystem, which reads one JSON document and answers,
    and the UDP egress subsystem (console.hub.egress), one flow each. A shell, exec, pty or any other subsystem
    is refused and logged; an announcement that does not finish within ANNOUNCE_SECONDS is closed. Until it
    names its subsystem a channel counts against MAX_CHANNELS and max_sessions; a UDP flow then counts against
    the client's udp_max_flows instead."""

    def __init__(self, session: HubSession) -> None:
        self.session = session
        self.chan: asyncssh.SSHServerChannel | None = None
        self.data = bytearray()
        self.accepted = False
        self.timer: asyncio.TimerHandle | None = None
        self.flow: udp_frames.Flow | None = None   # a UDP egress flow's channel
        self.counted = True                        # against the session channel limits

    def connection_made(self, chan: asyncssh.SSHServerChannel) -> None:
        self.chan = chan
        self.timer = asyncio.get_running_loop().call_later(ANNOUNCE_SECONDS, chan.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.flow is not None:
            self.flow.channel_lost(exc)
        self._uncount()

    def _uncount(self) -> None:
        if not self.counted:
            return
        self.counted = False
        self.session.channels -= 1
        held = self.session.hub.session_channels
        held[self.session.user] = held.get(self.session.user, 1) - 1
        if held[self.session.user] <= 0:
            del held[self.session.user]

    def _refuse_flow(self, reason: str) -> None:
        if self.chan is not None:
            self.chan.write_stderr((reason + "\n").encode())
            self.chan.exit(1)

    def pty_requested(self, term_type, term_size, term_modes) -> bool:
        self.session.hub.refuse(self.session, "a terminal (pty)", "a terminal (pty)")
        return False

    def shell_requested(self) -> bool:
        self.session.hub.refuse(self.session, "a shell", "a shell")
        return False

    def exec_requested(self, command: str) -> bool:
        self.session.hub.refuse(self.session, "exec", f"exec of {command[:80]!r}")
        return False

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem == announce.ANNOUNCE_SUBSYSTEM:
            self.accepted = True
            return True
        if subsystem == udp_frames.UDP_SUBSYSTEM and self.chan is not None:
            if self.timer is not None:
                self.timer.cancel()
            self._uncount()
            flow = egress.udp_flow(self.session.hub, self.session)
            if isinstance(flow, str):  # accepted, then refused in words the unit shows (a failed request has none)
                asyncio.get_running_loop().call_soon(self._refuse_flow, flow)
                return True
            self.flow = flow
            flow.channel_open(self.chan)
            return True
        self.session.hub.refuse(self.session, "a subsystem", f"the subsystem {subsystem[:80]!r}")
        return False

    def data_received(self, data: bytes, datatype) -> None:
        if self.flow is not None:
            self.flow.from_channel(data, datatype)
            return
        if not self.accepted:
            return
        self.data += data
        if len(self.data) > announce.MAX_BYTES:
            self._refused(f"announcement over {announce.MAX_BYTES} bytes")

    def _refused(self, reason: str) -> None:
        # Counted per reason (without the item's index), so each kind of mistake is told once.
        self.session.hub.refuse(self.session, "an announcement: " + re.sub(r"\[\d+\]", "[]", reason),
                                f"an announcement: {reason}")
        self._answer({"ok": False, "error": reason}, 1)

    def pause_writing(self) -> None:
        if self.flow is not None:
            self.flow.set_paused(True)

    def resume_writing(self) -> None:
        if self.flow is not None:
            self.flow.set_paused(False)

    def eof_received(self) -> bool:
        if self.flow is not None:
            self.flow.close()
            return False
        if self.accepted and self.chan is not None:
            try:
                forwards = announce.parse(bytes(self.data))
            except ValueError as exc:
                self._refused(str(exc))
            else:
                self._answer(self.session.hub.record_announcement(self.session, forwards), 0)
        return False

    def _answer(self, reply: dict, status: int) -> None:
        self.accepted = False  # whatever else arrives is ignored
        assert self.chan is not None
        self.chan.write((json.dumps(reply) + "\n").encode())
        self.chan.exit(status)


def _printable(text: str) -> str:
    """The peer chose this text (a disconnect reason, a version string): one line, no control characters."""
    return "".join(char if char.isprintable() else "?" for char in text.strip())

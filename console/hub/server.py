"""The hub: an asyncssh SSH server where registered clients forward their own ports, and nothing else.

- Public-key auth for registered, enabled clients only (the SSH user name is the client_id).
- A client may only ask for its own ports (port 0: its next free one); the hub binds them on the address it
  chooses (`bind`, loopback by default) and echoes the requested host and port back, as the client matches
  incoming channels on that pair.
- No shell, exec, subsystem, SFTP, agent, X11 or direct-tcpip. Every refusal is logged with client, address and
  reason, rate-limited per client (or address) and reason (console.core.log_limit.LogLimiter); repeated failed auth
  from one address is slowed down, and a connection is ended after max_auth_tries failures. The one session a
  client may open is the announcement (console.core.announce): it only reads a JSON list of what the client's
  ports lead to; a client holds at most max_sessions of them across its connections.
- Connections not logged in yet are bounded in total and per address and must log in within login_grace_time;
  the hub accepts through its own loop, which pauses on EMFILE (console.hub.limits).
- A client's newest session takes its ports over from an older one (a peer that died without a FIN), so the
  client never waits for a TCP timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncssh

from console import relay
from console.core import announce, udp_frames
from console.core.egress_allow import EgressAllow
from console.core.errors import os_reason
from console.core.log_limit import LogLimiter
from console.core.words import counted, noun
from console.hub import limits
from console.hub.registry import Client, Registry, port_ranges
from console.hub.session import HubConnection, HubSession
from console.hub.udp_port import HubUdpPort

if TYPE_CHECKING:
    from console.core.config import HubConfig

log = logging.getLogger("console.hub")
FAILURE_WINDOW = 60.0   # seconds a failed auth counts against its address
MAX_AUTH_DELAY = 5.0
MAX_FAILURE_ADDRESSES = 10_000  # addresses with failures remembered before the quiet ones are forgotten
SEEN_FLUSH_SECONDS = 30.0  # last_seen reaches the store this often (and at close), not once per connection
CHANGE_SECONDS = 0.25      # client changes are reported in batches this often (one report per client)...
TRAFFIC_SECONDS = 1.0      # ...and changed counters this often, not once per byte
CLOSE_SECONDS = 0.3        # on shutdown, how long the hub waits for its connections to finish closing
ANNOUNCE_SHOWN = 5         # forwards named in an announcement's log line


@dataclass
class HubSettings:
    host: str = "127.0.0.1"
    port: int = 0
    bind: str = "127.0.0.1"   # where client ports are opened, whatever the client asks
    max_startups: int = 100            # connections not logged in yet, in total (sshd's MaxStartups)...
    max_startups_per_source: int = 10  # ...and from one address (sshd's PerSourceMaxStartups)
    login_grace_time: float = 30.0     # seconds a connection has to log in (sshd's LoginGraceTime)
    max_auth_tries: int = 6            # failed logins on one connection before it is ended (sshd's MaxAuthTries)
    max_sessions: int = 10             # session channels one client may hold open across its connections
    egress_allow: tuple[str, ...] = ()  # where clients may reach through the hub (console.core.egress_allow)
    udp_idle_timeout: float = udp_frames.IDLE_TIMEOUT  # a UDP flow ends after this long without a datagram
    udp_max_flows: int = udp_frames.MAX_FLOWS           # UDP flows one client holds, ingress and egress

    @classmethod
    def from_config(cls, hub: HubConfig) -> HubSettings:
        """From the config's hub: section (what the engine should build the hub's settings with)."""
        return cls(hub.listen_host, hub.listen_port, hub.bind, hub.max_startups, hub.max_startups_per_source,
                   hub.login_grace_time, hub.max_auth_tries, hub.max_sessions, hub.egress_allow)


@dataclass
class HubForward:
    session: HubSession
    listener: _ClientPort
    port: int
    stats: relay.ForwardStats = field(default_factory=relay.ForwardStats)  # in: toward the client's service


class _ClientPort:
    """A client's port on the hub: our own listener, relayed through RelaySession so every connection and byte
    is counted. asyncssh needs only get_port() and close() of it; it calls close() when the client cancels the
    forward (cancel-tcpip-forward) and when the connection ends."""

    def __init__(self, server: asyncio.AbstractServer, port: int, on_close: Callable[[_ClientPort], None]) -> None:
        self.server, self.port, self._on_close = server, port, on_close

    def get_port(self) -> int:
        return self.port

    def close(self) -> None:
        self.server.close()
        self._on_close(self)

    async def wait_closed(self) -> None:
        await self.server.wait_closed()


@dataclass
class _Failures:
    count: int = 0
    last: float = field(default_factory=time.monotonic)


class Hub:
    def __init__(self, settings: HubSettings, registry: Registry, host_key: asyncssh.SSHKey,
                 on_change: Callable[[str, str], None] | None = None,
                 log_event: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.host_key = host_key
        # Where the hub says what happened (clients coming and going, refusals, takeovers, announcements): the
        # engine's tunnel log, which the console's View log shows; without one, this module's logger.
        self.log_event = log_event
        # Told (client_id, "connected, forwards" ...) at most once a CHANGE_SECONDS per client: a storm of
        # 10,000 forwards must not become 10,000 events for every console.
        self.on_change = on_change or (lambda client_id, change: None)
        self._changed: dict[str, set[str]] = {}
        self.connections: set[HubSession] = set()          # every connection, before and after login
        self.sessions: dict[str, list[HubSession]] = {}     # the logged-in ones, by client
        self.forwards: dict[int, HubForward] = {}
        self.session_channels: dict[str, int] = {}           # client -> session channels open, all connections
        self.udp_ports: dict[int, HubUdpPort] = {}           # the clients' UDP ports (ingress UDP)
        self.egress = EgressAllow(settings.egress_allow)
        self.egress_stats: dict[str, relay.ForwardStats] = {}       # client -> its TCP egress connections
        self.egress_flows: dict[str, udp_frames.FlowSet] = {}       # client -> its UDP egress flows
        self.flow_tasks: set[asyncio.Task] = set()
        self._failures: dict[str, _Failures] = {}
        self.gate = limits.Gate(settings.max_startups, settings.max_startups_per_source, settings.login_grace_time,
                                refused=self._refused_at_the_door)
        # Every refusal line goes through here: the first of a kind, then one summary a minute.
        self.quiet = LogLimiter(lambda text: self._say(text, warning=True))
        self._server: limits.Doorway | None = None
        self._tasks: list[asyncio.Task] = []

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.get_port()

    async def start(self) -> None:
        before, now = limits.raise_open_files_limit()
        lowered = self._fit_gate(self.settings)
        self._server = await self._listen_for_clients(self.settings.host, self.settings.port)
        log.info("hub: listening on %s:%d; client ports bind on %s; open files limit %d%s", self.settings.host,
                 self.port, self.settings.bind, now, f" (raised from {before})" if now != before else "")
        if lowered:
            self._say(lowered, warning=True)
        self._tasks = [asyncio.create_task(self._flush_seen()), asyncio.create_task(self._report_changes())]

    async def _listen_for_clients(self, host: str, port: int) -> limits.Doorway:
        return await limits.listen(
            lambda: HubSession(self), host, port, gate=self.gate, connection_class=HubConnection,
            paused=self._accept_paused,
            login_timeout=self.settings.login_grace_time,
            server_host_keys=[self.host_key], line_editor=False, keepalive_interval=15, keepalive_count_max=3,
            allow_scp=False, agent_forwarding=False, x11_forwarding=False, password_auth=False,
            kbdint_auth=False, gss_host=None, server_version=announce.HUB_VERSION,
            encoding=None)  # the announcement channel reads bytes: a bad byte is the client's error, not ours

    async def apply(self, settings: HubSettings) -> list[str]:
        """New settings on a running hub (a reload). A new listen address opens before the old one closes, and
        the clients already connected stay; a new bind applies to the client ports opened from now on.
        OSError (nothing changed) when the new address cannot be opened."""
        changes = []
        if (settings.host, settings.port) != (self.settings.host, self.settings.port):
            old, old_address = self._server, f"{self.settings.host}:{self.port}"
            self._server = await self._listen_for_clients(settings.host, settings.port)
            if old is not None:
                old.close()  # stops accepting; the connections it accepted go on
            changes.append(f"hub listens on {settings.host}:{self.port} instead of {old_address}; connected "
                           f"clients stay")
        if settings.egress_allow != self.settings.egress_allow:
            self.egress = EgressAllow(settings.egress_allow)
            changes.append(f"hub egress allowed to {', '.join(settings.egress_allow) or 'nowhere'} (new "
                           f"connections and UDP flows)")
        if settings.bind != self.settings.bind:
            held = len(self.forwards)
            changes.append(f"hub opens client ports on {settings.bind} instead of {self.settings.bind}"
                           + (f"; {held} forwarded now stay on {self.settings.bind} until their clients reconnect"
                              if held else ""))
        limits_now = (settings.max_startups, settings.max_startups_per_source, settings.login_grace_time,
                      settings.max_auth_tries, settings.max_sessions)
        limits_before = (self.settings.max_startups, self.settings.max_startups_per_source,
                         self.settings.login_grace_time, self.settings.max_auth_tries, self.settings.max_sessions)
        if limits_now != limits_before:
            lowered = self._fit_gate(settings)
            if self._server is not None:
                self._server.options.login_timeout = settings.login_grace_time  # for connections from now on
            changes.append("hub limits now max_startups {}, max_startups_per_source {}, login_grace_time {:g}s, "
                           "max_auth_tries {}, max_sessions {}".format(*limits_now)
                           + (f" ({lowered})" if lowered else ""))
        self.settings = settings
        return changes  # the engine's "configuration reloaded" line carries them

    async def _flush_seen(self) -> None:
        while True:
            await asyncio.sleep(SEEN_FLUSH_SECONDS)
            self.registry.flush()

    def changed(self, client_id: str, change: str) -> None:
        """Note that a client changed ("connected", "quota" ...); on_change hears of it with the next batch."""
        self._changed.setdefault(client_id, set()).add(change)

    async def _report_changes(self) -> None:
        """Tell on_change which clients changed and how, in one batch a CHANGE_SECONDS; counters that moved
        count as a "traffic" change once a TRAFFIC_SECONDS."""
        reported: dict[tuple[str, int], tuple[int, int, int, int]] = {}   # (protocol, port) -> counters
        ticks = 0
        while True:
            await asyncio.sleep(CHANGE_SECONDS)
            self.quiet.tick()  # refusal summaries whose minute is over
            ticks += 1
            if ticks * CHANGE_SECONDS >= TRAFFIC_SECONDS:
                ticks = 0
                live = {("tcp", port): forward for port, forward in self.forwards.items()}
                live.update({("udp", port): udp_port for port, udp_port in self.udp_ports.items()})
                for key, forward in live.items():
                    snap = forward.stats.snapshot()
                    if reported.get(key) != snap:
                        reported[key] = snap
                        self.changed(forward.session.user, "traffic")
                for key in [k for k in reported if k not in live]:
                    del reported[key]
            changed, self._changed = self._changed, {}
            for client_id, changes in sorted(changed.items()):
                self.on_change(client_id, ", ".join(sorted(changes)))

    async def close(self) -> None:
        """Stop listening and end every connection, logged in or not. The connections go first: from Python
        3.12 on, a server's wait_closed() waits for all of them, so waiting before closing them would hang."""
        for task in [*self._tasks, *self.flow_tasks]:
            task.cancel()
        self.quiet.tick(everything=True)
        self.registry.flush()
        if self._server is not None:
            self._server.close()
        self.gate.close()
        for session in list(self.connections):
            if session.conn is not None:
                session.conn.close()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), CLOSE_SECONDS)
            except TimeoutError:
                log.warning("hub: connections still closing after %.1fs; not waiting longer", CLOSE_SECONDS)

    # ------------------------------------------------------------------ sessions

    def attach(self, session: HubSession) -> None:
        self.sessions.setdefault(session.user, []).append(session)
        self.registry.seen(session.user)
        self._say(f"client {session.user} connected from {session.peer}")
        self.changed(session.user, "connected")

    def detach(self, session: HubSession) -> None:
        for forward in list(self.forwards.values()):
            if forward.session is session:
                forward.listener.close()  # and out of self.forwards (_closed)
        for udp_port in list(self.udp_ports.values()):
            if udp_port.session is session:
                udp_port.close()          # and out of self.udp_ports (_udp_closed)
        if session in self.sessions.get(session.user, []):
            self.sessions[session.user].remove(session)
            self._say(f"client {session.user} from {session.peer} disconnected")
            self.changed(session.user, "disconnected")

    def _closed(self, listener: _ClientPort) -> None:
        """A client port closed (the client cancelled it, or its session ended): it is free again."""
        forward = self.forwards.get(listener.port)
        if forward is not None and forward.listener is listener:  # not a newer session's forward of that port
            del self.forwards[listener.port]
            forward.session.announced.pop(listener.port, None)
            self.changed(forward.session.user, "forwards")

    def _udp_closed(self, udp_port: HubUdpPort) -> None:
        if self.udp_ports.get(udp_port.port) is udp_port:
            del self.udp_ports[udp_port.port]
            self.changed(udp_port.session.user, "forwards")

    def udp_flows_of(self, client_id: str) -> int:
        """UDP flows a client holds now, ingress (on all its UDP ports) and egress."""
        client = self.registry.get(client_id)
        ports = [self.udp_ports[p] for p in (client.ports if client else []) if p in self.udp_ports]
        egress_flows = self.egress_flows.get(client_id)
        return sum(len(p.flows.flows) for p in ports) + (len(egress_flows.flows) if egress_flows else 0)

    def disconnect(self, client_id: str, reason: str) -> int:
        """End every live session of a client at once (change 0, remove, a replaced key)."""
        sessions = list(self.sessions.get(client_id, []))
        for session in sessions:
            self._say(f"ending the session of client {client_id} from {session.peer}: {reason}", warning=True)
            if session.conn is not None:
                session.conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason)
        return len(sessions)

    def forwards_of(self, client: Client) -> list[HubForward]:
        """What a client forwards now: its ports are its own, so look only at those (not every forward)."""
        return [self.forwards[port] for port in client.ports if port in self.forwards]

    def record_announcement(self, session: HubSession, forwards: list[announce.Announced]) -> dict:
        """Record what a session says its ports lead to (the whole list: it replaces the last one). Only
        ports this session forwards now are recorded; the rest are answered as ignored, with the reason."""
        recorded: dict[int, announce.Announced] = {}
        ignored = []
        for item in forwards:
            held = self.forwards.get(item.port)
            if held is None or held.session is not session:
                ignored.append({"port": item.port, "reason": "not forwarded by this session"})
            else:
                recorded[item.port] = item
        session.announced = recorded
        said = ", ".join(f"{p} {a.name} -> {a.destination}" for p, a in list(recorded.items())[:ANNOUNCE_SHOWN])
        more = f" and {len(recorded) - ANNOUNCE_SHOWN} more" if len(recorded) > ANNOUNCE_SHOWN else ""
        self._say(f"client {session.user} from {session.peer} announced {said or 'no forwards'}{more}")
        if ignored:
            self.refuse(session, "an announcement for ports it does not forward", f"an announcement for {noun(len(ignored), 'port')} "
                                  f"{', '.join(str(i['port']) for i in ignored)}: not forwarded by this session")
        self.changed(session.user, "announced")
        # where the ports really listen: the client asked for "" or its own bind, the hub chose its own
        return {"ok": True, "recorded": sorted(recorded), "ignored": ignored, "bind": self.settings.bind}

    # ------------------------------------------------------------------ policy

    def _say(self, text: str, *, warning: bool = False) -> None:
        """One line of what happened: to the tunnel log when the engine gave one, else to the logger."""
        if self.log_event is not None:
            self.log_event(text)
        else:
            log.log(logging.WARNING if warning else logging.INFO, "hub: %s", text)

    def refuse(self, session: HubSession, kind: str, what: str) -> None:
        """A refusal: `kind` is what the summary line counts ("exec"), `what` the first line's detail."""
        self.quiet((session.user, kind), f"refused {what} for client {session.user} from {session.peer}",
                   f"refused {kind} for client {session.user} from {session.address}")

    def refuse_port(self, session: HubSession, requested: int, reason: str, *, udp: bool = False) -> None:
        """A forward refused: logged as every refusal is, and the client told why (sshd tells it nothing), as an
        SSH debug message just before the refusal; our units show it instead of their guesses (announce.py)."""
        kind = "a UDP port" if udp else "a port"
        self.refuse(session, kind, f"{kind[2:]} {requested}: {reason}")
        if session.conn is not None:
            session.conn.send_debug(announce.refusal(requested, reason))

    def refuse_address(self, address: str, kind: str, what: str) -> None:
        """A refusal before login: counted per address and kind."""
        self.quiet((address, kind), f"refused {what}", f"refused {kind} from {address}")

    def _fit_gate(self, settings: HubSettings) -> str | None:
        return self.gate.set_limits(settings.max_startups, settings.max_startups_per_source,
                                    settings.login_grace_time, limits.open_files_limit())

    def _refused_at_the_door(self, address: str, why: str) -> None:
        self.refuse_address(address, "a connection", f"a connection from {address}: {why}")

    def _accept_paused(self, exc: OSError) -> None:
        self.quiet(("hub", "out of resources"),
                   f"not accepting connections for {limits.ACCEPT_PAUSE:g}s: {os_reason(exc)} (open files limit "
                   f"{limits.open_files_limit()}, {counted(len(self.connections), 'connection')})",
                   "paused accepting connections, out of resources")

    async def auth_failed(self, session: HubSession, username: str, key_fp: str, reason: str) -> None:
        address = session.peer.rsplit(":", 1)[0]
        session.auth_refused = True
        record = self._failures.get(address)
        now = time.monotonic()
        if record is None or now - record.last > FAILURE_WINDOW:
            if len(self._failures) > MAX_FAILURE_ADDRESSES:  # many addresses: forget the ones gone quiet
                self._failures = {a: r for a, r in self._failures.items() if now - r.last <= FAILURE_WINDOW}
            record = self._failures[address] = _Failures()
        record.count += 1
        record.last = now
        # Failures 1, 2, 3, 4, 8, 16 ... of an address are told: a scanner cannot flood the log.
        if record.count <= 3 or record.count & (record.count - 1) == 0:
            self._say(f"refused auth for {username} from {session.peer} with key {key_fp}: {reason} "
                      f"(failure {record.count} from {address} within {FAILURE_WINDOW:.0f}s)", warning=True)
        if record.count > 3:  # slow down whoever keeps trying
            await asyncio.sleep(min(MAX_AUTH_DELAY, 0.25 * 2 ** (record.count - 4)))

    async def open_port(self, session: HubSession, listen_host: str, listen_port: int):
        """A client's remote forward: one of its own ports (0: the next free one), TCP, or UDP when it asks with
        the listen host UDP_LISTEN_HOST (console.core.udp_frames); the same quota and policy for both."""
        udp = listen_host == udp_frames.UDP_LISTEN_HOST
        table: dict = self.udp_ports if udp else self.forwards
        refuse = (lambda port, reason: self.refuse_port(session, port, reason, udp=udp))
        client = self.registry.get(session.user)
        if client is None or not client.enabled:
            refuse(listen_port, "client no longer enabled")
            return False
        if listen_port == 0:
            free = [p for p in client.ports if p not in table]
            if not free:
                refuse(0, f"{'its one port is' if len(client.ports) == 1 else f'all {len(client.ports)} of its ports are'} forwarded already")
                return False
            # The next free port that can be opened: another program may hold one of the block.
            busy: list[str] = []
            for port in free:
                try:
                    listener = await self._open_listener(session, listen_host, port, udp)
                except OSError as exc:
                    busy.append(f"{port} ({os_reason(exc)})")
                    continue
                if busy:
                    self.quiet((session.user, "busy ports"), f"client {session.user}: {noun(len(busy), 'port')} "
                               f"{', '.join(busy[:ANNOUNCE_SHOWN])} cannot be opened on {self.settings.bind}; "
                               f"gave {port} for port 0", f"client {session.user}: skipped busy ports for port 0")
                return listener
            refuse(0, f"{'its one free port' if len(free) == 1 else f'none of its {len(free)} free ports'} can be opened on {self.settings.bind}: "
                      f"{', '.join(busy[:ANNOUNCE_SHOWN])}")
            return False
        if listen_port not in client.ports:
            refuse(listen_port, f"not one of its ports ({port_ranges(client.ports) or 'none: quota 0'})")
            return False
        port = listen_port
        held = table.get(port)
        if held is not None:
            if held.session is session:
                refuse(listen_port, "already forwarded by this session")
                return False
            # The same client again: its newest session wins; the old one is most likely dead.
            self._say(f"client {session.user} from {session.peer} takes {'UDP ' if udp else ''}port {port} over "
                      f"from its older session from {held.session.peer}", warning=True)
            old = held.session
            self.detach(old)
            if old.conn is not None:
                old.conn.disconnect(asyncssh.DISC_BY_APPLICATION, "replaced by a newer session of this client")
        try:
            return await self._open_listener(session, listen_host, port, udp)
        except OSError as exc:
            refuse(listen_port, f"cannot listen on {self.settings.bind}: {os_reason(exc)}")
            return False

    async def _open_listener(self, session: HubSession, listen_host: str, port: int, udp: bool):
        """Listen on a client's port, TCP or UDP, and record it (OSError when it cannot be opened)."""
        if not udp:
            server, stats = await self._open_client_port(session, listen_host, port)
            return self._forwarding(session, port, server, stats)
        udp_port = await HubUdpPort(self, session, listen_host, port, self._udp_closed).start(self.settings.bind)
        self.udp_ports[port] = udp_port
        log.info("hub: client %s forwards UDP %s:%d", session.user, self.settings.bind, port)
        self.changed(session.user, "forwards")
        return udp_port

    async def _open_client_port(self, session: HubSession, listen_host: str,
                                port: int) -> tuple[asyncio.AbstractServer, relay.ForwardStats]:
        """Listen on a client's port (OSError when it cannot); connections to it go through the session."""
        conn = session.conn
        assert conn is not None
        stats = relay.ForwardStats()

        async def open_channel(session_relay: relay.RelaySession, peer: tuple) -> None:
            # The client matches incoming channels on the exact host and port it asked for (for port 0: the
            # port it was given).
            await conn.create_connection(lambda: session_relay, listen_host, port, str(peer[0]), int(peer[1]),
                                         window=relay.WINDOW, max_pktsize=relay.MAX_PACKET)

        def accepted() -> asyncio.Protocol:
            return relay.AcceptedSide(relay.RelaySession(stats, lambda: None, service_on_channel=True), open_channel)

        return await asyncio.get_running_loop().create_server(accepted, self.settings.bind, port), stats

    def _forwarding(self, session: HubSession, port: int, server: asyncio.AbstractServer,
                    stats: relay.ForwardStats) -> _ClientPort:
        listener = _ClientPort(server, port, self._closed)
        self.forwards[port] = HubForward(session, listener, port, stats)
        log.info("hub: client %s forwards %s:%d", session.user, self.settings.bind, port)
        self.changed(session.user, "forwards")
        return listener

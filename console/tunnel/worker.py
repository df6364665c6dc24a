"""One supervised SSH connection per unit, keeping every configured reverse forward up.

Unit states: stopped, connecting, up, degraded, retrying, auth-failed, host-key-unknown, host-key-mismatch.
Forward states: listening, pending, refused, stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Protocol
import asyncssh

from console.core import announce, udp_frames
from console.core.clock import utc_iso
from console.core.config import ForwardConfig, TunnelConfig, UnitConfig, join_host_port
from console.core.errors import OperationFailed, os_reason
from console.core.events import EventBus, ForwardChanged, ForwardTraffic, UnitStateChanged
from console.core.keys import load_or_create_unit_key, unit_public_key
from console.core.known_hosts import HostKeyCheck, KnownHosts, Verdict, check_host_key, host_key_algorithms
from console.core.paths import StatePaths
from console.core.states import ForwardState, UnitState
from console.core.status import ForwardStatus, UnitStatus
from console.core import ssh_tuning
from console.core.store import Store
from console.core.log_limit import LogLimiter
from console.core.tunnel_log import TunnelLog
from console.core.words import counted, noun
from console import relay
from console.tunnel import diagnose

log = logging.getLogger("console.tunnel")

TRAFFIC_INTERVAL = 1.0
RETRY_LOG_EVERY = 60.0  # seconds between repeated "retrying" lines for the same reason
# A connection that ends sooner than this after it came up counts as a failure, not a clean close, so a
# server that accepts and drops at once is met with backoff instead of a tight loop.
MIN_HEALTHY_SECONDS = 2.0
# The ciphers a unit offers, in this order: AES-GCM first (AES-NI makes it the fastest on x86), the other AEAD
# and CTR ciphers (asyncssh's defaults, OpenSSH's too), then AES-CBC for old servers that have nothing else. Never
# the ones asyncssh still supports but no longer offers by default: 3des-cbc, blowfish-cbc, cast128-cbc,
# seed-cbc, arcfour* (64-bit blocks, a broken stream cipher).
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                     "aes128-ctr", "aes192-ctr", "aes256-ctr", "aes128-cbc", "aes192-cbc", "aes256-cbc")


# The first retries after a failure all come at retry_min: a server restart takes a fraction of a second and a
# refused TCP connect costs nothing, so probing fast at first is what makes recovery quick. Then it doubles.
FAST_RETRIES = 8


def backoff(attempt: int, low: float, high: float) -> float:
    """Delay before retry number `attempt` (0-based): in [d/2, d] with d = low for the first FAST_RETRIES,
    then low * 2, 4, 8 ... capped at high. The jitter keeps many units from retrying in step."""
    ceiling = min(high, low * (2 ** min(max(0, attempt - FAST_RETRIES + 1), 32)))
    return random.uniform(ceiling / 2, ceiling)


class Listener(Protocol):
    """A forward the server listens for: asyncssh's SSHListener, or the OpenSSH transport's (openssh_unit.py)."""

    def get_port(self) -> int: ...

    def close(self) -> None: ...


@dataclass
class WorkerEnv:
    """What a worker needs from the engine."""

    paths: StatePaths
    bus: EventBus
    tunnel_log: TunnelLog
    store: Store
    known_hosts: KnownHosts
    # told of every change of a unit's state: (unit, old state, new state); the engine re-checks the unit's
    # endpoint when it starts or stops failing to log in
    on_state: Callable[[str, str, str], None] | None = None


@dataclass
class ForwardRuntime:
    config: ForwardConfig
    state: str = "stopped"
    error: str | None = None
    port: int | None = None
    stats: relay.ForwardStats = field(default_factory=relay.ForwardStats)
    listener: Listener | None = None
    retry_task: asyncio.Task | None = None
    reported: tuple[int, int, int, int] = (0, 0, 0, 0)
    server_bind: str | None = None  # where the server says it listens (our hub, in its announcement reply)
    # A proxy rule's forward (console.tunnel.ingress): UDP through our hub, or TCP with the rule's own way of
    # choosing a destination per connection (asyncssh's session factory, called with the originator's address).
    udp: udp_frames.FlowSet | None = None
    factory: Callable[[str, int], Awaitable[asyncssh.SSHTCPSession]] | None = None

    @property
    def remote(self) -> str:
        bind = self.server_bind or (None if self.udp else self.config.remote_bind) or "*"
        return join_host_port(bind, self.port if self.port is not None else self.config.remote_port)

    def status(self) -> ForwardStatus:
        return ForwardStatus(self.config.name, self.remote, self.config.local, ForwardState(self.state), self.error,
                             self.stats.open, self.stats.total, self.stats.bytes_in, self.stats.bytes_out)


class _UnitClient(asyncssh.SSHClient):
    def __init__(self, worker: UnitWorker) -> None:
        self._worker = worker

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        ssh_tuning.tune(conn)  # how asyncssh sends and reads packets: see console/core/ssh_tuning.py

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        return self._worker._validate_host_key(key)

    def connection_lost(self, exc: Exception | None) -> None:
        self._worker._lost_reason = exc

    def debug_msg_received(self, msg: str, lang: str, always_display: bool) -> None:
        self._worker.server_debug(msg)


def describe_error(exc: BaseException, server: str, timeout: float) -> str:
    """Turn an exception from connect or a dropped connection into one plain sentence."""
    if isinstance(exc, (diagnose.NotAnSSHServer, diagnose.LinkFailed)):
        return str(exc)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer from {server} within {timeout:g}s"
    if isinstance(exc, asyncssh.ConnectionLost):
        reason = str(exc) or "connection lost"
        if "keepalive" in reason.lower():
            return f"server {server} stopped answering keepalives (dead peer detected)"
        return f"connection to {server} lost: {reason}"
    if isinstance(exc, asyncssh.KeyExchangeFailed):   # a DisconnectError, but raised on our side
        return f"no algorithm in common with {server}: {exc.reason or exc}"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"server {server} disconnected: {exc.reason or exc}"
    if isinstance(exc, OSError):
        return f"cannot reach {server}: {os_reason(exc)}"
    return f"{type(exc).__name__}: {exc}"


class UnitWorker:
    # Proxy rules through this unit are carried over its connection (console/tunnel/carrier.py); a transport
    # that cannot carry UDP says why here, and UDP rules through the unit are refused with these words.
    udp_refusal: str | None = None

    def __init__(self, config: UnitConfig, tunnel: TunnelConfig, env: WorkerEnv) -> None:
        self.config = config
        self.tunnel = tunnel
        self.env = env
        self.name = config.name
        self.state = "stopped"
        self.since = utc_iso()
        self.last_error: str | None = None
        self.next_retry: float | None = None
        self.server_key: str | None = None       # fingerprint presented when the key is unknown or changed
        self.forwards: dict[str, ForwardRuntime] = {f.name: ForwardRuntime(f) for f in config.forwards}
        self._task: asyncio.Task | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._wake = asyncio.Event()
        self._host_check: HostKeyCheck | None = None
        self._lost_reason: Exception | None = None
        self._traffic_task: asyncio.Task | None = None
        self._retries = 0
        self._logged_error: str | None = None
        self._logged_at = 0.0
        self._announce_task: asyncio.Task | None = None
        self._announced: list[announce.Announced] | None = None  # what the hub on this connection was told
        self.hub_refusals: dict[int, str] = {}   # requested port -> why our hub refused it (its debug message)
        self.server_software: str | None = None  # the SSH version string of the server last connected to
        self._server_bind: str | None = None     # where our hub said its ports listen (its announcement reply)
        self._rule_forwards: set[str] = set()     # forwards of proxy rules, added at run time (add_rule_forward)
        self._refusal_lines = LogLimiter(self.log_event, RETRY_LOG_EVERY)  # a forward and reason: a line a minute

    # ------------------------------------------------------------------ public surface

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def server(self) -> str:
        return self.config.server.address

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.create_task(self._run(), name=f"unit-{self.name}")

    async def stop(self, reason: str = "Stopped") -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self._close_connection()
        for fr in self.forwards.values():
            self._set_forward(fr, "stopped", None)
        self.next_retry = None
        if self.state != "stopped":
            self._set_state("stopped", error=None)
            self.log_event(reason)

    def kick(self) -> None:
        """Retry now (after key install or trust): skips the current backoff wait."""
        self._wake.set()

    def status(self) -> UnitStatus:
        return UnitStatus(self.name, UnitState(self.state), self.since, self.server, self.config.username,
                          self.last_error, utc_iso(self.next_retry) if self.next_retry else None, self.server_key,
                          [fr.status() for fr in self.forwards.values()], self.config.endpoint)

    def connected(self) -> asyncssh.SSHClientConnection:
        """The unit's live connection, for what proxy rules carry through it; OperationFailed when it has none."""
        if self._conn is None:
            said = f": {self.last_error}" if self.last_error else ""
            raise OperationFailed(f"unit {self.name} is not connected (state {self.state}{said})")
        return self._conn

    async def add_rule_forward(self, forward: ForwardConfig, *, udp: udp_frames.FlowSet | None = None,
                               factory: Callable[[str, int], Awaitable[asyncssh.SSHTCPSession]] | None = None
                               ) -> ForwardRuntime:
        """A proxy rule's remote forward, opened on the running unit beside the configured ones (none of them is
        touched, and a reload keeps it). Named `rule:PROTO:PORT` (console.tunnel.ingress), which a configured
        forward's name cannot be. `udp`: the flows of a UDP forward (our hub only); `factory`: the rule's own
        session factory for TCP (round robin), else connections go to the forward's local address."""
        if forward.name in self.forwards:
            raise OperationFailed(f"unit {self.name} has a forward named {forward.name} already")
        fr = ForwardRuntime(forward, udp=udp, factory=factory, server_bind=self._server_bind)
        if udp is not None:
            fr.stats = udp.stats  # type: ignore[assignment]  # the same four counters, flows for connections
        self.forwards[forward.name] = fr
        self._rule_forwards.add(forward.name)
        self.log_event(f"forward {forward.name} added")
        if self._conn is not None:
            self._set_forward(fr, "pending", None)
            fr.retry_task = asyncio.create_task(self._keep_forward(self._conn, fr, first_try=True))
        return fr

    async def remove_rule_forward(self, name: str) -> None:
        """Close a proxy rule's forward on the server (its flows end); the other forwards stay as they are."""
        fr = self.forwards.get(name)
        if fr is None or name not in self._rule_forwards:
            raise OperationFailed(f"unit {self.name} has no rule forward named {name}")
        await self._drop_forward(fr)
        if fr.udp is not None:
            fr.udp.close("the rule was removed")
        del self.forwards[name]
        self._rule_forwards.discard(name)
        self.log_event(f"forward {name} removed")
        if self._conn is not None:
            self._update_connected_state()

    async def update_forwards(self, forwards: tuple[ForwardConfig, ...]) -> None:
        """Apply a new forward list without dropping the connection or the unchanged forwards (the forwards of
        proxy rules are not the config's: they stay)."""
        wanted = {f.name: f for f in forwards}
        for name, fr in list(self.forwards.items()):
            if name not in self._rule_forwards and wanted.get(name) != fr.config:
                await self._drop_forward(fr)
                del self.forwards[name]
                self.log_event(f"forward {name} removed")
        conn = self._conn
        for name, forward in wanted.items():
            if name not in self.forwards:
                fr = ForwardRuntime(forward)
                self.forwards[name] = fr
                self.log_event(f"forward {name} added")
                if conn is not None:
                    self._set_forward(fr, "pending", None)
                    fr.retry_task = asyncio.create_task(self._keep_forward(conn, fr, first_try=True))
        self.forwards = {name: self.forwards[name] for name in [*wanted, *self._rule_forwards]}
        self.config = replace(self.config, forwards=forwards)
        if conn is not None:
            self._update_connected_state()

    # ------------------------------------------------------------------ state and events

    def log_event(self, event: str) -> None:
        self.env.tunnel_log.write(self.name, event)

    def _set_state(self, state: str, *, error: str | None = None, next_retry: float | None = None) -> None:
        changed, old = state != self.state, self.state
        self.state = state
        if changed:
            self.since = utc_iso()
        self.last_error = error
        self.next_retry = next_retry
        self.env.bus.publish(UnitStateChanged(
            unit=self.name, state=state, since=self.since, last_error=error,
            next_retry=utc_iso(next_retry) if next_retry else None, server_key=self.server_key))
        if changed and self.env.on_state is not None:
            self.env.on_state(self.name, old, state)

    def _set_forward(self, fr: ForwardRuntime, state: str, error: str | None) -> None:
        if fr.state == state and fr.error == error:
            return
        fr.state, fr.error = state, error
        self.env.bus.publish(ForwardChanged(unit=self.name, forward=fr.config.name, state=state,
                                            remote=fr.remote, error=error))

    def _publish_traffic(self, fr: ForwardRuntime) -> None:
        snap = fr.stats.snapshot()
        if snap != fr.reported:
            fr.reported = snap
            self.env.bus.publish(ForwardTraffic(self.name, fr.config.name, *snap))

    def _update_connected_state(self) -> None:
        self._retries, self._logged_error = 0, None
        down = [fr for fr in self.forwards.values() if fr.state != "listening"]
        if not down:
            if self.state != "up":
                self._set_state("up")
        else:
            reason = "; ".join(f"{fr.config.name} {fr.state}" + (f": {fr.error}" if fr.error else "") for fr in down)
            if self.state != "degraded" or self.last_error != reason:
                self._set_state("degraded", error=reason)
        self._announce_soon()

    # ------------------------------------------------------------------ telling a hub what the forwards are

    def _announcement(self) -> list[announce.Announced]:
        return [announce.Announced(fr.port, fr.config.name, fr.config.local, fr.config.service)
                for fr in self.forwards.values() if fr.state == "listening" and fr.port and fr.udp is None]

    def _announce_soon(self) -> None:
        """Our hub (not a plain sshd) hears what the listening forwards lead to, again whenever that changes."""
        conn = self._conn
        if conn is None or not announce.is_hub(conn.get_extra_info("server_version")):
            return
        if self._announce_task is None or self._announce_task.done():
            self._announce_task = asyncio.create_task(self._announce(conn))

    async def _announce(self, conn: asyncssh.SSHClientConnection) -> None:
        while (forwards := self._announcement()) != self._announced:
            try:
                done = await conn.run(subsystem=announce.ANNOUNCE_SUBSYSTEM, input=announce.encode(forwards),
                                      timeout=self.tunnel.connect_timeout)
                reply = json.loads(done.stdout or "{}")
            except (asyncssh.Error, OSError, TimeoutError, ValueError) as exc:
                reason = describe_error(exc, self.server, self.tunnel.connect_timeout)
                self.log_event(f"could not tell the hub what the forwards lead to: {reason}")
                return
            if not isinstance(reply, dict) or not reply.get("ok"):
                reason = (reply.get("error") if isinstance(reply, dict) else None) or done.stderr or "no reason given"
                self.log_event(f"the hub refused the announcement of the forwards: {reason}")
                return
            self._hub_bind(announce.reply_bind(reply))
            ignored = reply.get("ignored") or []
            if ignored:
                self.log_event(f"the hub ignored the announcement for {noun(len(ignored), 'port')} "
                               + ", ".join(f"{i.get('port')} ({i.get('reason')})" for i in ignored))
            self._announced = forwards

    def _hub_bind(self, bind: str | None) -> None:
        """The hub said where its ports listen: the remote column shows that, not the bind we asked for."""
        self._server_bind = bind or self._server_bind
        for fr in self.forwards.values():
            if bind and fr.server_bind != bind:
                fr.server_bind = bind
                self.env.bus.publish(ForwardChanged(unit=self.name, forward=fr.config.name, state=fr.state,
                                                    remote=fr.remote, error=fr.error))

    # ------------------------------------------------------------------ host keys

    def _validate_host_key(self, key: asyncssh.SSHKey) -> bool:
        server = self.config.server
        check = check_host_key(server, self.env.known_hosts, key)
        if check.verdict is Verdict.UNKNOWN and server.host_key_policy == "accept-new":
            self.env.known_hosts.add(server.host, server.port, key)
            self.env.store.record_host_key(server.address, check.presented, "accept-new", "daemon")
            self.log_event(f"host key {check.presented} of {server.address} recorded on first contact (accept-new)")
            check = HostKeyCheck(Verdict.TRUSTED, check.presented, (check.presented,))
        self._host_check = check
        return check.verdict is Verdict.TRUSTED

    # ------------------------------------------------------------------ the loop

    async def _connect(self) -> asyncssh.SSHClientConnection:
        key = await asyncio.to_thread(load_or_create_unit_key, self.env.paths, self.name)
        server = self.config.server
        self._host_check = None
        self._lost_reason = None
        greeting = diagnose.Greeting()  # what the server says first, should it not be an SSH server
        try:
            return await asyncssh.connect(
                server.host, server.port,
                tunnel=greeting,
                username=self.config.username,
                client_factory=lambda: _UnitClient(self),
                client_keys=[key],
                known_hosts=([], [], []),  # trust nothing by itself: every key goes to _validate_host_key
                # the algorithms of the key we hold for the server first, so it shows that one
                server_host_key_algs=host_key_algorithms(server, self.env.known_hosts),
                config=None, agent_path=None, password=None, kbdint_auth=False, gss_auth=False,
                preferred_auth="publickey",
                keepalive_interval=self.tunnel.keepalive_interval or None,
                keepalive_count_max=self.tunnel.keepalive_count_max,
                connect_timeout=self.tunnel.connect_timeout,
                login_timeout=self.tunnel.connect_timeout,
                encryption_algs=_ciphers(),
                compression_algs=None,
            )
        except (asyncssh.PermissionDenied, asyncssh.HostKeyNotVerifiable):
            raise
        except (asyncssh.Error, OSError) as exc:  # OSError: TimeoutError and a reset too
            not_ssh = diagnose.not_ssh(greeting, server.address)
            if not_ssh is not None:
                raise not_ssh from exc
            raise

    async def _run(self) -> None:
        attempt = 0
        while True:
            if self.state in ("stopped", "up", "degraded"):
                # A unit that is failing keeps its state (and its `since`) while it tries again.
                self._set_state("connecting", error=self.last_error)
            delay: float
            try:
                conn = await self._connect()
            except asyncssh.HostKeyNotVerifiable:
                delay = self.tunnel.retry_max
                self._host_key_refused()
            except asyncssh.PermissionDenied:
                delay = self.tunnel.retry_max
                key = await asyncio.to_thread(unit_public_key, self.env.paths, self.name)
                error = diagnose.auth_refused(self.server, self.name, self.config.username, key.line.split()[0])
                if self.state != "auth-failed" or self.last_error != error:
                    self.log_event(f"auth failed: {error}")
                self.server_key = None
                self._set_state("auth-failed", error=error, next_retry=time.time() + delay)
            except (TimeoutError, OSError, asyncssh.Error) as exc:
                delay = backoff(attempt, self.tunnel.retry_min, self.tunnel.retry_max)
                attempt += 1
                self._retrying(describe_error(exc, self.server, self.tunnel.connect_timeout), delay)
            else:
                self.server_key = None
                started = time.monotonic()
                error = await self._serve(conn)
                healthy = time.monotonic() - started >= MIN_HEALTHY_SECONDS
                if healthy:
                    attempt = 0
                if error is None and healthy:
                    delay = 0.0  # a clean close: come straight back
                    self._retrying(f"server {self.server} closed the connection", delay)
                else:
                    delay = backoff(attempt, self.tunnel.retry_min, self.tunnel.retry_max)
                    attempt += 1
                    self._retrying(error or f"server {self.server} closed the connection at once", delay)
            await self._sleep(delay)

    def _retrying(self, error: str, delay: float) -> None:
        """A line when the reason changes, then at most one a minute while the same reason lasts."""
        now = time.monotonic()
        self._retries += 1
        if error != self._logged_error or now - self._logged_at >= RETRY_LOG_EVERY:
            repeat = f" (attempt {self._retries})" if error == self._logged_error else ""
            self.log_event(f"{error}; retrying in {delay:.1f}s{repeat}")
            self._logged_error, self._logged_at = error, now
        self._set_state("retrying", error=error, next_retry=time.time() + delay)

    def _host_key_refused(self) -> None:
        check = self._host_check
        server = self.config.server
        delay = self.tunnel.retry_max
        if check is None:
            self._retrying("host key could not be verified", delay)
            return
        self.server_key = check.presented
        if check.verdict is Verdict.MISMATCH:
            expected = ", ".join(check.expected)
            error = (f"HOST KEY MISMATCH: {server.address} presented {check.presented}, expected {expected}. "
                     f"Refusing to connect: this may be an attack. If the server's key really changed, verify it "
                     f"and run `sop-console trust {self.name} --replace`")
            if self.state != "host-key-mismatch":
                log.error("unit %s: %s", self.name, error)
                self.log_event(error)
            self._set_state("host-key-mismatch", error=error, next_retry=time.time() + delay)
        else:
            error = (f"host key {check.presented} of {server.address} is not trusted yet: "
                     f"verify it and run `sop-console trust {self.name}`")
            if self.state != "host-key-unknown":
                self.log_event(error)
            self._set_state("host-key-unknown", error=error, next_retry=time.time() + delay)

    async def _sleep(self, delay: float) -> None:
        self._wake.clear()
        if delay <= 0:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except TimeoutError:
            pass

    async def _serve(self, conn: asyncssh.SSHClientConnection) -> str | None:
        """Open every forward, keep the refused ones retrying, wait for the connection to end.

        Returns None after a clean close, else the reason the connection ended."""
        self._conn = conn
        self.server_software = conn.get_extra_info("server_version")
        try:
            results = await asyncio.gather(*(self._open_forward(conn, fr) for fr in self.forwards.values()))
            up = sum(results)
            total = len(results)
            refused = [fr for fr in self.forwards.values() if fr.state == "refused"]
            detail = "".join(f"; {fr.config.name} refused: {fr.error}" for fr in refused)
            count = counted(up, "forward") if up == total else f"{up} of {counted(total, 'forward')}"
            self.log_event(f"Starting: {count} up on {self.server} as {self.config.username}{detail}")
            for fr in refused:
                fr.retry_task = asyncio.create_task(self._keep_forward(conn, fr, first_try=False))
            self._update_connected_state()
            self._traffic_task = asyncio.create_task(self._traffic_loop())
            await conn.wait_closed()
        finally:
            await self._close_connection()
        reason = self._lost_reason
        if reason is None:
            return None
        return describe_error(reason, self.server, self.tunnel.connect_timeout)

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._announced = None
        for task in [self._traffic_task, self._announce_task, *(fr.retry_task for fr in self.forwards.values())]:
            if task is not None and not task.done():
                task.cancel()
        self._traffic_task = self._announce_task = None
        for fr in self.forwards.values():
            fr.retry_task = None
            fr.listener = None
            self._publish_traffic(fr)
            if fr.state != "stopped":
                self._set_forward(fr, "pending", None)
        if conn is not None:
            conn.close()
            try:
                await asyncio.wait_for(conn.wait_closed(), 1.0)
            except Exception:  # noqa: BLE001 - closing a connection that failed: whatever it says, it is gone
                pass

    async def _open_forward(self, conn: asyncssh.SSHClientConnection, fr: ForwardRuntime) -> bool:
        cfg = fr.config
        if fr.state != "refused":  # a retry keeps saying refused (and why) until it listens
            self._set_forward(fr, "pending", None)
        self.hub_refusals.pop(cfg.remote_port, None)
        if fr.udp is not None and not announce.is_hub(self.server_software):
            self._set_forward(fr, "refused", udp_frames.needs_hub(self.name, self.server, self.server_software))
            self.log_event(f"forward {cfg.name} refused: {fr.error}")
            return False
        try:
            listener = await self._listen(conn, fr)
        except (asyncssh.ChannelListenError, asyncssh.Error, OSError) as exc:  # ChannelListenError is no asyncssh.Error
            listener, detail = None, str(exc)
        else:
            detail = ""
        if listener is None:
            error = self.listen_refusal(cfg.remote_bind, cfg.remote_port, detail, udp=fr.udp is not None)
            self._refusal_lines((cfg.name, error), f"forward {cfg.name} refused: {error}",
                                f"forward {cfg.name} refused again")
            self._set_forward(fr, "refused", error)
            return False
        self._refusal_lines.settle(cfg.name)  # what was held back is said before it listens
        fr.listener = listener
        fr.port = listener.get_port()
        self._set_forward(fr, "listening", None)
        self.log_event(f"forward {cfg.name} listening on the server at {fr.remote} -> {cfg.local}")
        return True

    async def _listen(self, conn: asyncssh.SSHClientConnection, fr: ForwardRuntime) -> Listener:
        """Ask the server to listen for one forward; raises with the server's words when it refuses."""
        cfg = fr.config
        factory = fr.factory or relay.session_factory(
            cfg.local_host, cfg.local_port, fr.stats,
            on_change=lambda: self._publish_traffic(fr),
            on_refused=lambda reason: self.log_event(f"forward {cfg.name}: {reason}"))
        bind = udp_frames.UDP_LISTEN_HOST if fr.udp is not None else cfg.remote_bind
        return await conn.create_server(factory, bind, cfg.remote_port,
                                        window=relay.WINDOW, max_pktsize=relay.MAX_PACKET)

    def server_debug(self, msg: str) -> None:
        """The server's SSH_MSG_DEBUG: our hub says why it refuses a port, just before it does."""
        said = announce.parse_refusal(msg)
        if said is not None and len(self.hub_refusals) < 100:
            port, reason = said
            self.hub_refusals[port] = reason

    def listen_refusal(self, bind: str, port: int, detail: str, *, udp: bool = False) -> str:
        """Why the server refused to listen on bind:port: our hub's own words (its debug message just before the
        refusal) when it said them, else what a plain server's silence may mean."""
        where = ("UDP " if udp else "") + join_host_port(bind or "*", port)
        exact = self.hub_refusals.pop(port, None)
        if exact is not None:
            return f"the hub refused to listen on {where}: {exact}"
        return (f"server refused to listen on {where}" + (f" ({detail})" if detail else "")
                + ": the port is held by another session (often a dead one of ours), in use, or not allowed "
                  "(PermitListen, AllowTcpForwarding)")

    async def _keep_forward(self, conn: asyncssh.SSHClientConnection, fr: ForwardRuntime, first_try: bool) -> None:
        """Retry one refused forward on its own, with backoff, while the others stay up."""
        attempt = 0
        if first_try and await self._open_forward(conn, fr):
            self._update_connected_state()
            return
        self._update_connected_state()
        if fr.udp is not None and not announce.is_hub(self.server_software):
            return  # a plain SSH server will not learn UDP by our asking again
        while True:
            await asyncio.sleep(backoff(attempt, self.tunnel.retry_min, self.tunnel.retry_max))
            attempt += 1
            if await self._open_forward(conn, fr):
                self.log_event(f"forward {fr.config.name} recovered after {attempt} retr{'y' if attempt == 1 else 'ies'}")
                self._update_connected_state()
                return

    async def _drop_forward(self, fr: ForwardRuntime) -> None:
        if fr.retry_task is not None and not fr.retry_task.done():
            fr.retry_task.cancel()
        fr.retry_task = None
        if fr.listener is not None:
            fr.listener.close()
            fr.listener = None
        self._set_forward(fr, "stopped", None)

    async def _traffic_loop(self) -> None:
        while True:
            await asyncio.sleep(TRAFFIC_INTERVAL)
            for fr in self.forwards.values():
                self._publish_traffic(fr)
            self._refusal_lines.tick()  # a minute's summary of refused retries


def _ciphers() -> list[str]:
    supported = {a.decode() for a in asyncssh.encryption.get_encryption_algs()}
    return [c for c in PREFERRED_CIPHERS if c in supported]


"""Helpers the tests share, imported as a module (`from support import run, eventually`), not through conftest."""

from __future__ import annotations

import asyncio
import logging
import contextlib
import getpass
import subprocess
from pathlib import Path
import time
from collections.abc import Awaitable, Callable

from sshd import Sshd, free_port

from console.core.config import parse_config
from console.core.keys import load_or_create_key, public_line, unit_public_key
from console.core.paths import StatePaths
from console.core.status import ForwardStatus, UnitStatus
from console.demo import echo_service


def me() -> str:
    return getpass.getuser()


# The transport the units of unit_yaml use (tunnel.transport): the `transport` fixture (tests/conftest.py) runs a
# test once per transport.
TRANSPORT = "asyncssh"


def transport_option() -> str:
    """`, transport: ...` for a `tunnel: {...}` line of a test's own config, when the test runs for the OpenSSH one."""
    return f", transport: {TRANSPORT}" if TRANSPORT != "asyncssh" else ""


def unit_yaml(sshd: Sshd, forwards: dict[str, list[str]], *, policy: str | None = None, pin: bool | str = True,
              tunnel: str = "", users: dict[str, str] | None = None) -> str:
    """A config for units talking to the test sshd. forwards: unit -> ["name remote_port local", ...].
    pin: True pins the sshd's real host key, False pins nothing, a string pins that."""
    if TRANSPORT != "asyncssh":
        tunnel = f"  transport: {TRANSPORT}\n" + tunnel
    server = f"server:\n  host: 127.0.0.1\n  port: {sshd.port}\n"
    if pin:
        server += f"  host_key: {sshd.host_public_key if pin is True else pin}\n"
    if policy:
        server += f"  host_key_policy: {policy}\n"
    text = server + "tunnel:\n  keepalive_interval: 1\n  keepalive_count_max: 2\n  retry_min: 0.05\n" \
                    "  retry_max: 1\n  connect_timeout: 3\n" + tunnel + "units:\n"
    for unit, items in forwards.items():
        text += f"  {unit}:\n    username: {(users or {}).get(unit, me())}\n    forwards:\n"
        for item in items:
            name, remote, local = item.split()
            text += f"      - {{name: {name}, remote_port: {remote}, remote_bind: 127.0.0.1, local: '{local}'}}\n"
    return text


def authorize_units(sshd: Sshd, state: StatePaths, units, user: str | None = None) -> None:
    for unit in units:
        sshd.authorize(user or me(), unit_public_key(state, unit).line)


@contextlib.asynccontextmanager
async def running_engine(sshd: Sshd, state: StatePaths, forwards: dict[str, list[str]], *, authorize: bool = True,
                         **yaml_options):
    """An engine with units for the test sshd (see unit_yaml), shut down however the test ends."""
    from console.engine import Engine

    cfg = config_of(unit_yaml(sshd, forwards, **yaml_options))
    if authorize:
        authorize_units(sshd, state, cfg.units)
    engine = Engine(cfg, state)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.shutdown()


def started_sshd(root: Path, **options) -> Sshd:
    """A test sshd with options of its own (the sshd fixture takes none), started; in CI a missing sshd fails."""
    import os

    import pytest
    from sshd import find_sshd

    if find_sshd() is None:
        if os.environ.get("CI"):
            pytest.fail("sshd is missing in CI: install openssh-server (make test does)")
        pytest.skip("sshd not installed (apt-get install openssh-server)")
    return Sshd(root, **options).start()


def hub_config(state, *, allow: tuple[str, ...] = (), quota: int = 2) -> tuple[str, list[int]]:
    """A config running a hub on loopback and the unit `master` logged in to it as client `acme` (registered in
    the state dir's store with `quota` ports, the hub's key pinned); `allow`: hub.egress_allow. Returns the config
    text and the client's ports."""
    from console.core.store import Store
    from console.demo import _free_range
    from console.hub.registry import Registry

    low, high = _free_range(quota + 1)
    hub_port = free_port()
    store = Store(state.database)
    ports = Registry(store, (low, high), quota).add("acme", unit_public_key(state, "master").line).ports
    store.close()
    hub_key = public_line(load_or_create_key(state.hub_key, "hub"))
    allowed = "[" + ", ".join(f"'{a}'" for a in allow) + "]"
    text = (f"server: {{host: 127.0.0.1, port: {hub_port}, host_key: '{hub_key}'}}\n"
            "tunnel: {keepalive_interval: 1, retry_min: 0.05, retry_max: 1, connect_timeout: 3"
            f"{transport_option()}}}\n"
            f"hub: {{listen: '127.0.0.1:{hub_port}', ports: '{low}-{high}', default_quota: {quota}, "
            f"egress_allow: {allowed}}}\n"
            "units:\n  master:\n    username: acme\n")
    return text, ports


@contextlib.asynccontextmanager
async def hub_and_unit(state, *, allow: tuple[str, ...] = (), quota: int = 2):
    """An engine running a hub on loopback and the unit `master` (client `acme`, `quota` ports) logged in to it;
    yields (engine, worker, client ports) once the unit is up."""
    from console.engine import Engine

    text, ports = hub_config(state, allow=allow, quota=quota)
    engine = Engine(config_of(text), state)
    await engine.start()
    try:
        await eventually(lambda: unit_of(engine, "master").state == "up", timeout=15, what="master up")
        yield engine, engine.workers["master"], ports
    finally:
        await engine.shutdown()


def run(coro: Awaitable, timeout: float = 60):
    """Run one async test body with an overall deadline."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


async def eventually(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02,
                     what: str = "condition"):
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


class EchoServer:
    """The demo's echo service on a free loopback port: one echo service for the demo and the tests."""

    def __init__(self) -> None:
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def __aenter__(self) -> EchoServer:
        self.server = await asyncio.start_server(echo_service, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()


async def roundtrip(port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        async def send():
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
        sender = asyncio.create_task(send())
        data = b""
        while len(data) < len(payload):
            chunk = await asyncio.wait_for(reader.read(1 << 20), timeout)
            if not chunk:
                break
            data += chunk
        await sender
        return data
    finally:
        writer.close()


def forward_port(engine, unit: str, name: str) -> int:
    port = fwd_of(engine, unit, name).port
    if port is None:
        raise KeyError((unit, name))
    return port


def unit_of(engine, unit: str) -> UnitStatus:
    found = engine.status().unit(unit)
    assert found is not None, f"no unit {unit}"
    return found


def fwd_of(engine, unit: str, name: str) -> ForwardStatus:
    found = unit_of(engine, unit).forward(name)
    assert found is not None, f"no forward {unit}/{name}"
    return found


def config_of(text: str):
    return parse_config(text, "test.yaml")


class HubLog(logging.Handler):
    """The hub's log lines (logger console.hub) while in a with block."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> HubLog:
        logging.getLogger("console.hub").addHandler(self)
        logging.getLogger("console.hub").setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("console.hub").removeHandler(self)


def as_user(user: str, home: Path, *cmd: str | Path, **kwargs) -> subprocess.CompletedProcess:
    """Run a command as a local user with a minimal login-like environment (no root's PATH or HOME)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "USER": user,
           **kwargs.pop("env", {})}
    return subprocess.run([str(c) for c in cmd], user=user, group=user, extra_groups=[], env=env, cwd=home,
                          capture_output=True, text=True, timeout=kwargs.pop("timeout", 30), **kwargs)


class _UdpEchoProtocol(asyncio.DatagramProtocol):
    def __init__(self, echo: UdpEcho) -> None:
        self.echo = echo

    def connection_made(self, transport) -> None:
        self.echo.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.echo.received += 1
        self.echo.sources.add(addr)
        if self.echo.answer:
            self.echo.transport.sendto(data, addr)


class UdpEcho:
    """A UDP echo service on a free loopback port: each datagram goes back to its sender, counted
    (`answer=False`: a sink that only counts)."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None
        self.received = 0
        self.sources: set = set()
        self.port = 0

    async def __aenter__(self) -> UdpEcho:
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: _UdpEchoProtocol(self),
                                                                  local_addr=("127.0.0.1", 0))
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.transport.close()


class _UdpClientProtocol(asyncio.DatagramProtocol):
    def __init__(self, client: UdpClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr) -> None:
        self.client.replies.put_nowait(data)


class UdpClient:
    """A UDP socket of its own toward host:port (one flow): send, and the replies in the order they came."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.address = (host, port)
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> UdpClient:
        self.transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _UdpClientProtocol(self), remote_addr=self.address)
        return self

    async def __aexit__(self, *exc) -> None:
        self.transport.close()

    @property
    def source(self) -> tuple:
        return self.transport.get_extra_info("sockname")

    def send(self, payload: bytes) -> None:
        self.transport.sendto(payload)

    async def reply(self, timeout: float = 5.0) -> bytes:
        return await asyncio.wait_for(self.replies.get(), timeout)

    async def exchange(self, payload: bytes, timeout: float = 5.0) -> bytes:
        """Send one datagram and wait for the next reply."""
        self.send(payload)
        return await self.reply(timeout)


def oplog_entries(state: StatePaths) -> list[dict]:
    """The operation log's entries (their JSON form), oldest first, read from the state dir's file."""
    from console.core.oplog import OpLog, OpQuery

    log = OpLog(state.oplog, read_only=True)
    try:
        return [entry.to_json() for entry in reversed(list(log.entries(OpQuery())))]
    finally:
        log.close()

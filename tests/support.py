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

from sshd import Sshd

from console.core.config import parse_config
from console.core.keys import unit_public_key
from console.core.paths import StatePaths
from console.core.status import ForwardStatus, UnitStatus
from console.demo import echo_service


def me() -> str:
    return getpass.getuser()


def unit_yaml(sshd: Sshd, forwards: dict[str, list[str]], *, policy: str | None = None, pin: bool | str = True,
              tunnel: str = "", users: dict[str, str] | None = None) -> str:
    """A config for units talking to the test sshd. forwards: unit -> ["name remote_port local", ...].
    pin: True pins the sshd's real host key, False pins nothing, a string pins that."""
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


def oplog_entries(state: StatePaths) -> list[dict]:
    """The operation log's entries (their JSON form), oldest first, read from the state dir's file."""
    from console.core.oplog import OpLog, OpQuery

    log = OpLog(state.oplog, read_only=True)
    try:
        return [entry.to_json() for entry in reversed(list(log.entries(OpQuery())))]
    finally:
        log.close()

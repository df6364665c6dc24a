from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Awaitable, Callable

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sshd import Sshd, find_sshd  # noqa: E402

from console.core.config import parse_config  # noqa: E402
from console.core.keys import unit_public_key  # noqa: E402
from console.core.paths import StatePaths  # noqa: E402

IN_CI = bool(os.environ.get("CI"))
os.environ["TEXTUAL_ANIMATIONS"] = "none"  # console tests and snapshots must not depend on animation timing


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No test reads the developer's own config, state or ssh setup."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.delenv("SOP_CONSOLE_CONFIG", raising=False)
    monkeypatch.delenv("SOP_CONSOLE_STATE", raising=False)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    (tmp_path / "home").mkdir()


def _need_sshd() -> None:
    if find_sshd() is None:
        if IN_CI:
            pytest.fail("sshd is missing in CI: .ci/run must install openssh-server")
        pytest.skip("sshd not installed (apt-get install openssh-server)")


@pytest.fixture
def sshd(tmp_path):
    _need_sshd()
    server = Sshd(tmp_path / "sshd").start()
    yield server
    server.stop()


@pytest.fixture
def password_sshd(tmp_path):
    _need_sshd()
    server = Sshd(tmp_path / "sshd-pw", password_auth=True).start()
    yield server
    server.stop()


@pytest.fixture
def state(tmp_path) -> StatePaths:
    return StatePaths(tmp_path / "state").prepare()


@pytest.fixture
def local_user():
    """A real local user with a password and its own home, for key install (needs root)."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("key install tests need root in CI")
        pytest.skip("creating a local user needs root")
    name = f"sopt{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    base = Path(tempfile.mkdtemp(prefix="sop-home-"))  # pytest's tmp dirs are root-only: the user must enter
    os.chmod(base, 0o755)
    home = base / name
    subprocess.run(["useradd", "-m", "-d", str(home), "-s", "/bin/sh", name], check=True)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
    try:
        yield name, password, home
    finally:
        subprocess.run(["userdel", "-r", "-f", name], stderr=subprocess.DEVNULL)
        shutil.rmtree(base, ignore_errors=True)


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
    def __init__(self) -> None:
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def __aenter__(self) -> EchoServer:
        async def echo(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()
        self.server = await asyncio.start_server(echo, "127.0.0.1", 0)
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
    for u in engine.status()["units"]:
        if u["name"] == unit:
            for f in u["forwards"]:
                if f["name"] == name:
                    return int(f["remote"].rsplit(":", 1)[1])
    raise KeyError((unit, name))


def unit_of(engine, unit: str) -> dict:
    return next(u for u in engine.status()["units"] if u["name"] == unit)


def fwd_of(engine, unit: str, name: str) -> dict:
    return next(f for f in unit_of(engine, unit)["forwards"] if f["name"] == name)


def config_of(text: str):
    return parse_config(text, "test.yaml")

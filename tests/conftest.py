from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# tests/ on the path for every test folder: `support` (helpers) and `sshd` (the real sshd) are modules
sys.path.insert(0, str(Path(__file__).parent))
from sshd import Sshd, find_sshd  # noqa: E402

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


@pytest.fixture(params=["asyncssh", "openssh"])
def transport(request, monkeypatch) -> str:
    """Run the test once per tunnel.transport: the units of support.unit_yaml use it."""
    import support

    monkeypatch.setattr(support, "TRANSPORT", request.param)
    return request.param


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


@contextlib.contextmanager
def _local_account():
    """A real local user with a password and its own home (needs root): (name, password, home)."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("tests with a local user need root in CI")
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


@pytest.fixture
def local_user():
    """A real local user with a password and its own home, for key install (needs root)."""
    with _local_account() as user:
        yield user


@pytest.fixture
def another_local_user():
    """A second one, for tests where one account acts for another (set-up auth by key through sudo)."""
    with _local_account() as user:
        yield user

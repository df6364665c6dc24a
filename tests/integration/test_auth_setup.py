"""Set-up auth for an endpoint (console/tunnel/auth_setup.py), each method for real and each run twice: by
password (a throwaway user's password on an sshd that takes passwords), by key (the operator's own key, for
root and for a user with password-less sudo acting for another account), and by script (the printed script run
with `sh` as root here, the test sshd's machine). Each ends with the check saying available, and the key is in
the account's authorized_keys once, with the modes and owner sshd wants."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from sshd import authorize_in_home
from support import as_user, run

from console.core.config import ServerConfig
from console.core.errors import OperationFailed
from console.core.keys import key_body, load_or_create_key, public_line
from console.core.known_hosts import KnownHosts
from console.core.states import EndpointReason
from console.tunnel import key_install
from console.tunnel.auth_setup import check_after_script, setup_by_key, setup_by_password, setup_script
from console.tunnel.endpoint_check import check_login

IN_CI = bool(os.environ.get("CI"))
TIMEOUT = 5.0


def _pinned(server) -> ServerConfig:
    return ServerConfig("127.0.0.1", server.port, host_key=server.host_public_key)


class Endpoint:
    """The arguments every set-up takes for one endpoint: its name, server, user, unit key and known hosts."""

    def __init__(self, server, username: str, tmp_path: Path) -> None:
        self.server = _pinned(server)
        self.username = username
        self.key_path = tmp_path / "keys" / "master_ed25519"
        self.known = KnownHosts(tmp_path / "known_hosts")

    @property
    def args(self) -> tuple:
        return "edge", self.server, self.username, self.key_path, self.known

    def check(self):
        return run(check_login(*self.args, unit="master", timeout=TIMEOUT))

    def line(self) -> str:
        return public_line(load_or_create_key(self.key_path, "sop-console-master"), "sop-console-master")


def _authorized(home: Path, user: str, line: str) -> int:
    """How often the key is in the user's authorized_keys, after checking its modes and owner."""
    entry = pwd.getpwnam(user)
    ssh_dir, keys = home / ".ssh", home / ".ssh" / "authorized_keys"
    for path, mode in ((ssh_dir, 0o700), (keys, 0o600)):
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == mode, (path, oct(info.st_mode))
        assert (info.st_uid, info.st_gid) == (entry.pw_uid, entry.pw_gid), path
    return keys.read_text().count(key_body(line))


def _operator_key(tmp_path: Path) -> Path:
    """The operator's own private key (an OpenSSH file, as ssh-keygen writes it)."""
    path = tmp_path / "operator" / "id_ed25519"
    path.parent.mkdir(mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator", "-f", str(path)], check=True)
    return path


# ------------------------------------------------------------------------------------------------- by password

def test_setup_by_password_twice(password_sshd, local_user, tmp_path):
    user, password, home = local_user
    endpoint = Endpoint(password_sshd, user, tmp_path)
    assert endpoint.check().reason is EndpointReason.NO_KEY
    asked = []

    async def ask() -> str:
        asked.append(1)
        return password

    text, check = run(setup_by_password(*endpoint.args, ask, unit="master", timeout=TIMEOUT))
    assert text.startswith("installed the key of unit master (SHA256:") and text.endswith(
        f"for {user} on 127.0.0.1:{password_sshd.port}, logged in as {user} with a password")
    assert check.available, check
    assert asked == [1]
    assert _authorized(home, user, endpoint.line()) == 1

    async def never() -> str:
        raise AssertionError("a password was asked although key login works")

    text, check = run(setup_by_password(*endpoint.args, never, unit="master", timeout=TIMEOUT))
    assert text.startswith("the key of unit master (SHA256:") and "was already authorized" in text
    assert check.available
    assert _authorized(home, user, endpoint.line()) == 1


def test_setup_by_password_refused(password_sshd, local_user, tmp_path):
    user, _, home = local_user
    endpoint = Endpoint(password_sshd, user, tmp_path)

    async def wrong() -> str:
        return "not-the-password"

    with pytest.raises(OperationFailed, match=f"refused the password for {user}") as failed:
        run(setup_by_password(*endpoint.args, wrong, unit="master", timeout=TIMEOUT))
    assert "not-the-password" not in failed.value.message
    assert not (home / ".ssh").exists()


# ------------------------------------------------------------------------------------------------------ by key

def test_setup_by_key_as_root_for_another_user_twice(sshd, local_user, tmp_path):
    user, _, home = local_user
    identity = _operator_key(tmp_path)
    sshd.authorize("root", identity.with_suffix(".pub").read_text())
    endpoint = Endpoint(sshd, user, tmp_path)
    assert not (home / ".ssh").exists()

    text, check = run(setup_by_key(*endpoint.args, identity, login_user="root", unit="master", timeout=TIMEOUT))
    assert text.startswith("installed the key of unit master (SHA256:")
    assert text.endswith(f"for {user} on 127.0.0.1:{sshd.port}, logged in as root with {identity}")
    assert check.available, check
    assert _authorized(home, user, endpoint.line()) == 1

    text, check = run(setup_by_key(*endpoint.args, identity, login_user="root", unit="master", timeout=TIMEOUT))
    assert "was already authorized" in text and check.available
    assert _authorized(home, user, endpoint.line()) == 1


@pytest.fixture
def sudoer(another_local_user):
    """A second throwaway user allowed `sudo` without a password (a drop-in removed afterwards)."""
    if shutil.which("sudo") is None:
        if IN_CI:
            pytest.fail("sudo is missing in CI: make test installs it")
        pytest.skip("sudo not installed (apt-get install sudo)")
    name, _, home = another_local_user
    rule = Path("/etc/sudoers.d") / f"sop-test-{name}"
    rule.write_text(f"{name} ALL=(ALL) NOPASSWD: ALL\n")
    os.chmod(rule, 0o440)
    try:
        yield name, home
    finally:
        rule.unlink(missing_ok=True)


def test_setup_by_key_through_password_less_sudo_twice(sshd, local_user, sudoer, tmp_path):
    user, _, home = local_user
    admin, _ = sudoer
    identity = _operator_key(tmp_path)
    authorize_in_home(admin, identity.with_suffix(".pub").read_text())
    endpoint = Endpoint(sshd, user, tmp_path)
    for outcome in (f"logged in as {admin} with {identity}", "was already authorized"):
        text, check = run(setup_by_key(*endpoint.args, identity, login_user=admin, unit="master",
                                       timeout=TIMEOUT))
        assert outcome in text, text
        assert check.available, check
        assert _authorized(home, user, endpoint.line()) == 1
    assert text.startswith("the key of unit master")


def test_setup_by_key_without_sudo_rights_says_what_sudo_said(sshd, local_user, another_local_user, tmp_path):
    user, _, home = local_user
    plain, _, _ = another_local_user
    identity = _operator_key(tmp_path)
    authorize_in_home(plain, identity.with_suffix(".pub").read_text())
    endpoint = Endpoint(sshd, user, tmp_path)
    with pytest.raises(OperationFailed) as failed:
        run(setup_by_key(*endpoint.args, identity, login_user=plain, unit="master", timeout=TIMEOUT))
    message = failed.value.message
    assert f"{plain} cannot act for {user}" in message and "`sudo -n` did not run the install" in message
    assert "sudo:" in message and "password" in message  # sudo's own words: "a password is required"
    assert not (home / ".ssh").exists()


def test_setup_by_key_with_a_key_the_server_refuses(sshd, local_user, tmp_path):
    user, _, _ = local_user
    identity = _operator_key(tmp_path)  # authorized nowhere
    endpoint = Endpoint(sshd, user, tmp_path)
    with pytest.raises(OperationFailed, match=f"refused the key {identity} \\(SHA256:.*\\) for root"):
        run(setup_by_key(*endpoint.args, identity, login_user="root", unit="master", timeout=TIMEOUT))


def test_setup_by_key_with_an_unknown_host_key_refuses_to_log_in(sshd, local_user, tmp_path):
    user, _, home = local_user
    identity = _operator_key(tmp_path)
    sshd.authorize("root", identity.with_suffix(".pub").read_text())
    endpoint = Endpoint(sshd, user, tmp_path)
    endpoint.server = ServerConfig("127.0.0.1", sshd.port)  # nothing pinned, nothing known: strict refuses
    with pytest.raises(OperationFailed, match="is not trusted yet"):
        run(setup_by_key(*endpoint.args, identity, login_user="root", unit="master", timeout=TIMEOUT))
    assert not (home / ".ssh").exists()


# --------------------------------------------------------------------------------------------------- by script

def _run_script(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "setup.sh"
    path.write_text(script)
    return subprocess.run(["sh", str(path)], capture_output=True, text=True, timeout=30)


def test_setup_by_script_run_as_root_twice(password_sshd, local_user, tmp_path):
    user, _, home = local_user
    endpoint = Endpoint(password_sshd, user, tmp_path)
    before = endpoint.check()
    assert before.reason is EndpointReason.NO_KEY
    line = endpoint.line()
    assert endpoint.check().reason is EndpointReason.PUBLICKEY

    script = setup_script(line, user, sshd_part='echo "sshd settings: nothing to change"\n')
    assert script.startswith("#!/bin/sh\n") and "set -eu\n" in script
    first = _run_script(script, tmp_path)
    assert first.returncode == 0, first.stderr
    out = first.stdout.splitlines()
    assert f"created {home}/.ssh" in out and f"added the key to {home}/.ssh/authorized_keys" in out
    assert out[-2:] == ["sshd settings: nothing to change", "sop-console: done"]  # the sshd part comes after
    text, check = run(check_after_script(*endpoint.args, unit="master", timeout=TIMEOUT))
    assert check.available, check
    assert text == f"the key of unit master logs in as {user} on 127.0.0.1:{password_sshd.port} now"

    second = _run_script(script, tmp_path)
    assert second.returncode == 0, second.stderr
    assert f"the key is already in {home}/.ssh/authorized_keys" in second.stdout
    assert "created" not in second.stdout
    assert _authorized(home, user, line) == 1
    assert run(check_after_script(*endpoint.args, unit="master", timeout=TIMEOUT))[1].available


def test_the_script_refuses_to_run_as_another_user_and_stops_at_a_failure(local_user, tmp_path):
    user, _, home = local_user
    line = public_line(load_or_create_key(tmp_path / "k", "sop-console-master"), "sop-console-master")
    path = home / "setup.sh"
    path.write_text(setup_script(line, user))
    not_root = as_user(user, home, "sh", path)
    assert not_root.returncode == 1 and "run this script as root" in not_root.stderr
    assert not (home / ".ssh").exists()

    failing = _run_script(setup_script(line, user, sshd_part="false\necho never\n"), tmp_path)
    assert failing.returncode != 0 and "never" not in failing.stdout and "sop-console: done" not in failing.stdout


def test_the_script_refuses_a_planted_link(local_user, tmp_path):
    """Run as root in the user's home, a link the user made would otherwise hand the user any file."""
    user, _, home = local_user
    target = tmp_path / "root-only"
    target.write_text("secret\n")
    os.chmod(target, 0o600)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").symlink_to(target)
    line = public_line(load_or_create_key(tmp_path / "k", "sop-console-master"), "sop-console-master")
    done = _run_script(setup_script(line, user), tmp_path)
    assert done.returncode == 3 and "is a symbolic link: refusing to follow it" in done.stderr
    assert target.read_text() == "secret\n" and target.stat().st_uid == 0


def test_what_is_put_in_a_script_is_checked():
    line = public_line(load_or_create_key(Path(os.environ["HOME"]) / "k", "sop-console-master"), "c")
    with pytest.raises(ValueError, match="user name"):
        key_install.authorized_keys_script(line, "bob; rm -rf /")
    with pytest.raises(ValueError, match="public key line"):
        key_install.authorized_keys_script(line + "\nssh-ed25519 AAAA attacker", "bob")
    with pytest.raises(ValueError, match="public key line"):
        setup_script("not a key", "bob")
    # a comment that is not plain is left out rather than quoted into authorized_keys
    script = key_install.authorized_keys_script(line.rsplit(" ", 1)[0] + " $(reboot)", "bob")
    assert "reboot" not in script

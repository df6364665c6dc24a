"""The operator's SSH login, as README "Operator logins" sets it up: a real sshd with exactly the README's Match
block, a throwaway local user logging in with a key through the real `ssh` client, the installed `sop-console`
(`make install`) and a daemon running as that user. The console appears on `ssh -tt`; the read-only commands run;
a shell command, sftp and `ssh -L` are refused."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import socket
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
from sshd import Sshd, find_sshd, free_port

REPO = Path(__file__).resolve().parents[2]
README_STATE = "/var/lib/sop-console"
README_CONFIG = "/etc/sop-console/console.yaml"
README_COMMAND = "/usr/local/bin/sop-console"


def readme_match_block() -> str:
    """The README's Match block, as written there (indentation of the Markdown list removed)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Operator logins"):]
    found = re.search(r"```\n(\s*Match User operator\n.*?)\s*```", section, re.S)
    assert found, "README's Operator logins has no Match User operator block"
    lines = found.group(1).splitlines()
    indent = len(lines[0]) - len(lines[0].lstrip())
    return "\n".join(line[indent:] for line in lines)


def test_the_readme_block_has_what_the_login_needs():
    block = readme_match_block()
    for line in ("Match User operator", f"ForceCommand {README_COMMAND} --config {README_CONFIG} --state-dir "
                 f"{README_STATE}", "PermitTTY yes", "AllowTcpForwarding no", "X11Forwarding no",
                 "AllowAgentForwarding no"):
        assert line in [part.strip() for part in block.splitlines()], line


class Login:
    """What a test needs to log in as the operator."""

    def __init__(self, sshd: Sshd, user: str, key: Path, known_hosts: Path, state: Path) -> None:
        self.sshd, self.user, self.key, self.known_hosts, self.state = sshd, user, key, known_hosts, state

    def options(self) -> list[str]:
        return ["-F", "/dev/null", "-i", str(self.key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "ConnectTimeout=10"]

    def ssh(self, *args: str) -> list[str]:
        return ["ssh", *self.options(), "-p", str(self.sshd.port), *args, f"{self.user}@127.0.0.1"]

    def run(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([*self.ssh(), *command], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)


def _wait(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def login(installed, local_user, tmp_path):
    """sshd with the README's block for the throwaway user, a key for it, and its daemon on its own state dir."""
    if find_sshd() is None:
        if os.environ.get("CI"):
            pytest.fail("sshd is missing in CI: .ci/run must install openssh-server")
        pytest.skip("sshd not installed (apt-get install openssh-server)")
    name, _, home = local_user
    uid, gid = int(subprocess.check_output(["id", "-u", name])), int(subprocess.check_output(["id", "-g", name]))
    state, config = home / "state", home / "console.yaml"
    state.mkdir(mode=0o700)
    config.write_text(f"server: {{host: 127.0.0.1, port: {free_port()}}}\n"  # nobody there: the unit retries
                      "units:\n  master: {ssh_port: 10022}\n")
    for path in (state, config):
        os.chown(path, uid, gid)

    key = tmp_path / "operator_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, uid, gid)

    block = (readme_match_block().replace("Match User operator", f"Match User {name}")
             .replace(README_COMMAND, str(installed.command)).replace(README_CONFIG, str(config))
             .replace(README_STATE, str(state)))
    # sftp is served (internal-sftp) so that refusing it is the ForceCommand's doing, not a missing subsystem
    server = Sshd(tmp_path / "sshd", extra="Subsystem sftp internal-sftp", match=block).start()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{server.port} {server.host_public_key}\n")

    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    daemon = subprocess.Popen([str(installed.command), "daemon", "--config", str(config), "--state-dir", str(state)],
                              user=name, group=name, extra_groups=[], env=env, cwd=home,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: (state / "control.sock").exists() or daemon.poll() is not None, 20, "the daemon's socket")
        assert daemon.poll() is None, f"the daemon ended: {daemon.stderr.read()}"
        yield Login(server, name, key, known_hosts, state)
    finally:
        server.stop()
        daemon.terminate()
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _as_controlling_terminal() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_ssh_login_opens_the_console(login):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(login.ssh("-tt"), stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            preexec_fn=_as_controlling_terminal,
                            env={**os.environ, "TERM": "xterm-256color"})
    os.close(slave)
    screen = b""

    def read(until: bytes, timeout: float) -> bool:
        nonlocal screen
        end = time.monotonic() + timeout
        while until not in screen and time.monotonic() < end:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    screen += os.read(master, 65536)
                except OSError:  # the session is gone
                    break
        return until in screen

    try:
        assert read(b" Clients", 30), f"the console never drew its menu: {screen[-2000:]!r}"
        assert read(b"master", 15), "the console never showed the daemon's unit"  # the status comes after the menu
        os.write(master, b"q")
        assert read(b"tunnels keep running in the daemon", 15), screen[-2000:]
        proc.wait(timeout=10)
        assert proc.returncode == 0
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_read_only_commands_run(login):
    done = login.run("status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert [unit["name"] for unit in status["units"]] == ["master"]

    done = login.run("log", "-n", "1")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1


def test_everything_else_is_refused(login, tmp_path):
    marker = tmp_path / "marker"
    for command in ("rm -rf /", "id", f"touch {marker}", f"status; touch {marker}", "status --state-dir /tmp"):
        done = login.run(command)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stderr.startswith("sop-console: this login runs the console, or only:"), done.stderr
        assert len(done.stderr.splitlines()) == 1 and not done.stdout
    assert not marker.exists()

    sftp = subprocess.run(["sftp", *login.options(), "-b", "-", "-P", str(login.sshd.port),
                           f"{login.user}@127.0.0.1"], input="ls /\n", capture_output=True, text=True, timeout=30)
    assert sftp.returncode != 0 and not sftp.stdout, sftp.stdout
    # sftp says only "Connection closed"; its subsystem request through ssh shows whose refusal that was: the
    # ForceCommand ran and exited 2 (sshd drops a subsystem's stderr, so the exit code is what comes back)
    subsystem = subprocess.run([*login.ssh("-s"), "sftp"], capture_output=True, text=True, timeout=30,
                               stdin=subprocess.DEVNULL)
    assert subsystem.returncode == 2 and not subsystem.stdout, subsystem
    assert "forced-command (config)" in login.sshd.log_path.read_text()

    local = free_port()
    forward = subprocess.Popen([*login.ssh("-N", "-L", f"127.0.0.1:{local}:127.0.0.1:{login.sshd.port}")],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", local), timeout=1).close()
                return True
            except OSError:
                return False
        _wait(listening, 15, "ssh -L to listen")
        with socket.create_connection(("127.0.0.1", local), timeout=5) as conn:
            conn.settimeout(10)
            assert conn.recv(100) == b"", "the forward reached sshd: ssh -L was allowed"
    finally:
        forward.terminate()
        _, err = forward.communicate(timeout=10)
    assert "administratively prohibited" in err, err

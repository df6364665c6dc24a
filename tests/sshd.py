"""A real OpenSSH sshd on 127.0.0.1 for tests and benchmarks: own config, host key, AuthorizedKeysFile,
free port, all in one temp dir. Nothing here touches the system's sshd."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def find_sshd() -> str | None:
    for path in SSHD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("sshd")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                if sock.recv(4).startswith(b"SSH"):
                    return
        except OSError:
            pass
        if time.monotonic() > end:
            raise TimeoutError(f"nothing answers SSH on 127.0.0.1:{port}")
        time.sleep(0.02)


def children(pid: int) -> list[int]:
    """Every descendant of pid (sshd's per-connection processes call setsid, so a process group won't do)."""
    by_parent: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        by_parent.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Sshd:
    def __init__(self, root: Path, *, password_auth: bool = False, extra: str = "", match: str = "") -> None:
        binary = find_sshd()
        if binary is None:
            raise RuntimeError("sshd not found: install openssh-server")
        self.binary = binary
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password_auth = password_auth
        self.extra = extra
        self.match = match
        self.proc: subprocess.Popen | None = None
        self.authorized = root / "authorized"
        self.authorized.mkdir(exist_ok=True)
        self.host_key = root / "host_ed25519"
        self.make_host_key()
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    def make_host_key(self) -> None:
        for path in (self.host_key, self.host_key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)], check=True)

    @property
    def host_public_key(self) -> str:
        return " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])

    @property
    def config_path(self) -> Path:
        return self.root / "sshd_config"

    @property
    def log_path(self) -> Path:
        return self.root / "sshd.log"

    def write_config(self) -> None:
        yes_no = "yes" if self.password_auth else "no"
        defaults = f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {self.root}/sshd.pid
AuthorizedKeysFile {self.authorized}/%u .ssh/authorized_keys
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication {yes_no}
KbdInteractiveAuthentication no
PermitRootLogin yes
AllowTcpForwarding yes
GatewayPorts no
ClientAliveInterval 0
MaxStartups 200
MaxSessions 50
LogLevel VERBOSE
"""
        # A keyword in `extra` replaces the default line: sshd takes the first value for most keywords and the
        # last for some (MaxStartups), so both orders would silently lose one. A Match block goes in `match`.
        overridden = {line.split()[0].lower() for line in self.extra.splitlines() if line.split()}
        kept = [line for line in defaults.splitlines() if line.split()[0].lower() not in overridden]
        self.config_path.write_text("\n".join([*kept, self.extra, self.match, ""]))

    def effective(self) -> dict[str, str]:
        """What this sshd really runs with, as `sshd -T` prints it (keywords in lower case)."""
        done = subprocess.run([self.binary, "-T", "-f", str(self.config_path)], capture_output=True, text=True,
                              check=True)
        return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)

    def authorize(self, user: str, public_line: str) -> None:
        path = self.authorized / user
        with open(path, "a") as handle:
            handle.write(public_line.strip() + "\n")
        os.chmod(path, 0o600)

    def start(self) -> Sshd:
        self.write_config()
        self.proc = subprocess.Popen([self.binary, "-D", "-e", "-f", str(self.config_path)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log_path, "ab"),
                                     start_new_session=True)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"sshd did not start: {self.log_path.read_text()[-2000:]}") from None
        return self

    def session_pids(self) -> list[int]:
        return children(self.proc.pid) if self.proc else []

    def stop(self) -> None:
        """Kill the listener and every session it spawned (a full server restart, not a reload)."""
        if self.proc is None:
            return
        pids = self.session_pids()
        for pid in [self.proc.pid, *pids]:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

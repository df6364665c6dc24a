"""Real SSH servers on 127.0.0.1 for tests and benchmarks, each with its own config, host keys and free port in a
temp dir: OpenSSH's sshd (own AuthorizedKeysFile) and Dropbear's dropbear. Nothing here touches the system's
sshd or anyone's ~/.ssh (Dropbear reads the user's own ~/.ssh/authorized_keys: give it a throwaway user)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
DROPBEAR_TOOLS = ("dropbear", "dbclient", "dropbearkey", "dropbearconvert")  # Debian's package dropbear-bin


def find_sshd() -> str | None:
    for path in SSHD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("sshd")


def find_dropbear(tool: str = "dropbear") -> str | None:
    for folder in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"):
        if os.access(f"{folder}/{tool}", os.X_OK):
            return f"{folder}/{tool}"
    return shutil.which(tool)


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


def authorize_in_home(user: str, public_line: str) -> None:
    """Append a key to a local user's own ~/.ssh/authorized_keys (0600 in 0700, owned by the user): what
    Dropbear reads, and OpenSSH's second AuthorizedKeysFile here (the first, in the test's root-only temp dir,
    cannot be read by sshd acting as a user other than root)."""
    import pwd
    entry = pwd.getpwnam(user)
    ssh_dir = Path(entry.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    path = ssh_dir / "authorized_keys"
    with open(path, "a") as handle:
        handle.write(public_line.strip() + "\n")
    os.chmod(path, 0o600)
    for item in (ssh_dir, path):
        os.chown(item, entry.pw_uid, entry.pw_gid)


class Sshd:
    def __init__(self, root: Path, *, password_auth: bool = False, extra: str = "", match: str = "",
                 more_host_keys: tuple[str, ...] = ()) -> None:
        """extra: sshd_config lines that replace the defaults' lines of the same keyword. match: a Match block
        (last). more_host_keys: key types ("rsa", "ecdsa") the server holds besides its ed25519 key (host_key,
        the one host_public_key shows and tests pin)."""
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
        self.more_host_keys = [root / f"host_{kind}" for kind in more_host_keys]
        self.make_host_key()
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    def make_host_key(self) -> None:
        for path in (self.host_key, self.host_key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)], check=True)
        for path in self.more_host_keys:
            if not path.exists():
                kind = path.name.split("_", 1)[1]
                subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)

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
        more_keys = "".join(f"HostKey {path}\n" for path in self.more_host_keys)
        defaults = f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
{more_keys}PidFile {self.root}/sshd.pid
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


class Dropbear:
    """Dropbear's server (`dropbear -F -E`) on a free loopback port with its own host keys (ed25519 unless told).
    It logs users in with their own ~/.ssh/authorized_keys: `authorize` writes there, so use a throwaway user.
    Same surface as Sshd for the tests' unit configs: port, host_public_key, authorize, log_path."""

    def __init__(self, root: Path, *, key_types: tuple[str, ...] = ("ed25519",)) -> None:
        binary = find_dropbear("dropbear")
        if binary is None:
            raise RuntimeError("dropbear not found: install dropbear-bin")
        self.binary = binary
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host_keys = [root / f"dropbear_{kind}_host_key" for kind in key_types]
        for path, kind in zip(self.host_keys, key_types):
            subprocess.run([find_dropbear("dropbearkey") or "dropbearkey", "-t", kind, "-f", str(path)],
                           check=True, capture_output=True)
        self.proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "dropbear.log"

    @property
    def host_public_key(self) -> str:
        """The first host key as an OpenSSH public key line ("ssh-ed25519 AAAA...")."""
        out = subprocess.run([find_dropbear("dropbearkey") or "dropbearkey", "-y", "-f", str(self.host_keys[0])],
                             check=True, capture_output=True, text=True).stdout
        line = next(line for line in out.splitlines() if line.startswith(("ssh-", "ecdsa-")))
        return " ".join(line.split()[:2])

    def authorize(self, user: str, public_line: str) -> None:
        authorize_in_home(user, public_line)

    def start(self) -> Dropbear:
        args = [self.binary, "-F", "-E", "-s", "-p", f"127.0.0.1:{self.port}", "-P", str(self.root / "pid")]
        for path in self.host_keys:
            args += ["-r", str(path)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "ab"),
                                     start_new_session=True)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"dropbear did not start: {self.log_path.read_text()[-2000:]}") from None
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        for pid in [self.proc.pid, *children(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=5)
        self.proc = None

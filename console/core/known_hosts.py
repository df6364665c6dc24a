"""The state dir's known_hosts: OpenSSH format, so `ssh -o UserKnownHostsFile=...` reads it too.

A host is written as OpenSSH writes it: ``host`` for port 22, ``[host]:port`` otherwise.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from pathlib import Path

import asyncssh
from asyncssh.public_key import get_default_public_key_algs

from console.core.config import ServerConfig
from console.core.keys import fingerprint, parse_public_key, public_line
from console.core.paths import atomic_write


class Verdict(enum.Enum):
    TRUSTED = "trusted"
    UNKNOWN = "unknown"
    MISMATCH = "mismatch"


@dataclass(frozen=True)
class HostKeyCheck:
    verdict: Verdict
    presented: str                  # fingerprint of the key the server showed
    expected: tuple[str, ...] = ()  # fingerprints we hold for that server (pin or known_hosts)


def host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class KnownHosts:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    def keys_for(self, host: str, port: int) -> list[asyncssh.SSHKey]:
        pattern = host_pattern(host, port).lower()
        found = []
        for line in self._lines():
            fields = line.split()
            if len(fields) < 3 or line.lstrip().startswith(("#", "@")):
                continue
            if pattern in (p.lower() for p in fields[0].split(",")):
                key = parse_public_key(" ".join(fields[1:3]))
                if key is not None:
                    found.append(key)
        return found

    def add(self, host: str, port: int, key: asyncssh.SSHKey, *, replace: bool = False) -> None:
        pattern = host_pattern(host, port)
        kept = []
        for line in self._lines():
            fields = line.split()
            if replace and fields and pattern.lower() in (p.lower() for p in fields[0].split(",")):
                continue
            kept.append(line)
        kept.append(f"{pattern} {public_line(key)}")
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(self.path, ("\n".join(kept) + "\n").encode(), mode=0o600)


def check_host_key(server: ServerConfig, known: KnownHosts, key: asyncssh.SSHKey) -> HostKeyCheck:
    """Decide on a presented host key: a pin wins over known_hosts; a differing key is a mismatch."""
    presented = fingerprint(key)
    if server.host_key:
        pin = server.host_key.strip()
        if pin.startswith("SHA256:"):
            expected = pin.rstrip("=")
            ok = presented.rstrip("=") == expected
        else:
            pinned = parse_public_key(pin)
            expected = fingerprint(pinned) if pinned else pin
            ok = pinned is not None and pinned.public_data == key.public_data
        return HostKeyCheck(Verdict.TRUSTED if ok else Verdict.MISMATCH, presented, (expected,))
    held = known.keys_for(server.host, server.port)
    if not held:
        return HostKeyCheck(Verdict.UNKNOWN, presented)
    if any(k.public_data == key.public_data for k in held):
        return HostKeyCheck(Verdict.TRUSTED, presented, tuple(fingerprint(k) for k in held))
    return HostKeyCheck(Verdict.MISMATCH, presented, tuple(fingerprint(k) for k in held))


# Host key algorithms in OpenSSH's order (ed25519 and ECDSA before RSA), without certificate types: a unit trusts
# no CA, so a certificate could only fail. asyncssh's own default puts RSA first.
PREFERRED_HOST_KEY_ALGS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                           "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
                           "rsa-sha2-512", "rsa-sha2-256")


def held_keys(server: ServerConfig, known: KnownHosts) -> list[asyncssh.SSHKey]:
    """The keys we hold for a server, as check_host_key judges: the pinned key, else known_hosts. A pin by
    fingerprint names no key type: none."""
    if server.host_key:
        pinned = parse_public_key(server.host_key.strip())
        return [pinned] if pinned is not None else []
    return known.keys_for(server.host, server.port)


def host_key_algorithms(server: ServerConfig, known: KnownHosts) -> list[str]:
    """The host key algorithms to offer a server (asyncssh.connect's server_host_key_algs), in order: those of the
    keys we already hold for it first, then the rest in OpenSSH's order. A server presents the first one it
    has, so one with both RSA and ed25519 keys shows the key we know instead of the one it lists first (which
    would look like a changed key), and a server whose key really changed type still shows it: a mismatch."""
    default = [a.decode() for a in get_default_public_key_algs()]
    ordered = [a for a in PREFERRED_HOST_KEY_ALGS if a in default] + \
              [a for a in default if a not in PREFERRED_HOST_KEY_ALGS]
    held = {a.decode() for key in held_keys(server, known) for a in key.sig_algorithms}
    return [a for a in ordered if a in held] + [a for a in ordered if a not in held]


class _KeyCatcher(asyncssh.SSHClient):
    """Keeps the host key a server presents and its SSH software, then refuses it: nothing logs in."""

    def __init__(self) -> None:
        self.conn: asyncssh.SSHClientConnection | None = None
        self.key: asyncssh.SSHKey | None = None
        self.software: str | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.key = key
        if self.conn is not None:
            self.software = self.conn.get_extra_info("server_version")
        return False


async def fetch_host_key(server: ServerConfig, algorithms: list[str], timeout: float, *,
                         tunnel: object = None) -> tuple[asyncssh.SSHKey | None, str | None]:
    """The host key a server presents now and its SSH version string ("SSH-2.0-OpenSSH_9.2p1"), on one connection
    that stops at the key exchange (asyncssh.get_server_host_key gives the key alone). `tunnel`: asyncssh's, e.g.
    console.tunnel.diagnose.Greeting to keep what a server that is not one said."""
    catcher = _KeyCatcher()
    try:
        conn = await asyncio.wait_for(asyncssh.connect(
            server.host, server.port, tunnel=tunnel, known_hosts=([], [], []), server_host_key_algs=algorithms,
            client_factory=lambda: catcher, username="sop-console-trust", client_keys=None, agent_path=None,
            password=None, kbdint_auth=False, gss_auth=False, config=None, connect_timeout=timeout), timeout)
    except asyncssh.HostKeyNotVerifiable:
        pass
    except asyncssh.Error:
        if catcher.key is None:
            raise
    else:  # a server that authenticates a key-less client: the key was seen, the session is not needed
        conn.abort()
    return catcher.key, catcher.software

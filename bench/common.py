"""Shared bench pieces: the test suite's sshd, a threaded echo/sink service, probes, a unit runner process."""

from __future__ import annotations

import getpass
import os
import socket
import socketserver
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from sshd import Sshd, free_port  # noqa: E402,F401

USER = getpass.getuser()


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class EchoService:
    """A plain threaded echo server: the appliance's local service, outside the process under test."""

    def __init__(self) -> None:
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def echo_ok(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"ping")
            return sock.recv(4) == b"ping"
    except OSError:
        return False


def wait_echo(port: int, deadline: float) -> float | None:
    """Seconds until a round trip through `port` works, polling every 10 ms; None past the deadline."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        if echo_ok(port, timeout=0.2):
            return time.monotonic() - start
        time.sleep(0.01)
    return None


def make_client_key(path: Path) -> str:
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text()


def unit_config(sshd: Sshd, forwards: list[tuple[str, int, int]], keepalive: float = 1, count: int = 2,
                transport: str = "asyncssh") -> str:
    lines = [f"server: {{host: 127.0.0.1, port: {sshd.port}, host_key: '{sshd.host_public_key}'}}",
             f"tunnel: {{keepalive_interval: {keepalive}, keepalive_count_max: {count}, retry_min: 0.1, retry_max: 5, "
             f"transport: {transport}}}",
             "units:", "  master:", f"    username: {USER}", "    forwards:"]
    for name, remote, local in forwards:
        lines.append(f"      - {{name: {name}, remote_port: {remote}, remote_bind: 127.0.0.1, "
                     f"local: '127.0.0.1:{local}'}}")
    return "\n".join(lines) + "\n"


def stats(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.3f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def env_without_agent() -> dict:
    env = dict(os.environ)
    env.pop("SSH_AUTH_SOCK", None)
    return env

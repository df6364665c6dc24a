"""Throughput through one forward: ours beside OpenSSH's own `ssh -R`, same sshd, same cipher (aes128-gcm).

A client on the server side sends SIZE bytes into the forwarded port; the local service (a sink) counts them
and answers one byte when all have arrived. Then the other way: the local service sends SIZE bytes out.
Reported: MB/s for each tool and variant, and the ratio to OpenSSH. Target: >= 0.8x of OpenSSH.

    .venv/bin/python bench/throughput.py [--mb 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, USER, Sshd, env_without_agent, free_port, make_client_key, table, unit_config

CHUNK = 1 << 20
OPENSSH = "OpenSSH ssh -R"
VARIANTS = [
    ("ours, asyncssh defaults (2 MiB window, 32 KiB packets)", ["--window", str(2 << 20), "--packet", "32768"]),
    ("ours, 8 MiB window, 256 KiB packets (shipped)", []),
    ("ours, shipped + uvloop", ["--uvloop"]),
    ("experiment: shipped, no per-packet MSG_IGNORE", ["--no-ignore-packets"]),
]


class Service(threading.Thread):
    """The appliance's local service: as a sink it reads SIZE bytes then answers b'k'; as a source it sends SIZE."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def run(self) -> None:
        buf = bytearray(CHUNK)
        payload = memoryview(bytes(CHUNK))
        while True:
            conn, _ = self.listener.accept()
            with conn:
                first = conn.recv(1)  # 's' = sink test, 'o' = source test, 'p' = probe; then 8 bytes of size
                size = int.from_bytes(_recv_exact(conn, 8), "big") if first in (b"s", b"o") else 0
                if first == b"s":
                    drain(conn, size, buf)
                    conn.sendall(b"k")
                elif first == b"o":
                    left = size
                    while left > 0:
                        n = conn.send(payload[:min(left, CHUNK)])
                        left -= n
                elif first == b"p":
                    conn.sendall(b"p")


def drain(conn: socket.socket, size: int, buf: bytearray) -> int:
    """Read and drop up to `size` bytes; how many arrived."""
    got = 0
    while got < size:
        n = conn.recv_into(buf)
        if not n:
            break
        got += n
    return got


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def probe(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"p")
            return s.recv(1) == b"p"
    except OSError:
        return False


def one_run(port: int, size: int, direction: str) -> float:
    payload = memoryview(bytes(CHUNK))
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.perf_counter()
        if direction == "in":
            s.sendall(b"s" + size.to_bytes(8, "big"))
            left = size
            while left > 0:
                left -= s.send(payload[:min(left, CHUNK)])
            assert s.recv(1) == b"k"
        else:
            s.sendall(b"o" + size.to_bytes(8, "big"))
            got = drain(s, size, bytearray(CHUNK))
            assert got == size, got
        return size / (time.perf_counter() - start) / 1e6


def wait_up(port: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not probe(port):
        if time.monotonic() > end:
            raise RuntimeError(f"forward on {port} never came up")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    size = args.mb * 1024 * 1024
    tmp = Path(tempfile.mkdtemp(prefix="sop-bench-tp-"))
    service = Service()
    service.start()
    sshd = Sshd(tmp / "sshd", extra="Ciphers aes128-gcm@openssh.com").start()
    procs: list[subprocess.Popen] = []
    ports: dict[str, int] = {}
    try:
        key = tmp / "client"
        sshd.authorize(USER, make_client_key(key))
        ports[OPENSSH] = free_port()
        procs.append(subprocess.Popen(
            ["ssh", "-N", "-i", str(key), "-p", str(sshd.port), "-c", "aes128-gcm@openssh.com",
             "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={tmp}/kh", "-o", "StrictHostKeyChecking=no",
             "-R", f"127.0.0.1:{ports[OPENSSH]}:127.0.0.1:{service.port}", f"{USER}@127.0.0.1"],
            env=env_without_agent(), stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # Every variant runs at once, each its own unit process, state dir and port; they are measured in turn.
        for i, (label, extra) in enumerate(VARIANTS):
            port = ports[label] = free_port()
            state = tmp / f"state{i}"
            config = tmp / f"console{i}.yaml"
            config.write_text(unit_config(sshd, [("app", port, service.port)], keepalive=5, count=3))
            subprocess.run([sys.executable, "-m", "console", "--state-dir", str(state), "--config", str(config),
                            "key", "show", "master"], check=True, capture_output=True, cwd=ROOT)
            sshd.authorize(USER, (state / "keys" / "master_ed25519.pub").read_text())
            procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench" / "_unit_runner.py"), "--config",
                                           str(config), "--state", str(state), *extra],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports.values():
            wait_up(port)
            one_run(port, size // 8, "in")  # warm up
        # Round robin: a slow stretch of this shared machine hits every tool alike.
        speeds = {label: {"in": [], "out": []} for label in ports}
        for _ in range(args.rounds):
            for label, port in ports.items():
                for direction in ("in", "out"):
                    speeds[label][direction].append(one_run(port, size, direction))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(5)
        sshd.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def ratio(label: str, direction: str) -> float:
        mine, base = speeds[label][direction], speeds[OPENSSH][direction]
        return statistics.median(m / b for m, b in zip(mine, base, strict=True))

    rows = [[label, f"{statistics.median(r['in']):.0f}", f"{ratio(label, 'in'):.2f}x",
             f"{statistics.median(r['out']):.0f}", f"{ratio(label, 'out'):.2f}x"] for label, r in speeds.items()]
    print(f"Throughput through one forward, {args.mb} MiB per run, {args.rounds} rounds round-robin, aes128-gcm")
    print(table(rows, ["tool", "in MB/s", "in vs OpenSSH", "out MB/s", "out vs OpenSSH"]))
    print("in = server side -> local service; out = local service -> server side. Ratios: median of the")
    print("per-round ratios. Target: >= 0.8x OpenSSH.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

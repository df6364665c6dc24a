"""Throughput and CPU per megabyte through one forward: our daemon beside OpenSSH's own `ssh -R`, same server (an
OpenSSH sshd unless told), same cipher (aes128-gcm), same rounds.

A client on the server side sends SIZE bytes into the forwarded port; the local service (a sink) counts them
and answers one byte when all have arrived ("in": toward the appliance's service). Then the other way: the
local service sends SIZE bytes out ("out"). Every tool runs at once, each its own process and forwarded port;
they are measured in turn, round robin, so a slow stretch of this shared machine hits every tool alike.

Reported per direction: MB/s (median) and its ratio to `ssh -R` (median of the per-round ratios); the CPU the
tool's process (and its children) spent per MB, from /proc/PID/stat (utime + stime + cutime + cstime) read
before and after each run, beside `ssh`'s; its minor page faults per MB (buffers handed back to the kernel and
faulted in again, console/core/malloc.py) and its memory after the last round. A second `ssh -R` is measured
as the noise reference: its ratio to the first says how far two identical OpenSSH runs differ in this run.
The 1-minute load average is recorded with every round, and the CPU the machine's other users took during the
runs; both are printed with the figures (the machine is shared: prefer runs below a load of 2).

Targets (issue 15): the asyncssh transport >= 0.7x of `ssh -R` both directions, CPU per MB <= 2x `ssh`'s; the
openssh transport >= 0.8x (stretch 0.95x), CPU per MB <= 1.5x `ssh`'s (its ssh child counted with the daemon).

    .venv/bin/python bench/throughput.py [--transport asyncssh,openssh] [--server sshd|hub] [--mb 256] [--rounds 7]
                                         [--variants shipped,...]

--variants picks our daemons to measure (see VARIANTS: each is the product with bench/_unit_runner.py flags);
--transport picks how our daemons carry the forwards (tunnel.transport; both by default, in the same rounds);
--server hub puts our own hub (a hub-only daemon as shipped) where sshd was, every tool a client of its own: there
the peer sends what it reads at once, in packets up to the size the receiver allows (sshd: 32 KiB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, USER, Sshd, env_without_agent, free_port, make_client_key, table
from sshd import children, wait_port

CHUNK = 1 << 20
CIPHER = "aes128-gcm@openssh.com"
OPENSSH = "ssh -R"
OPENSSH_AGAIN = "ssh -R, again (noise reference)"
TICK = os.sysconf("SC_CLK_TCK")

# Our daemon as shipped, and the settings tried for issue 15 (each: bench/_unit_runner.py flags).
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "shipped": ("ours, as shipped", []),
    "old": ("ours, before issue 15 (8 MiB window, 256 KiB packets, MSG_IGNORE, glibc malloc)",
            ["--window", str(8 << 20), "--packet", str(256 << 10), "--keep-ignore", "--malloc", "glibc",
             "--in-slice", "0", "--read-size", "0", "--packet-log"]),
    "defaults": ("asyncssh defaults (2 MiB window, 32 KiB packets)", ["--window", str(2 << 20), "--packet", "32768"]),
    "w4": ("4 MiB window, 32 KiB packets", ["--window", str(4 << 20), "--packet", "32768"]),
    "w8": ("8 MiB window, 32 KiB packets", ["--window", str(8 << 20), "--packet", "32768"]),
    "w16": ("16 MiB window, 32 KiB packets", ["--window", str(16 << 20), "--packet", "32768"]),
    "p64": ("8 MiB window, 64 KiB packets", ["--window", str(8 << 20), "--packet", str(64 << 10)]),
    "p256": ("8 MiB window, 256 KiB packets", ["--window", str(8 << 20), "--packet", str(256 << 10)]),
    "p128": ("8 MiB window, 128 KiB packets", ["--window", str(8 << 20), "--packet", str(128 << 10)]),
    "w16p256": ("16 MiB window, 256 KiB packets", ["--window", str(16 << 20), "--packet", str(256 << 10)]),
    "w2p256": ("2 MiB window, 256 KiB packets", ["--window", str(2 << 20), "--packet", str(256 << 10)]),
    "s32": ("shipped, asyncssh reads 32 KiB slices", ["--in-slice", str(32 << 10)]),
    "s128": ("shipped, asyncssh reads 128 KiB slices", ["--in-slice", str(128 << 10)]),
    "whole": ("shipped, asyncssh reads what arrives in one piece", ["--in-slice", "0"]),
    "glibc": ("shipped, glibc's malloc defaults", ["--malloc", "glibc"]),
    "m512k": ("shipped, malloc mmap 512 KiB, trim 4 MiB", ["--malloc", f"{512 << 10}:{4 << 20}"]),
    "m1m2m": ("shipped, malloc mmap 1 MiB, trim 2 MiB", ["--malloc", f"{1 << 20}:{2 << 20}"]),
    "m4m": ("shipped, malloc mmap 4 MiB, trim 32 MiB", ["--malloc", f"{4 << 20}:{32 << 20}"]),
    "ignore": ("shipped, asyncssh's MSG_IGNORE kept", ["--keep-ignore"]),
    "r256k": ("shipped, asyncio's own 256 KiB reads", ["--read-size", "0"]),
    "r1m": ("shipped, 1 MiB reads", ["--read-size", str(1 << 20)]),
    "r2m": ("shipped, 2 MiB reads", ["--read-size", str(2 << 20)]),
    "loud": ("shipped, asyncssh's per-packet debug line formatted", ["--packet-log"]),
    "before": ("shipped, 256 KiB reads and the per-packet debug line (as before both)",
               ["--read-size", "0", "--packet-log"]),
    "uvloop": ("shipped, on uvloop's event loop", ["--uvloop"]),
}


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


def _stat(pid: int) -> tuple[int, int]:
    """(CPU ticks, minor page faults) of a process and its descendants: utime + stime (+ cutime + cstime of the
    children it reaped), minflt (+ cminflt)."""
    ticks = faults = 0
    for each in (pid, *children(pid)):
        try:
            with open(f"/proc/{each}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(value) for value in fields[11:15])  # fields 14-17 of proc(5), counted from 1
        faults += int(fields[7]) + int(fields[8])            # fields 10-11
    return ticks, faults


def cpu_seconds(pid: int) -> float:
    return _stat(pid)[0] / TICK


def busy_seconds() -> float:
    """CPU time the whole machine has spent busy (every core: /proc/stat's first line, idle and iowait left out)."""
    with open("/proc/stat") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICK


class Others:
    """How much of the machine the other users took while a run went on, in cores: the machine's busy time less
    that of this bench and its descendants (every tool, sshd and its sessions)."""

    def __init__(self) -> None:
        self.cores: list[float] = []

    def start(self) -> None:
        self._at, self._busy, self._ours = time.perf_counter(), busy_seconds(), cpu_seconds(os.getpid())

    def stop(self) -> None:
        took = time.perf_counter() - self._at
        ours = cpu_seconds(os.getpid()) - self._ours
        self.cores.append(max(0.0, busy_seconds() - self._busy - ours) / took)


def transfer(s: socket.socket, size: int, direction: str) -> None:
    """SIZE bytes one way through a connection that leads to the Service: "in" to its sink (which answers one byte
    when all have arrived), "out" from it."""
    if direction == "in":
        payload = memoryview(bytes(CHUNK))
        s.sendall(b"s" + size.to_bytes(8, "big"))
        left = size
        while left > 0:
            left -= s.send(payload[:min(left, CHUNK)])
        assert s.recv(1) == b"k"
    else:
        s.sendall(b"o" + size.to_bytes(8, "big"))
        got = drain(s, size, bytearray(CHUNK))
        assert got == size, got


def one_run(port: int, pid: int, size: int, direction: str,
            others: Others | None = None) -> tuple[float, float, float]:
    """(MB/s, CPU ms per MB, minor page faults per MB of process `pid`) for SIZE bytes through `port` one way."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        if others is not None:
            others.start()
        ticks, faults = _stat(pid)
        start = time.perf_counter()
        transfer(s, size, direction)
        took = time.perf_counter() - start
        ticks_after, faults_after = _stat(pid)
        if others is not None:
            others.stop()
    megabytes = size / 1e6
    return megabytes / took, (ticks_after - ticks) / TICK * 1000 / megabytes, (faults_after - faults) / megabytes


def wait_up(port: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not probe(port):
        if time.monotonic() > end:
            raise RuntimeError(f"forward on {port} never came up")
        time.sleep(0.05)


class SshdServer:
    """OpenSSH's sshd (the test suite's), aes128-gcm only: every tool logs in as this user."""

    name = "sshd"

    def __init__(self, tmp: Path) -> None:
        self.sshd = Sshd(tmp / "sshd", extra=f"Ciphers {CIPHER}").start()
        self.port, self.host_key = self.sshd.port, self.sshd.host_public_key

    def admit(self, name: str, public_line: str) -> tuple[str, int]:
        """(user, remote port) for a tool with this key."""
        self.sshd.authorize(USER, public_line)
        return USER, free_port()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.sshd.stop()


class HubServer:
    """Our hub (a hub-only daemon, as shipped), every tool a client of its own with one port."""

    name = "our hub"

    def __init__(self, tmp: Path) -> None:
        from console.core.keys import load_or_create_key, public_line
        from console.core.paths import StatePaths
        from console.core.store import Store
        from console.hub.registry import Registry

        self.state = StatePaths(tmp / "hub").prepare()
        self.port = free_port()
        low = free_port() // 100 * 100 % 20000 + 20000  # a block below the ephemeral ports, away from others
        self.config = tmp / "hub.yaml"
        self.config.write_text(f"hub: {{listen: '127.0.0.1:{self.port}', ports: '{low}-{low + 99}'}}\n")
        self.host_key = " ".join(public_line(load_or_create_key(self.state.hub_key, "hub")).split()[:2])
        self.store = Store(self.state.database)
        self.registry = Registry(self.store, (low, low + 99), 1)
        self.proc: subprocess.Popen | None = None

    def admit(self, name: str, public_line: str) -> tuple[str, int]:
        client = self.registry.add(name, public_line, quota=1)
        return client.id, client.ports[0]

    def start(self) -> None:
        self.store.close()
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_unit_runner.py"), "--config",
                                      str(self.config), "--state", str(self.state.root)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)


SERVERS = {"sshd": SshdServer, "hub": HubServer}


class OpenSsh:
    """OpenSSH's `ssh -N -R`, its own key."""

    def __init__(self, server: SshdServer | HubServer, tmp: Path, name: str, service: int) -> None:
        self.server, self.tmp, self.service = server, tmp, service
        self.key = tmp / f"client-{name}"
        self.user, self.port = server.admit(name, make_client_key(self.key))

    def start(self) -> subprocess.Popen:
        return subprocess.Popen(
            ["ssh", "-N", "-i", str(self.key), "-p", str(self.server.port), "-c", CIPHER, "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={self.tmp}/kh", "-o", "StrictHostKeyChecking=no", "-o", "IdentitiesOnly=yes",
             "-o", "ExitOnForwardFailure=yes", "-R", f"127.0.0.1:{self.port}:127.0.0.1:{self.service}",
             f"{self.user}@127.0.0.1"],
            env=env_without_agent(), stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class AsyncsshDaemon:
    """Our daemon with the asyncssh transport (bench/_unit_runner.py with a variant's flags): one unit, one
    forward, its own state dir and key."""

    transport = "asyncssh"

    def __init__(self, server: SshdServer | HubServer, tmp: Path, name: str, service: int, flags: list[str]) -> None:
        from console.core.keys import load_or_create_unit_key, public_line
        from console.core.paths import StatePaths

        self.state, self.config, self.flags = tmp / f"state-{name}", tmp / f"console-{name}.yaml", flags
        key = load_or_create_unit_key(StatePaths(self.state).prepare(), "master")
        user, self.port = server.admit(name, public_line(key))
        self.config.write_text(
            f"server: {{host: 127.0.0.1, port: {server.port}, host_key: '{server.host_key}'}}\n"
            "tunnel: {keepalive_interval: 5, keepalive_count_max: 3, retry_min: 0.1, retry_max: 2, "
            f"transport: {self.transport}}}\n"
            f"units:\n  master:\n    username: {user}\n    forwards:\n"
            f"      - {{name: app, remote_port: {self.port}, remote_bind: 127.0.0.1, local: '127.0.0.1:{service}'}}\n")

    def start(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(ROOT / "bench" / "_unit_runner.py"), "--config",
                                 str(self.config), "--state", str(self.state), *self.flags],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class OpenSshDaemon(AsyncsshDaemon):
    """Our daemon with the OpenSSH transport: its ssh master (a child: its CPU is counted) and the relay."""

    transport = "openssh"


# How our daemon carries the forwards (tunnel.transport).
TRANSPORTS = {"asyncssh": AsyncsshDaemon, "openssh": OpenSshDaemon}


def rss_mib(pid: int) -> tuple[float, float]:
    """(resident now, peak) in MiB of a process and its descendants."""
    now = peak = 0
    for each in (pid, *children(pid)):
        try:
            with open(f"/proc/{each}/status") as handle:
                for line in handle:
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        kib = int(line.split()[1])
                        now, peak = (now + kib, peak) if line.startswith("VmRSS:") else (now, peak + kib)
        except OSError:
            continue
    return now / 1024, peak / 1024


def load() -> float:
    return os.getloadavg()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", default="asyncssh,openssh",
                        help=f"how our daemons carry the forwards, comma-separated: {', '.join(TRANSPORTS)} "
                             "(default both)")
    parser.add_argument("--server", choices=sorted(SERVERS), default="sshd",
                        help="the server every tool forwards through: OpenSSH's sshd (default) or our own hub")
    parser.add_argument("--mb", type=int, default=256, help="MiB per run (default 256)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds, round robin (default 7)")
    parser.add_argument("--variants", default="shipped",
                        help=f"ours to measure, comma-separated (default shipped): {', '.join(VARIANTS)}")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    transports = [name.strip() for name in args.transport.split(",") if name.strip()]
    if not transports or any(name not in TRANSPORTS for name in transports):
        parser.error(f"--transport: one or more of {', '.join(TRANSPORTS)}, got {args.transport!r}")
    size = args.mb * 1024 * 1024
    tmp = Path(tempfile.mkdtemp(prefix="sop-bench-tp-"))
    service = Service()
    service.start()
    server = SERVERS[args.server](tmp)
    procs: dict[str, subprocess.Popen] = {}
    loads = [load()]
    others = Others()
    try:
        tools: dict[str, OpenSsh | AsyncsshDaemon] = {
            OPENSSH: OpenSsh(server, tmp, "ssh", service.port),
            OPENSSH_AGAIN: OpenSsh(server, tmp, "ssh-again", service.port)}
        for transport in transports:
            for name in chosen:
                tools[f"{VARIANTS[name][0]} [{transport}]"] = TRANSPORTS[transport](
                    server, tmp, f"{name}-{transport}", service.port, VARIANTS[name][1])
        server.start()
        for label, tool in tools.items():
            procs[label] = tool.start()
        ports = {label: tool.port for label, tool in tools.items()}
        for label, port in ports.items():
            wait_up(port)
            one_run(port, procs[label].pid, size // 8, "in")  # warm up
        runs: dict[str, dict[str, list[tuple[float, float, float]]]] = {label: {"in": [], "out": []}
                                                                        for label in ports}
        for _ in range(args.rounds):
            for label, port in ports.items():
                for direction in ("in", "out"):
                    runs[label][direction].append(one_run(port, procs[label].pid, size, direction, others))
            loads.append(load())
        rss = {label: rss_mib(proc.pid) for label, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(5)
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def median_ratio(label: str, direction: str, index: int) -> float:
        mine, base = runs[label][direction], runs[OPENSSH][direction]
        return statistics.median(m[index] / b[index] for m, b in zip(mine, base, strict=True))

    rows = []
    for label, both in runs.items():
        row = [label]
        for direction in ("in", "out"):
            speed, cpu = (statistics.median(r[index] for r in both[direction]) for index in (0, 1))
            row += [f"{speed:.0f}", f"{median_ratio(label, direction, 0):.2f}x",
                    f"{cpu:.2f}", f"{median_ratio(label, direction, 1):.2f}x"]
        row.append(" / ".join(f"{statistics.median(r[2] for r in both[d]):.0f}" for d in ("in", "out")))
        row.append("{:.0f} ({:.0f})".format(*rss[label]))
        rows.append(row)
    print(f"Throughput through one forward, {args.mb} MiB per run, {args.rounds} rounds round-robin, {CIPHER}, "
          f"through {server.name}")
    print(f"load (1 min): {loads[0]:.2f} before the bench, after each round {' '.join(f'{v:.1f}' for v in loads[1:])} "
          f"(the bench's own work counts here); {os.cpu_count()} cores")
    print(f"the machine's other users during the runs, in cores: median {statistics.median(others.cores):.2f}, "
          f"max {max(others.cores):.2f}")
    print(table(rows, ["tool", "in MB/s", "in vs ssh", "in CPU ms/MB", "CPU vs ssh", "out MB/s", "out vs ssh",
                       "out CPU ms/MB", "CPU vs ssh", "faults/MB in / out", "RSS MiB (peak)"]))
    print("in = server side -> local service; out = local service -> server side. Ratios: median of the per-round")
    print("ratios to the first `ssh -R`. CPU and minor page faults: the tool's process and its children (sshd's own")
    print("are not counted); RSS after the last round.")
    print("Targets: asyncssh transport >= 0.7x of ssh -R both ways, CPU per MB <= 2x ssh's; openssh transport")
    print(">= 0.8x (stretch 0.95x), CPU per MB <= 1.5x ssh's.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

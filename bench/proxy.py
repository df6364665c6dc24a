"""Proxy rules via local, measured on loopback with our daemon as its own process:

1. gateway: a 762-listener gateway plan (hosts 1-254 x services 22, 80, 443): seconds from starting the daemon until
   every port listens (read from /proc/net/tcp, no connection made), and the daemon's memory beside the same daemon
   without the plan. Targets: within 2 s; under 50 MiB more.
2. tcp: MB/s through a TCP rule, beside socat and a plain asyncio splice, same service, rounds round-robin.
   Target: >= 0.8x socat.
3. udp: 20,000 datagrams/s of 512 B for 10 s to a UDP echo service through a rule, every reply counted.
   Target: under 1% lost.
4. expiry: 1,000 UDP flows from 1,000 sources, begun 2 ms apart; the daemon's count of flows is read every 50 ms
   and each flow's end compared with 60 s (udp_idle_timeout) after its last datagram. Target: +/- 1 s.

The machine is shared: the load average is printed with each figure.

    .venv/bin/python bench/proxy.py [--only gateway,tcp,udp,expiry] [--mb 256] [--rounds 5] [--expiry 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

from common import ROOT, free_port, table
from throughput import Service, one_run, wait_up

GATEWAY_HOSTS = 254
SERVICES = (22, 80, 443)


def load() -> str:
    return "load %.1f/%.1f/%.1f" % os.getloadavg()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def listening_ports() -> set[int]:
    """TCP ports in LISTEN state now, read from the kernel's tables (no connection made)."""
    ports = set()
    for table_file in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table_file) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def free_block(count: int) -> int:
    """A base port whose plan's ports (base+3 .. base+3+count) are all free now, below the ephemeral range (the
    local ports of other programs' outgoing connections, which come and go on a shared machine)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(50):
        base = 10000 + int.from_bytes(os.urandom(2), "big") % max(1, low - 10000 - count - 10)
        taken = listening_ports()
        if not any(p in taken for p in range(base, base + count + 4)):
            return base
    raise RuntimeError("no free block of ports")


class Daemon:
    """`sop-console daemon` with a config, in its own state dir."""

    def __init__(self, tmp: Path, name: str, config: str) -> None:
        self.state = tmp / f"state-{name}"
        self.config = tmp / f"{name}.yaml"
        self.config.write_text(config)
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "console", "--state-dir", str(self.state), "--config",
                                      str(self.config), "daemon"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)

    def wait_socket(self, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while not (self.state / "control.sock").exists():
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the daemon did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
            time.sleep(0.01)

    def request(self, op: str, **args) -> dict:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.state / "control.sock"))
            sock.sendall(json.dumps({"id": 1, "op": op, "args": args}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        answer = json.loads(data)
        if not answer.get("ok"):
            raise RuntimeError(answer.get("error"))
        return answer["result"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------------------------------------- 1. gateway plan


def bench_gateway(tmp: Path, runs: int = 3) -> list[list[str]]:
    """Each run starts a daemon without the plan (until its control socket) and one with it (until every port
    listens), one after the other, so a slow stretch of the shared machine hits both."""
    count = GATEWAY_HOSTS * len(SERVICES)
    base = free_block(count)
    ports = {base + n * len(SERVICES) + k for n in range(1, GATEWAY_HOSTS + 1) for k in range(len(SERVICES))}
    plan = (f"proxy:\n  gateways:\n    - {{name: bench, subnet: 127.0.0.0/24, base: {base}, "
            f"services: [{', '.join(map(str, SERVICES))}], hosts: 1-{GATEWAY_HOSTS}}}\n")
    bare, planned, without, with_plan, opened, states = [], [], [], [], [], set()
    for run in range(runs):
        empty = Daemon(tmp, f"empty{run}", "proxy: {}\n")
        empty.wait_socket()
        bare.append(time.monotonic() - empty.started)
        time.sleep(1.0)
        without.append(rss_mib(empty.proc.pid))
        empty.stop()
        daemon = Daemon(tmp, f"gateway{run}", plan)
        try:
            while not ports <= listening_ports():
                if daemon.proc.poll() is not None or time.monotonic() - daemon.started > 30:
                    raise RuntimeError("the plan never listened in full")
                time.sleep(0.005)
            planned.append(time.monotonic() - daemon.started)
            daemon.wait_socket()
            time.sleep(1.0)
            with_plan.append(rss_mib(daemon.proc.pid))
            states |= {r["state"] for r in daemon.request("proxy.list")["rules"]}
            opened += [line.split(" proxy ", 1)[1] for line in
                       (daemon.state / "tunnel.log").read_text().splitlines() if " listeners opened: " in line]
        finally:
            daemon.stop()
    engine_seconds = asyncio.run(_engine_start(tmp, plan, ports))
    grew = [w - b for w, b in zip(with_plan, without)]
    return [[f"{count}-listener gateway plan: the engine's start (in this process) until every port listens",
             f"{engine_seconds:.2f} s", "within 2 s", load()],
            [f"{count}-listener gateway plan: daemon process start to every port listening, {runs} runs",
             f"{_spread(planned)} s; a daemon without it, start to its control socket: {_spread(bare)} s "
             f"(the daemon said: {'; '.join(sorted(set(opened)))})", "within 2 s", load()],
            ["daemon memory (RSS) with the plan, beside without", f"{statistics.median(with_plan):.1f} MiB vs "
             f"{statistics.median(without):.1f} MiB: +{statistics.median(grew):.1f} MiB (states: "
             f"{', '.join(sorted(states))})", "< 50 MiB more", load()]]


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


async def _engine_start(tmp: Path, plan: str, ports: set[int]) -> float:
    sys.path.insert(0, str(ROOT))
    from console.core.config import parse_config
    from console.core.paths import StatePaths
    from console.engine import Engine

    engine = Engine(parse_config(plan, "bench.yaml"), StatePaths(tmp / "state-engine"))
    start = time.monotonic()
    await engine.start()
    while not ports <= listening_ports():
        await asyncio.sleep(0.005)
    seconds = time.monotonic() - start
    await engine.shutdown()
    return seconds


# ---------------------------------------------------------------------------------------------- 2. TCP throughput


def bench_tcp(tmp: Path, mb: int, rounds: int) -> list[list[str]]:
    size = mb * 1024 * 1024
    service = Service()
    service.start()
    ours, socat, splice = free_port(), free_port(), free_port()
    daemon = Daemon(tmp, "tcp", f"proxy:\n  ingress: [tcp:{ours}:127.0.0.1:{service.port}]\n")
    helpers = [subprocess.Popen(["socat", f"TCP-LISTEN:{socat},bind=127.0.0.1,fork,reuseaddr",
                                 f"TCP:127.0.0.1:{service.port}"], stderr=subprocess.DEVNULL),
               subprocess.Popen([sys.executable, str(ROOT / "bench" / "_splice.py"), str(splice), str(service.port)])]
    tools = {"ours (proxy rule via local)": ours, "socat": socat, "plain asyncio splice": splice}
    speeds: dict[str, dict[str, list[float]]] = {label: {"in": [], "out": []} for label in tools}
    loads = []
    try:
        for port in tools.values():
            wait_up(port)
            one_run(port, size // 8, "in")
        for _ in range(rounds):
            for label, port in tools.items():
                for direction in ("in", "out"):
                    speeds[label][direction].append(one_run(port, size, direction))
            loads.append(os.getloadavg()[0])
    finally:
        daemon.stop()
        for helper in helpers:
            helper.terminate()
            helper.wait(5)

    def ratio(label: str, direction: str) -> float:
        return statistics.median(m / b for m, b in zip(speeds[label][direction], speeds["socat"][direction]))

    rows = []
    for label, r in speeds.items():
        rows.append([f"TCP through {label}, {mb} MiB x {rounds} rounds",
                     f"to the service {statistics.median(r['in']):.0f} MB/s ({ratio(label, 'in'):.2f}x socat), back "
                     f"{statistics.median(r['out']):.0f} MB/s ({ratio(label, 'out'):.2f}x)",
                     ">= 0.8x socat" if label.startswith("ours") else "", f"load {min(loads):.1f}-{max(loads):.1f}"])
    return rows


# ---------------------------------------------------------------------------------------------- 3. UDP rate

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    data, addr = s.recvfrom(65536)
    s.sendto(data, addr)
"""


def udp_echo() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def bench_udp(tmp: Path, rate: int = 20_000, seconds: float = 10.0, size: int = 512) -> list[list[str]]:
    echo, echo_port = udp_echo()
    port = free_port()
    daemon = Daemon(tmp, "udp", f"proxy:\n  egress: [udp:{port}:127.0.0.1:{echo_port}]\n")
    daemon.wait_socket()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.connect(("127.0.0.1", port))
    received = [0]
    stop = threading.Event()

    def receive() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                sock.recv(65536)
                received[0] += 1
            except TimeoutError:
                continue

    payload = os.urandom(size)
    for _ in range(50):     # the flow is made before the clock starts
        sock.send(payload)
        time.sleep(0.01)
    time.sleep(0.5)
    sock.setblocking(False)
    try:
        while sock.recv(65536):   # the warm-up's replies are not counted
            pass
    except BlockingIOError:
        pass
    sock.setblocking(True)
    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    cpu_before = _cpu_seconds(daemon.proc.pid)
    sent, start = 0, time.perf_counter()
    while (now := time.perf_counter() - start) < seconds:
        due = int(now * rate)
        while sent < due:
            sock.send(payload)
            sent += 1
        time.sleep(0.0005)
    elapsed = time.perf_counter() - start
    time.sleep(1.0)         # the last replies
    stop.set()
    receiver.join()
    cpu = (_cpu_seconds(daemon.proc.pid) - cpu_before) / elapsed
    rule = daemon.request("proxy.list")["rules"][0]
    daemon.stop()
    echo.terminate()
    sock.close()
    lost = 1 - received[0] / sent
    into, back = rule["bytes_in"] // size - 50, rule["bytes_out"] // size - 50   # less the warm-up
    return [[f"UDP through a rule via local: {sent:,} datagrams of {size} B in {elapsed:.1f} s "
             f"({sent / elapsed:,.0f}/s), echoed back", f"{lost:.2%} lost ({sent - received[0]:,}: "
             f"{sent - into:,} before the daemon read them, {into - back:,} by the echo service, "
             f"{back - received[0]:,} after the daemon sent them back); the daemon used {cpu:.0%} of a core",
             "< 1% lost", load()]]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------- 4. flow expiry


def bench_expiry(tmp: Path, timeout: float, flows: int = 1000, gap: float = 0.002) -> list[list[str]]:
    echo, echo_port = udp_echo()
    port = free_port()
    daemon = Daemon(tmp, "expiry", f"proxy:\n  udp_idle_timeout: {timeout:g}\n"
                                   f"  egress: [udp:{port}:127.0.0.1:{echo_port}]\n")
    daemon.wait_socket()
    socks, last = [], []
    try:
        for _ in range(flows):   # one datagram each; its reply is the flow's last datagram
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(("127.0.0.1", port))
            s.settimeout(2)
            s.send(b"x")
            s.recv(16)
            last.append(time.monotonic())
            socks.append(s)
            time.sleep(gap)
        counts = []              # (when, flows open)
        while True:
            rule = daemon.request("proxy.list")["rules"][0]
            counts.append((time.monotonic(), rule["udp_flows"]))
            if rule["udp_flows"] == 0 or time.monotonic() - last[-1] > timeout + 10:
                break
            time.sleep(0.05 if time.monotonic() - last[0] > timeout - 2 else 0.5)
    finally:
        daemon.stop()
        echo.terminate()
        for s in socks:
            s.close()
    peak = max(c for _, c in counts)
    # the k-th flow (in the order they began) ended by the first reading that shows at most flows-k-1 open
    errors = []
    for k, began in enumerate(last):
        ended = next((t for t, c in counts if c <= flows - k - 1), None)
        previous = max((t for t, c in counts if c > flows - k - 1), default=began)
        if ended is not None:   # it ended between the reading before and this one: take the middle
            errors.append(((ended + previous) / 2) - (began + timeout))
    worst = max(errors, key=abs) if errors else float("nan")
    return [[f"{flows:,} UDP flows, each ending {timeout:g} s after its last datagram (read every 50 ms)",
             f"{peak:,} open at once; ended {statistics.median(errors):+.2f} s (median), {worst:+.2f} s (worst) "
             f"from {timeout:g} s", "+/- 1 s", load()]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="gateway,tcp,udp,expiry", help="which parts, comma-separated")
    parser.add_argument("--mb", type=int, default=256, help="MiB per TCP run")
    parser.add_argument("--rounds", type=int, default=5, help="TCP rounds (each tool in turn)")
    parser.add_argument("--expiry", type=float, default=60, help="udp_idle_timeout for the expiry part")
    args = parser.parse_args()
    if shutil.which("socat") is None and "tcp" in args.only:
        print("socat is missing: apt-get install socat (make bench does)", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="sop-bench-proxy-"))
    rows = []
    try:
        for part in args.only.split(","):
            before = len(rows)
            if part == "gateway":
                rows += bench_gateway(tmp)
            elif part == "tcp":
                rows += bench_tcp(tmp, args.mb, args.rounds)
            elif part == "udp":
                rows += bench_udp(tmp)
            elif part == "expiry":
                rows += bench_expiry(tmp, args.expiry)
            print(table(rows[before:], ["what", "measured", "target", "machine"]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(table(rows, ["what", "measured", "target", "machine"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

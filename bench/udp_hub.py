"""UDP through a unit and our hub, both ways: 20,000 datagrams/s of 512 B for 10 s, loss under 1% on loopback.

Three processes, as deployed: the hub (the daemon's engine with a hub section), the unit (the engine with the
unit `master` logged in to the hub, a UDP egress rule and a UDP ingress rule through it; bench/_udp_side.py), and
this one, which sends at a fixed pace and counts what arrives at a sink:

    egress:  sender -> the unit's UDP port -> (SSH) -> hub -> sink
    ingress: sender -> the hub's UDP port (the client's) -> (SSH) -> unit -> sink
    round trip: sender -> the unit's UDP port -> (SSH) -> hub -> echo service -> hub -> (SSH) -> unit -> sender

Reported per direction: datagrams sent and received, loss, the rate sent and the rate received beside the target,
the CPU seconds the hub and the unit spent, and a baseline (sender straight to the sink) showing the sender and
sink keep up. The machine is shared: the load average before and after is printed with the figures.

    .venv/bin/python bench/udp_hub.py [--rate 20000] [--size 512] [--seconds 10] [--uvloop]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, free_port, table

sys.path.insert(0, str(ROOT))
from console.core.keys import load_or_create_key, load_or_create_unit_key, public_line  # noqa: E402
from console.core.paths import StatePaths  # noqa: E402
from console.core.store import Store  # noqa: E402
from console.demo import _free_range  # noqa: E402
from console.hub.registry import Registry  # noqa: E402

TARGET_RATE = 20_000
TARGET_LOSS = 1.0  # percent
SIDE = ROOT / "bench" / "_udp_side.py"


class Sink(threading.Thread):
    """Counts datagrams arriving on a loopback port (a large receive buffer: the sink must not be what loses);
    `echo`: sends each back to its sender."""

    def __init__(self, echo: bool = False) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.echo = echo
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self.first = self.last = 0.0

    def run(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65536)
                if self.echo:
                    self.sock.sendto(data, addr)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            if not self.count:
                self.first = now
            self.count += 1
            self.last = now

    def reset(self) -> None:
        self.count = 0


def send_paced(port: int, rate: int, size: int, seconds: float, sock: socket.socket) -> tuple[int, float]:
    """Send `rate` datagrams a second for `seconds`, in 1 ms steps (rate/1000 each): (sent, seconds taken)."""
    payload = os.urandom(size)
    address = ("127.0.0.1", port)
    total = int(rate * seconds)
    sent = 0
    start = time.monotonic()
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            try:
                sock.sendto(payload, address)
            except BlockingIOError:
                break
            sent += 1
        time.sleep(0.0005)
    return sent, time.monotonic() - start


def measure(name: str, port: int, sink: Sink, args, sock: socket.socket | None = None) -> list[str]:
    """Send through `port`, count at `sink` (for a round trip, `sock` is the sink's own socket)."""
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.bind(("127.0.0.1", 0))
    # the flow opens first (one datagram; its channel takes a few ms): the figure is the steady state
    sink.reset()
    sock.sendto(b"warm-up", ("127.0.0.1", port))
    end = time.monotonic() + 10
    while not sink.count and time.monotonic() < end:
        time.sleep(0.01)
    sink.reset()
    sent, took = send_paced(port, args.rate, args.size, args.seconds, sock)
    time.sleep(1.0)  # what is on its way
    received = sink.count
    if sock is not sink.sock:
        sock.close()
    loss = 100.0 * (sent - received) / sent if sent else 0.0
    span = (sink.last - sink.first) or took
    verdict = "ok" if loss < TARGET_LOSS and sent / took >= 0.98 * args.rate else "SHORT"
    return [name, f"{sent:,}", f"{received:,}", f"{loss:.2f}% (< {TARGET_LOSS:g}%)",
            f"{sent / took:,.0f}/s", f"{received / span:,.0f}/s (target {args.rate:,}/s)", verdict]


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def kernel_drops(owners: dict[str, int]) -> dict[tuple[str, int], int]:
    """Datagrams the kernel dropped (a full receive buffer) per UDP socket of these processes (name -> pid), by
    (owner, local port), from /proc/net/udp: the machine is shared, other sockets are not ours."""
    inodes = {inode: name for name, pid in owners.items() for inode in socket_inodes(pid)}
    drops: dict[tuple[str, int], int] = {}
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        owner = inodes.get(fields[9])
        if owner is not None:
            drops[owner, int(fields[1].split(":")[1], 16)] = int(fields[-1])
    return drops


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_side(args_list: list[str]) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, str(SIDE), *args_list], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.kill()
        raise SystemExit(f"{args_list[0]} did not start: {line!r}")
    return proc, line.split()[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=TARGET_RATE)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--uvloop", action="store_true", help="both ends on uvloop")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        egress_sink, ingress_sink, baseline_sink, echo, returns = Sink(), Sink(), Sink(), Sink(echo=True), Sink()
        for sink in (egress_sink, ingress_sink, baseline_sink, echo, returns):
            sink.start()
        hub_state, unit_state = StatePaths(base / "hub").prepare(), StatePaths(base / "unit").prepare()
        unit_key = public_line(load_or_create_unit_key(unit_state, "master"))
        low, high = _free_range(2)
        store = Store(hub_state.database)
        client_ports = Registry(store, (low, high), 2).add("acme", unit_key).ports
        store.close()
        hub_key = public_line(load_or_create_key(hub_state.hub_key, "hub"))
        hub_port = free_port()
        (base / "hub.yaml").write_text(
            f"hub: {{listen: '127.0.0.1:{hub_port}', ports: '{low}-{high}', default_quota: 2, "
            f"egress_allow: ['127.0.0.1:{egress_sink.port}', '127.0.0.1:{echo.port}']}}\nunits: {{}}\n")
        (base / "unit.yaml").write_text(
            f"server: {{host: 127.0.0.1, port: {hub_port}, host_key: '{hub_key}'}}\n"
            "tunnel: {keepalive_interval: 5, retry_min: 0.1, retry_max: 2, connect_timeout: 5}\n"
            "units:\n  master:\n    username: acme\n")
        loop_flag = ["--uvloop"] if args.uvloop else []
        hub, _ = start_side(["hub", "--config", str(base / "hub.yaml"), "--state", str(hub_state.root), *loop_flag])
        unit = None
        try:
            unit, ports = start_side(
                ["unit", "--config", str(base / "unit.yaml"), "--state", str(unit_state.root),
                 "--egress-to", str(egress_sink.port), "--ingress-port", str(client_ports[0]),
                 "--ingress-to", str(ingress_sink.port), "--echo-to", str(echo.port), *loop_flag])
            egress_port, echo_port = map(int, ports)
            rows = [measure("baseline: sender straight to a sink", baseline_sink.port, baseline_sink, args)]
            cpu, kernel = [], []
            for name, port, sink in (("egress: unit's port -> hub -> sink", egress_port, egress_sink),
                                     ("ingress: hub's port -> unit -> sink", client_ports[0], ingress_sink),
                                     ("round trip: unit -> hub -> echo -> hub -> unit", echo_port, returns)):
                before = cpu_seconds(hub.pid), cpu_seconds(unit.pid)
                owners = {"hub": hub.pid, "unit": unit.pid, "bench": os.getpid()}
                dropped_before = kernel_drops(owners)
                echo.reset()
                rows.append(measure(name, port, sink, args, sock=returns.sock if sink is returns else None))
                if sink is returns:
                    rows[-1][0] += f" (echo service saw {echo.count:,})"
                after = cpu_seconds(hub.pid), cpu_seconds(unit.pid)
                dropped = {key: n - dropped_before.get(key, 0) for key, n in kernel_drops(owners).items()
                           if n > dropped_before.get(key, 0)}
                names = {egress_port: "unit's egress port", echo_port: "unit's egress port (echo rule)",
                         client_ports[0]: "hub's UDP port", returns.port: "sender (round trip)",
                         echo.port: "echo service", egress_sink.port: "sink", ingress_sink.port: "sink"}
                kernel.append(f"{name.split(':')[0]}: " + (", ".join(
                    f"{names.get(port, f'a flow socket at the {owner}')} {n:,}" for (owner, port), n in dropped.items())
                    or "none"))
                cpu.append(f"{name.split(':')[0]}: hub {after[0] - before[0]:.1f} s, unit {after[1] - before[1]:.1f} s "
                           f"CPU over {args.seconds:g} s")
        finally:
            said = []
            for proc in (hub, unit):
                if proc is not None:
                    out, _ = proc.communicate("", timeout=20)
                    said.append(out.strip())
    load_after = os.getloadavg()
    print(f"UDP via a unit and our hub: {args.rate:,} datagrams/s of {args.size} B for {args.seconds:g} s"
          f"{' (uvloop)' if args.uvloop else ''}; {os.cpu_count()} CPUs")
    print(table(rows, ["path", "sent", "received", "loss (target)", "rate sent", "rate received", ""]))
    for line in cpu:
        print(line)
    print("datagrams the kernel dropped (full receive buffers): " + "; ".join(kernel))
    print(f"drops counted by the ends: hub {said[0]}; unit {said[1] if len(said) > 1 else '-'}")
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} (the machine is shared)")


if __name__ == "__main__":
    main()

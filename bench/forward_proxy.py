"""The OpenSSH transport's per-forward proxy (console/tunnel/forward_proxy.py) on its own: MB/s and the CPU the
proxy's process spends per MB in each of its modes (forward_proxy.MODES: "mixed" as shipped on Linux, "splice"
both ways, "copy" both ways), and a direct connection to the same service as the ceiling.

The client stands where ssh stands (a Unix socket client of the proxy); the local service is bench/throughput.py's
sink/source on 127.0.0.1. "in": the client sends SIZE bytes toward the service (which answers one byte when all
have arrived); "out": the service sends SIZE bytes back. Each proxy runs in a child process of its own; its CPU
(/proc/PID/schedstat, else utime + stime from /proc/PID/stat) is read before and after each run. Tools are
measured round robin, so a slow stretch of this shared machine hits each alike; medians are printed, with the load
average. At the end each proxy's counters are checked against what was sent.

Why it matters (issue 15): the OpenSSH transport's CPU per MB, ssh child included, must stay at most 1.5x ssh's
alone (bench/throughput.py measures ssh near 0.9-1.6 ms per MB): this proxy's share must be small beside it.

    .venv/bin/python bench/forward_proxy.py [--mb 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, table
from throughput import TICK, Service, _stat, transfer

TOOLS = {"direct": "direct connection (no proxy)",
         "mixed": "proxy, mixed (as shipped: copy in, splice out)",
         "splice": "proxy, splice both ways (os.splice through pipes)",
         "copy": "proxy, copy both ways (recv_into/send; no os.splice)"}


async def serve(path: str, port: int, mode: str) -> None:
    """The child: one ForwardProxy until SIGTERM, then its counters as JSON on stdout."""
    from console.relay import ForwardStats
    from console.tunnel.forward_proxy import ForwardProxy

    stats = ForwardStats()
    proxy = ForwardProxy(Path(path), "127.0.0.1", port, stats, mode=mode)
    await proxy.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await proxy.aclose()
    print(json.dumps(stats.__dict__), flush=True)


def cpu_seconds(pid: int) -> float:
    """CPU time of process `pid` (no children here): /proc/PID/schedstat's nanoseconds on a CPU where there is one
    (user and system time, exact), else utime + stime from /proc/PID/stat (in clock ticks: 10 ms)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return _stat(pid)[0] / TICK


def connect(address: str | int) -> socket.socket:
    if isinstance(address, int):
        return socket.create_connection(("127.0.0.1", address))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address)
    return sock


def one_run(address: str | int, pid: int | None, size: int, direction: str) -> tuple[float, float]:
    """(MB/s, CPU ms per MB of process `pid`, nan without one) for SIZE bytes one way through `address`."""
    with connect(address) as s:
        cpu = cpu_seconds(pid) if pid else 0.0
        start = time.perf_counter()
        transfer(s, size, direction)
        took = time.perf_counter() - start
        cpu = cpu_seconds(pid) - cpu if pid else float("nan")
    megabytes = size / 1e6
    return megabytes / took, cpu * 1000 / megabytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=256, help="MiB per run and direction")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (each tool, each direction, once a round)")
    parser.add_argument("--serve", nargs=3, metavar=("PATH", "PORT", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        path, port, mode = args.serve
        asyncio.run(serve(path, int(port), mode))
        return

    size = args.mb << 20
    service = Service()
    service.start()
    tmp = Path(tempfile.mkdtemp(prefix="fproxy-bench-"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    children: dict[str, subprocess.Popen] = {}
    addresses: dict[str, str | int] = {"direct": service.port}
    for mode in ("mixed", "splice", "copy"):
        path = str(tmp / f"{mode}.sock")
        child = subprocess.Popen([sys.executable, __file__, "--serve", path, str(service.port), mode],
                                 stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdout.readline().strip() == "ready"
        children[mode], addresses[mode] = child, path
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    loads = []
    try:
        for number in range(args.rounds):
            loads.append(os.getloadavg()[0])
            for direction in ("in", "out"):
                for tool, address in addresses.items():
                    pid = children[tool].pid if tool in children else None
                    results.setdefault((tool, direction), []).append(one_run(address, pid, size, direction))
            print(f"round {number + 1}/{args.rounds} done, load {loads[-1]:.1f}", file=sys.stderr, flush=True)
    finally:
        counters = {}
        for tool, child in children.items():
            child.send_signal(signal.SIGTERM)
            out, _ = child.communicate(timeout=30)
            counters[tool] = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
        shutil.rmtree(tmp, ignore_errors=True)
    sent = size * args.rounds
    rows = []
    for direction in ("in", "out"):
        direct = statistics.median(r[0] for r in results[("direct", direction)])
        for tool in addresses:
            rates = [r[0] for r in results[(tool, direction)]]
            cpu = [r[1] for r in results[(tool, direction)]]
            rows.append([direction, TOOLS[tool], f"{statistics.median(rates):.0f}",
                         f"{statistics.median(rates) / direct:.2f}x",
                         "—" if tool == "direct" else f"{statistics.median(cpu):.3f}",
                         "—" if tool == "direct" else f"{min(cpu):.3f}-{max(cpu):.3f}"])
    print(f"{args.mb} MiB per run, {args.rounds} rounds, load (1 min) {min(loads):.1f}-{max(loads):.1f}, "
          f"{os.cpu_count()} CPUs")
    print(table(rows, ["way", "tool", "MB/s (median)", "vs direct", "proxy CPU ms/MB (median)", "range"]))
    for tool, seen in counters.items():
        want = {"open": 0, "total": 2 * args.rounds, "bytes_in": sent + 9 * 2 * args.rounds,
                "bytes_out": sent + args.rounds}
        # each run sends a 9-byte header; "in" runs get b"k" back
        print(f"{tool} counters: {seen} {'exact' if seen == want else f'EXPECTED {want}'}")


if __name__ == "__main__":
    main()

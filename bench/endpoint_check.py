"""How long the endpoint auth status check takes (target: an answer within connect_timeout, and under 0.5 s on
loopback), beside OpenSSH's `ssh` asked the same question in the same run.

Three endpoints on loopback: one available (the test suite's sshd, our key authorized), one refused (a closed
port) and one that never answers (a listener whose accept queue is full: the SYN is dropped, as for an
unreachable host), each checked N times in one event loop (as the daemon does) with `check_login`. Beside it,
`ssh -o BatchMode=yes ... true` against the same endpoints (a new process each time: its start-up is included,
and it runs a command where we only log in). The unreachable case is bounded by the timeout (ours and ssh's
ConnectTimeout, both TIMEOUT seconds).

    .venv/bin/python bench/endpoint_check.py [--runs 20] [--timeout 1]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import USER, Sshd, env_without_agent, free_port, make_client_key, table

from console.core.config import ServerConfig
from console.core.known_hosts import KnownHosts
from console.tunnel.endpoint_check import check_login


def stats(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), max(values)


async def ours(server: ServerConfig, key: Path, known: KnownHosts, runs: int, timeout: float,
               expect: str) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        check = await check_login("bench", server, USER, key, known, unit="master", timeout=timeout)
        times.append(time.perf_counter() - start)
        if check.reason != expect:
            raise RuntimeError(f"expected {expect}, got {check.reason}: {check.message}")
    return times


def openssh(port: int, key: Path, known_hosts: Path, runs: int, timeout: float, expect_ok: bool) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes",
                               "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                               "-o", f"UserKnownHostsFile={known_hosts}", "-o", f"ConnectTimeout={timeout:g}",
                               "-p", str(port), f"{USER}@127.0.0.1", "true"],
                              capture_output=True, env=env_without_agent(), stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        if (done.returncode == 0) != expect_ok:
            raise RuntimeError(f"ssh: exit {done.returncode}: {done.stderr.decode()[-300:]}")
    return times


def full_listener() -> tuple[int, list[socket.socket]]:
    """A port that never completes a connection: backlog 0, accept queue filled, never accepted."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    held = [listener]
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        held.append(filler)
    return listener.getsockname()[1], held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=1.0, help="the check's timeout (connect_timeout)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sshd = Sshd(tmp / "sshd")
        key = tmp / "master_ed25519"
        sshd.authorize(USER, make_client_key(key))
        sshd.start()
        known_hosts = tmp / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_public_key}\n")
        known = KnownHosts(known_hosts)
        closed = free_port()
        stuck, held = full_listener()
        rows = []
        try:
            cases = [("available", sshd.port, "ok", True), ("refused", closed, "network", False),
                     (f"unreachable ({args.timeout:g}s timeout)", stuck, "network", False)]
            for label, port, expect, ok in cases:
                server = ServerConfig("127.0.0.1", port)
                ours_times = asyncio.run(ours(server, key, known, args.runs, args.timeout, expect))
                ssh_times = openssh(port, key, known_hosts, args.runs, args.timeout, ok)
                (om, ox), (sm, sx) = stats(ours_times), stats(ssh_times)
                target = f"the timeout ({args.timeout:g} s)" if "unreachable" in label else "< 0.5 s"
                rows.append([label, f"{om * 1000:.1f}", f"{ox * 1000:.1f}", f"{sm * 1000:.1f}", f"{sx * 1000:.1f}",
                             f"{om / sm:.2f}", target])
        finally:
            for sock in held:
                sock.close()
            sshd.stop()
    print(f"endpoint check, {args.runs} runs each, ms (ours: check_login in one event loop; "
          "ssh: a new `ssh ... true` process each run)")
    print(table(rows, ["endpoint", "ours median", "ours max", "ssh median", "ssh max", "ours/ssh", "target"]))


if __name__ == "__main__":
    main()

"""How long the endpoint auth status check takes (target: an answer within connect_timeout, and under 0.5 s on
loopback), beside OpenSSH's `ssh` asked the same question in the same run.

Three endpoints on loopback: one available (the test suite's sshd, our key authorized), one refused (a closed
port) and one that never answers (a listener whose accept queue is full: the SYN is dropped, as for an
unreachable host), each checked N times in one event loop (as the daemon does) with `check_login`. Beside it,
`ssh -o BatchMode=yes ... true` against the same endpoints (a new process each time: its start-up is included,
and it runs a command where we only log in). The unreachable case is bounded by the timeout (ours and ssh's
ConnectTimeout, both TIMEOUT seconds).

Then the operator's path, end to end: `sop-console endpoints check NAME` as a new process each run (Python's
start-up, the config and the store included), with no daemon (the check runs in the command's own process) and
through a running daemon (the control socket), against the same three endpoints, beside the same `ssh ... true`.
"in the command" is what the command itself reports: from its request to the answer.

    .venv/bin/python bench/endpoint_check.py [--runs 20] [--cli-runs 10] [--timeout 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import sys
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import ROOT, USER, Sshd, env_without_agent, free_port, make_client_key, table

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


def cli_config(sshd: Sshd, closed: int, stuck: int, timeout: float) -> str:
    """Three endpoints, master's key on the available one; the daemon checks nothing by itself (interval 0)."""
    return (f"endpoints:\n"
            f"  available: {{host: 127.0.0.1, port: {sshd.port}, username: {USER}, "
            f"host_key: '{sshd.host_public_key}'}}\n"
            f"  refused: {{host: 127.0.0.1, port: {closed}, username: {USER}}}\n"
            f"  unreachable: {{host: 127.0.0.1, port: {stuck}, username: {USER}}}\n"
            f"tunnel: {{connect_timeout: {timeout:g}, endpoint_check_interval: 0, retry_max: 5}}\n"
            f"units:\n  master: {{endpoint: available}}\n")


def cli_runs(state: Path, config: Path, name: str, runs: int, expect: int) -> tuple[list[float], list[float]]:
    """`sop-console endpoints check NAME`, a new process each run: (wall times, times the command reports)."""
    walls, inside = [], []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "console", "--state-dir", str(state), "--config", str(config),
                               "endpoints", "check", name], capture_output=True, text=True, env=env)
        walls.append(time.perf_counter() - start)
        if done.returncode != expect:
            raise RuntimeError(f"endpoints check {name}: exit {done.returncode}: {done.stdout}{done.stderr}")
        inside.append(float(re.search(r"checked in (\d+\.\d+) s", done.stdout).group(1)))
    return walls, inside


def start_daemon(state: Path, config: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "console", "--state-dir", str(state), "--config", str(config),
                             "daemon"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 20
    while not (state / "control.sock").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the daemon did not start")
        time.sleep(0.05)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cli-runs", type=int, default=10, help="runs of the command line, each path and case")
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
        rows, cli_rows = [], []
        daemon = None
        try:
            cases = [("available", sshd.port, "ok", True), ("refused", closed, "network", False),
                     (f"unreachable ({args.timeout:g}s timeout)", stuck, "network", False)]
            ssh_median = {}
            for label, port, expect, ok in cases:
                server = ServerConfig("127.0.0.1", port)
                ours_times = asyncio.run(ours(server, key, known, args.runs, args.timeout, expect))
                ssh_times = openssh(port, key, known_hosts, args.runs, args.timeout, ok)
                (om, ox), (sm, sx) = stats(ours_times), stats(ssh_times)
                ssh_median[label.split()[0]] = sm
                target = f"the timeout ({args.timeout:g} s)" if "unreachable" in label else "< 0.5 s"
                rows.append([label, f"{om * 1000:.1f}", f"{ox * 1000:.1f}", f"{sm * 1000:.1f}", f"{sx * 1000:.1f}",
                             f"{om / sm:.2f}", target])

            state, config = tmp / "state", tmp / "console.yaml"
            (state / "keys").mkdir(parents=True, mode=0o700)
            shutil.copy(key, state / "keys" / "master_ed25519")
            os.chmod(state, 0o700)
            config.write_text(cli_config(sshd, closed, stuck, args.timeout))
            for path in ("no daemon", "daemon"):
                if path == "daemon":
                    daemon = start_daemon(state, config)
                for name in ("available", "refused", "unreachable"):
                    walls, inside = cli_runs(state, config, name, args.cli_runs, 0 if name == "available" else 1)
                    (wm, wx), (im, ix) = stats(walls), stats(inside)
                    target = f"the timeout ({args.timeout:g} s)" if name == "unreachable" else "< 0.5 s"
                    cli_rows.append([name, path, f"{wm * 1000:.0f}", f"{wx * 1000:.0f}", f"{im * 1000:.0f}",
                                     f"{ix * 1000:.0f}", f"{wm / ssh_median[name]:.2f}", target])
        finally:
            if daemon is not None:
                daemon.terminate()
                daemon.wait(10)
            for sock in held:
                sock.close()
            sshd.stop()
    print(f"endpoint check, {args.runs} runs each, ms (ours: check_login in one event loop; "
          "ssh: a new `ssh ... true` process each run)")
    print(table(rows, ["endpoint", "ours median", "ours max", "ssh median", "ssh max", "ours/ssh", "target"]))
    print(f"\n`sop-console endpoints check NAME`, a new process each run, {args.cli_runs} runs each, ms "
          "(wall: the whole command; in the command: request to answer, as it reports)")
    print(table(cli_rows, ["endpoint", "path", "wall median", "wall max", "in the command median",
                           "in the command max", "wall/ssh", "target"]))


if __name__ == "__main__":
    main()

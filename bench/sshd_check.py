"""The sshd check (`endpoints check-sshd`) and its fix on loopback: seconds per check and per fix, on a connection
already logged in, against the test suite's sshd (GatewayPorts no, ClientAliveInterval 0: both need a change).

- check, sshd -T through sudo: a throwaway user (shell /bin/sh) with a password-less sudo;
- check, files read by a user without sudo (the main file and one Include);
- check, sshd -T as root (root's own login shell: a heavy ~/.bashrc shows here, every command pays it);
- fix through sudo: check, the script (write, sshd -t, SIGHUP), check again; the config is put back and sshd
  reloaded between runs (not timed).
Beside each: one `true` over the same connection (a session's floor; a check runs 2-3 such sessions, a fix 5).

Needs root (it makes two users and a sudoers.d entry, and removes them).

    .venv/bin/python bench/sshd_check.py [--runs 9]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import asyncssh
from common import Sshd, table

from console.core.sshd_settings import ForwardNeeds, Listen
from console.tunnel.sshd_check import check_sshd, fix_sshd

NEEDS = ForwardNeeds((Listen("0.0.0.0", 0, "unit master forward http"),))
TARGET = "< 0.5 s (the endpoint check's)"


def make_user(base: Path, public: str, sudo: bool) -> str:
    name = f"sopb{secrets.token_hex(3)}"
    home = base / name
    subprocess.run(["useradd", "-m", "-d", str(home), "-s", "/bin/sh", name], check=True)
    subprocess.run(["usermod", "-p", "*", name], check=True)  # no password, not locked: sshd refuses a locked one
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh" / "authorized_keys").write_text(public + "\n")
    subprocess.run(["chown", "-R", f"{name}:{name}", str(home / ".ssh")], check=True)
    if sudo:
        entry = Path("/etc/sudoers.d") / f"sop-bench-{name}"
        entry.write_text(f"{name} ALL=(ALL) NOPASSWD: ALL\n")
        entry.chmod(0o440)
    return name


def drop_user(name: str) -> None:
    Path(f"/etc/sudoers.d/sop-bench-{name}").unlink(missing_ok=True)
    subprocess.run(["userdel", "-r", "-f", name], stderr=subprocess.DEVNULL)


async def connect(server: Sshd, user: str, key: asyncssh.SSHKey) -> asyncssh.SSHClientConnection:
    for _ in range(200):
        try:
            return await asyncssh.connect("127.0.0.1", server.port, username=user, client_keys=[key],
                                          known_hosts=([asyncssh.import_public_key(server.host_public_key)], [], []),
                                          config=None, agent_path=None)
        except (OSError, asyncssh.Error) as exc:
            failure = exc
            await asyncio.sleep(0.05)
    raise RuntimeError(f"cannot log in as {user}: {failure}")


async def timed(runs: int, step) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.monotonic()
        await step()
        times.append(time.monotonic() - start)
    return times


def figure(times: list[float]) -> str:
    return f"{statistics.median(times):.3f} s ({min(times):.3f}-{max(times):.3f})"


async def main(runs: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="sop-bench-sshd-"))
    base.chmod(0o755)
    key = asyncssh.generate_private_key("ssh-ed25519")
    public = key.export_public_key().decode().strip()
    drop = base / "sshd" / "conf.d"
    drop.mkdir(parents=True)
    (drop / "10-x.conf").write_text("MaxSessions 20\n")
    server = Sshd(base / "sshd", extra=f"Include {drop}/*.conf").start()
    server.authorize("root", public)
    original = server.config_path.read_text()
    users = [make_user(base, public, sudo=True), make_user(base, public, sudo=False)]
    rows = []
    try:
        for label, user in (("check, sshd -T through sudo", users[0]), ("check, files (no sudo)", users[1]),
                            ("check, sshd -T as root (root's login shell)", "root")):
            async with await connect(server, user, key) as conn:
                await check_sshd(conn, "bench", NEEDS)  # warm
                floor = await timed(runs, lambda: conn.run("true"))
                times = await timed(runs, lambda: check_sshd(conn, "bench", NEEDS))
                rows.append([label, figure(times), f"`true`: {figure(floor)}",
                             f"{statistics.median(times) / statistics.median(floor):.1f}x", TARGET])
        fixes = []
        for _ in range(runs):
            async with await connect(server, users[0], key) as conn:
                start = time.monotonic()
                fixed = await fix_sshd(conn, "bench", NEEDS)
                fixes.append(time.monotonic() - start)
                assert not fixed.needs_change, fixed
            server.config_path.write_text(original)
            os.kill(server.proc.pid, signal.SIGHUP)
        rows.append(["fix through sudo (check, script, check)", figure(fixes), "-", "-", "< 2 s (none in the issue)"])
    finally:
        server.stop()
        for user in users:
            drop_user(user)
        shutil.rmtree(base, ignore_errors=True)
    print(f"sshd check on loopback, median of {runs} (min-max), {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}")
    print(table(rows, ["what", "ours", "beside: one session", "ratio", "target"]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bench makes two throwaway users")
    asyncio.run(main(parser.parse_args().runs))

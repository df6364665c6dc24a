"""The operation log from its doors: the CLI through a real daemon process and without one, a config reload
(SIGHUP), the daemon itself; `ops list/show/export` and `log --since/--until` in the operator's time zone (TZ in a
subprocess); syslog to a real Unix datagram socket the test binds: ident, severity, no secret, and the tunnel
log's rate limit holding there too."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
import pytest
from sshd import free_port
from support import config_of, eventually, me, run

from console.core.oplog import OpLog
from console.core.paths import StatePaths
from console.core.status import OpEntry
from console.demo import _free_range

ROOT = Path(__file__).resolve().parents[2]


def cli(state: Path, config: Path | None, *args: str, env: dict[str, str] | None = None):
    cmd = [sys.executable, "-m", "console", "--state-dir", str(state)] + (["--config", str(config)] if config else [])
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=30, cwd=ROOT,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def hub_yaml(extra: str = "") -> str:
    low, high = _free_range(6)
    return f"hub: {{listen: '127.0.0.1:{free_port()}', ports: '{low}-{high}', default_quota: 2}}\n" + extra


def entries(done: subprocess.CompletedProcess) -> list[dict]:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["entries"]


def test_the_cli_and_a_config_reload_record_through_the_daemon_and_the_cli_alone_without_it(tmp_path):
    state = StatePaths(tmp_path / "state")
    config = tmp_path / "console.yaml"
    config.write_text(hub_yaml())
    ssh = {"SSH_CONNECTION": "203.0.113.9 50122 192.0.2.1 22"}  # as sshd sets it under ForceCommand

    # no daemon: the command runs on the store and writes the log itself
    added = cli(state.root, config, "clients", "add", "acme", env=ssh)
    assert added.returncode == 0, added.stderr
    daemon = subprocess.Popen([sys.executable, "-m", "console", "--state-dir", str(state.root), "--config",
                               str(config), "daemon"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        deadline = time.monotonic() + 10
        while not state.control_socket.exists():
            assert time.monotonic() < deadline and daemon.poll() is None, "the daemon did not start"
            time.sleep(0.05)
        assert cli(state.root, config, "clients", "change", "3", "acme", env=ssh).returncode == 0
        assert cli(state.root, config, "clients", "remove", "nobody").returncode == 2
        daemon.send_signal(signal.SIGHUP)  # a reload with nothing changed
        time.sleep(0.2)
        config.write_text(hub_yaml("oplog: {keep_days: 0}\n"))  # a reload the daemon refuses
        daemon.send_signal(signal.SIGHUP)

        def listed() -> list[dict]:
            return entries(cli(state.root, config, "ops", "list", "--json"))

        deadline = time.monotonic() + 10
        while len(found := listed()) < 6:  # the second reload's entry comes when the daemon has read the file
            assert time.monotonic() < deadline, found
            time.sleep(0.1)
        summary = [(e["action"], e["target"], e["via"], e["outcome"], e["who"], e["ssh_from"]) for e in found]
        assert summary == [
            ("reload", None, "config-reload", "failed", "SIGHUP", None),
            ("reload", None, "config-reload", "ok", "SIGHUP", None),
            ("clients.remove", "nobody", "cli", "failed", me(), None),
            ("clients.change", "acme", "cli", "ok", me(), "203.0.113.9"),
            ("daemon start", None, "daemon", "ok", me(), None),
            ("clients.add", "acme", "cli", "ok", me(), "203.0.113.9"),
        ]
        assert "oplog.keep_days: must be 1-36500, got 0" in found[0]["reason"]
        assert found[1]["details"] == {"changes": "nothing changed"}
        assert found[2]["reason"].startswith("no client 'nobody'")
        assert found[3]["details"] == {"id": "acme", "quota": 3} and found[3]["duration_ms"] > 0

        # the human list: times local, the next page's --before at the end; the next page from there
        page = cli(state.root, config, "ops", "list", "--limit", "4")
        assert page.returncode == 0, page.stderr
        lines = page.stdout.splitlines()
        assert lines[-1] == f"next page: --before {found[3]['id']}" and len(lines) == 6
        assert re.match(rf"\s+{found[0]['id']}\s+\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\s+SIGHUP\s+config-reload\s+reload",
                        lines[1]), lines[1]
        rest = entries(cli(state.root, config, "ops", "list", "--json", "--before", str(found[3]["id"])))
        assert [e["id"] for e in rest] == [e["id"] for e in found[4:]]
        shown = cli(state.root, config, "ops", "show", str(found[3]["id"]))
        assert "who:      " + me() + " (ssh from 203.0.113.9, as its client said)" in shown.stdout
        assert cli(state.root, config, "ops", "show", "999").returncode == 2

        out = tmp_path / "ops.csv"
        done = cli(state.root, config, "ops", "export", "--columns", "id,action,via,details", "-o", str(out),
                   "--action", "clients.*")
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip() == f"wrote 3 entries to {out}"
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        rows = list(csv.reader(io.StringIO(out.read_text())))
        assert rows[0] == ["id", "action", "via", "details"] and [r[1] for r in rows[1:]] == \
            ["clients.remove", "clients.change", "clients.add"]
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(10)
    # the daemon's stop is recorded; without a daemon, list reads the file
    after = entries(cli(state.root, config, "ops", "list", "--json", "--limit", "1"))
    assert [(e["action"], e["via"]) for e in after] == [("daemon stop", "daemon")]
    # the private key clients.add printed is nowhere in the log's files
    key_line = added.stdout.splitlines()[2]
    assert key_line and all(key_line.encode() not in p.read_bytes() for p in state.root.glob("oplog.sqlite*"))


def test_dates_are_the_operators_local_time_unless_zoned(tmp_path):
    """The same --since read in two time zones (TZ in the subprocess; POSIX TZ strings need no tz database)
    selects different entries; a zoned date selects the same in both; a bad date is one line, exit 2."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    log = OpLog(state / "oplog.sqlite")
    for minute in range(0, 8 * 60, 60):  # 06:00 ... 13:00 UTC, one an hour
        at = datetime(2026, 11, 20, 6, tzinfo=UTC).timestamp() + minute * 60
        log.insert(OpEntry(0, "", "op", None, "cli", "start", "master", "ok", None, 1.0, {}), int(at * 1000))
    log.close()

    def times(tz: str, *args: str) -> list[str]:
        return [e["at"][11:16] for e in entries(cli(state, None, "ops", "list", "--json", *args, env={"TZ": tz}))]

    assert times("UTC", "--since", "2026-11-20T10:00", "--until", "2026-11-20T12:00") == ["11:00", "10:00"]
    # 10:00 in UTC+3 is 07:00 UTC; the end is exclusive
    assert times("XST-3", "--since", "2026-11-20T10:00", "--until", "2026-11-20T12:00") == ["08:00", "07:00"]
    assert times("XST-3", "--since", "2026-11-20T10:00Z", "--until", "2026-11-20T12:00+00:00") == ["11:00", "10:00"]
    # a date alone is that day's local midnight: in UTC-10 the 20th starts at 10:00 UTC
    assert times("XST+10", "--since", "2026-11-20") == ["13:00", "12:00", "11:00", "10:00"]
    listed = cli(state, None, "ops", "list", env={"TZ": "XST-3"})
    assert "time (XST, UTC+03:00)" in listed.stdout and " 2026-11-20 16:00:00 " in listed.stdout  # 13:00 UTC
    bad = cli(state, None, "ops", "list", "--until", "2026-11-31")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("sop-console: --until: not a date: '2026-11-31'") and bad.stderr.count("\n") == 1


def test_the_tunnel_log_between_two_dates_over_its_rotated_files(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "tunnel.log.2").write_text("2026-11-20T07:00:00Z master a\n2026-11-20T08:00:00Z master b\n")
    (state / "tunnel.log.1").write_text("2026-11-20T09:00:00Z master c\n")
    (state / "tunnel.log").write_text("2026-11-20T10:00:00Z hub d\n2026-11-20T11:00:00Z hub e\n")

    def lines(*args: str, tz: str = "UTC") -> list[str]:
        done = cli(state, None, "log", *args, env={"TZ": tz})
        assert done.returncode == 0, done.stderr
        return [line.rsplit(" ", 1)[1] for line in done.stdout.splitlines()]

    assert lines("--since", "2026-11-20T08:00", "--until", "2026-11-20T10:00") == ["b", "c"]
    assert lines("--since", "2026-11-20T11:00", "--until", "2026-11-20T13:00", tz="XST-3") == ["b", "c"]
    assert lines("--since", "2026-11-20T09:00Z") == ["c", "d", "e"]
    assert lines("--since", "2026-11-20", "-n", "2") == ["d", "e"]
    assert lines("-n", "1") == ["e"]
    assert lines("--since", "-1h") == []  # the test's lines are in 2026-11-20, long before now (or after)
    assert cli(state, None, "log", "--since", "soon").returncode == 2


# ---------------------------------------------------------------------------------------------- syslog


class SyslogListener:
    """A syslog receiver: a Unix datagram socket bound in the test's directory, as /dev/log is."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.lines: list[tuple[int, str, str]] = []  # (severity, ident, message)

    def read(self) -> list[tuple[int, str, str]]:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.lines
            match = re.fullmatch(rb"<(\d+)>([^:\[]+)\[(\d+)\]: (.*)", data, re.DOTALL)
            assert match, data
            priority = int(match.group(1))
            assert priority >> 3 == 3, "facility daemon"
            self.lines.append((priority & 7, match.group(2).decode(), match.group(4).decode()))

    def close(self) -> None:
        self.sock.close()


def test_syslog_gets_tunnel_lines_and_operations_with_ident_and_severity_and_no_secret(tmp_path, state):
    from console.control.client import ControlClient
    from console.daemon import Daemon

    listener = SyslogListener(tmp_path / "log.sock")
    cfg = config_of(hub_yaml(f"log: {{syslog: true, syslog_address: '{listener.path}'}}\n"))

    async def body():
        daemon = Daemon(cfg, state, None, echo_log=False)
        await daemon.start()
        try:
            async with ControlClient(state.control_socket) as client:
                added = await client.request("clients.add", id="acme")
                with pytest.raises(Exception, match="no client 'nobody'"):
                    await client.request("clients.change", id="nobody", quota=1)
            key = asyncssh.import_private_key(added["private_key"])
            pinned = ([asyncssh.import_public_key(daemon.engine.hub.host_key.export_public_key())], [], [])
            port = daemon.engine.hub.port
            async with asyncssh.connect("127.0.0.1", port, username="acme", client_keys=[key], known_hosts=pinned,
                                        config=None, agent_path=None) as conn:
                for _ in range(30):  # refused 30 times; the tunnel log (and so syslog) says it once
                    with pytest.raises(asyncssh.ChannelOpenError):
                        await conn.run(command="id", timeout=5)
            await eventually(lambda: any("disconnected" in m for _, _, m in listener.read()), timeout=5)
            return added["private_key"]
        finally:
            await daemon.close()

    private = run(body())
    lines = listener.read()
    listener.close()
    assert {ident for _, ident, _ in lines} == {"sop-console"}
    by_text = {message: severity for severity, _, message in lines}

    def severity(pattern: str) -> int:
        found = [s for m, s in by_text.items() if re.search(pattern, m)]
        assert len(found) == 1, (pattern, list(by_text))
        return found[0]

    assert severity(r"^engine up with 0 units") == 6                                      # info
    assert severity(r"^operation \d+ clients\.add acme by .* via cli: ok") == 5           # notice
    assert severity(r"^operation \d+ clients\.change nobody .*: failed: no client") == 3  # err
    assert severity(r"^hub refused exec of 'id' for client acme") == 4                    # warning
    assert severity(r"^operation \d+ daemon start by") == 5
    refused = [m for m in by_text if "refused exec" in m]
    assert len([m for _, _, m in lines if "refused exec" in m]) <= 2, refused  # the line, at most its summary
    body_line = private.splitlines()[2]
    assert all(body_line not in m and "PRIVATE KEY" not in m for _, _, m in lines)

"""The command line and the daemon, as an operator runs them: real processes, real sshd."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import authorize_units, me, unit_yaml
from sshd import free_port

from console.core.paths import StatePaths


def cli(*args: str, state: Path, config: Path | None = None, input: str | None = None, timeout: float = 30):
    cmd = [sys.executable, "-m", "console", "--state-dir", str(state)]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, input=input, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)


def wait_for(predicate, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def daemon(sshd, tmp_path):
    """A real `sop-console daemon` process for the sshd fixture, with an echo-less forward to a closed port."""
    state = StatePaths(tmp_path / "state")
    config = tmp_path / "console.yaml"
    remote = free_port()
    config.write_text(unit_yaml(sshd, {"master": [f"ssh {remote} 127.0.0.1:{free_port()}"]}))
    authorize_units(sshd, state.prepare(), ["master"])
    proc = subprocess.Popen([sys.executable, "-m", "console", "--state-dir", str(state.root), "--config", str(config),
                             "daemon"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: state.control_socket.exists(), what="control socket")
        wait_for(lambda: _status(state)["units"][0]["state"] == "up", what="master up")
        yield proc, state, config, remote
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def _status(state: StatePaths) -> dict:
    done = cli("status", "--json", state=state.root)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_check_ok_and_bad(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("server: {host: example.net}\nunits:\n  master: {ssh_port: 10022}\n")
    done = cli("check", state=tmp_path / "s", config=good)
    assert done.returncode == 0 and "ok: master" in done.stdout
    assert "1 forward)" in done.stdout and "; 1 forward in all" in done.stdout, done.stdout  # not "1 forwards"
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {host: example.net}\nunits:\n  master:\n    ssh_port: 70000\n    typo: 1\n")
    done = cli("check", state=tmp_path / "s", config=bad)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{bad}:4: units.master.ssh_port: must be 1-65535 or 0, got 70000",
        f"{bad}:5: units.master.typo: unknown key (known keys: username, server, forwards, target, ssh_port, "
        "http_port, app_port, app_target_port, endpoint)",
    ]
    assert "Traceback" not in done.stderr


def test_config_from_environment_and_missing_config(tmp_path, monkeypatch):
    cfg = tmp_path / "env.yaml"
    cfg.write_text("")
    monkeypatch.setenv("SOP_CONSOLE_CONFIG", str(cfg))
    done = cli("check", state=tmp_path / "s")
    assert done.returncode == 0 and str(cfg) in done.stdout
    monkeypatch.delenv("SOP_CONSOLE_CONFIG")
    done = cli("check", state=tmp_path / "s")
    assert done.returncode == 2 and "no configuration file" in done.stderr


@pytest.mark.parametrize("args", [["status"], ["start"], ["stop", "master"], ["restart"], ["trust", "master"]])
def test_daemon_commands_exit_3_without_a_daemon(tmp_path, args):
    done = cli(*args, state=tmp_path / "s")
    assert done.returncode == 3
    assert "daemon is not running" in done.stderr and "Traceback" not in done.stderr


def test_usage_errors_exit_2(tmp_path):
    assert cli("frobnicate", state=tmp_path).returncode == 2
    assert cli("log", "-n", "x", state=tmp_path).returncode == 2
    assert cli(state=tmp_path).returncode == 2


def test_key_show_makes_a_private_key_0600_in_a_0700_dir(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server: {host: example.net}\nunits:\n  master: {ssh_port: 1}\n  clone: {ssh_port: 2}\n")
    state = tmp_path / "state"
    done = cli("key", "show", "master", state=state, config=cfg)
    assert done.returncode == 0, done.stderr
    comment, line = done.stdout.splitlines()
    assert line.startswith("ssh-ed25519 ") and line.endswith("sop-console-master")
    assert comment.startswith("# master: SHA256:")
    assert "PRIVATE" not in done.stdout
    key = state / "keys" / "master_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert cli("key", "show", "master", state=state, config=cfg).stdout == done.stdout  # stable
    both = cli("key", "show", state=state, config=cfg).stdout
    assert "# master:" in both and "# clone:" in both
    assert cli("key", "show", "primary", state=state, config=cfg).returncode == 2


def test_key_install_with_password_idempotent_and_wrong_password(password_sshd, local_user, tmp_path):
    user, password, home = local_user
    cfg = tmp_path / "c.yaml"
    cfg.write_text(unit_yaml(password_sshd, {"master": []}, users={"master": user}))
    state = tmp_path / "state"

    wrong = cli("key", "install", "master", "--password-stdin", state=state, config=cfg, input="not-it\n")
    assert wrong.returncode == 1
    assert "refused the password" in wrong.stderr and "not-it" not in wrong.stderr + wrong.stdout

    done = cli("key", "install", "master", "--password-stdin", state=state, config=cfg, input=password + "\n")
    assert done.returncode == 0, done.stderr
    assert "installed key SHA256:" in done.stdout
    ssh_dir = home / ".ssh"
    assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((ssh_dir / "authorized_keys").stat().st_mode) == 0o600
    public = (state / "keys" / "master_ed25519.pub").read_text().split()[1]
    assert (ssh_dir / "authorized_keys").read_text().count(public) == 1

    # Key login works now: nothing is asked (stdin is empty) and nothing is appended twice.
    again = cli("key", "install", "master", "--password-stdin", state=state, config=cfg, input="")
    assert again.returncode == 0, again.stderr
    assert "already authorized" in again.stdout
    assert (ssh_dir / "authorized_keys").read_text().count(public) == 1
    # The operation log kept who did it (no daemon runs: the command wrote it), and never the password.
    listed = cli("ops", "list", "--json", state=state, config=cfg)
    assert listed.returncode == 0, listed.stderr
    again_entry, entry, wrong_entry = json.loads(listed.stdout)["entries"]  # newest first
    # the failure is kept too, with the server's refusal (and never what was typed)
    assert (wrong_entry["action"], wrong_entry["target"], wrong_entry["outcome"]) == ("key install", "master",
                                                                                     "failed")
    assert "refused the password" in wrong_entry["reason"] and "not-it" not in json.dumps(wrong_entry)
    assert (entry["action"], entry["target"], entry["via"], entry["outcome"]) == ("key install", "master", "cli", "ok")
    assert entry["who"] == me() and "installed" in entry["details"]["detail"]
    assert "already authorized" in again_entry["details"]["detail"]
    for file in state.glob("oplog.sqlite*"):
        assert password.encode() not in file.read_bytes()


def test_key_install_refuses_an_unknown_host_key_under_strict(password_sshd, local_user, tmp_path):
    user, password, _ = local_user
    cfg = tmp_path / "c.yaml"
    cfg.write_text(unit_yaml(password_sshd, {"master": []}, users={"master": user}, pin=False))
    done = cli("key", "install", "master", "--password-stdin", state=tmp_path / "s", config=cfg,
               input=password + "\n")
    assert done.returncode == 1
    assert "is not trusted yet" in done.stderr and "--trust-host-key SHA256:" in done.stderr
    fingerprint = done.stderr.split("--trust-host-key ")[1].split(",")[0].split()[0]
    done = cli("key", "install", "master", "--password-stdin", "--trust-host-key", fingerprint,
               state=tmp_path / "s", config=cfg, input=password + "\n")
    assert done.returncode == 0, done.stderr


def test_daemon_status_json_stop_start_log_and_socket_mode(daemon):
    proc, state, config, remote = daemon
    assert stat.S_IMODE(state.control_socket.stat().st_mode) == 0o600
    status = _status(state)
    (unit,) = status["units"]
    # the documented shape (README, `status --json`), key for key in its order
    assert list(unit) == ["name", "state", "since", "server", "username", "last_error", "next_retry", "server_key",
                          "forwards", "endpoint", "endpoint_problem"]
    assert unit["name"] == "master" and unit["state"] == "up" and unit["since"].endswith("Z")
    assert (unit["endpoint"], unit["endpoint_problem"]) == ("default", None)
    (fwd,) = unit["forwards"]
    assert fwd == {"name": "ssh", "remote": f"127.0.0.1:{remote}", "local": fwd["local"], "state": "listening",
                   "error": None, "open": 0, "total": 0, "bytes_in": 0, "bytes_out": 0}

    human = cli("status", state=state.root)
    assert human.returncode == 0 and "● up" in human.stdout and "● listening" in human.stdout

    assert cli("stop", "master", state=state.root).stdout.strip() == "master: stopped"
    assert _status(state)["units"][0]["state"] == "stopped"
    assert cli("start", state=state.root).stdout.strip() == "master: started"
    wait_for(lambda: _status(state)["units"][0]["state"] == "up", what="up again")
    assert cli("stop", "primary", state=state.root).returncode == 2

    log = cli("log", "-n", "5", state=state.root)
    assert log.returncode == 0 and len(log.stdout.splitlines()) == 5
    assert "master Starting: 1 forward up" in cli("log", "-n", "100", state=state.root).stdout


def test_daemon_reload_on_sighup_and_clean_stop_on_sigterm(daemon, sshd):
    proc, state, config, remote = daemon
    extra = free_port()
    config.write_text(unit_yaml(sshd, {"master": [f"ssh {remote} 127.0.0.1:9", f"http {extra} 127.0.0.1:9"]}))
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(_status(state)["units"][0]["forwards"]) == 2
             and _status(state)["units"][0]["forwards"][1]["state"] == "listening", what="reloaded")
    assert "master forwards updated" in state.tunnel_log.read_text()

    config.write_text("units: [broken\n")  # a bad config is refused; the running one stays
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in state.tunnel_log.read_text(), what="refusal logged")
    assert _status(state)["units"][0]["state"] == "up"

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(5)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0
    assert elapsed < 2.0, f"SIGTERM took {elapsed:.2f}s"
    assert not state.control_socket.exists()
    assert "Stopped: daemon shutting down" in state.tunnel_log.read_text()
    assert "Traceback" not in proc.stderr.read()


def test_second_daemon_on_the_same_state_dir_is_refused(daemon):
    proc, state, config, _ = daemon
    done = cli("daemon", state=state.root, config=config, timeout=10)
    assert done.returncode == 1 and "another daemon already runs" in done.stderr


def test_trust_through_the_daemon(sshd, tmp_path):
    state = StatePaths(tmp_path / "state")
    config = tmp_path / "console.yaml"
    config.write_text(unit_yaml(sshd, {"master": []}, pin=False))
    authorize_units(sshd, state.prepare(), ["master"])
    proc = subprocess.Popen([sys.executable, "-m", "console", "--state-dir", str(state.root), "--config", str(config),
                             "daemon"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: state.control_socket.exists())
        wait_for(lambda: _status(state)["units"][0]["state"] == "host-key-unknown")
        shown = _status(state)["units"][0]["server_key"]
        wrong = cli("trust", "master", "--fingerprint", "SHA256:" + "B" * 43, state=state.root)
        assert wrong.returncode == 1 and "nothing recorded" in wrong.stderr
        seen = cli("trust", "master", "--check", state=state.root)
        assert seen.returncode == 0 and f"{shown} of 127.0.0.1:{sshd.port}: not trusted yet" in seen.stdout
        assert "trusted: none yet" in seen.stdout and "server software: SSH-2.0-OpenSSH" in seen.stdout
        assert not state.known_hosts.exists() or "ssh-ed25519" not in state.known_hosts.read_text()
        done = cli("trust", "master", state=state.root)
        assert done.returncode == 0 and shown in done.stdout and "trusted" in done.stdout
        wait_for(lambda: _status(state)["units"][0]["state"] == "up", timeout=5)
        assert f"[127.0.0.1]:{sshd.port} ssh-ed25519" in state.known_hosts.read_text()
    finally:
        proc.terminate()
        proc.wait(5)


def test_demo_command_comes_up(tmp_path):
    try:
        done = subprocess.run([sys.executable, "-m", "console", "--state-dir", str(tmp_path / "demo"), "demo",
                               "--duration", "4"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:  # show where it stood: the output is the only witness
        raise AssertionError(f"demo did not end: stdout={exc.stdout!r} stderr={exc.stderr!r}") from None
    assert done.returncode == 0, done.stderr
    assert "master Starting: 2 forwards up" in done.stdout
    assert "clone Starting: 2 forwards up" in done.stdout
    assert "Traceback" not in done.stderr


def test_event_stream_sees_a_stop_within_a_second(daemon):
    """The control socket's subscribe: a snapshot first, then events as they happen (what the console uses)."""
    import asyncio

    from console.control.client import ControlClient
    from console.core.events import ForwardChanged, LogLine, UnitStateChanged

    proc, state, config, remote = daemon

    async def body():
        async with ControlClient(state.control_socket) as watcher:
            status, events = await watcher.subscribe()
            assert status["units"][0]["state"] == "up"
            async with ControlClient(state.control_socket) as operator:
                started = time.monotonic()
                assert await operator.request("stop", unit="master") == ["master"]
            seen = []

            def done() -> bool:
                stopped = any(isinstance(e, UnitStateChanged) and e.state == "stopped" for e in seen)
                logged = any(isinstance(e, LogLine) and e.line.endswith(f"master Stopped by {me()}") for e in seen)
                return stopped and logged

            async def collect():
                async for event in events:
                    seen.append(event)
                    if done():
                        return

            await asyncio.wait_for(collect(), 5)
            assert time.monotonic() - started < 1.0
            assert any(isinstance(e, ForwardChanged) and e.forward == "ssh" and e.state == "stopped" for e in seen)

    asyncio.run(body())


STAMP = re.compile(r"\d{4}-\d\d-\d\d|\d\d:\d\d:\d\d")


@pytest.mark.parametrize("systemd", [{"JOURNAL_STREAM": "8:123456"}, {"INVOCATION_ID": "0" * 32}, {}],
                         ids=["journal-stream", "invocation-id", "terminal"])
def test_daemon_log_lines_leave_time_stamps_to_the_journal(tmp_path, systemd):
    """Under systemd the journal stamps each line: ours carry no time, and start with the priority (<6> info)."""
    config = tmp_path / "console.yaml"
    config.write_text(f"server: {{host: 127.0.0.1, port: {free_port()}}}\n"
                      "units:\n  master: {ssh_port: 10022}\n")  # a closed port: the unit retries, quietly here
    env = {key: value for key, value in os.environ.items() if key not in ("JOURNAL_STREAM", "INVOCATION_ID")}
    state = StatePaths(tmp_path / "state")
    proc = subprocess.Popen([sys.executable, "-m", "console", "--state-dir", str(state.root), "--config", str(config),
                             "daemon"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**env, **systemd})
    try:
        wait_for(lambda: state.control_socket.exists(), what="control socket")
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    lines = stderr.splitlines()
    assert any("engine up with 1 unit: " in line for line in lines), stderr
    for line in lines:
        if systemd:
            assert not STAMP.search(line), f"a time stamp under systemd: {line!r}"
            assert re.match(r"<[2-7]>(DEBUG|INFO|WARNING|ERROR|CRITICAL) ", line), line
        else:
            assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ", line), line


def test_a_failed_key_install_is_recorded_by_the_running_daemon_and_retries_nothing(daemon, sshd):
    proc, state, config, _ = daemon
    for authorized in sshd.authorized.iterdir():   # our key no longer logs in, and this sshd takes no password
        authorized.unlink()
    failed = cli("key", "install", "master", "--password-stdin", state=state.root, config=config, input="guess\n")
    assert failed.returncode == 1 and "key install failed" in failed.stderr, failed.stderr
    assert "could not tell the daemon" not in failed.stderr, failed.stderr
    listed = cli("ops", "list", "--json", "--action", "key install", state=state.root, config=config)
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)["entries"]
    assert (entry["target"], entry["via"], entry["outcome"]) == ("master", "cli", "failed")
    assert entry["reason"] and entry["reason"] in failed.stderr and "guess" not in json.dumps(entry)
    assert "retrying now" not in state.tunnel_log.read_text()   # a failure kicks nothing

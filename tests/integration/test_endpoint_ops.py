"""The endpoints' logins as an operator runs them, end to end: `endpoints check`, `setup-auth` (password, key,
script) and `check-sshd` from the real command line, with no daemon (run in the CLI's own process) and through a
real daemon; the daemon's own checks (at start, every interval, when a unit starts or stops failing to log in),
and what the units' status says of an unavailable endpoint. Real sshd, real users, real sudo."""

from __future__ import annotations

import json
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
from sshd import authorize_in_home, free_port
from support import authorize_units, me, oplog_entries
from test_cli_daemon import cli, wait_for
from test_endpoints_cli import start_daemon, stop_daemon
from test_sshd_check import client_key, serve, sudo_user  # noqa: F401 - the sshd check's fixtures

from console.core.keys import key_body, unit_public_key
from console.core.paths import StatePaths

HEAD = re.compile(r"^(\S+)  ([●✖]) (\w+)(?: \(([\w-]+)\))?  (\d+\.\d\d) s$")   # "lab  ● available  0.05 s"


def at(server, username: str | None = None) -> str:
    """An endpoint on a test sshd, its host key pinned (a YAML flow mapping's body)."""
    return (f"host: 127.0.0.1, port: {server.port}, username: {username or me()}, "
            f"host_key: '{server.host_public_key}'")


def config_text(endpoints: dict[str, str], units: dict[str, str], *, interval: float = 0) -> str:
    """endpoints and units: name -> the body of its YAML flow mapping. `interval`: endpoint_check_interval."""
    return ("endpoints:\n" + "".join(f"  {name}: {{{body}}}\n" for name, body in endpoints.items())
            + "tunnel: {keepalive_interval: 1, keepalive_count_max: 2, retry_min: 0.05, retry_max: 1, "
            f"connect_timeout: 3, endpoint_check_interval: {interval}}}\n"
            + "units:\n" + "".join(f"  {name}: {{{body}}}\n" for name, body in units.items()))


def run_cli(*args: str, state: StatePaths, config: Path, input: str | None = None) -> subprocess.CompletedProcess:
    done = cli(*args, state=state.root, config=config, input=input)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def checks_of(stdout: str) -> dict[str, tuple[str, str | None, list[str]]]:
    """`endpoints check`'s text: endpoint -> (state, reason, the lines under its head)."""
    found: dict[str, tuple[str, str | None, list[str]]] = {}
    current = None
    for line in stdout.splitlines():
        head = HEAD.match(line)
        if head:
            current = head.group(1)
            found[current] = (head.group(3), head.group(4), [])
        elif line.startswith("  ") and current:
            found[current][2].append(line.strip())
    return found


def stored_checks(state: StatePaths) -> dict[str, dict]:
    if not state.database.exists():
        return {}
    store = json.loads(state.database.read_text())
    return {row["endpoint"]: row["check"] for row in store.get("endpoint_checks", {}).values()}


def unit_of(state: StatePaths, name: str) -> dict:
    done = cli("status", "--json", state=state.root)
    assert done.returncode == 0, done.stderr
    return next(u for u in json.loads(done.stdout)["units"] if u["name"] == name)


@pytest.fixture
def daemon():
    """daemon(state, config): a real `sop-console daemon`, killed at teardown if a test ends without stopping it."""
    started = []

    def start(state: StatePaths, config: Path):
        started.append(start_daemon(state, config))
        return started[-1]
    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


# ------------------------------------------------------------------------------------------------- endpoints check

def test_check_available_refused_and_publickey_from_the_command_line(sshd, tmp_path):
    state, config = StatePaths(tmp_path / "state"), tmp_path / "console.yaml"
    closed = free_port()
    config.write_text(config_text({"lab": at(sshd), "closed": f"host: 127.0.0.1, port: {closed}", "nokey": at(sshd)},
                                  {"master": "endpoint: lab", "clone": "endpoint: nokey"}))
    authorize_units(sshd, state.prepare(), ["master"])
    unit_public_key(state, "clone")   # clone has a key, which the sshd does not know

    done = run_cli("endpoints", "check", state=state, config=config)   # no daemon: every endpoint, in-process
    assert done.returncode == 1, done.stderr
    found = checks_of(done.stdout)
    assert list(found) == ["lab", "closed", "nokey"]
    assert found["lab"] == ("available", None, [f"{me()} logs in to 127.0.0.1:{sshd.port} with the key of unit master"])
    # an endpoint no unit uses: its own username, the first unit's key
    assert found["closed"] == ("unavailable", "network", [
        f"connection refused by 127.0.0.1:{closed}",
        "hint: nothing listens there: start sshd, or check the endpoint's port"])
    state_word, reason, lines = found["nokey"]
    assert (state_word, reason) == ("unavailable", "publickey")
    assert lines[0].startswith(f"127.0.0.1:{sshd.port} did not accept the ssh-ed25519 key of unit clone for {me()}")
    assert "the server offers publickey" in " ".join(lines) and any(line.startswith("hint: ") for line in lines)
    assert done.stdout.splitlines()[-1].startswith("3 endpoints checked in ")
    assert all(len(line) <= 80 for line in done.stdout.splitlines())

    assert run_cli("endpoints", "check", "lab", state=state, config=config).returncode == 0
    as_json = run_cli("endpoints", "check", "closed", "nokey", "--json", state=state, config=config)
    assert as_json.returncode == 1
    (refused, publickey) = json.loads(as_json.stdout)["checks"]
    assert (refused["endpoint"], refused["state"], refused["reason"], refused["unit"], refused["username"]) == \
        ("closed", "unavailable", "network", "master", "root")
    assert (publickey["reason"], publickey["methods"]) == ("publickey", ["publickey"])
    assert 0 <= refused["seconds"] < 3 and 0 < publickey["seconds"] < 3   # within connect_timeout
    # kept as each endpoint's last check, and in the operation record
    assert {name: check["state"] for name, check in stored_checks(state).items()} == \
        {"lab": "available", "closed": "unavailable", "nokey": "unavailable"}
    assert [op["details"]["checks"] for op in oplog_entries(state) if op["action"] == "endpoints.check"][-1] == \
        "closed unavailable (network), nokey unavailable (publickey)"
    unknown = run_cli("endpoints", "check", "lba", state=state, config=config)
    assert unknown.returncode == 2 and "did you mean 'lab'" in unknown.stderr and unknown.stdout == ""

    # both units on lab: available only when both log in; the message names the one that cannot
    config.write_text(config_text({"lab": at(sshd)}, {"master": "endpoint: lab", "clone": "endpoint: lab"}))
    both = run_cli("endpoints", "check", "lab", "--json", state=state, config=config)
    (check,) = json.loads(both.stdout)["checks"]
    assert both.returncode == 1 and (check["reason"], check["unit"]) == ("publickey", "clone")
    assert "key of unit clone" in check["message"] and check["message"].endswith("; unit master logs in")


def test_check_through_the_daemon_and_what_the_units_status_says(sshd, tmp_path, daemon):
    """The daemon checks every endpoint at start; `endpoints check` goes through it; a unit whose endpoint is
    unavailable says so in `status` (human and JSON) until a check says otherwise."""
    state, config = StatePaths(tmp_path / "state"), tmp_path / "console.yaml"
    config.write_text(config_text({"lab": at(sshd)}, {"master": "endpoint: lab"}, interval=3600))
    authorize_units(sshd, state.prepare(), ["master"])
    proc = daemon(state, config)
    try:
        wait_for(lambda: "lab" in stored_checks(state), what="the check at the daemon's start")
        assert stored_checks(state)["lab"]["state"] == "available"
        wait_for(lambda: unit_of(state, "master")["state"] == "up", what="master up")

        sshd.stop()
        done = run_cli("endpoints", "check", "lab", state=state, config=config)
        assert done.returncode == 1 and checks_of(done.stdout)["lab"][:2] == ("unavailable", "network")
        problem = f"unavailable: connection refused by 127.0.0.1:{sshd.port}"
        wait_for(lambda: unit_of(state, "master")["endpoint_problem"] == problem, what="master's status says it")
        text = run_cli("status", state=state, config=config).stdout
        assert f"  endpoint lab: {problem}" in text.splitlines()
        assert any(op["action"] == "endpoints.check" and op["who"] == me() for op in oplog_entries(state))

        sshd.start()
        assert run_cli("endpoints", "check", state=state, config=config).returncode == 0
        wait_for(lambda: unit_of(state, "master")["endpoint_problem"] is None, what="the problem gone")
    finally:
        stop_daemon(proc)
    log = state.tunnel_log.read_text()
    assert "endpoints lab checked: unavailable (network): connection refused" in log
    assert "endpoints lab checked: available" in log


def test_the_daemon_checks_every_interval(sshd, tmp_path, daemon):
    state, config = StatePaths(tmp_path / "state"), tmp_path / "console.yaml"
    config.write_text(config_text({"lab": at(sshd)}, {"master": "endpoint: lab"}, interval=1))
    authorize_units(sshd, state.prepare(), ["master"])
    proc = daemon(state, config)
    try:
        wait_for(lambda: stored_checks(state).get("lab", {}).get("state") == "available", what="the first check")
        sshd.stop()   # nobody asks: only the daemon's own round finds it
        wait_for(lambda: stored_checks(state)["lab"]["reason"] == "network", timeout=15, what="a periodic check")
        sshd.start()
        wait_for(lambda: stored_checks(state)["lab"]["state"] == "available", timeout=15, what="available again")
    finally:
        stop_daemon(proc)
    assert not any(op["action"] == "endpoints.check" for op in oplog_entries(state))  # the daemon's, not an operator's


def test_a_unit_that_starts_or_stops_failing_to_log_in_has_its_endpoint_checked(sshd, tmp_path, daemon):
    """No round in the meantime (interval an hour): only the unit's auth-failed, then its coming up, check."""
    state, config = StatePaths(tmp_path / "state"), tmp_path / "console.yaml"
    config.write_text(config_text({"lab": at(sshd)}, {"master": "endpoint: lab"}, interval=3600))
    authorize_units(sshd, state.prepare(), ["master"])
    authorized = sshd.authorized / me()
    proc = daemon(state, config)
    try:
        wait_for(lambda: unit_of(state, "master")["state"] == "up", what="master up")
        wait_for(lambda: stored_checks(state).get("lab", {}).get("state") == "available", what="the start check")
        line = authorized.read_text()
        authorized.write_text("")
        sshd.restart()   # the unit's session ends; its key is refused from now on
        wait_for(lambda: unit_of(state, "master")["state"] == "auth-failed", what="master auth-failed")
        wait_for(lambda: stored_checks(state)["lab"]["reason"] == "publickey", what="lab checked again")
        assert unit_of(state, "master")["endpoint_problem"].startswith(
            f"unavailable: 127.0.0.1:{sshd.port} did not accept the ssh-ed25519 key of unit master")
        authorized.write_text(line)
        wait_for(lambda: unit_of(state, "master")["state"] == "up", what="master up again")
        wait_for(lambda: stored_checks(state)["lab"]["state"] == "available", what="lab available again")
        assert unit_of(state, "master")["endpoint_problem"] is None
    finally:
        stop_daemon(proc)


def test_an_endpoint_added_is_checked(sshd, tmp_path, daemon):
    """`endpoints add`: with no daemon the command checks it before it answers; a daemon answers at once and checks
    it in the background; with endpoint_check_interval 0 nobody does."""
    state, config = StatePaths(tmp_path / "state"), tmp_path / "console.yaml"
    config.write_text(config_text({"lab": at(sshd)}, {"master": "endpoint: lab"}, interval=3600))
    authorize_units(sshd, state.prepare(), ["master"])
    closed = free_port()
    added = run_cli("endpoints", "add", "web", "--host", "127.0.0.1", "--port", str(closed), state=state,
                    config=config)
    assert added.returncode == 0 and f"root@127.0.0.1:{closed}, ✖ unavailable" in added.stdout, added.stdout
    assert stored_checks(state)["web"]["message"] == f"connection refused by 127.0.0.1:{closed}"

    proc = daemon(state, config)
    try:
        added = run_cli("endpoints", "add", "db", "--host", "127.0.0.1", "--port", str(sshd.port), state=state,
                        config=config)
        assert added.returncode == 0 and "· unchecked" in added.stdout   # answered before the check
        # checked with a key borrowed from master; its host key is pinned nowhere and unknown (strict): the hint
        # is set-up auth's --trust-host-key, not `trust master` (which would trust master's own server)
        wait_for(lambda: stored_checks(state).get("db", {}).get("unit") == "master", what="db checked")
        db = stored_checks(state)["db"]
        assert (db["state"], db["reason"]) == ("unavailable", "host-key-unknown")
        assert f"--trust-host-key {db['fingerprint']}" in db["hint"] and "trust master" not in db["hint"]
    finally:
        stop_daemon(proc)

    config.write_text(config_text({"lab": at(sshd)}, {"master": "endpoint: lab"}, interval=0))
    run_cli("endpoints", "add", "off", "--host", "127.0.0.1", "--port", str(closed), state=state, config=config)
    assert "off" not in stored_checks(state)


# ------------------------------------------------------------------------------------------------- set-up auth

def test_setup_auth_by_password_through_the_daemon(password_sshd, local_user, tmp_path, daemon):
    """The password crosses the control socket once: it is in no file of the state dir and no line of the
    daemon's; a wrong one is one line and exit 1; the second run finds the key authorized."""
    user, password, home = local_user
    state, config = StatePaths(tmp_path / "state"), tmp_path / "console.yaml"
    config.write_text(config_text({"lab": at(password_sshd, user)}, {"master": "endpoint: lab"}))
    unit_public_key(state.prepare(), "master")
    proc = daemon(state, config)
    try:
        wait_for(lambda: unit_of(state, "master")["state"] == "auth-failed", what="master auth-failed")
        wrong = run_cli("endpoints", "setup-auth", "lab", "--method", "password", "--password-stdin", state=state,
                        config=config, input="not-it\n")
        assert wrong.returncode == 1 and wrong.stdout == "" and len(wrong.stderr.splitlines()) == 1
        assert f"refused the password for {user}" in wrong.stderr and "not-it" not in wrong.stderr

        done = run_cli("endpoints", "setup-auth", "lab", "--method", "password", "--password-stdin", state=state,
                       config=config, input=password + "\n")
        assert done.returncode == 0, done.stderr
        said = " ".join(done.stdout.split())   # the outcome wraps at 80 columns
        assert said.startswith("installed the key of unit master (SHA256:")
        assert f"for {user} on 127.0.0.1:{password_sshd.port}, logged in as {user} with a password" in said
        assert checks_of(done.stdout)["lab"][:2] == ("available", None)
        wait_for(lambda: unit_of(state, "master")["state"] == "up", what="master kicked, up")

        again = run_cli("endpoints", "setup-auth", "lab", "--method", "password", "--password-stdin", state=state,
                        config=config, input=password + "\n")
        assert again.returncode == 0 and "was already authorized" in " ".join(again.stdout.split())
        public = key_body(unit_public_key(state, "master").line)
        assert (home / ".ssh" / "authorized_keys").read_text().count(public) == 1
    finally:
        stop_daemon(proc)
    said = proc.stderr.read()
    for path in state.root.rglob("*"):
        if path.is_file() and path.name != "control.sock":
            assert password.encode() not in path.read_bytes(), path
    assert password not in said
    records = [op for op in oplog_entries(state) if op["action"] == "endpoints.setup_auth"]
    assert [(r["target"], r["details"]["method"], r["details"]["password"]) for r in records] == \
        [("lab", "password", "(secret)")] * 3
    assert records[0]["outcome"] == "failed" and records[0]["reason"].endswith(
        f"refused the password for {user} (wrong password, or password login is disabled there)")
    assert (records[1]["outcome"], records[1]["details"]["now"]) == ("ok", "available")


def test_setup_auth_by_key_with_no_daemon(sshd, local_user, tmp_path):
    user, _, home = local_user
    state, config = StatePaths(tmp_path / "state"), tmp_path / "console.yaml"
    config.write_text(config_text({"lab": at(sshd, user)}, {"master": "endpoint: lab"}))
    identity = tmp_path / "operator" / "id_ed25519"
    identity.parent.mkdir(mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(identity)], check=True)
    sshd.authorize("root", identity.with_suffix(".pub").read_text())

    needs = run_cli("endpoints", "setup-auth", "lab", "--method", "key", state=state, config=config)
    assert needs.returncode == 2 and "--method key needs --identity FILE" in needs.stderr
    before = run_cli("endpoints", "check", "lab", state=state, config=config)
    assert checks_of(before.stdout)["lab"][:2] == ("unavailable", "no-key")

    done = run_cli("endpoints", "setup-auth", "lab", "--method", "key", "--identity", str(identity), state=state,
                   config=config)
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stdout.split())
    assert said.startswith("installed the key of unit master (SHA256:")
    assert f"for {user} on 127.0.0.1:{sshd.port}, logged in as root with {identity}" in said
    assert checks_of(done.stdout)["lab"][:2] == ("available", None)
    keys = home / ".ssh" / "authorized_keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600 and keys.stat().st_uid == home.stat().st_uid
    assert run_cli("endpoints", "check", "lab", state=state, config=config).returncode == 0


def test_setup_auth_by_script_run_as_root_then_check(sshd, local_user, tmp_path):
    """The script alone on stdout, piped to a file and run with sh as root; its sshd part written to the test
    sshd's own config (the script names /etc/ssh/sshd_config: this test points it at the test sshd's file, whose
    running sshd it then reloads through its PidFile); then `endpoints check` says available."""
    user, _, home = local_user
    state, config = StatePaths(tmp_path / "state"), tmp_path / "console.yaml"
    forwards = "forwards: [{name: web, remote_port: 0, remote_bind: 0.0.0.0, local: '127.0.0.1:9'}]"
    config.write_text(config_text({"lab": at(sshd, user)}, {"master": f"endpoint: lab, {forwards}"}))

    done = run_cli("endpoints", "setup-auth", "lab", "--method", "script", state=state, config=config)
    assert done.returncode == 0, done.stderr
    script = done.stdout
    assert script.startswith("#!/bin/sh\n") and script.endswith('echo "sop-console: done"\n')
    assert "run it on the server of lab" in done.stderr and "endpoints check lab" in done.stderr
    assert key_body(unit_public_key(state, "master").line) in script
    assert "GatewayPorts clientspecified" in script   # the forward binds 0.0.0.0
    assert "conf=/etc/ssh/sshd_config\n" in script
    path = tmp_path / "setup.sh"
    path.write_text(script.replace("conf=/etc/ssh/sshd_config\n", f"conf={shlex.quote(str(sshd.config_path))}\n"))
    ran = subprocess.run(["sh", str(path)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"added the key to {home}/.ssh/authorized_keys" in ran.stdout and "reloaded sshd" in ran.stdout
    wait_for(lambda: sshd.effective()["gatewayports"] == "clientspecified", what="the new settings")

    check = run_cli("endpoints", "check", "lab", state=state, config=config)
    assert check.returncode == 0 and checks_of(check.stdout)["lab"][0] == "available", check.stdout
    after = run_cli("endpoints", "setup-auth", "lab", "--method", "script", state=state, config=config)
    assert "● available" in after.stderr and after.stdout == script   # the same script again; the status now


# ------------------------------------------------------------------------------------------------- check-sshd

def test_check_sshd_flagged_then_fixed_through_sudo(sudo_user, serve, tmp_path):  # noqa: F811
    """Logged in as the endpoint's account (password-less sudo) with the unit's key: GatewayPorts no is
    flagged for a forward beyond loopback (exit 1, nothing changed), --fix writes, reloads, and says ok."""
    server = serve(extra="GatewayPorts no")
    original = server.config_path.read_text()
    state, config = StatePaths(tmp_path / "state"), tmp_path / "console.yaml"
    forwards = "forwards: [{name: web, remote_port: 0, remote_bind: 0.0.0.0, local: '127.0.0.1:9'}]"
    config.write_text(config_text({"lab": at(server, sudo_user)}, {"master": f"endpoint: lab, {forwards}"}))
    authorize_in_home(sudo_user, unit_public_key(state.prepare(), "master").line)

    flagged = run_cli("endpoints", "check-sshd", "lab", state=state, config=config)
    assert flagged.returncode == 1, flagged.stderr
    assert flagged.stdout.startswith("sshd of lab: 2 settings need a change\n")
    assert "✖ GatewayPorts" in flagged.stdout and "write: GatewayPorts clientspecified" in flagged.stdout
    assert server.config_path.read_text() == original

    fixed = run_cli("endpoints", "check-sshd", "lab", "--fix", "--json", state=state, config=config)
    assert fixed.returncode == 0, fixed.stderr
    result = json.loads(fixed.stdout)
    assert result["privilege"] == "sudo" and "reloaded sshd" in result["fix"]
    assert [s["keyword"] for s in result["before"] if s["state"] == "needs-change"] == \
        ["GatewayPorts", "ClientAliveInterval"]
    assert server.effective()["gatewayports"] == "clientspecified"
    ok = run_cli("endpoints", "check-sshd", "lab", state=state, config=config)
    assert ok.returncode == 0 and ok.stdout.startswith("sshd of lab: ok for its forwards\n")
    details = [op["details"] for op in oplog_entries(state) if op["action"] == "endpoints.check_sshd"]
    assert details[0]["result"] == "2 settings to change" and not details[0].get("fix")
    assert details[1]["fix"] is True and details[1]["result"].startswith("ok; fix: ")


def test_check_sshd_with_an_operators_root_key(client_key, serve, tmp_path):  # noqa: F811
    key, _ = client_key
    server = serve(extra="GatewayPorts no")   # root logs in with client_key
    identity = tmp_path / "root_key"
    identity.write_bytes(key.export_private_key())
    identity.chmod(0o600)
    state, config = StatePaths(tmp_path / "state"), tmp_path / "console.yaml"
    config.write_text(config_text({"lab": at(server, "nobody")}, {"master": "endpoint: lab"}))
    no_key = run_cli("endpoints", "check-sshd", "lab", state=state, config=config)
    assert no_key.returncode == 1 and "unit master has no key yet" in no_key.stderr
    done = run_cli("endpoints", "check-sshd", "lab", "--identity", str(identity), "--json", state=state,
                   config=config)
    result = json.loads(done.stdout)
    assert (result["privilege"], result["source"]) == ("root", "sshd -T")
    assert "for user nobody" in result["how"]   # judged for the units' account, logged in as root
    assert done.returncode == 1 and [s["keyword"] for s in result["settings"] if s["state"] == "needs-change"] == \
        ["ClientAliveInterval"]   # no forward beyond loopback: GatewayPorts no is fine

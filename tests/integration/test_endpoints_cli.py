"""Endpoints as an operator uses them: a real daemon, the real command line, a real sshd.

A unit goes through a config endpoint to the sshd; endpoints are added, shown, associated, routed and removed at
run time through the daemon, and kept across its restart; with no daemon the same commands work on the store."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import authorize_units, me
from sshd import free_port
from test_cli_daemon import cli, wait_for

from console.core.paths import StatePaths
from console.core.states import EndpointReason, EndpointState
from console.core.status import EndpointCheck
from console.core.store import Store


def endpoint_yaml(sshd, remote: int, *, username: str | None = None, comment: str = "the test sshd",
                  interval: int = 0) -> str:
    """No `server:` at all: master goes through the config endpoint `lab` (the test sshd). The daemon checks no
    endpoint by itself unless `interval` says so (the endpoints added here name addresses outside loopback, where
    a check would send packets)."""
    return (f"vpcs:\n  prod: [10.0.0.0/16]\n"
            f"endpoints:\n  lab:\n    host: 127.0.0.1\n    port: {sshd.port}\n    username: {username or me()}\n"
            f"    host_key: {sshd.host_public_key}\n    comment: {comment}\n    subnet: 10.1.0.0/24\n"
            "tunnel: {keepalive_interval: 1, keepalive_count_max: 2, retry_min: 0.05, retry_max: 1, "
            f"connect_timeout: 3, endpoint_check_interval: {interval}}}\n"
            f"units:\n  master:\n    endpoint: lab\n    forwards:\n"
            f"      - {{name: ssh, remote_port: {remote}, remote_bind: 127.0.0.1, local: '127.0.0.1:9'}}\n")


def start_daemon(state: StatePaths, config: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "console", "--state-dir", str(state.root), "--config", str(config),
                             "daemon"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: state.control_socket.exists() or proc.poll() is not None, what="control socket")
    assert proc.poll() is None, proc.stderr.read()
    return proc


def stop_daemon(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.wait(10)


def ok(*args, state: StatePaths, config: Path | None = None) -> str:
    done = cli(*args, state=state.root, config=config)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def refused(code: int, *args, state: StatePaths, config: Path | None = None) -> str:
    """A refusal: exit `code`, one line on stderr, nothing on stdout."""
    done = cli(*args, state=state.root, config=config)
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    return done.stderr


def unit_state(state: StatePaths) -> dict:
    return json.loads(ok("status", "--json", state=state))["units"][0]


@pytest.fixture
def lab(sshd, tmp_path):
    """A daemon whose unit master comes up through the config endpoint lab."""
    state = StatePaths(tmp_path / "state")
    config = tmp_path / "console.yaml"
    remote = free_port()
    config.write_text(endpoint_yaml(sshd, remote))
    authorize_units(sshd, state.prepare(), ["master"])
    proc = start_daemon(state, config)
    try:
        yield proc, state, config, remote
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def test_a_unit_comes_up_through_a_config_endpoint(lab, sshd):
    proc, state, config, remote = lab
    wait_for(lambda: unit_state(state)["state"] == "up", what="master up through lab")
    unit = unit_state(state)
    assert unit["server"] == f"127.0.0.1:{sshd.port}" and unit["username"] == me()
    (shown,) = json.loads(ok("endpoints", "list", "--json", state=state))["endpoints"]
    assert (shown["name"], shown["source"], shown["state"], shown["units"], shown["port"]) == \
        ("lab", "config", "unchecked", ["master"], sshd.port)
    assert shown["id"].startswith("ep-") and shown["scope"] == [
        {"kind": "subnet", "network": "10.1.0.0/24", "source": "own", "cidrs": ["10.1.0.0/24"]}]
    text = ok("endpoints", "list", state=state)
    assert text.splitlines()[1].split() == ["lab", "·", "unchecked", f"{me()}@127.0.0.1:{sshd.port}", "config",
                                            "master"]
    # endpoint_check_interval 0 checked nothing; a reload that turns the checks on starts a round at once
    config.write_text(endpoint_yaml(sshd, remote, interval=3600))
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "● available" in ok("endpoints", "list", state=state), what="lab checked after the reload")
    assert unit_state(state)["endpoint"] == "lab" and unit_state(state)["endpoint_problem"] is None


def test_add_show_associate_route_remove_through_the_daemon(lab, sshd):
    proc, state, config, remote = lab
    added = ok("endpoints", "add", "web", "--host", "10.9.0.5", "--port", "2222", "--user", "ops", "--comment",
               "lab box", "--subnet", "10.3.0.0/24", state=state)
    assert added.startswith("endpoint web added (ep-") and "ops@10.9.0.5:2222, · unchecked" in added
    show = json.loads(ok("endpoints", "show", "web", "--json", state=state))
    assert list(show) == ["id", "name", "source", "state", "host", "port", "username", "host_key_policy", "comment",
                          "units", "rules", "subnet", "scope", "created", "updated", "last_check"]
    assert (show["source"], show["host"], show["port"], show["username"], show["comment"], show["units"],
            show["rules"], show["last_check"]) == ("runtime", "10.9.0.5", 2222, "ops", "lab box", [], [], None)
    text = ok("endpoints", "show", "web", state=state)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "  comment     lab box" in text and "  last check  never checked" in text

    assoc = ok("endpoints", "associate", "web", "--vpc", "prod", "--subnet", "10.4.0.0/24", "--subnet",
               "10.3.0.0/24", state=state)
    assert assoc.splitlines() == ["web: associated subnet 10.4.0.0/24, VPC prod",
                                  "web: already in its scope: subnet 10.3.0.0/24 (its own subnet)"]
    assoc = ok("endpoints", "associate", "lab", "--subnet", "10.5.0.0/24", state=state)  # a config endpoint too
    assert assoc == "lab: associated subnet 10.5.0.0/24\n"
    assert "subnet 10.5.0.0/24 (associated at run time)" in ok("endpoints", "show", "lab", state=state)

    assert ok("endpoints", "route", "10.4.0.9", state=state).startswith("10.4.0.9 -> web\n")
    assert ok("endpoints", "route", "10.1.0.9", state=state).startswith("10.1.0.9 -> lab\n")   # lab's own subnet
    via_vpc = json.loads(ok("endpoints", "route", "10.0.7.7", "--json", state=state))
    assert (via_vpc["endpoint"], via_vpc["how"], via_vpc["vpc"]) == ("web", "vpc", "prod")
    nowhere = cli("endpoints", "route", "192.0.2.1", state=state.root)
    assert nowhere.returncode == 1 and nowhere.stdout.startswith("192.0.2.1 -> no endpoint\n")

    gone = ok("endpoints", "unassociate", "web", "--vpc", "prod", "--subnet", "10.6.0.0/24", state=state)
    assert gone.splitlines() == ["web: unassociated VPC prod", "web: not associated: subnet 10.6.0.0/24"]
    assert cli("endpoints", "route", "10.0.7.7", state=state.root).returncode == 1

    assert ok("endpoints", "remove", "web", state=state) == "endpoint web removed\n"
    assert [e["name"] for e in json.loads(ok("endpoints", "list", "--json", state=state))["endpoints"]] == ["lab"]
    log = state.tunnel_log.read_text()
    assert f"endpoints web added by {me()}: ops@10.9.0.5:2222" in log and f"endpoints web removed by {me()}" in log


def test_refusals_are_one_line_exit_2_and_change_nothing(lab):
    proc, state, config, remote = lab
    ok("endpoints", "add", "web", "--host", "h", state=state)
    assert "nothing removed: lab is in" in refused(2, "endpoints", "remove", "web", "lab", state=state)
    line = refused(2, "endpoints", "remove", "lab", state=state)
    assert "config endpoints are read-only at run time" in line and line.rstrip().endswith("used by units master")
    assert "web" in ok("endpoints", "list", state=state)                 # all or none: web stays
    assert "is an endpoint of" in refused(2, "endpoints", "add", "lab", "--host", "h", state=state)
    assert "exists already" in refused(2, "endpoints", "add", "web", "--host", "h", state=state)
    assert "endpoint name must be" in refused(2, "endpoints", "add", "no/slash", "--host", "h", state=state)
    assert "--port must be" in refused(2, "endpoints", "add", "w2", "--host", "h", "--port", "99999", state=state)
    assert "has host bits set" in refused(2, "endpoints", "associate", "web", "--subnet", "10.0.0.1/8", state=state)
    assert "did you mean 'prod'" in refused(2, "endpoints", "associate", "web", "--vpc", "prd", state=state)
    assert "did you mean 'web'" in refused(2, "endpoints", "show", "wbe", state=state)
    assert "not an IP address" in refused(2, "endpoints", "route", "somewhere", state=state)
    assert "set in" in refused(2, "endpoints", "unassociate", "lab", "--subnet", "10.1.0.0/24", state=state)


def test_runtime_endpoints_survive_a_restart_and_work_without_a_daemon(lab, sshd):
    proc, state, config, remote = lab
    ok("endpoints", "add", "web", "--host", "10.9.0.5", "--subnet", "10.3.0.0/24", state=state)
    ok("endpoints", "associate", "lab", "--vpc", "prod", state=state)
    before = json.loads(ok("endpoints", "list", "--json", state=state))
    stop_daemon(proc)

    # no daemon: reads come from the store; a change is made on it, under the daemon's lock
    assert json.loads(ok("endpoints", "list", "--json", state=state, config=config)) == before
    store = Store(state.database)   # a check result, as the daemon's check keeps it
    store.set_endpoint_check(EndpointCheck(
        "web", EndpointState.UNAVAILABLE, EndpointReason.NETWORK, "connection refused by 10.9.0.5:22",
        "start sshd there, or check the endpoint's port", "10.9.0.5:22", "root", checked_at="2026-11-22T10:00:00Z",
        seconds=0.01))
    store.close()
    listed = ok("endpoints", "list", state=state, config=config).splitlines()
    assert listed[2].split()[:3] == ["web", "✖", "unavailable"]
    assert listed[3:5] == ["    connection refused by 10.9.0.5:22; start sshd there, or check the endpoint's",
                           "    port"]                                       # its reason and hint, within 80 columns
    shown = ok("endpoints", "show", "web", state=state, config=config)
    assert "  last check  ✖ unavailable (network), 2026-11-22T10:00:00Z, 0.01 s\n" \
           "              tried root@10.9.0.5:22\n" \
           "              connection refused by 10.9.0.5:22\n" \
           "              hint: start sshd there, or check the endpoint's port\n" in shown
    assert all(len(line) <= 80 for line in shown.splitlines() + listed), shown
    ok("endpoints", "add", "db", "--host", "10.9.0.6", state=state, config=config)
    assert ok("endpoints", "route", "10.0.1.1", state=state, config=config).startswith("10.0.1.1 -> lab")

    again = start_daemon(state, config)
    try:
        after = json.loads(ok("endpoints", "list", "--json", state=state))["endpoints"]
        assert [e["name"] for e in after] == ["lab", "db", "web"]      # the config's, then the runtime ones by name
        assert after[0] == before["endpoints"][0]                     # ids, times and scope as they were
        assert after[2] == before["endpoints"][1] | {"state": "unavailable", "last_check": after[2]["last_check"]}
        wait_for(lambda: unit_state(state)["state"] == "up", what="master up again")
    finally:
        stop_daemon(again)


def test_a_reload_restarts_a_unit_only_when_its_endpoints_link_changes(lab, sshd):
    """SIGHUP: a new comment changes the endpoint, not the unit's connection; a new user reconnects the unit."""
    proc, state, config, remote = lab
    wait_for(lambda: unit_state(state)["state"] == "up", what="master up")
    since = unit_state(state)["since"]
    config.write_text(endpoint_yaml(sshd, remote, comment="a new comment"))
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "a new comment" in ok("endpoints", "show", "lab", state=state), what="comment reloaded")
    assert "configuration reloaded: endpoint lab changed" in state.tunnel_log.read_text()
    assert unit_state(state)["since"] == since and unit_state(state)["state"] == "up"

    config.write_text(endpoint_yaml(sshd, remote, username="nobody-here"))
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: unit_state(state)["username"] == "nobody-here", what="reconnecting as the new user")
    assert "master reconnecting with new settings" in state.tunnel_log.read_text()
    assert "endpoint lab changed (now nobody-here@127.0.0.1" in state.tunnel_log.read_text()


def _endpoint_events(state: StatePaths, requests: list[tuple[str, dict]], count: int) -> list[tuple[str, str]]:
    """The first `count` EndpointChanged events (endpoint, change) a subscriber hears while `requests` are made."""
    from console.control.client import ControlClient
    from console.core.events import EndpointChanged

    async def body() -> list[tuple[str, str]]:
        async with ControlClient(state.control_socket) as watcher:
            _, events = await watcher.subscribe()
            async with ControlClient(state.control_socket) as operator:
                for op, args in requests:
                    await operator.request(op, **args)
            seen = []

            async def collect():
                async for event in events:
                    if isinstance(event, EndpointChanged):
                        seen.append((event.endpoint, event.change))
                        if len(seen) == count:
                            return

            await asyncio.wait_for(collect(), 5)
            return seen

    return asyncio.run(body())


def test_every_change_is_an_endpoint_changed_event(lab):
    proc, state, config, remote = lab
    assert _endpoint_events(state, [("endpoints.add", {"name": "web", "host": "h"}),
                                    ("endpoints.associate", {"name": "web", "subnets": ["10.8.0.0/24"]}),
                                    ("endpoints.remove", {"names": ["web"]})], 3) == \
        [("web", "added"), ("web", "scope"), ("web", "removed")]


def test_adding_or_removing_a_rule_tells_its_endpoint_s_watchers(lab):
    proc, state, config, remote = lab
    wait_for(lambda: unit_state(state)["state"] == "up", what="master up through lab")
    rule = {"direction": "egress", "rule": f"tcp:{free_port()}:127.0.0.1:9", "via": "master"}
    assert _endpoint_events(state, [("proxy.add", rule), ("proxy.remove", rule)], 2) == \
        [("lab", "rules"), ("lab", "rules")]


def test_a_rule_via_a_unit_uses_the_units_endpoint(lab):
    proc, state, config, remote = lab
    wait_for(lambda: unit_state(state)["state"] == "up", what="master up through lab")
    text = f"tcp:{free_port()}:127.0.0.1:9"
    rule = f"egress {text} via master"
    ok("proxy", "add", "--egress", text, "--via", "master", state=state)
    (shown,) = json.loads(ok("endpoints", "list", "--json", state=state))["endpoints"]
    assert (shown["units"], shown["rules"]) == (["master"], [rule])
    assert f"  rules       {rule}\n" in ok("endpoints", "show", "lab", state=state)
    line = refused(2, "endpoints", "remove", "lab", state=state)
    assert line.rstrip().endswith(f"used by units master; rules {rule}"), line
    ok("proxy", "remove", "--egress", text, "--via", "master", state=state)
    (shown,) = json.loads(ok("endpoints", "list", "--json", state=state))["endpoints"]
    assert shown["rules"] == []


def test_a_rule_via_scope_uses_the_endpoint_its_destination_routes_to(lab):
    """Removing the endpoint a rule via scope routes to now is refused, naming the rule, as for a rule via a unit."""
    proc, state, config, remote = lab
    ok("endpoints", "add", "web", "--host", "127.0.0.1", "--subnet", "10.8.0.0/24", state=state)
    text = f"tcp:{free_port()}:10.8.0.5:80"
    rule = f"egress {text} via scope"
    ok("proxy", "add", "--egress", text, "--via", "scope", state=state)
    shown = {e["name"]: e for e in json.loads(ok("endpoints", "list", "--json", state=state))["endpoints"]}
    assert (shown["web"]["rules"], shown["lab"]["rules"]) == ([rule], [])
    line = refused(1, "endpoints", "remove", "web", state=state)
    assert line.rstrip().endswith(f"used by rules {rule}"), line
    ok("proxy", "remove", "--egress", text, "--via", "scope", state=state)
    ok("endpoints", "remove", "web", state=state)

"""Proxy rules as an operator uses them: a real daemon, the real command line, real TCP and UDP services.

Rules added at run time listen at once and come back after a daemon restart; config rules cannot be removed; a bad
rule is one line, exit 2; with no daemon, the same commands work on the store and the daemon picks the rule up."""

from __future__ import annotations

import json
import socket
import socketserver
import threading

import pytest
from sshd import free_port
from support import authorize_units, hub_config, me, oplog_entries
from test_cli_daemon import cli, wait_for
from test_endpoints_cli import lab, ok, refused, start_daemon, stop_daemon  # noqa: F401 (lab: a fixture)

from console.core.paths import StatePaths


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


def _serving(server: socketserver.BaseServer):
    """Serve in a thread; yield the port; stop."""
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def echo():
    yield from _serving(socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo))


def through(port: int, payload: bytes = b"hello") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def listed(state: StatePaths) -> dict[str, dict]:
    return {f"{r['direction']} {r['rule']} via {r['via']}": r
            for r in json.loads(ok("proxy", "list", "--json", state=state))["rules"]}


@pytest.fixture
def setup(tmp_path, echo):
    state = StatePaths(tmp_path / "state")
    config = tmp_path / "console.yaml"
    fixed = free_port()
    config.write_text(f"proxy:\n  ingress:\n    - tcp:{fixed}:127.0.0.1:{echo}\n"
                      "  gateways:\n    - {name: lab, subnet: 127.0.0.0/24, base: "
                      f"{free_port() - 10}, services: [22, 80], hosts: 1-2}}\n")
    return state, config, fixed


def test_rules_added_at_run_time_listen_and_come_back_after_a_restart(setup, echo):
    state, config, fixed = setup
    proc = start_daemon(state, config)
    try:
        assert through(fixed) == b"hello"
        port = free_port()
        out = ok("proxy", "add", "--egress", f"tcp:{port}:127.0.0.1:{echo}", state=state)
        assert out == f"added egress tcp:{port}:127.0.0.1:{echo} via local: ● listening on 127.0.0.1:{port}\n"
        assert through(port, b"x" * 100_000) == b"x" * 100_000
        key = f"egress tcp:{port}:127.0.0.1:{echo} via local"
        wait_for(lambda: listed(state)[key]["open"] == 0, what="the connection counted closed")
        rule = listed(state)[key]
        assert list(rule) == ["id", "direction", "protocol", "rule", "listener", "destination", "via", "state",
                              "reason", "source", "origin", "destinations", "open", "total", "bytes_in", "bytes_out",
                              "udp_flows", "dropped", "created", "who"]
        assert (rule["state"], rule["source"], rule["total"], rule["bytes_in"], rule["bytes_out"]) == \
            ("listening", "runtime", 1, 100_000, 100_000)
        assert rule["destinations"] == [{"destination": f"127.0.0.1:{echo}", "rule": rule["id"], "state": "up",
                                         "reason": None, "since": None}]
        text = ok("proxy", "list", state=state)
        assert f"egress     tcp:{port}:127.0.0.1:{echo}" in text and "gateway lab" in text, text
        assert "4 ● listening" in text   # the plan folded into one line
        stop_daemon(proc)
        proc = start_daemon(state, config)                      # back after a restart, and listening
        again = listed(state)[f"egress tcp:{port}:127.0.0.1:{echo} via local"]
        assert (again["id"], again["state"], again["source"], again["created"]) == \
            (rule["id"], "listening", "runtime", rule["created"])
        assert through(port) == b"hello"
        assert ok("proxy", "remove", "--egress", f"tcp:{port}:127.0.0.1:{echo}", state=state) == \
            f"removed egress tcp:{port}:127.0.0.1:{echo} via local\n"
        with pytest.raises(OSError):
            through(port)
        assert f"egress tcp:{port}:127.0.0.1:{echo} via local" not in listed(state)
        actions = [(o["action"], o["target"], o["details"].get("direction"), o["via"], o["outcome"])
                   for o in oplog_entries(state) if o["action"].startswith("proxy.")]
        assert actions[-2:] == [("proxy.add", f"tcp:{port}:127.0.0.1:{echo}", "egress", "cli", "ok"),
                                ("proxy.remove", f"tcp:{port}:127.0.0.1:{echo}", "egress", "cli", "ok")]
    finally:
        stop_daemon(proc)


def test_refusals_are_one_line_exit_2(setup, echo):
    state, config, fixed = setup
    proc = start_daemon(state, config)
    try:
        assert refused(2, "proxy", "add", "--ingress", "udp:70000:10.0.0.1:53", state=state) == \
            "sop-console: udp:70000:10.0.0.1:53: port must be 1-65535, got 70000\n"
        assert refused(2, "proxy", "remove", "--ingress", f"tcp:{fixed}:127.0.0.1:{echo}", state=state) == \
            (f"sop-console: ingress tcp:{fixed}:127.0.0.1:{echo} via local is in {config} at proxy.ingress[0]: rules "
             "of the config cannot be removed at run time (edit the file, then reload)\n")
        assert "clashes with ingress" in refused(2, "proxy", "add", "--egress", f"tcp:{fixed}:10.0.0.1:1",
                                                 state=state)
        assert "via must be local, scope or a configured unit (local, scope), got master" in refused(
            2, "proxy", "add", "--egress", "tcp:1:10.0.0.1:1", "--via", "master", state=state)
        assert refused(2, "gateway", "show", "nope", state=state) == \
            f"sop-console: no gateway named nope in {config} (known: lab)\n"
        done = cli("proxy", "add", state=state.root)   # argparse's own usage lines, exit 2
        assert done.returncode == 2 and "one of the arguments --ingress --egress is required" in done.stderr
    finally:
        stop_daemon(proc)


def test_with_no_daemon_the_store_takes_the_rule_and_the_daemon_runs_it(setup, echo):
    state, config, fixed = setup
    port = free_port()
    out = ok("proxy", "add", "--ingress", f"tcp:{port}:127.0.0.1:{echo}", state=state, config=config)
    assert out.startswith(f"added ingress tcp:{port}:127.0.0.1:{echo} via local: ■ stopped: no daemon runs the rules")
    text = ok("proxy", "list", state=state, config=config)
    assert text.splitlines()[0] == "no daemon runs the rules (they listen while `sop-console daemon` runs)"
    shown = ok("gateway", "show", "lab", state=state, config=config)
    assert shown.splitlines()[0].startswith("gateway lab: port ") and "4 ports: 4 stopped" in shown
    proc = start_daemon(state, config)
    try:
        assert through(port) == b"hello"
        plan = json.loads(ok("gateway", "show", "lab", "--json", state=state))
        assert [p["state"] for p in plan["ports"]] == ["listening"] * 4 and plan["clashes"] == []
        script = ok("gateway", "export", "lab", "--iptables", "--source", "127.0.0.10", "--interface", "lo",
                    state=state)
        first = plan["ports"][0]
        assert (f"iptables -t nat -A PREROUTING -i lo -p tcp -m tcp --dport {first['port']} -j DNAT "
                f"--to-destination 127.0.0.1:22") in script.splitlines()
    finally:
        stop_daemon(proc)


# ---------------------------------------------------------------------------------------------- rules via a unit


class _UdpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data, self.client_address)


@pytest.fixture
def udp_echo():
    yield from _serving(socketserver.ThreadingUDPServer(("127.0.0.1", 0), _UdpEcho))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unit_up(state: StatePaths) -> bool:
    return json.loads(ok("status", "--json", state=state))["units"][0]["state"] == "up"


def test_rules_via_a_unit_carry_tcp_and_udp_through_our_hub(tmp_path, echo, udp_echo):
    """Our hub is the unit's server; hub.egress_allow lets the unit's rules reach the echo services and nothing
    else: a rule to another destination is refused in the hub's words."""
    state = StatePaths(tmp_path / "state").prepare()
    text, _ports = hub_config(state, allow=(f"127.0.0.1:{echo}", f"127.0.0.1:{udp_echo}"))
    config = tmp_path / "console.yaml"
    config.write_text(text)
    proc = start_daemon(state, config)
    try:
        wait_for(lambda: unit_up(state), timeout=15, what="master up")
        tcp, udp, closed = f"tcp:{free_port()}:127.0.0.1:{echo}", f"udp:{free_udp_port()}:127.0.0.1:{udp_echo}", \
            f"tcp:{free_port()}:127.0.0.1:9"
        for rule in (tcp, udp, closed):
            out = ok("proxy", "add", "--egress", rule, "--via", "master", state=state)
            assert out.startswith(f"added egress {rule} via master: ● listening on 127.0.0.1:"), out
        assert through(int(tcp.split(":")[1]), b"y" * 200_000) == b"y" * 200_000
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(b"ping", ("127.0.0.1", int(udp.split(":")[1])))
            assert sock.recvfrom(65536)[0] == b"ping"
        key = f"egress {tcp} via master"
        wait_for(lambda: listed(state)[key]["total"] == 1 and listed(state)[key]["open"] == 0, what="counted")
        assert listed(state)[key]["bytes_in"] == 200_000
        assert listed(state)[f"egress {udp} via master"]["bytes_out"] == 4
        # not allowed by the hub: nothing carried, and the destination's reason is the hub's
        with socket.create_connection(("127.0.0.1", int(closed.split(":")[1])), timeout=5) as sock:
            assert sock.recv(10) == b""        # carried nowhere: closed (before or after it sees our end)
        (down,) = listed(state)[f"egress {closed} via master"]["destinations"]
        assert down["state"] == "down" and "egress to 127.0.0.1:9 is not allowed by the hub (hub.egress_allow: " \
            in down["reason"], down
        assert "down: unit master: the server 127.0.0.1:" in ok("proxy", "list", state=state)
    finally:
        stop_daemon(proc)


def test_a_udp_rule_via_a_unit_on_plain_sshd_is_refused_with_the_line(lab, udp_echo):
    proc, state, config, remote = lab
    wait_for(lambda: unit_up(state), timeout=15, what="master up through sshd")
    rule = f"udp:{free_udp_port()}:127.0.0.1:{udp_echo}"
    ok("proxy", "add", "--ingress", rule, "--via", "master", state=state)
    key = f"ingress {rule} via master"
    wait_for(lambda: listed(state)[key]["state"] == "refused", what="the UDP rule refused")
    text = ok("proxy", "list", state=state)
    line = next(line for line in text.splitlines() if rule in line)
    assert "✖ refused" in line, text
    assert "UDP rules need a SOP Console hub at the far end" in text, text


def test_egress_via_scope_picks_the_endpoint_of_the_destination_and_its_connected_unit(tmp_path, sshd, echo):
    """Two endpoints: our hub (`default`, subnet 127.0.0.0/24, unit master) and the test sshd (`lab`, the wider
    127.0.0.0/16, unit clone). A rule via scope to 127.0.0.1 takes the most specific subnet: master, through the hub;
    an address no endpoint serves is refused in the route's words; a host name is refused at once."""
    state = StatePaths(tmp_path / "state").prepare()
    text, _ports = hub_config(state, allow=(f"127.0.0.1:{echo}",))
    text = text.replace("server: {host: 127.0.0.1,", "server: {subnet: 127.0.0.0/24, host: 127.0.0.1,")
    text = text.replace("units:\n", f"endpoints:\n  lab: {{host: 127.0.0.1, port: {sshd.port}, username: {me()}, "
                                    f"host_key: '{sshd.host_public_key}', subnet: 127.0.0.0/16}}\n"
                                    "units:\n  clone:\n    endpoint: lab\n")
    authorize_units(sshd, state, ["clone"])
    config = tmp_path / "console.yaml"
    config.write_text(text)
    proc = start_daemon(state, config)
    try:
        wait_for(lambda: all(u["state"] == "up" for u in json.loads(ok("status", "--json", state=state))["units"]),
                 timeout=15, what="master and clone up")
        rule = f"tcp:{free_port()}:127.0.0.1:{echo}"
        out = ok("proxy", "add", "--egress", rule, "--via", "scope", state=state)
        assert out.startswith(f"added egress {rule} via scope: ● listening on 127.0.0.1:"), out
        assert through(int(rule.split(":")[1]), b"z" * 50_000) == b"z" * 50_000
        shown = listed(state)[f"egress {rule} via scope"]
        assert shown["via"] == "scope" and shown["reason"].startswith(
            "endpoint default, unit master: 127.0.0.1 is in 127.0.0.0/24"), shown
        # no endpoint serves it: refused, and nothing listens
        lost = f"tcp:{free_port()}:10.9.9.9:80"
        ok("proxy", "add", "--egress", lost, "--via", "scope", state=state)
        wait_for(lambda: listed(state)[f"egress {lost} via scope"]["state"] == "refused", what="refused")
        assert listed(state)[f"egress {lost} via scope"]["reason"] == \
            "10.9.9.9 is in no endpoint's subnet and in no VPC"
        line = next(line for line in ok("proxy", "list", state=state).splitlines() if lost in line)
        assert "✖ refused" in line, line
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", int(lost.split(":")[1])), timeout=2).close()
        # a host name: refused at parse time, one line, exit 2; an ingress rule too
        assert refused(2, "proxy", "add", "--egress", "tcp:8080:db.example:80", "--via", "scope", state=state) == \
            "sop-console: tcp:8080:db.example:80: via scope needs an address as the destination (an endpoint's " \
            "scope is by address), got the host name db.example\n"
        assert "ingress rules cannot go via scope" in refused(
            2, "proxy", "add", "--ingress", "tcp:8080:127.0.0.1:80", "--via", "scope", state=state)
    finally:
        stop_daemon(proc)


def test_a_udp_egress_rule_via_a_unit_on_plain_sshd_is_refused_up_front_and_does_not_listen(lab, udp_echo):
    proc, state, config, remote = lab
    wait_for(lambda: unit_up(state), timeout=15, what="master up through sshd")
    port = free_udp_port()
    rule = f"udp:{port}:127.0.0.1:{udp_echo}"
    ok("proxy", "add", "--egress", rule, "--via", "master", state=state)
    key = f"egress {rule} via master"
    wait_for(lambda: listed(state)[key]["state"] == "refused", what="the UDP egress rule refused")
    assert listed(state)[key]["reason"].startswith("UDP rules need a SOP Console hub at the far end: unit master's "
                                                   "server 127.0.0.1:"), listed(state)[key]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))      # nothing holds the port

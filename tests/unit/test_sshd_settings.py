"""The sshd check's judging, on what this machine's real `sshd -T` prints for a config, and its own reading of
config files checked against that same sshd (the no-sudo path must read what sshd reads)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
from pathlib import Path

import pytest
from sshd import Sshd, find_sshd
from support import config_of

from console.core.sshd_fix import fix_lines, sshd_fix_script
from console.core.sshd_settings import (ALIVE_COUNT, ALIVE_INTERVAL, DEFAULTS, FileReader, ForwardNeeds, Listen,
                                        judge, needs_of, parse_effective, render, shown, split_line)
from console.core.states import SshdSettingState
from console.core.status import SshdCheck, SshdSetting
from console.tunnel.sshd_check import listener_args, options_of

OK, CHANGE, NOTE = SshdSettingState.OK, SshdSettingState.CHANGE, SshdSettingState.NOTE
WIDE = ForwardNeeds((Listen("0.0.0.0", 10080, "unit master forward http"),
                     Listen("127.0.0.1", 10022, "unit master forward ssh")))
LOOPBACK = ForwardNeeds((Listen("127.0.0.1", 10022, "unit master forward ssh"), Listen("", 0, "unit clone forward x")))


@pytest.fixture
def server(tmp_path):
    if find_sshd() is None:
        if os.environ.get("CI"):
            pytest.fail("sshd is missing in CI: make test installs openssh-server")
        pytest.skip("sshd not installed")
    if os.geteuid() != 0:
        pytest.skip("sshd -T reads its host key: needs root")
    return Sshd(tmp_path / "sshd")


def effective(server: Sshd, extra: str = "", match: str = "", spec: str | None = None) -> str:
    """What the real sshd -T prints for the test sshd's config with `extra` lines (and a Match block)."""
    server.extra, server.match = extra, match
    server.write_config()
    args = [server.binary, "-T", "-f", str(server.config_path)] + (["-C", spec] if spec else [])
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def setting(settings: list[SshdSetting], keyword: str) -> SshdSetting:
    return next(s for s in settings if s.keyword == keyword)


def test_gateway_ports_no_is_flagged_only_when_a_forward_binds_beyond_loopback(server):
    values = parse_effective(effective(server, "GatewayPorts no"))
    flagged = setting(judge(values, WIDE), "GatewayPorts")
    assert flagged.state is CHANGE and flagged.lines == ["GatewayPorts clientspecified"]
    assert "unit master forward http (0.0.0.0:10080)" in flagged.why and "loopback only" in flagged.why
    assert setting(judge(values, LOOPBACK), "GatewayPorts").state is OK  # "" leaves it to the server
    assert setting(judge(parse_effective(effective(server, "GatewayPorts clientspecified")), WIDE),
                   "GatewayPorts").state is OK
    only_wide = ForwardNeeds(WIDE.listens[:1])
    assert setting(judge(parse_effective(effective(server, "GatewayPorts yes")), only_wide),
                   "GatewayPorts").state is OK
    # yes puts a forward that asks for 127.0.0.1 on every address: worth saying, not a change
    note = setting(judge(parse_effective(effective(server, "GatewayPorts yes")), LOOPBACK), "GatewayPorts")
    assert note.state is NOTE and note.lines == ["GatewayPorts clientspecified"]


def test_client_alive_zero_means_ports_held_forever(server):
    zero = setting(judge(parse_effective(effective(server, "ClientAliveInterval 0")), LOOPBACK),
                   "ClientAliveInterval")
    assert zero.state is CHANGE and zero.value == "0 x 3" and "forever" in zero.why
    assert zero.lines == [f"ClientAliveInterval {ALIVE_INTERVAL}", f"ClientAliveCountMax {ALIVE_COUNT}"]
    count_zero = setting(judge(parse_effective(effective(server, "ClientAliveInterval 10\nClientAliveCountMax 0")),
                               LOOPBACK), "ClientAliveInterval")
    assert count_zero.state is CHANGE and "ClientAliveCountMax 0" in count_zero.why
    minute = setting(judge(parse_effective(effective(server, "ClientAliveInterval 1m")), LOOPBACK),
                     "ClientAliveInterval")
    assert minute.state is OK and minute.value == "60 x 3" and "180 s" in minute.why
    too_long = setting(judge(parse_effective(effective(server, "ClientAliveInterval 200")), LOOPBACK),
                       "ClientAliveInterval")
    assert too_long.state is CHANGE and "600 s" in too_long.why
    # the lines we recommend, given to the real sshd, give the wait we promise
    fixed = setting(judge(parse_effective(effective(server, "\n".join(zero.lines))), LOOPBACK), "ClientAliveInterval")
    assert fixed.state is OK and f"{ALIVE_INTERVAL * ALIVE_COUNT} s" in fixed.why


@pytest.mark.parametrize("value, egress, line", [
    ("local", False, "AllowTcpForwarding yes"),     # keeps local working for whoever set it
    ("no", False, "AllowTcpForwarding remote"),     # only what the units need
    ("remote", True, "AllowTcpForwarding yes"),     # egress rules are local forwards
    ("no", True, "AllowTcpForwarding yes"),
])
def test_allow_tcp_forwarding_must_allow_what_the_forwards_use(server, value, egress, line):
    needs = ForwardNeeds(LOOPBACK.listens, egress=egress)
    found = setting(judge(parse_effective(effective(server, f"AllowTcpForwarding {value}")), needs),
                    "AllowTcpForwarding")
    assert found.state is CHANGE and found.lines == [line] and found.value == value
    fixed = setting(judge(parse_effective(effective(server, line)), needs), "AllowTcpForwarding")
    assert fixed.state is OK


def test_allow_tcp_forwarding_all_serves_both_and_disable_forwarding_overrides_it(server):
    values = parse_effective(effective(server, "AllowTcpForwarding all"))
    assert values["allowtcpforwarding"] == "yes"
    assert setting(judge(values, ForwardNeeds(LOOPBACK.listens, egress=True)), "AllowTcpForwarding").state is OK
    disabled = judge(parse_effective(effective(server, "DisableForwarding yes")), LOOPBACK)
    assert setting(disabled, "DisableForwarding").lines == ["DisableForwarding no"]
    assert "DisableForwarding" not in [s.keyword for s in judge(values, LOOPBACK)]  # shown only when yes


def test_permit_listen_matches_the_requested_host_string(server):
    values = parse_effective(effective(server, "PermitListen localhost:10022 localhost:10080"))
    found = setting(judge(values, WIDE), "PermitListen")
    assert found.state is CHANGE
    assert "localhost is not 127.0.0.1" in found.why
    assert found.lines == ["PermitListen localhost:10022 localhost:10080 0.0.0.0:10080 127.0.0.1:10022"]
    # the line we give is one sshd accepts, and then every forward is allowed
    fixed = parse_effective(effective(server, found.lines[0]))
    assert setting(judge(fixed, WIDE), "PermitListen").state is OK
    # a bare port is any host (sshd prints *:port); a forward with remote_port 0 needs a '*' port
    bare = parse_effective(effective(server, "PermitListen 10022 127.0.0.1:10080"))
    assert bare["permitlisten"] == "*:10022 127.0.0.1:10080"
    chosen = ForwardNeeds((Listen("127.0.0.1", 0, "unit a forward b"),))
    refused = setting(judge(bare, chosen), "PermitListen")
    assert refused.state is CHANGE and "'*' port" in refused.why and refused.lines[0].endswith(" 127.0.0.1:*")
    assert setting(judge(parse_effective(effective(server, "PermitListen none")), LOOPBACK),
                   "PermitListen").state is CHANGE
    assert setting(judge(parse_effective(effective(server, "PermitListen 127.0.0.1:*")), WIDE),
                   "PermitListen").state is CHANGE  # 0.0.0.0 is not 127.0.0.1


def test_permit_open_is_judged_only_for_egress(server):
    values = parse_effective(effective(server, "PermitOpen none"))
    assert "PermitOpen" not in [s.keyword for s in judge(values, LOOPBACK)]
    found = setting(judge(values, ForwardNeeds(LOOPBACK.listens, egress=True)), "PermitOpen")
    assert found.state is CHANGE and found.lines == ["PermitOpen any"]
    listed = parse_effective(effective(server, "PermitOpen 10.0.0.1:80"))
    assert setting(judge(listed, ForwardNeeds((), egress=True)), "PermitOpen").state is NOTE


def test_unused_connection_timeout_and_max_sessions(server):
    values = parse_effective(effective(server, "UnusedConnectionTimeout 5m\nMaxSessions 0"))
    unused = setting(judge(values, LOOPBACK), "UnusedConnectionTimeout")
    assert unused.state is CHANGE and "300 s" in unused.why and unused.lines == ["UnusedConnectionTimeout none"]
    sessions = setting(judge(values, LOOPBACK), "MaxSessions")
    assert sessions.state is NOTE and "forwards are not sessions" in sessions.why
    del values["unusedconnectiontimeout"]  # an sshd before 9.2 prints no such line: no line judged
    assert "UnusedConnectionTimeout" not in [s.keyword for s in judge(values, LOOPBACK)]


def test_the_needs_come_from_the_units_forwards():
    config = config_of("server: {host: 127.0.0.1}\nunits:\n  master:\n    forwards:\n"
                       "      - {name: ssh, remote_port: 10022, remote_bind: 127.0.0.1, local: 127.0.0.1:22}\n"
                       "      - {name: http, remote_port: 0, remote_bind: 0.0.0.0, local: 127.0.0.1:80}\n"
                       "      - {name: app, remote_port: 10443, local: 127.0.0.1:443}\n")
    needs = needs_of(config.units.values(), egress=True)
    assert needs.listens == (Listen("127.0.0.1", 10022, "unit master forward ssh"),
                             Listen("0.0.0.0", 0, "unit master forward http"),
                             Listen("", 10443, "unit master forward app"))
    assert needs.beyond_loopback == [needs.listens[1]] and needs.egress
    assert [Listen(host, 1).beyond_loopback for host in ("::1", "127.0.0.2", "localhost", "10.0.0.1", "::")] \
        == [False, False, False, True, True]


def test_per_source_penalties_is_a_note():
    # OpenSSH 9.8 prints this line; this machine's sshd is older, so the text is the 9.8 manual's default
    values = parse_effective("gatewayports no\npersourcepenalties crash:90 authfail:5 noauth:1 grace-exceeded:20\n")
    found = setting(judge(values, LOOPBACK), "PerSourcePenalties")
    assert found.state is NOTE and "NAT" in found.why and found.lines == []
    assert setting(judge({"persourcepenalties": "no"}, LOOPBACK), "PerSourcePenalties").state is OK


def test_a_clean_default_config_needs_only_the_stale_port_wait(server):
    settings = judge(parse_effective(effective(server, "ClientAliveInterval 0")), LOOPBACK)
    assert [s.keyword for s in settings if s.state is CHANGE] == ["ClientAliveInterval"]


# ---------------------------------------------------------------------------------------------------- file reading

def read_locally(main: Path, **context) -> object:
    """The FileReader fed from this machine's files, the way the tunnel side feeds it from the server's."""
    reader = FileReader(str(main))
    while patterns := reader.wanted():
        for pattern in patterns:
            paths = [pattern] if pattern == str(main) else sorted(glob.glob(pattern))
            reader.add(pattern, [(p, Path(p).read_text() if os.access(p, os.R_OK) else None)
                                 for p in paths if os.path.isfile(p)])
    return reader.reading(**context)


def test_reading_the_files_gives_what_sshd_T_gives(server, tmp_path):
    drop = tmp_path / "conf.d"
    drop.mkdir()
    (drop / "10-first.conf").write_text("clientaliveinterval=2m\n  PermitListen 10022 [::1]:22\n")
    (drop / "20-second.conf").write_text("ClientAliveInterval 5\nAllowTcpForwarding all\n")
    (drop / "30-skipped.txt").write_text("GatewayPorts yes\n")  # not *.conf
    extra = (f'Include "{drop}/*.conf"\n'
             "GATEWAYPORTS = clientspecified # trailing comment\nMaxSessions 7\nUnusedConnectionTimeout 1h\n")
    text = effective(server, extra, match="Match User nobody\n  GatewayPorts no\n  MaxSessions 1",
                     spec="user=someone,host=h,addr=10.0.0.1,laddr=127.0.0.1,lport=22")
    from_sshd = {k: v for k, v in parse_effective(text).items() if k in DEFAULTS}
    reading = read_locally(server.config_path, server_version="SSH-2.0-OpenSSH_9.2p1")
    assert reading.values == from_sshd
    assert reading.how == f"read from {server.config_path} and 2 included files; Match blocks not evaluated"
    assert any("'Match User nobody'" in note and "GatewayPorts no" in note for note in reading.notes)
    assert reading.defaults >= {"permitopen", "disableforwarding"}


def test_match_all_applies_and_unreadable_includes_are_named(server, tmp_path):
    secret = tmp_path / "secret.conf"
    secret.write_text("GatewayPorts yes\n")
    reader = FileReader(str(server.config_path))
    server.extra, server.match = f"Include {secret}", "Match all\n  ClientAliveInterval 9"
    server.write_config()
    reader.add(str(server.config_path), [(str(server.config_path), server.config_path.read_text())])
    reader.add(str(secret), [(str(secret), None)])  # the login user cannot read it
    reading = reader.reading()
    assert reading.values["clientaliveinterval"] == "9"  # Match all: every connection, over the global 0
    assert f"cannot read {secret}" in reading.notes[0]
    assert reading.values["gatewayports"] == "no"
    effective_all = parse_effective(effective(server, f"Include {secret}", match="Match all\n  ClientAliveInterval 9"))
    assert effective_all["clientaliveinterval"] == "9"  # sshd agrees about Match all


def test_split_line_follows_openssh():
    assert split_line("  GatewayPorts=yes") == ["GatewayPorts", "yes"]
    assert split_line('Include "/a b/*.conf" c # x') == ["Include", "/a b/*.conf", "c"]
    assert split_line("# GatewayPorts yes") == [] and split_line("") == []


def test_what_the_server_sends_is_bounded_and_cleaned():
    assert len(parse_effective("gatewayports no\n" + "x y\n" * 100000)) <= 4000
    assert shown("no\x1b[2J" + "a" * 100) == "no?[2J" + "a" * 54 + "…"


# ---------------------------------------------------------------------------------------------------- where

def test_the_listener_command_line_gives_config_and_options():
    proctitle = b"sshd: /usr/sbin/sshd -D -e -f /tmp/x/sshd_config -o GatewayPorts=yes [listener] 0 of 10-100 startups"
    argv = listener_args(proctitle)
    assert argv[0] == "/usr/sbin/sshd"
    assert options_of(argv) == ("/tmp/x/sshd_config", ["GatewayPorts=yes"], False)
    assert options_of(listener_args(b"/usr/sbin/sshd\x01-Df\x01/etc/a\x01-oX=1\x01")) == ("/etc/a", ["X=1"], False)
    assert options_of(["/usr/sbin/sshd", "-i", "-f/etc/b"]) == ("/etc/b", [], True)
    assert options_of(listener_args(b"sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups")) == (None, [], False)


# ---------------------------------------------------------------------------------------------------- records

def test_the_check_record_round_trips_and_renders_in_80_columns(server):
    settings = judge(parse_effective(effective(server, "PermitListen localhost:10022")), WIDE)
    check = SshdCheck(endpoint="default", source="sshd -T", how="effective settings from sshd -T",
                      config_file="/etc/ssh/sshd_config", listener_pid=812, privilege="sudo",
                      server_version="OpenSSH_9.2p1", settings=settings, notes=["a note " * 20])
    again = SshdCheck.from_json(json.loads(json.dumps(check.to_json())))
    assert again == check and again.settings[0].state is CHANGE
    text = render(check)
    assert text.splitlines()[0] == "sshd of default: 3 settings need a change"
    assert "✖ GatewayPorts             no" in text and "needs-change" in text
    assert all(len(line) <= 80 for line in text.splitlines() if not line.startswith("    write: "))
    assert "    write: GatewayPorts clientspecified" in text


def test_the_fix_script_takes_only_plain_lines_of_settings_that_need_a_change():
    change = SshdSetting("GatewayPorts", CHANGE, "no", "why", ["GatewayPorts clientspecified"])
    note = SshdSetting("MaxSessions", NOTE, "0", "why", ["MaxSessions 10"])
    assert fix_lines([change, note]) == ["GatewayPorts clientspecified"]
    with pytest.raises(ValueError):
        fix_lines([SshdSetting("X", CHANGE, "", "", ["GatewayPorts yes; rm -rf /"])])
    with pytest.raises(ValueError):
        sshd_fix_script([note], "/etc/ssh/sshd_config", None)
    script = sshd_fix_script([change], "/etc/ssh/sshd_config", 812)
    assert "pid=812" in script and "lines='GatewayPorts clientspecified'" in script

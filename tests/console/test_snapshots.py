"""Snapshots (pytest-textual-snapshot) of the console's screens, at 80x24 and 120x40, in every theme; the main
screen (with a long state) and help also at 60x20, 80x24 and 200x50, the log view and Clients at 60x20 and 200x50
(the smallest terminal we lay out for, and a large one).

Deterministic by construction: a fixed status (StaticBackend), a fixed log, a key derived from a fixed seed;
no clocks, hostnames, temp paths or random ports reach the screen. Update with `pytest --snapshot-update`
after a deliberate change, and look at the SVGs before committing them."""

from __future__ import annotations

import os
import time

import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from console.core.config import parse_config
from console.core.paths import StatePaths
from console.core.rules import GatewayPlan, make_rule
from console.core.states import DestinationState, EndpointReason, EndpointState, ForwardState, RuleState, UnitState
from console.core.status import (ClientForwardStatus, ClientStatus, EndpointCheck, EndpointStatus, ForwardStatus,
                                 GatewayPort, GatewayStatus, OpEntry, RuleDestination, RuleStatus, ScopeEntry, Status,
                                 UnitStatus)
from console.ui.app import SopConsole
from console.ui.backend import StaticBackend

SIZES = [(80, 24), (120, 40)]
THEMES = ["sop", "dark", "light"]

CONFIG = """\
server: {host: 203.0.113.7, port: 2222}
units:
  master: {username: sop001, ssh_port: 10022, http_port: 10080, app_port: 10090, app_target_port: 8443}
  clone: {username: sop002, ssh_port: 10023, http_port: 10081}
"""


def _fwd(name, remote, local, state="listening", error=None, open_=0, total=0, bytes_in=0, bytes_out=0):
    return ForwardStatus(name, remote, local, ForwardState(state), error, open_, total, bytes_in, bytes_out)


# Built from the typed records, sent as the daemon sends them (to_json): a fixture of the wrong shape fails here.
STATUS = Status([
    UnitStatus("master", UnitState.UP, "2026-11-22T10:00:00Z", "203.0.113.7:2222", "sop001", forwards=[
        _fwd("ssh", "*:10022", "127.0.0.1:22", open_=1, total=14, bytes_in=48_213, bytes_out=1_204_551),
        _fwd("http", "*:10080", "127.0.0.1:80", total=3, bytes_in=1_200, bytes_out=5_400),
        _fwd("app", "*:10090", "127.0.0.1:8443")]),
    UnitStatus("clone", UnitState.DEGRADED, "2026-11-22T09:58:12Z", "203.0.113.7:2222", "sop002",
               last_error="http refused: server refused to listen on *:10081", forwards=[
        _fwd("ssh", "*:10023", "127.0.0.1:22", total=2, bytes_in=900, bytes_out=4_100),
        _fwd("http", "*:10081", "127.0.0.1:80", state="refused",
             error="server refused to listen on *:10081: the port is held by another session")]),
]).to_json()

FINGERPRINT = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
# The longest state word, a retry time, a server key and a long error: what a small terminal must still show.
LONG_STATUS = Status([
    UnitStatus("master", UnitState.UP, "2026-11-22T10:00:00Z", "203.0.113.7:2222", "sop001", forwards=[
        _fwd("ssh", "*:10022", "127.0.0.1:22", open_=1, total=14, bytes_in=48_213, bytes_out=1_204_551),
        _fwd("http", "*:10080", "127.0.0.1:80", total=3, bytes_in=1_200, bytes_out=5_400),
        _fwd("app", "*:10090", "127.0.0.1:8443")]),
    UnitStatus("clone", UnitState.HOST_KEY_UNKNOWN, "2026-11-22T09:58:12Z", "203.0.113.7:2222", "sop002",
               next_retry="2026-11-22T10:05:00Z", server_key=FINGERPRINT,
               last_error=f"host key {FINGERPRINT} of 203.0.113.7:2222 is not trusted yet: verify it and run "
                          "`sop-console trust clone`"),
]).to_json()

LOG = "".join(
    f"2026-11-22T10:{m:02d}:00Z {unit} {event}\n" for m, (unit, event) in enumerate([
        ("engine", "up with 2 units: master, clone"),
        ("master", "forward ssh listening on the server at *:10022 -> 127.0.0.1:22"),
        ("master", "forward http listening on the server at *:10080 -> 127.0.0.1:80"),
        ("master", "Starting: 2 forwards up on 203.0.113.7:2222 as sop001"),
        ("clone", "forward http refused: server refused to listen on *:10081"),
        ("clone", "Starting: 1 of 2 forwards up on 203.0.113.7:2222 as sop002"),
        ("master", "server 203.0.113.7:2222 stopped answering keepalives (dead peer detected); retrying in 0.1s"),
        ("master", "Starting: 2 forwards up on 203.0.113.7:2222 as sop001"),
    ] * 6))


def _client(cid, quota, low, forwards=(), last_seen="2026-11-22T09:12:40Z"):
    ports = list(range(low, low + quota))
    return ClientStatus(cid, quota, quota > 0, ports, f"{low}-{low + quota - 1}" if quota else "", bool(forwards),
                        [ClientForwardStatus(p, "127.0.0.1", n, d, o, t, i, b, "198.51.100.23:50122")
                         for p, n, d, o, t, i, b in forwards],
                        "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU", "2026-11-01T08:00:00Z", last_seen).to_json()


CLIENTS = {"clients": [
    _client("acme", 20, 2200, [(2200, "files", "smb://samba.example.com:139", 1, 12, 48_213, 1_204_551),
                               (2201, "dav", "webdav+http://webdav.example.com:80/", 0, 3, 1_200, 5_400),
                               (2202, None, None, 0, 0, 0, 0)]),
    _client("globex", 5, 2220),
    _client("initech", 0, 0, last_seen=None),
]}



def _check(endpoint, address, username, reason=EndpointReason.OK, message="", hint="", **more) -> EndpointCheck:
    state = EndpointState.AVAILABLE if reason is EndpointReason.OK else EndpointState.UNAVAILABLE
    return EndpointCheck(endpoint, state, reason, message, hint, address, username, unit=more.pop("unit", None),
                         checked_at=more.pop("checked_at", "2026-11-22T09:58:12Z"), seconds=0.06, **more)


# Three endpoints: the config's `default` (available), `hall-b` (unavailable: our key refused, the server offers
# passwords) with a scope of its own, in the config and associated at run time, and `lab` added at run time and
# never checked. Ages are counted from NOW (the snapshot's fixed clock).
NOW = 1795341600.0  # 2026-11-22T10:00:00Z
ENDPOINTS = {"endpoints": [e.to_json() for e in (
    EndpointStatus("ep-5f1c0e2a", "default", "config", EndpointState.AVAILABLE, "203.0.113.7", 2222, "root",
                   "strict", None, ["master"], [], None, [], None, None,
                   _check("default", "203.0.113.7:2222", "sop001", message="sop001 logs in to 203.0.113.7:2222 with "
                          "the key of unit master", unit="master", checked_at="2026-11-22T09:56:40Z")),
    EndpointStatus("ep-0b9d4c71", "hall-b", "config", EndpointState.UNAVAILABLE, "198.51.100.20", 22, "sop-b",
                   "strict", "the rack in hall B", ["clone"], [], "10.1.0.0/24",
                   [ScopeEntry("subnet", "10.1.0.0/24", "own", ["10.1.0.0/24"]),
                    ScopeEntry("subnet", "10.2.0.0/24", "config", ["10.2.0.0/24"]),
                    ScopeEntry("subnet", "10.4.0.0/24", "runtime", ["10.4.0.0/24"]),
                    ScopeEntry("vpc", "prod", "config", ["10.0.0.0/16"])],
                   None, "2026-11-21T16:20:05Z",
                   _check("hall-b", "198.51.100.20:22", "sop-b", EndpointReason.PUBLICKEY,
                          "198.51.100.20:22 did not accept the ed25519 key of unit clone for sop-b; the server "
                          "offers publickey, password", "set up by password (the server offers password), by key "
                          "or by script", unit="clone", methods=["publickey", "password"],
                          fingerprint=FINGERPRINT)),
    EndpointStatus("ep-9e41b7a0", "lab", "runtime", EndpointState.UNCHECKED, "lab-gw.example.com", 2022, "sop",
                   "strict", "bench rig", [], [], None, [], "2026-11-20T14:03:11Z", "2026-11-20T14:03:11Z"),
)]}


def _op(i: int, action: str, target: str | None, who: str = "operator", via: str = "console",
        failed: str | None = None, ssh_from: str | None = None, **details) -> dict:
    return OpEntry(i, f"2026-11-22T{8 + i // 60:02d}:{i % 60:02d}:{(i * 7) % 60:02d}Z", who, ssh_from, via, action,
                   target, "failed" if failed else "ok", failed, round(1.5 + i * 0.7, 1), details).to_json()


# The operation log's newest page: every door, a failure, an SSH address; times fixed (shown in UTC: TZ is set).
OPS = {"entries": [_op(i, *rest[:2], **rest[2]) for i, *rest in reversed([
    (31, "daemon start", None, {"who": "sop", "via": "daemon", "pid": 812}),
    (32, "clients.add", "acme", {"id": "acme"}),
    (33, "clients.change", "acme", {"via": "cli", "ssh_from": "198.51.100.23", "id": "acme", "quota": 20}),
    (34, "trust", "master", {"fingerprint": FINGERPRINT, "outcome": "trusted"}),
    (35, "reload", None, {"who": "SIGHUP", "via": "config-reload", "changes": "nothing changed"}),
    (36, "stop", "clone", {"unit": "clone"}),
    (37, "clients.remove", "globex", {"via": "cli", "failed": "no client 'globex'", "id": "globex"}),
    (38, "start", "clone", {"unit": "clone"}),
    (39, "key install", "master", {"via": "cli", "detail": "installed SHA256:abc"}),
    (40, "clients.change", "initech", {"id": "initech", "quota": 0}),
])], "next_before": 31}


@pytest.fixture
def utc(monkeypatch):
    """Times on screen in UTC whatever the machine's zone (the screen shows local time)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _rule(direction, text, via="local", state="listening", reason=None, source="config", origin=None, members=(),
          counts=(0, 0, 0, 0), flows=0, **extra):
    """A rule's record as the daemon sends it; `members`: its listener's round robin, (rule, state, reason) each
    (the rule itself, up, when none is given)."""
    rule = make_rule(direction, text, via, source=source, origin=origin, listen=extra.pop("listen", "127.0.0.1"))
    listener = extra.pop("listener", rule.listener)
    members = members or ((rule, "up", None),)
    destinations = [RuleDestination(m.destination, m.id, DestinationState(s), why,
                                    "2026-11-22T10:03:12Z" if why else None) for m, s, why in members]
    return RuleStatus(rule.id, direction, rule.protocol, rule.text, listener, rule.destination, via, RuleState(state),
                      reason, source, origin, destinations, *counts, udp_flows=flows, **extra).to_json()


_BACKEND_A = make_rule("ingress", "tcp:443:10.10.100.152:8443", origin="proxy.ingress[0]")
_BACKEND_B = make_rule("ingress", "tcp:443:10.10.100.153:8443", origin="proxy.ingress[1]")
_ROUND_ROBIN = ((_BACKEND_A, "up", None), (_BACKEND_B, "down", "connection refused (2026-11-22T10:03:12Z)"))
GATEWAY = GatewayPlan("lab", "192.168.0.0/24", 30000, (22, 80, 443), (1, 3), listen="0.0.0.0")
# Fixed records of every kind: a round robin with a destination down, a rule via a unit waiting for its unit
# to connect, runtime rules (UDP with flows; one whose port another program holds), a gateway plan of 9 ports, and a
# unit's forward shown as the ingress rule it is.
RULES = {"rules": [
    _rule("ingress", "tcp:443:10.10.100.152:8443", origin="proxy.ingress[0]", members=_ROUND_ROBIN,
          counts=(2, 41, 1_204_551, 48_213_004)),
    _rule("ingress", "tcp:443:10.10.100.153:8443", origin="proxy.ingress[1]", members=_ROUND_ROBIN,
          counts=(0, 17, 88_000, 2_100_000)),
    _rule("egress", "tcp:8080:10.0.5.7:80", "master", "waiting", "unit master is not connected (state retrying)",
          origin="proxy.egress[0]"),
    *(_rule("ingress", r.text, state="listening" if r.port != 30007 else "refused",
            reason=None if r.port != 30007 else "cannot listen on 0.0.0.0:30007: address in use (tried again "
                                                "every 5 s)", source="gateway", origin="lab", listen=GATEWAY.listen,
            counts=(0, 3, 900, 4_100) if r.port == 30004 else (0, 0, 0, 0)) for r in GATEWAY.rules()),
    _rule("ingress", "udp:5353:10.0.0.53:53", source="runtime", counts=(3, 12, 5_120, 20_480), flows=3,
          created="2026-11-22T09:40:00Z", who="alice"),
    _rule("egress", "tcp:9000:127.0.0.1:9", state="refused", source="runtime",
          reason="cannot listen on 127.0.0.1:9000: address in use (tried again every 5 s)",
          created="2026-11-22T09:41:00Z", who="alice"),
    _rule("ingress", "tcp:10022:127.0.0.1:22", "master", source="forward", origin="ssh", listener="*:10022",
          counts=(1, 14, 48_213, 1_204_551)),
]}
GATEWAY_SHOW = GatewayStatus(GATEWAY.name, GATEWAY.subnet, GATEWAY.base, list(GATEWAY.services), GATEWAY.hosts_text,
                             GATEWAY.via, GATEWAY.listen, GATEWAY.formula,
                             [GatewayPort(p, h, s, RuleState.LISTENING) for p, h, s in GATEWAY.entries()],
                             ["30007 -> 192.168.0.2:80: cannot listen on 0.0.0.0:30007: address in use (tried again "
                              "every 5 s) (another program holds it)"]).to_json()


def _app(tmp_path, theme: str, status: dict = STATUS) -> SopConsole:
    state = StatePaths(tmp_path / "state").prepare()
    seed = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    pem = seed.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())
    key_path = state.unit_key("master")
    key_path.write_bytes(asyncssh.import_private_key(pem).export_private_key("openssh"))
    os.chmod(key_path, 0o600)
    state.tunnel_log.write_text(LOG)
    app = SopConsole(state, config=parse_config(CONFIG, "snapshot.yaml"),
                     backend=StaticBackend(status, {"clients.list": CLIENTS, "ops.list": OPS, "proxy.list": RULES,
                                                    "gateway.show": GATEWAY_SHOW, "endpoints.list": ENDPOINTS}),
                     theme_name=theme, poll_log=False, watch_terminal=False)
    app.session.clock = lambda: NOW  # the ages 8 Endpoints shows
    return app


def _rows(selector: str):
    return lambda screen: bool(screen.query(selector)) and screen.query_one(selector).row_count > 0


def _log_at_its_tail(screen) -> bool:
    view = screen.query_one("LogView")
    return view.row_count > 0 and view.max_scroll_y > 0 and view.scroll_y == view.max_scroll_y


def _log_read_to_its_tail(screen) -> bool:
    """As _log_at_its_tail, for a terminal tall enough to show the whole log (nothing to scroll)."""
    view = screen.query_one("LogView")
    return view.index.complete and view.row_count > 0 and view.scroll_y == view.max_scroll_y


def _shown(key: str | None, screen: str, ready=lambda screen: True, before=None):
    """Before the snapshot: press `key` (once `before(main screen)`, if given), then wait until `screen` is up and
    `ready(screen)`. A screen is imported and pushed by a worker (and the status comes from one): a busy machine
    must not snapshot it early."""
    async def run_before(pilot) -> None:
        deadline = time.monotonic() + 20
        while before is not None and not before(pilot.app.screen):
            assert time.monotonic() < deadline, f"the main screen never showed ready (now {pilot.app.screen!r})"
            await pilot.pause(0.02)
        if key:
            await pilot.press(key)
        while not (type(pilot.app.screen).__name__ == screen and ready(pilot.app.screen)):
            assert time.monotonic() < deadline, f"{screen} never showed ready (now {pilot.app.screen!r})"
            await pilot.pause(0.02)
        for box in pilot.app.screen.query("Input, TextArea"):  # the cursor shown, not blinking: on or off by when
            box.cursor_blink = False                           # the snapshot comes (half a second each)
        await pilot.pause()
    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("theme", THEMES)
def test_main_screen(snap_compare, tmp_path, theme, size):
    assert snap_compare(_app(tmp_path, theme), terminal_size=size,
                        run_before=_shown(None, "MainScreen", _rows("#ports")))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("theme", THEMES)
def test_install_key_dialog(snap_compare, tmp_path, theme, size):
    assert snap_compare(_app(tmp_path, theme), terminal_size=size,
                        run_before=_shown("1", "InstallKeyScreen"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("theme", THEMES)
def test_log_view(snap_compare, tmp_path, theme, size):
    assert snap_compare(_app(tmp_path, theme), terminal_size=size,
                        run_before=_shown("4", "LogScreen", _log_at_its_tail))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("theme", THEMES)
def test_configure_form(snap_compare, tmp_path, theme, size):
    assert snap_compare(_app(tmp_path, theme), terminal_size=size,
                        run_before=_shown("5", "ConfigureScreen"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("theme", THEMES)
def test_clients_screen(snap_compare, tmp_path, theme, size):
    assert snap_compare(_app(tmp_path, theme), terminal_size=size,
                        run_before=_shown("7", "ClientsScreen", _rows("#clients")))


# ---------------------------------------------------------------------- the smallest and a large terminal

EDGE_SIZES = [(60, 20), (80, 24), (200, 50)]


@pytest.mark.parametrize("size", EDGE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_main_screen_long_state(snap_compare, tmp_path, size):
    """The clone `? host-key-unknown` and selected: both units, the next retry, the detail whole, the ports'
    local column; under 90 columns the menu is one line."""
    assert snap_compare(_app(tmp_path, "sop", LONG_STATUS), terminal_size=size,
                        run_before=_shown("u", "MainScreen", _rows("#ports"), before=_rows("#ports")))


@pytest.mark.parametrize("size", EDGE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help_page(snap_compare, tmp_path, size):
    assert snap_compare(_app(tmp_path, "sop"), terminal_size=size,
                        run_before=_shown("question_mark", "HelpScreen", before=_rows("#ports")))



@pytest.mark.parametrize("size", [(60, 20), (200, 50)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_log_view_edges(snap_compare, tmp_path, size):
    assert snap_compare(_app(tmp_path, "sop"), terminal_size=size,
                        run_before=_shown("4", "LogScreen", _log_read_to_its_tail))


@pytest.mark.parametrize("size", [(60, 20), (200, 50)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_clients_screen_edges(snap_compare, tmp_path, size):
    assert snap_compare(_app(tmp_path, "sop"), terminal_size=size,
                        run_before=_shown("7", "ClientsScreen", _rows("#clients")))


# ---------------------------------------------------------------------- 8 Endpoints (fixed records, a fixed clock)

def _endpoint_highlighted(name: str):
    """8, then down until the details are `name`'s."""
    opened = _shown("8", "EndpointsScreen", _rows("#endpoints"), before=_rows("#ports"))

    async def run_before(pilot) -> None:
        await opened(pilot)
        deadline = time.monotonic() + 20
        while not str(pilot.app.screen.query_one("#endpoint-detail").render()).startswith(f"{name} "):
            assert time.monotonic() < deadline, f"{name} never highlighted"
            await pilot.press("down")
            await pilot.pause(0.02)
        await pilot.pause()
    return run_before


def test_operations_screen(snap_compare, tmp_path, utc):
    assert snap_compare(_app(tmp_path, "sop"), terminal_size=(80, 24),
                        run_before=_shown("o", "OperationsScreen", _rows("#ops"), before=_rows("#ports")))


# ---------------------------------------------------------------------- 9 Rules

def _keys(*keys: str, screen: str, ready=lambda screen: True):
    """Before the snapshot: once the main screen shows its ports, press `keys` one after the other (each once the
    screen before it has settled), then wait until `screen` is up and `ready(screen)`."""
    async def run_before(pilot) -> None:
        deadline = time.monotonic() + 20
        await _shown(None, "MainScreen", _rows("#ports"))(pilot)
        for key in keys:
            await pilot.press(key)
            await pilot.pause(0.05)
        while not (type(pilot.app.screen).__name__ == screen and ready(pilot.app.screen)):
            assert time.monotonic() < deadline, f"{screen} never showed ready (now {pilot.app.screen!r})"
            await pilot.pause(0.02)
        for box in pilot.app.screen.query("Input"):
            box.cursor_blink = False
        await pilot.pause()
    return run_before


@pytest.mark.parametrize("size", EDGE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_endpoints_screen(snap_compare, tmp_path, size):
    """The list: each state with its glyph and word, the address, when last checked; columns dropped by rank."""
    assert snap_compare(_app(tmp_path, "sop"), terminal_size=size,
                        run_before=_shown("8", "EndpointsScreen", _rows("#endpoints"), before=_rows("#ports")))


def test_endpoints_screen_unavailable_details(snap_compare, tmp_path):
    """hall-b highlighted: why it is unavailable, the hint, what to press here, its scope and comment."""
    assert snap_compare(_app(tmp_path, "sop"), terminal_size=(80, 24), run_before=_endpoint_highlighted("hall-b"))


@pytest.mark.parametrize("size", EDGE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_rules_screen(snap_compare, tmp_path, size):
    """Every kind of rule: a round robin with a destination down, a rule via a unit waiting for its unit,
    a gateway plan folded (one port refused), runtime rules (UDP with flows; one refused), a unit's forward."""
    assert snap_compare(_app(tmp_path, "sop"), terminal_size=size,
                        run_before=_shown("9", "RulesScreen", _rows("#rules"), before=_rows("#ports")))


def test_rules_screen_plan_open(snap_compare, tmp_path):
    """The gateway plan highlighted and opened: its formula, its ports' states, its clash; its ports under it."""
    assert snap_compare(_app(tmp_path, "sop"), terminal_size=(80, 24),
                        run_before=_keys("9", "j", "j", "j", "enter", screen="RulesScreen",
                                         ready=lambda s: s.query_one("#rules").row_count == 16))


def test_add_rule_refused_in_place(snap_compare, tmp_path):
    """The add dialog with a port past 65535 typed: the parser's line under the box, in place."""
    assert snap_compare(_app(tmp_path, "sop"), terminal_size=(80, 24),
                        run_before=_keys("9", "a", *"udp:70000:10.0.0.53:53", screen="AddRuleScreen",
                                         ready=lambda s: "70000" in str(s.query_one("#rule-check").render())))

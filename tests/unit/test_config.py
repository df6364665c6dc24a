"""Configuration: canonical form, the seed's shorthand, and every documented error with its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from console.core.config import ForwardConfig, load_config, parse_config
from console.core.errors import ConfigError

CANONICAL = """\
server:
  host: 203.0.113.7
  port: 2222
  host_key_policy: strict
  host_key: null
tunnel:
  keepalive_interval: 5
  keepalive_count_max: 3
  retry_min: 0.1
  retry_max: 30
units:
  master:
    username: sop001
    forwards:
      - name: ssh
        remote_port: 10022
        remote_bind: ""
        local: 127.0.0.1:22
      - name: http
        remote_port: 10080
        local: 127.0.0.1:80
  clone:
    username: sop002
    forwards:
      - name: ssh
        remote_port: 10023
        local: 127.0.0.1:22
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "console.yaml")
    return info.value.problems


def test_canonical_form():
    cfg = parse_config(CANONICAL, "console.yaml")
    assert list(cfg.units) == ["master", "clone"]
    master = cfg.units["master"]
    assert master.username == "sop001"
    assert master.server.address == "203.0.113.7:2222" and master.server.host_key_policy == "strict"
    assert master.forwards[0] == ForwardConfig("ssh", 10022, "127.0.0.1", 22, "")
    assert cfg.tunnel.keepalive_interval == 5 and cfg.tunnel.retry_max == 30


def test_example_config_is_valid_and_documents_every_option():
    example = Path(__file__).parents[2] / "config" / "console.example.yaml"
    cfg = load_config(example)
    assert set(cfg.units) == {"master", "clone"}
    text = example.read_text()
    for option in ("host:", "port:", "host_key_policy:", "host_key:", "keepalive_interval:", "keepalive_count_max:",
                   "retry_min:", "retry_max:", "connect_timeout:", "endpoint_check_interval:", "theme:", "listen:",
                   "ports:", "default_quota:", "bind:", "username:", "remote_port:", "remote_bind:",
                   "local:", "target:", "ssh_port:", "http_port:", "app_port:", "app_target_port:", "max_bytes:",
                   "backups:", "endpoints:", "vpcs:", "comment:", "subnet:", "scope:", "subnets:", "endpoint:",
                   "proxy:", "udp_idle_timeout:", "udp_max_flows:", "ingress:", "egress:", "rule:", "via:",
                   "gateways:", "base:", "services:", "hosts:", "syslog:", "syslog_address:",
                   "keep_days:", "max_rows:"):
        assert option in text, option
    assert len(cfg.endpoints) >= 2 and cfg.vpcs and any(e.scope.vpcs and e.scope.subnets for e in cfg.endpoints.values())
    assert any(u.endpoint not in (None, "default") for u in cfg.units.values())
    rules = cfg.proxy.rules
    assert {(r.direction, r.protocol, r.via != "local") for r in rules} >= {
        ("ingress", "tcp", False), ("ingress", "udp", False), ("ingress", "tcp", True), ("egress", "tcp", False),
        ("egress", "tcp", True)} and len(cfg.proxy.gateways[0].rules()) == 762


def test_endpoint_check_interval_is_off_or_at_least_a_second():
    assert parse_config("", "c.yaml").tunnel.endpoint_check_interval == 300
    assert parse_config("tunnel: {endpoint_check_interval: 0}\n", "c.yaml").tunnel.endpoint_check_interval == 0
    assert parse_config("tunnel: {endpoint_check_interval: 2}\n", "c.yaml").tunnel.endpoint_check_interval == 2
    assert problems("tunnel: {endpoint_check_interval: 0.2}\n") == [
        "console.yaml:1: tunnel.endpoint_check_interval: must be 0 (off) or at least 1 second, got 0.2"]
    # the checks' pace is no part of a unit's link: changing it reconnects nothing
    fast, slow = (parse_config(f"tunnel: {{endpoint_check_interval: {n}}}\n", "c.yaml").tunnel for n in (5, 600))
    assert fast.link == slow.link and fast != slow


def test_hub_section():
    cfg = parse_config("hub: {listen: '127.0.0.1:2222', ports: 3000-3099, default_quota: 5}\n", "c.yaml")
    assert (cfg.hub.listen_port, cfg.hub.port_low, cfg.hub.port_high, cfg.hub.default_quota, cfg.hub.bind) == \
        (2222, 3000, 3099, 5, "127.0.0.1")
    assert parse_config("", "c.yaml").hub is None
    found = problems("hub:\n  listen: nowhere\n  ports: 5000-4000\n  default_quota: 500\n")
    assert "console.yaml:2: hub.listen: must be address:port, such as 0.0.0.0:2222, got 'nowhere'" in found
    assert any(p.startswith("console.yaml:3: hub.ports: must be a range LOW-HIGH") for p in found)


def test_empty_and_unitless_configs_are_valid():
    assert parse_config("", "c.yaml").units == {}
    assert parse_config("server: {host: example.net}\n", "c.yaml").units == {}


def test_defaults_port_22_user_root_strict():
    cfg = parse_config("server: {host: h}\nunits:\n  master:\n    ssh_port: 10022\n", "c.yaml")
    unit = cfg.units["master"]
    assert unit.username == "root" and unit.server.port == 22 and unit.server.host_key_policy == "strict"


def test_seed_shorthand_expands_to_canonical_forwards():
    cfg = parse_config(textwrap.dedent("""\
        server: {host: 234.56.78.90, port: 2222}
        units:
          master:
            username: sop001
            target: 10.0.0.5
            ssh_port: 10022
            http_port: 10080
            app_port: 10090
            app_target_port: 8443
          clone:
            username: sop002
            ssh_port: 10023
        """), "c.yaml")
    assert cfg.units["master"].forwards == (
        ForwardConfig("ssh", 10022, "10.0.0.5", 22), ForwardConfig("http", 10080, "10.0.0.5", 80),
        ForwardConfig("app", 10090, "10.0.0.5", 8443))
    assert cfg.units["clone"].forwards == (ForwardConfig("ssh", 10023, "127.0.0.1", 22),)


def test_per_unit_server_override():
    cfg = parse_config(textwrap.dedent("""\
        server: {host: a.example, port: 2222, host_key_policy: accept-new}
        units:
          master: {ssh_port: 10022}
          clone:
            server: {host: b.example}
            ssh_port: 10022
        """), "c.yaml")
    assert cfg.units["master"].server.address == "a.example:2222"
    clone = cfg.units["clone"].server
    assert clone.host == "b.example" and clone.port == 2222 and clone.host_key_policy == "accept-new"


def test_override_alone_needs_no_global_server():
    cfg = parse_config("units:\n  clone:\n    server: {host: b.example}\n    ssh_port: 1\n", "c.yaml")
    assert cfg.units["clone"].server.host == "b.example"


def test_range_error_has_file_line_and_path():
    text = CANONICAL.replace("remote_port: 10080", "remote_port: 70000")
    assert problems(text) == [
        "console.yaml:20: units.master.forwards[1].remote_port: must be 1-65535 or 0, got 70000"]


def test_yaml_syntax_error_has_its_line():
    (line,) = problems("server:\n  host: [oops\nunits: {}\n")
    assert line.startswith("console.yaml:3: YAML syntax:") or line.startswith("console.yaml:2: YAML syntax:")


def test_unknown_keys_are_typos_with_a_hint():
    found = problems("""\
        server:
          hots: example.net
        tunnel:
          keepalive_intervall: 5
        """)
    assert "console.yaml:2: server.hots: unknown key (did you mean 'host'?)" in found
    assert "console.yaml:4: tunnel.keepalive_intervall: unknown key (did you mean 'keepalive_interval'?)" in found


def test_wrong_types():
    found = problems("""\
        server: {host: h, port: "22"}
        tunnel: {retry_max: soon}
        units:
          master:
            username: [a]
            forwards: {name: ssh}
        """)
    assert any("server.port: must be a whole number 1-65535, got a string '22'" in p for p in found)
    assert any("tunnel.retry_max: must be a number of seconds" in p for p in found)
    assert any("units.master.username: must be a string" in p for p in found)
    assert any("units.master.forwards: must be a list" in p for p in found)


def test_booleans_are_not_numbers():
    assert any("keepalive_count_max: must be a whole number" in p
               for p in problems("tunnel: {keepalive_count_max: true}\n"))


def test_ranges_and_choices():
    found = problems("""\
        server: {host: h, port: 0, host_key_policy: yolo}
        tunnel: {retry_min: 60, retry_max: 30, keepalive_count_max: 0}
        """)
    assert "console.yaml:1: server.port: must be 1-65535, got 0" in found
    assert "console.yaml:1: server.host_key_policy: must be one of strict, accept-new, got 'yolo'" in found
    assert any("tunnel.keepalive_count_max: must be 1-100, got 0" in p for p in found)
    assert any("tunnel.retry_min: must not exceed retry_max (30), got 60" in p for p in found)


def test_local_must_be_host_port():
    found = problems("""\
        server: {host: h}
        units:
          master:
            forwards:
              - {name: ssh, remote_port: 1, local: "22"}
              - {name: web, remote_port: 2, local: "127.0.0.1:99999"}
              - {name: v6, remote_port: 3, local: "[::1]:22"}
        """)
    assert "console.yaml:5: units.master.forwards[0].local: must be host:port (port 1-65535), such as " \
           "127.0.0.1:22, got '22'" in found
    assert any(p.startswith("console.yaml:6: units.master.forwards[1].local:") for p in found)
    assert not any("forwards[2]" in p for p in found)


def test_duplicate_forward_names_in_a_unit():
    found = problems("""\
        server: {host: h}
        units:
          master:
            ssh_port: 10022
            forwards:
              - {name: ssh, remote_port: 10023, local: "127.0.0.1:22"}
              - {name: ssh, remote_port: 10024, local: "127.0.0.1:22"}
        """)
    assert "console.yaml:7: units.master.forwards[1]: duplicate forward name 'ssh' (also at " \
           "units.master.forwards[0])" in found
    assert any(p.startswith("console.yaml:4: units.master.ssh_port: duplicate forward name 'ssh'") for p in found)


def test_two_forwards_asking_one_server_for_the_same_port():
    found = problems("""\
        server: {host: h, port: 2222}
        units:
          master:
            forwards:
              - {name: ssh, remote_port: 10022, local: "127.0.0.1:22"}
          clone:
            ssh_port: 10022
        """)
    assert found == ["console.yaml:7: units.clone.ssh_port: 10022 is already asked of h:2222 by "
                     "units.master.forwards[0]"]


def test_same_port_on_different_servers_is_fine():
    parse_config(textwrap.dedent("""\
        units:
          master: {server: {host: a}, ssh_port: 10022}
          clone: {server: {host: b}, ssh_port: 10022}
        """), "c.yaml")


def test_port_zero_may_repeat():
    parse_config("server: {host: h}\nunits:\n  master: {ssh_port: 0, http_port: 0}\n  clone: {ssh_port: 0}\n", "c")


def test_unit_names_other_than_master_and_clone():
    assert problems("server: {host: h}\nunits:\n  primary: {ssh_port: 1}\n") == [
        "console.yaml:3: units.primary: unknown unit (units are master and clone)"]


def test_units_need_a_server():
    assert problems("units:\n  master: {ssh_port: 1}\n") == [
        "console.yaml:2: units.master: no server to connect to: set server.host (or units.master.server.host)"]


def test_forward_required_fields_and_names():
    found = problems("""\
        server: {host: h}
        units:
          master:
            forwards:
              - {local: "127.0.0.1:22"}
              - {name: "bad name", remote_port: 1, local: "127.0.0.1:22"}
        """)
    assert "console.yaml:5: units.master.forwards[0].name: required" in found
    assert "console.yaml:5: units.master.forwards[0].remote_port: required (0 lets the server choose)" in found
    assert any("forwards[1].name: must be 1-32 letters" in p for p in found)


def test_app_port_needs_app_target_port():
    found = problems("server: {host: h}\nunits:\n  master:\n    app_port: 10090\n")
    assert found == ["console.yaml:4: units.master.app_port: needs app_target_port: the port the app "
                     "listens on at 127.0.0.1"]


def test_host_key_pin_format():
    found = problems("server: {host: h, host_key: 'SHA256:short'}\n")
    assert any("server.host_key: a fingerprint pin must look like SHA256:" in p for p in found)
    found = problems("server: {host: h, host_key: 'not a key'}\n")
    assert any("server.host_key: must be an OpenSSH public key line" in p for p in found)


def test_duplicate_yaml_keys():
    assert "console.yaml:3: server.host: duplicate key" in problems("server:\n  host: a\n  host: b\n")


def test_all_problems_at_once_in_line_order():
    found = problems("""\
        server: {host: h, port: 99999}
        units:
          master:
            forwards:
              - {name: ssh, remote_port: -1, local: nowhere}
        """)
    assert [p.split(":")[1] for p in found] == sorted(p.split(":")[1] for p in found)
    assert len(found) == 3


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert "no configuration file" in info.value.problems[0]


def test_service_uri_in_the_seeds_form_and_local_from_it():
    cfg = parse_config(textwrap.dedent("""\
        server: {host: 203.0.113.7}
        units:
          master:
            forwards:
              - {name: files, remote_port: 0, service: 'smb://samba.example.com:139'}
              - {name: dav, remote_port: 0, service: 'webdav+http://10.0.0.1:80/', local: '127.0.0.1:8080'}
              - {name: cmis, remote_port: 0, service: 'cmis+https://[fd00::5]:443/cmisatom'}
    """), "console.yaml")
    files, dav, cmis = cfg.units["master"].forwards
    assert (files.local, files.service) == ("samba.example.com:139", "smb://samba.example.com:139")
    assert (dav.local, dav.service) == ("127.0.0.1:8080", "webdav+http://10.0.0.1:80/")  # local wins for delivery
    assert (cmis.local_host, cmis.local_port) == ("fd00::5", 443)


def test_bad_service_uri_and_a_forward_with_neither_local_nor_service():
    found = problems("""\
        server: {host: 203.0.113.7}
        units:
          master:
            forwards:
              - {name: a, remote_port: 0, service: 'samba.example.com:139'}
              - {name: b, remote_port: 0, service: 'smb://samba.example.com:99999'}
              - {name: c, remote_port: 0, service: "smb://x:1/\\e[31m"}
              - {name: d, remote_port: 0}
    """)
    assert found[0].startswith("console.yaml:5: units.master.forwards[0].service: must be service[+scheme]://")
    assert "got 'samba.example.com:139'" in found[0]
    assert found[1].startswith("console.yaml:6: units.master.forwards[1].service:")
    assert found[2].startswith("console.yaml:7: units.master.forwards[2].service:")  # no escape reaches a screen
    assert found[3] == ("console.yaml:8: units.master.forwards[3].local: required: host:port to deliver to "
                        "(or a service URI to take it from)")
    assert len(found) == 4


# ---------------------------------------------------------------------------------------------- endpoints

ENDPOINTS = """\
vpcs:
  prod: [10.0.0.0/16, "fd00:1::/48"]
  lab: 10.9.0.0/16
endpoints:
  default: {host: 203.0.113.7, port: 2222}
  edge:
    host: edge.example.net
    username: sop
    host_key_policy: accept-new
    comment: the rack in hall B
    subnet: 10.1.0.0/24
    scope: {subnets: [10.2.0.0/24, "fd00:2::/64"], vpcs: [prod]}
units:
  master: {endpoint: edge, ssh_port: 10022}
  clone: {username: sop002, endpoint: edge, ssh_port: 10023}
"""


def test_endpoints_by_name_with_scope_and_vpcs():
    from console.core.config import EndpointConfig, EndpointScope, ServerConfig

    cfg = parse_config(ENDPOINTS, "c.yaml")
    assert ServerConfig is EndpointConfig
    assert list(cfg.endpoints) == ["default", "edge"] and cfg.server is cfg.endpoints["default"]
    edge = cfg.endpoints["edge"]
    assert (edge.name, edge.address, edge.username, edge.host_key_policy, edge.comment, edge.subnet) == \
        ("edge", "edge.example.net:22", "sop", "accept-new", "the rack in hall B", "10.1.0.0/24")
    assert edge.scope == EndpointScope(("10.2.0.0/24", "fd00:2::/64"), ("prod",))
    assert cfg.vpcs == {"prod": ("10.0.0.0/16", "fd00:1::/48"), "lab": ("10.9.0.0/16",)}
    master, clone = cfg.units["master"], cfg.units["clone"]
    assert (master.endpoint, master.server, master.username) == ("edge", edge, "sop")  # the endpoint's user...
    assert clone.username == "sop002"                                                  # ...unless the unit names one
    assert cfg.endpoints["default"].username == "root" and cfg.endpoints["default"].scope == EndpointScope()


def test_a_server_section_is_the_endpoint_default_and_old_configs_read_the_same():
    cfg = parse_config(CANONICAL, "console.yaml")
    assert cfg.endpoints == {"default": cfg.server} and cfg.server.name == "default"
    assert {u.endpoint for u in cfg.units.values()} == {"default"}
    assert cfg.units["master"].server is cfg.server
    same = parse_config(CANONICAL.replace("server:", "endpoints:\n default:").replace("\n  ", "\n   ", 4), "c.yaml")
    assert same.units == cfg.units and same.server == cfg.server


def test_a_units_own_server_block_still_works_and_is_no_named_endpoint():
    cfg = parse_config("server: {host: a, username: ops}\nunits:\n  clone:\n    server: {host: b}\n    ssh_port: 1\n",
                       "c.yaml")
    clone = cfg.units["clone"]
    assert (clone.endpoint, clone.server.host, clone.username) == (None, "b", "ops")
    assert list(cfg.endpoints) == ["default"]


def test_endpoint_mistakes_one_line_each():
    found = problems("""\
        vpcs:
          prod: [10.0.0.1/16]
          "bad vpc": [10.0.0.0/8]
          empty: []
        server: {host: a}
        endpoints:
          default: {host: b}
          edge:
            port: 2222
            subnet: 10.1.0.0/33
            comment: "two\\nlines"
            scope: {subnets: [10.2.0.0/24, 10.2.0.0/24], vpcs: [prd]}
          "-x": {host: c}
        units:
          master: {endpoint: egde, ssh_port: 1}
          clone: {endpoint: edge, server: {host: d}, ssh_port: 2}
        """)
    assert found == [
        "console.yaml:2: vpcs.prod[0]: '10.0.0.1/16' has host bits set: the network is 10.0.0.0/16",
        "console.yaml:3: vpcs.bad vpc: a VPC's name must be 1-32 letters, digits, '_', '.' or '-', starting with a "
        "letter or digit, got 'bad vpc'",
        "console.yaml:4: vpcs.empty: needs at least one network, such as 10.1.0.0/16",
        "console.yaml:7: endpoints.default: the top-level server: is the endpoint named default: keep one of the two",
        "console.yaml:8: endpoints.edge.host: required",
        "console.yaml:10: endpoints.edge.subnet: must be a network such as 10.1.0.0/24 or fd00:1::/64, got "
        "'10.1.0.0/33'",
        "console.yaml:11: endpoints.edge.comment: must be one line of printable characters",
        "console.yaml:12: endpoints.edge.scope.subnets[1]: '10.2.0.0/24' is listed twice",
        "console.yaml:12: endpoints.edge.scope.vpcs[0]: no VPC named 'prd' (did you mean 'prod'?)",
        "console.yaml:13: endpoints.-x: an endpoint's name must be 1-32 letters, digits, '_', '.' or '-', starting "
        "with a letter or digit, got '-x'",
        "console.yaml:15: units.master.endpoint: no endpoint named 'egde' (did you mean 'edge'?)",
        "console.yaml:16: units.clone.endpoint: a unit names an endpoint or has a server: block of its own, not both "
        "(endpoint: is the one to keep)",
    ]


def test_units_without_a_default_endpoint_are_told_which_there_are():
    assert problems("endpoints: {edge: {host: e}, core: {host: c}}\nunits:\n  master: {ssh_port: 1}\n") == [
        "console.yaml:3: units.master: no endpoint to connect to: set units.master.endpoint to one of core, edge "
        "(or add server:, the endpoint default)"]
    assert problems("units:\n  master: {endpoint: edge, ssh_port: 1}\n") == [
        "console.yaml:2: units.master.endpoint: no endpoint named 'edge' (none defined)"]


def test_the_port_clash_check_keys_on_the_endpoints_server():
    """Two endpoints on one server (two accounts) share its ports; the same port on two servers is fine."""
    found = problems("""\
        endpoints:
          a: {host: h, port: 2222, username: one}
          b: {host: H, port: 2222, username: two}
          c: {host: other}
        units:
          master: {endpoint: a, ssh_port: 10022}
          clone: {endpoint: b, ssh_port: 10022}
        """)
    assert found == ["console.yaml:7: units.clone.ssh_port: 10022 is already asked of H:2222 (endpoint b) by "
                     "units.master.ssh_port"]
    parse_config("endpoints: {a: {host: h}, c: {host: other}}\nunits:\n  master: {endpoint: a, ssh_port: 10022}\n"
                 "  clone: {endpoint: c, ssh_port: 10022}\n", "c.yaml")

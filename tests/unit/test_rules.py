"""Proxy rules and gateway plans with no I/O: the seed's rule syntax, the config's `proxy:` section (one line per
problem), a gateway plan against its formula for every port, and its iptables script against the seed's."""

from __future__ import annotations

import ipaddress
import re

import pytest
from support import run

from console.core.config import parse_config
from console.core.errors import ConfigError, UsageError
from console.core.rule_table import RuleTable
from console.core.rules import GatewayPlan, RuleError, make_rule, parse_rule_text
from console.core.states import RuleState
from console.core.store import Store


@pytest.mark.parametrize("text, parsed, canonical", [
    ("tcp:443:10.10.100.152:8443", ("tcp", 443, "10.10.100.152", 8443), "tcp:443:10.10.100.152:8443"),
    ("udp:53:dns.example.net:53", ("udp", 53, "dns.example.net", 53), "udp:53:dns.example.net:53"),
    ("TCP:1:a:65535", ("tcp", 1, "a", 65535), "tcp:1:a:65535"),
    ("tcp:443:[fd00::1]:8443", ("tcp", 443, "fd00::1", 8443), "tcp:443:[fd00::1]:8443"),
    ("tcp:443:[FD00:0:0::1]:8443", ("tcp", 443, "fd00::1", 8443), "tcp:443:[fd00::1]:8443"),
    ("udp:00053:host-1.lan.:53", ("udp", 53, "host-1.lan.", 53), "udp:53:host-1.lan.:53"),
    ("  tcp:80:127.0.0.1:8080\n", ("tcp", 80, "127.0.0.1", 8080), "tcp:80:127.0.0.1:8080"),
])
def test_rules_in_the_seeds_syntax(text, parsed, canonical):
    assert parse_rule_text(text) == parsed
    rule = make_rule("ingress", text)
    assert rule.text == canonical and rule.via == "local" and rule.listen == "127.0.0.1"
    assert rule.destination == canonical.split(":", 2)[2]


@pytest.mark.parametrize("text, message", [
    ("udp:70000:10.0.0.1:53", "udp:70000:10.0.0.1:53: port must be 1-65535, got 70000"),
    ("tcp:0:10.0.0.1:53", "tcp:0:10.0.0.1:53: port must be 1-65535, got 0"),
    ("tcp:443:10.0.0.1:0", "tcp:443:10.0.0.1:0: destination port must be 1-65535, got 0"),
    ("tcp:443:10.0.0.1:", "tcp:443:10.0.0.1:: destination port must be 1-65535, got nothing"),
    ("tcp:https:10.0.0.1:443", "tcp:https:10.0.0.1:443: port must be 1-65535, got https"),
    ("tcp:123456:10.0.0.1:443", "tcp:123456:10.0.0.1:443: port must be 1-65535, got 123456"),
    ("sctp:443:10.0.0.1:443", "sctp:443:10.0.0.1:443: protocol must be tcp or udp, got sctp"),
    (":443:10.0.0.1:443", ":443:10.0.0.1:443: protocol must be tcp or udp, got nothing"),
    ("tcp:443:fd00::1:8443", "tcp:443:fd00::1:8443: an IPv6 destination goes in brackets: "
                             "tcp:443:[fd00::1]:8443"),
    ("tcp:443:[10.0.0.1]:80", "tcp:443:[10.0.0.1]:80: brackets are for IPv6 addresses only, got [10.0.0.1]"),
    ("tcp:443:[fd00::zz]:80", "tcp:443:[fd00::zz]:80: the destination [fd00::zz] is not an IPv6 address"),
    ("tcp:443::80", "tcp:443::80: the destination is empty"),
    ("tcp:443:10.0.0.256:80", "tcp:443:10.0.0.256:80: the destination 10.0.0.256 is not an IPv4 address"),
    ("tcp:443:0.0.0.0:80", "tcp:443:0.0.0.0:80: the destination 0.0.0.0 is not an address connections can go to"),
    ("tcp:443:bad_host!:80", "tcp:443:bad_host!:80: the destination bad_host! is not a host name or address"),
    ("tcp:443:-lead.example:80", "tcp:443:-lead.example:80: the destination -lead.example is not a host name or "
                                 "address"),
    ("tcp:443:10.0.0.1", "tcp:443:10.0.0.1: must be protocol:port:destination:destination_port, such as "
                         "tcp:443:10.10.100.152:8443"),
    ("tcp:443:a b:80", "'tcp:443:a b:80': a rule has no spaces: protocol:port:destination:destination_port, such as "
                       "tcp:443:10.10.100.152:8443"),
    ("", "a rule is protocol:port:destination:destination_port, such as tcp:443:10.10.100.152:8443; got nothing"),
])
def test_a_bad_rule_is_one_line_naming_what_is_wrong(text, message):
    with pytest.raises(RuleError) as caught:
        parse_rule_text(text)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_a_long_or_unprintable_rule_is_clipped_and_quoted():
    with pytest.raises(RuleError, match=r"^tcp:1:a{74}\.\.\.: a rule is at most 300 characters$"):
        parse_rule_text("tcp:1:" + "a" * 400 + ":1")
    with pytest.raises(RuleError, match=r"^'tcp:1:a\\x1b\[31m:1': a rule has no spaces"):
        parse_rule_text("tcp:1:a\x1b[31m:1")
    with pytest.raises(RuleError, match="direction must be ingress or egress, got sideways"):
        make_rule("sideways", "tcp:1:a:1")


def test_a_rules_identity_is_direction_text_and_via():
    a = make_rule("ingress", "TCP:443:[FD00::1]:8443", source="config", origin="proxy.ingress[0]")
    b = make_rule("ingress", "tcp:443:[fd00::1]:8443", source="runtime")
    assert a.key == b.key == ("ingress", "tcp:443:[fd00::1]:8443", "local") and a.id == b.id
    assert re.fullmatch(r"rule-[0-9a-f]{8}", a.id)
    assert make_rule("egress", a.text).id != a.id and make_rule("ingress", a.text, "master").id != a.id
    assert a.name == "ingress tcp:443:[fd00::1]:8443 via local"
    assert (a.listener, make_rule("ingress", a.text, "master", listen=None).listener) == ("127.0.0.1:443", "*:443")
    assert make_rule("egress", a.text, "master").listener == "127.0.0.1:443"   # egress through a unit listens here


# ---------------------------------------------------------------------------------------------- config


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "console.yaml")
    return caught.value.problems


PROXY = """\
server: {host: gw.example}
units:
  master:
    forwards:
      - {name: ssh, remote_port: 10022, local: 127.0.0.1:22}
proxy:
  listen: 0.0.0.0
  udp_idle_timeout: 30
  udp_max_flows: 100
  ingress:
    - tcp:443:10.10.100.152:8443
    - tcp:443:10.10.100.153:8443
    - {rule: 'udp:5353:[fd00::7]:53', via: master}
  egress:
    - tcp:8443:100.100.0.1:8443
    - {rule: tcp:8080:10.0.5.7:80, via: master}
  gateways:
    - {name: denbi, subnet: 192.168.0.0/24, base: 30000, services: [22, 80, 443], hosts: 1-254}
    - {name: lab, subnet: 10.9.0.0/29, base: 40000, services: [22], via: master, listen: 127.0.0.1}
"""


def test_every_rule_form_in_the_config():
    cfg = parse_config(PROXY, "console.yaml")
    proxy = cfg.proxy
    assert (proxy.listen, proxy.udp_idle_timeout, proxy.udp_max_flows) == ("0.0.0.0", 30.0, 100)
    assert [(r.name, r.origin, r.listen) for r in proxy.rules] == [
        ("ingress tcp:443:10.10.100.152:8443 via local", "proxy.ingress[0]", "0.0.0.0"),
        ("ingress tcp:443:10.10.100.153:8443 via local", "proxy.ingress[1]", "0.0.0.0"),
        ("ingress udp:5353:[fd00::7]:53 via master", "proxy.ingress[2]", "0.0.0.0"),
        ("egress tcp:8443:100.100.0.1:8443 via local", "proxy.egress[0]", "0.0.0.0"),
        ("egress tcp:8080:10.0.5.7:80 via master", "proxy.egress[1]", "0.0.0.0")]
    assert proxy.rules[0].group == proxy.rules[1].group          # one listener: they take turns
    denbi, lab = proxy.gateways
    assert (denbi.hosts, denbi.via, denbi.listen, lab.hosts, lab.via, lab.listen) == \
        ((1, 254), "local", "0.0.0.0", (1, 6), "master", "127.0.0.1")   # hosts default: the subnet's hosts
    assert len(denbi.rules()) == 762 and len(lab.rules()) == 6
    assert parse_config("", "c.yaml").proxy.rules == () and parse_config("", "c.yaml").proxy.udp_idle_timeout == 60


def test_each_problem_of_the_proxy_section_is_one_line():
    found = problems("""\
units:
  master:
    server: {host: a.example}
    forwards:
      - {name: ssh, remote_port: 10022, local: 127.0.0.1:22}
hub: {ports: 2200-2300}
proxy:
  listen: everywhere
  udp_idle_timeout: 0
  ingress:
    - tcp:443:10.10.100.152:8443
    - udp:70000:10.0.0.1:53
    - {rule: tcp:10022:10.0.0.2:22, via: master}
    - {rule: tcp:10023:10.0.0.2:22, via: clone}
    - tcp:2250:host.example:80
    - tcp:443:10.10.100.152:8443
    - {via: master}
    - 443
  egress:
    - tcp:443:100.100.0.1:8443
  gateways:
    - {name: g, subnet: 192.168.0.0/24, base: 30000, services: [22, 80, 443], hosts: 1-254}
    - {name: h, subnet: 192.168.1.0/25, base: 30000, services: [22, 80, 443], hosts: 1-254}
    - {name: i, subnet: 192.168.2.0/24, base: 65000, services: [22, 80, 443]}
    - {name: j, subnet: 192.168.3.0/24, base: 30500, services: [22, 80, 443], hosts: 1-10}
    - {name: k, subnet: 192.168.4.1/24, base: 1000, services: [22, 22], hosts: up}
""")
    assert found == [
        "console.yaml:8: proxy.listen: must be an address of this machine, such as 127.0.0.1, 0.0.0.0 or ::, "
        "got 'everywhere'",
        "console.yaml:9: proxy.udp_idle_timeout: must be between 1 and 86400, got 0",
        "console.yaml:12: proxy.ingress[1]: udp:70000:10.0.0.1:53: port must be 1-65535, got 70000",
        "console.yaml:13: proxy.ingress[2]: port 10022 clashes with unit master's forward ssh (its server's port "
        "10022) at units.master.forwards[0]",
        "console.yaml:14: proxy.ingress[3].via: must be local, scope or a configured unit (local, scope, master), got clone",
        "console.yaml:15: proxy.ingress[4]: port 2250 is in the hub's client ports (2200-2300)",
        "console.yaml:16: proxy.ingress[5]: 'tcp:443:10.10.100.152:8443' is listed twice",
        "console.yaml:17: proxy.ingress[6].rule: required",
        "console.yaml:18: proxy.ingress[7]: must be a rule (protocol:port:destination:destination_port, such as "
        "tcp:443:10.10.100.152:8443) or {rule: RULE, via: UNIT}, got int",
        "console.yaml:20: proxy.egress[0]: port 443 clashes with ingress tcp:443:10.10.100.152:8443 via local on "
        "127.0.0.1:443 at proxy.ingress[0]",
        "console.yaml:23: proxy.gateways[1].hosts: hosts 1-254 reach outside 192.168.1.0/25 (its hosts are 1-126)",
        "console.yaml:24: proxy.gateways[2].hosts: hosts 178-254 would listen past port 65535 (host 254, service "
        "443: 65764); lower base or hosts",
        "console.yaml:25: proxy.gateways[3]: 30 of its ports clash with gateway g at proxy.gateways[0] (the first: "
        "30503)",
        "console.yaml:26: proxy.gateways[4].subnet: '192.168.4.1/24' has host bits set: the network is 192.168.4.0/24",
        "console.yaml:26: proxy.gateways[4].services[1]: 22 is listed twice",
        "console.yaml:26: proxy.gateways[4].hosts: must be a range FIRST-LAST of host numbers, such as 1-254, "
        "got 'up'",
    ]


def test_a_rule_given_twice_with_its_via_is_one_line():
    found = problems("proxy:\n  egress:\n    - tcp:1:a:1\n    - {rule: 'TCP:1:a:1'}\n")
    assert found == ["console.yaml:4: proxy.egress[1]: egress tcp:1:a:1 via local is listed twice (also at "
                     "proxy.egress[0])"]


# ---------------------------------------------------------------------------------------------- gateway plans


def test_the_gateway_plan_follows_its_formula_for_every_port():
    """The seed: 30000+x*3+0 -> LOCALNET.x:22, 30001+x*3 -> :80, 30002+x*3 -> :443, x in 1..254."""
    plan = parse_config(PROXY, "c.yaml").proxy.gateway("denbi")
    entries = plan.entries()
    assert len(entries) == 254 * 3 == len({port for port, _, _ in entries})
    expected = [(30000 + x * 3 + k, f"192.168.0.{x}", service) for x in range(1, 255)
                for k, service in enumerate((22, 80, 443))]
    assert entries == expected
    for port, host, service in entries:   # and back: the port alone says the host and the service
        n, k = divmod(port - 30000, 3)
        assert (host, service) == (str(ipaddress.ip_address("192.168.0.0") + n), (22, 80, 443)[k])
    rules = plan.rules()
    assert [(r.port, r.host, r.dest_port) for r in rules] == expected
    assert {(r.direction, r.protocol, r.via, r.source, r.origin, r.listen) for r in rules} == {
        ("ingress", "tcp", "local", "gateway", "denbi", "0.0.0.0")}
    assert (entries[0], entries[-1]) == ((30003, "192.168.0.1", 22), (30764, "192.168.0.254", 443))
    assert plan.formula == "port 30000 + n*3 + k -> 192.168.0.0/24 host n (n = 1-254), service k (22, 80, 443)"


# The seed's loop, as its shell writes each line (LOCALNET 192.168.0, LOCALIP 192.168.0.10, interface ens3).
SEED_LINES = [
    "iptables -t nat -A PREROUTING -i ens3 -p tcp -m tcp --dport ${SSH_PORT} -j DNAT "
    "--to-destination ${LOCALNET}.${n}:22",
    "iptables -t nat -A POSTROUTING -d ${LOCALNET}.${n}/32 -p tcp -m tcp --dport 22 -j SNAT --to-source ${LOCALIP}",
    "iptables -t nat -A PREROUTING -i ens3 -p tcp -m tcp --dport ${HTTP_PORT} -j DNAT "
    "--to-destination ${LOCALNET}.${n}:80",
    "iptables -t nat -A POSTROUTING -d ${LOCALNET}.${n}/32 -p tcp -m tcp --dport 80 -j SNAT --to-source ${LOCALIP}",
    "iptables -t nat -A PREROUTING -i ens3 -p tcp -m tcp --dport ${HTTPS_PORT} -j DNAT "
    "--to-destination ${LOCALNET}.${n}:443",
    "iptables -t nat -A POSTROUTING -d ${LOCALNET}.${n}/32 -p tcp -m tcp --dport 443 -j SNAT --to-source ${LOCALIP}",
]


def _seed_script(hosts: range) -> list[str]:
    lines = []
    for n in hosts:
        values = {"${SSH_PORT}": 30000 + n * 3, "${HTTP_PORT}": 30001 + n * 3, "${HTTPS_PORT}": 30002 + n * 3,
                  "${LOCALNET}": "192.168.0", "${n}": n, "${LOCALIP}": "192.168.0.10"}
        for line in SEED_LINES:
            for name, value in values.items():
                line = line.replace(name, str(value))
            lines.append(line)
    return lines


def test_the_iptables_export_is_the_seeds_script_line_by_line(tmp_path):
    cfg = parse_config(PROXY, "c.yaml")
    table = RuleTable(cfg, Store(tmp_path / "store.json"))
    lines = table.gateway_export("denbi", "ens3", "192.168.0.10")
    assert lines[0] == "#!/bin/sh" and lines[1].startswith("# gateway denbi: port 30000 + n*3 + k")
    assert lines[3:5] == ["set -e", 'echo 1 > /proc/sys/net/ipv4/ip_forward']   # the seed enables forwarding too
    body = lines[5:]
    rules = [line for line in body if not line.startswith("#")]
    assert rules == _seed_script(range(1, 255))
    blocks = [line for line in body if line.startswith("#")]
    assert blocks == [f"# host {n}: 192.168.0.{n}" for n in range(1, 255)]
    assert body[:7] == ["# host 1: 192.168.0.1", *_seed_script(range(1, 2))]      # one block per host
    script = tmp_path / "gw.sh"
    script.write_text("\n".join(lines) + "\n")
    assert __import__("subprocess").run(["sh", "-n", str(script)]).returncode == 0   # it parses as a shell script
    with pytest.raises(UsageError, match="^--source must be the gateway's address on 192.168.0.0/24, such as "
                                         "192.168.0.10, got gw$"):
        table.gateway_export("denbi", "ens3", "gw")
    with pytest.raises(UsageError, match="^--interface must be a network interface's name"):
        table.gateway_export("denbi", "ens3; reboot", "192.168.0.10")
    with pytest.raises(UsageError, match=r"^no gateway named denbl in c.yaml \(did you mean 'denbi'\?\)$"):
        table.gateway_export("denbl", "ens3", "192.168.0.10")


def test_an_ipv6_plan_exports_ip6tables():
    plan = GatewayPlan("v6", "fd00:1::/64", 40000, (22,), (1, 2))
    assert [line for line in plan.iptables("eth1", "fd00:1::a") if not line.startswith("#")][1:] == [
        "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
        "ip6tables -t nat -A PREROUTING -i eth1 -p tcp -m tcp --dport 40001 -j DNAT --to-destination [fd00:1::1]:22",
        "ip6tables -t nat -A POSTROUTING -d fd00:1::1/128 -p tcp -m tcp --dport 22 -j SNAT --to-source fd00:1::a",
        "ip6tables -t nat -A PREROUTING -i eth1 -p tcp -m tcp --dport 40002 -j DNAT --to-destination [fd00:1::2]:22",
        "ip6tables -t nat -A POSTROUTING -d fd00:1::2/128 -p tcp -m tcp --dport 22 -j SNAT --to-source fd00:1::a"]


# ---------------------------------------------------------------------------------------------- the table on the store


def test_rules_added_on_the_store_and_what_is_refused(tmp_path):
    cfg = parse_config(PROXY.replace("listen: 0.0.0.0", "listen: 127.0.0.1"), "console.yaml")
    store = Store(tmp_path / "store.json")
    table = RuleTable(cfg, store)

    async def body():
        added = await table.add("ingress", "TCP:9443:10.0.10.34:8443", None, "ops")
        assert (added.rule, added.via, added.source, added.state, added.who) == \
            ("tcp:9443:10.0.10.34:8443", "local", "runtime", RuleState.STOPPED, "ops")
        refusals = {
            ("ingress", "tcp:9443:10.0.10.34:8443", "local"): "ingress tcp:9443:10.0.10.34:8443 via local is already "
                                                              "a rule (added at run time by ops at ",
            ("ingress", "udp:70000:10.0.0.1:53", None): "udp:70000:10.0.0.1:53: port must be 1-65535, got 70000",
            ("egress", "tcp:9443:10.0.0.1:53", None): "egress tcp:9443:10.0.0.1:53 via local: port 9443 clashes with "
                                                      "ingress tcp:9443:10.0.10.34:8443 via local on 127.0.0.1:9443",
            ("egress", "tcp:30003:10.0.0.1:53", None): "egress tcp:30003:10.0.0.1:53 via local: port 30003 clashes "
                                                       "with gateway denbi's 127.0.0.1:30003 (192.168.0.1:22)",
            ("ingress", "tcp:1:10.0.0.1:53", "clone"): "tcp:1:10.0.0.1:53: via must be local, scope or a "
                                                       "configured unit (local, scope, master), got clone",
            ("ingress", "tcp:10022:10.0.0.1:53", "master"): "ingress tcp:10022:10.0.0.1:53 via master: port 10022 "
                                                            "clashes with unit master's forward ssh",
        }
        for (direction, text, via), message in refusals.items():
            with pytest.raises(UsageError) as caught:
                await table.add(direction, text, via, "ops")
            assert str(caught.value).startswith(message), str(caught.value)
        for text, via, message in [
                ("tcp:443:10.10.100.152:8443", None, "ingress tcp:443:10.10.100.152:8443 via local is in console.yaml "
                                                     "at proxy.ingress[0]: rules of the config cannot be removed at "
                                                     "run time (edit the file, then reload)"),
                ("tcp:30003:192.168.0.1:22", None, "ingress tcp:30003:192.168.0.1:22 via local is gateway denbi's in "
                                                   "console.yaml: rules of the config cannot be removed"),
                ("tcp:10022:127.0.0.1:22", "master", "ingress tcp:10022:127.0.0.1:22 via master is unit master's "
                                                     "forward ssh in console.yaml: rules of the config cannot be"),
                ("tcp:9999:10.0.10.34:8443", None, "no rule ingress tcp:9999:10.0.10.34:8443")]:
            with pytest.raises(UsageError) as caught:
                await table.remove("ingress", text, via, "ops")
            assert str(caught.value).startswith(message), str(caught.value)
        # back from the store, as a daemon starting later reads it
        again = RuleTable(cfg, store)
        assert [r.name for r in again.runtime_rules] == ["ingress tcp:9443:10.0.10.34:8443 via local"]
        removed = await again.remove("ingress", "tcp:9443:10.0.10.34:8443", None, "ops")
        assert removed.rule == "tcp:9443:10.0.10.34:8443"
        assert RuleTable(cfg, store).runtime_rules == []  # (the operation log records proxy.add and .remove:
        # console/control/operations.perform, tests/integration/test_proxy_cli.py)

    run(body())


def test_a_runtime_rule_the_config_also_has_is_hidden_and_kept(tmp_path):
    store = Store(tmp_path / "store.json")
    said = []
    run(RuleTable(parse_config("", "c.yaml"), store).add("egress", "tcp:9000:10.0.0.1:80", None, "ops"))
    cfg = parse_config("proxy:\n  egress: [tcp:9000:10.0.0.1:80]\n", "c.yaml")
    table = RuleTable(cfg, store, log_line=said.append)
    assert table.runtime_rules == [] and [r.source for r in table.list()] == ["config"]
    assert len(said) == 1 and said[0].startswith("runtime rule egress tcp:9000:10.0.0.1:80 via local (added ")
    assert len(store.rule_records()) == 1
    assert [r.source for r in RuleTable(parse_config("", "c.yaml"), store).list()] == ["runtime"]


def test_gateway_show_on_the_store_probes_ports_in_use(tmp_path):
    import socket

    from console.core.rules import port_in_use

    for _ in range(50):   # a held port whose neighbours in the plan are free (other programs on this machine)
        holder = socket.create_server(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        plan = [port - 4 + n * 3 + k for n in (1, 2, 3) for k in range(3)]
        if not any(port_in_use("127.0.0.1", p) for p in plan if p != port):   # probed as gateway_show does
            break
        holder.close()
    try:
        base = port - 4   # host 1, service 1 lands on `port`
        cfg = parse_config(f"proxy:\n  gateways:\n    - {{name: lab, subnet: 127.0.0.0/24, base: {base}, "
                           "services: [22, 80, 443], hosts: 1-3}\n", "c.yaml")
        shown = RuleTable(cfg, Store(tmp_path / "store.json")).gateway_show("lab")
    finally:
        holder.close()
    assert [(p.port, p.host, p.service) for p in shown.ports] == [
        (base + n * 3 + k, f"127.0.0.{n}", s) for n in (1, 2, 3) for k, s in enumerate((22, 80, 443))]
    assert shown.clashes == [f"{port} -> 127.0.0.1:80: port {port} on 127.0.0.1: address in use (another program "
                             "holds it)"]
    assert {p.state for p in shown.ports} == {RuleState.STOPPED}


def test_via_scope_is_for_egress_rules_to_an_address_and_picks_a_connected_unit_of_the_routed_endpoint():
    from console.core.rule_table import pick_by_scope
    from console.core.rules import ScopePick
    from console.core.status import EndpointRoute

    rule = make_rule("egress", "tcp:8080:10.0.5.7:80", "scope")
    assert rule.via == "scope" and rule.here and rule.listener == "127.0.0.1:8080"
    twin = make_rule("egress", "tcp:8080:10.0.5.8:80", "scope")
    assert rule.group != twin.group      # a listener each: they may pick different units
    with pytest.raises(RuleError, match=r"^tcp:1:db.example:2: via scope needs an address as the destination"):
        make_rule("egress", "tcp:1:db.example:2", "scope")
    with pytest.raises(RuleError, match="ingress rules cannot go via scope: .* name the unit"):
        make_rule("ingress", "tcp:1:10.0.5.7:2", "scope")
    units = [("a", "lab"), ("b", "prod"), ("c", "prod")]
    served = EndpointRoute("10.0.5.7", "prod", "subnet", "10.0.5.0/24", why="10.0.5.7 is in 10.0.5.0/24, ...")
    down = {"b": "unit b is retrying"}
    assert pick_by_scope(served, units, down.get) == ScopePick("c", "endpoint prod, unit c: " + served.why)
    assert pick_by_scope(served, units, lambda unit: "down") == ScopePick(
        None, "endpoint prod serves 10.0.5.7; none of its units is connected (b, c)")
    none = EndpointRoute("10.9.9.9", None, "none", why="10.9.9.9 is in no endpoint's subnet and in no VPC")
    assert pick_by_scope(none, units, down.get) == ScopePick(None, none.why, refused=True)
    tie = EndpointRoute("10.0.5.7", None, "tie", tied=["lab", "prod"], why="10.0.5.7 is in subnet ... of lab and prod")
    assert pick_by_scope(tie, units, down.get).refused

"""Endpoints without a daemon: the routing rule on its edge cases (pure), and the endpoint table on a real store
(runtime endpoints, scope, refusals, a config endpoint hiding a runtime one, reload, the last check)."""

from __future__ import annotations

import json
import textwrap

import pytest
from support import config_of, run

from console.control.operations import Call, perform
from console.core.config import EndpointConfig, EndpointScope
from console.core.endpoint_table import EndpointTable
from console.core.endpoints import Endpoint, endpoint_users, parse_network, route
from console.core.errors import ConsoleError, UsageError
from console.core.states import EndpointReason, EndpointState
from console.core.status import EndpointCheck, EndpointStatus
from console.core.store import Store


def ep(name: str, subnet: str | None = None, subnets: tuple[str, ...] = (), vpcs: tuple[str, ...] = (),
       added: tuple[str, ...] = ()) -> Endpoint:
    config = EndpointConfig(host=f"{name}.example", name=name, subnet=subnet, scope=EndpointScope(subnets, vpcs))
    return Endpoint(config, "config", "ep-00000000", added_subnets=added)


VPCS = {"prod": ("10.0.0.0/16", "fd00:10::/48"), "inner": ("10.0.1.0/24",), "twin": ("10.0.0.0/16",)}


# ---------------------------------------------------------------------------------------------- routing


def test_the_most_specific_subnet_wins_over_every_endpoint():
    endpoints = [ep("wide", subnets=("10.0.0.0/8",)), ep("narrow", subnet="10.1.2.0/24"),
                 ep("late", added=("10.1.0.0/16",))]
    found = route("10.1.2.3", endpoints, {})
    assert (found.endpoint, found.how, found.network) == ("narrow", "subnet", "10.1.2.0/24")
    assert found.why == "10.1.2.3 is in 10.1.2.0/24, its own subnet: the most specific subnet that holds it"
    assert route("10.1.9.9", endpoints, {}).endpoint == "late"       # associated at run time
    assert route("10.200.0.1", endpoints, {}).endpoint == "wide"
    assert route("11.0.0.1", endpoints, {}).how == "none"


def test_a_host_route_and_ipv6():
    endpoints = [ep("v4", subnets=("10.0.0.0/8",)), ep("host", subnets=("10.0.0.7/32",)),
                 ep("v6", subnet="fd00:1::/64"), ep("v6host", subnets=("fd00:1::7/128",))]
    assert route("10.0.0.7", endpoints, {}).endpoint == "host"
    assert route("10.0.0.8", endpoints, {}).endpoint == "v4"
    assert route("fd00:1::8", endpoints, {}).endpoint == "v6"
    assert route("[fd00:1::7]", endpoints, {}).endpoint == "v6host"
    assert route("fd00:2::1", endpoints, {}).how == "none"           # an IPv6 address is in no IPv4 network
    mapped = route("::ffff:10.0.0.7", endpoints, {})                  # an IPv4-mapped address is its IPv4 address
    assert (mapped.address, mapped.endpoint) == ("10.0.0.7", "host")


def test_two_endpoints_with_the_same_most_specific_subnet_is_a_tie_not_a_pick():
    endpoints = [ep("a", subnet="10.1.0.0/24"), ep("b", added=("10.1.0.0/24",)), ep("c", subnets=("10.0.0.0/8",))]
    found = route("10.1.0.9", endpoints, {})
    assert (found.endpoint, found.how, found.tied, found.network) == (None, "tie", ["a", "b"], "10.1.0.0/24")
    assert "a and b alike" in found.why
    assert route("10.2.0.9", endpoints, {}).endpoint == "c"          # outside the tie, the wider subnet serves


def test_a_subnet_is_matched_before_any_vpc_even_a_more_specific_one():
    endpoints = [ep("by-subnet", subnets=("10.0.0.0/8",)), ep("by-vpc", vpcs=("inner",))]
    assert route("10.0.1.5", endpoints, VPCS).endpoint == "by-subnet"


def test_vpc_fallback_the_most_specific_vpc_network_decides():
    endpoints = [ep("prod-gw", vpcs=("prod",)), ep("inner-gw", vpcs=("inner",)), ep("sub", subnet="10.0.9.0/24")]
    found = route("10.0.1.5", endpoints, VPCS)
    assert (found.endpoint, found.how, found.vpc, found.network) == ("inner-gw", "vpc", "inner", "10.0.1.0/24")
    assert route("10.0.2.5", endpoints, {"prod": VPCS["prod"]}).endpoint == "prod-gw"
    assert route("fd00:10::1", endpoints, VPCS).endpoint == "prod-gw"  # a VPC's IPv6 network
    assert route("10.0.9.1", endpoints, VPCS).endpoint == "sub"       # its subnet first


def test_a_vpc_nobody_is_associated_with_and_vpcs_alike():
    alone = route("10.0.1.5", [ep("gw", vpcs=("prod",))], {"inner": ("10.0.1.0/24",), "prod": ("10.0.0.0/16",)})
    assert (alone.endpoint, alone.how, alone.vpc) == (None, "none", "inner")
    assert "VPC inner (10.0.1.0/24), which no endpoint is associated with" in alone.why
    twins = route("10.0.2.5", [ep("p", vpcs=("prod",)), ep("t", vpcs=("twin",))], VPCS)
    assert (twins.endpoint, twins.how, twins.tied) == (None, "tie", ["p", "t"])
    both = route("10.0.2.5", [ep("p", vpcs=("prod",)), ep("q", vpcs=("prod",))], {"prod": VPCS["prod"]})
    assert (both.how, both.tied, both.vpc) == ("tie", ["p", "q"], "prod")


@pytest.mark.parametrize("text", ["", "10.0.0", "10.0.0.0/24", "host.example", "fd00::1::2"])
def test_only_an_ip_address_is_routed(text):
    with pytest.raises(ValueError, match="not an IP address"):
        route(text, [], {})


def test_networks_are_strict_cidrs():
    assert str(parse_network("10.1.0.0/24")[0]) == "10.1.0.0/24"
    assert str(parse_network("10.1.0.7")[0]) == "10.1.0.7/32"
    assert parse_network("10.1.0.7/24") == (None, "'10.1.0.7/24' has host bits set: the network is 10.1.0.0/24")
    assert parse_network("fd00::1/64")[1] == "'fd00::1/64' has host bits set: the network is fd00::/64"
    assert parse_network("10.1.0.0/33")[0] is None and parse_network(None)[0] is None


def test_who_uses_an_endpoint_units_and_the_rules_seam():
    cfg = config_of("endpoints: {a: {host: a}, b: {host: b}}\nunits:\n  master: {endpoint: a, ssh_port: 1}\n"
                    "  clone: {endpoint: a, ssh_port: 2}\n")

    class Rule:
        def __init__(self, name, endpoint):
            self.name, self.endpoint = name, endpoint

    users = endpoint_users("a", cfg.units.values(), [Rule("web", "a"), Rule("dns", "b")])
    assert (users.units, users.rules, users.describe()) == (("master", "clone"), ("web",),
                                                              "units master, clone; rules web")
    assert not endpoint_users("b", cfg.units.values()) and endpoint_users("b", [], [Rule("dns", "b")])


# ---------------------------------------------------------------------------------------------- the table

CONFIG = textwrap.dedent("""\
    vpcs: {prod: [10.0.0.0/16], lab: [10.9.0.0/16]}
    server: {host: 203.0.113.7}
    endpoints:
      edge: {host: e.example, username: sop, subnet: 10.1.0.0/24, scope: {vpcs: [prod]}}
    units:
      master: {endpoint: edge, ssh_port: 10022}
    """)


@pytest.fixture
def table(tmp_path):
    store = Store(tmp_path / "store.json")
    changes, lines = [], []
    table = EndpointTable(config_of(CONFIG), store, on_change=lambda n, c: changes.append((n, c)),
                          log_line=lines.append)
    table.changes, table.lines = changes, lines
    yield table
    store.close()


def test_runtime_endpoints_are_kept_in_the_store_and_merged_after_the_configs(table, tmp_path):
    added = table.add("web", "10.9.0.5", 2222, "ops", "lab box", "10.9.4.0/24", who="alice")
    assert (added.source, added.state, added.address, added.username, added.comment, added.subnet) == \
        ("runtime", EndpointState.UNCHECKED, "10.9.0.5:2222", "ops", "lab box", "10.9.4.0/24")
    assert added.id.startswith("ep-") and len(added.id) == 11 and added.created == added.updated
    assert table.changes == [("web", "added")] and table.lines == ["web added by alice: ops@10.9.0.5:2222"]
    assert [e.name for e in table.list()] == ["default", "edge", "web"]
    again = EndpointTable(config_of(CONFIG), Store(tmp_path / "store.json"))   # what a restart reads
    assert again.status("web") == added
    edge = again.status("edge")
    assert (edge.source, edge.units, edge.id) == ("config", ["master"], table.status("edge").id)
    assert EndpointStatus.from_json(edge.to_json()) == edge


@pytest.mark.parametrize("args, message", [
    (("bad name", "h"), "endpoint name must be 1-32 letters"),
    (("edge", "h"), "edge is an endpoint of test.yaml: runtime endpoints take other names"),
    (("w", "a b"), "endpoint host must be a host name or address, got 'a b'"),
    (("w", "h", 0), "endpoint port must be 1-65535, got 0"),
    (("w", "h", 22, "no such"), "endpoint user must be a login name"),
    (("w", "h", 22, None, "two\nlines"), "endpoint comment must be one line"),
    (("w", "h", 22, None, None, "10.0.0.1/8"), "--subnet: '10.0.0.1/8' has host bits set"),
])
def test_add_refuses_bad_input_in_one_line(table, args, message):
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(").replace(")", r"\)")) as info:
        table.add(*args)
    assert "\n" not in info.value.message and table.changes == []


def test_remove_is_all_or_none_naming_each_refusal(table):
    table.add("web", "h")
    table.add("db", "h")
    with pytest.raises(ConsoleError) as info:
        table.remove(["web", "edge", "wbe"])
    assert info.value.exit_code == 2
    assert info.value.message == (
        "nothing removed: edge is in test.yaml (config endpoints are read-only at run time: edit the file, then "
        "reload), used by units master; wbe: no such endpoint (did you mean 'web'?)")
    assert "web" in table.endpoints
    table.rules = lambda: [type("Rule", (), {"name": "r1", "endpoint": "db"})()]
    with pytest.raises(ConsoleError) as info:
        table.remove(["web", "db"])
    assert (info.value.exit_code, info.value.message) == (1, "nothing removed: db is used by rules r1")
    assert table.remove(["web", "web"]) == ["web"] and "web" not in table.endpoints
    assert ("web", "removed") in table.changes


def test_scope_of_config_and_runtime_endpoints(table):
    result = table.associate("edge", ["lab", "prod"], ["10.1.0.0/24", "10.5.0.0/24"], who="bob")
    assert result["added"] == ["subnet 10.5.0.0/24", "VPC lab"]
    assert result["already"] == ["subnet 10.1.0.0/24 (its own subnet)", "VPC prod (in the config)"]
    scope = [(s.kind, s.network, s.source, s.cidrs) for s in result["endpoint"].scope]
    assert scope == [("subnet", "10.1.0.0/24", "own", ["10.1.0.0/24"]), ("subnet", "10.5.0.0/24", "runtime",
                     ["10.5.0.0/24"]), ("vpc", "prod", "config", ["10.0.0.0/16"]),
                     ("vpc", "lab", "runtime", ["10.9.0.0/16"])]
    table.add("web", "h", subnet="10.7.0.0/24")
    note = table.associate("web", [], ["10.5.0.0/24"])["notes"]
    assert note == ["subnet 10.5.0.0/24 is in the scope of edge too: `endpoints route` calls addresses there a tie "
                    "until one of them lets it go"]
    assert table.route("10.5.0.1").how == "tie"
    with pytest.raises(UsageError, match=r"^no VPC named 'prd' \(did you mean 'prod'\?\)"):
        table.associate("edge", ["prd"], [])
    with pytest.raises(UsageError, match=r"^nothing unassociated: subnet 10.1.0.0/24 \(its own subnet\), VPC prod "
                                         r"of edge are set in test.yaml: change the file, then reload$"):
        table.unassociate("edge", ["prod", "lab"], ["10.1.0.0/24"])
    gone = table.unassociate("edge", ["lab", "ghost"], ["10.5.0.0/24", "10.6.0.0/24"])
    assert (gone["removed"], gone["not_associated"]) == (["subnet 10.5.0.0/24", "VPC lab"],
                                                         ["subnet 10.6.0.0/24", "VPC ghost"])
    assert table.route("10.5.0.1").endpoint == "web"
    assert table.store.endpoint_scopes().keys() == {"web"}           # edge's additions all gone: its record too


def test_a_config_endpoint_hides_a_runtime_one_of_its_name_said_once(table):
    table.add("later", "runtime.example")
    text = CONFIG.replace("endpoints:\n", "endpoints:\n  later: {host: config.example}\n")
    changes = table.reload(config_of(text))
    assert changes == ["endpoint later changed (now root@config.example:22; its last check dropped)"]
    assert table.status("later").source == "config"
    table.reload(config_of(text))
    hidden = [line for line in table.lines if "hidden" in line]
    assert len(hidden) == 1 and hidden[0].startswith("runtime endpoint later (ep-")
    back = table.reload(config_of(CONFIG))                             # the config drops it: back it comes
    assert back == ["endpoint later changed (now root@runtime.example:22; its last check dropped)"]
    assert table.status("later").host == "runtime.example"


def test_a_stored_check_is_the_state_until_the_host_port_or_user_changes(table):
    check = EndpointCheck("edge", EndpointState.UNAVAILABLE, EndpointReason.PUBLICKEY, "key not accepted",
                          "use set-up by password", "e.example:22", "sop", methods=["password"],
                          checked_at="2026-11-22T10:00:00Z", seconds=0.1)
    table.record_check(check)
    assert ("edge", "checked") in table.changes
    shown = table.status("edge")
    assert shown.last_check == check and table.list()[1].state is EndpointState.UNAVAILABLE
    again = EndpointStatus.from_json(json.loads(json.dumps(shown.to_json())))   # as the socket carries it
    assert again == shown and again.last_check.reason is EndpointReason.PUBLICKEY
    assert table.reload(config_of(CONFIG.replace("units:", "# a comment\nunits:"))) == []
    assert table.status("edge").last_check == check                     # nothing changed: kept
    changed = table.reload(config_of(CONFIG.replace("username: sop", "username: ops")))
    assert changed == ["endpoint edge changed (now ops@e.example:22; its last check dropped)"]
    assert table.status("edge").state is EndpointState.UNCHECKED


def test_the_operations_on_a_table_as_the_cli_runs_them_without_a_daemon(table):
    async def body():
        call = Call("me", endpoints=table)
        added = await perform(call, "endpoints.add", {"name": "web", "host": "h", "subnet": "10.3.0.0/24"})
        assert added.name == "web"
        assert (await perform(call, "endpoints.route", {"address": "10.3.0.1"})).endpoint == "web"
        assert [e.name for e in (await perform(call, "endpoints.list", {}))["endpoints"]] == ["default", "edge", "web"]
        result = await perform(call, "endpoints.associate", {"name": "web", "vpcs": ["lab"]})
        assert result["added"] == ["VPC lab"]
        with pytest.raises(UsageError, match="^not an IP address: 'x'"):
            await perform(call, "endpoints.route", {"address": "x"})
        assert await perform(call, "endpoints.remove", {"names": ["web"]}) == ["web"]
    run(body())


def test_a_runtime_record_that_does_not_check_is_ignored_and_said_once(table):
    table.store.add_endpoint({"id": "ep-00000001", "name": "odd", "host": "a b", "port": 22, "username": "root",
                              "created": "2026-11-22T10:00:00Z", "updated": "2026-11-22T10:00:00Z"})
    table.store.add_endpoint({"id": "ep-00000002", "name": "lax", "host": "h", "port": 22, "username": "root",
                              "host_key_policy": "trust-all", "created": "x", "updated": "x"})
    table.reload(table.config)
    table.reload(table.config)
    assert "odd" not in table.endpoints and "lax" not in table.endpoints
    assert [line for line in table.lines if "ignored" in line] == [
        "runtime endpoint record 'odd' in the store is ignored: must be a host name or address, got 'a b'",
        "runtime endpoint record 'lax' in the store is ignored: its host key policy 'trust-all' is not one of "
        "strict, accept-new"]

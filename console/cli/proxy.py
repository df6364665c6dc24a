"""`sop-console proxy ...` and `sop-console gateway ...`: the proxy rules (the nexd seed's `nexctl nexd proxy
add|remove|list`) and the gateway port plans (the de.NBI seed's mapping, and its iptables script).

A change (add, remove) goes through the daemon when it runs, so the listener opens or closes at once; with no daemon
at all it is made on the store, holding the daemon's lock (console/cli/context.py: `daemon_or_store`), and the rule
listens when the daemon starts. Reading (list, gateway show, gateway export) falls back to the store.
"""

from __future__ import annotations

import getpass
import json
from typing import TYPE_CHECKING, Any

from console.cli.context import Commands, Context, daemon_or_store
from console.core.errors import EXIT_OK
from console.core.states import RuleState, human_bytes
from console.core.status import GatewayStatus, RuleStatus

if TYPE_CHECKING:
    from console.control.operations import Call
    from console.core.store import Store

RULE_HELP = "protocol:port:destination:destination_port, e.g. tcp:443:10.10.100.152:8443 (IPv6 in brackets)"


def register(commands: Commands) -> None:
    group = commands.group("proxy", "the proxy rules (L4, tcp and udp, round robin): add, remove, list")
    p = group.add("add", "add a rule at run time (kept in the store, back after a restart)", add)
    _rule_options(p, "--via", "local (this machine, the default), a unit, or scope (egress only: a unit of "
                                   "the endpoint whose scope holds the destination address): what the rule goes through")
    p = group.add("remove", "remove a rule added at run time (the config's are changed in the file)", remove)
    _rule_options(p, "--via", "local, scope or a unit (may be left out when only one rule matches)")
    p = group.add("list", "every rule: listener, destinations, via, state, counters, where it comes from", list_)
    p.add_argument("--json", action="store_true", help="machine-readable output (every rule, gateways' too)")
    p.add_argument("--all", action="store_true", help="list a gateway plan's rules one by one (default: a line a "
                                                      "plan; `gateway show NAME` has its ports)")

    gateway = commands.group("gateway", "gateway port plans (proxy.gateways in the config): show, export")
    p = gateway.add("show", "a plan port by port (port -> host:service, its state) and what clashes with it", show)
    p.add_argument("name", metavar="NAME", help="the gateway plan's name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = gateway.add("export", "a plan as a script of kernel NAT rules (DNAT and SNAT), for root on the gateway",
                    export)
    p.add_argument("name", metavar="NAME", help="the gateway plan's name")
    p.add_argument("--iptables", action="store_true", required=True,
                   help="an iptables script, the seed's shape (the one format there is; required)")
    p.add_argument("--source", required=True, metavar="ADDRESS",
                   help="the gateway's own address on the plan's subnet (SNAT --to-source)")
    p.add_argument("--interface", default="eth0", metavar="IFACE",
                   help="the interface the clients come in on (PREROUTING -i; default eth0)")


def _rule_options(parser, via: str, via_help: str) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--ingress", metavar="RULE", help=f"an ingress rule: {RULE_HELP}")
    which.add_argument("--egress", metavar="RULE", help=f"an egress rule: {RULE_HELP}")
    parser.add_argument(via, metavar="UNIT|local|scope", help=via_help)


def _direction(ctx: Context) -> tuple[str, str]:
    a = ctx.args
    return ("ingress", a.ingress) if a.ingress is not None else ("egress", a.egress)


# ---------------------------------------------------------------------------------------------- the commands


def add(ctx: Context) -> int:
    direction, rule = _direction(ctx)
    status = RuleStatus.from_json(_request(ctx, "proxy.add", direction=direction, rule=rule, via=ctx.args.via))
    print(f"added {status.direction} {status.rule} via {status.via}: {_state(status)}")
    return EXIT_OK


def remove(ctx: Context) -> int:
    direction, rule = _direction(ctx)
    status = RuleStatus.from_json(_request(ctx, "proxy.remove", direction=direction, rule=rule, via=ctx.args.via))
    print(f"removed {status.direction} {status.rule} via {status.via}")
    return EXIT_OK


def list_(ctx: Context) -> int:
    result = _request(ctx, "proxy.list")
    if ctx.args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    rules = [RuleStatus.from_json(r) for r in result["rules"]]
    if not rules:
        print("no rules: add one with `sop-console proxy add --ingress tcp:PORT:HOST:PORT`, or in the config")
        return EXIT_OK
    print("\n".join(render_list(rules, every=ctx.args.all)))
    return EXIT_OK


def show(ctx: Context) -> int:
    result = _request(ctx, "gateway.show", name=ctx.args.name)
    if ctx.args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    print("\n".join(render_gateway(GatewayStatus.from_json(result))))
    return EXIT_OK


def export(ctx: Context) -> int:
    a = ctx.args
    print("\n".join(_request(ctx, "gateway.export", name=a.name, source=a.source, interface=a.interface)))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- the text forms


def _state(rule: RuleStatus) -> str:
    where = f" on {rule.listener}" if rule.state.value == "listening" else ""
    return f"{rule.state.label}{where}" + (f": {rule.reason}" if rule.reason else "")


def _counters(rule: RuleStatus) -> str:
    flows = f" flows {rule.udp_flows}" if rule.protocol == "udp" else ""
    dropped = f" dropped {rule.dropped}" if rule.dropped else ""
    return (f"open {rule.open} total {rule.total} in {human_bytes(rule.bytes_in)} out {human_bytes(rule.bytes_out)}"
            + flows + dropped)


def render_list(rules: list[RuleStatus], *, every: bool = False) -> list[str]:
    """`proxy list`: a line a rule (a gateway plan folded into one unless `every`), then its counters, why it is
    not listening, and, under the first rule of a listener, its round robin with the destinations that are down."""
    entries: list[RuleStatus | list[RuleStatus]] = []
    plans: dict[str, list[RuleStatus]] = {}
    for rule in rules:
        if rule.source == "gateway" and not every:
            if rule.origin not in plans:
                plans[rule.origin] = []
                entries.append(plans[rule.origin])
            plans[rule.origin].append(rule)
        else:
            entries.append(rule)
    rows: list[tuple[str, ...]] = [("DIRECTION", "RULE", "VIA", "LISTENER", "STATE", "SOURCE")]
    notes: list[list[str]] = [[]]
    listeners: set[tuple] = set()
    common = {(r.state, r.reason) for r in rules}
    said = common.pop()[1] if len(common) == 1 and rules[0].state is RuleState.STOPPED else None
    for entry in entries:
        if isinstance(entry, list):
            rows.append(_plan_row(entry))
            notes.append([_totals(entry)] + [f"{m.listener}: {m.reason}" for m in entry if m.reason != said][:3])
            continue
        rule = entry
        source = rule.source + (f" {rule.origin}" if rule.source in ("gateway", "forward") and rule.origin else "")
        rows.append((rule.direction, rule.rule, rule.via, rule.listener, rule.state.label, source))
        lines = [_counters(rule)] + ([rule.reason] if rule.reason and rule.reason != said else [])
        listener = (rule.direction, rule.via, rule.protocol, rule.listener)
        if listener not in listeners:
            listeners.add(listener)
            if len(rule.destinations) > 1:   # a stopped rule's destinations have no state yet
                lines.append("round robin: " + ", ".join(
                    d.destination + ("" if rule.state is RuleState.STOPPED else f" {d.state.label}")
                    for d in rule.destinations))
            lines += [f"{d.destination} down: {d.reason}" for d in rule.down]
        notes.append(lines)
    widths = [max(len(row[c]) for row in rows) for c in range(5)]
    out = [said] if said else []
    for row, lines in zip(rows, notes):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[5])
        out += [f"    {line}" for line in lines]
    return out


def _plan_row(members: list[RuleStatus]) -> tuple[str, ...]:
    """A gateway plan's rules in one row: how many, from which port, in which states."""
    states: dict[str, int] = {}
    for member in members:
        states[member.state.label] = states.get(member.state.label, 0) + 1
    first = members[0]
    return ("ingress", f"gateway {first.origin}", first.via, f"{len(members)} ports from {first.listener}",
            ", ".join(f"{n} {label}" for label, n in states.items()), "gateway")


def _totals(members: list[RuleStatus]) -> str:
    return (f"open {sum(m.open for m in members)} total {sum(m.total for m in members)} "
            f"in {human_bytes(sum(m.bytes_in for m in members))} out {human_bytes(sum(m.bytes_out for m in members))}")


def render_gateway(g: GatewayStatus) -> list[str]:
    """`gateway show`: the formula, the state of its ports, what clashes, then every port -> host:service."""
    counts = ", ".join(f"{n} {state}" for state, n in g.counts().items())
    lines = [f"gateway {g.name}: {g.formula}",
             f"  via {g.via}, listening on {g.listen}; {len(g.ports)} ports: {counts}"]
    lines += [f"  problem: {p}" for p in g.problems]
    if g.clashes:
        lines.append(f"  clashes ({len(g.clashes)}):")
        lines += [f"    {c}" for c in g.clashes]
    else:
        lines.append("  clashes: none")
    width = max((len(f"{p.host}:{p.service}") for p in g.ports), default=10)
    lines.append(f"  {'PORT':>5}    {'HOST:SERVICE'.ljust(width)}  STATE")
    for p in g.ports:
        lines.append(f"  {p.port:>5} -> {f'{p.host}:{p.service}'.ljust(width)}  {p.state.label}"
                     + (f": {p.reason}" if p.reason and p.state.value != "stopped" else ""))
    return lines


# ---------------------------------------------------------------------------------------------- daemon or store


def _request(ctx: Context, op: str, **args: Any) -> Any:
    return daemon_or_store(ctx, op, args, _rules_call)


def _rules_call(ctx: Context, store: Store) -> Call:
    from console.control.operations import RulesCall
    from console.core.rule_table import RuleTable

    return RulesCall(getpass.getuser(), rules=RuleTable(ctx.config(), store))

"""The proxy rules the daemon knows, merged: the config's (`proxy.ingress`, `proxy.egress`, read-only at run time),
every gateway plan's (read-only too), those added at run time (kept in the store, surviving restarts), and today's
unit forwards shown as the ingress rules they are (read-only: the units' workers run them).

The control operations `proxy.*` and `gateway.*` run against a RuleTable: the daemon's (the engine holds one, with
the proxy runtime that listens, and publishes `RuleChanged` for every change), or, with no daemon, one made on the
store by the command line (rules are then `stopped`: no daemon runs them).

A runtime rule that the config later also has (a reload, a restart) is hidden behind it: said once in the log,
kept in the store, back when the config drops it.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from console.core.clock import utc_iso
from console.core.config import Config, forward_rules
from console.core.endpoints import closest
from console.core.errors import UsageError
from console.core.rules import (LOCAL, MAX_RUNTIME_RULES, SCOPE, GatewayPlan, Rule, RuleError, ScopePick, clashes,
                                describe_place, hub_clash, make_rule, port_in_use, shown, via_problem)
from console.core.states import DestinationState, ForwardState, RuleState
from console.core.status import EndpointRoute, ForwardStatus, GatewayPort, GatewayStatus, RuleDestination, RuleStatus
from console.core.store import Store
from console.core.words import counted

log = logging.getLogger("console.rules")

Changed = Callable[[str, str], None]   # (rule id, change): "added", "removed", "state", "destination", "traffic"
NOT_RUNNING = "no daemon runs the rules (they listen while `sop-console daemon` runs)"
INTERFACE_RE = re.compile(r"^[A-Za-z0-9_.@:+-]{1,15}$")   # a Linux interface name (IFNAMSIZ 16)


@dataclass(frozen=True)
class RuleUse:
    """A rule (or a gateway plan) going through an endpoint."""

    name: str
    endpoint: str | None


class RuleRuntime(Protocol):
    """What runs the rules (console.proxy.runtime.ProxyRuntime): it listens, relays and counts."""

    async def apply(self, rules: list[Rule], settings: Any) -> None: ...

    def status(self, rule: Rule) -> RuleStatus: ...


def rule_status(rule: Rule, state: RuleState, reason: str | None, destinations: Iterable[RuleDestination] = (),
                counts: tuple[int, int, int, int] = (0, 0, 0, 0), flows: int = 0, dropped: int = 0,
                listener: str | None = None) -> RuleStatus:
    """A rule's record: the one way both the table and the runtime make it."""
    return RuleStatus(rule.id, rule.direction, rule.protocol, rule.text, listener or rule.listener, rule.destination,
                      rule.via, state, reason, rule.source, rule.origin, list(destinations), *counts,
                      udp_flows=flows, dropped=dropped, created=rule.created, who=rule.who)


def pick_by_scope(route: EndpointRoute, units: Iterable[tuple[str, str | None]],
                  waiting: Callable[[str], str | None]) -> ScopePick:
    """The unit a rule via scope travels through: of the endpoint `route` names (refused with the route's words
    when none, or several alike), the first of `units` ((name, endpoint) each, in config order) that uses it and is
    connected; none connected: no unit yet, naming the endpoint and its units."""
    if route.endpoint is None:
        return ScopePick(None, route.why, refused=True)
    endpoint = route.endpoint
    theirs = [name for name, uses in units if uses == endpoint]
    if not theirs:
        return ScopePick(None, f"endpoint {endpoint} serves {route.address}, but no unit uses it ({route.why})",
                         refused=True)
    for name in theirs:
        if waiting(name) is None:
            return ScopePick(name, f"endpoint {endpoint}, unit {name}: {route.why}")
    return ScopePick(None, f"endpoint {endpoint} serves {route.address}; none of its units is connected "
                           f"({', '.join(theirs)})")


_FORWARD_STATES = {ForwardState.LISTENING: RuleState.LISTENING, ForwardState.PENDING: RuleState.WAITING,
                   ForwardState.REFUSED: RuleState.REFUSED, ForwardState.STOPPED: RuleState.STOPPED}


class RuleTable:
    def __init__(self, config: Config, store: Store, *, runtime: RuleRuntime | None = None,
                 forwards: Callable[[], Iterable[tuple[str, ForwardStatus]]] | None = None,
                 on_change: Changed | None = None, log_line: Callable[[str], None] | None = None) -> None:
        """`runtime`: what listens (the daemon's); `forwards`: the units' forwards now, (unit, status) each."""
        self.config = config
        self.store = store
        self.runtime = runtime
        self._forwards = forwards
        self._on_change = on_change or (lambda rule, change: None)
        self._log = log_line or (lambda text: log.info("%s", text))
        self._said: set[str] = set()
        self.runtime_rules: list[Rule] = self._load()

    # ------------------------------------------------------------------ loading

    def _load(self) -> list[Rule]:
        fixed = {r.key: r for r in self.config_rules()}
        rules, seen = [], set()
        for record in self.store.rule_records():
            try:
                rule = make_rule(record["direction"], record["rule"], record["via"], source="runtime",
                                 listen=self.config.proxy.listen, created=record["created"],
                                 who=record.get("who") if isinstance(record.get("who"), str) else None)
            except RuleError as exc:
                self._say_once(f"runtime rule record {record['direction']} {shown(record['rule'])} in the store is "
                               f"ignored: {exc}")
                continue
            if rule.key in fixed:
                self._say_once(f"runtime rule {rule.name} (added {rule.created}) is hidden: {self.config.source} has "
                               f"it too ({fixed[rule.key].origin}), which wins; it is kept and comes back if the "
                               "config drops it")
                continue
            if rule.key not in seen:
                seen.add(rule.key)
                rules.append(rule)
        return rules

    def _say_once(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            self._log(text)

    # ------------------------------------------------------------------ reading

    def config_rules(self) -> list[Rule]:
        """The config's rules, then every gateway plan's."""
        return [*self.config.proxy.rules, *(r for g in self.config.proxy.gateways for r in g.rules())]

    def active(self) -> list[Rule]:
        """What the proxy runtime runs: the config's rules, the gateways', those added at run time."""
        return [*self.config_rules(), *self.runtime_rules]

    def forward_rules(self) -> list[Rule]:
        return forward_rules(self.config.units.values())

    def all(self) -> list[Rule]:
        return [*self.active(), *self.forward_rules()]

    def endpoint_uses(self, route: Callable[[str], str | None] = lambda address: None) -> list[RuleUse]:
        """The rules via a unit, each with the endpoint it goes through: its unit's, or for a rule via scope the one
        `route` picks for its destination now (console.core.endpoints: UsesEndpoint, for `endpoints show` and
        `remove`). A gateway plan's rules count once, as `gateway NAME`; the units' forwards are their units' own."""
        uses: dict[str, RuleUse] = {}
        for rule in self.active():
            if rule.via == SCOPE:
                endpoint = route(rule.host)
            else:
                unit = self.config.units.get(rule.via)
                endpoint = unit.endpoint if unit is not None else None
            if endpoint is None:
                continue
            name = f"gateway {rule.origin}" if rule.source == "gateway" else rule.name
            uses.setdefault(name, RuleUse(name, endpoint))
        return list(uses.values())

    def status(self, rule: Rule) -> RuleStatus:
        if self.runtime is not None:
            return self.runtime.status(rule)
        members = [r for r in self.active() if r.group == rule.group]
        return rule_status(rule, RuleState.STOPPED, NOT_RUNNING,
                           [RuleDestination(r.destination, r.id, DestinationState.UP) for r in members])

    def list(self) -> list[RuleStatus]:
        """Every rule: the config's, the gateways', the runtime ones, then the units' forwards."""
        return [*(self.status(r) for r in self.active()), *self._forward_statuses()]

    def _forward_statuses(self) -> list[RuleStatus]:
        live = {(unit, f.name): f for unit, f in (self._forwards() if self._forwards else ())}
        found = []
        for rule in self.forward_rules():
            forward = live.get((rule.via, rule.origin))
            if forward is None:
                found.append(rule_status(rule, RuleState.STOPPED, NOT_RUNNING if self._forwards is None else
                                         f"unit {rule.via} is stopped"))
                continue
            state = _FORWARD_STATES[forward.state]
            reason = forward.error or (f"unit {rule.via} is not connected (`sop-console status` says why)"
                                       if state is not RuleState.LISTENING else None)
            if forward.port and forward.port != rule.port:   # remote_port 0: the port the server chose
                rule = replace(rule, port=forward.port)
            found.append(rule_status(rule, state, reason,
                                     [RuleDestination(rule.destination, rule.id, DestinationState.UP)],
                                     (forward.open, forward.total, forward.bytes_in, forward.bytes_out),
                                     listener=forward.remote))
        return found

    def find(self, direction: str, text: str, via: str | None) -> Rule:
        """The rule named (via None: whichever via, if only one); UsageError when none or several."""
        try:
            asked = make_rule(direction, text, via or LOCAL)
        except RuleError as exc:
            raise UsageError(str(exc)) from None
        canonical = asked.text
        found = [r for r in self.all() if r.direction == direction and r.text == canonical
                 and (via is None or r.via == via)]
        if not found:
            also = [r.name for r in self.all() if r.protocol == asked.protocol and r.port == asked.port]
            hint = f" (on that port: {'; '.join(also[:3])})" if also else ""
            raise UsageError(f"no rule {direction} {canonical}" + (f" via {via}" if via else "") + hint)
        if len(found) > 1:
            raise UsageError(f"{direction} {canonical} goes via {', '.join(r.via for r in found)}: say which with "
                             "--via")
        return found[0]

    # ------------------------------------------------------------------ changing

    async def add(self, direction: str, text: str, via: str | None, who: str = "someone") -> RuleStatus:
        """Add a rule at run time, kept in the store; refused (exit 2, one line) when it is bad, already there,
        or clashes with another listener. A port held by another program is not refused: the rule is kept, its
        state says `refused: address in use`, and it is retried."""
        via = via or LOCAL
        try:
            rule = make_rule(direction, text, via, source="runtime", listen=self.config.proxy.listen,
                             created=utc_iso(), who=who)
        except RuleError as exc:
            raise UsageError(str(exc)) from None
        if (why := via_problem(via, self.config.units)) is not None:
            raise UsageError(f"{rule.text}: via {why}")
        existing = next((r for r in self.all() if r.key == rule.key), None)
        if existing is not None:
            raise UsageError(f"{rule.name} is already a rule ({origin_words(existing, self.config.source)})")
        for late, other in clashes([*self.all(), rule]):
            if late is rule:
                raise UsageError(f"{rule.name}: port {rule.port} clashes with {describe_place(other)} "
                                 f"({origin_words(other, self.config.source)})")
        if (what := hub_clash(rule, self.config.hub)) is not None:
            raise UsageError(f"{rule.name}: port {rule.port} is {what}")
        if len(self.runtime_rules) >= MAX_RUNTIME_RULES:
            raise UsageError(f"at most {MAX_RUNTIME_RULES} rules may be added at run time")
        self.store.add_rule({"direction": rule.direction, "rule": rule.text, "via": rule.via,
                             "created": rule.created, "who": who})
        self.runtime_rules.append(rule)
        self._log(f"rule {rule.name} added by {who}")
        await self._apply()
        self._on_change(rule.id, "added")
        return self.status(rule)

    async def remove(self, direction: str, text: str, via: str | None, who: str = "someone") -> RuleStatus:
        """Remove a rule added at run time; config, gateway and forward rules are refused (exit 2): they change
        in the file. Connections in flight finish; the listener closes when its last rule goes."""
        rule = self.find(direction, text, via)
        if (why := removal_refused(rule.name, rule, self.config.source)) is not None:
            raise UsageError(why)
        self.store.forget_rule(rule.direction, rule.text, rule.via)
        self.runtime_rules = [r for r in self.runtime_rules if r.key != rule.key]
        self._log(f"rule {rule.name} removed by {who}")
        await self._apply()
        self._on_change(rule.id, "removed")
        return rule_status(rule, RuleState.STOPPED, f"removed by {who}")

    async def reload(self, config: Config) -> list[str]:
        """Take a new config's rules and gateways (runtime rules stay); what changed, one phrase each (a gateway's
        rules in one)."""
        before = {r.key: r for r in self.active()}
        self.config = config
        self.runtime_rules = self._load()
        after = {r.key: r for r in self.active()}
        gateways: dict[tuple[str, str], int] = {}
        changes = []
        for verb, keys, rules in (("removed", before.keys() - after.keys(), before),
                                  ("added", after.keys() - before.keys(), after)):
            for key in sorted(keys):
                rule = rules[key]
                if rule.source == "gateway":
                    gateways[(rule.origin, verb)] = gateways.get((rule.origin, verb), 0) + 1
                else:
                    changes.append(f"rule {rule.name} {verb}")
                self._on_change(rule.id, verb)
        changes += [f"gateway {name}: {counted(n, 'rule')} {verb}" for (name, verb), n in sorted(gateways.items())]
        await self._apply()
        return changes

    async def _apply(self) -> None:
        if self.runtime is not None:
            await self.runtime.apply(self.active(), self.config.proxy)

    # ------------------------------------------------------------------ gateway plans

    def gateway(self, name: str) -> GatewayPlan:
        plan = self.config.proxy.gateway(name)
        if plan is None:
            names = [g.name for g in self.config.proxy.gateways]
            raise UsageError(f"no gateway named {shown(name)} in {self.config.source}{closest(name, names)}")
        return plan

    def gateway_show(self, name: str) -> GatewayStatus:
        """The plan port by port (port -> host:service, its state), and what clashes with it: other rules, the
        hub's ports, and ports another program holds (with no daemon: probed; with one: its listeners' state)."""
        plan = self.gateway(name)
        ours = [Rule("ingress", "tcp", port, host, service, plan.via, source="gateway", origin=plan.name,
                     listen=plan.listen) for port, host, service in plan.entries()]
        others = [r for r in self.all() if not (r.source == "gateway" and r.origin == plan.name)]
        clash_of = {id(late): f"clashes with {describe_place(other)}"
                    for late, other in clashes([*others, *ours]) if late.group[-1] == ("gateway", plan.name)}
        ports = []
        for rule in ours:
            clash = clash_of.get(id(rule)) or (f"is {what}" if (what := hub_clash(rule, self.config.hub)) else None)
            if self.runtime is not None and not plan.problems():
                status = self.runtime.status(rule)
                state, reason = status.state, status.reason
            else:
                state, reason = RuleState.STOPPED, plan.problems()[0] if plan.problems() else NOT_RUNNING
                if rule.here and rule.port <= 65535 and (busy := port_in_use(rule.listen, rule.port)):
                    clash = clash or f"port {rule.port} on {rule.listen}: {busy} (another program holds it)"
            ports.append(GatewayPort(rule.port, rule.host, rule.dest_port, state, reason, clash))
        clash_lines = [f"{p.port} -> {p.host}:{p.service}: {p.clash}" for p in ports if p.clash]
        in_use = [p for p in ports if p.state is RuleState.REFUSED and p.reason and "address in use" in p.reason]
        clash_lines += [f"{p.port} -> {p.host}:{p.service}: {p.reason} (another program holds it)" for p in in_use]
        return GatewayStatus(plan.name, plan.subnet, plan.base, list(plan.services), plan.hosts_text, plan.via,
                             plan.listen, plan.formula, ports, clash_lines, plan.problems())

    def gateway_export(self, name: str, interface: str, source: str) -> list[str]:
        """The plan as the seed's iptables script (DNAT and SNAT per port, a block per host)."""
        plan = self.gateway(name)
        if plan.problems():
            raise UsageError(f"gateway {name}: {plan.problems()[0]}")
        if not INTERFACE_RE.match(interface):
            raise UsageError(f"--interface must be a network interface's name, such as eth0 or ens3, got "
                             f"{shown(interface)}")
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            raise UsageError(f"--source must be the gateway's address on {plan.subnet}, such as "
                             f"{ipaddress.ip_network(plan.subnet).network_address + 10}, got {shown(source)}") from None
        if address.version != ipaddress.ip_network(plan.subnet).version:
            raise UsageError(f"--source {source} is not of the subnet's family ({plan.subnet})")
        return plan.iptables(interface, str(address))


def origin_words(rule: Rule | RuleStatus, source: str) -> str:
    """Where a rule comes from, in words: 'in console.yaml at proxy.ingress[0]' (`source`: the config file's name;
    the console, which reads a RuleStatus, says 'the config')."""
    if rule.source == "runtime":
        return f"added at run time{f' by {rule.who}' if rule.who else ''}" + (
            f" at {rule.created}" if rule.created else "")
    if rule.source == "gateway":
        return f"gateway {rule.origin}'s in {source}"
    if rule.source == "forward":
        return f"unit {rule.via}'s forward {rule.origin} in {source}"
    return f"in {source} at {rule.origin}"


def removal_refused(name: str, rule: Rule | RuleStatus, source: str) -> str | None:
    """Why `proxy remove` refuses a rule (it is the config's, a gateway plan's port, a unit's forward: they change in
    the file), in the words `proxy remove` and the console both say; None for a rule added at run time."""
    if rule.source == "runtime":
        return None
    return (f"{name} is {origin_words(rule, source)}: rules of the config cannot be removed at run time (edit the "
            "file, then reload)")

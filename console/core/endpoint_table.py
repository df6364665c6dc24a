"""The endpoints the daemon knows, merged: the config's (read-only at run time) and those added at run time (kept in
the store, surviving restarts), with the scope associated at run time and each one's last check.

The control operations `endpoints.*` run against an EndpointTable: the daemon's (the engine holds one and
publishes `EndpointChanged` for every change), or, with no daemon, one made on the store by the command line.

A runtime endpoint may not take a config endpoint's name. If the config later gains one of that name (a reload, a
restart), the config's wins and the runtime one is hidden: said once in the log, kept in the store, back when the
config drops the name. A config endpoint's scope may grow at run time (`associate`): those additions live in the
store; what the config says is changed only in the file.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from console.core.choices import HOST_KEY_POLICIES
from console.core.clock import utc_iso
from console.core.config import Config, EndpointConfig
from console.core.endpoints import (MAX_SCOPE, SCOPE_SOURCES, Endpoint, EndpointUsers, UsesEndpoint, closest,
                                    comment_problem, config_endpoint_id, endpoint_users, host_problem, login_problem,
                                    name_problem, overlapping, parse_network, route)
from console.core.errors import EXIT_FAILED, EXIT_USAGE, ConsoleError, UsageError
from console.core.states import EndpointState
from console.core.status import EndpointCheck, EndpointRoute, EndpointStatus, ScopeEntry
from console.core.store import Store

log = logging.getLogger("console.endpoints")

Changed = Callable[[str, str], None]   # (endpoint, change): "added", "removed", "scope", "checked", "changed" ...


class EndpointTable:
    def __init__(self, config: Config, store: Store, *, on_change: Changed | None = None,
                 log_line: Callable[[str], None] | None = None,
                 rules: Callable[[], Iterable[UsesEndpoint]] = tuple) -> None:
        """`rules`: the proxy rules, each with the endpoint it goes through (who uses an endpoint besides units)."""
        self.config = config
        self.store = store
        self.rules = rules
        self._on_change = on_change or (lambda endpoint, change: None)
        self._log = log_line or (lambda text: log.info("%s", text))
        self._said: set[str] = set()       # lines said once per process: hidden and unreadable runtime records
        self.endpoints: dict[str, Endpoint] = self._load()

    # ------------------------------------------------------------------ loading

    def _load(self) -> dict[str, Endpoint]:
        scopes = self.store.endpoint_scopes()
        merged = {name: self._scoped(Endpoint(cfg, "config", config_endpoint_id(name)), scopes)
                  for name, cfg in self.config.endpoints.items()}
        for record in self.store.endpoint_records():
            endpoint = self._from_record(record)
            if endpoint is None:
                continue
            if endpoint.name in merged:
                self._say_once(f"runtime endpoint {endpoint.name} ({endpoint.id}, added {endpoint.created}) is hidden: "
                               f"{self.config.source} defines an endpoint of that name, which wins; it is kept and "
                               "comes back if the config drops the name")
                continue
            merged[endpoint.name] = self._scoped(endpoint, scopes)
        return merged

    def _from_record(self, record: dict[str, Any]) -> Endpoint | None:
        """A runtime endpoint from its store record, checked as `add` checks; None (said once) when it does not."""
        name = record["name"]
        problem = name_problem(name) or host_problem(record["host"]) or login_problem(record["username"])
        if not 1 <= record["port"] <= 65535:
            problem = problem or f"port {record['port']} is not 1-65535"
        comment, subnet = record.get("comment"), record.get("subnet")
        if comment is not None:
            problem = problem or (comment_problem(comment) if isinstance(comment, str) else "its comment is not text")
        if subnet is not None and parse_network(subnet)[0] is None:
            problem = problem or f"its subnet {subnet!r} is not a network"
        policy = record.get("host_key_policy") or "strict"
        if policy not in HOST_KEY_POLICIES:
            problem = problem or f"its host key policy {policy!r} is not one of {', '.join(HOST_KEY_POLICIES)}"
        if not isinstance(record.get("host_key"), str | None):
            problem = problem or "its host key is not text"
        if problem is not None:
            self._say_once(f"runtime endpoint record {name!r} in the store is ignored: {problem}")
            return None
        config = EndpointConfig(host=record["host"], port=record["port"], host_key_policy=policy,
                                host_key=record.get("host_key"), name=name, username=record["username"],
                                comment=comment, subnet=subnet)
        return Endpoint(config, "runtime", record["id"], record["created"], record["updated"])

    def _scoped(self, endpoint: Endpoint, scopes: dict[str, dict[str, Any]]) -> Endpoint:
        """The endpoint with what was associated with it at run time (kept in the store)."""
        row = scopes.get(endpoint.name)
        if row is None:
            return endpoint
        subnets = tuple(s for s in row["subnets"] if isinstance(s, str) and parse_network(s)[0] is not None)
        vpcs = tuple(v for v in row["vpcs"] if isinstance(v, str))
        updated = max(filter(None, (endpoint.updated, row["updated"])))
        return replace(endpoint, added_subnets=subnets, added_vpcs=vpcs, updated=updated)

    def _say_once(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            self._log(text)

    def reload(self, config: Config) -> list[str]:
        """Take a new config's endpoints; what changed, one phrase each. A stored check of an endpoint whose host,
        port or user changed is dropped (it said nothing about the new one)."""
        old, self.config = self.endpoints, config
        self.endpoints = self._load()
        changes = []
        for name in [*old, *(n for n in self.endpoints if n not in old)]:
            before, after = old.get(name), self.endpoints.get(name)
            if before == after:
                continue
            if after is None:
                change, text = "removed", f"endpoint {name} removed"
            elif before is None:
                change, text = "added", f"endpoint {name} added ({after.config.username}@{after.config.address})"
            else:
                change, text = "changed", f"endpoint {name} changed"
                if (before.config.link, before.config.username) != (after.config.link, after.config.username):
                    self.store.forget_endpoint_check(name)
                    text += f" (now {after.config.username}@{after.config.address}; its last check dropped)"
            changes.append(text)
            self._on_change(name, change)
        return changes

    # ------------------------------------------------------------------ reading

    def endpoint(self, name: str) -> Endpoint:
        """The endpoint `name` (its `config` is what the login check and the set-up take); UsageError if unknown."""
        if name not in self.endpoints:
            raise UsageError(f"no endpoint named {name!r}{closest(name, self.endpoints)}")
        return self.endpoints[name]

    def users(self, name: str) -> EndpointUsers:
        """Who uses the endpoint: the units that name it, and the rules that go through it."""
        return endpoint_users(name, self.config.units.values(), self.rules())

    def status(self, name: str) -> EndpointStatus:
        """One endpoint as `endpoints show` answers (UsageError if unknown)."""
        return self._status(self.endpoint(name), self.store.endpoint_check(name))

    def _status(self, endpoint: Endpoint, check: EndpointCheck | None) -> EndpointStatus:
        name = endpoint.name
        cfg, users = endpoint.config, self.users(name)
        scope = [ScopeEntry("subnet", net, how, [net]) for net, how in endpoint.subnets()]
        scope += [ScopeEntry("vpc", vpc, how, list(self.config.vpcs.get(vpc, ()))) for vpc, how in endpoint.vpcs()]
        return EndpointStatus(
            id=endpoint.id, name=name, source=endpoint.source,
            state=check.state if check is not None else EndpointState.UNCHECKED,
            host=cfg.host, port=cfg.port, username=cfg.username, host_key_policy=cfg.host_key_policy,
            comment=cfg.comment, units=list(users.units), rules=list(users.rules), subnet=cfg.subnet, scope=scope,
            created=endpoint.created, updated=endpoint.updated, last_check=check)

    def list(self) -> list[EndpointStatus]:
        """Every endpoint: the config's in its order, then the runtime ones by name."""
        checks = self.store.endpoint_checks()
        order = [n for n, e in self.endpoints.items() if e.source == "config"] + \
            sorted(n for n, e in self.endpoints.items() if e.source != "config")
        return [self._status(self.endpoints[name], checks.get(name)) for name in order]

    def route(self, address: str) -> EndpointRoute:
        try:
            return route(address, self.endpoints.values(), self.config.vpcs)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    # ------------------------------------------------------------------ changing

    def add(self, name: str, host: str, port: int = 22, username: str | None = None, comment: str | None = None,
            subnet: str | None = None, who: str = "someone") -> EndpointStatus:
        """Add a runtime endpoint, kept in the store."""
        username = username or "root"
        for what, problem in (("name", name_problem(name)), ("host", host_problem(host)),
                              ("port", None if 1 <= port <= 65535 else f"must be 1-65535, got {port}"),
                              ("user", login_problem(username)),
                              ("comment", comment_problem(comment) if comment is not None else None)):
            if problem is not None:
                raise UsageError(f"endpoint {what} {problem}")
        network = self._network(subnet, "--subnet") if subnet is not None else None
        if name in self.endpoints:
            existing = self.endpoints[name]
            if existing.source == "config":
                raise UsageError(f"{name} is an endpoint of {self.config.source}: runtime endpoints take other names")
            raise UsageError(f"endpoint {name} exists already (added {existing.created}): remove it first")
        now = utc_iso()
        record = {"id": "ep-" + secrets.token_hex(4), "name": name, "host": host, "port": port, "username": username,
                  "host_key_policy": "strict", "host_key": None, "comment": comment, "subnet": network,
                  "created": now, "updated": now}
        self.store.add_endpoint(record)
        self.endpoints[name] = self._from_record(record)
        self._log(f"{name} added by {who}: {username}@{self.endpoints[name].config.address}")
        self._on_change(name, "added")
        return self.status(name)

    def remove(self, names: list[str], who: str = "someone") -> list[str]:
        """Remove runtime endpoints, all or none: refused, naming each endpoint and why, when any is unknown, in
        the config, or used by units or rules."""
        names = list(dict.fromkeys(names))
        if not names:
            raise UsageError("name the endpoints to remove")
        refusals, usage = [], False
        for name in names:
            endpoint = self.endpoints.get(name)
            users = self.users(name) if endpoint is not None else EndpointUsers()
            used = f", used by {users.describe()}" if users else ""
            if endpoint is None:
                refusals.append(f"{name}: no such endpoint{closest(name, self.endpoints)}")
                usage = True
            elif endpoint.source == "config":
                refusals.append(f"{name} is in {self.config.source} (config endpoints are read-only at run time: "
                                f"edit the file, then reload){used}")
                usage = True
            elif users:
                refusals.append(f"{name} is used by {users.describe()}")
        if refusals:
            raise ConsoleError("nothing removed: " + "; ".join(refusals),
                               exit_code=EXIT_USAGE if usage else EXIT_FAILED)
        for name in names:
            self.store.forget_endpoint(name)
            del self.endpoints[name]
            self._log(f"{name} removed by {who}")
            self._on_change(name, "removed")
        return names

    def associate(self, name: str, vpcs: list[str], subnets: list[str], who: str = "someone") -> dict[str, Any]:
        """Add VPCs and subnets to an endpoint's scope (kept in the store, for config endpoints too)."""
        endpoint = self.endpoint(name)
        wanted_subnets, wanted_vpcs = self._scope_request(vpcs, subnets, "associate")
        for vpc in wanted_vpcs:
            if vpc not in self.config.vpcs:
                raise UsageError(f"no VPC named {vpc!r}{closest(vpc, self.config.vpcs)}: VPCs are named in the "
                                 "config's vpcs: section")
        have_subnets, have_vpcs = dict(endpoint.subnets()), dict(endpoint.vpcs())
        added, already, notes = [], [], []
        new_subnets, new_vpcs = list(endpoint.added_subnets), list(endpoint.added_vpcs)
        for kind, wanted, have, new in (("subnet", wanted_subnets, have_subnets, new_subnets),
                                        ("VPC", wanted_vpcs, have_vpcs, new_vpcs)):
            for item in wanted:
                if item in have:
                    already.append(f"{kind} {item} ({SCOPE_SOURCES[have[item]]})")
                    continue
                new.append(item)
                added.append(f"{kind} {item}")
                others = overlapping(item, self.endpoints.values(), but=name) if kind == "subnet" else []
                if others:
                    notes.append(f"subnet {item} is in the scope of {', '.join(others)} too: `endpoints route` "
                                 "calls addresses there a tie until one of them lets it go")
        if len(new_subnets) > MAX_SCOPE or len(new_vpcs) > MAX_SCOPE:
            raise UsageError(f"an endpoint's scope holds at most {MAX_SCOPE} subnets and {MAX_SCOPE} VPCs added at "
                             "run time")
        if added:
            self._set_scope(endpoint, new_subnets, new_vpcs, f"associated with {', '.join(added)} by {who}")
        return {"endpoint": self.status(name), "added": added, "already": already, "notes": notes}

    def unassociate(self, name: str, vpcs: list[str], subnets: list[str], who: str = "someone") -> dict[str, Any]:
        """Take VPCs and subnets associated at run time out of an endpoint's scope; those the config gives it are
        refused (nothing is changed then), those not associated are said."""
        endpoint = self.endpoint(name)
        wanted_subnets, wanted_vpcs = self._scope_request(vpcs, subnets, "unassociate")
        have_subnets, have_vpcs = dict(endpoint.subnets()), dict(endpoint.vpcs())
        fixed = [f"subnet {net}" + (" (its own subnet)" if have_subnets[net] == "own" else "")
                 for net in wanted_subnets if have_subnets.get(net) in ("own", "config")]
        fixed += [f"VPC {vpc}" for vpc in wanted_vpcs if have_vpcs.get(vpc) == "config"]
        if fixed:
            raise UsageError(f"nothing unassociated: {', '.join(fixed)} of {name} {'is' if len(fixed) == 1 else 'are'} "
                             f"set in {self.config.source}: change the file, then reload")
        removed = [f"subnet {n}" for n in wanted_subnets if n in endpoint.added_subnets] + \
                  [f"VPC {v}" for v in wanted_vpcs if v in endpoint.added_vpcs]
        missing = [f"subnet {n}" for n in wanted_subnets if n not in have_subnets] + \
                  [f"VPC {v}" for v in wanted_vpcs if v not in have_vpcs]
        if removed:
            self._set_scope(endpoint, [n for n in endpoint.added_subnets if n not in wanted_subnets],
                            [v for v in endpoint.added_vpcs if v not in wanted_vpcs],
                            f"unassociated from {', '.join(removed)} by {who}")
        return {"endpoint": self.status(name), "removed": removed, "not_associated": missing}

    def record_check(self, check: EndpointCheck) -> None:
        """Keep an endpoint's latest login check (its state until the next one) and say it changed."""
        if check.endpoint not in self.endpoints:
            return
        self.store.set_endpoint_check(check)
        self._on_change(check.endpoint, "checked")

    # ------------------------------------------------------------------ helpers

    def _network(self, text: str, option: str) -> str:
        network, why = parse_network(text)
        if network is None:
            raise UsageError(f"{option}: {why}")
        return str(network)

    def _scope_request(self, vpcs: list[str], subnets: list[str], verb: str) -> tuple[list[str], list[str]]:
        if not vpcs and not subnets:
            raise UsageError(f"{verb} what: give --vpc NAME or --subnet CIDR (either may be repeated)")
        return (list(dict.fromkeys(self._network(s, "--subnet") for s in subnets)), list(dict.fromkeys(vpcs)))

    def _set_scope(self, endpoint: Endpoint, subnets: list[str], vpcs: list[str], what: str) -> None:
        updated = self.store.set_endpoint_scope(endpoint.name, subnets, vpcs)
        self.endpoints[endpoint.name] = replace(endpoint, added_subnets=tuple(subnets), added_vpcs=tuple(vpcs),
                                                updated=updated)
        self._log(f"{endpoint.name} {what}")
        self._on_change(endpoint.name, "scope")

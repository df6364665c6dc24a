"""The engine owns everything that runs: unit workers, the store, the tunnel log, the operation log and the
event bus.

The console and the CLI see it only through snapshots and events (the control socket); they keep no
tunnel state of their own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import asyncssh

from console.core.announce import is_hub
from console.core.config import Config, HubConfig, UnitConfig
from console.core.errors import OperationFailed, UsageError, os_reason
from console.core.endpoint_table import EndpointTable
from console.core.events import ClientChanged, EndpointChanged, EventBus, LogLine, Reloaded, RuleChanged
from console.core.keys import fingerprint
from console.core.known_hosts import KnownHosts, Verdict, check_host_key, fetch_host_key, host_key_algorithms
from console.core.oplog import OpLog, Recorder
from console.core.paths import StatePaths
from console.core.rule_table import RuleTable, pick_by_scope
from console.core.rules import Carrier, Rule, ScopePick
from console.core.status import Status
from console.core.store import Store
from console.core.syslog import Syslog, severity_of
from console.core.tunnel_log import TunnelLog
from console.core.words import counted
from console.proxy.runtime import ProxyRuntime
from console.tunnel.carrier import UnitCarrier
from console.tunnel.endpoint_logins import EndpointLogins
from console.tunnel.transports import new_worker
from console.tunnel.worker import UnitWorker, WorkerEnv

log = logging.getLogger("console.engine")
# unit states that say its login fails: its endpoint is checked again when a unit enters one, or leaves it for up
LOGIN_TROUBLE = {"auth-failed", "host-key-unknown", "host-key-mismatch"}
STOP_DEADLINE = 1.5  # seconds every unit gets to close cleanly on shutdown (SIGTERM must finish within 2 s)


class Engine:
    def __init__(self, config: Config, paths: StatePaths, *, echo_log: bool = False) -> None:
        self.config = config
        self.paths = paths.prepare()
        self.bus = EventBus()
        self.store = Store(paths.database)
        self.syslog = Syslog(config.log.syslog_target)
        self.oplog = OpLog(paths.oplog, keep_days=config.oplog.keep_days, max_rows=config.oplog.max_rows,
                           daemon=True)
        # The one way an operation is recorded (console/control/operations.perform, the daemon's own entries).
        self.recorder = Recorder(self.oplog, publish=self.bus.publish, syslog=self.syslog,
                                 background=self._in_background)
        self._background: set[asyncio.Future] = set()
        self._echo = echo_log
        self.tunnel_log = TunnelLog(paths.tunnel_log, config.log.max_bytes, config.log.backups,
                                    on_line=self._on_log_line)
        self.known_hosts = KnownHosts(paths.known_hosts)
        self.env = WorkerEnv(paths, self.bus, self.tunnel_log, self.store, self.known_hosts,
                             on_state=self._unit_state_changed)
        self.workers: dict[str, UnitWorker] = {}
        self.hub = None        # console.hub.server.Hub when the config has a hub: section
        self.clients = None    # console.hub.admin.ClientsAdmin for it
        # the endpoints, the config's and those added at run time; every change is an EndpointChanged event
        # (a rule via a unit uses that unit's endpoint, a rule via scope the one its destination routes to now:
        # `endpoints show` lists it, `endpoints remove` is refused)
        self.endpoints = EndpointTable(config, self.store, on_change=self._endpoint_changed,
                                       log_line=lambda text: self.tunnel_log.write("endpoints", text),
                                       rules=lambda: self.rules.endpoint_uses(self._route))
        # what logs in to them: the checks (at start, every interval, on a unit's auth trouble), the set-ups
        self.logins = EndpointLogins(self.endpoints, paths, self.known_hosts,
                                     log_line=lambda text: self.tunnel_log.write("endpoints", text),
                                     kick=self._kick_units)
        # each endpoint's problem as its units' status says it (its last check, while unavailable)
        self._endpoint_problems = {name: check.problem for name, check in self.store.endpoint_checks().items()}
        self._endpoint_checks: asyncio.Task | None = None
        # the proxy rules: the config's, the gateways', those added at run time (the store), the units' forwards
        # shown as ingress rules. Rules via a unit travel through `carrier` (console/core/rules.py: Carrier), the
        # units' connections (console/tunnel/carrier.py: the live dict of workers, so a reloaded unit is found).
        self.carrier: Carrier = UnitCarrier(self.workers)
        self.proxy = ProxyRuntime(carrier=self.carrier, pick=self._pick_by_scope, on_change=self._rule_changed,
                                  log_line=lambda text: self.tunnel_log.write("proxy", text))
        self._rule_uses: dict[str, str] = {}   # rule -> the endpoint it uses, as last told (_rule_uses_changed)
        self._rule_uses_due = False
        self.rules = RuleTable(config, self.store, runtime=self.proxy, forwards=self._forwards,
                               on_change=self._rule_changed, log_line=lambda text: self.tunnel_log.write("proxy", text))
        self._rule_uses = {use.name: use.endpoint for use in self.rules.endpoint_uses(self._route)}

    def _route(self, address: str) -> str | None:
        """The endpoint that serves an address now (none, or a tie: None)."""
        try:
            return self.endpoints.route(address).endpoint
        except UsageError:   # not an address (a rule via scope has one; a config being loaded may not)
            return None

    def _pick_by_scope(self, rule: Rule) -> ScopePick:
        """The unit a rule via scope travels through now: its destination's endpoint's first connected unit."""
        return pick_by_scope(self.endpoints.route(rule.host),
                             [(u.name, u.endpoint) for u in self.config.units.values()], self.carrier.waiting)

    def _rule_changed(self, rule: str, change: str) -> None:
        self.bus.publish(RuleChanged(rule, change))
        if change in ("added", "removed") and not self._rule_uses_due:
            self._rule_uses_due = True   # once for a whole batch (a gateway plan's hundreds of rules on reload)
            try:
                asyncio.get_running_loop().call_soon(self._rule_uses_changed)
            except RuntimeError:
                self._rule_uses_changed()

    def _rule_uses_changed(self) -> None:
        """Rules were added or removed: an EndpointChanged ("rules") for each endpoint whose rules are not the same
        now (`endpoints show` lists them; the console's Endpoints screen follows the event)."""
        self._rule_uses_due = False
        now = {use.name: use.endpoint for use in self.rules.endpoint_uses(self._route)}
        touched = {endpoint for name, endpoint in now.items() if self._rule_uses.get(name) != endpoint} | \
                  {endpoint for name, endpoint in self._rule_uses.items() if now.get(name) != endpoint}
        self._rule_uses = now
        for endpoint in sorted(touched):
            self.bus.publish(EndpointChanged(endpoint, "rules", self._endpoint_problems.get(endpoint)))

    def _forwards(self) -> list:
        """Every unit's forwards now, (unit, ForwardStatus) each: the rule table shows them as ingress rules."""
        return [(w.name, fr.status()) for w in self.workers.values() for fr in w.forwards.values()]

    def _on_log_line(self, line: str) -> None:
        text = line.partition(" ")[2]  # the line without its time stamp: syslog, the journal add their own
        if self._echo:
            log.info("%s", text)
        self.syslog.send(text, severity_of(text))
        self.bus.publish(LogLine(line))

    def _in_background(self, work) -> None:
        """Run blocking work (the operation log's maintenance) in a thread, held until it is done."""
        future = asyncio.get_running_loop().run_in_executor(None, work)
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        if self.config.hub is not None:
            await self._start_hub()
        for unit in self.config.units.values():
            self._add_worker(unit)
        rules = self.rules.active()
        await self.proxy.apply(rules, self.config.proxy)
        units = f"{counted(len(self.workers), 'unit')}: {', '.join(self.workers) or 'none'}"
        self.tunnel_log.write("engine", f"up with {units}" + (f"; {counted(len(rules), 'proxy rule')}" if rules else ""))
        for notice in self.store.notices:  # a store recovered from its last good copy, or started empty
            self.tunnel_log.write("engine", notice)
        self._migrate_operations()
        self.recorder.maintain()  # retention and a checkpoint, in a thread
        self._start_endpoint_checks()

    # ------------------------------------------------------------------ the endpoints' checks

    def _start_endpoint_checks(self) -> None:
        if self._endpoint_checks is not None:
            self._endpoint_checks.cancel()
        self._endpoint_checks = asyncio.create_task(self._check_endpoints(), name="endpoint-checks")

    async def _check_endpoints(self) -> None:
        """Every endpoint's login check now, then every tunnel.endpoint_check_interval seconds (0: none), each
        round starting that long after the last one ended, so rounds never overlap."""
        while (interval := self.config.tunnel.endpoint_check_interval) > 0:
            await self.logins.check_all()
            await asyncio.sleep(interval)

    def _unit_state_changed(self, unit: str, old: str, new: str) -> None:
        """The proxy rules via the unit hear of it (those waiting for it try at once when it is up). A unit that
        starts failing to log in (auth-failed, host-key-*), or logs in again after that: its endpoint's check is
        out of date."""
        self.proxy.unit_changed(unit, new in ("up", "degraded"))
        if new in LOGIN_TROUBLE or (old in LOGIN_TROUBLE and new in ("up", "degraded")):
            worker = self.workers.get(unit)
            endpoint = worker.config.endpoint if worker is not None else None
            if endpoint is not None:
                self.logins.check_soon([endpoint], f"unit {unit} {new}")

    def _endpoint_changed(self, name: str, change: str) -> None:
        """An EndpointChanged event, with what the endpoint's units' status now says of it."""
        if change in ("checked", "changed", "removed"):
            check = self.store.endpoint_check(name)
            self._endpoint_problems[name] = check.problem if check is not None else None
        self.bus.publish(EndpointChanged(name, change, self._endpoint_problems.get(name)))
        if change != "checked":
            self.proxy.scope_changed()   # rules via scope pick their endpoint again
        if change in ("added", "changed"):   # `endpoints add`, or a reload that adds or changes it
            self.logins.check_soon([name], f"endpoint {name} {change}")

    def _kick_units(self, units: list[str], reason: str) -> None:
        for unit in units:
            if unit in self.workers:
                self.kick(unit, reason, reason)

    def _migrate_operations(self) -> None:
        """The operation records an older version kept in the store go to the operation log, once."""
        if "operations" not in self.store.db.tables():
            return
        try:
            moved = self.oplog.migrate(self.store.old_operations())
            self.store.drop_old_operations()
        except OperationFailed as exc:
            self.tunnel_log.write("engine", f"the store's operation records stay there for now: {exc.message}")
            return
        self.tunnel_log.write("engine", f"operation log: {counted(moved, 'record')} of the store's operations moved "
                                        f"to {self.paths.oplog.name}")

    async def _start_hub(self) -> None:
        from console.core.keys import load_or_create_key
        from console.hub.admin import ClientsAdmin
        from console.hub.registry import Registry
        from console.hub.server import Hub, HubSettings

        settings = self.config.hub
        registry = Registry(self.store, (settings.port_low, settings.port_high), settings.default_quota)
        key = await asyncio.to_thread(load_or_create_key, self.paths.hub_key, "sop-console-hub")
        self.hub = Hub(HubSettings.from_config(settings), registry, key,
                       on_change=lambda client_id, change: self.bus.publish(ClientChanged(client_id, change)),
                       log_event=lambda text: self.tunnel_log.write("hub", text))
        try:
            await self.hub.start()
        except OSError as exc:
            raise OperationFailed(f"the hub cannot listen on {settings.listen_host}:{settings.listen_port}: "
                                  f"{os_reason(exc)}") from None
        self.clients = ClientsAdmin(registry, self.hub)
        self.tunnel_log.write("hub", f"listening on {settings.listen_host}:{self.hub.port}, client ports "
                                     f"{settings.port_low}-{settings.port_high} on {settings.bind}")

    async def _reload_hub(self, old: HubConfig | None, new: HubConfig | None) -> list[str]:
        """Apply a changed hub: section. Adding or removing the hub needs a restart; the rest applies live."""
        from console.hub.server import HubSettings

        if self.hub is None or self.clients is None or new is None:
            self.config = dataclasses.replace(self.config, hub=old)
            return [f"hub {'added' if new else 'removed'}: restart the daemon to apply it"]
        try:
            changes = await self.hub.apply(HubSettings.from_config(new))
        except OSError as exc:
            self.config = dataclasses.replace(self.config, hub=old)
            return [f"hub settings not applied: cannot listen on {new.listen_host}:{new.listen_port}: "
                    f"{os_reason(exc)}"]
        return changes + self.clients.registry.retune((new.port_low, new.port_high), new.default_quota)

    def _add_worker(self, unit: UnitConfig) -> UnitWorker:
        worker = new_worker(unit, self.config.tunnel, self.env)
        self.workers[unit.name] = worker
        if self.store.desired(unit.name) == "started":
            worker.start()
        else:
            worker.log_event("kept stopped (stopped by an operator)")
        return worker

    async def shutdown(self) -> None:
        if self._endpoint_checks is not None:
            self._endpoint_checks.cancel()
        await self.logins.close()
        workers = list(self.workers.values())
        if workers:
            await asyncio.wait([asyncio.create_task(w.stop("Stopped: daemon shutting down")) for w in workers],
                               timeout=STOP_DEADLINE)
        await self.proxy.close()
        if self.hub is not None:
            await self.hub.close()
        self.tunnel_log.write("engine", "stopped")
        self.tunnel_log.close()
        if self._background:
            await asyncio.wait(list(self._background), timeout=STOP_DEADLINE)
        self.recorder.close()
        self.store.close()

    async def reload(self, config: Config) -> list[str]:
        """Apply a new config; unchanged units and forwards keep running. Returns what changed."""
        changes = []
        old = self.config
        self.config = config
        self.syslog.configure(config.log.syslog_target)
        self.oplog.keep_days, self.oplog.max_rows = config.oplog.keep_days, config.oplog.max_rows
        if old.hub != config.hub:
            changes.extend(await self._reload_hub(old.hub, config.hub))
        changes.extend(self.endpoints.reload(config))
        if old.tunnel.endpoint_check_interval != config.tunnel.endpoint_check_interval:
            self._start_endpoint_checks()   # the new pace, from a round now
        changes.extend(await self.rules.reload(config))
        self.proxy.scope_changed()
        for name in list(self.workers):
            if name not in config.units:
                await self.workers.pop(name).stop("Stopped: removed from the configuration")
                changes.append(f"{name} removed")
        for name, unit in config.units.items():
            worker = self.workers.get(name)
            if worker is None:
                self._add_worker(unit)
                changes.append(f"{name} added")
                continue
            # its endpoint's host, port, host key or user changed (not a comment or the scope): reconnect
            same_link = (worker.config.server.link, worker.config.username) == (unit.server.link, unit.username) \
                and old.tunnel.link == config.tunnel.link
            if not same_link:
                was_running = worker.running
                await worker.stop("Stopped: server, user or tunnel settings changed")
                new = new_worker(unit, config.tunnel, self.env)
                self.workers[name] = new
                if was_running:
                    new.start()
                changes.append(f"{name} reconnecting with new settings")
            else:
                if worker.config.forwards != unit.forwards:
                    await worker.update_forwards(unit.forwards)
                    changes.append(f"{name} forwards updated")
                worker.config = unit  # the same link: its endpoint's name or comment may be new
        summary = "; ".join(changes) or "nothing changed"
        self.tunnel_log.write("engine", f"configuration reloaded: {summary}")
        self.bus.publish(Reloaded(summary))
        return changes

    # ------------------------------------------------------------------ operator requests

    def worker(self, name: str | None) -> list[UnitWorker]:
        if name is None:
            return list(self.workers.values())
        if name not in self.workers:
            known = ", ".join(self.workers) or "none configured"
            raise UsageError(f"no unit named {name!r} (units: {known})")
        return [self.workers[name]]

    def _desire(self, name: str | None, desired: str) -> list[UnitWorker]:
        """The units an operator's start, stop or restart is for, with the wish kept. (The operation log records
        the operation itself: console/control/operations.perform.)"""
        workers = self.worker(name)
        for worker in workers:
            self.store.set_desired(worker.name, desired)
        return workers

    async def start_units(self, name: str | None, who: str) -> list[str]:
        workers = self._desire(name, "started")
        for worker in workers:
            if not worker.running:
                worker.log_event(f"start requested by {who}")
                worker.start()
            else:
                worker.kick()
        return [w.name for w in workers]

    async def stop_units(self, name: str | None, who: str) -> list[str]:
        workers = self._desire(name, "stopped")
        for worker in workers:
            await worker.stop(f"Stopped by {who}")
        return [w.name for w in workers]

    async def restart_units(self, name: str | None, who: str) -> list[str]:
        workers = self._desire(name, "started")
        for worker in workers:
            await worker.stop(f"Stopped for a restart by {who}")
            worker.start()
        return [w.name for w in workers]

    def kick(self, name: str | None, who: str, reason: str) -> list[str]:
        done = []
        for worker in self.worker(name):
            worker.log_event(f"retrying now: {reason}")
            worker.kick()
            done.append(worker.name)
        return done

    async def trust(self, name: str, who: str, expect: str | None = None, replace: bool = False,
                    check: bool = False) -> dict:
        """Record the host key the unit's server presents now, after the operator has seen it. `check`: record
        nothing, say what the server presents, what we trust for it and what software it runs (the console shows
        this before it asks)."""
        (worker,) = self.worker(name)
        server = worker.config.server
        try:
            algorithms = host_key_algorithms(server, self.known_hosts)  # the key the unit is shown, not RSA first
            key, software = await fetch_host_key(server, algorithms, self.config.tunnel.connect_timeout)
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise OperationFailed(f"cannot fetch the host key of {server.address}: "
                                  f"{os_reason(exc)}") from None
        if key is None:
            raise OperationFailed(f"{server.address} presented no host key")
        presented = fingerprint(key)
        verdict = check_host_key(server, self.known_hosts, key)
        result = {"unit": name, "server": server.address, "fingerprint": presented,
                  "trusted": list(verdict.expected), "pinned": bool(server.host_key),
                  "software": software, "hub": is_hub(software)}
        if check:
            return result | {"outcome": {Verdict.TRUSTED: "already trusted", Verdict.UNKNOWN: "not trusted yet",
                                         Verdict.MISMATCH: "changed"}[verdict.verdict]}
        expect = expect or worker.server_key  # what the operator was shown, so a swapped key is not recorded
        if expect and expect.rstrip("=") != presented.rstrip("="):
            raise OperationFailed(f"{server.address} presents {presented}, not the {expect} you expected: "
                                  "nothing recorded")
        if verdict.verdict is Verdict.TRUSTED:
            outcome = "already trusted"
        elif server.host_key:
            raise OperationFailed(f"{server.address} presents {presented} but the config pins "
                                  f"{server.host_key}: fix the pin in the config; nothing recorded")
        elif verdict.verdict is Verdict.MISMATCH and not replace:
            raise OperationFailed(f"HOST KEY MISMATCH: {server.address} presents {presented}, we hold "
                                  f"{', '.join(verdict.expected)}. If the server's key really changed, verify it "
                                  f"and run `sop-console trust {name} --replace`")
        else:
            self.known_hosts.add(server.host, server.port, key, replace=verdict.verdict is Verdict.MISMATCH)
            outcome = "replaced" if verdict.verdict is Verdict.MISMATCH else "trusted"
            self.store.record_host_key(server.address, presented, "trust", who)
            worker.log_event(f"host key {presented} of {server.address} {outcome} by {who}")
            result["trusted"] = [presented]
        worker.kick()
        return result | {"outcome": outcome}

    def status(self) -> Status:
        units = [w.status() for w in self.workers.values()]
        for unit in units:
            unit.endpoint_problem = self._endpoint_problems.get(unit.endpoint) if unit.endpoint else None
        return Status(units, self.store.notices + self.oplog.notices)

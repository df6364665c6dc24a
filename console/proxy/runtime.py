"""The proxy runtime: the listeners of the rules the engine hands it (`apply`), each rule's state and counters
(`status`), events for every change (`RuleChanged` through `on_change`), lines for the tunnel log.

`apply` takes the whole list each time (start, add, remove, reload): a listener whose rules are all gone closes
(connections in flight finish), a new one opens, one whose rules changed keeps listening with its new round robin,
and a rule that stays keeps its counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from collections.abc import Callable

from console.core.config import ProxyConfig
from console.core.log_limit import LogLimiter
from console.core.rule_table import rule_status
from console.core.rules import SCOPE, Carrier, Rule, ScopePick
from console.core.states import RuleState
from console.core.status import RuleStatus
from console.core.words import counted
from console.proxy.balance import DOWN_FOR, Member
from console.proxy.listener import Listener
from console.proxy.tcp import TcpListener
from console.proxy.udp import UdpListener

log = logging.getLogger("console.proxy")
TRAFFIC_INTERVAL = 1.0   # seconds between "traffic" events of a rule whose counters moved
LISTED = 3               # listeners opened at once beyond this are summed up in one log line


class ProxyRuntime:
    def __init__(self, *, carrier: Carrier, pick: Callable[[Rule], ScopePick] | None = None,
                 on_change: Callable[[str, str], None] | None = None,
                 log_line: Callable[[str], None] | None = None) -> None:
        """`carrier`: how rules via a unit travel (the engine's: console/tunnel/carrier.py); `pick`: the unit a rule
        via scope travels through now (console.core.rule_table.pick_by_scope, with the endpoints' routes)."""
        self.carrier = carrier
        self.pick = pick or (lambda rule: ScopePick(None, "no endpoints to pick from", refused=True))
        self.settings = ProxyConfig()
        self.listeners: dict[tuple, Listener] = {}
        self.members: dict[tuple, Member] = {}
        self._on_change = on_change or (lambda rule, change: None)
        self._log = log_line or (lambda text: log.info("%s", text))
        self._limiter = LogLimiter(self._log)
        self._opening = False
        self._traffic_task: asyncio.Task | None = None
        self._applying = asyncio.Lock()   # two requests at once (add, remove, reload) apply one after the other

    async def apply(self, rules: list[Rule], settings: ProxyConfig) -> None:
        async with self._applying:
            await self._apply(rules, settings)

    async def _apply(self, rules: list[Rule], settings: ProxyConfig) -> None:
        self.settings = settings
        if self._traffic_task is None:
            raise_open_files_limit()
            self._traffic_task = asyncio.create_task(self._traffic(), name="proxy-traffic")
        groups: dict[tuple, list[Rule]] = {}
        for rule in rules:
            groups.setdefault(rule.group, []).append(rule)
        gone = [self.listeners.pop(group) for group in list(self.listeners) if group not in groups]
        await asyncio.gather(*(listener.close() for listener in gone))
        members, fresh = {}, []
        for group, grouped in groups.items():
            listener = self.listeners.get(group)
            if listener is None:
                kind = TcpListener if grouped[0].protocol == "tcp" else UdpListener
                listener = self.listeners[group] = kind(self, grouped[0])
                fresh.append(listener)
            for rule in grouped:
                member = members[rule.key] = self.members.get(rule.key) or Member(rule)
                member.rule = rule
            listener.balance.set([members[rule.key] for rule in grouped])
        self.members = members
        self._opening = len(fresh) > LISTED
        try:
            await asyncio.gather(*(listener.start() for listener in fresh))
        finally:
            self._opening = False
        if len(fresh) > LISTED:
            self._summary(fresh)

    def status(self, rule: Rule) -> RuleStatus:
        member, listener = self.members.get(rule.key), self.listeners.get(rule.group)
        if member is None or listener is None:
            return rule_status(rule, RuleState.STOPPED, "not running")
        flows = member.stats.open if rule.protocol == "udp" else 0
        state, reason = listener.state, listener.reason
        if state is RuleState.LISTENING and listener.carried:
            # listening here (egress), but its unit's connection may be down now: connections would fail
            unit, why_state, why = listener.unit_now()
            if unit is None:
                state, reason = why_state, why
            elif why is not None:
                reason = why      # via scope: which endpoint and unit it picked, and why

        return rule_status(rule, state, reason, [m.destination() for m in listener.members],
                           member.stats.snapshot(), flows, listener.dropped)

    async def close(self) -> None:
        if self._traffic_task is not None:
            self._traffic_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._traffic_task
            self._traffic_task = None
        async with self._applying:
            listeners, self.listeners = list(self.listeners.values()), {}
            await asyncio.gather(*(listener.close() for listener in listeners))

    def unit_changed(self, unit: str, up: bool) -> None:
        """A unit's state changed: the rules via it say so (an egress rule listening here waits while its unit is
        down), and once it is up those waiting for it try at once instead of at their next retry."""
        for listener in self.listeners.values():
            if listener.rule.via not in (unit, SCOPE):
                continue
            if up and listener.state is not RuleState.LISTENING:
                listener.wake()
            for member in listener.members:
                self._on_change(member.rule.id, "state")

    def scope_changed(self) -> None:
        """The endpoints or their scope changed (or a reload): rules via scope pick again, at once."""
        for listener in self.listeners.values():
            if listener.rule.via == SCOPE:
                if listener.state is not RuleState.LISTENING:
                    listener.wake()
                for member in listener.members:
                    self._on_change(member.rule.id, "state")

    # ------------------------------------------------------------------ what the listeners report

    def listener_changed(self, listener: Listener) -> None:
        for member in listener.members:
            self._on_change(member.rule.id, "state")
        if self._opening:
            return
        what = f"{listener.rule.protocol} {listener.rule.listener} ({_rules(listener)})"
        if listener.state is RuleState.LISTENING:
            self._log(f"{what}: listening")
        else:
            self.say(("state", listener.rule.group, listener.reason), f"{what}: {listener.state.value}: "
                     f"{listener.reason}", f"{what}: {listener.state.value} again")

    def destination_changed(self, member: Member, down: bool) -> None:
        self._on_change(member.rule.id, "destination")
        if down:
            self._log(f"rule {member.rule.name}: destination {member.rule.destination} down: {member.down_reason}; "
                      f"skipped {DOWN_FOR:g} s, then tried in its turn")
        else:
            self._log(f"rule {member.rule.name}: destination {member.rule.destination} up again")

    def say(self, key: tuple, line: str, summary: str) -> None:
        """A line said once, then counted for a minute (a flood of refusals is one line and a summary)."""
        self._limiter(key, line, summary)

    def _summary(self, fresh: list[Listener]) -> None:
        states: dict[str, list[Listener]] = {}
        for listener in fresh:
            states.setdefault(listener.state.value, []).append(listener)
        parts = [f"{len(group)} {state}" for state, group in states.items()]
        line = f"{counted(len(fresh), 'listener')} opened: {', '.join(parts)}"
        for state, group in states.items():
            if state != RuleState.LISTENING.value:
                first = group[0]
                line += f"; {state}: {first.rule.protocol} {first.rule.listener}: {first.reason}"
                line += f" (and {len(group) - 1} more)" if len(group) > 1 else ""
        self._log(line)

    async def _traffic(self) -> None:
        while True:
            await asyncio.sleep(TRAFFIC_INTERVAL)
            self._limiter.tick()
            for member in list(self.members.values()):
                snapshot = member.stats.snapshot()
                if snapshot != member.reported:
                    member.reported = snapshot
                    self._on_change(member.rule.id, "traffic")


def _rules(listener: Listener) -> str:
    members = listener.members
    first = members[0].rule.name if members else listener.rule.name
    return first + (f" and {counted(len(members) - 1, 'more rule')}" if len(members) > 1 else "")


def raise_open_files_limit() -> None:
    """Every listener and every UDP flow holds a socket: let the process open as many as the system allows (the
    soft limit up to the hard one; a 762-port gateway plan and 4096 flows a listener pass the usual 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else max(soft, 65536),
                                                        hard))

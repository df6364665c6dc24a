"""What every listener of the proxy shares: its rules (the round robin's members), its state with the reason,
listening again every LISTEN_RETRY seconds after a refusal or while its unit is not connected (at once when the
unit comes up: `wake`)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from console.core.config import join_host_port
from console.core.errors import os_reason
from console.core.rules import LOCAL, SCOPE, Carrier, Rule, listen_reason
from console.core.states import RuleState
from console.proxy.balance import Member, RoundRobin

if TYPE_CHECKING:
    from console.proxy.runtime import ProxyRuntime

LISTEN_RETRY = 5.0      # seconds between attempts to listen after a refusal (a port held by another program)
CONNECT_TIMEOUT = 3.0   # seconds a destination has to accept a connection before the next one is tried


class Listener:
    """One listening port and the rules sharing it. Subclasses open it (`_listen`), close it (`_close`), and say
    when a listener at a unit's far end has ended (`_ended`)."""

    def __init__(self, runtime: ProxyRuntime, rule: Rule) -> None:
        self.runtime = runtime
        self.rule = rule                       # the first rule: direction, via, protocol, listen address, port
        self.balance = RoundRobin(runtime.destination_changed)
        self.state = RuleState.STOPPED
        self.reason: str | None = None
        self.dropped = 0                       # turned away past the bound: TCP connections, UDP new sources
        self._task: asyncio.Task | None = None
        self._closed = False
        self._wake = asyncio.Event()           # set: try again now, not after LISTEN_RETRY

    @property
    def carrier(self) -> Carrier:
        return self.runtime.carrier

    @property
    def carried(self) -> bool:
        """Whether its connections travel through a unit."""
        return self.rule.via != LOCAL

    @property
    def here(self) -> bool:
        return self.rule.here

    @property
    def members(self) -> list[Member]:
        return self.balance.members

    def set_state(self, state: RuleState, reason: str | None) -> None:
        if (state, reason) == (self.state, self.reason):
            return
        self.state, self.reason = state, reason
        self.runtime.listener_changed(self)

    async def start(self) -> None:
        """The first attempt now (the caller hears how it went from the state), then more in the background."""
        await self._attempt()
        if self.state is not RuleState.LISTENING or self.carried:
            self._task = asyncio.create_task(self._keep(), name=f"listener-{self.rule.listener}")

    def wake(self) -> None:
        """Try again now (its unit has come up) instead of at the next retry."""
        self._wake.set()

    def unit_now(self) -> tuple[str | None, RuleState | None, str | None]:
        """Through which unit its connections travel now: (unit, None, why that one: via scope) when they can,
        (None, WAITING or REFUSED, why not) when they cannot."""
        unit, picked = self.rule.via, None
        if unit == SCOPE:
            pick = self.runtime.pick(self.rule)
            if pick.unit is None:
                return None, RuleState.REFUSED if pick.refused else RuleState.WAITING, pick.why
            unit, picked = pick.unit, pick.why
        if (why := self.carrier.waiting(unit)) is not None:
            return None, RuleState.WAITING, why
        if (why := self.carrier.refuses(unit, self.rule.protocol)) is not None:
            return None, RuleState.REFUSED, why
        return unit, None, picked

    def carrying_unit(self) -> str:
        """The unit to open a connection or flow through now; OSError saying why when there is none."""
        if self.rule.via != SCOPE:
            return self.rule.via
        unit, _state, why = self.unit_now()
        if unit is None:
            raise OSError(why)
        return unit

    async def _attempt(self) -> None:
        self._wake.clear()                      # a wake from here on means: the unit changed since this attempt
        if self.carried:
            unit, state, why = self.unit_now()
            if unit is None:
                self.set_state(state, why)     # nothing listens: waiting for the unit, or refused up front
                return
        try:
            await self._listen()
        except OSError as exc:
            where = self.rule.listener if self.here else f"{self.rule.via}'s server port {self.rule.port}"
            reason = listen_reason(exc) if self.here else os_reason(exc)
            self.set_state(RuleState.REFUSED, f"cannot listen on {where}: {reason} (tried again every "
                                              f"{LISTEN_RETRY:g} s)")
            return
        self.set_state(RuleState.LISTENING, None)

    async def _keep(self) -> None:
        while not self._closed:
            if self.state is RuleState.LISTENING:
                if not self.carried or self.here:
                    return                      # a listener here stays until closed
                await self._ended()             # at the far end: until the unit's connection ends
                if self._closed:
                    return
                self.set_state(RuleState.WAITING, f"unit {self.rule.via}'s connection ended; listening again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), LISTEN_RETRY)
            await self._attempt()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._close()
        self.state, self.reason = RuleState.STOPPED, None

    # -- for the subclasses

    async def _listen(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    async def _ended(self) -> None:
        raise NotImplementedError

    def failed(self, member: Member, exc: BaseException) -> None:
        self.balance.failed(member, _failure(exc))

    def log_no_destination(self, peer: object, what: str = "connection") -> None:
        reasons = "; ".join(f"{m.rule.destination}: {m.down_reason}" for m in self.members if m.down)
        self.runtime.say(("none", self.rule.group), f"{self.rule.protocol} {self.rule.listener}: no destination took "
                                                    f"a {what} from {_peer(peer)} ({reasons or 'no destinations'})",
                         f"{self.rule.protocol} {self.rule.listener}: {what}s no destination took")


def _failure(exc: BaseException) -> str:
    """Why a destination failed, in the far side's own words when the exception carries them (the carrier's: the
    hub's or sshd's refusal), else the system's reason in a few words."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:g} s"
    if isinstance(exc, OSError) and not exc.errno and str(exc):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return os_reason(exc).lower() if isinstance(exc, OSError) else str(exc) or type(exc).__name__


def _peer(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return join_host_port(str(peer[0]), peer[1])
    return "a client"


"""Everything that logs in to an endpoint, in one place for the daemon and for the command line with no daemon:
its auth status check (`endpoints check`; also after `endpoints add`, at the daemon's start, every
`tunnel.endpoint_check_interval` seconds, and when a unit of it starts or stops failing to log in), set-up auth by
key, password or script, the set-up script, and the sshd check. The control operations `endpoints.check`,
`endpoints.setup_auth`, `endpoints.setup_script` and `endpoints.check_sshd` call these.

Whose key a check offers: every unit that uses the endpoint logs in as its own username with its own key, side by
side; the endpoint is available only when all of them can, and the check's message names the unit that cannot. An
endpoint no unit uses (a runtime one, or a config one no unit names) is checked as the endpoint's username with the
key of the first configured unit: the key a set-up would install there. With no unit configured at all there is no
key to offer: unavailable, no-key.

A check is bounded by the tunnel's connect_timeout (its units' logins run at once). Checks of one endpoint never
overlap: one asked while another runs waits for it and takes its answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import asyncssh

from console.core.clock import utc_iso
from console.core.config import Config, UnitConfig
from console.core.endpoint_table import EndpointTable
from console.core.errors import ConsoleError, OperationFailed, UsageError
from console.core.keys import load_or_create_unit_key, unit_public_key
from console.core.known_hosts import KnownHosts
from console.core.paths import StatePaths
from console.core.sshd_fix import sshd_fix_script
from console.core.sshd_settings import needs_of, stock_settings
from console.core.states import EndpointReason, EndpointState
from console.core.status import EndpointCheck, SshdCheck
from console.tunnel import auth_setup, key_install, sshd_check
from console.tunnel.endpoint_check import check_login

log = logging.getLogger("console.endpoints")

SETUP_METHODS = ("key", "password", "script")   # script: the operator ran the printed script; check it now
SERVER_SSHD_CONFIG = "/etc/ssh/sshd_config"     # where the set-up script's sshd part writes (a stock server)


@dataclass(frozen=True)
class Login:
    """One account a check or a set-up uses on an endpoint: a unit's key, as `username`."""

    unit: str
    username: str
    own: bool   # the unit goes through this endpoint (False: only its key is borrowed, for an endpoint no unit uses)


def combined(checks: list[EndpointCheck]) -> EndpointCheck:
    """One endpoint's check from its units' logins: available when all are, else the first that failed, its
    message naming the unit (and saying which others could or could not)."""
    if len(checks) == 1:
        return checks[0]
    seconds = max(c.seconds for c in checks)
    failing = [c for c in checks if not c.available]
    if not failing:
        return replace(checks[0], message="; ".join(c.message for c in checks), seconds=seconds)
    first = failing[0]
    message = first.message if f"unit {first.unit}" in first.message else \
        f"unit {first.unit} ({first.username}): {first.message}"
    others = [c.unit for c in failing[1:]]
    fine = [c.unit for c in checks if c.available]
    if others:
        message += f"; unit {', '.join(map(str, others))} cannot either"
    if fine:
        message += f"; unit {', '.join(map(str, fine))} logs in"
    return replace(first, message=message, seconds=seconds)


class EndpointLogins:
    def __init__(self, table: EndpointTable, paths: StatePaths, known: KnownHosts, *,
                 log_line: Callable[[str], None] | None = None,
                 kick: Callable[[list[str], str], None] | None = None) -> None:
        """`kick(units, reason)`: make units retry now (after a set-up made their logins work)."""
        self.table = table
        self.paths = paths
        self.known = known
        self._log = log_line or (lambda text: log.info("%s", text))
        self._kick = kick or (lambda units, reason: None)
        self._running: dict[str, asyncio.Future[EndpointCheck]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    @property
    def config(self) -> Config:
        return self.table.config

    @property
    def timeout(self) -> float:
        return self.config.tunnel.connect_timeout

    @property
    def automatic(self) -> bool:
        """The daemon checks on its own (tunnel.endpoint_check_interval is not 0)."""
        return self.config.tunnel.endpoint_check_interval > 0

    # ------------------------------------------------------------------ whose key

    def units_of(self, name: str) -> list[UnitConfig]:
        return [unit for unit in self.config.units.values() if unit.endpoint == name]

    def logins(self, name: str, unit: str | None = None) -> list[Login]:
        """The logins of endpoint `name` (see the module's docstring); `unit`: that unit's alone (as its own
        username when it goes through this endpoint, else as the endpoint's). UsageError for an unknown one."""
        endpoint = self.table.endpoint(name)
        if unit is not None:
            chosen = self.config.unit(unit)
            own = chosen.endpoint == name
            return [Login(chosen.name, chosen.username if own else endpoint.config.username, own)]
        units = self.units_of(name)
        if units:
            return [Login(u.name, u.username, True) for u in units]
        first = next(iter(self.config.units.values()), None)
        return [Login(first.name, endpoint.config.username, False)] if first is not None else []

    def _logins_or_refuse(self, name: str, unit: str | None) -> list[Login]:
        logins = self.logins(name, unit)
        if not logins:
            raise UsageError(f"no unit is configured, so there is no key to set up on {name}: add a unit to the "
                             "config (each unit has its own key, made on first use)")
        return logins

    # ------------------------------------------------------------------ the auth status check

    async def check(self, names: list[str], who: str | None = None) -> list[EndpointCheck]:
        """The check of each endpoint named (every endpoint when none is), stored as its last check. `who`: an
        operator asked (the operation log records it: console/control/operations.perform); None for the daemon's
        own checks."""
        names = list(dict.fromkeys(names)) or [e.name for e in self.table.list()]
        for name in names:
            self.table.endpoint(name)   # an unknown name is refused before anything logs in
        return list(await asyncio.gather(*(asyncio.shield(self._check_once(name)) for name in names)))

    def _check_once(self, name: str) -> asyncio.Future[EndpointCheck]:
        """The check of `name` running now, or a new one."""
        running = self._running.get(name)
        if running is None:
            running = self._running[name] = asyncio.ensure_future(self._check(name))
            running.add_done_callback(lambda done: self._running.pop(name, None) if self._running.get(name)
                                      is done else None)
        return running

    async def _check(self, name: str) -> EndpointCheck:
        endpoint = self.table.endpoint(name)
        logins = self.logins(name)
        if not logins:
            check = EndpointCheck(
                name, EndpointState.UNAVAILABLE, EndpointReason.NO_KEY,
                "no unit is configured, so there is no key to log in with",
                "add a unit to the config: each unit has its own key, made on first use",
                endpoint.config.address, endpoint.config.username, checked_at=utc_iso())
        else:
            checks = await asyncio.gather(*(
                check_login(name, endpoint.config, login.username, self.paths.unit_key(login.unit), self.known,
                            unit=login.unit, timeout=self.timeout) for login in logins))
            check = combined([self._borrowed(name, c) if not login.own else c for login, c in zip(logins, checks)])
        before = self.table.store.endpoint_check(name)
        self.table.record_check(check)
        if before is None or (before.state, before.reason) != (check.state, check.reason):
            self._log(f"{name} checked: {check.state.value}" + ("" if check.available else
                                                                f" ({check.reason.value}): {check.message}"))
        return check

    def _borrowed(self, name: str, check: EndpointCheck) -> EndpointCheck:
        """A check made with a borrowed key: `trust UNIT` would trust that unit's own server, not this one."""
        if check.reason is EndpointReason.HOST_KEY_UNKNOWN:
            check.hint = (f"verify it with the server's administrator, then pass it to set-up auth: "
                          f"`sop-console endpoints setup-auth {name} --method key|password --trust-host-key "
                          f"{check.fingerprint}`")
        elif check.reason is EndpointReason.HOST_KEY_MISMATCH:
            check.hint = (f"this may be an attack; if the server's key really changed, verify it, then remove its "
                          f"old key from {self.paths.known_hosts} (or fix the endpoint's host_key)")
        return check

    def check_soon(self, names: list[str], why: str) -> None:
        """Check these endpoints in the background, on the daemon's own account (not an operator's record).
        Nothing when automatic checks are off (tunnel.endpoint_check_interval 0)."""
        if not self.automatic or self._closed:
            return
        task = asyncio.create_task(self._quietly(names, why), name=f"endpoint-check-{','.join(names)}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def check_now(self, names: list[str], why: str) -> None:
        """Check these endpoints now, on no operator's account (the command line's `endpoints add` with no daemon:
        its loop ends with the command). Nothing when automatic checks are off."""
        if self.automatic:
            await self._quietly(names, why)

    async def _quietly(self, names: list[str], why: str) -> None:
        """A check the daemon makes by itself: a failure of ours is logged, never raised into the loop."""
        try:
            await self.check(names)
        except ConsoleError as exc:   # an endpoint removed meanwhile
            log.info("endpoint check (%s) skipped: %s", why, exc.message)
        except Exception:   # a bug must not end the daemon's checks
            log.exception("endpoint check (%s) failed", why)

    async def check_all(self) -> None:
        """Every endpoint, on the daemon's own account (at start and every interval)."""
        await self._quietly([], "every endpoint")

    async def close(self) -> None:
        """End the checks in progress (the daemon is stopping); none start after."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for running in list(self._running.values()):
            running.cancel()
        await asyncio.gather(*self._tasks, *self._running.values(), return_exceptions=True)

    # ------------------------------------------------------------------ set-up auth

    async def setup_auth(self, name: str, method: str, who: str, *, password: str | None = None,
                         identity: str | None = None, login_user: str | None = None, unit: str | None = None,
                         trust_fingerprint: str | None = None) -> dict:
        """Get the unit keys authorized on endpoint `name` (each unit of it, or `unit`'s): `key` (log in as
        `login_user`, default root, with the operator's private key file `identity`), `password` (`login_user`'s
        password, default each unit's account; not used when key login works already), or `script` (the operator
        ran the printed script: check now). Ends with the new check stored: {"outcome": one line, "check"}."""
        if method not in SETUP_METHODS:
            raise UsageError(f"set-up method must be one of {', '.join(SETUP_METHODS)}, got {method!r}")
        endpoint = self.table.endpoint(name)
        logins = self._logins_or_refuse(name, unit)
        if method == "password" and password is None:
            raise UsageError("set-up by password needs the password (of the login user: --login-user, else the "
                             "units' account)")
        if method == "key":
            if not identity:
                raise UsageError("set-up by key needs --identity FILE: a private key that logs in there as root or "
                                 "as a user with password-less sudo")
            if not Path(identity).is_absolute():
                raise UsageError(f"--identity must be an absolute path (the daemon reads it), got {identity!r}")
        server, timeout = endpoint.config, self.timeout
        outcomes, checks = [], []
        for login in logins:
            key_path = self.paths.unit_key(login.unit)
            if method == "password":
                async def given(secret: str = password) -> str:
                    return secret
                outcome, check = await auth_setup.setup_by_password(
                    name, server, login.username, key_path, self.known, given, unit=login.unit,
                    timeout=timeout, login_user=login_user, trust_fingerprint=trust_fingerprint)
            elif method == "key":
                outcome, check = await auth_setup.setup_by_key(
                    name, server, login.username, key_path, self.known, Path(identity),
                    login_user=login_user or "root", unit=login.unit, timeout=timeout,
                    trust_fingerprint=trust_fingerprint)
            else:
                outcome, check = await auth_setup.check_after_script(
                    name, server, login.username, key_path, self.known, unit=login.unit, timeout=timeout)
            outcomes.append(outcome)
            checks.append(self._borrowed(name, check) if not login.own else check)
        check = combined(checks)
        self.table.record_check(check)
        if check.available:
            self._kick([login.unit for login in logins if login.own], f"auth set up on endpoint {name} by {who}")
        return {"outcome": "; ".join(outcomes), "check": check}

    async def setup_script(self, name: str, who: str, unit: str | None = None) -> str:
        """The POSIX sh script for an operator to run on endpoint `name` as root: the unit keys authorized for
        their accounts, then the sshd settings a stock OpenSSH needs for the endpoint's forwards."""
        logins = self._logins_or_refuse(name, unit)
        needs = needs_of(self.units_of(name))
        try:
            sshd_part = sshd_fix_script(stock_settings(needs), SERVER_SSHD_CONFIG, None)
        except ValueError:   # nothing needs a change
            sshd_part = 'echo "sop-console: the sshd settings need no change"\n'
        lines = [(await asyncio.to_thread(unit_public_key, self.paths, login.unit)).line for login in logins]
        pairs = [(line, login.username) for line, login in zip(lines, logins)]
        return auth_setup.setup_script(*pairs[0], sshd_part=sshd_part, also=pairs[1:])

    # ------------------------------------------------------------------ the sshd check

    async def check_sshd(self, name: str, who: str, *, fix: bool = False, identity: str | None = None,
                         login_user: str | None = None) -> SshdCheck:
        """Log in to endpoint `name` (as `login_user`, default root, with the operator's key file `identity`;
        else as its first unit's account with that unit's key) and judge its sshd's settings against its units'
        forwards; `fix`: change what needs it (root or password-less sudo), then judge again."""
        endpoint = self.table.endpoint(name)
        server = endpoint.config
        logins = self.logins(name)
        account = logins[0].username if logins else server.username   # whose Match blocks are evaluated
        if identity:
            if not Path(identity).is_absolute():
                raise UsageError(f"--identity must be an absolute path (the daemon reads it), got {identity!r}")
            key, user, whose = await auth_setup.read_identity(Path(identity)), login_user or "root", identity
        elif logins:
            first = logins[0]
            if not await asyncio.to_thread(self.paths.unit_key(first.unit).exists):
                raise OperationFailed(f"unit {first.unit} has no key yet: set up auth on {name} first "
                                      f"(`sop-console endpoints setup-auth {name}`), or give --identity FILE")
            key = await asyncio.to_thread(load_or_create_unit_key, self.paths, first.unit)
            user, whose = login_user or first.username, f"the key of unit {first.unit}"
        else:
            raise UsageError(f"no unit is configured, so there is no key to log in to {name} with: give "
                             "--identity FILE (a key for root, or for a user with password-less sudo)")
        verifier = key_install.Verifier(name, server, self.known, None)
        try:
            conn = await key_install.login(server, user, verifier, self.timeout, client_keys=[key], password=None,
                                           kbdint_auth=False, preferred_auth="publickey")
        except asyncssh.PermissionDenied:
            raise OperationFailed(f"{server.address} refused {whose} for {user}: check the endpoint's auth "
                                  f"(`sop-console endpoints check {name}`), or give --identity FILE") from None
        needs = needs_of(self.units_of(name))
        try:
            judged = sshd_check.fix_sshd if fix else sshd_check.check_sshd
            result = await judged(conn, name, needs, username=account)
        finally:
            conn.close()
        return result

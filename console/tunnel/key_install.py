"""Install a unit's public key on its server the seed's way: log in with the user's password, create
~/.ssh (0700), append to authorized_keys (0600) only when the key is not there yet.

If key login already works nothing is asked: the result is "already authorized".
The password is asked for only when it is needed and is kept no longer than the login that uses it.
"""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass
from collections.abc import Awaitable, Callable

import asyncssh

from console.core.config import TunnelConfig, UnitConfig
from console.core.errors import OperationFailed, os_reason
from console.core.keys import PublicKeyInfo, fingerprint, load_or_create_unit_key, public_line
from console.core.known_hosts import KnownHosts, Verdict, check_host_key
from console.core.paths import StatePaths

INSTALLED = "installed"
ALREADY = "already authorized"

_SCRIPT = """umask 077
mkdir -p ~/.ssh && chmod 700 ~/.ssh || exit 11
touch ~/.ssh/authorized_keys && chmod 600 ~/.ssh/authorized_keys || exit 12
if grep -qF -- {body} ~/.ssh/authorized_keys; then echo present; exit 0; fi
printf '%s\\n' {line} >> ~/.ssh/authorized_keys || exit 13
echo appended
"""


@dataclass(frozen=True)
class InstallResult:
    outcome: str          # INSTALLED or ALREADY
    key: PublicKeyInfo
    server: str
    username: str

    @property
    def summary(self) -> str:
        """One line for the operation record: what happened, with which key, where."""
        return f"{self.outcome} {self.key.fingerprint} {self.username}@{self.server}"


class _Verifier(asyncssh.SSHClient):
    def __init__(self, unit: UnitConfig, known: KnownHosts, trust_fingerprint: str | None) -> None:
        self.unit = unit
        self.known = known
        self.trust_fingerprint = trust_fingerprint
        self.problem: str | None = None

    def validate_host_public_key(self, host, addr, port, key) -> bool:
        server = self.unit.server
        check = check_host_key(server, self.known, key)
        if check.verdict is Verdict.TRUSTED:
            return True
        if check.verdict is Verdict.UNKNOWN:
            if server.host_key_policy == "accept-new" or (
                    self.trust_fingerprint and self.trust_fingerprint.rstrip("=") == check.presented.rstrip("=")):
                self.known.add(server.host, server.port, key)
                return True
            self.problem = (f"host key {check.presented} of {server.address} is not trusted yet; verify it and pass "
                            f"--trust-host-key {check.presented}, or run `sop-console trust {self.unit.name}`")
            return False
        self.problem = (f"HOST KEY MISMATCH: {server.address} presented {check.presented}, expected "
                        f"{', '.join(check.expected)}; refusing to send a password to it")
        return False


async def _login(unit: UnitConfig, tunnel: TunnelConfig, verifier: _Verifier, **auth) -> asyncssh.SSHClientConnection:
    server = unit.server
    try:
        return await asyncssh.connect(
            server.host, server.port, username=unit.username, client_factory=lambda: verifier,
            known_hosts=([], [], []), config=None, agent_path=None, gss_auth=False,
            connect_timeout=tunnel.connect_timeout, login_timeout=tunnel.connect_timeout, **auth)
    except asyncssh.HostKeyNotVerifiable:
        raise OperationFailed(verifier.problem or f"host key of {server.address} could not be verified") from None
    except (TimeoutError, OSError) as exc:
        reason = os_reason(exc)
        raise OperationFailed(f"cannot reach {server.address}: {reason}") from None


async def install_key(paths: StatePaths, unit: UnitConfig, tunnel: TunnelConfig,
                      password: Callable[[], Awaitable[str]], *, trust_fingerprint: str | None = None,
                      ) -> InstallResult:
    key = await asyncio.to_thread(load_or_create_unit_key, paths, unit.name)
    info = PublicKeyInfo(public_line(key, f"sop-console-{unit.name}"), fingerprint(key))
    known = KnownHosts(paths.known_hosts)
    server = unit.server

    def result(outcome: str) -> InstallResult:
        return InstallResult(outcome, info, server.address, unit.username)

    # 1. Does key login already work? Then there is nothing to do and nothing to ask.
    try:
        conn = await _login(unit, tunnel, _Verifier(unit, known, trust_fingerprint), client_keys=[key],
                            password=None, kbdint_auth=False, preferred_auth="publickey")
    except asyncssh.PermissionDenied:
        pass
    except asyncssh.Error as exc:
        raise OperationFailed(f"{server.address}: {exc.reason if hasattr(exc, 'reason') else exc}") from None
    else:
        conn.close()
        return result(ALREADY)

    # 2. Log in with the password and append the key.
    secret = await password()
    try:
        conn = await _login(unit, tunnel, _Verifier(unit, known, trust_fingerprint), client_keys=None,
                            password=secret, preferred_auth="keyboard-interactive,password")
    except asyncssh.PermissionDenied:
        raise OperationFailed(
            f"{server.address} refused the password for {unit.username} "
            "(wrong password, or password login is disabled there)") from None
    except asyncssh.Error as exc:
        raise OperationFailed(f"{server.address}: {getattr(exc, 'reason', exc)}") from None
    finally:
        secret = None  # noqa: F841 - drop our reference at once
    try:
        script = _SCRIPT.format(body=shlex.quote(info.key_body), line=shlex.quote(info.line))
        done = await conn.run(script, check=False, timeout=tunnel.connect_timeout)
    except (TimeoutError, asyncssh.Error, OSError) as exc:
        raise OperationFailed(f"{server.address}: could not update authorized_keys: {exc}") from None
    finally:
        conn.close()
    out = (done.stdout or "").strip() if isinstance(done.stdout, str) else ""
    if done.exit_status != 0 or out not in ("present", "appended"):
        err = (done.stderr or "").strip() if isinstance(done.stderr, str) else ""
        raise OperationFailed(f"{server.address}: could not update ~/.ssh/authorized_keys of {unit.username} "
                              f"(exit {done.exit_status}{': ' + err if err else ''})")

    # 3. Prove it: key login must work now (a server may read keys from elsewhere, see AuthorizedKeysFile).
    try:
        conn = await _login(unit, tunnel, _Verifier(unit, known, trust_fingerprint), client_keys=[key],
                            password=None, kbdint_auth=False, preferred_auth="publickey")
    except asyncssh.PermissionDenied:
        raise OperationFailed(
            f"the key is in ~/.ssh/authorized_keys of {unit.username} on {server.address}, but key login still "
            "fails: check the server's AuthorizedKeysFile, StrictModes and PubkeyAuthentication") from None
    conn.close()
    return result(INSTALLED if out == "appended" else ALREADY)

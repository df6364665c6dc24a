"""The auth status check of an endpoint (an SSH server): can `username` log in there with a unit's key, and if
not, why, in words an operator acts on, with a one-line hint.

One real login attempt, bounded by `timeout` as a whole (name lookup included), that records what the server
shows on the way: the address that answered, its first bytes (not an SSH server?), its host key (judged exactly
as the unit worker judges it, never recorded), its auth banner, the methods it offers (each of our callbacks
records that it was asked and declines: we offer our key and nothing else), and how it ended. It never raises for
a server-side problem: every one is an EndpointCheck with state unavailable and a reason (console/core/states.py).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from pathlib import Path

import asyncssh

from console.core.clock import utc_iso
from console.core.config import ServerConfig, join_host_port
from console.core.errors import os_reason
from console.core.known_hosts import HostKeyCheck, KnownHosts, Verdict, check_host_key, host_key_algorithms
from console.core.states import EndpointReason, EndpointState
from console.core.status import EndpointCheck
from console.tunnel import diagnose

BANNER_CHARS = 4096  # of a server's auth banners, kept
SHOWN_WORDS = 200    # of what a server says (banner, disconnect reason), shown


class _Probe(asyncssh.SSHClient):
    """The client side of one check: offers our key once, declines everything else, remembers what it saw."""

    def __init__(self, server: ServerConfig, known: KnownHosts, key: asyncssh.SSHKey) -> None:
        self.server, self.known, self.key = server, known, key
        self.host_check: HostKeyCheck | None = None
        self.offered: list[str] = []     # auth methods the server offered us, in the order asked
        self.key_asked = 0               # how often asyncssh asked for a key (see _Attempt.refused)
        self.banner = ""

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        check = check_host_key(self.server, self.known, key)
        self.host_check = check
        # accept-new: a unit records the key on first contact (the worker does); a check records nothing
        return check.verdict is Verdict.TRUSTED or (
            check.verdict is Verdict.UNKNOWN and self.server.host_key_policy == "accept-new")

    def auth_banner_received(self, msg: str, lang: str) -> None:
        self.banner = (self.banner + msg)[:BANNER_CHARS]

    def public_key_auth_requested(self):
        self.key_asked += 1
        if "publickey" in self.offered:
            return None
        self.offered.append("publickey")
        return [self.key]

    def kbdint_auth_requested(self):
        self.offered.append("keyboard-interactive")
        return None

    def password_auth_requested(self):
        self.offered.append("password")
        return None


class _Attempt:
    """One check in progress: what each stage found, and the EndpointCheck it comes to."""

    def __init__(self, name: str, server: ServerConfig, username: str, key_path: Path, known: KnownHosts,
                 unit: str | None, timeout: float) -> None:
        self.name, self.server, self.username, self.key_path = name, server, username, key_path
        self.known, self.unit, self.timeout = known, unit, timeout
        self.address = server.address      # host:port tried: the resolved address once there is one
        self.ip = server.host              # the address tried, without the port
        self.key_type = "ssh-ed25519"
        self.probe: _Probe | None = None
        self.greeting: diagnose.Greeting | None = None
        self.resolved = False
        self.network_error: BaseException = TimeoutError(errno.ETIMEDOUT, "timed out")

    # ------------------------------------------------------------------ the stages

    async def run(self) -> EndpointCheck:
        if not await asyncio.to_thread(self.key_path.exists):
            whose = f"unit {self.unit}" if self.unit else "this login"
            return self.result(EndpointReason.NO_KEY, f"no key yet for {whose} ({self.key_path})",
                               f"make it: `sop-console key show {self.unit}`, then set up auth"
                               if self.unit else "make the unit's key, then set up auth")
        try:
            key = await asyncio.to_thread(asyncssh.read_private_key, str(self.key_path))
        except (asyncssh.KeyImportError, OSError) as exc:
            return self.result(EndpointReason.NO_KEY, f"the key {self.key_path} is unreadable ({os_reason(exc)})",
                               "move it aside to make a new one, then set up auth")
        self.key_type = key.get_algorithm()
        server = self.server
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            why = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
            return self.result(EndpointReason.RESOLVE, f"the name {server.host} does not resolve ({why})",
                               "check the endpoint's host name, or give its address")
        self.resolved = True
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        failures: list[str] = []
        for address in addresses:
            self.ip, self.address = address, join_host_port(address, server.port)
            check = await self.login(address, key)
            if check is not None:
                return check
            failures.append(self.address)
        return self.network_failure(self.network_error, failures)

    async def login(self, address: str, key: asyncssh.SSHKey) -> EndpointCheck | None:
        """One login at one address: the check, or None after a network error (the next address is tried)."""
        self.probe = probe = _Probe(self.server, self.known, key)
        self.greeting = greeting = diagnose.Greeting()
        try:
            conn = await asyncssh.connect(
                address, self.server.port, tunnel=greeting, username=self.username, client_factory=lambda: probe,
                known_hosts=([], [], []), server_host_key_algs=host_key_algorithms(self.server, self.known),
                client_keys=None, config=None, agent_path=None, password=None, gss_auth=False,
                host_based_auth=False, connect_timeout=None, login_timeout=self.timeout)
        except asyncssh.HostKeyNotVerifiable:
            return self.host_key_refused()
        except asyncssh.PermissionDenied as exc:
            return self.refused(exc)
        except (asyncssh.Error, OSError) as exc:
            if greeting.conn is None and isinstance(exc, OSError):  # no TCP connection was made
                self.network_error = exc
                return None
            return self.ended(exc)
        conn.close()  # not waited for: the answer is known, the close goes on by itself
        return self.result(EndpointReason.OK, self._available_words(), "")

    def timed_out(self) -> EndpointCheck:
        """The whole check ran out of time: say at which stage."""
        within = f"within {self.timeout:g}s"
        greeting, probe = self.greeting, self.probe
        if not self.resolved:
            return self.result(EndpointReason.RESOLVE, f"the name {self.server.host} did not resolve {within}",
                               "check this machine's DNS resolver, or give the endpoint's address")
        if greeting is None or greeting.conn is None:
            return self.network_failure(TimeoutError(errno.ETIMEDOUT, "timed out"), [])
        if not greeting.received:
            return self.result(EndpointReason.NOT_SSH,
                               f"{self.address} accepted the connection but said nothing {within}",
                               "an SSH server speaks first: check that sshd listens on this port")
        said = diagnose.not_ssh(greeting, self.address)
        if said is not None:
            return self.not_ssh(said)
        if probe is None or probe.host_check is None:
            return self.result(EndpointReason.PROTOCOL,
                               f"the SSH server at {self.address} did not finish the key exchange {within}",
                               "the server is overloaded or the network drops packets: try again, check its load")
        return self.result(EndpointReason.PROTOCOL, f"the SSH server at {self.address} did not finish the login "
                           f"{within}", "the server is slow to authenticate (DNS lookups, PAM): check its logs")

    # ------------------------------------------------------------------ how it ended

    def network_failure(self, exc: BaseException, tried: list[str]) -> EndpointCheck:
        where = self.address + (f" ({self.server.host})" if self.server.host != self.ip else "")
        code = getattr(exc, "errno", None)
        if code == errno.ECONNREFUSED:
            message = f"connection refused by {where}"
            hint = "nothing listens there: start sshd, or check the endpoint's port"
        elif code == errno.ETIMEDOUT or isinstance(exc, TimeoutError):
            message = f"no answer from {where} within {self.timeout:g}s (timed out)"
            hint = "check the address, and the routes and firewalls between here and the endpoint"
        elif code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            message = f"{where}: {os_reason(exc)}"
            hint = "this machine has no route there: check the address and this machine's network"
        else:
            message = f"cannot reach {where}: {os_reason(exc)}"
            hint = "check the address, and the network between here and the endpoint"
        others = [address for address in tried if address != self.address]
        if others:
            message += f" (also tried {', '.join(others)})"
        return self.result(EndpointReason.NETWORK, message, hint)

    def not_ssh(self, said: diagnose.NotAnSSHServer) -> EndpointCheck:
        return self.result(EndpointReason.NOT_SSH, str(said),
                           "another service has this port: check the endpoint's SSH port")

    def host_key_refused(self) -> EndpointCheck:
        probe = self.probe
        check = probe.host_check if probe is not None else None
        if check is None:
            return self.result(EndpointReason.PROTOCOL, f"the host key of {self.address} could not be verified",
                               "check the endpoint's host_key setting")
        trust = f"sop-console trust {self.unit or self.name}"
        if check.verdict is Verdict.MISMATCH:
            return self.result(EndpointReason.HOST_KEY_MISMATCH,
                               f"HOST KEY CHANGED: {self.address} presented {check.presented}, expected "
                               f"{', '.join(check.expected)}", f"this may be an attack; if the server's key really "
                               f"changed, verify it and run `{trust} --replace`")
        return self.result(EndpointReason.HOST_KEY_UNKNOWN,
                           f"the host key {check.presented} of {self.address} is not trusted yet",
                           f"verify it with the server's administrator, then run `{trust}`")

    def refused(self, exc: asyncssh.PermissionDenied) -> EndpointCheck:
        """Every method we would use was refused (asyncssh's own PermissionDenied), or the server ended the login
        with 'no more auth methods' in its own words."""
        probe = self.probe
        assert probe is not None
        if not str(exc.reason).startswith("Permission denied for user"):
            return self.ended(exc)
        others = [m for m in probe.offered if m != "publickey"]
        offers = ", ".join(probe.offered) if probe.offered else "no method we know"
        whose = f"the {self.key_type} key of unit {self.unit}" if self.unit else f"our {self.key_type} key"
        # asyncssh tells a client of no partial success. After a plain refusal the server still lists publickey
        # and asyncssh asks for another key; after a partial success (AuthenticationMethods publickey,password)
        # the server lists only the steps still missing, so our key was asked for once.
        partial = "publickey" in probe.offered and probe.key_asked == 1
        if partial:
            message = (f"{self.address} accepted {whose} for {self.username} but wants another step after it: "
                       f"{', '.join(others) or 'a method we do not use'}")
        elif "publickey" in probe.offered:
            message = f"{self.address} did not accept {whose} for {self.username}; the server offers {offers}"
        else:
            message = f"{self.address} does not offer key logins to {self.username}; the server offers {offers}"
        if probe.banner.strip():
            message += f" (it said: {self._words(probe.banner)})"
        if partial:
            hint = ("units log in with a key alone: drop the second step for this account (AuthenticationMethods "
                    "in the server's sshd_config)")
        elif "publickey" not in probe.offered:
            hint = "enable PubkeyAuthentication for this account in the server's sshd_config (set up by script)"
        elif others:
            hint = f"set up by password (the server offers {', '.join(others)}), by key or by script"
        else:
            hint = ("install the key: set up by key (an account with sudo) or by script (as root on the server); "
                    f"or the server refuses {self.key_type} keys or the account")
        return self.result(EndpointReason.PUBLICKEY, message, hint)

    def ended(self, exc: BaseException) -> EndpointCheck:
        """The connection ended otherwise: not SSH, an account the server refuses in its own words, or a
        protocol failure."""
        greeting, probe = self.greeting, self.probe
        said = diagnose.not_ssh(greeting, self.address) if greeting is not None else None
        if said is not None:
            return self.not_ssh(said)
        if greeting is not None and not greeting.received:
            return self.result(EndpointReason.PROTOCOL,
                               f"{self.address} accepted the connection and closed it without a word",
                               "the server refuses this source (MaxStartups, PerSourcePenalties, TCP wrappers, "
                               "a firewall) or is no SSH server: check its logs")
        reason = str(getattr(exc, "reason", "") or "") if isinstance(exc, asyncssh.Error) else os_reason(exc)
        from_server = isinstance(exc, asyncssh.DisconnectError) and not isinstance(exc, asyncssh.ConnectionLost)
        in_login = probe is not None and probe.host_check is not None
        words = " ".join(part for part in (probe.banner.strip() if probe else "",
                                           reason if from_server else "") if part)
        if in_login and words:
            return self.result(EndpointReason.ACCOUNT,
                               f"{self.address} ended the login of {self.username}: {self._words(words)}",
                               "the server refuses this account (expired, locked, not allowed): fix the account "
                               "on the server")
        stage = "login" if in_login else "key exchange"
        return self.result(EndpointReason.PROTOCOL,
                           f"{self.address} ended the connection during the {stage}: "
                           f"{self._words(reason or type(exc).__name__)}",
                           "check the server's logs (sshd: journalctl -u ssh) for why")

    # ------------------------------------------------------------------ the record

    def _available_words(self) -> str:
        whose = f"the key of unit {self.unit}" if self.unit else "our key"
        message = f"{self.username} logs in to {self.address} with {whose}"
        check = self.probe.host_check if self.probe is not None else None
        if check is not None and check.verdict is Verdict.UNKNOWN:
            message += f" (host key {check.presented} not recorded yet: accept-new records it on first contact)"
        return message

    @staticmethod
    def _words(text: str) -> str:
        return diagnose.printable(text.strip().encode(), SHOWN_WORDS)

    def result(self, reason: EndpointReason, message: str, hint: str) -> EndpointCheck:
        probe, greeting = self.probe, self.greeting
        software = None
        if greeting is not None and greeting.conn is not None:
            software = greeting.conn.get_extra_info("server_version")
            if software is None and greeting.received:
                software = diagnose.printable(bytes(greeting.received))
        check = probe.host_check if probe is not None else None
        return EndpointCheck(
            endpoint=self.name, state=EndpointState.AVAILABLE if reason is EndpointReason.OK else
            EndpointState.UNAVAILABLE, reason=reason, message=message, hint=hint, address=self.address,
            username=self.username, unit=self.unit, methods=list(probe.offered) if probe is not None else [],
            fingerprint=check.presented if check is not None else None, server_version=software)


async def check_login(name: str, server: ServerConfig, username: str, key_path: Path, known: KnownHosts, *,
                      unit: str | None, timeout: float) -> EndpointCheck:
    """Can `username` log in to `server` with the private key at `key_path` (unit `unit`'s)? Available, or
    unavailable with a reason and a hint. Bounded by `timeout` as a whole; records nothing (not even a host key
    under accept-new); raises only for a bug of ours."""
    started = time.monotonic()
    checked_at = utc_iso()
    attempt = _Attempt(name, server, username, key_path, known, unit, timeout)
    try:
        async with asyncio.timeout(timeout):
            check = await attempt.run()
    except TimeoutError:
        check = attempt.timed_out()
    check.checked_at = checked_at
    check.seconds = round(time.monotonic() - started, 3)
    return check

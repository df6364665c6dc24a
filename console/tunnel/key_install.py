"""Install a unit's public key in an account's authorized_keys on its server.

One shell text does it (`authorized_keys_script`): it finds the account's home, creates ~/.ssh (0700) and
authorized_keys (0600) owned by the account, and appends the key only when it is not there yet. It runs the same
wherever it runs: over a login here (`install_over`: as the account itself, as root, or through `sudo -n`), and in
the script an operator runs on the server as root (console/tunnel/auth_setup.py's set-up by script).

`key install` is the seed's way: log in with the user's password and run it. If key login already works nothing
is asked: the result is "already authorized". The password is asked for only when it is needed and is kept no
longer than the login that uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncssh

from console.core.config import ServerConfig, TunnelConfig, UnitConfig
from console.core.errors import OperationFailed, os_reason
from console.core.keys import PublicKeyInfo, fingerprint, key_body, load_or_create_unit_key, parse_public_key, \
    public_line
from console.core.known_hosts import KnownHosts, Verdict, check_host_key, host_key_algorithms
from console.core.paths import StatePaths
from console.tunnel.diagnose import printable

INSTALLED = "installed"
ALREADY = "already authorized"

# An account name the script accepts: what useradd accepts, without the odd corners (no leading '-', no spaces).
USERNAME_RE = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,31}")
_COMMENT_RE = re.compile(r"[A-Za-z0-9._@+=:-]{1,64}")
OUTPUT_LIMIT = 64 * 1024  # bytes kept of what the remote script prints on each stream
SHOWN_ERROR = 300         # characters of its stderr shown in an error

# The lines the script prints, read back by install_over (the last says what happened).
STARTED = "sop-console: authorizing a key for"
ADDED = "added the key to"
PRESENT = "the key is already in"

_SCRIPT = """\
set -eu
user={user}
key={key}
body={body}
echo "{started} $user (running as $(id -un))"
home=$(getent passwd "$user" 2>/dev/null | cut -d: -f6)
if [ -z "$home" ]; then  # no getent (busybox): the shell's ~user, for a name checked to be plain
    case $user in ''|-*|*[!A-Za-z0-9._-]*) ;; *) eval "home=~$user" ;; esac
    case $home in ''|'~'*) echo "no such user: $user" >&2; exit 3 ;; esac
fi
if [ ! -d "$home" ]; then echo "the home directory $home of $user does not exist" >&2; exit 3; fi
group=$(id -g "$user")
dir=$home/.ssh
file=$dir/authorized_keys
for path in "$dir" "$file"; do  # as root, a link planted by the account would hand it any file
    if [ -L "$path" ]; then echo "$path is a symbolic link: refusing to follow it" >&2; exit 3; fi
done
umask 077
if [ ! -d "$dir" ]; then mkdir "$dir"; echo "created $dir"; fi
chmod 700 "$dir"
chown "$user:$group" "$dir"
if [ ! -f "$file" ]; then : > "$file"; echo "created $file"; fi
chmod 600 "$file"
chown "$user:$group" "$file"
if grep -v '^[[:space:]]*#' "$file" | grep -qF -- "$body"; then
    echo "{present} $file"
else
    if [ -s "$file" ] && [ -n "$(tail -c 1 "$file")" ]; then echo >> "$file"; fi  # end the last line first
    printf '%s\\n' "$key" >> "$file"
    echo "{added} $file"
fi
"""


def authorized_keys_script(public_key_line: str, username: str) -> str:
    """The POSIX sh text that authorizes `public_key_line` for `username` (run as root, or as that user), safe
    to run twice: `set -eu`, every value quoted, what it did printed line by line. ValueError for a key line or
    a user name it will not put in a script."""
    key = parse_public_key(public_key_line)
    parts = public_key_line.split()
    if key is None or len(parts) > 3 or not public_key_line.isascii() or not public_key_line.isprintable():
        raise ValueError("not a single OpenSSH public key line")
    line = public_line(key, parts[2] if len(parts) == 3 and _COMMENT_RE.fullmatch(parts[2]) else None)
    if not USERNAME_RE.fullmatch(username):
        raise ValueError(f"{printable(username.encode())} is not a user name the script accepts")
    return _SCRIPT.format(user=shlex.quote(username), key=shlex.quote(line), body=shlex.quote(key_body(line)),
                          started=STARTED, present=PRESENT, added=ADDED)


def install_command(username: str) -> str:
    """The remote command that reads the script on stdin: as root or as `username` itself directly, else
    through `sudo -n` (no password prompt: a sudo that wants one fails at once). In sh whatever the login shell."""
    inner = (f'if [ "$(id -u)" = 0 ] || [ "$(id -un)" = {shlex.quote(username)} ]; then exec sh -s; '
             f'else exec sudo -n sh -s; fi')
    return "sh -c " + shlex.quote(inner)


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


class Verifier(asyncssh.SSHClient):
    """Host key checking for a set-up login: what the unit worker trusts, plus a key recorded under accept-new
    or when it is the fingerprint the operator passed (--trust-host-key). `name` is what `trust` takes."""

    def __init__(self, name: str, server: ServerConfig, known: KnownHosts, trust_fingerprint: str | None) -> None:
        self.name = name
        self.server = server
        self.known = known
        self.trust_fingerprint = trust_fingerprint
        self.problem: str | None = None

    def validate_host_public_key(self, host, addr, port, key) -> bool:
        server = self.server
        check = check_host_key(server, self.known, key)
        if check.verdict is Verdict.TRUSTED:
            return True
        if check.verdict is Verdict.UNKNOWN:
            if server.host_key_policy == "accept-new" or (
                    self.trust_fingerprint and self.trust_fingerprint.rstrip("=") == check.presented.rstrip("=")):
                self.known.add(server.host, server.port, key)
                return True
            self.problem = (f"host key {check.presented} of {server.address} is not trusted yet; verify it and pass "
                            f"--trust-host-key {check.presented}, or run `sop-console trust {self.name}`")
            return False
        self.problem = (f"HOST KEY MISMATCH: {server.address} presented {check.presented}, expected "
                        f"{', '.join(check.expected)}; refusing to log in to it")
        return False


async def login(server: ServerConfig, username: str, verifier: Verifier, timeout: float,
                **auth) -> asyncssh.SSHClientConnection:
    """A verified login for a set-up step; OperationFailed for a host key or a network problem (a refused login
    raises asyncssh.PermissionDenied: the caller says whose credentials were refused)."""
    try:
        return await asyncssh.connect(
            server.host, server.port, username=username, client_factory=lambda: verifier,
            known_hosts=([], [], []), server_host_key_algs=host_key_algorithms(server, verifier.known),
            config=None, agent_path=None, gss_auth=False, host_based_auth=False,
            connect_timeout=timeout, login_timeout=timeout, **auth)
    except asyncssh.HostKeyNotVerifiable:
        raise OperationFailed(verifier.problem or f"host key of {server.address} could not be verified") from None
    except (TimeoutError, OSError) as exc:
        raise OperationFailed(f"cannot reach {server.address}: {os_reason(exc)}") from None
    except asyncssh.PermissionDenied:
        raise
    except asyncssh.Error as exc:
        raise OperationFailed(f"{server.address}: {printable(str(exc.reason or exc).encode(), 200)}") from None


async def _run_bounded(conn: asyncssh.SSHClientConnection, command: str, stdin: str,
                       timeout: float) -> tuple[int | None, str, str]:
    """Run `command` with `stdin`: its exit status and what it printed (at most OUTPUT_LIMIT bytes a stream)."""
    async def drain(stream: asyncssh.SSHReader) -> bytes:
        kept = bytearray()
        while chunk := await stream.read(16384):
            kept += chunk[:OUTPUT_LIMIT - len(kept)]
        return bytes(kept)

    async with asyncio.timeout(timeout):
        process = await conn.create_process(command, encoding=None)
        try:
            with contextlib.suppress(BrokenPipeError, asyncssh.Error, OSError):  # it may end unread (sudo refused)
                process.stdin.write(stdin.encode())
                process.stdin.write_eof()
            out, err = await asyncio.gather(drain(process.stdout), drain(process.stderr))
            await process.wait_closed()
        finally:
            process.close()
    return process.exit_status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


async def install_over(conn: asyncssh.SSHClientConnection, public_key_line: str, username: str, where: str,
                       timeout: float) -> str:
    """Authorize the key for `username` over a logged-in connection (as that user, root, or a user with
    password-less sudo): INSTALLED or ALREADY; OperationFailed with the server's cleaned words otherwise."""
    login_user = conn.get_extra_info("username")
    try:
        status, out, err = await _run_bounded(conn, install_command(username),
                                              authorized_keys_script(public_key_line, username), timeout)
    except ValueError as exc:
        raise OperationFailed(f"cannot install the key for {username}: {exc}") from None
    except (TimeoutError, asyncssh.Error, OSError) as exc:
        raise OperationFailed(f"{where}: could not run the key install as {login_user}: "
                              f"{os_reason(exc) if isinstance(exc, OSError) else exc}") from None
    lines = out.splitlines()
    said = printable(err.strip().encode(), SHOWN_ERROR) if err.strip() else "nothing"
    if status == 0 and lines and lines[-1].startswith((ADDED, PRESENT)):
        return INSTALLED if lines[-1].startswith(ADDED) else ALREADY
    if not any(line.startswith(STARTED) for line in lines) and login_user not in ("root", username):
        # the script never ran: sudo refused
        raise OperationFailed(f"{where}: {login_user} cannot act for {username} (it is neither root nor {username}, "
                              f"and `sudo -n` did not run the install: it said {said}); log in as root or as a "
                              f"user with password-less sudo")
    if not any(line.startswith(STARTED) for line in lines):
        raise OperationFailed(f"{where}: the key install did not start as {login_user} (exit {status}; it said "
                              f"{said}): does the account have a shell (no ForceCommand)?")
    raise OperationFailed(f"{where}: could not update the authorized_keys of {username} "
                          f"(exit {status}; it said {said})")


async def install_with_password(name: str, server: ServerConfig, username: str, key: asyncssh.SSHKey,
                                comment: str, known: KnownHosts, password: Callable[[], Awaitable[str]], *,
                                timeout: float, trust_fingerprint: str | None = None,
                                login_user: str | None = None) -> InstallResult:
    """Authorize `key` for `username` on `server`: nothing asked when key login works already, else a login with
    the password of `login_user` (default `username`; root or a user with password-less sudo may act for
    another) that runs authorized_keys_script, then a key login to prove it. `name` is what `trust` takes."""
    info = PublicKeyInfo(public_line(key, comment), fingerprint(key))
    login_user = login_user or username

    def result(outcome: str) -> InstallResult:
        return InstallResult(outcome, info, server.address, username)

    async def key_login() -> asyncssh.SSHClientConnection:
        return await login(server, username, Verifier(name, server, known, trust_fingerprint), timeout,
                           client_keys=[key], password=None, kbdint_auth=False, preferred_auth="publickey")

    # 1. Does key login already work? Then there is nothing to do and nothing to ask.
    try:
        conn = await key_login()
    except asyncssh.PermissionDenied:
        pass
    else:
        conn.close()
        return result(ALREADY)

    # 2. Log in with the password and append the key.
    secret = await password()
    try:
        conn = await login(server, login_user, Verifier(name, server, known, trust_fingerprint), timeout,
                           client_keys=None, password=secret, preferred_auth="keyboard-interactive,password")
    except asyncssh.PermissionDenied:
        raise OperationFailed(
            f"{server.address} refused the password for {login_user} "
            "(wrong password, or password login is disabled there)") from None
    finally:
        secret = None  # noqa: F841 - drop our reference at once
    try:
        outcome = await install_over(conn, info.line, username, server.address, timeout)
    finally:
        conn.close()

    # 3. Prove it: key login must work now (a server may read keys from elsewhere, see AuthorizedKeysFile).
    try:
        conn = await key_login()
    except asyncssh.PermissionDenied:
        raise OperationFailed(
            f"the key is in ~/.ssh/authorized_keys of {username} on {server.address}, but key login still "
            "fails: check the server's AuthorizedKeysFile, StrictModes and PubkeyAuthentication") from None
    conn.close()
    return result(outcome)


async def install_key(paths: StatePaths, unit: UnitConfig, tunnel: TunnelConfig,
                      password: Callable[[], Awaitable[str]], *, trust_fingerprint: str | None = None,
                      ) -> InstallResult:
    """`sop-console key install UNIT`: the unit's key (made on first use) for its user on its server."""
    key = await asyncio.to_thread(load_or_create_unit_key, paths, unit.name)
    return await install_with_password(unit.name, unit.server, unit.username, key, f"sop-console-{unit.name}",
                                       KnownHosts(paths.known_hosts), password, timeout=tunnel.connect_timeout,
                                       trust_fingerprint=trust_fingerprint)

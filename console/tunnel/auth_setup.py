"""Set-up auth for an endpoint: get a unit's key authorized for the endpoint's user, three ways (the seed's
"Password", "Keypairs" and "scripts"), each ending with a fresh `check_login` of the endpoint:

- password: `key install`'s path (console/tunnel/key_install.py): nothing asked when key login works already,
  else one login with a password that is kept no longer than that login;
- key: a login with a key the operator already has (`--identity FILE`), as root, as the user, or as a user with
  password-less sudo, that installs our key for the endpoint's user;
- script: the POSIX sh script an operator runs on the server as root; the check tells whether it worked.

All three install with the same shell text (key_install.authorized_keys_script). A set-up that cannot do its part
(a refused login, sudo that wants a password, a host key not trusted) raises OperationFailed with one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import asyncssh

from console.core.config import ServerConfig
from console.core.errors import OperationFailed, os_reason
from console.core.keys import fingerprint, load_or_create_key, parse_public_key, public_line
from console.core.known_hosts import KnownHosts
from console.core.status import EndpointCheck
from console.tunnel import key_install
from console.tunnel.endpoint_check import check_login

METHODS = ("key", "password", "script")  # the ways to set up auth, in the order they are offered


def _comment(unit: str | None) -> str:
    return f"sop-console-{unit}" if unit else "sop-console"


def _whose(unit: str | None) -> str:
    return f"the key of unit {unit}" if unit else "our key"


async def _our_key(key_path: Path, unit: str | None) -> asyncssh.SSHKey:
    """The unit's private key, made (0600 in a 0700 dir) when there is none yet: setting up auth is its first use."""
    return await asyncio.to_thread(load_or_create_key, key_path, _comment(unit))


def _outcome(outcome: str, unit: str | None, fp: str, username: str, where: str, how: str) -> str:
    if outcome == key_install.INSTALLED:
        return f"installed {_whose(unit)} ({fp}) for {username} on {where}, {how}"
    return f"{_whose(unit)} ({fp}) was already authorized for {username} on {where}"


async def setup_by_password(name: str, server: ServerConfig, username: str, key_path: Path, known: KnownHosts,
                            password: Callable[[], Awaitable[str]], *, unit: str | None, timeout: float,
                            login_user: str | None = None, trust_fingerprint: str | None = None,
                            ) -> tuple[str, EndpointCheck]:
    """Set up by password: `key install`'s path for the endpoint. `password()` is awaited only when key login
    does not work yet; it is the password of `login_user` (default `username`; root or a user with password-less
    sudo may install for another). Returns what happened and the check after it."""
    key = await _our_key(key_path, unit)
    result = await key_install.install_with_password(
        unit or name, server, username, key, _comment(unit), known, password, timeout=timeout,
        trust_fingerprint=trust_fingerprint, login_user=login_user)
    how = f"logged in as {login_user or username} with a password"
    text = _outcome(result.outcome, unit, result.key.fingerprint, username, server.address, how)
    return text, await check_login(name, server, username, key_path, known, unit=unit, timeout=timeout)


async def read_identity(identity: Path) -> asyncssh.SSHKey:
    """An operator's private key file (`--identity FILE`); OperationFailed in one line when it cannot be used."""
    try:
        return await asyncio.to_thread(asyncssh.read_private_key, str(identity))
    except (asyncssh.KeyImportError, OSError) as exc:
        raise OperationFailed(f"cannot use the identity {identity}: {os_reason(exc)} (a key protected by a "
                              "passphrase cannot be used here: give a key without one)") from None


async def setup_by_key(name: str, server: ServerConfig, username: str, key_path: Path, known: KnownHosts,
                       identity: Path, *, login_user: str, unit: str | None, timeout: float,
                       trust_fingerprint: str | None = None) -> tuple[str, EndpointCheck]:
    """Set up by key: log in as `login_user` with the operator's private key `identity` (root, `username`
    itself, or a user with password-less sudo) and authorize our key for `username`: ~username/.ssh 0700 and
    authorized_keys 0600 owned by that user, the key appended once. Returns what happened and the check after."""
    operator_key = await read_identity(identity)
    key = await _our_key(key_path, unit)
    line = public_line(key, _comment(unit))
    verifier = key_install.Verifier(unit or name, server, known, trust_fingerprint)
    try:
        conn = await key_install.login(server, login_user, verifier, timeout, client_keys=[operator_key],
                                       password=None, kbdint_auth=False, preferred_auth="publickey")
    except asyncssh.PermissionDenied:
        raise OperationFailed(f"{server.address} refused the key {identity} ({fingerprint(operator_key)}) for "
                              f"{login_user}: use a key authorized for root or for a user with password-less "
                              "sudo there") from None
    try:
        outcome = await key_install.install_over(conn, line, username, server.address, timeout)
    finally:
        conn.close()
    text = _outcome(outcome, unit, fingerprint(key), username, server.address, f"logged in as {login_user} with "
                    f"{identity}")
    return text, await check_login(name, server, username, key_path, known, unit=unit, timeout=timeout)


def setup_script(public_key_line: str, username: str, sshd_part: str = "",
                 also: Sequence[tuple[str, str]] = ()) -> str:
    """Set up by script: the POSIX sh script an operator runs on the server as root (`sh FILE`). It authorizes
    the key for `username` (key_install.authorized_keys_script: idempotent, what it did printed), and each
    (key line, user) of `also` after it (an endpoint's other units), then runs `sshd_part` (the sshd settings
    changes, given by the sshd check). `set -eu`: it stops at the first failure; safe to run twice. ValueError for
    a key line or a user name it will not put in a script."""
    root = 'if [ "$(id -u)" != 0 ]; then echo "run this script as root (sudo sh FILE)" >&2; exit 1; fi\n'
    script = ""
    for n, (line, user) in enumerate([(public_key_line, username), *also], 1):
        key = parse_public_key(line)
        what = f"{fingerprint(key)} " if key is not None else ""
        step = f"1.{n}" if also else "1."
        script += f"# {step} authorize the key {what}for {user} (added once: safe to run twice)\n"
        script += (root if n == 1 else "") + key_install.authorized_keys_script(line, user)
    users = ", ".join(dict.fromkeys(user for _, user in [(public_key_line, username), *also]))
    script = f"#!/bin/sh\n# sop-console: set up auth for {users} on this server. Run it as root: sh FILE\n" + script
    if sshd_part.strip():
        script += "# 2. the sshd settings\n" + sshd_part.rstrip("\n") + "\n"
    return script + 'echo "sop-console: done"\n'


async def check_after_script(name: str, server: ServerConfig, username: str, key_path: Path, known: KnownHosts,
                             *, unit: str | None, timeout: float) -> tuple[str, EndpointCheck]:
    """After the operator ran the script: the check, and what it means in one line."""
    check = await check_login(name, server, username, key_path, known, unit=unit, timeout=timeout)
    if check.available:
        return f"{_whose(unit)} logs in as {username} on {server.address} now", check
    return (f"key login as {username} on {server.address} still fails: did the script run as root on that "
            f"server, to the end?"), check

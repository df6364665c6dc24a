"""The sshd check of an endpoint (`endpoints check-sshd NAME [--fix]`), over an SSH connection already logged in.

1. Which sshd serves this connection, with which config: the session's ancestors in /proc up to the listening
   sshd, whose command line may carry `-f FILE` (else /etc/ssh/sshd_config) and `-o` options. That is also the
   pid a fix reloads. (It is what makes the check testable: the test sshd runs with `-f` its own config.)
2. The settings: `sshd -T -f FILE -C user=U,host=H,addr=A,...` (effective, Match blocks evaluated for the units'
   account from this address) when we are root or sudo needs no password; else the files themselves, FILE and its
   Includes, read as the login user (console/core/sshd_settings.FileReader says what that cannot see).
3. Judged by console/core/sshd_settings.judge; `fix_sshd` runs console/core/sshd_fix's script as root (`sh -s`,
   or `sudo -n sh -s`), then reads and judges again and reports before and after.

Everything the server sends is bounded: bytes per command, lines, files, and one deadline for the whole check.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import time

import asyncssh

from console.core.clock import utc_iso
from console.core.errors import OperationFailed
from console.core.sshd_fix import EXIT_DONE, SAY, sshd_fix_script
from console.core.sshd_settings import (DEFAULTS, MAX_DEPTH, MAX_TEXT, ForwardNeeds, FileReader, SshdReading,
                                        judge, parse_effective, shown)
from console.core.status import SshdCheck

DEFAULT_CONFIG = "/etc/ssh/sshd_config"
DEFAULT_SSHD = "/usr/sbin/sshd"
MAX_OUTPUT = 1024 * 1024       # bytes one command may send us (files: MAX_TEXT each)
MAX_STDERR = 8 * 1024
MAX_HOPS = 32                  # ancestors walked from our shell to the listener
SSHD_ARG_OPTIONS = set("CEbcfghkopu")  # sshd's options that take an argument (its getopt string)

_PROBE = r"""LC_ALL=C; export LC_ALL
uid=$(id -u)
echo "uid $uid"
if [ "$uid" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then echo "sudo yes"
else echo "sudo no"; fi
echo "conn ${SSH_CONNECTION:-}"
pid=$$; hops=0; found=
while [ "$hops" -lt @HOPS@ ] && [ -r "/proc/$pid/status" ]; do
    name=; ppid=
    while IFS=': 	' read -r key value rest; do
        case $key in Name) name=$value ;; PPid) ppid=$value; break ;; esac
    done < "/proc/$pid/status"
    case $name in
    sshd*) found=1; printf 'proc %s ' "$pid"; head -c 2048 "/proc/$pid/cmdline" | tr '\000\n' '\001 '; echo ;;
    *) [ -z "$found" ] || break ;;
    esac
    case $ppid in ''|0) break ;; esac
    pid=$ppid; hops=$((hops + 1))
done
""".replace("@HOPS@", str(MAX_HOPS))

_FETCH = r"""LC_ALL=C; export LC_ALL
IFS='
'
fetch() {
    printf 'glob %s\n' "$1"; any=
    for f in $1; do
        [ -f "$f" ] || continue
        any=1
        if [ -r "$f" ]; then
            printf 'file %s %s\n' "$(wc -c < "$f" | tr -d ' ')" "$f"; head -c @LIMIT@ "$f"; printf '\n'
        else printf 'unreadable 0 %s\n' "$f"; fi
    done
    d=${1%/*}
    if [ -z "$any" ] && [ -d "$d" ] && [ ! -r "$d" ]; then printf 'unlistable 0 %s\n' "$d"; fi
}
""".replace("@LIMIT@", str(MAX_TEXT))


# ---------------------------------------------------------------------------------------------------- running

async def _run(conn: asyncssh.SSHClientConnection, command: str, stdin: str | None = None,
               limit: int = MAX_OUTPUT) -> tuple[int | None, bytes, str]:
    """One command over a new session: (exit status, at most `limit` bytes of stdout, cleaned start of stderr).
    A server sending more is cut off (the session closed); the caller's deadline bounds the time."""
    try:
        process = await conn.create_process(command, input=stdin.encode() if stdin is not None else None,
                                            encoding=None)
    except asyncssh.ChannelOpenError as exc:
        raise OperationFailed(f"the server refused a session for the check's commands: {shown(exc.reason)} "
                              "(MaxSessions 0, or a ForceCommand?)") from None

    async def read(stream, cap: int) -> bytes:
        data = b""
        while len(data) <= cap:
            chunk = await stream.read(65536)
            if not chunk:
                return data
            data += chunk
        process.close()  # more than we take: stop it
        return data[:cap]

    try:
        out, err = await asyncio.gather(read(process.stdout, limit), read(process.stderr, MAX_STDERR))
        await process.wait_closed()
    finally:
        process.close()
    return process.exit_status, out, shown(err.decode("utf-8", "replace").strip().replace("\n", "; "), 200)


# ---------------------------------------------------------------------------------------------------- where

def listener_args(cmdline: bytes) -> list[str]:
    """The listener's argv from /proc/PID/cmdline as the probe sent it (NULs as \\x01). A listening sshd
    rewrites it as one string (setproctitle): "sshd: /usr/sbin/sshd -D -f FILE [listener] 0 of 10-100 startups"."""
    parts = [part.decode("utf-8", "replace") for part in cmdline.split(b"\x01") if part]
    if len(parts) > 1:
        return parts
    text = parts[0] if parts else ""
    text = text.removeprefix("sshd: ")
    text = re.split(r" \[listener\]", text, maxsplit=1)[0]
    return text.split()


def options_of(argv: list[str]) -> tuple[str | None, list[str], bool]:
    """(-f FILE, the -o options, -i inetd mode) from sshd's argv, with getopt's rules (-fFILE, -Df FILE ...)."""
    config, options, inetd = None, [], False
    index = 1
    while index < len(argv):
        word = argv[index]
        index += 1
        if not word.startswith("-") or word == "-":
            continue
        letters = word[1:]
        for at, letter in enumerate(letters):
            if letter in SSHD_ARG_OPTIONS:
                value = letters[at + 1:]
                if not value and index < len(argv):
                    value, index = argv[index], index + 1
                if letter == "f":
                    config = value
                elif letter == "o":
                    options.append(value)
                break
            if letter == "i":
                inetd = True
    return config, options, inetd


class _Probe:
    """What the probe found: who we are there, and which sshd serves us with which config."""

    def __init__(self, data: bytes) -> None:
        self.uid: int | None = None
        self.sudo = False
        self.connection: list[str] = []
        procs: list[tuple[int, bytes]] = []
        for line in data.splitlines()[:MAX_HOPS + 8]:
            word, _, rest = line.partition(b" ")
            if word == b"uid" and rest.strip().isdigit():
                self.uid = int(rest)
            elif word == b"sudo":
                self.sudo = rest.strip() == b"yes"
            elif word == b"conn":
                self.connection = rest.decode("ascii", "replace").split()
            elif word == b"proc":
                pid, _, cmdline = rest.partition(b" ")
                if pid.isdigit():
                    procs.append((int(pid), cmdline))
        self.found = bool(procs)
        argv = listener_args(procs[-1][1]) if procs else []
        config, self.options, inetd = options_of(argv)
        self.config_file = config or DEFAULT_CONFIG
        self.listener_pid = procs[-1][0] if procs and not inetd else None
        self.sshd = argv[0] if argv and argv[0].startswith("/") and "sshd" in argv[0] else DEFAULT_SSHD
        self.inetd = inetd

    @property
    def privilege(self) -> str:
        return "root" if self.uid == 0 else "sudo" if self.sudo else "none"

    def as_root(self, command: str) -> str:
        return command if self.uid == 0 else f"sudo -n {command}"

    def match_spec(self, username: str) -> str | None:
        """sshd -T's -C: the units' account, and this connection's addresses (SSH_CONNECTION)."""
        if len(self.connection) != 4 or not re.fullmatch(r"[A-Za-z0-9._][A-Za-z0-9._@$-]*", username):
            return None
        addr, _, laddr, lport = self.connection
        if not all(re.fullmatch(r"[0-9A-Fa-f.:%a-z]+", part) for part in (addr, laddr)) or not lport.isdigit():
            return None
        return f"user={username},host={addr},addr={addr},laddr={laddr},lport={lport}"


def _fetched(data: bytes) -> dict[str, list[tuple[str, str | None]]]:
    """The fetch script's answer: pattern -> [(path, text, or None when unreadable)]."""
    found: dict[str, list[tuple[str, str | None]]] = {}
    current: list[tuple[str, str | None]] | None = None
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break
        word, _, rest = data[pos:end].decode("utf-8", "replace").partition(" ")
        pos = end + 1
        if word == "glob":
            current = found.setdefault(rest, [])
        elif word in ("file", "unreadable", "unlistable") and current is not None:
            size, _, path = rest.partition(" ")
            if word == "file" and size.isdigit():
                take = min(int(size), MAX_TEXT)
                current.append((path, data[pos:pos + take].decode("utf-8", "replace")))
                pos += take + 1
            elif word == "unreadable":
                current.append((path, None))
            else:
                current.append((path + "/", None))
    return found


# ---------------------------------------------------------------------------------------------------- reading

async def _probe(conn: asyncssh.SSHClientConnection) -> _Probe:
    status, out, err = await _run(conn, "sh -s", _PROBE, limit=64 * 1024)
    probe = _Probe(out)
    if status != 0 or probe.uid is None:
        raise OperationFailed("the server did not run the check's commands (a ForceCommand, or no POSIX sh?)"
                              + (f": {err}" if err else ""))
    return probe


async def _effective(conn: asyncssh.SSHClientConnection, probe: _Probe, username: str,
                     server_version: str) -> SshdReading | str:
    """sshd -T as root: the reading, or why it did not work (one line)."""
    spec = probe.match_spec(username)
    command = [probe.sshd, "-T", "-f", probe.config_file]
    for option in probe.options:
        command += ["-o", option]
    if spec:
        command += ["-C", spec]
    status, out, err = await _run(conn, probe.as_root(shlex.join(command)))
    values = parse_effective(out.decode("utf-8", "replace"))
    if status != 0 or "gatewayports" not in values:
        return f"sshd -T failed (exit {status}){': ' + err if err else ''}"
    how = "effective settings from sshd -T" + (f" (Match evaluated for user {username} from {probe.connection[0]})"
                                               if spec else " (global: this connection's addresses are unknown)")
    return SshdReading({k: v for k, v in values.items() if k in DEFAULTS}, "sshd -T", how, probe.config_file,
                       probe.listener_pid, probe.privilege, server_version)


async def _from_files(conn: asyncssh.SSHClientConnection, probe: _Probe, server_version: str,
                      notes: list[str]) -> SshdReading:
    reader = FileReader(probe.config_file)
    for _ in range(MAX_DEPTH + 1):
        patterns = reader.wanted()
        if not patterns:
            break
        script = _FETCH + "".join(f"fetch {shlex.quote(pattern)}\n" for pattern in patterns)
        _, out, _ = await _run(conn, "sh -s", script)
        found = _fetched(out)
        for pattern in patterns:
            reader.add(pattern, found.get(pattern, []))
    if reader.files.get(probe.config_file) is None:
        raise OperationFailed(f"cannot read {shown(probe.config_file)} as the login user, and sshd -T needs root or "
                              "password-less sudo there: nothing to judge")
    if probe.options:
        notes.append(f"sshd also runs with -o {shown(' -o '.join(probe.options))}, which comes first (not read)")
    return reader.reading(listener_pid=probe.listener_pid, privilege=probe.privilege,
                          server_version=server_version, notes=notes)


async def read_sshd_settings(conn: asyncssh.SSHClientConnection, *, username: str | None = None,
                             timeout: float = 10.0) -> SshdReading:
    """The settings of the sshd serving `conn`, effective for `username` (default: the login user; give the
    units' account when logged in as another one). Raises OperationFailed (one line) when they cannot be read."""
    return (await _read(conn, username, timeout))[0]


async def _read(conn: asyncssh.SSHClientConnection, username: str | None, timeout: float,
                probe: _Probe | None = None) -> tuple[SshdReading, _Probe]:
    """read_sshd_settings, with the probe it made (or was given: a re-read after a fix needs no new one)."""
    server_version = conn.get_extra_info("server_version") or ""
    if "OpenSSH" not in server_version:
        raise OperationFailed(f"the server is not OpenSSH ({shown(server_version)}): the sshd check reads OpenSSH's "
                              "settings only (Dropbear: remote forwards beyond loopback need its -a option)")
    user = username or conn.get_extra_info("username") or ""
    version = shown(server_version.removeprefix("SSH-2.0-"))
    try:
        async with asyncio.timeout(timeout):
            probe = probe or await _probe(conn)
            notes: list[str] = []
            if not probe.found:
                notes.append(f"the serving sshd was not found among this session's processes: assuming "
                             f"{DEFAULT_CONFIG}")
            elif probe.inetd:
                notes.append("sshd runs per connection (-i): new connections read a changed config themselves")
            if probe.privilege != "none":
                effective = await _effective(conn, probe, user, version)
                if isinstance(effective, SshdReading):
                    effective.notes[:0] = notes
                    return effective, probe
                notes.append(effective)
            return await _from_files(conn, probe, version, notes), probe
    except TimeoutError:
        raise OperationFailed(f"the server did not answer the sshd check within {timeout:g} s") from None
    except (asyncssh.Error, OSError) as exc:
        raise OperationFailed(f"the sshd check lost its connection: {shown(str(exc) or type(exc).__name__)}") from None


def _check(endpoint: str, reading: SshdReading, needs: ForwardNeeds, started: float) -> SshdCheck:
    return SshdCheck(endpoint=endpoint, source=reading.source, how=reading.how, config_file=reading.config_file,
                     listener_pid=reading.listener_pid, privilege=reading.privilege,
                     server_version=reading.server_version, settings=judge(reading.values, needs),
                     notes=reading.notes, checked_at=utc_iso(),
                     seconds=round(time.monotonic() - started, 3))


async def check_sshd(conn: asyncssh.SSHClientConnection, endpoint: str, needs: ForwardNeeds, *,
                     username: str | None = None, timeout: float = 10.0) -> SshdCheck:
    """Read and judge; changes nothing."""
    started = time.monotonic()
    reading = await read_sshd_settings(conn, username=username, timeout=timeout)
    return _check(endpoint, reading, needs, started)


# ---------------------------------------------------------------------------------------------------- fixing

_FIX_FAILED = {
    1: "the fix could not run there",
    2: "the fix changed nothing: the configuration is invalid already",
    3: "the fix was rolled back: sshd -t refused the new settings",
    4: "the settings are written but sshd was not reloaded",
}


async def run_fix_script(conn: asyncssh.SSHClientConnection, script: str, privilege: str, *,
                         timeout: float = 30.0) -> list[str]:
    """Run a fix script (console/core/sshd_fix) as root over `conn`: `sh -s` for root, `sudo -n sh -s` for sudo.
    The lines it said (cleaned, bounded), or OperationFailed with its reason when it did not finish with exit 0."""
    command = "sh -s" if privilege == "root" else "sudo -n sh -s"
    try:
        async with asyncio.timeout(timeout):
            status, out, err = await _run(conn, command, script, limit=64 * 1024)
    except TimeoutError:
        raise OperationFailed(f"the fix did not finish within {timeout:g} s: check sshd's config on the server"
                              ) from None
    except (asyncssh.Error, OSError) as exc:
        raise OperationFailed(f"the fix lost its connection: {shown(str(exc) or type(exc).__name__)}") from None
    said = [shown(line.removeprefix(SAY), 300) for line in out.decode("utf-8", "replace").splitlines()[:40]
            if line.startswith(SAY)]
    if status != EXIT_DONE:
        reason = said[-1] if said else err or f"exit {status}"
        raise OperationFailed(f"{_FIX_FAILED.get(status or 0, f'the fix failed (exit {status})')}: {reason}")
    return said


async def fix_sshd(conn: asyncssh.SSHClientConnection, endpoint: str, needs: ForwardNeeds, *,
                   username: str | None = None, timeout: float = 30.0) -> SshdCheck:
    """Check; when something needs a change, run the fix script as root over `conn`, then check again. The
    result's `before` holds the settings as they were, `fix` what the script did. Raises OperationFailed (one line,
    with the script's reason) when it could not run, was refused, or rolled back: nothing is left half-changed."""
    started = time.monotonic()
    reading, probe = await _read(conn, username, timeout)
    before = _check(endpoint, reading, needs, started)
    if not before.needs_change:
        before.fix = "nothing to change"
        return before
    if before.privilege == "none":
        raise OperationFailed(f"--fix needs root or password-less sudo on {endpoint}'s server; or run the script "
                              f"of `endpoints setup-auth {endpoint} --method script` there as root")
    script = sshd_fix_script(before.settings, before.config_file, before.listener_pid)
    said = await run_fix_script(conn, script, before.privilege, timeout=timeout)
    after = _check(endpoint, (await _read(conn, username, timeout, probe))[0], needs, started)
    after.before, after.fix, after.fix_output = before.settings, "; ".join(said) or "done", said
    if after.needs_change and after.source == "sshd -T":
        after.notes.append("still needs a change after the fix: a Match block for this user or address sets it "
                           "(our lines are global); change that block")
    return after

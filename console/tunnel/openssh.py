"""OpenSSH's `ssh` as a unit's connection (tunnel.transport: openssh): one supervised ControlMaster, asked through
its control socket for each forward (`ssh -S CTL -O forward -R BIND:PORT:SOCKET`, `-O cancel`) and for the hub's
announcement (a session channel with `-s`).

Why: OpenSSH's C packet path carries a forward's bytes at about 0.8x-1.0x of `ssh -R` with the byte-counting relay
in the daemon (console/tunnel/forward_proxy.py), where asyncssh's Python one reaches about 0.6x (issue 15).

What the master is told (never the operator's ~/.ssh/config, agent or known_hosts: `-F none`):
- the unit's own key only (IdentitiesOnly, no agent, BatchMode: nothing asks for a password);
- the host keys the engine trusts for the server, pinned in a file of their own under an alias of the unit
  (UserKnownHostsFile, HostKeyAlias, StrictHostKeyChecking yes): ssh refuses any other key, and the engine then
  fetches the key itself to say whether it is unknown or changed (console/tunnel/openssh_unit.py);
- keepalives (ServerAliveInterval/CountMax, the unit's keepalive settings) and a connect timeout;
- AES-GCM first, as the asyncssh transport offers (AES-NI), no compression;
- LogLevel DEBUG1 on its stderr, which is read line by line and kept only for: the server's version string (our hub
  or not), our hub's refusal reasons (its SSH_MSG_DEBUG, "Remote: ..."), and the last lines that say why it ended.

The master dies with the daemon (PR_SET_PDEATHSIG on Linux); a master left by a daemon that was killed anyway is
told to exit (`-O exit`) before a new one starts on the same control socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncssh

from console.core.config import join_host_port
from console.tunnel.diagnose import LinkFailed, printable
from console.tunnel.egress import OPEN_CODES
from console.tunnel.worker import PREFERRED_CIPHERS

# The ciphers the asyncssh transport offers, in its order (worker.PREFERRED_CIPHERS: OpenSSH's names, every one)
CIPHERS = ",".join(PREFERRED_CIPHERS)
CONTROL_TIMEOUT = 10.0       # one `-O` request to the master (it answers in milliseconds)
STDERR_LINE = 4096           # the longest line of ssh's stderr kept (longer ones are cut)
KEPT_LINES = 30              # ssh's last lines kept to say why it ended
STDIO_AT_ONCE = 128          # connections of proxy rules through the unit at once, each an `ssh -W` process: more
                             # wait for a slot (as long as the rule's connect timeout lets them)
SOCKET_PATH_MAX = 100        # a Unix socket path's limit is 108 bytes; ssh adds ".XXXXXXXXXXXXXXXX" while binding

_PR_SET_PDEATHSIG = 1


def ssh_binary() -> str | None:
    return shutil.which("ssh")


_VERSIONS: dict[tuple[str, int, int], str] = {}   # (path, inode, mtime) -> what `ssh -V` said


async def not_openssh(ssh: str) -> str | None:
    """Why the `ssh` found cannot be the transport (an appliance's `ssh` may be Dropbear's dbclient, which has no
    control master), or None for OpenSSH's. `ssh -V` is asked once per binary."""
    try:
        info = os.stat(ssh)
    except OSError as exc:
        return f"cannot run {ssh}: {exc.strerror}"
    key = (ssh, info.st_ino, int(info.st_mtime))
    if key not in _VERSIONS:
        try:
            proc = await asyncio.create_subprocess_exec(ssh, "-V", stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            return f"cannot run {ssh} -V: {exc.strerror or exc}"
        try:
            out, err = await asyncio.wait_for(proc.communicate(), CONTROL_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return f"{ssh} -V did not answer within {CONTROL_TIMEOUT:g}s"
        _VERSIONS[key] = ((err + out).decode("utf-8", "replace").strip().splitlines() or [""])[0]
    said = _VERSIONS[key]
    if said.startswith("OpenSSH_"):
        return None
    return (f"tunnel.transport openssh needs OpenSSH's ssh, and {ssh} is {printable(said.encode()) or 'silent'} "
            "(install openssh-client, or set tunnel.transport: asyncssh)")


_SAFE_PATH = re.compile(r"[A-Za-z0-9._/+=,@-]+")


def safe_for_ssh(path: Path) -> bool:
    """A path ssh takes as it is: no space (an -o value is split at spaces), no % or $ (tokens and variables are
    expanded in ControlPath, UserKnownHostsFile, IdentityFile), no ':' (a -R target), nothing else unusual."""
    return bool(_SAFE_PATH.fullmatch(str(path)))


def run_dir(state_dir: Path) -> Path:
    """Where a daemon's control sockets and forward sockets live: `run/` in the state dir when its path is short
    enough for a Unix socket and safe for ssh (safe_for_ssh), else a private dir of ours in the temp dir named
    after the state dir (the same one each time, so a master left behind by a killed daemon is found and told to
    exit). 0700 either way."""
    here = state_dir / "run"
    if len(str(here)) + 40 <= SOCKET_PATH_MAX and safe_for_ssh(here):
        chosen = here
    else:
        digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
        temp = Path(tempfile.gettempdir())
        chosen = (temp if safe_for_ssh(temp) else Path("/tmp")) / f"sop-console-{os.getuid()}-{digest}"
    chosen.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = chosen.lstat()
    if info.st_uid != os.getuid() or not chosen.is_dir() or chosen.is_symlink():
        raise OSError(f"{chosen} is not a directory of this user: refusing to put control sockets there")
    if info.st_mode & 0o077:
        os.chmod(chosen, 0o700)
    return chosen


def _find_prctl():
    """libc's prctl, found here once (not in the child after fork, where loading a library is not safe)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _find_prctl()


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGTERM to ssh if the daemon dies (Linux; elsewhere nothing)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _env() -> dict[str, str]:
    """ssh's environment: no agent, nothing that asks for a password."""
    return {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_ASKPASS", "DISPLAY")}


@dataclass(frozen=True)
class MasterSettings:
    ssh: str                      # the ssh binary
    host: str
    port: int
    username: str
    key_file: Path                # the unit's private key (0600)
    known_hosts: Path             # the pinned keys, under `alias`
    alias: str
    control: Path                 # the control socket
    keepalive_interval: float
    keepalive_count_max: int
    connect_timeout: float

    def argv(self) -> list[str]:
        options = {
            "ControlMaster": "yes", "ControlPath": str(self.control), "ControlPersist": "no",
            "IdentitiesOnly": "yes", "IdentityAgent": "none", "BatchMode": "yes",
            "PreferredAuthentications": "publickey", "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no", "HostbasedAuthentication": "no",
            "UserKnownHostsFile": str(self.known_hosts), "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "yes", "HostKeyAlias": self.alias, "CheckHostIP": "no",
            "UpdateHostKeys": "no", "VerifyHostKeyDNS": "no",
            "ServerAliveInterval": str(_whole_seconds(self.keepalive_interval)),   # 0: off, as for asyncssh
            "ServerAliveCountMax": str(self.keepalive_count_max),
            "ConnectTimeout": str(_whole_seconds(self.connect_timeout)),
            "ExitOnForwardFailure": "no", "Ciphers": CIPHERS, "Compression": "no",
            "ForwardAgent": "no", "ForwardX11": "no", "PermitLocalCommand": "no", "RequestTTY": "no",
            "LogLevel": "DEBUG1",
        }
        argv = [self.ssh, "-F", "none", "-N", "-T", "-i", str(self.key_file), "-p", str(self.port),
                "-l", self.username]
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        return [*argv, "--", self.host]

    def control_argv(self, *args: str, command: tuple[str, ...] = (), log_level: str = "ERROR") -> list[str]:
        """A request to the running master (`-O ...`, or a session multiplexed over it running `command`). ssh
        takes the first value given for an option: `log_level` is the one.

        With no master on the control socket (it just died, or a socket was left behind), ssh would connect by
        itself to the alias as a host name, with the user's default keys and known_hosts: ProxyCommand=false and
        the rest make that attempt end at once, touching nothing."""
        fallback = ["-o", "ProxyCommand=false", "-o", "IdentitiesOnly=yes", "-o", "IdentityFile=none",
                    "-o", "IdentityAgent=none", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes"]
        return [self.ssh, "-F", "none", "-o", "ControlMaster=no", "-o", f"ControlPath={self.control}",
                "-o", "BatchMode=yes", "-o", f"LogLevel={log_level}", *fallback, *args, "--", self.alias, *command]


def _whole_seconds(value: float) -> int:
    """ssh takes whole seconds: a fraction rounds up (0.4 must not become 0, which means off)."""
    return 0 if value <= 0 else max(1, math.ceil(value))


class MasterFailed(Exception):
    """The master could not start or ended. kind: "auth" (the key was refused), "host-key" (ssh refused the server's
    key), "not-ssh" (no SSH greeting came), "net" (everything else); str() is one sentence in the operator's
    words."""

    def __init__(self, kind: str, sentence: str) -> None:
        super().__init__(sentence)
        self.kind = kind


def _after(line: str, marker: str) -> str:
    return line.split(marker, 1)[1].strip().rstrip(".")


def failure(lines: list[str], server: str, timeout: float, status: int | None) -> MasterFailed:
    """Why the master ended, from its last stderr lines (OpenSSH's own words)."""
    said = [line for line in lines if not line.startswith("debug")]
    text = "\n".join(said)
    # ssh's own lines, matched whole: a server's login banner (printed too) cannot pass for one of them. The
    # refusal of our key comes after the banner; a refused host key before it.
    denied = next((line for line in reversed(said) if re.fullmatch(r"\S+: Permission denied \(.*\)\.?", line)), None)
    if denied is not None:
        return MasterFailed("auth", f"server {server} refused the key: {denied}")
    if any(line == "Host key verification failed." or re.fullmatch(r"No \S+ host key is known for \S+ and you have "
                                                                    r"requested strict checking\.", line)
           for line in said):
        return MasterFailed("host-key", f"server {server}: ssh refused the host key it presented")
    for line in said:
        if re.fullmatch(r"Timeout, server \S+ not responding\.?", line):
            return MasterFailed("net", f"server {server} stopped answering keepalives (dead peer detected)")
    for line in said:
        if "connect to host" in line and ": " in line:
            reason = line.rsplit(": ", 1)[1].strip()
            if "timed out" in reason.lower():
                return MasterFailed("net", f"no answer from {server} within {timeout:g}s")
            return MasterFailed("net", f"cannot reach {server}: {reason}")
        if "Could not resolve hostname" in line:
            return MasterFailed("net", f"cannot reach {server}: {_after(line, ': ') if ': ' in line else line}")
    line = _last(said, "Unable to negotiate with")
    if line:   # "Unable to negotiate with HOST port N: no matching cipher found. Their offer: 3des-cbc"
        return MasterFailed("net", f"no algorithm in common with {server}: {printable(_after(line, ': ').encode())}")
    for marker in ("kex_exchange_identification:", "banner exchange:"):
        line = _last(said, marker)
        if line:
            detail = _after(line, marker)
            if "invalid format" in detail or "Connection closed" not in detail:
                return MasterFailed("not-ssh", f"not an SSH server on {server} (ssh: {printable(detail.encode())})")
            return MasterFailed("not-ssh", f"server {server} closed the connection before the SSH greeting "
                                           "(too many unauthenticated connections, or a refusal by address?)")
    for marker, words in (("closed by remote host", "closed by the server"),
                          ("Connection closed by", "closed by the server"),
                          ("Connection reset", "reset by the server"),
                          ("Broken pipe", "broken pipe")):
        if marker in text:
            return MasterFailed("net", f"connection to {server} lost: {words}")
    last = said[-1] if said else f"ssh exited with status {status}"
    return MasterFailed("net", f"connection to {server} lost: {printable(last.encode())}")


def _last(lines: list[str], marker: str) -> str:
    return next((line for line in reversed(lines) if marker in line), "")


@dataclass
class Completed:
    """What a session multiplexed over the master returned (the shape of asyncssh's SSHCompletedProcess)."""

    exit_status: int | None
    stdout: str
    stderr: str


class ControlMaster:
    """One `ssh -M` process: started, watched, asked. It stands where the asyncssh transport's connection does in
    the worker (get_extra_info, close, wait_closed, run)."""

    def __init__(self, settings: MasterSettings, server: str, *,
                 on_lost: Callable[[MasterFailed | None], None],
                 on_remote_debug: Callable[[str], None] = lambda message: None) -> None:
        self.settings = settings
        self.server = server
        self._on_lost = on_lost
        self._on_remote_debug = on_remote_debug
        self.proc: asyncio.subprocess.Process | None = None
        self.server_version: str | None = None
        self.lines: deque[str] = deque(maxlen=KEPT_LINES)
        self._reader: asyncio.Task | None = None    # reads ssh's stderr
        self._watcher: asyncio.Task | None = None   # waits for ssh to end
        self._closing = False
        self._closed = asyncio.Event()
        self._open_failed = ""      # the master's last "open failed" line (a channel the server refused)
        self._open_failures = 0     # how many it has said
        self.forwards: set[MasterForward] = set()   # what the server listens on for us: ended with the master
        self._cancelling: dict[str, asyncio.Future] = {}   # `-R` spec -> its `-O cancel` still on its way
        self._stdio = asyncio.Semaphore(STDIO_AT_ONCE)      # `ssh -W` processes alive (rules' connections)
        self._opening = 0                                   # of which still waiting for their channel
        self._drains: set[asyncio.Future] = set()

    # -- start

    async def start(self) -> None:
        """Start ssh and wait until it has logged in (the control socket appears); MasterFailed saying why not."""
        control = self.settings.control
        await self._end_stale(control)
        self.proc = await asyncio.create_subprocess_exec(
            *self.settings.argv(), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=_env(), preexec_fn=_die_with_parent)
        self._reader = asyncio.create_task(self._read_stderr())
        deadline = time.monotonic() + 2 * self.settings.connect_timeout + 1
        pause = 0.002
        try:
            while not control.exists():
                if self._reader.done():   # ssh ended before it logged in
                    status = await self.proc.wait()
                    self._closed.set()
                    raise failure(list(self.lines), self.server, self.settings.connect_timeout, status)
                if time.monotonic() > deadline:
                    raise MasterFailed("net", f"no answer from {self.server} within "
                                              f"{self.settings.connect_timeout:g}s (ssh did not log in)")
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.02)
        except BaseException:   # failed, timed out, or the unit was stopped meanwhile: no ssh is left behind
            self._closing = True
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
            self._closed.set()
            raise
        self._watcher = asyncio.create_task(self._wait_end())

    async def _end_stale(self, control: Path) -> None:
        """A control socket left behind: a master of a daemon that was killed may still hold its forwards."""
        if control.exists() or control.is_symlink():
            await self._control("-O", "exit", timeout=2.0)
            with contextlib.suppress(OSError):
                control.unlink()

    async def _read_stderr(self) -> None:
        stream = self.proc.stderr
        while True:
            try:
                raw = await stream.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                raw = exc.partial
                if not raw:
                    return
            except asyncio.LimitOverrunError as exc:   # a line beyond the stream's limit: keep its start
                raw = await stream.read(exc.consumed)
            line = raw[:STDERR_LINE].decode("utf-8", "replace").rstrip("\r\n")
            self._heard(line)

    def _heard(self, line: str) -> None:
        if "remote software version " in line and self.server_version is None:
            software = line.split("remote software version ", 1)[1].strip()
            self.server_version = f"SSH-2.0-{software}"
        elif line.startswith("debug1: Remote: "):          # the server's SSH_MSG_DEBUG
            self._on_remote_debug(line[len("debug1: Remote: "):])
            return
        elif line.startswith("debug"):
            return
        elif ": open failed: " in line:   # "channel 3: open failed: connect failed: Connection refused"
            self._open_failed, self._open_failures = line, self._open_failures + 1
        self.lines.append(line)

    async def _wait_end(self) -> None:
        status = await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 1.0)
        for forward in list(self.forwards):
            forward.lost()
        if not self._closing:
            self._on_lost(failure(list(self.lines), self.server, self.settings.connect_timeout, status))
        self._closed.set()

    # -- the connection's surface

    def get_extra_info(self, name: str, default=None):
        return self.server_version if name == "server_version" else default

    def close(self) -> None:
        self._closing = True
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # -- requests through the control socket

    async def _control(self, *args: str, command: tuple[str, ...] = (), input: bytes | None = None,
                       timeout: float = CONTROL_TIMEOUT) -> tuple[int | None, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            *self.settings.control_argv(*args, command=command), stdin=asyncio.subprocess.PIPE if input is not None else
            asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env())
        try:
            out, err = await asyncio.wait_for(proc.communicate(input), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise TimeoutError(f"ssh's control master did not answer within {timeout:g}s") from None
        return proc.returncode, out, err

    async def forward(self, bind: str, port: int, socket: Path) -> int:
        """Ask the server to listen on bind:port for connections to `socket`; the port it listens on (the one it
        chose for 0). OSError with the server's refusal as ssh says it."""
        code, out, err = await self._control("-O", "forward", "-R", _spec(bind, port, socket))
        if code != 0:
            raise OSError(_refusal(err, code))
        if port == 0:
            text = out.decode("ascii", "replace").strip()
            if not text.isdigit():
                raise OSError(f"ssh did not say which port the server chose (it said {printable(out)!s})")
            return int(text)
        return port

    # -- what proxy rules through the unit ask of its connection (console/tunnel/carrier.py), in asyncssh's shape

    async def open_connection(self, host: str, port: int, **_sizes) -> tuple[asyncio.StreamReader, StdioWriter]:
        """A TCP connection to host:port from the server's side, as streams (asyncssh's open_connection);
        asyncssh.ChannelOpenError with the server's words when it refuses, as asyncssh raises it."""
        try:
            proc = await self.open_stdio(host, port, CONTROL_TIMEOUT)
        except ConnectionRefusedError as exc:   # ssh says "CODE TEXT: MESSAGE" ("connect failed: Connection refused")
            text, _, message = str(exc).partition(": ")
            code = {words: code for code, words in OPEN_CODES.items()}.get(text)
            if code is None:
                code, message = asyncssh.OPEN_CONNECT_FAILED, str(exc)
            raise asyncssh.ChannelOpenError(code, message) from None
        return proc.stdout, StdioWriter(proc)

    async def start_server(self, handler_factory: Callable[[str, int], Callable], bind: str, port: int,
                           **_sizes) -> MasterForward:
        """The server listens on bind:port; each connection arriving there is handed to
        handler_factory(orig_host, orig_port)(reader, writer) (asyncssh's start_server; ssh does not say where a
        connection came from: ("", 0)). OSError with ssh's words when the server refuses."""
        digest = hashlib.sha256(f"{self.settings.control}\0{bind}\0{port}".encode()).hexdigest()[:16]
        socket = self.settings.control.parent / f"in-{digest}"
        with contextlib.suppress(FileNotFoundError):
            socket.unlink()
        server = await asyncio.start_unix_server(lambda r, w: handler_factory("", 0)(r, w), path=str(socket))
        os.chmod(socket, 0o600)
        return await self.listen(bind, port, socket, _UnixServer(server, socket))

    async def listen(self, bind: str, port: int, socket: Path, served: Served) -> MasterForward:
        """The server listens on bind:port for `socket`, which `served` serves here (closed if the server
        refuses: OSError with ssh's words)."""
        try:
            pending = self._cancelling.get(_spec(bind, port, socket))
            if pending is not None:   # the same forward dropped a moment ago (a reload): its cancel goes first,
                await pending         # or the master would take this one as a duplicate and then cancel it
            chosen = await self.forward(bind, port, socket)
        except BaseException:
            served.close()
            raise
        forward = MasterForward(self, bind, port, chosen, socket, served)
        self.forwards.add(forward)
        return forward

    async def open_stdio(self, host: str, port: int, timeout: float) -> asyncio.subprocess.Process:
        """A `direct-tcpip` channel to host:port through the master (`ssh -W`), as a process whose stdin and stdout
        are the connection, returned once the server has opened the channel. ConnectionRefusedError with the
        server's words (from the master's stderr) when it refuses; OSError when ssh fails otherwise."""
        async with asyncio.timeout(timeout):
            await self._stdio.acquire()   # a slot for the process's whole life (STDIO_AT_ONCE)
        failures_before, alone = self._open_failures, self._opening == 0
        self._opening += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.settings.control_argv("-W", join_host_port(host, port), log_level="DEBUG1"),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=_env())
        except BaseException:
            self._opening -= 1
            self._stdio.release()
            raise
        waiting = asyncio.ensure_future(proc.wait())
        waiting.add_done_callback(lambda _: self._stdio.release())
        try:
            said: list[str] = []
            async with asyncio.timeout(timeout):
                while True:
                    line = (await proc.stderr.readline())[:STDERR_LINE].decode("utf-8", "replace").strip()
                    if "master session id" in line:   # the master answers once the server opened the channel
                        drain = asyncio.ensure_future(_drain(proc.stderr))
                        self._drains.add(drain)
                        drain.add_done_callback(self._drains.discard)
                        return proc
                    if not line:
                        break
                    said.append(line)
            await proc.wait()
            refused = await self._open_failure(failures_before)
            if refused and not alone:   # another channel was opening too: the words may be its
                refused = "the server refused it (several were opening at once: which refusal was this one's is " \
                          "not known)"
            if refused:
                raise ConnectionRefusedError(refused)
            raise OSError(printable(" ".join(said).encode()) or f"ssh -W exited with status {proc.returncode}")
        except BaseException:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            raise
        finally:
            self._opening -= 1

    async def _open_failure(self, before: int) -> str | None:
        """The server's words for the channel it just refused ("connect failed: Connection refused"): the master's
        "open failed" line that came after `before` of them (its stderr is read on its own: the line may come a
        moment after the refusal reached the -W client)."""
        deadline = time.monotonic() + 0.2
        while self._open_failures == before:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.01)
        said = self._open_failed.split(": open failed: ", 1)[1]
        return "".join(char for char in said if char.isprintable())[:200]   # cleaned again where it is shown

    def cancel_soon(self, bind: str, port: int, socket: Path) -> asyncio.Future:
        """Cancel a forward (`-O cancel`) without waiting; listen() on the same forward waits for it."""
        spec = _spec(bind, port, socket)
        task = asyncio.ensure_future(self.cancel(bind, port, socket))
        self._cancelling[spec] = task

        def done(finished: asyncio.Future) -> None:
            if self._cancelling.get(spec) is finished:
                del self._cancelling[spec]

        task.add_done_callback(done)
        return task

    async def cancel(self, bind: str, port: int, socket: Path) -> None:
        with contextlib.suppress(OSError, TimeoutError):
            await self._control("-O", "cancel", "-R", _spec(bind, port, socket), timeout=5.0)

    async def run(self, *, subsystem: str, input: str, timeout: float) -> Completed:
        """A session channel for a subsystem, multiplexed over the master (our hub's announcement)."""
        code, out, err = await self._control("-T", "-s", command=(subsystem,), input=input.encode(), timeout=timeout)
        if code == 255:
            raise LinkFailed(f"ssh's session for {subsystem} failed: {_refusal(err, code)}")
        return Completed(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


class StdioWriter:
    """The writing half of a connection through `ssh -W` (its stdin), as asyncio's StreamWriter: the end of
    writing is EOF on stdin (ssh passes it on); closing it ends the process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc, self.stdin = proc, proc.stdin

    def write(self, data: bytes) -> None:
        self.stdin.write(data)

    async def drain(self) -> None:
        await self.stdin.drain()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.stdin.close()

    def is_closing(self) -> bool:
        return self.stdin.is_closing()

    def get_extra_info(self, name: str, default=None):
        return default

    def close(self) -> None:
        self.stdin.close()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def wait_closed(self) -> None:
        await self.proc.wait()


class Served(Protocol):
    """What serves a forward's socket here: a forward's relay (forward_proxy.ForwardProxy), a rule's stream server."""

    def close(self) -> None: ...


class MasterForward:
    """A port the server listens on through the master (`-O forward -R BIND:PORT:SOCKET`) and what serves SOCKET
    here. close(): both (the forward is cancelled through the master); lost(): ours only (the master is gone, and
    the server's listener with it)."""

    def __init__(self, master: ControlMaster, bind: str, requested: int, port: int, socket: Path,
                 served: Served) -> None:
        self.master, self.bind, self.requested, self.port = master, bind, requested, port
        self.socket, self.served = socket, served
        self._cancel: asyncio.Future | None = None

    def get_port(self) -> int:
        return self.port

    def close(self) -> None:
        self.lost()
        if self.master.proc is not None and self.master.proc.returncode is None and self._cancel is None:
            self._cancel = self.master.cancel_soon(self.bind, self.requested, self.socket)

    def lost(self) -> None:
        self.master.forwards.discard(self)
        self.served.close()


class _UnixServer:
    """A rule's stream server on its Unix socket; closed, the socket file goes too."""

    def __init__(self, server: asyncio.AbstractServer, socket: Path) -> None:
        self.server, self.socket = server, socket

    def close(self) -> None:
        self.server.close()
        with contextlib.suppress(OSError):
            self.socket.unlink()


async def _drain(stream: asyncio.StreamReader) -> None:
    """Read what is left of a stream (ssh's stderr), so ssh never blocks writing to it."""
    with contextlib.suppress(Exception):
        while await stream.read(4096):
            pass


def _spec(bind: str, port: int, socket: Path) -> str:
    """`-R` in ssh's words: [BIND:]PORT:SOCKET; an empty bind means every address the server allows ("*")."""
    return f"{join_host_port(bind or '*', port)}:{socket}"


def _refusal(err: bytes, code: int | None) -> str:
    """The reason in ssh's last line, without its function-name prefixes."""
    lines = [line.strip() for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
    for line in lines:
        if "request failed:" in line:
            return printable(line.split("request failed:", 1)[1].strip().encode())
    if lines:
        return printable(lines[0].split(": ", 1)[-1].encode())
    return f"ssh exited with status {code}"

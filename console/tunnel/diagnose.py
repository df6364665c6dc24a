"""Plain reasons for connections that fail for causes asyncssh's own messages do not name.

- Something that is not an SSH server on the port: asyncssh says "Connection lost" (a web server answers our
  greeting and closes) or "Unexpected kex init msg" (an echo service sends our own packets back). A unit connects
  through `Greeting`, which keeps the first bytes the server sends; `not_ssh` turns them into "not an SSH server
  on HOST:PORT (it said: '...')".
- A refused key: the server cannot tell us whether the key is not authorized or its type is not accepted
  (OpenSSH's PubkeyAcceptedAlgorithms), so `auth_refused` names both, with the fix for each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncssh

GREETING_BYTES = 256  # what a server says first, kept until its SSH identification line is complete
SHOWN_CHARS = 60      # of which this much is shown


class NotAnSSHServer(asyncssh.ProtocolNotSupported):
    """The server on the port does not speak SSH; str() is the whole sentence."""


class LinkFailed(OSError):
    """A unit's connection failed or ended for a reason already put in one sentence (the OpenSSH transport reads
    it from ssh's own words); worker.describe_error says it as it is."""


class Greeting:
    """An asyncssh `tunnel` that makes the plain TCP connection itself and keeps the first bytes the server
    sends (up to its SSH identification line, at most GREETING_BYTES); then it steps out of the data path."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.conn: asyncio.Protocol | None = None  # asyncssh's connection

    async def create_connection(self, session_factory: Callable[[], asyncio.Protocol], host: str,
                                port: int) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
        loop = asyncio.get_running_loop()
        transport, recorder = await loop.create_connection(lambda: _Recorder(self, session_factory()), host, port)
        return transport, recorder.inner

    def complete(self) -> bool:
        data = bytes(self.received)
        return len(data) >= GREETING_BYTES or any(
            line.startswith(b"SSH-") for line in data.split(b"\n")[:-1])


class _Recorder(asyncio.Protocol):
    def __init__(self, greeting: Greeting, inner: asyncio.Protocol) -> None:
        self.greeting, self.inner = greeting, inner
        greeting.conn = inner
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        greeting = self.greeting
        greeting.received += data[:GREETING_BYTES - len(greeting.received)]
        if greeting.complete() and self.transport is not None:
            self.transport.set_protocol(self.inner)  # from now on the bytes go straight to asyncssh
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def printable(data: bytes, limit: int = SHOWN_CHARS) -> str:
    """Bytes as a short quoted text: control characters escaped, at most `limit` characters, '…' if cut."""
    escapes = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}
    shown = []
    for char in data.decode("utf-8", "replace"):
        if char in escapes:
            shown.append(escapes[char])
        elif char.isprintable():
            shown.append(char)
        else:
            shown.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
    text = "".join(shown)
    if len(text) > limit:
        text = text[:limit] + "…"
    return f"'{text}'"


def not_ssh(greeting: Greeting, where: str) -> NotAnSSHServer | None:
    """After a failed connect: a NotAnSSHServer when what the server sent shows it does not speak SSH, else None
    (it said nothing, or it is an SSH server that failed for another reason)."""
    data = bytes(greeting.received)
    if not data:
        return None
    lines = [line.rstrip(b"\r") for line in data.split(b"\n")]
    ident = next((line for line in lines if line.startswith(b"SSH-")), None)
    if ident is None:
        return NotAnSSHServer(f"not an SSH server on {where} (it said: {printable(data)})")
    ours = greeting.conn.get_extra_info("client_version") if greeting.conn is not None else None
    if ours and ident == ours.encode("ascii", "replace"):
        return NotAnSSHServer(f"not an SSH server on {where} (it sent our own greeting back, "
                              f"{printable(ident)}: an echo service?)")
    return None


def auth_refused(server: str, unit: str, username: str, key_type: str) -> str:
    """The reason for auth-failed: the server refused our key, and it does not say why."""
    return (f"server {server} refused the {key_type} key of unit {unit} for user {username}: either the key is "
            f"not authorized there (run `sop-console key install {unit}`), or the server does not accept "
            f"{key_type} keys (add {key_type} to PubkeyAcceptedAlgorithms in its sshd_config and reload it)")

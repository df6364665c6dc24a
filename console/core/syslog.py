"""Lines to syslog (`log.syslog: true`), so an appliance's own log pipeline picks up the tunnel log and the
operation log: RFC 3164 datagrams, `<PRI>sop-console[PID]: MESSAGE`, facility daemon, to `log.syslog_address`:
a Unix datagram socket (`/dev/log`, the default) or `host:port` over UDP.

Sending never blocks the daemon's loop: the socket is non-blocking, and a line the receiver has no room for is
dropped and counted (one warning when dropping starts, one with the count when lines get through again). A
missing socket (no syslog daemon yet) is tried again at most once a second, and said once.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import time
from dataclasses import dataclass

log = logging.getLogger("console.syslog")

IDENT = "sop-console"
FACILITY_DAEMON = 3
ERR, WARNING, NOTICE, INFO = 3, 4, 5, 6
MAX_BYTES = 1024          # RFC 3164's bound on a whole message
RETRY_SECONDS = 1.0

# The tunnel log's lines have no level: refusals (a forward the server refused, a hub refusal) are warnings,
# failures errors, the rest information. Refusal words win: "refused auth ... : key unknown" is a refusal.
_REFUSAL = re.compile(r"\b(refused|refusing|refuses|ending the session|retrying now)\b", re.IGNORECASE)
_ERROR = re.compile(r"\b(failed|failure|error|errors|mismatch|cannot|unusable|dead peer|not trusted)\b",
                    re.IGNORECASE)


def severity_of(line: str) -> int:
    """The syslog severity of a tunnel log line (its text after the time stamp)."""
    if _REFUSAL.search(line):
        return WARNING
    if _ERROR.search(line):
        return ERR
    return INFO


@dataclass(frozen=True)
class Target:
    """Where lines go: a Unix socket path, or (host, port) over UDP."""

    path: str | None = None
    host: str | None = None
    port: int = 514

    @classmethod
    def parse(cls, address: str) -> Target | None:
        """'/dev/log' or 'address:port' ('127.0.0.1:514', '[::1]:514': an IP address, so sending never waits for
        a name to resolve); None when it is neither."""
        if address.startswith("/"):
            return cls(path=address)
        match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([0-9.]+):(\d{1,5})", address)
        if not match:
            return None
        host, port = match.group(1) or match.group(3), int(match.group(2) or match.group(4))
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None
        return cls(host=host, port=port) if 1 <= port <= 65535 else None


class Syslog:
    """One sender; `configure` changes where it sends (a config reload), None switches it off."""

    def __init__(self, address: str | None = None, ident: str = IDENT) -> None:
        self.ident = ident
        self.target: Target | None = None
        self._sock: socket.socket | None = None
        self._next_try = 0.0
        self._failing: str | None = None
        self.dropped = 0
        self.configure(address)

    @property
    def enabled(self) -> bool:
        return self.target is not None

    def configure(self, address: str | None) -> None:
        target = Target.parse(address) if address else None
        if target == self.target:
            return
        self.close()
        self.target = target
        self._next_try = 0.0

    def send(self, message: str, severity: int = INFO) -> None:
        if self.target is None:
            return
        head = f"<{FACILITY_DAEMON * 8 + severity}>{self.ident}[{os.getpid()}]: "
        data = (head + " ".join(message.splitlines())).encode("utf-8", "replace")
        if len(data) > MAX_BYTES:
            data = data[:MAX_BYTES - 3].decode("utf-8", "ignore").encode() + b"..."
        sock = self._socket()
        if sock is None:
            self.dropped += 1
            return
        try:
            sock.send(data)
        except BlockingIOError:  # the receiver is behind: drop the line rather than wait for it
            self.dropped += 1
            self._fail("the syslog receiver is not keeping up")
            return
        except OSError as exc:  # the socket went away (syslog restarted): connect again on a later line
            self.dropped += 1
            self.close()
            self._next_try = time.monotonic() + RETRY_SECONDS
            self._fail(os.strerror(exc.errno) if exc.errno else str(exc))
            return
        if self._failing is not None:
            log.warning("syslog %s takes lines again (%d dropped: %s)", self._where(), self.dropped, self._failing)
            self._failing, self.dropped = None, 0

    def _socket(self) -> socket.socket | None:
        if self._sock is not None:
            return self._sock
        if time.monotonic() < self._next_try or self.target is None:
            return None
        target = self.target
        try:
            if target.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                address: str | tuple[str, int] = target.path
            else:
                info = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_DGRAM,
                                          flags=socket.AI_NUMERICHOST)[0]
                sock = socket.socket(info[0], socket.SOCK_DGRAM)
                address = info[4][:2]
            sock.setblocking(False)
            sock.connect(address)
        except OSError as exc:
            self._next_try = time.monotonic() + RETRY_SECONDS
            self._fail(os.strerror(exc.errno) if exc.errno else str(exc))
            return None
        self._sock = sock
        return sock

    def _fail(self, reason: str) -> None:
        if reason != self._failing:
            log.warning("syslog %s: %s; lines are dropped until it takes them", self._where(), reason)
            self._failing = reason

    def _where(self) -> str:
        target = self.target
        if target is None:
            return "(off)"
        return target.path or f"{target.host}:{target.port} (udp)"

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

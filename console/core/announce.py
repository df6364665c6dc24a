"""What a unit tells a hub about its forwards: for each port the hub gave it, the forward's name, where it leads
(`local`) and, when configured, the service URI in the seed's connect.yaml form (`smb://samba.example.com:139`).

The wire: after its forwards listen, a unit opens one session channel on its connection to the hub, asks for
the subsystem ANNOUNCE_SUBSYSTEM, writes one JSON document and closes its side:

    {"v": 1, "forwards": [{"port": 2200, "name": "smb", "local": "samba.example.com:139",
                           "service": "smb://samba.example.com:139"}]}

Each announcement is the whole current list (it replaces the previous one of that session). The hub answers with
one JSON line, {"ok": true, "recorded": [2200], "ignored": [{"port": 2201, "reason": "..."}], "bind": "127.0.0.1"}
(`bind`: the address the hub's client ports really listen on, whatever the unit asked for), and exit status 0
(1 with {"ok": false, "error": ...} when the document is refused). The hub executes nothing: the subsystem only
reads data. A unit announces only to a server whose SSH version string is HUB_VERSION (so a plain OpenSSH server
never sees the request), and a plain OpenSSH client that announces nothing still forwards (destination null).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

ANNOUNCE_SUBSYSTEM = "sop-announce@sop-console"
HUB_VERSION = "SOPConsoleHub_1"      # the hub's SSH software version: "SSH-2.0-SOPConsoleHub_1"
MAX_BYTES = 64 * 1024
MAX_FORWARDS = 1000
# What a client may put on the operator's screen: printable ASCII without spaces, so no escape sequence or
# control character reaches a terminal or the log.
_PRINTABLE = re.compile(r"^[\x21-\x7e]{1,300}$")


@dataclass(frozen=True)
class Announced:
    port: int
    name: str
    local: str
    service: str | None = None

    @property
    def destination(self) -> str:
        """What the operator sees: the service URI when one was given, else host:port."""
        return self.service or self.local


def reply_bind(reply: dict) -> str | None:
    """The hub's bind address from its reply to an announcement, if it gave one fit to show."""
    bind = reply.get("bind")
    return bind if isinstance(bind, str) and len(bind) <= 64 and _PRINTABLE.match(bind) else None


def is_hub(server_version: str | None) -> bool:
    """True for an SSH identification string of our hub ("SSH-2.0-SOPConsoleHub_1")."""
    return bool(server_version) and server_version.split("-", 2)[-1].startswith("SOPConsoleHub_")


def encode(forwards: list[Announced]) -> str:
    return json.dumps({"v": 1, "forwards": [asdict(f) for f in forwards]}, separators=(",", ":"))


def parse(data: bytes) -> list[Announced]:
    """The forwards of one announcement; ValueError with a reason the client is told."""
    if len(data) > MAX_BYTES:
        raise ValueError(f"announcement over {MAX_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("announcement is not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("forwards"), list):
        raise ValueError('announcement must be {"v": 1, "forwards": [...]}')
    if len(doc["forwards"]) > MAX_FORWARDS:
        raise ValueError(f"announcement lists more than {MAX_FORWARDS} forwards")
    result = []
    for i, item in enumerate(doc["forwards"]):
        if not isinstance(item, dict):
            raise ValueError(f"forwards[{i}] is not an object")
        port, service = item.get("port"), item.get("service")
        if type(port) is not int or not 1 <= port <= 65535:
            raise ValueError(f"forwards[{i}].port must be 1-65535")
        for key in ("name", "local"):
            if not isinstance(item.get(key), str) or not _PRINTABLE.match(item[key]):
                raise ValueError(f"forwards[{i}].{key} must be 1-300 printable characters without spaces")
        if service is not None and (not isinstance(service, str) or not _PRINTABLE.match(service)):
            raise ValueError(f"forwards[{i}].service must be null or 1-300 printable characters without spaces")
        result.append(Announced(port, item["name"], item["local"], service))
    return result


# Why the hub refused a port, told to the unit: sshd gives a client no reason for a refused forward, so the hub
# sends this as an SSH debug message (RFC 4253 11.3) just before its refusal, and the unit shows the exact cause
# instead of a list of guesses. "sop-console-refused 2405: not one of its ports (2400-2404)"
REFUSAL_PREFIX = "sop-console-refused "
_REFUSAL = re.compile(r"^sop-console-refused (\d{1,5}): ([\x20-\x7e]{1,300})$")


def refusal(port: int, reason: str) -> str:
    return f"{REFUSAL_PREFIX}{port}: {reason}"


def parse_refusal(message: str) -> tuple[int, str] | None:
    """(requested port, reason) from the hub's debug message; None for anything else (printable ASCII only)."""
    found = _REFUSAL.match(message)
    return (int(found.group(1)), found.group(2)) if found else None

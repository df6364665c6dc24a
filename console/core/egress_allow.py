"""Where a hub lets its clients reach (`hub.egress_allow`): egress rules through a unit end at the hub, and the hub
opens connections (TCP, `direct-tcpip`) and UDP flows into its own network only to destinations listed here.
None by default: a client is a customer's appliance, and the hub's network is the operator's.

One entry is HOST:PORT, CIDR:PORT or [IPv6]:PORT, the port a number or a range LOW-HIGH:

    egress_allow: [10.0.5.7:80, 10.0.6.0/24:53, "[fd00::1]:443", db.example.com:5432, 127.0.0.1:7000-7010]

An address or network matches a destination given as an address, and a destination given as a name once resolved
(every address the hub would use is checked, and it connects to an allowed one, so a name cannot lead elsewhere).
A name entry matches that exact name (the operator trusts what it resolves to).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from console.core.endpoints import host_problem

_ENTRY = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^\s\[\]]+?)):(?P<low>\d{1,5})(?:-(?P<high>\d{1,5}))?$")


@dataclass(frozen=True)
class Allowed:
    """One entry: a network (an address is a /32 or /128) or a host name, and a port range."""

    text: str
    low: int
    high: int
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    name: str | None = None

    def allows_port(self, port: int) -> bool:
        return self.low <= port <= self.high


def parse_entry(text: object) -> Allowed:
    """One entry from its text; ValueError with the reason in words."""
    if not isinstance(text, str):
        raise ValueError(f"must be HOST:PORT or CIDR:PORT such as 10.0.6.0/24:53, got {text!r}")
    found = _ENTRY.match(text.strip())
    if not found:
        raise ValueError(f"must be HOST:PORT or CIDR:PORT such as 10.0.6.0/24:53, got {text!r}")
    low = int(found.group("low"))
    high = int(found.group("high") or low)
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"{text!r}: port must be 1-65535 (or a range LOW-HIGH within it)")
    host = found.group("v6") or found.group("host")
    try:
        return Allowed(text.strip(), low, high, network=ipaddress.ip_network(host, strict=True))
    except ValueError as exc:
        if "/" in host or found.group("v6"):
            raise ValueError(f"{text!r}: not a network or address ({exc})") from None
    if host_problem(host) is not None:
        raise ValueError(f"{text!r}: {host_problem(host)}")
    return Allowed(text.strip(), low, high, name=host.lower())


class EgressAllow:
    """The parsed list; `reason(host, port)` says why a destination is refused (None: allowed)."""

    def __init__(self, entries: tuple[str, ...] | list[str] = ()) -> None:
        self.entries = [parse_entry(e) for e in entries]

    def __bool__(self) -> bool:
        return bool(self.entries)

    def allows_name(self, host: str, port: int) -> bool:
        """A name listed as such (no resolving)."""
        return any(e.name == host.lower() and e.allows_port(port) for e in self.entries)

    def allows_address(self, address: str, port: int) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(e.network is not None and ip.version == e.network.version and ip in e.network
                   and e.allows_port(port) for e in self.entries)

    def refusal(self, destination: str) -> str:
        """The line a refused client hears: what it asked for and what is allowed."""
        listed = ", ".join(e.text for e in self.entries[:5]) + (", ..." if len(self.entries) > 5 else "")
        return (f"egress to {destination} is not allowed by the hub (hub.egress_allow: "
                f"{listed or 'none allowed'})")


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True

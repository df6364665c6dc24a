"""Proxy rules (the nexd seed's L4 rules) and gateway port plans (the de.NBI seed's fixed mapping), with no I/O:
what a rule may be, where it listens, which rules take turns, what clashes, a gateway plan's ports and its iptables
script, and the seam through which rules via a unit travel (`Carrier`).

A rule is `protocol:port:destination:destination_port` (tcp or udp; the destination an address or a host name,
an IPv6 address in brackets), with a direction and a `via`:

- ingress, via local: this machine listens on `port`, connections go to destination:destination_port.
- egress, via local: the same on this machine (the direction is the operator's word for which way it points).
- ingress, via UNIT: the unit's server (the far end) listens on `port`; connections arrive through the unit's
  connection and go to destination:destination_port from here (a remote forward, as `ssh -R`).
- egress, via UNIT: this machine listens on `port`; each connection is carried through the unit's connection
  to destination:destination_port on the far side (`direct-tcpip`, as `ssh -L`).
- egress, via scope: as via UNIT, through a unit of the endpoint whose scope holds the destination (an address:
  scope is by address), the first of its units that is connected (`ScopePick`). A rule via scope has a listener
  of its own (rules of one listener could pick different units).

Rules sharing direction, via, protocol, listen address and port form one listener whose destinations take turns
(round robin, per connection; per flow for UDP). Two different listeners wanting one port is a clash.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

PROTOCOLS = ("tcp", "udp")
DIRECTIONS = ("ingress", "egress")
LOCAL = "local"
SCOPE = "scope"              # an egress rule whose endpoint is picked by its destination (console/core/endpoints.py)
SOURCES = ("config", "runtime", "gateway", "forward")   # where a rule comes from (RuleStatus.source)
RULE_FORM = "protocol:port:destination:destination_port, such as tcp:443:10.10.100.152:8443"
MAX_RULE_TEXT = 300          # a rule's text: 3 + 5 + 253 (a host name) + 5 + colons and brackets fit well within
MAX_RUNTIME_RULES = 10_000   # rules added at run time, kept in the store
MAX_GATEWAY_SERVICES = 64

_HOST_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_RULE_RE = re.compile(r"^(?P<protocol>[^:]*):(?P<port>[^:]*):(?P<host>\[[^\]]*\]|[^:\[\]]*):(?P<dport>[^:]*)$")


class RuleError(ValueError):
    """A rule that cannot be: the message is one line, starting with the rule as written."""


def shown(text: str, limit: int = 80) -> str:
    """A rule as written, fit for one line of output: clipped, and quoted when it has anything unprintable."""
    clipped = text if len(text) <= limit else text[:limit] + "..."
    return clipped if clipped.isprintable() and not any(c.isspace() for c in clipped) else repr(clipped)


def join_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _port_problem(value: str, what: str) -> str | None:
    if not value.isdigit() or len(value) > 5 or not 1 <= int(value) <= 65535:
        return f"{what} must be 1-65535, got {shown(value) if value else 'nothing'}"
    return None


def destination_problem(host: str) -> str | None:
    """Why `host` (brackets already taken off an IPv6 address) cannot be a rule's destination; None if it can."""
    if not host:
        return "the destination is empty"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if address.is_unspecified:
            return f"the destination {host} is not an address connections can go to"
        return None
    if ":" in host:
        return f"the destination [{shown(host)}] is not an IPv6 address"
    if re.fullmatch(r"[0-9.]+", host):
        return f"the destination {shown(host)} is not an IPv4 address"
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_HOST_LABEL.match(label) for label in name.split(".")):
        return f"the destination {shown(host)} is not a host name or address"
    return None


def parse_rule_text(text: str) -> tuple[str, int, str, int]:
    """(protocol, port, destination, destination port) of a rule's text; RuleError naming what is wrong."""
    if not isinstance(text, str):
        raise RuleError(f"a rule must be text ({RULE_FORM}), got {type(text).__name__}")
    raw = text.strip()
    if len(raw) > MAX_RULE_TEXT:
        raise RuleError(f"{shown(raw)}: a rule is at most {MAX_RULE_TEXT} characters")
    if not raw:
        raise RuleError(f"a rule is {RULE_FORM}; got nothing")
    if any(c.isspace() for c in raw) or not raw.isprintable():
        raise RuleError(f"{shown(raw)}: a rule has no spaces: {RULE_FORM}")
    match = _RULE_RE.match(raw)
    if match is None:
        head = raw.split(":", 2)
        if raw.count(":") > 3 and "[" not in raw and len(head) == 3:
            tail = head[2].rsplit(":", 1)
            raise RuleError(f"{shown(raw)}: an IPv6 destination goes in brackets: "
                            f"{head[0]}:{head[1]}:[{tail[0]}]:{tail[1] if len(tail) > 1 else 'PORT'}")
        raise RuleError(f"{shown(raw)}: must be {RULE_FORM}")
    protocol = match["protocol"].lower()
    if protocol not in PROTOCOLS:
        raise RuleError(f"{shown(raw)}: protocol must be tcp or udp, got {shown(match['protocol']) or 'nothing'}")
    for value, what in ((match["port"], "port"), (match["dport"], "destination port")):
        if (why := _port_problem(value, what)) is not None:
            raise RuleError(f"{shown(raw)}: {why}")
    host = match["host"]
    bracketed = host.startswith("[")
    host = host[1:-1] if bracketed else host
    if bracketed and ":" not in host:
        raise RuleError(f"{shown(raw)}: brackets are for IPv6 addresses only, got [{shown(host)}]")
    if (why := destination_problem(host)) is not None:
        raise RuleError(f"{shown(raw)}: {why}")
    if bracketed:
        host = str(ipaddress.IPv6Address(host))
    return protocol, int(match["port"]), host, int(match["dport"])


def via_problem(via: str, units: Iterable[str]) -> str | None:
    """Why a rule cannot go via `via`: `local`, `scope`, or a configured unit's name."""
    units = list(units)
    if via in (LOCAL, SCOPE) or via in units:
        return None
    known = ", ".join([LOCAL, SCOPE, *units])
    return f"must be local, scope or a configured unit ({known}), got {shown(via)}"


def scope_problem(direction: str, host: str) -> str | None:
    """Why a rule cannot go via scope: it is an ingress rule, or its destination is a host name."""
    if direction == "ingress":
        return ("ingress rules cannot go via scope: an ingress rule listens at a unit's far end, so name the unit "
                "(--via UNIT)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return (f"via scope needs an address as the destination (an endpoint's scope is by address), got the host "
                f"name {shown(host)}")
    return None


@dataclass(frozen=True)
class ScopePick:
    """Which unit a rule via scope travels through now: `unit` (None: none yet, or refused), and why in words."""

    unit: str | None
    why: str
    refused: bool = False


@dataclass(frozen=True)
class Rule:
    """One rule. Its identity (`key`, `id`) is direction, text and via; where it comes from and where it listens
    ride along. `listen` is the address it listens on here (None for ingress via a unit: the far end listens)."""

    direction: str
    protocol: str
    port: int
    host: str
    dest_port: int
    via: str = LOCAL
    source: str = "config"
    origin: str | None = None        # a gateway's name; a forward's "UNIT FORWARD"; where in the config
    listen: str | None = "127.0.0.1"
    created: str | None = None       # runtime rules: when added, and by whom
    who: str | None = None

    @property
    def text(self) -> str:
        return f"{self.protocol}:{self.port}:{join_host(self.host)}:{self.dest_port}"

    @property
    def destination(self) -> str:
        return f"{join_host(self.host)}:{self.dest_port}"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.direction, self.text, self.via)

    @property
    def id(self) -> str:
        """Stable: the same rule has the same id on every machine, after every restart."""
        return "rule-" + hashlib.sha256(" ".join(self.key).encode()).hexdigest()[:8]

    @property
    def name(self) -> str:
        """In words: 'ingress tcp:443:10.10.100.152:8443 via local' (also its name for the endpoints' users)."""
        return f"{self.direction} {self.text} via {self.via}"

    @property
    def here(self) -> bool:
        """Whether it listens on this machine (via local, or egress through a unit)."""
        return self.via == LOCAL or self.direction == "egress"

    @property
    def listener(self) -> str:
        """Where it listens: 'ADDRESS:PORT' here, '*:PORT' at the unit's far end."""
        host = self.listen if self.here and self.listen is not None else "*"
        return f"{join_host(host)}:{self.port}"

    @property
    def group(self) -> tuple:
        """Rules with the same group share one listener and take turns. A gateway plan's port is a listener of
        its own (it leads to one host by the formula), and so is a unit's forward (the unit's worker runs it)."""
        return (self.direction, self.via, self.protocol, self.listen if self.here else None, self.port,
                (self.source, self.origin) if self.source in ("gateway", "forward") else
                self.key if self.via == SCOPE else None)


def make_rule(direction: str, text: str, via: str = LOCAL, **extra) -> Rule:
    if direction not in DIRECTIONS:
        raise RuleError(f"direction must be ingress or egress, got {shown(direction)}")
    protocol, port, host, dest_port = parse_rule_text(text)
    if via == SCOPE and (why := scope_problem(direction, host)) is not None:
        raise RuleError(f"{shown(text.strip())}: {why}")
    return Rule(direction, protocol, port, host, dest_port, via, **extra)


def same_place(a: Rule, b: Rule) -> bool:
    """Two rules wanting one listening port (the same group shares it; different groups clash)."""
    if a.protocol != b.protocol or a.port != b.port or a.here != b.here:
        return False
    if not a.here:
        return a.via == b.via   # one unit's far end
    wild = ("0.0.0.0", "::", "")
    return a.listen == b.listen or a.listen in wild or b.listen in wild


def clashes(rules: Iterable[Rule]) -> list[tuple[Rule, Rule]]:
    """(rule, the earlier rule it clashes with): different listeners on one place. Rules of one group do not."""
    by_port: dict[tuple[str, int], list[Rule]] = {}
    found = []
    for rule in rules:
        for other in by_port.get((rule.protocol, rule.port), ()):
            if other.group != rule.group and same_place(rule, other):
                found.append((rule, other))
                break
        by_port.setdefault((rule.protocol, rule.port), []).append(rule)
    return found


def describe_place(rule: Rule) -> str:
    """'ingress rules via local on 127.0.0.1:443', for a clash's line."""
    if rule.source == "forward":
        return f"unit {rule.via}'s forward {rule.origin} (its server's port {rule.port})"
    if rule.source == "gateway":
        return f"gateway {rule.origin}'s {rule.listener} ({rule.destination})"
    where = f"on {rule.listener}" if rule.here else f"on {rule.via}'s server port {rule.port}"
    return f"{rule.direction} {rule.text} via {rule.via} {where}"


def hub_clash(rule: Rule, hub) -> str | None:
    """What holds a rule's port when it listens here: the hub's own port or its client ports (hub: HubConfig), as
    'the hub's own port (hub.listen)'; None when neither."""
    if hub is None or not rule.here or rule.protocol != "tcp":
        return None
    if rule.port == hub.listen_port:
        return "the hub's own port (hub.listen)"
    if hub.port_low <= rule.port <= hub.port_high:
        return f"in the hub's client ports ({hub.port_low}-{hub.port_high})"
    return None


# ---------------------------------------------------------------------------------------------- gateway plans


@dataclass(frozen=True)
class GatewayPlan:
    """The de.NBI seed's mapping: port base + n*len(services) + k leads to host n of the subnet, service k.
    With hosts 1-254 and services 22, 80, 443: 30003 -> .1:22, 30004 -> .1:80, 30005 -> .1:443, 30006 -> .2:22."""

    name: str
    subnet: str
    base: int
    services: tuple[int, ...]
    hosts: tuple[int, int]
    via: str = LOCAL
    listen: str = "127.0.0.1"

    @property
    def formula(self) -> str:
        services = ", ".join(str(s) for s in self.services)
        return (f"port {self.base} + n*{len(self.services)} + k -> {self.subnet} host n (n = {self.hosts_text}), "
                f"service k ({services})")

    @property
    def hosts_text(self) -> str:
        lo, hi = self.hosts
        return str(lo) if lo == hi else f"{lo}-{hi}"

    def port_of(self, n: int, k: int) -> int:
        return self.base + n * len(self.services) + k

    def address_of(self, n: int) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + n)

    def entries(self) -> list[tuple[int, str, int]]:
        """(port, host address, service) for every host and service, in port order."""
        network = ipaddress.ip_network(self.subnet)
        lo, hi = self.hosts
        return [(self.port_of(n, k), str(network.network_address + n), service)
                for n in range(lo, hi + 1) for k, service in enumerate(self.services)]

    def rules(self) -> list[Rule]:
        """Its ingress rules; a plan with problems (see `problems`) has none."""
        if self.problems():
            return []
        return [Rule("ingress", "tcp", port, host, service, self.via, source="gateway", origin=self.name,
                     listen=self.listen) for port, host, service in self.entries()]

    def problems(self) -> list[str]:
        """What makes the plan impossible, one line each: ports past 65535, hosts outside the subnet."""
        problems = []
        lo, hi = self.hosts
        last = self.port_of(hi, len(self.services) - 1)
        if last > 65535:
            first_bad = next(n for n in range(lo, hi + 1) if self.port_of(n, len(self.services) - 1) > 65535)
            problems.append(f"hosts {first_bad}-{hi} would listen past port 65535 (host {hi}, service "
                            f"{self.services[-1]}: {last}); lower base or hosts")
        first, final = host_range(ipaddress.ip_network(self.subnet))
        outside = [n for n in (lo, hi) if not first <= n <= final]
        if outside:
            problems.append(f"hosts {self.hosts_text} reach outside {self.subnet} (its hosts are {first}-{final})")
        return problems

    def iptables(self, interface: str, source: str) -> list[str]:
        """The kernel-NAT script the seed writes: one DNAT and one SNAT line per port, a block per host."""
        network = ipaddress.ip_network(self.subnet)
        v6 = network.version == 6
        tool, mask = ("ip6tables", 128) if v6 else ("iptables", 32)
        lines = ["#!/bin/sh",
                 f"# gateway {self.name}: {self.formula}",
                 f"# the kernel's NAT in place of sop-console's userspace proxy; run as root on the gateway; "
                 f"{interface} faces the clients, {source} is the gateway's address on {self.subnet}",
                 "set -e",
                 f"echo 1 > /proc/sys/net/ipv{'6/conf/all/forwarding' if v6 else '4/ip_forward'}"]
        lo, hi = self.hosts
        for n in range(lo, hi + 1):
            host = str(network.network_address + n)
            lines.append(f"# host {n}: {host}")
            for k, service in enumerate(self.services):
                port = self.port_of(n, k)
                lines.append(f"{tool} -t nat -A PREROUTING -i {interface} -p tcp -m tcp --dport {port} -j DNAT "
                             f"--to-destination {join_host(host)}:{service}")
                lines.append(f"{tool} -t nat -A POSTROUTING -d {host}/{mask} -p tcp -m tcp --dport {service} -j SNAT "
                             f"--to-source {source}")
        return lines


def host_range(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int]:
    """The host numbers n of a subnet a plan may use: IPv4 without the network and broadcast addresses (all of
    a /31 or /32), IPv6 without the subnet-router anycast address 0."""
    size = network.num_addresses
    if network.version == 4:
        return (1, size - 2) if size >= 4 else (0, size - 1)
    return (1, size - 1) if size > 1 else (0, 0)


def parse_hosts(value: object) -> tuple[int, int] | None:
    """`1-254`, or one host `7`; None when it is neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value) if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"\s*(\d{1,10})\s*(?:-\s*(\d{1,10})\s*)?", value)
    if match is None:
        return None
    lo = int(match.group(1))
    hi = int(match.group(2)) if match.group(2) else lo
    return (lo, hi) if lo <= hi else None


# ---------------------------------------------------------------------------------------------- a listening port


def port_in_use(host: str, port: int, protocol: str = "tcp") -> str | None:
    """'address in use' when another socket holds host:port for the protocol now; None when it is free (a probe:
    bound and closed at once). Other failures are said in their own words."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as probe:
        if protocol == "tcp":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's listeners do
        try:
            probe.bind((host, port))
        except OSError as exc:
            return listen_reason(exc)
    return None


def listen_reason(exc: OSError) -> str:
    """Why a listener could not open, in the words a rule's state carries."""
    if exc.errno == errno.EADDRINUSE:
        return "address in use"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no such address on this machine"
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


# ---------------------------------------------------------------------------------------------- the unit transport


class UdpFlow(Protocol):
    """One UDP flow carried over a unit's connection (one SSH channel per flow, datagrams framed on it)."""

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class Listening(Protocol):
    """A listener opened at a unit's far end: `close` cancels it (the remote forward with it); `wait_closed`
    returns once it has ended, closed or lost with the unit's connection (the runtime then waits and listens again;
    asyncio's Server has both)."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


# What the rule runtime hands a carrier for each connection or flow arriving at a unit's far end (ingress):
TcpArrival = Callable[[asyncio.StreamReader, asyncio.StreamWriter, tuple[str, int]], Awaitable[None]]
UdpArrival = Callable[[UdpFlow, tuple[str, int]], Callable[[bytes], None]]


class Carrier(Protocol):
    """How rules via a unit travel: over the unit's SSH connection. The rule runtime (console/proxy) asks it; the
    engine implements it with the unit workers' connections (console/tunnel/carrier.py: UnitCarrier).

    The runtime keeps the round robin, the down destinations, the counters, the UDP flows' idle timeout and
    bound: a carrier only opens and listens. Every method raises OSError (ConnectionRefusedError for a refusal)
    with the far side's reason in its message when it cannot; the runtime marks that destination down and tries
    the next one."""

    def waiting(self, unit: str) -> str | None:
        """Why rules via `unit` cannot travel now ("unit master is retrying: ...", "no unit named clone in the
        config": a runtime rule may outlive its unit), or None when they can. Asked again every LISTEN_RETRY
        seconds while it says why not."""
        ...

    def refuses(self, unit: str, protocol: str) -> str | None:
        """Why rules of `protocol` cannot go via `unit` at all, known once it is connected (UDP through a server
        that is not our hub: "UDP rules need a SOP Console hub at the far end: ..."); None when they can. The rule is
        then refused up front and nothing listens for it."""
        ...

    async def open_tcp(self, unit: str, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Egress TCP: a connection to host:port opened from the unit's far end (`direct-tcpip`, as `ssh -L`)."""
        ...

    async def open_udp(self, unit: str, host: str, port: int, received: Callable[[bytes], None]) -> UdpFlow:
        """Egress UDP: one flow to host:port from the far end (our hub only); each datagram back goes to
        `received`."""
        ...

    async def listen_tcp(self, unit: str, port: int, arrived: TcpArrival) -> Listening:
        """Ingress TCP: the far end listens on `port` (a remote forward added to the running connection); each
        connection arriving there is handed to `arrived(reader, writer, peer)`, which picks the destination, connects
        to it from here and relays until both ends are done."""
        ...

    async def listen_udp(self, unit: str, port: int, arrived: UdpArrival) -> Listening:
        """Ingress UDP: the far end (our hub) listens on `port`; for each new flow the carrier calls
        `arrived(flow, peer)` once and passes every later datagram of that flow to the function it returns;
        replies go back with `flow.send`, and the runtime closes the flow when it has been idle."""
        ...


"""Endpoints (the SSH servers units and rules go through) in words and networks, with no I/O: what a name,
a network or a comment may be, an endpoint's id, who uses an endpoint, and which endpoint serves an address.

The routing rule (`route`), the seed's "the Proxy Endpoint under IP subnets will be matched first, and when it
does not exist in IP subnets, the Proxy Endpoint under VPC will be matched":

1. Every endpoint's subnets (its own subnet and the subnets associated with it) that hold the address: the most
   specific (longest prefix) wins. Two endpoints holding that same network is a tie, reported, never picked.
2. Else the VPCs (named networks, `vpcs:` in the config) with a network that holds the address: the most specific
   network wins, and the endpoints associated with its VPC serve it (one: that one; several: a tie).
3. Else none.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from console.core.status import EndpointRoute

if TYPE_CHECKING:
    from console.core.config import EndpointConfig

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
LOGIN_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")
NAME_RULE = "1-32 letters, digits, '_', '.' or '-', starting with a letter or digit"
MAX_COMMENT = 200
MAX_SCOPE = 256          # subnets, and VPCs, one endpoint may be associated with
SOURCES = ("config", "runtime")
# where a network in an endpoint's scope comes from, in words (ScopeEntry.source)
SCOPE_SOURCES = {"own": "its own subnet", "config": "in the config", "runtime": "associated at run time"}
# what `associate` and `unassociate` answer: each list of the answer with the words it is said with
SCOPE_ANSWERS = {"associate": (("added", "associated"), ("already", "already in its scope:")),
                 "unassociate": (("removed", "unassociated"), ("not_associated", "not associated:"))}


def name_problem(name: object) -> str | None:
    """Why `name` cannot name an endpoint or a VPC; None when it can."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        return f"must be {NAME_RULE}, got {name!r}"
    return None


def host_problem(host: object) -> str | None:
    if not isinstance(host, str) or not host or any(c.isspace() for c in host) or "/" in host \
            or not host.isprintable():
        return f"must be a host name or address, got {host!r}"
    return None


def login_problem(username: object) -> str | None:
    if not isinstance(username, str) or not LOGIN_RE.fullmatch(username):
        return f"must be a login name, got {username!r}"
    return None


def comment_problem(comment: str) -> str | None:
    if len(comment) > MAX_COMMENT:
        return f"must be at most {MAX_COMMENT} characters, got {len(comment)}"
    if any(not ch.isprintable() for ch in comment):
        return "must be one line of printable characters"
    return None


def parse_network(text: object) -> tuple[Network | None, str | None]:
    """A network in CIDR form, strictly (no host bits): (network, None), or (None, why not in one phrase).
    A bare address is the network of that one address (/32, /128)."""
    if not isinstance(text, str) or not text.strip():
        return None, f"must be a network such as 10.1.0.0/24 or fd00:1::/64, got {text!r}"
    try:
        return ipaddress.ip_network(text.strip(), strict=True), None
    except ValueError as exc:
        if "has host bits set" in str(exc):
            loose = ipaddress.ip_network(text.strip(), strict=False)
            return None, f"{text!r} has host bits set: the network is {loose}"
        return None, f"must be a network such as 10.1.0.0/24 or fd00:1::/64, got {text!r}"


def parse_address(text: str) -> Address:
    """An IP address as an operator writes it ('10.1.2.3', 'fd00::1', '[fd00::1]'); an IPv4-mapped IPv6 address
    is its IPv4 address. ValueError with the reason in words."""
    raw = text.strip()
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        raise ValueError(f"not an IP address: {text!r} (such as 10.1.2.3 or fd00::1)") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def config_endpoint_id(name: str) -> str:
    """A config endpoint's id: derived from its name, so it is the same on every machine and after every restart."""
    return "ep-" + hashlib.sha256(f"config endpoint {name}".encode()).hexdigest()[:8]


# ---------------------------------------------------------------------------------------------- who uses it


class UsesEndpoint(Protocol):
    """A unit (console.core.config.UnitConfig) or a rule: what has a name and goes through an endpoint."""

    name: str
    endpoint: str | None


@dataclass(frozen=True)
class EndpointUsers:
    units: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.units or self.rules)

    def describe(self) -> str:
        """'units master, clone; rules web' (only the kinds there are)."""
        parts = [f"{kind} {', '.join(names)}" for kind, names in (("units", self.units), ("rules", self.rules))
                 if names]
        return "; ".join(parts) or "nothing"


def endpoint_users(name: str, units: Iterable[UsesEndpoint], rules: Iterable[UsesEndpoint] = ()) -> EndpointUsers:
    """Who uses the endpoint `name`: the units that name it and the rules that go through it. The proxy rules
    pass theirs as `rules` (each with the endpoint it goes through, however it was chosen)."""
    return EndpointUsers(tuple(u.name for u in units if u.endpoint == name),
                         tuple(r.name for r in rules if r.endpoint == name))


# ---------------------------------------------------------------------------------------------- the merged view


@dataclass(frozen=True)
class Endpoint:
    """One endpoint as the daemon knows it: its settings (what the check and the set-up take), where it comes from,
    and the scope added at run time (a config endpoint's config scope is in `config.scope`)."""

    config: EndpointConfig
    source: str                                     # "config" or "runtime"
    id: str
    created: str | None = None                      # runtime endpoints: when added
    updated: str | None = None                      # when it or its run-time scope last changed
    added_subnets: tuple[str, ...] = ()             # associated at run time
    added_vpcs: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.config.name

    def subnets(self) -> list[tuple[str, str]]:
        """(network, how it came) for every subnet in scope: "own", "config" or "runtime"."""
        found = [(self.config.subnet, "own")] if self.config.subnet else []
        found += [(s, "config") for s in self.config.scope.subnets]
        found += [(s, "runtime") for s in self.added_subnets]
        return found

    def vpcs(self) -> list[tuple[str, str]]:
        return [(v, "config") for v in self.config.scope.vpcs] + [(v, "runtime") for v in self.added_vpcs]


# ---------------------------------------------------------------------------------------------- routing


@dataclass
class _Claim:
    network: Network
    how: dict[str, str] = field(default_factory=dict)   # endpoint -> how the network is in its scope


def route(address: str, endpoints: Iterable[Endpoint], vpcs: Mapping[str, Iterable[str]]) -> EndpointRoute:
    """Which endpoint serves `address` (see the module's rule). ValueError when `address` is not an IP address."""
    addr = parse_address(address)
    shown = str(addr)
    endpoints = list(endpoints)

    best: dict[Network, _Claim] = {}
    for ep in endpoints:
        for text, how in ep.subnets():
            net, _ = parse_network(text)
            if net is not None and addr in net:
                best.setdefault(net, _Claim(net)).how.setdefault(ep.name, how)
    if best:
        claim = max(best.values(), key=lambda c: c.network.prefixlen)
        names = sorted(claim.how)
        if len(names) > 1:
            return EndpointRoute(shown, None, "tie", str(claim.network), tied=names,
                         why=f"{shown} is in subnet {claim.network} of {_and(names)} alike: unassociate it from "
                             "all but one (or give one a more specific subnet)")
        (name,) = names
        whose = {"own": "its own subnet", "config": "a subnet of its scope in the config",
                 "runtime": "a subnet associated with it"}[claim.how[name]]
        return EndpointRoute(shown, name, "subnet", str(claim.network),
                     why=f"{shown} is in {claim.network}, {whose}: the most specific subnet that holds it")

    holding: list[tuple[Network, str]] = []
    for vpc, networks in vpcs.items():
        for text in networks:
            net, _ = parse_network(text)
            if net is not None and addr in net:
                holding.append((net, vpc))
    if not holding:
        return EndpointRoute(shown, None, "none", why=f"{shown} is in no endpoint's subnet and in no VPC")
    longest = max(net.prefixlen for net, _ in holding)
    top = sorted({(vpc, str(net)) for net, vpc in holding if net.prefixlen == longest})
    names = sorted({ep.name for ep in endpoints for vpc, _ in top if vpc in {v for v, _ in ep.vpcs()}})
    where = _and([f"VPC {vpc} ({net})" for vpc, net in top])
    vpc, net = top[0]
    if not names:
        return EndpointRoute(shown, None, "none", net, vpc if len(top) == 1 else None,
                     why=f"{shown} is in no endpoint's subnet; it is in {where}, which no endpoint is associated with")
    if len(names) > 1:
        return EndpointRoute(shown, None, "tie", net, vpc if len(top) == 1 else None, names,
                     why=f"{shown} is in no endpoint's subnet; it is in {where}, associated with {_and(names)} "
                         "alike: unassociate all but one, or associate the subnet with one")
    return EndpointRoute(shown, names[0], "vpc", net, vpc if len(top) == 1 else None,
                 why=f"{shown} is in no endpoint's subnet; it is in {where}, associated with {names[0]}")


def overlapping(network: str, endpoints: Iterable[Endpoint], but: str) -> list[str]:
    """The other endpoints that hold exactly `network` in their subnets: associating it too makes a tie."""
    return sorted({ep.name for ep in endpoints if ep.name != but
                   for text, _ in ep.subnets() if parse_network(text)[0] == parse_network(network)[0]})


def closest(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'edge'?)' or ' (known: a, b)' or ' (none defined)', for an unknown name."""
    import difflib

    known = list(known)
    hint = difflib.get_close_matches(name, known, n=1)
    if hint:
        return f" (did you mean {hint[0]!r}?)"
    return f" (known: {', '.join(known)})" if known else " (none defined)"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


"""What the daemon says about its units, forwards and hub clients: typed records with one JSON form.

The worker and the hub build them, the control server sends `to_json()`, the CLI and the console read them back
with `from_json()`. The field order is the documented `status --json` order (README): change it and the shape
changes for every script that reads it.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

from console.core.events import EndpointChanged, Event, ForwardChanged, ForwardTraffic, UnitStateChanged
from console.core.states import (DestinationState, EndpointReason, EndpointState, ForwardState, RuleState,
                                 SshdSettingState, UnitState, human_bytes)


class _Record:
    """One JSON form for every record: its fields in declaration order, nested records and lists of them too."""

    def to_json(self) -> dict[str, Any]:
        # What dataclasses.asdict gives, without its copy.deepcopy of every leaf: the fields hold only records,
        # lists, dicts and immutable leaves (str, int, bool, None, a StrEnum). asdict made `clients list` of
        # 500 clients x 20 forwards spend ~87 ms of the daemon's loop here; this ~25 ms.
        return {name: _plain(getattr(self, name)) for name in _field_names(type(self))}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """The record from its JSON form. Raises ValueError naming the field when the shape is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: an object expected, got {type(data).__name__}")
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ValueError(f"{cls.__name__}: {f.name} is missing")
                continue
            kwargs[f.name] = _read(_hints(cls)[f.name], data[f.name], f"{cls.__name__}.{f.name}")
        return cls(**kwargs)


def json_default(value: Any) -> Any:
    """For json.dumps(..., default=json_default): a record goes as its JSON form, wherever it sits in an answer."""
    if isinstance(value, _Record):
        return value.to_json()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]


def _plain(value: Any) -> Any:
    """A field's JSON form: records as their to_json(), lists and dicts as new ones, leaves as they are."""
    if isinstance(value, _Record):
        return value.to_json()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _read(hint: Any, value: Any, where: str) -> Any:
    """A field's JSON value as its declared type: a state word becomes its enum, a list of records each record."""
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        try:
            return hint(value)
        except ValueError:
            raise ValueError(f"{where}: unknown state {value!r}") from None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # `Record | None`: a nested record, or null
        records = [a for a in typing.get_args(hint) if isinstance(a, type) and issubclass(a, _Record)]
        if records and value is not None:
            return records[0].from_json(value)
        return value
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        if isinstance(item, type) and issubclass(item, _Record):
            if not isinstance(value, list):
                raise ValueError(f"{where}: a list expected, got {type(value).__name__}")
            return [item.from_json(v) for v in value]
    return value


class _Traffic:
    """Counters of a forward, the unit's or a hub client's."""

    open: int
    total: int
    bytes_in: int
    bytes_out: int

    def counters(self) -> str:
        return (f"open {self.open} total {self.total} in {human_bytes(self.bytes_in)} "
                f"out {human_bytes(self.bytes_out)}")


@dataclass
class ForwardStatus(_Record, _Traffic):
    """One of a unit's forwards. `remote` is bind:port with the port the server really gave ("*" for any)."""

    name: str
    remote: str
    local: str
    state: ForwardState
    error: str | None = None
    open: int = 0
    total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    @property
    def port(self) -> int | None:
        """The port on the server, from `remote` (None while it is not known)."""
        tail = self.remote.rsplit(":", 1)[-1]
        return int(tail) if tail.isdigit() else None


@dataclass
class UnitStatus(_Record):
    """A unit: its state since when, the last error, the next retry, the key its server presented when
    that key is unknown or changed, the endpoint it goes through (None: a `server:` block of its own) and, while
    that endpoint's last login check says unavailable, the check's state and message (`endpoint_problem`)."""

    name: str
    state: UnitState
    since: str
    server: str
    username: str
    last_error: str | None = None
    next_retry: str | None = None
    server_key: str | None = None
    forwards: list[ForwardStatus] = field(default_factory=list)
    endpoint: str | None = None
    endpoint_problem: str | None = None

    def forward(self, name: str) -> ForwardStatus | None:
        return next((f for f in self.forwards if f.name == name), None)


@dataclass
class Status(_Record):
    """The whole engine, as `status` answers and a subscription's first answer carries."""

    units: list[UnitStatus] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # what the operator must hear of: a store recovered ...

    def unit(self, name: str | None) -> UnitStatus | None:
        return next((u for u in self.units if u.name == name), None)

    def apply(self, event: Event) -> bool:
        """Fold one engine event into this status; True if anything an operator sees may have changed."""
        if isinstance(event, UnitStateChanged):
            unit = self.unit(event.unit)
            if unit is None:
                return False
            unit.state, unit.since, unit.last_error = UnitState(event.state), event.since, event.last_error
            unit.next_retry, unit.server_key = event.next_retry, event.server_key
            return True
        if isinstance(event, EndpointChanged):
            units = [u for u in self.units if u.endpoint == event.endpoint and u.endpoint_problem != event.problem]
            for unit in units:
                unit.endpoint_problem = event.problem
            return bool(units)
        if isinstance(event, (ForwardChanged, ForwardTraffic)):
            unit = self.unit(event.unit)
            forward = unit.forward(event.forward) if unit is not None else None
            if forward is None:
                return False
            if isinstance(event, ForwardChanged):
                forward.state, forward.error, forward.remote = ForwardState(event.state), event.error, event.remote
            else:
                forward.open, forward.total = event.open, event.total
                forward.bytes_in, forward.bytes_out = event.bytes_in, event.bytes_out
            return True
        return False

    def render(self) -> str:
        """The human form (`sop-console status`, the demo)."""
        lines = [f"notice: {notice}" for notice in self.notices]
        for unit in self.units:
            lines.append(f"{unit.name:<7} {unit.state.label:<20} {unit.username}@{unit.server}")
            for fwd in unit.forwards:
                lines.append(f"  {fwd.name:<6} {fwd.state.label:<13} {fwd.remote:>16} -> {fwd.local:<16} "
                             + fwd.counters())
                if fwd.error:
                    lines.append(f"         {fwd.error}")
            if unit.last_error:
                lines.append(f"  last error: {unit.last_error}")
            if unit.endpoint_problem:
                lines.append(f"  endpoint {unit.endpoint}: {unit.endpoint_problem}")
        return "\n".join(lines)


@dataclass
class ClientForwardStatus(_Record, _Traffic):
    """A port a hub client forwards now; name and destination are what it announced (None from a plain client)."""

    port: int
    bind: str
    name: str | None
    destination: str | None
    open: int
    total: int
    bytes_in: int
    bytes_out: int
    session: str


@dataclass
class ClientStatus(_Record):
    """A hub client: its quota and ports, whether it is connected, and what it forwards now."""

    id: str
    quota: int
    enabled: bool
    ports: list[int]
    port_ranges: str
    connected: bool
    forwards: list[ClientForwardStatus]
    fingerprint: str
    created: str | None
    last_seen: str | None


@dataclass
class OpEntry(_Record):
    """One entry of the operation log (console/core/oplog.py): who did what to which target, from where, how it
    went and how long it took. `who` is the user the daemon saw on its socket (SO_PEERCRED); `ssh_from` the SSH
    client address the CLI or console said it runs for (SSH_CONNECTION): recorded as said, never trusted."""

    id: int
    at: str                      # UTC ISO time, second precision
    who: str
    ssh_from: str | None
    via: str                     # where from: cli, console, config-reload, daemon (migrated: from the old store)
    action: str                  # the operation: start, clients.add, reload ...
    target: str | None           # the unit, client id or endpoint name it was for
    outcome: str                 # ok or failed
    reason: str | None           # why it failed, one line
    duration_ms: float
    details: dict[str, Any] = field(default_factory=dict)  # its parameters, secrets replaced by "(secret)"

    COLUMNS = ("id", "at", "who", "ssh_from", "via", "action", "target", "outcome", "reason", "duration_ms",
               "details")

    @property
    def who_text(self) -> str:
        """'operator', or 'operator (ssh from 10.0.0.5, as its client said)'."""
        return f"{self.who} (ssh from {self.ssh_from}, as its client said)" if self.ssh_from else self.who

    @property
    def outcome_text(self) -> str:
        return "✔ ok" if self.outcome == "ok" else "✖ failed"

    def details_text(self) -> str:
        """`key=value, ...` on one line (what a table or a CSV cell shows)."""
        return ", ".join(f"{key}={value}" for key, value in self.details.items())

    def cell(self, column: str) -> str:
        """One column as text, for a table or an export (who with its SSH address, details on one line)."""
        if column == "who":
            return self.who_text
        if column == "details":
            return self.details_text()
        value = getattr(self, column)
        return "" if value is None else str(value)

    def text(self, at: str | None = None) -> str:
        """Every field, one a line: what `ops show` prints and the console's details dialog shows (and copies).
        `at`: the time as shown to the operator (local), the UTC one beside it."""
        when = f"{at} (UTC {self.at})" if at else self.at
        lines = [f"operation {self.id}", f"time:     {when}", f"who:      {self.who_text}", f"from:     {self.via}",
                 f"action:   {self.action}", f"target:   {self.target or '-'}",
                 f"outcome:  {self.outcome}" + (f": {self.reason}" if self.reason else ""),
                 f"duration: {self.duration_ms:g} ms"]
        if self.details:
            lines.append("details:")
            lines.extend(f"  {key}: {value}" for key, value in self.details.items())
        return "\n".join(lines)


@dataclass
class EndpointCheck(_Record):
    """One login check of an endpoint (an SSH server): can `username` log in there with our key, and if not why,
    in words an operator acts on (`message`) with what to do next (`hint`). Built by console/tunnel's endpoint
    check; kept as the endpoint's last check; shown by `endpoints check/show` and the console's Endpoints screen."""

    endpoint: str                     # the endpoint's name
    state: EndpointState              # available or unavailable
    reason: EndpointReason            # ok, or why not
    message: str                      # one line: "connection refused by 127.0.0.1:2222"
    hint: str                         # one line: what to do ("start sshd, or check the endpoint's port")
    address: str                      # host:port tried (the resolved address where one was found)
    username: str                     # the account tried
    unit: str | None = None           # whose key was offered (units have a key each)
    methods: list[str] = field(default_factory=list)   # auth methods the server offered, when it said
    fingerprint: str | None = None    # the host key it presented (SHA256:...), when it got that far
    server_version: str | None = None # what answered: "SSH-2.0-OpenSSH_9.2p1", or the cleaned first bytes
    checked_at: str = ""              # UTC ISO time of the check
    seconds: float = 0.0              # how long the check took

    @property
    def available(self) -> bool:
        return self.state is EndpointState.AVAILABLE

    @property
    def problem(self) -> str | None:
        """What a unit's status says of its endpoint after this check: None when available, else the state and
        the message ("unavailable: connection refused by 127.0.0.1:2222")."""
        return None if self.available else f"{self.state.value}: {self.message}"


@dataclass
class ScopeEntry(_Record):
    """One network in an endpoint's scope: a subnet, or a VPC with its networks; `source` says where it comes
    from: "own" (the endpoint's own subnet), "config" (its scope in the config) or "runtime" (associated at run
    time, kept in the store)."""

    kind: str                 # "subnet" or "vpc"
    network: str              # the subnet's CIDR, or the VPC's name
    source: str               # "own", "config" or "runtime"
    cidrs: list[str] = field(default_factory=list)   # a VPC's networks (empty for a VPC the config no longer has)


@dataclass
class EndpointStatus(_Record):
    """An endpoint (an SSH server units and rules go through), as `endpoints list/show` answer: its settings,
    where it comes from (`source`: config, or runtime: added with `endpoints add`, kept in the store), who uses it,
    its scope, and its last login check (`state` unchecked until one is stored)."""

    id: str
    name: str
    source: str
    state: EndpointState
    host: str
    port: int
    username: str
    host_key_policy: str
    comment: str | None
    units: list[str]
    rules: list[str]
    subnet: str | None                      # its own subnet, in its scope by default
    scope: list[ScopeEntry]
    created: str | None                     # runtime endpoints: when added
    updated: str | None                     # when it, or its scope at run time, last changed
    last_check: EndpointCheck | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass
class EndpointRoute(_Record):
    """Which endpoint serves an address (`endpoints route`), and why in one sentence; `how` is "subnet" or "vpc"
    (served), "tie" (several alike: `tied`) or "none"."""

    address: str
    endpoint: str | None
    how: str
    network: str | None = None       # the network that decided: a subnet, or a VPC's network
    vpc: str | None = None           # the VPC, when one decided
    tied: list[str] = field(default_factory=list)
    why: str = ""


@dataclass
class SshdSetting(_Record):
    """One sshd setting of an endpoint judged against what its forwards need (`endpoints check-sshd`)."""

    keyword: str                      # OpenSSH's spelling: "GatewayPorts"
    state: SshdSettingState           # ok, needs-change or note
    value: str                        # what the server has now, cleaned: "no", "0 x 3" (interval x count)
    why: str                          # one sentence: what that value does to the forwards
    lines: list[str] = field(default_factory=list)  # the exact sshd_config lines to write (needs-change, note)


@dataclass
class SshdCheck(_Record):
    """The sshd check of one endpoint: how its settings were read, one SshdSetting each, and what --fix did
    (`before` holds the settings as they were before the fix; empty without one)."""

    endpoint: str
    source: str                       # "sshd -T" (effective, Match evaluated) or "files" (read ourselves)
    how: str                          # one line: "effective settings from sshd -T" / "read from ...; Match ..."
    config_file: str                  # the sshd_config the serving sshd runs with (its -f, else the default)
    listener_pid: int | None          # the sshd that listens (what a fix reloads), when found
    privilege: str                    # what --fix can use there: "root", "sudo" or "none"
    server_version: str               # "OpenSSH_9.2p1 Debian-2+deb12u3"
    settings: list[SshdSetting] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    before: list[SshdSetting] = field(default_factory=list)
    fix: str | None = None            # what --fix did, one line ("wrote ...; reloaded sshd ..."), None without
    fix_output: list[str] = field(default_factory=list)  # the fix script's own lines (cleaned)
    checked_at: str = ""              # UTC ISO time of the check
    seconds: float = 0.0              # how long the check (and fix) took

    @property
    def needs_change(self) -> list[SshdSetting]:
        return [s for s in self.settings if s.state is SshdSettingState.CHANGE]


@dataclass
class RuleDestination(_Record):
    """One destination of a listener's round robin (each is a rule sharing the listener), in turn order."""

    destination: str                  # host:port
    rule: str                         # the rule's id
    state: DestinationState           # up, or down (skipped for a few seconds after a refusal or failure)
    reason: str | None = None         # why down: "connection refused (2026-11-22T10:00:00Z)"
    since: str | None = None          # down since


@dataclass
class RuleStatus(_Record, _Traffic):
    """A proxy rule, as `proxy list` answers: what it is, where it listens, where it comes from, its listener's
    state and the round robin it takes part in, its counters. For UDP, open and total count flows (`udp_flows`
    are those open now). `dropped`: what its listener turned away past its bound (TCP connections beyond
    MAX_CONNECTIONS, UDP datagrams of new sources beyond udp_max_flows)."""

    id: str
    direction: str                    # ingress or egress
    protocol: str                     # tcp or udp
    rule: str                         # protocol:port:destination:destination_port
    listener: str                     # address:port here, or *:port at the far end of its unit
    destination: str                  # host:port
    via: str                          # local, or a unit
    state: RuleState
    reason: str | None
    source: str                       # config, runtime, gateway or forward
    origin: str | None = None         # the config path, the gateway's name, the unit's forward
    destinations: list[RuleDestination] = field(default_factory=list)
    open: int = 0
    total: int = 0
    bytes_in: int = 0                 # toward the destination
    bytes_out: int = 0                # back from it
    udp_flows: int = 0
    dropped: int = 0
    created: str | None = None        # runtime rules: when added, and by whom
    who: str | None = None

    @property
    def down(self) -> list[RuleDestination]:
        return [d for d in self.destinations if d.state is DestinationState.DOWN]


@dataclass
class GatewayPort(_Record):
    """One port of a gateway plan: where it leads, its rule's state, and what it clashes with."""

    port: int
    host: str
    service: int
    state: RuleState
    reason: str | None = None
    clash: str | None = None


@dataclass
class GatewayStatus(_Record):
    """A gateway port plan (`gateway show`): the formula, every port, and its clashes in one line each."""

    name: str
    subnet: str
    base: int
    services: list[int]
    hosts: str                        # "1-254"
    via: str
    listen: str
    formula: str
    ports: list[GatewayPort] = field(default_factory=list)
    clashes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # what makes the plan impossible (it then has no rules)

    def counts(self) -> dict[str, int]:
        """How many of its ports are in each state."""
        found: dict[str, int] = {}
        for port in self.ports:
            found[port.state.value] = found.get(port.state.value, 0) + 1
        return found

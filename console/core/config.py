"""Configuration: YAML in, typed and validated dataclasses out.

Every problem is reported as one line, ``FILE:LINE: PATH: message``, and all problems are reported at
once (`ConfigError.problems`). The YAML is composed to nodes first so each value keeps its line.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from console.core.choices import HOST_KEY_POLICIES, THEMES, UNIT_NAMES
from console.core.config_file import compose, read_config_text
from console.core.egress_allow import parse_entry
from console.core.endpoints import (NAME_RE, closest, comment_problem, host_problem, login_problem, name_problem,
                                    parse_network)
from console.core.errors import ConfigError, UsageError, os_reason
from console.core.rules import (DIRECTIONS, LOCAL, MAX_GATEWAY_SERVICES, RULE_FORM, GatewayPlan, Rule, RuleError,
                                clashes, describe_place, host_range, hub_clash, make_rule, parse_hosts, via_problem)
from console.core.syslog import Target

_FINGERPRINT_RE = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}=?$")
# The seed's connect.yaml repository form: service[+scheme]://host:port[path], e.g. webdav+http://10.0.0.1:80/.
_SERVICE_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}(\+[a-z][a-z0-9-]{0,31})?://"
                         r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})(/[\x21-\x7e]*)?$")
# The seed's per-unit shorthand: key -> (forward name, local port or the key holding it).
# The seed's shorthand (Configure's form too): ssh_port, http_port, app_port -> a forward named ssh/http/app to
# that local port (the app's local port comes from app_target_port).
SEED_FORWARDS = {"ssh_port": ("ssh", 22), "http_port": ("http", 80), "app_port": ("app", "app_target_port")}


@dataclass(frozen=True)
class EndpointScope:
    """The networks an endpoint serves besides its own subnet: subnets (CIDRs) and VPCs (names in `vpcs:`)."""

    subnets: tuple[str, ...] = ()
    vpcs: tuple[str, ...] = ()


@dataclass(frozen=True)
class EndpointConfig:
    """An endpoint: an SSH server units (and proxy rules) go through. The top-level `server:` is the endpoint
    named `default`; `ServerConfig` is this class under its old name (a unit's `server` is its endpoint)."""

    host: str
    port: int = 22
    host_key_policy: str = "strict"
    host_key: str | None = None
    name: str = "default"
    username: str = "root"            # the account units log in as, unless a unit names its own
    comment: str | None = None
    subnet: str | None = None         # the endpoint's own network (CIDR): in its scope by default
    scope: EndpointScope = EndpointScope()

    @property
    def address(self) -> str:
        return join_host_port(self.host, self.port)

    @property
    def link(self) -> tuple[str, int, str, str | None]:
        """What a connection to it depends on (host, port, host key policy and pin): a unit reconnects when its
        endpoint's link (or its username) changes, not when a comment or the scope does."""
        return self.host, self.port, self.host_key_policy, self.host_key


ServerConfig = EndpointConfig


TRANSPORTS = ("asyncssh", "openssh")   # tunnel.transport: console/tunnel/transports.py


@dataclass(frozen=True)
class TunnelConfig:
    keepalive_interval: float = 5.0
    keepalive_count_max: int = 3
    retry_min: float = 0.1
    retry_max: float = 30.0
    connect_timeout: float = 10.0
    endpoint_check_interval: float = 300.0   # seconds between the daemon's own endpoint checks; 0 = off
    transport: str = "asyncssh"              # what carries a unit's connection: asyncssh, or OpenSSH's ssh

    @property
    def link(self) -> tuple[float, int, float, float, float, str]:
        """What a unit's connection depends on: a change reconnects the units (not the endpoint checks' pace)."""
        return (self.keepalive_interval, self.keepalive_count_max, self.retry_min, self.retry_max,
                self.connect_timeout, self.transport)


@dataclass(frozen=True)
class LogConfig:
    max_bytes: int = 1_048_576
    backups: int = 3
    syslog: bool = False                # the tunnel log's lines and the operation log's entries to syslog too
    syslog_address: str = "/dev/log"    # a Unix datagram socket, or address:port over UDP

    @property
    def syslog_target(self) -> str | None:
        """Where lines go to syslog, None when they do not."""
        return self.syslog_address if self.syslog else None


@dataclass(frozen=True)
class OplogConfig:
    keep_days: int = 365                # entries older than this are dropped
    max_rows: int = 1_000_000           # beyond this many, the oldest are dropped


@dataclass(frozen=True)
class HubConfig:
    listen_host: str = "0.0.0.0"
    listen_port: int = 2222
    port_low: int = 2200
    port_high: int = 5199
    default_quota: int = 20
    bind: str = "127.0.0.1"
    max_startups: int = 100             # connections not logged in yet: in total...
    max_startups_per_source: int = 10   # ...and from one address
    login_grace_time: float = 30.0      # seconds a connection has to log in
    max_auth_tries: int = 6             # failed logins before a connection is ended
    max_sessions: int = 10              # session channels a client holds at once, over all its connections
    egress_allow: tuple[str, ...] = ()  # where clients may reach through the hub (console.core.egress_allow)


@dataclass(frozen=True)
class ProxyConfig:
    """`proxy:`: the rules in the config (ingress then egress, as written) and the gateway port plans."""

    listen: str = "127.0.0.1"           # where rules listening on this machine bind
    udp_idle_timeout: float = 60.0      # seconds a UDP flow lives after its last datagram (the seed's 60)
    udp_max_flows: int = 4096           # UDP flows one listener keeps at once; a new source past it is dropped
    rules: tuple[Rule, ...] = ()
    gateways: tuple[GatewayPlan, ...] = ()

    def gateway(self, name: str) -> GatewayPlan | None:
        return next((g for g in self.gateways if g.name == name), None)


@dataclass(frozen=True)
class ConsoleSettings:
    theme: str = "sop"


@dataclass(frozen=True)
class ForwardConfig:
    name: str
    remote_port: int
    local_host: str
    local_port: int
    remote_bind: str = ""
    service: str | None = None   # what it is, told to a hub: "smb://samba.example.com:139"

    @property
    def local(self) -> str:
        return join_host_port(self.local_host, self.local_port)


@dataclass(frozen=True)
class UnitConfig:
    name: str
    username: str
    server: ServerConfig              # the endpoint it connects to (with a per-unit `server:` override applied)
    forwards: tuple[ForwardConfig, ...] = ()
    endpoint: str | None = "default"  # the endpoint's name; None for a unit with its own `server:` block


@dataclass(frozen=True)
class Config:
    units: dict[str, UnitConfig] = field(default_factory=dict)
    server: ServerConfig | None = None                             # the endpoint `default`, when there is one
    tunnel: TunnelConfig = TunnelConfig()
    log: LogConfig = LogConfig()
    oplog: OplogConfig = OplogConfig()
    console: ConsoleSettings = ConsoleSettings()
    hub: HubConfig | None = None
    source: str = "<defaults>"
    endpoints: dict[str, EndpointConfig] = field(default_factory=dict)   # by name, `default` included
    vpcs: dict[str, tuple[str, ...]] = field(default_factory=dict)       # VPC name -> its networks (CIDRs)
    proxy: ProxyConfig = ProxyConfig()

    def __post_init__(self) -> None:
        # `server` and `endpoints["default"]` are one endpoint: whichever was given, both say it.
        if self.server is not None and "default" not in self.endpoints:
            object.__setattr__(self, "endpoints", {"default": self.server, **self.endpoints})
        elif self.server is None and "default" in self.endpoints:
            object.__setattr__(self, "server", self.endpoints["default"])

    def unit(self, name: str) -> UnitConfig:
        if name not in self.units:
            configured = ", ".join(self.units) or "none"
            raise UsageError(f"no unit named {name!r} in {self.source} (configured: {configured})")
        return self.units[name]


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_host_port(text: str) -> tuple[str, int] | None:
    """'127.0.0.1:22' or '[::1]:22' -> (host, port); None when it is not host:port."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d{1,5})|([^:\s\[\]]+):(\d{1,5})", text)
    if not match:
        return None
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        return None
    return host, port


class _Checker:
    def __init__(self, source: str, lines: dict[str, int]) -> None:
        self.source = source
        self.lines = lines
        self.problems: list[tuple[int, str]] = []
        self.forward_paths: dict[tuple[str, str], str] = {}

    def problem(self, path: str, message: str) -> None:
        self.problems.append((self._line(path), f"{path}: {message}"))

    def _line(self, path: str) -> int:
        probe = path
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            parent = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", probe)
            if parent == probe:
                break
            probe = parent
        return 1

    def formatted(self) -> list[str]:
        return [f"{self.source}:{line}: {text}" for line, text in sorted(self.problems, key=lambda p: p[0])]

    # -- typed readers: each returns the value, or the default after recording a problem

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping, got {_kind(value)}")
            return {}
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                known = f"did you mean {hint[0]!r}?" if hint else "known keys: " + ", ".join(allowed)
                self.problem(_join(path, key), f"unknown key ({known})")
        return {k: v for k, v in value.items() if k in allowed}

    def string(self, data: dict, key: str, path: str, default: str | None, *, required: bool = False) -> str | None:
        where = _join(path, key)
        if key not in data or data[key] is None:
            if required:
                self.problem(where, "required")
            return default
        value = data[key]
        if not isinstance(value, str):
            self.problem(where, f"must be a string, got {_kind(value)}")
            return default
        return value

    def integer(self, data: dict, key: str, path: str, default: int, lo: int, hi: int, *, zero_ok: bool = False) -> int:
        where = _join(path, key)
        value = data.get(key)
        if value is None:
            return default
        rule = f"{lo}-{hi} or 0" if zero_ok else f"{lo}-{hi}"
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(where, f"must be a whole number {rule}, got {_kind(value)} {value!r}")
            return default
        if not (lo <= value <= hi or (zero_ok and value == 0)):
            self.problem(where, f"must be {rule}, got {value}")
            return default
        return value

    def number(self, data: dict, key: str, path: str, default: float, lo: float, hi: float) -> float:
        where = _join(path, key)
        value = data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(where, f"must be a number of seconds, got {_kind(value)} {value!r}")
            return default
        if not lo <= value <= hi:
            self.problem(where, f"must be between {lo:g} and {hi:g}, got {value:g}")
            return default
        return float(value)

    def boolean(self, data: dict, key: str, path: str, default: bool) -> bool:
        value = data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(_join(path, key), f"must be true or false, got {_kind(value)} {value!r}")
            return default
        return value

    def choice(self, data: dict, key: str, path: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(data, key, path, default)
        if value not in choices:
            self.problem(_join(path, key), f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _check_host(check: _Checker, value: str | None, path: str) -> str | None:
    if value is None:
        return None
    if (why := host_problem(value)) is not None:
        check.problem(path, why)
        return None
    return value


def _check_host_key(check: _Checker, value: str | None, path: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if value.startswith("SHA256:"):
        if not _FINGERPRINT_RE.match(value):
            check.problem(path, "a fingerprint pin must look like SHA256: followed by 43 base64 characters")
            return None
        return value
    from console.core.keys import parse_public_key  # local: keeps config importable without asyncssh work

    if parse_public_key(value) is None:
        check.problem(path, "must be an OpenSSH public key line (ssh-ed25519 AAAA...) or a SHA256:... fingerprint")
        return None
    return value


SERVER_KEYS = ("host", "port", "host_key_policy", "host_key")   # a unit's own `server:` block
ENDPOINT_KEYS = ("host", "port", "username", "host_key_policy", "host_key", "comment", "subnet", "scope")


def _server(check: _Checker, raw: Any, path: str, base: EndpointConfig | None, *, name: str = "default",
            keys: tuple[str, ...] = SERVER_KEYS, vpcs: dict[str, tuple[str, ...]] | None = None,
            host_required: bool = False) -> EndpointConfig | None:
    """An endpoint (or a unit's own server, over `base`) from its mapping; None when it has no usable host."""
    data = check.mapping(raw, path, keys)
    host = _check_host(check, check.string(data, "host", path, None, required=host_required), f"{path}.host")
    host = host if host is not None else (base.host if base else None)
    port = check.integer(data, "port", path, base.port if base else 22, 1, 65535)
    policy = check.choice(data, "host_key_policy", path, base.host_key_policy if base else "strict", HOST_KEY_POLICIES)
    pin = _check_host_key(check, check.string(data, "host_key", path, None), f"{path}.host_key")
    if pin is None and base is not None and "host_key" not in data:
        pin = base.host_key
    username = _login(check, data, path, base.username if base else "root")
    comment = check.string(data, "comment", path, None)
    if comment is not None and (why := comment_problem(comment)):
        check.problem(f"{path}.comment", why)
    subnet = _network(check, data["subnet"], f"{path}.subnet") if data.get("subnet") is not None else None
    scope = _scope(check, data.get("scope"), f"{path}.scope", vpcs or {})
    if host is None:
        return None
    return EndpointConfig(host=host, port=port, host_key_policy=policy, host_key=pin, name=name, username=username,
                          comment=comment, subnet=subnet, scope=scope)


def _login(check: _Checker, data: dict, path: str, default: str) -> str:
    username = check.string(data, "username", path, default) or default
    if (why := login_problem(username)) is not None:
        check.problem(f"{path}.username", why)
    return username


def _network(check: _Checker, value: Any, path: str) -> str | None:
    """A network in CIDR form (strict: no host bits), normalised; None after recording a problem."""
    network, why = parse_network(value)
    if network is None:
        check.problem(path, why)
        return None
    return str(network)


def _items(check: _Checker, value: Any, path: str) -> list[tuple[str, Any]]:
    """A list's items with their paths; a problem when it is not a list, and for every item given twice."""
    if value is None:
        return []
    if not isinstance(value, list):
        check.problem(path, f"must be a list, got {_kind(value)}")
        return []
    items, seen = [], set()
    for i, item in enumerate(value):
        if isinstance(item, str) and item in seen:
            check.problem(f"{path}[{i}]", f"{item!r} is listed twice")
            continue
        if isinstance(item, str):
            seen.add(item)
        items.append((f"{path}[{i}]", item))
    return items


def _scope(check: _Checker, raw: Any, path: str, vpcs: dict[str, tuple[str, ...]]) -> EndpointScope:
    data = check.mapping(raw, path, ("subnets", "vpcs"))
    subnets = [_network(check, item, where) for where, item in _items(check, data.get("subnets"), f"{path}.subnets")]
    names = []
    for where, item in _items(check, data.get("vpcs"), f"{path}.vpcs"):
        if not isinstance(item, str):
            check.problem(where, f"must be a VPC's name, got {_kind(item)}")
        elif item not in vpcs:
            check.problem(where, f"no VPC named {item!r}{closest(item, vpcs)}")
        else:
            names.append(item)
    return EndpointScope(tuple(s for s in subnets if s is not None), tuple(names))


def _vpcs(check: _Checker, raw: Any) -> dict[str, tuple[str, ...]]:
    """`vpcs:`: named networks, each a list of CIDRs (one CIDR alone may stand without the list)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        check.problem("vpcs", f"must be a mapping of VPC names to their networks, got {_kind(raw)}")
        return {}
    vpcs = {}
    for name, value in raw.items():
        path = f"vpcs.{name}"
        if (why := name_problem(name)) is not None:
            check.problem(path, f"a VPC's name {why}")
            continue
        if isinstance(value, str):
            value = [value]
        items = _items(check, value, path)
        if not items and (value is None or isinstance(value, list)):
            check.problem(path, "needs at least one network, such as 10.1.0.0/16")
        networks = [_network(check, item, where) for where, item in items]
        vpcs[name] = tuple(n for n in networks if n is not None)
    return vpcs


def _endpoints(check: _Checker, top: dict, vpcs: dict[str, tuple[str, ...]]) -> tuple[dict[str, EndpointConfig],
                                                                                       set[str]]:
    """The endpoints by name (the top-level `server:` is `default`), and every name declared (some may have
    failed to check: units naming them are not told the name is unknown)."""
    endpoints: dict[str, EndpointConfig] = {}
    declared: set[str] = set()
    if top.get("server") is not None:
        declared.add("default")
        server = _server(check, top["server"], "server", None, keys=ENDPOINT_KEYS, vpcs=vpcs)
        if server is None:
            check.problem("server.host", "required")
        else:
            endpoints["default"] = server
    raw = top.get("endpoints")
    if raw is not None and not isinstance(raw, dict):
        check.problem("endpoints", f"must be a mapping of endpoints by name, got {_kind(raw)}")
        return endpoints, declared
    for name, value in (raw or {}).items():
        path = f"endpoints.{name}"
        if (why := name_problem(name)) is not None:
            check.problem(path, f"an endpoint's name {why}")
            continue
        if name == "default" and "default" in declared:
            check.problem(path, "the top-level server: is the endpoint named default: keep one of the two")
            continue
        declared.add(name)
        endpoint = _server(check, value, path, None, name=name, keys=ENDPOINT_KEYS, vpcs=vpcs, host_required=True)
        if endpoint is not None:
            endpoints[name] = endpoint
    return endpoints, declared


def _forward(check: _Checker, raw: Any, path: str) -> ForwardConfig | None:
    data = check.mapping(raw, path, ("name", "remote_port", "remote_bind", "local", "service"))
    if not isinstance(raw, dict):
        return None
    name = check.string(data, "name", path, None, required=True)
    if name is not None and not NAME_RE.match(name):
        check.problem(f"{path}.name", f"must be 1-32 letters, digits, '_', '.' or '-', got {name!r}")
        name = None
    if "remote_port" not in data or data["remote_port"] is None:
        check.problem(f"{path}.remote_port", "required (0 lets the server choose)")
    remote_port = check.integer(data, "remote_port", path, -1, 1, 65535, zero_ok=True)
    bind = check.string(data, "remote_bind", path, "") or ""
    if bind and (any(c.isspace() for c in bind) or "/" in bind):
        check.problem(f"{path}.remote_bind", f"must be \"\" or an address such as 127.0.0.1, got {bind!r}")
    service = check.string(data, "service", path, None)
    service_match = _SERVICE_RE.match(service) if service is not None else None
    if service is not None and (service_match is None or not 1 <= int(service_match["port"]) <= 65535):
        check.problem(f"{path}.service", "must be service[+scheme]://host:port[path], such as "
                                         f"smb://samba.example.com:139 or webdav+http://10.0.0.1:80/, got {service!r}")
        service_match = None
    # Without `local`, connections go where the service URI points.
    local_text = check.string(data, "local", path, None)
    if local_text is None and service is None:
        check.problem(f"{path}.local", "required: host:port to deliver to (or a service URI to take it from)")
    if local_text is None and service_match is not None:
        local_text = join_host_port(service_match["host"].strip("[]"), int(service_match["port"]))
    local = split_host_port(local_text) if local_text is not None else None
    if local_text is not None and local is None:
        check.problem(f"{path}.local", f"must be host:port (port 1-65535), such as 127.0.0.1:22, got {local_text!r}")
    if name is None or remote_port < 0 or local is None:
        return None
    return ForwardConfig(name=name, remote_port=remote_port, remote_bind=bind, local_host=local[0], local_port=local[1],
                         service=service)


def _unit(check: _Checker, name: str, raw: Any, path: str, endpoints: dict[str, EndpointConfig],
          declared: set[str]) -> UnitConfig | None:
    allowed = ("username", "server", "forwards", "target", *SEED_FORWARDS, "app_target_port", "endpoint")
    data = check.mapping(raw, path, allowed)
    endpoint = check.string(data, "endpoint", path, None)
    own = "server" in data   # a server of the unit's own, over the endpoint default (endpoint: is preferred)
    if endpoint is not None and own:
        check.problem(f"{path}.endpoint", "a unit names an endpoint or has a server: block of its own, not both "
                                          "(endpoint: is the one to keep)")
    elif endpoint is not None and endpoint not in declared:
        check.problem(f"{path}.endpoint", f"no endpoint named {endpoint!r}{closest(endpoint, sorted(declared))}")
    base = endpoints.get("default" if own or endpoint is None else endpoint)
    username = _login(check, data, path, base.username if base else "root")
    if own:
        unit_server = _server(check, data["server"], f"{path}.server", base, name=f"{path}.server")
        endpoint = None
    else:
        endpoint = endpoint or "default"
        unit_server = base
    if unit_server is None and (own or endpoint == "default") and "default" not in declared:
        if not own and declared:
            check.problem(path, f"no endpoint to connect to: set {path}.endpoint to one of "
                                f"{', '.join(sorted(declared))} (or add server:, the endpoint default)")
        else:
            check.problem(path, f"no server to connect to: set server.host (or {path}.server.host)")

    forwards: list[tuple[str, ForwardConfig]] = []
    raw_forwards = data.get("forwards")
    if raw_forwards is not None and not isinstance(raw_forwards, list):
        check.problem(f"{path}.forwards", f"must be a list, got {_kind(raw_forwards)}")
    elif raw_forwards:
        for i, item in enumerate(raw_forwards):
            forward = _forward(check, item, f"{path}.forwards[{i}]")
            if forward is not None:
                forwards.append((f"{path}.forwards[{i}]", forward))

    # The seed's shorthand: target + ssh_port/http_port/app_port(+app_target_port).
    target = _check_host(check, check.string(data, "target", path, "127.0.0.1"), f"{path}.target") or "127.0.0.1"
    for key, (fwd_name, local_port) in SEED_FORWARDS.items():
        if data.get(key) is None:
            continue
        port = check.integer(data, key, path, -1, 1, 65535, zero_ok=True)
        if isinstance(local_port, str):
            if data.get(local_port) is None:
                check.problem(f"{path}.{key}", f"needs {local_port}: the port the app listens on at {target}")
                continue
            local_port = check.integer(data, local_port, path, -1, 1, 65535)
        if port >= 0 and local_port > 0:
            forwards.append((f"{path}.{key}", ForwardConfig(fwd_name, port, target, local_port)))
    if data.get("app_target_port") is not None and data.get("app_port") is None:
        check.problem(f"{path}.app_target_port", "only means something with app_port")

    seen: dict[str, str] = {}
    for where, forward in forwards:
        if forward.name in seen:
            check.problem(where, f"duplicate forward name {forward.name!r} (also at {seen[forward.name]})")
        seen.setdefault(forward.name, where)
        check.forward_paths.setdefault((name, forward.name), where)
    if unit_server is None:
        return None
    return UnitConfig(name=name, username=username, server=unit_server, forwards=tuple(f for _, f in forwards),
                      endpoint=endpoint)


def parse_config(text: str, source: str = "console.yaml") -> Config:
    """Validate YAML text; raise ConfigError with every problem, one line each."""
    data, lines, syntax = compose(text, source)
    if data is None:
        raise ConfigError(syntax)
    check = _Checker(source, lines)
    top = check.mapping(data, "", ("server", "endpoints", "vpcs", "tunnel", "units", "log", "oplog", "console",
                                        "hub", "proxy"))
    vpcs = _vpcs(check, top.get("vpcs"))
    endpoints, declared = _endpoints(check, top, vpcs)

    t = check.mapping(top.get("tunnel"), "tunnel", tuple(TunnelConfig.__dataclass_fields__))
    tunnel = TunnelConfig(
        keepalive_interval=check.number(t, "keepalive_interval", "tunnel", 5.0, 0, 3600),
        keepalive_count_max=check.integer(t, "keepalive_count_max", "tunnel", 3, 1, 100),
        retry_min=check.number(t, "retry_min", "tunnel", 0.1, 0.01, 3600),
        retry_max=check.number(t, "retry_max", "tunnel", 30.0, 0.01, 86400),
        connect_timeout=check.number(t, "connect_timeout", "tunnel", 10.0, 0.1, 600),
        endpoint_check_interval=check.number(t, "endpoint_check_interval", "tunnel", 300.0, 0, 86400),
        transport=check.choice(t, "transport", "tunnel", "asyncssh", TRANSPORTS),
    )
    if 0 < tunnel.endpoint_check_interval < 1:
        check.problem("tunnel.endpoint_check_interval",
                      f"must be 0 (off) or at least 1 second, got {tunnel.endpoint_check_interval:g}")
    if tunnel.retry_min > tunnel.retry_max:
        check.problem("tunnel.retry_min", f"must not exceed retry_max ({tunnel.retry_max:g}), got {tunnel.retry_min:g}")

    lg = check.mapping(top.get("log"), "log", ("max_bytes", "backups", "syslog", "syslog_address"))
    syslog_address = check.string(lg, "syslog_address", "log", "/dev/log") or "/dev/log"
    if Target.parse(syslog_address) is None:
        check.problem("log.syslog_address", "must be a Unix socket path such as /dev/log, or address:port (UDP) "
                                            f"such as 127.0.0.1:514, got {syslog_address!r}")
        syslog_address = "/dev/log"
    log = LogConfig(
        max_bytes=check.integer(lg, "max_bytes", "log", 1_048_576, 4096, 1 << 40),
        backups=check.integer(lg, "backups", "log", 3, 0, 100, zero_ok=True),
        syslog=check.boolean(lg, "syslog", "log", False),
        syslog_address=syslog_address,
    )
    op = check.mapping(top.get("oplog"), "oplog", ("keep_days", "max_rows"))
    oplog = OplogConfig(keep_days=check.integer(op, "keep_days", "oplog", 365, 1, 36_500),
                        max_rows=check.integer(op, "max_rows", "oplog", 1_000_000, 1_000, 1_000_000_000))

    cs = check.mapping(top.get("console"), "console", ("theme",))
    console = ConsoleSettings(theme=check.choice(cs, "theme", "console", "sop", THEMES))

    units: dict[str, UnitConfig] = {}
    raw_units = top.get("units")
    if raw_units is not None and not isinstance(raw_units, dict):
        check.problem("units", f"must be a mapping of master and/or clone, got {_kind(raw_units)}")
    elif raw_units:
        for name, raw in raw_units.items():
            if name not in UNIT_NAMES:
                check.problem(f"units.{name}", "unknown unit (units are master and clone)")
                continue
            unit = _unit(check, name, raw, f"units.{name}", endpoints, declared)
            if unit is not None:
                units[name] = unit
        units = {n: units[n] for n in UNIT_NAMES if n in units}

    _check_port_clash(check, units)
    hub = _hub(check, top["hub"]) if "hub" in top else None
    proxy = _proxy(check, top.get("proxy"), units, hub)
    problems = syntax + check.formatted()
    if problems:
        raise ConfigError(problems)
    return Config(units=units, server=endpoints.get("default"), tunnel=tunnel, log=log, oplog=oplog, console=console,
                  hub=hub, source=source, endpoints=endpoints, vpcs=vpcs, proxy=proxy)


def _hub(check: _Checker, raw: Any) -> HubConfig:
    data = check.mapping(raw, "hub", ("listen", "ports", "default_quota", "bind", "max_startups",
                                      "max_startups_per_source", "login_grace_time", "max_auth_tries",
                                      "max_sessions", "egress_allow"))
    hub = HubConfig()
    listen_text = check.string(data, "listen", "hub", "0.0.0.0:2222") or "0.0.0.0:2222"
    listen = split_host_port(listen_text)
    if listen is None:
        check.problem("hub.listen", f"must be address:port, such as 0.0.0.0:2222, got {listen_text!r}")
        listen = (hub.listen_host, hub.listen_port)
    ports_text = str(data.get("ports", "2200-5199"))
    match = re.fullmatch(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", ports_text)
    low, high = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not match or not 1 <= low <= high <= 65535:
        check.problem("hub.ports", f"must be a range LOW-HIGH within 1-65535, such as 2200-5199, got {ports_text!r}")
        low, high = hub.port_low, hub.port_high
    quota = check.integer(data, "default_quota", "hub", 20, 1, 65535, zero_ok=True)
    if quota > high - low + 1:
        check.problem("hub.default_quota", f"must fit the range ({high - low + 1} ports), got {quota}")
    bind = _check_host(check, check.string(data, "bind", "hub", "127.0.0.1"), "hub.bind") or "127.0.0.1"
    max_startups = check.integer(data, "max_startups", "hub", 100, 1, 100_000)
    per_source = check.integer(data, "max_startups_per_source", "hub", 10, 1, 100_000)
    grace = check.number(data, "login_grace_time", "hub", 30.0, 1, 3600)
    tries = check.integer(data, "max_auth_tries", "hub", 6, 1, 100)
    sessions = check.integer(data, "max_sessions", "hub", 10, 1, 10_000)
    return HubConfig(listen[0], listen[1], low, high, quota, bind, max_startups, per_source, grace, tries, sessions,
                     _egress_allow(check, data.get("egress_allow")))


def _egress_allow(check: _Checker, raw: Any) -> tuple[str, ...]:
    """hub.egress_allow: a list of HOST:PORT or CIDR:PORT (console.core.egress_allow); none by default."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        check.problem("hub.egress_allow", f"must be a list of HOST:PORT or CIDR:PORT, got {_kind(raw)}")
        return ()
    allowed = []
    for i, entry in enumerate(raw):
        try:
            allowed.append(parse_entry(entry).text)
        except ValueError as exc:
            check.problem(f"hub.egress_allow[{i}]", str(exc))
    return tuple(allowed)


def forward_rules(units: Iterable[UnitConfig]) -> list[Rule]:
    """Today's unit forwards, as the ingress rules they are: the unit's server listens on remote_port (0: the
    server's choice, known once it listens) and connections go to `local` from here. Read-only rules (source
    forward); the unit's worker runs them."""
    return [Rule("ingress", "tcp", f.remote_port, f.local_host, f.local_port, unit.name, source="forward",
                 origin=f.name, listen=None) for unit in units for f in unit.forwards]


PROXY_KEYS = ("listen", "udp_idle_timeout", "udp_max_flows", "ingress", "egress", "gateways")
GATEWAY_KEYS = ("name", "subnet", "base", "services", "hosts", "via", "listen")


def _proxy(check: _Checker, raw: Any, units: dict[str, UnitConfig], hub: HubConfig | None) -> ProxyConfig:
    """`proxy:`: each rule either its text (via local) or {rule: TEXT, via: UNIT}; gateways; their clashes."""
    data = check.mapping(raw, "proxy", PROXY_KEYS)
    listen = _listen_address(check, data, "proxy", "127.0.0.1")
    timeout = check.number(data, "udp_idle_timeout", "proxy", 60.0, 1, 86400)
    max_flows = check.integer(data, "udp_max_flows", "proxy", 4096, 1, 1_000_000)
    placed: list[tuple[str, Rule]] = [(check.forward_paths.get((r.via, r.origin), f"units.{r.via}"), r)
                                      for r in forward_rules(units.values()) if r.port]
    rules: list[Rule] = []
    seen: dict[tuple[str, str, str], str] = {}
    for direction in DIRECTIONS:
        for where, item in _items(check, data.get(direction), f"proxy.{direction}"):
            rule = _rule(check, direction, item, where, units, listen)
            if rule is None:
                continue
            if rule.key in seen:
                check.problem(where, f"{rule.name} is listed twice (also at {seen[rule.key]})")
                continue
            seen[rule.key] = where
            rules.append(rule)
            placed.append((where, rule))
    gateways = []
    raw_gateways = data.get("gateways")
    for where, item in _items(check, raw_gateways, "proxy.gateways") if raw_gateways is not None else ():
        plan = _gateway(check, item, where, units, listen)
        if plan is None:
            continue
        if any(g.name == plan.name for g in gateways):
            check.problem(f"{where}.name", f"gateway {plan.name!r} is named twice")
            continue
        gateways.append(plan)
        placed += [(where, r) for r in plan.rules()]
    _check_rule_clash(check, placed, hub)
    return ProxyConfig(listen=listen, udp_idle_timeout=timeout, udp_max_flows=max_flows, rules=tuple(rules),
                       gateways=tuple(gateways))


def _listen_address(check: _Checker, data: dict, path: str, default: str) -> str:
    value = check.string(data, "listen", path, default) or default
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        check.problem(f"{path}.listen", f"must be an address of this machine, such as 127.0.0.1, 0.0.0.0 or ::, "
                                        f"got {value!r}")
        return default


def _via(check: _Checker, value: Any, path: str, units: dict[str, UnitConfig]) -> str | None:
    if value is None:
        return LOCAL
    if not isinstance(value, str):
        check.problem(path, f"must be local or a unit's name, got {_kind(value)}")
        return None
    if (why := via_problem(value, units)) is not None:
        check.problem(path, why)
        return None
    return value


def _rule(check: _Checker, direction: str, item: Any, where: str, units: dict[str, UnitConfig],
          listen: str) -> Rule | None:
    if isinstance(item, dict):
        fields = check.mapping(item, where, ("rule", "via"))
        text = check.string(fields, "rule", where, None, required=True)
        via = _via(check, fields.get("via"), f"{where}.via", units)
        text_path = f"{where}.rule"
    elif isinstance(item, str):
        text, via, text_path = item, LOCAL, where
    else:
        check.problem(where, f"must be a rule ({RULE_FORM}) or {{rule: RULE, via: UNIT}}, got {_kind(item)}")
        return None
    if text is None:
        return None
    try:
        rule = make_rule(direction, text, via or LOCAL, source="config", origin=where, listen=listen)
    except RuleError as exc:
        check.problem(text_path, str(exc))
        return None
    return rule if via is not None else None


def _gateway(check: _Checker, raw: Any, where: str, units: dict[str, UnitConfig], listen: str) -> GatewayPlan | None:
    if not isinstance(raw, dict):
        check.problem(where, f"must be a gateway plan (name, subnet, base, services, hosts, via), got {_kind(raw)}")
        return None
    data = check.mapping(raw, where, GATEWAY_KEYS)
    name = check.string(data, "name", where, None, required=True)
    if name is not None and not NAME_RE.match(name):
        check.problem(f"{where}.name", f"must be 1-32 letters, digits, '_', '.' or '-', got {name!r}")
        name = None
    subnet = None
    if data.get("subnet") is None:
        check.problem(f"{where}.subnet", "required: the private network, such as 192.168.0.0/24")
    else:
        subnet = _network(check, data["subnet"], f"{where}.subnet")
    if data.get("base") is None:
        check.problem(f"{where}.base", "required: the first port of the plan, such as 30000")
    base = check.integer(data, "base", where, -1, 1, 65535)
    services = _services(check, data.get("services"), f"{where}.services")
    hosts = None
    if data.get("hosts") is None and subnet is not None:
        hosts = host_range(ipaddress.ip_network(subnet))
    elif data.get("hosts") is not None:
        hosts = parse_hosts(data["hosts"])
        if hosts is None:
            check.problem(f"{where}.hosts", f"must be a range FIRST-LAST of host numbers, such as 1-254, "
                                            f"got {data['hosts']!r}")
    via = _via(check, data.get("via"), f"{where}.via", units)
    address = _listen_address(check, data, where, listen)
    if None in (name, subnet, hosts, via) or base < 0 or not services:
        return None
    plan = GatewayPlan(name, subnet, base, services, hosts, via, address)
    for problem in plan.problems():
        check.problem(f"{where}.hosts", problem)
    return plan


def _services(check: _Checker, raw: Any, path: str) -> tuple[int, ...]:
    if raw is None:
        check.problem(path, "required: the service ports of every host, such as [22, 80, 443]")
        return ()
    if not isinstance(raw, list) or not raw:
        check.problem(path, f"must be a list of ports, such as [22, 80, 443], got {_kind(raw)}")
        return ()
    services: list[int] = []
    for i, port in enumerate(raw):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            check.problem(f"{path}[{i}]", f"must be a port 1-65535, got {port!r}")
            return ()
        if port in services:
            check.problem(f"{path}[{i}]", f"{port} is listed twice")
            return ()
        services.append(port)
    if len(services) > MAX_GATEWAY_SERVICES:
        check.problem(path, f"at most {MAX_GATEWAY_SERVICES} services, got {len(services)}")
        return ()
    return tuple(services)


def _check_rule_clash(check: _Checker, placed: list[tuple[str, Rule]], hub: HubConfig | None) -> None:
    """Two listeners on one port: one line per clashing rule, and per gateway and what it clashes with (how many
    ports, the first); the hub's own port and client ports are taken too."""
    where = {id(rule): path for path, rule in placed}
    said: dict[tuple[str, str], list[tuple[int, str]]] = {}   # (path, what it meets) -> (port, in full)
    for rule, other in clashes(r for _, r in placed):
        if rule.source == other.source == "forward":
            continue   # _check_port_clash says it
        at = f" at {where[id(other)]}"
        owner = f"clash with gateway {other.origin}{at}" if other.source == "gateway" else \
            f"clash with {describe_place(other)}{at}"
        said.setdefault((where[id(rule)], owner), []).append((rule.port, f"clashes with {describe_place(other)}{at}"))
    for path, rule in placed:
        if rule.source != "forward" and (what := hub_clash(rule, hub)) is not None:
            said.setdefault((path, f"are {what}"), []).append((rule.port, f"is {what}"))
    for (path, plural), ports in said.items():
        if len(ports) == 1:
            check.problem(path, f"port {ports[0][0]} {ports[0][1]}")
        else:
            check.problem(path, f"{len(ports)} of its ports {plural} (the first: {ports[0][0]})")


def _check_port_clash(check: _Checker, units: dict[str, UnitConfig]) -> None:
    """Two forwards asking one server for the same port can never both listen."""
    asked: dict[tuple[str, int, int], str] = {}
    for unit in units.values():
        for forward in unit.forwards:
            if forward.remote_port == 0:
                continue
            # Keyed on the endpoint's address: two endpoints on one server (two accounts) share its ports.
            key = (unit.server.host.lower(), unit.server.port, forward.remote_port)
            where = check.forward_paths[(unit.name, forward.name)]
            if key in asked:
                path = f"{where}.remote_port" if where.endswith("]") else where
                named = f" (endpoint {unit.endpoint})" if unit.endpoint not in (None, "default") else ""
                check.problem(path, f"{forward.remote_port} is already asked of {unit.server.address}{named} by "
                                    f"{asked[key]}")
            else:
                asked[key] = where


def load_config(path: Path, *, display: str | None = None) -> Config:
    """Read and validate a config file. A missing file is a configuration error (exit 2)."""
    name = display or str(path)
    try:
        text = read_config_text(path, name)
    except FileNotFoundError:
        raise ConfigError([f"{name}: no configuration file (copy config/console.example.yaml there, or pass --config)"]
                          ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{name}: cannot read: {os_reason(exc)}"]) from None
    return parse_config(text, name)

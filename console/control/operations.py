"""The control operations, each declared once: its name, its parameters (the handler's signature), whether it
needs a hub, whether it only reads, and a one-line doc (the handler's docstring).

    @operation("clients.remove", hub=True)
    def clients_remove(call: Call, id: str) -> dict:
        \"\"\"Remove a client: its sessions end, its ports go back to the pool.\"\"\"
        return call.clients.remove(id)

Parameter types are read from the annotations: ``str``, ``int``, ``bool``, ``list[str]`` (at most
MAX_LIST_ITEMS), and ``X | None`` for one that may be null. A parameter without a default is required. Every
request is checked against the signature before the handler runs, so a bad request gets one line naming the field
(``clients.change: quota must be an integer, got 'NaN'``), never an internal error.

The daemon's control server runs them (`perform`); so does the CLI on the store alone when no daemon runs, for
the hub's, the endpoints' (logins to endpoints included: `Call.logins`) and the proxy rules' operations only, holding
the daemon's lock for those that change anything (see console/cli/context.py: `daemon_or_store`).
``subscribe`` is not here: it turns the connection into an event stream (console/control/server.py).

`perform` writes every operation that is not read-only to the operation log (console/core/oplog.py), whether it
went well or not: who (`Call.who`, and the SSH address its client said), from where (`Call.via`), the action, the
target (the parameter `target=` names; by default the first of name, id, unit), the outcome and its reason, how
long it took and the parameters (secrets replaced). `recorded=` changes what is recorded: True for a read-only
operation that reveals a secret, or a function of the request's args (`trust` records nothing for a `check`);
`result=` names what of the result to keep (never a secret: `clients.add`'s private key is not kept).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from console.core.errors import ConsoleError, DaemonNotRunning, OperationFailed, UsageError
from console.core.status import EndpointRoute, EndpointStatus, GatewayStatus, RuleStatus, SshdCheck
from console.core.words import counted

if typing.TYPE_CHECKING:
    from console.core.endpoint_table import EndpointTable
    from console.core.oplog import Recorder
    from console.core.rule_table import RuleTable
    from console.engine import Engine
    from console.hub.admin import ClientsAdmin
    from console.tunnel.endpoint_logins import EndpointLogins


@dataclass
class Call:
    """What a handler runs against: who asked and from where, the engine, the hub's clients and the endpoints
    where there are some, and the operation log's recorder (None: nothing is recorded)."""

    who: str
    engine: Engine | None = None
    clients: ClientsAdmin | None = None
    reload: Callable[[], Awaitable[list[str]]] | None = None
    endpoints: EndpointTable | None = None
    logins: EndpointLogins | None = None    # what logs in to the endpoints (checks, set-ups), over `endpoints`
    via: str = "daemon"              # cli, console, config-reload, daemon
    ssh_from: str | None = None      # the SSH client address the CLI or console said (SSH_CONNECTION), unverified
    recorder: Recorder | None = None
    action: str | None = None        # set by a handler that records under another name (kick: `record`)


_KINDS: dict[Any, str] = {str: "a string", int: "an integer", bool: "true or false", list[str]: "a list of strings"}
MAX_LIST_ITEMS = 1000


@dataclass(frozen=True)
class Param:
    name: str
    kind: Any              # str, int, bool or list[str]
    required: bool
    nullable: bool         # `X | None`: null is the same as leaving it out
    default: Any = None

    def check(self, op: str, value: Any) -> Any:
        if value is None and self.nullable:
            return self.default
        if value is None and self.required:
            raise UsageError(f"{op}: {self.name} is required")
        if self.kind == list[str]:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            if ok and len(value) > MAX_LIST_ITEMS:
                raise UsageError(f"{op}: {self.name} holds at most {MAX_LIST_ITEMS} items, got {len(value)}")
        else:
            ok = isinstance(value, self.kind) and not (self.kind is int and isinstance(value, bool))
        if not ok:
            raise UsageError(f"{op}: {self.name} must be {_KINDS[self.kind]}, got {_shown(value)}")
        return value


@dataclass(frozen=True)
class Operation:
    name: str
    params: tuple[Param, ...]
    handler: Callable[..., Any]
    hub: bool           # runs against the hub's clients (call.clients), not the engine
    read_only: bool     # changes nothing the daemon enforces
    doc: str
    endpoints: bool = False   # runs against the endpoints (call.endpoints), not the engine
    rules: bool = False       # runs against the proxy rules (rule_table(call)), not the engine
    recorded: Callable[[dict], bool] = lambda args: True   # written to the operation log, given the request's args
    target: str | None = None                              # the parameter naming what it acts on
    result: Callable[[Any], dict] | None = None            # what of its result the log keeps (never a secret)

    def bind(self, args: Any) -> dict[str, Any]:
        """The handler's keyword arguments from a request's args, or a UsageError naming the field."""
        if not isinstance(args, dict):
            raise UsageError("args must be an object")
        known = {p.name for p in self.params}
        unknown = sorted(str(k) for k in args if k not in known)
        if unknown:
            names = ", ".join(repr(k) for k in unknown)
            raise UsageError(f"{self.name}: unknown parameter{'s' if len(unknown) > 1 else ''} {names} "
                             f"(it takes {', '.join(p.name for p in self.params) or 'none'})")
        bound = {}
        for param in self.params:
            if param.name not in args and param.required:
                raise UsageError(f"{self.name}: {param.name} is required")
            value = param.check(self.name, args.get(param.name)) if param.name in args else param.default
            bound[param.name] = value
        return bound

    async def run(self, call: Call, args: Any) -> Any:
        bound = self.bind(args)
        if self.hub and call.clients is None:
            if call.engine is None:
                raise DaemonNotRunning(f"{self.name} needs the hub's clients")
            raise UsageError("this daemon runs no hub: add a hub: section to the config")
        if self.endpoints and call.endpoints is None:
            raise DaemonNotRunning(f"{self.name} needs the daemon, or the store")
        if self.rules and rule_table(call) is None:
            raise DaemonNotRunning(f"{self.name} needs the daemon, or the store")
        if not self.hub and not self.endpoints and not self.rules and call.engine is None:
            raise DaemonNotRunning(f"{self.name} needs the daemon")
        result = self.handler(call, **bound)
        if inspect.isawaitable(result):
            result = await result
        return result


OPERATIONS: dict[str, Operation] = {}


def operation(name: str, *, hub: bool = False, read_only: bool = False, endpoints: bool = False, rules: bool = False,
              recorded: bool | Callable[[dict], bool] | None = None, target: str | None = None,
              result: Callable[[Any], dict] | None = None):
    """Declare a handler as the control operation `name` (see the module's docstring)."""

    def register(handler: Callable[..., Any]) -> Callable[..., Any]:
        if name in OPERATIONS:
            raise ValueError(f"control operation {name!r} declared twice")
        hints = typing.get_type_hints(handler)
        params = []
        for p in list(inspect.signature(handler).parameters.values())[1:]:  # the first is the Call
            kind, nullable = _kind(hints.get(p.name), f"{name}: {p.name}")
            required = p.default is inspect.Parameter.empty
            params.append(Param(p.name, kind, required, nullable, None if required else p.default))
        doc = (inspect.getdoc(handler) or "").strip().splitlines()
        if not doc:
            raise ValueError(f"control operation {name!r} needs a one-line docstring")
        names = [p.name for p in params]
        if target is not None and target not in names:
            raise ValueError(f"control operation {name!r}: target {target!r} is not one of its parameters")
        chosen = target or next((n for n in ("name", "id", "unit") if n in names), None)
        wanted = (not read_only) if recorded is None else recorded
        recorded_by = wanted if callable(wanted) else (lambda args, always=bool(wanted): always)
        OPERATIONS[name] = Operation(name, tuple(params), handler, hub, read_only, doc[0], endpoints, rules,
                                     recorded_by, chosen, result)
        return handler

    return register


def lookup(name: Any) -> Operation:
    if not isinstance(name, str):
        raise UsageError(f"op must be a string, got {_shown(name)}")
    op = OPERATIONS.get(name)
    if op is None:
        raise UsageError(f"unknown request {_clip(name)!r}")
    return op


async def perform(call: Call, name: Any, args: Any) -> Any:
    """Check one request against the table and run it; record it in the operation log (see the module)."""
    op = lookup(name)
    if call.recorder is None or not op.recorded(args if isinstance(args, dict) else {}):
        return await op.run(call, args)
    started = time.monotonic()
    try:
        result = await op.run(call, args)
    except BaseException as exc:
        if isinstance(exc, ConsoleError):
            reason = exc.message
        elif isinstance(exc, asyncio.CancelledError):
            reason = "cancelled (the daemon was stopping, or its client went away)"
        else:
            reason = f"internal error: {type(exc).__name__}: {exc}"
        _record(call, op, args, started, reason)
        raise
    _record(call, op, args, started, None, result)
    return result


def _record(call: Call, op: Operation, args: Any, started: float, failed: str | None, result: Any = None) -> None:
    assert call.recorder is not None
    args = args if isinstance(args, dict) else {}
    details = dict(args)
    if failed is None and op.result is not None:
        details.update(op.result(result))
    target = args.get(op.target) if op.target else None
    if isinstance(target, list):
        target = ", ".join(map(str, target)) or None
    call.recorder.record(call.action or op.name, who=call.who, via=call.via, ssh_from=call.ssh_from,
                         target=None if target is None else _clip(str(target), 200), ok=failed is None,
                         reason=failed, duration_ms=(time.monotonic() - started) * 1000, details=details)


def _kind(hint: Any, where: str) -> tuple[type, bool]:
    nullable = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(members) < len(typing.get_args(hint))
        hint = members[0] if len(members) == 1 else None
    if hint not in _KINDS:
        raise TypeError(f"{where}: a control parameter is str, int, bool or list[str], or one of them | None")
    return hint, nullable


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _shown(value: Any) -> str:
    """A request's value in an error line: short, and in the words of JSON for what is not a scalar."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(_clip(value))
    return _clip(repr(value))


# ---------------------------------------------------------------------------------------------- the units


@operation("status", read_only=True)
def status(call: Call) -> dict:
    """Units, forwards and counters."""
    return call.engine.status()


@operation("ping", read_only=True)
def ping(call: Call) -> dict:
    """The daemon's pid: is it there."""
    return {"pid": os.getpid()}


@operation("start", result=lambda units: {"units": ", ".join(units)})
async def start(call: Call, unit: str | None = None) -> list[str]:
    """Start a unit's tunnels (every unit when none is named)."""
    return await call.engine.start_units(unit, call.who)


@operation("stop", result=lambda units: {"units": ", ".join(units)})
async def stop(call: Call, unit: str | None = None) -> list[str]:
    """Stop a unit's tunnels; it stays stopped across daemon restarts."""
    return await call.engine.stop_units(unit, call.who)


@operation("restart", result=lambda units: {"units": ", ".join(units)})
async def restart(call: Call, unit: str | None = None) -> list[str]:
    """Stop and start a unit's tunnels."""
    return await call.engine.restart_units(unit, call.who)


@operation("kick")
def kick(call: Call, unit: str | None = None, reason: str | None = None, record: str | None = None,
         detail: str | None = None, failed: str | None = None) -> list[str]:
    """Retry a unit's connection now; `record` names the operation log's entry (key install uses it)."""
    call.action = record
    if failed is not None:   # what `record` names failed elsewhere (a key install): recorded so, nothing retried
        raise OperationFailed(failed)
    return call.engine.kick(unit, call.who, reason or f"asked by {call.who}")


@operation("trust", recorded=lambda args: not args.get("check"),
           result=lambda r: {"server": r["server"], "fingerprint": r["fingerprint"], "outcome": r["outcome"]})
async def trust(call: Call, unit: str, fingerprint: str | None = None, replace: bool = False,
                check: bool = False) -> dict:
    """Record the host key a unit's server presents (refused unless it shows `fingerprint`, when given); `check`
    records nothing and says what it shows, what we trust and the server's SSH software."""
    return await call.engine.trust(unit, call.who, fingerprint, replace, check)


@operation("reload", result=lambda changes: {"changes": "; ".join(changes) or "nothing changed"})
async def reload(call: Call) -> list[str]:
    """Read the config file again; unchanged units and forwards keep running."""
    if call.reload is None:
        raise UsageError("reload: this engine cannot reload")
    return await call.reload()


# ---------------------------------------------------------------------------------------------- the hub's clients


@operation("clients.add", hub=True)
def clients_add(call: Call, id: str, pub_key: str | None = None, quota: int | None = None,
                force: bool = False) -> dict:
    """Register a client; without pub_key a key pair is made and the private key returned once."""
    return call.clients.add(id, pub_key, quota, force)


@operation("clients.list", hub=True, read_only=True)
def clients_list(call: Call, id: str | None = None) -> dict:
    """Clients (or one), their ports and what they forward now."""
    return call.clients.list(id)


@operation("clients.change", hub=True)
def clients_change(call: Call, id: str, quota: int) -> dict:
    """Set a client's quota; 0 disables it and ends its sessions."""
    return call.clients.change(quota, id)


@operation("clients.remove", hub=True)
def clients_remove(call: Call, id: str) -> dict:
    """Remove a client: its sessions end, its ports go back to the pool."""
    return call.clients.remove(id)


@operation("clients.export", hub=True, read_only=True)
def clients_export(call: Call) -> list[str]:
    """authorized_keys lines that give a plain OpenSSH server the same limits."""
    return call.clients.export_authorized_keys()


# ---------------------------------------------------------------------------------------------- the endpoints


@operation("endpoints.list", endpoints=True, read_only=True)
def endpoints_list(call: Call) -> dict:
    """Every endpoint (the config's, then those added at run time): who uses it, its scope, its last check."""
    return {"endpoints": call.endpoints.list()}


@operation("endpoints.show", endpoints=True, read_only=True)
def endpoints_show(call: Call, name: str) -> EndpointStatus:
    """One endpoint in full."""
    return call.endpoints.status(name)


@operation("endpoints.add", endpoints=True)
async def endpoints_add(call: Call, name: str, host: str, port: int = 22, username: str | None = None,
                        comment: str | None = None, subnet: str | None = None) -> EndpointStatus:
    """Add an endpoint at run time, kept in the store (surviving restarts), and check its login.

    A daemon checks it in the background (console/engine.py), the command line with no daemon before it answers;
    neither when tunnel.endpoint_check_interval is 0."""
    call.endpoints.add(name, host, port, username, comment, subnet, call.who)
    if call.engine is None and call.logins is not None:
        await call.logins.check_now([name], f"endpoint {name} added")
    return call.endpoints.status(name)


@operation("endpoints.remove", endpoints=True, target="names")
def endpoints_remove(call: Call, names: list[str]) -> list[str]:
    """Remove runtime endpoints, all or none: refused while units or rules use one, and for config endpoints."""
    return call.endpoints.remove(names, call.who)


@operation("endpoints.associate", endpoints=True)
def endpoints_associate(call: Call, name: str, vpcs: list[str] | None = None,
                        subnets: list[str] | None = None) -> dict:
    """Add VPCs and subnets to an endpoint's scope (kept in the store, for config endpoints too)."""
    return call.endpoints.associate(name, vpcs or [], subnets or [], call.who)


@operation("endpoints.unassociate", endpoints=True)
def endpoints_unassociate(call: Call, name: str, vpcs: list[str] | None = None,
                          subnets: list[str] | None = None) -> dict:
    """Take VPCs and subnets associated at run time out of an endpoint's scope; says which were not associated."""
    return call.endpoints.unassociate(name, vpcs or [], subnets or [], call.who)


@operation("endpoints.route", endpoints=True, read_only=True)
def endpoints_route(call: Call, address: str) -> EndpointRoute:
    """Which endpoint serves an address, and why: the most specific subnet, then the VPC, else none."""
    return call.endpoints.route(address)


def _logins(call: Call) -> EndpointLogins:
    if call.logins is None:
        raise DaemonNotRunning("logging in to an endpoint needs the daemon, or the state dir")
    return call.logins


# Recorded by perform (setup_auth's password is "(secret)" there, by its name); each keeps what came of it.
@operation("endpoints.check", endpoints=True, target="names",
           result=lambda r: {"checks": ", ".join(f"{c.endpoint} {c.state.value}" + (
               "" if c.available else f" ({c.reason.value})") for c in r["checks"]) or "no endpoints"})
async def endpoints_check(call: Call, names: list[str]) -> dict:
    """The login check of each named endpoint (every one when none is), stored as its last check."""
    return {"checks": await _logins(call).check(names, call.who)}


@operation("endpoints.setup_auth", endpoints=True,
           result=lambda r: {"outcome": r["outcome"], "now": r["check"].state.value})
async def endpoints_setup_auth(call: Call, name: str, method: str, password: str | None = None,
                               identity: str | None = None, login_user: str | None = None, unit: str | None = None,
                               trust_fingerprint: str | None = None) -> dict:
    """Authorize the unit keys on an endpoint by key, password, or after the script ran; ends with a new check."""
    return await _logins(call).setup_auth(name, method, call.who, password=password, identity=identity,
                                          login_user=login_user, unit=unit, trust_fingerprint=trust_fingerprint)


@operation("endpoints.setup_script", endpoints=True)
async def endpoints_setup_script(call: Call, name: str, unit: str | None = None) -> dict:
    """The POSIX sh script an operator runs on the endpoint as root: unit keys authorized, sshd settings set."""
    return {"script": await _logins(call).setup_script(name, call.who, unit)}


@operation("endpoints.check_sshd", endpoints=True,
           result=lambda r: {"result": (f"{counted(len(r.needs_change), 'setting')} to change" if r.needs_change
                                        else "ok") + (f"; fix: {r.fix}" if r.fix else "")})
async def endpoints_check_sshd(call: Call, name: str, fix: bool = False, identity: str | None = None,
                               login_user: str | None = None) -> SshdCheck:
    """Judge the endpoint's sshd settings against its units' forwards; `fix` changes what needs it (root or sudo)."""
    return await _logins(call).check_sshd(name, call.who, fix=fix, identity=identity, login_user=login_user)


# ---------------------------------------------------------------------------------------------- the proxy rules


@dataclass
class RulesCall(Call):
    """A Call with no daemon: the proxy rules on the store (the command line makes one; see rule_table)."""

    rules: RuleTable | None = None


def rule_table(call: Call) -> RuleTable | None:
    """The rules an operation runs against: the daemon's (its engine's), or, with no daemon, the store's."""
    if call.engine is not None:
        return call.engine.rules
    return getattr(call, "rules", None)


@operation("proxy.list", rules=True, read_only=True)
def proxy_list(call: Call) -> dict:
    """Every rule: the config's, the gateways', those added at run time, the units' forwards; state and counters."""
    return {"rules": rule_table(call).list()}


@operation("proxy.add", rules=True, target="rule")
async def proxy_add(call: Call, direction: str, rule: str, via: str | None = None) -> RuleStatus:
    """Add a rule (ingress or egress, protocol:port:destination:destination_port, via local or a unit), kept in the
    store; its state after the first attempt to listen."""
    return await rule_table(call).add(direction, rule, via, call.who)


@operation("proxy.remove", rules=True, target="rule")
async def proxy_remove(call: Call, direction: str, rule: str, via: str | None = None) -> RuleStatus:
    """Remove a rule added at run time (the config's are refused); `via` may be left out when only one matches."""
    return await rule_table(call).remove(direction, rule, via, call.who)


@operation("gateway.show", rules=True, read_only=True)
def gateway_show(call: Call, name: str) -> GatewayStatus:
    """A gateway port plan: every port -> host:service with its state, and what clashes with it."""
    return rule_table(call).gateway_show(name)


@operation("gateway.export", rules=True, read_only=True)
def gateway_export(call: Call, name: str, source: str, interface: str = "eth0") -> list[str]:
    """A gateway port plan as an iptables script (DNAT and SNAT, a block per host), for kernel NAT instead."""
    return rule_table(call).gateway_export(name, interface, source)


# ---------------------------------------------------------------------------------------------- the operation log


@operation("ops.list", read_only=True)
async def ops_list(call: Call, since: str | None = None, until: str | None = None, action: str | None = None,
                   who: str | None = None, target: str | None = None, before: int | None = None,
                   after: int | None = None, limit: int = 20) -> dict:
    """The operation log, newest first: `limit` entries older than entry `before` (or newer than `after`)."""
    from console.core.dates import parse_when, to_ms
    from console.core.oplog import OpQuery

    query = OpQuery(None if since is None else to_ms(parse_when(since, "since")),
                    None if until is None else to_ms(parse_when(until, "until")),
                    action, who, target, before, after, limit)
    return await asyncio.to_thread(call.engine.oplog.page, query)


@operation("ops.show", read_only=True)
async def ops_show(call: Call, id: int) -> dict:
    """One entry of the operation log, whole."""
    entry = await asyncio.to_thread(call.engine.oplog.get, id)
    if entry is None:
        raise UsageError(f"no operation {id} in the log (retention may have dropped it)")
    return entry.to_json()

"""`sop-console endpoints ...`: the SSH servers units (and proxy rules) go through, their scope and routing.

A change (add, remove, associate, unassociate) goes through the daemon when it runs, so it knows at once; with no
daemon at all it is made on the store, holding the daemon's lock (console/cli/context.py: `daemon_or_store`).
Reading (list, show, route) falls back to the store when no daemon answers.
"""

from __future__ import annotations

import getpass
import json
import textwrap
from typing import TYPE_CHECKING, Any

from console.cli.context import Commands, Context, daemon_or_store
from console.core.endpoints import SCOPE_ANSWERS, SCOPE_SOURCES
from console.core.errors import EXIT_FAILED, EXIT_OK, UsageError
from console.core.states import EndpointState
from console.core.status import EndpointCheck, EndpointRoute, EndpointStatus, ScopeEntry

if TYPE_CHECKING:
    from console.control.operations import Call
    from console.core.store import Store

WIDTH = 80


def register(commands: Commands) -> None:
    group = commands.group("endpoints", "the SSH servers units go through: list, show, add, remove, associate, "
                                        "unassociate, route")
    p = group.add("list", "every endpoint: state, user@host:port, where it is defined, who uses it", list_)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = group.add("show", "one endpoint in full: id, state, settings, who uses it, scope, times, last check", show)
    p.add_argument("name", metavar="NAME", help="the endpoint's name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = group.add("add", "add an endpoint at run time (kept in the store; config endpoints live in the config)", add)
    p.add_argument("name", metavar="NAME", help="its name: 1-32 letters, digits, '_', '.' or '-'")
    p.add_argument("--host", required=True, metavar="HOST", help="the SSH server's name or address")
    p.add_argument("--port", metavar="PORT", default="22", help="its SSH port (default 22)")
    p.add_argument("--user", metavar="USER", help="the account units log in as (default root)")
    p.add_argument("--comment", metavar="TEXT", help="a note for operators (one line, at most 200 characters)")
    p.add_argument("--subnet", metavar="CIDR", help="the endpoint's own network, in its scope (e.g. 10.1.0.0/24)")
    p = group.add("remove", "remove runtime endpoints (all or none: refused while units or rules use one)", remove)
    p.add_argument("names", nargs="+", metavar="NAME", help="the endpoints to remove")
    for action, verb in (("associate", "add to"), ("unassociate", "take out of")):
        p = group.add(action, f"{verb} an endpoint's scope: VPCs and subnets (several at once)", scope)
        p.add_argument("name", metavar="NAME", help="the endpoint")
        p.add_argument("--vpc", action="append", default=[], metavar="NAME",
                       help="a VPC (named in the config's vpcs:); may be repeated")
        p.add_argument("--subnet", action="append", default=[], metavar="CIDR",
                       help="a subnet such as 10.1.0.0/24 or fd00:1::/64; may be repeated")
    p = group.add("route", "which endpoint serves an address, and why (exit 1: none, or a tie)", route)
    p.add_argument("address", metavar="ADDRESS", help="an IP address, such as 10.1.2.3 or fd00::1")
    p.add_argument("--json", action="store_true", help="machine-readable output")


# ---------------------------------------------------------------------------------------------- the commands


def list_(ctx: Context) -> int:
    result = _request(ctx, "endpoints.list")
    if ctx.args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    endpoints = [EndpointStatus.from_json(e) for e in result["endpoints"]]
    if not endpoints:
        print("no endpoints: add one with `sop-console endpoints add NAME --host HOST`, or in the config")
        return EXIT_OK
    rows = [("NAME", "STATE", "USER@HOST:PORT", "SOURCE", "USED BY")]
    rows += [(e.name, e.state.label, f"{e.username}@{e.address}", e.source, _used_by(e) or "-") for e in endpoints]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row, endpoint in zip(rows, [None, *endpoints]):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
        if endpoint is not None and endpoint.state is EndpointState.UNAVAILABLE and endpoint.last_check:
            print(_wrapped(f"{endpoint.last_check.message}; {endpoint.last_check.hint}", "    "))
    return EXIT_OK


def show(ctx: Context) -> int:
    result = _request(ctx, "endpoints.show", name=ctx.args.name)
    if ctx.args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    print(render(EndpointStatus.from_json(result)))
    return EXIT_OK


def add(ctx: Context) -> int:
    a = ctx.args
    port = a.port.strip()
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"--port must be a port number 1-65535, got {a.port!r}")
    e = EndpointStatus.from_json(_request(ctx, "endpoints.add", name=a.name, host=a.host, port=int(port),
                                          username=a.user, comment=a.comment, subnet=a.subnet))
    print(f"endpoint {e.name} added ({e.id}): {e.username}@{e.address}, {e.state.label}"
          + (f", own subnet {e.subnet}" if e.subnet else ""))
    return EXIT_OK


def remove(ctx: Context) -> int:
    for name in _request(ctx, "endpoints.remove", names=ctx.args.names):
        print(f"endpoint {name} removed")
    return EXIT_OK


def scope(ctx: Context) -> int:
    """associate and unassociate."""
    a = ctx.args
    result = _request(ctx, f"endpoints.{a.endpoints_command}", name=a.name, vpcs=a.vpc, subnets=a.subnet)
    for key, words in SCOPE_ANSWERS[a.endpoints_command]:
        if result[key]:
            print(f"{a.name}: {words} {', '.join(result[key])}")
    for note in result.get("notes", []):
        print(_wrapped(f"note: {note}", "  ", first=""))
    return EXIT_OK


def route(ctx: Context) -> int:
    result = _request(ctx, "endpoints.route", address=ctx.args.address)
    found = EndpointRoute.from_json(result)
    if ctx.args.json:
        print(json.dumps(result, indent=2))
    else:
        verdict = found.endpoint or ("a tie: " + ", ".join(found.tied) if found.how == "tie" else "no endpoint")
        print(f"{found.address} -> {verdict}")
        print(_wrapped(found.why, "  "))
    return EXIT_OK if found.endpoint else EXIT_FAILED


# ---------------------------------------------------------------------------------------------- the text forms


def render(e: EndpointStatus) -> str:
    """`endpoints show`: one endpoint, a field a line, readable at 80 columns."""
    source = "runtime: added with `endpoints add`, kept in the store" if e.source == "runtime" else \
        "config: read-only at run time"
    if e.source == "config" and any(s.source == "runtime" for s in e.scope):
        source += "; what is associated at run time is kept in the store"
    lines = [f"endpoint {e.name}"]
    fields: list[tuple[str, str]] = [
        ("id", e.id), ("source", source),
        ("state", e.state.label), ("host", e.host), ("SSH port", str(e.port)), ("username", e.username),
        ("host keys", e.host_key_policy), ("comment", e.comment or "-"),
        ("units", ", ".join(e.units) or "none"), ("rules", ", ".join(e.rules) or "none")]
    scope = [_scope_line(s) for s in e.scope] or ["nothing (no own subnet, nothing associated)"]
    fields += [("scope", line) for line in scope]
    fields += [("created", e.created or ("-" if e.source == "runtime" else "(config)")),
               ("updated", e.updated or "-")]
    fields += [("last check", line) for line in _check_lines(e.last_check)]
    previous = None
    for label, value in fields:
        shown = label if label != previous else ""
        previous = label
        lines.append(_wrapped(value, " " * 14, first=f"  {shown:<12}"))
    return "\n".join(lines)


def _scope_line(entry: ScopeEntry) -> str:
    how = SCOPE_SOURCES.get(entry.source, entry.source)
    if entry.kind == "vpc":
        networks = ", ".join(entry.cidrs) or "not in the config's vpcs: any more"
        return f"VPC {entry.network} ({how}): {networks}"
    return f"subnet {entry.network} ({how})"


def _check_lines(check: EndpointCheck | None) -> list[str]:
    if check is None:
        return ["never checked"]
    lines = [f"{check.state.label}" + (f" ({check.reason})" if not check.available else "")
             + f", {check.checked_at or 'at an unknown time'}, {check.seconds:.2f} s",
             f"tried {check.username}@{check.address}" + (f" with {check.unit}'s key" if check.unit else "")]
    if not check.available or check.message:
        lines.append(check.message)
    if check.hint:
        lines.append(f"hint: {check.hint}")
    if check.methods:
        lines.append(f"server offers: {', '.join(check.methods)}")
    return lines


def _used_by(e: EndpointStatus) -> str:
    return "; ".join(part for part in (", ".join(e.units), ("rules " + ", ".join(e.rules)) if e.rules else "")
                     if part)


def _wrapped(text: str, indent: str, *, first: str | None = None) -> str:
    return textwrap.fill(text, WIDTH, initial_indent=indent if first is None else first, subsequent_indent=indent,
                         break_on_hyphens=False, break_long_words=True)


# ---------------------------------------------------------------------------------------------- daemon or store


def _request(ctx: Context, op: str, **args: Any) -> Any:
    return daemon_or_store(ctx, op, args, _endpoints_call)


def _endpoints_call(ctx: Context, store: Store) -> Call:
    from console.control.operations import Call
    from console.core.endpoint_table import EndpointTable

    return Call(getpass.getuser(), endpoints=EndpointTable(ctx.config(), store))

"""`sop-console endpoints ...`: the SSH servers units (and proxy rules) go through, their scope and routing, and
logging in to them: the auth status check, set-up auth, the sshd check.

A change (add, remove, associate, unassociate), and a login (check, setup-auth, check-sshd), goes through the daemon
when it runs, so it knows at once; with no daemon at all it runs in this process on the store, holding the daemon's
lock (console/cli/context.py: `daemon_or_store`): the same operation, the same code. Reading (list, show, route)
falls back to the store when no daemon answers.
"""

from __future__ import annotations

import getpass
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from console.cli.context import Commands, Context, daemon_or_store
from console.core.endpoints import SCOPE_ANSWERS, SCOPE_SOURCES
from console.core.errors import EXIT_FAILED, EXIT_OK, ConsoleError, UsageError
from console.core.states import EndpointState
from console.core.status import EndpointCheck, EndpointRoute, EndpointStatus, ScopeEntry, SshdCheck
from console.core.words import counted

if TYPE_CHECKING:
    from console.control.operations import Call
    from console.core.store import Store

WIDTH = 80


def register(commands: Commands) -> None:
    group = commands.group("endpoints", "the SSH servers units go through: list, show, add, remove, associate, "
                                        "unassociate, route, check, setup-auth, check-sshd")
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
    p = group.add("check", "log in to endpoints with the units' keys: available, or why not with a hint (exit 1: "
                           "any unavailable)", check)
    p.add_argument("names", nargs="*", metavar="NAME", help="the endpoints to check (default: every endpoint)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = group.add("setup-auth", "get the units' keys authorized on an endpoint by key, password or script, then "
                                "check it (exit 1: still unavailable)", setup_auth)
    p.add_argument("name", metavar="NAME", help="the endpoint")
    p.add_argument("--method", required=True, choices=("key", "password", "script"),
                   help="key: log in with --identity (root, or a user with password-less sudo) and install the "
                        "units' keys; password: log in with a password, asked once; script: print a POSIX sh "
                        "script to run on the server as root (only the script goes to stdout)")
    p.add_argument("--identity", metavar="FILE",
                   help="--method key: your private key file (no passphrase) that logs in as --login-user")
    p.add_argument("--login-user", metavar="USER",
                   help="the account to log in as (key: default root; password: default the units' account); "
                        "root or a user with password-less sudo may install for another account")
    p.add_argument("--unit", metavar="UNIT", help="only this unit's key (default: every unit of the endpoint)")
    p.add_argument("--trust-host-key", metavar="SHA256:...",
                   help="accept this server host key fingerprint if the server is not known yet")
    p.add_argument("--password-stdin", action="store_true",
                   help="--method password: read the password from standard input instead of asking")
    p = group.add("check-sshd", "judge an endpoint's sshd settings against its units' forwards; --fix changes "
                                "them (exit 1: a setting needs a change)", check_sshd)
    p.add_argument("name", metavar="NAME", help="the endpoint")
    p.add_argument("--fix", action="store_true",
                   help="write the settings that need a change (root or password-less sudo there), check them "
                        "with sshd -t, reload sshd, check again")
    p.add_argument("--identity", metavar="FILE",
                   help="log in with this private key file (e.g. root's) instead of the unit's key")
    p.add_argument("--login-user", metavar="USER",
                   help="the account to log in as (with --identity default root; else the units' account)")
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


def check(ctx: Context) -> int:
    started = time.monotonic()
    result = _request(ctx, "endpoints.check", names=ctx.args.names)
    seconds = time.monotonic() - started
    checks = [EndpointCheck.from_json(c) for c in result["checks"]]
    if ctx.args.json:
        print(json.dumps(result, indent=2))
    else:
        for c in checks:
            print("\n".join(check_lines(c)))
        print(f"{counted(len(checks), 'endpoint')} checked in {seconds:.2f} s")
    return EXIT_OK if all(c.available for c in checks) else EXIT_FAILED


def setup_auth(ctx: Context) -> int:
    a = ctx.args
    if a.method == "script":
        return _setup_script(ctx)
    args: dict[str, Any] = {"name": a.name, "method": a.method, "login_user": a.login_user, "unit": a.unit,
                            "trust_fingerprint": a.trust_host_key}
    if a.method == "key":
        if not a.identity:
            raise UsageError("--method key needs --identity FILE: a private key that logs in there as root (or "
                             "--login-user, a user with password-less sudo)")
        args["identity"] = str(Path(a.identity).expanduser().absolute())
    elif a.identity:
        raise UsageError("--identity goes with --method key")
    if a.method == "password":
        args["password"] = _password(ctx)
    result = _request(ctx, "endpoints.setup_auth", **args)
    print(textwrap.fill(result["outcome"], WIDTH, subsequent_indent="  ", break_on_hyphens=False,
                        break_long_words=False))   # a path or a fingerprint stays whole, to be copied
    new = EndpointCheck.from_json(result["check"])
    print("\n".join(check_lines(new)))
    return EXIT_OK if new.available else EXIT_FAILED


def _setup_script(ctx: Context) -> int:
    """The script alone on stdout (`> setup.sh`); what to do with it, and the status now, on stderr."""
    a = ctx.args
    for option, value in (("--identity", a.identity), ("--login-user", a.login_user),
                          ("--trust-host-key", a.trust_host_key), ("--password-stdin", a.password_stdin)):
        if value:
            raise UsageError(f"{option} does not go with --method script (the script runs on the server itself)")
    result = _request(ctx, "endpoints.setup_script", name=a.name, unit=a.unit)
    sys.stdout.write(result["script"])
    sys.stdout.flush()
    now = EndpointStatus.from_json(_request(ctx, "endpoints.show", name=a.name))
    print(f"run it on the server of {a.name} ({now.address}) as root: sh FILE; then `sop-console endpoints check "
          f"{a.name}`", file=sys.stderr)
    if now.last_check is not None:
        print("now:\n" + "\n".join(check_lines(now.last_check)), file=sys.stderr)
    else:
        print(f"now: {now.state.label}", file=sys.stderr)
    return EXIT_OK


def _password(ctx: Context) -> str:
    a = ctx.args
    if a.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UsageError("--password-stdin: no password on standard input")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask the password on: pipe it in with --password-stdin")
    endpoint = EndpointStatus.from_json(_request(ctx, "endpoints.show", name=a.name))
    return getpass.getpass(f"Password for {a.login_user or _account(ctx, endpoint, a.unit)}@{endpoint.address}: ")


def _account(ctx: Context, endpoint: EndpointStatus, unit: str | None) -> str:
    """Whose password a set-up asks for when no --login-user is given: the units' account."""
    try:
        units = ctx.config().units
    except ConsoleError:
        return endpoint.username
    names = [unit] if unit else endpoint.units
    accounts = [units[n].username for n in names if n in units and units[n].endpoint == endpoint.name]
    return " / ".join(dict.fromkeys(accounts)) or endpoint.username


def check_sshd(ctx: Context) -> int:
    from console.core.sshd_settings import render as render_sshd

    a = ctx.args
    identity = str(Path(a.identity).expanduser().absolute()) if a.identity else None
    result = _request(ctx, "endpoints.check_sshd", name=a.name, fix=a.fix, identity=identity,
                      login_user=a.login_user)
    found = SshdCheck.from_json(result)
    print(json.dumps(result, indent=2) if a.json else render_sshd(found, WIDTH))
    return EXIT_FAILED if found.needs_change else EXIT_OK


# ---------------------------------------------------------------------------------------------- the text forms


def check_lines(c: EndpointCheck) -> list[str]:
    """One endpoint's check, as `endpoints check` and `setup-auth` print it: state and time, message, hint."""
    head = f"{c.endpoint}  {c.state.label}" + ("" if c.available else f" ({c.reason.value})") + f"  {c.seconds:.2f} s"
    lines = [head, _wrapped(c.message, "  ")]
    if c.hint:
        lines.append(_wrapped(f"hint: {c.hint}", "    ", first="  "))
    return lines


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
    from console.core.known_hosts import KnownHosts
    from console.tunnel.endpoint_logins import EndpointLogins

    table = EndpointTable(ctx.config(), store)
    return Call(getpass.getuser(), endpoints=table,
                logins=EndpointLogins(table, ctx.paths, KnownHosts(ctx.paths.known_hosts)))

"""`sop-console clients ...` and `sop-console hub key`: the hub's side.

A command that changes what the daemon enforces (add, change, remove) goes through the daemon, so sessions end
at once. With no daemon at all it changes the store itself, holding the daemon's lock while it does, so no
daemon starts on a half-changed store. A daemon that holds the lock but cannot be reached (its control socket is
gone) is reported, exit 3, and nothing is changed: otherwise the store would say "removed" while the running hub
still lets the client in. Reading (list, export-authorized-keys) may fall back to the store at any time.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from console.cli.context import Commands, Context, daemon_or_store
from console.core.errors import EXIT_OK, UsageError, os_reason
from console.core.status import ClientStatus

if TYPE_CHECKING:
    from console.control.operations import Call
    from console.core.store import Store


def register(commands: Commands) -> None:
    clients = commands.group("clients", "the hub's clients: add, list, change, remove, export-authorized-keys")
    p = clients.add("add", "register a client; without --pub-key, print a new private key", add)
    p.add_argument("client_id", metavar="CLIENT_ID")
    p.add_argument("--pub-key", metavar="FILE", help="the customer's own public key")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing client's key (its sessions end)")
    p.add_argument("--quota", type=int, metavar="N", help="ports to reserve (default: hub.default_quota)")
    p = clients.add("list", "clients, their ports, what they forward now", list_)
    p.add_argument("client_id", nargs="?", metavar="CLIENT_ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = clients.add("change", "set a client's quota; 0 disables it at once", change)
    p.add_argument("quota", type=int, metavar="N")
    p.add_argument("client_id", metavar="CLIENT_ID")
    p = clients.add("remove", "remove a client: sessions end, ports return to the pool", remove)
    p.add_argument("client_id", metavar="CLIENT_ID")
    clients.add("export-authorized-keys", "authorized_keys lines that give a plain OpenSSH server the same limits",
                export)
    hub = commands.group("hub", "the hub itself")
    hub.add("key", "print the hub's host key and fingerprint (made on first use)", hub_key)


# ---------------------------------------------------------------------------------------------- the commands


def add(ctx: Context) -> int:
    a = ctx.args
    pub = None
    if a.pub_key:
        try:
            pub = Path(a.pub_key).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {a.pub_key}: {os_reason(exc)}") from None
    result = hub_request(ctx, "clients.add", id=a.client_id, pub_key=pub, quota=a.quota, force=a.force)
    client = ClientStatus.from_json(result["client"])
    print(f"client {client.id}: quota {client.quota}, ports {client.port_ranges or 'none'}, "
          f"key {client.fingerprint}", file=sys.stderr)
    if result["private_key"]:
        print(f"# the private key of {client.id}, shown this once: hand it over securely; "
              "nothing keeps it", file=sys.stderr)
        print(result["private_key"], end="")
    return EXIT_OK


def list_(ctx: Context) -> int:
    result = hub_request(ctx, "clients.list", id=ctx.args.client_id)
    if ctx.args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    for c in map(ClientStatus.from_json, result["clients"]):
        state = "enabled" if c.enabled else "disabled"
        print(f"{c.id:<16} {state:<8} quota {c.quota:<3} ports {c.port_ranges or '-':<12} "
              f"{'connected' if c.connected else 'offline':<9} forwarding {len(c.forwards)}  "
              f"last seen {c.last_seen or 'never'}")
        for f in c.forwards:  # what the customer proxies now, and where each port leads
            print(f"  {f.port:<5} {f.name or '-'} -> {f.destination or '(not announced)'}  {f.counters()}  "
                  f"from {f.session}")
    if not result["clients"]:
        print("no clients")
    return EXIT_OK


def change(ctx: Context) -> int:
    c = ClientStatus.from_json(hub_request(ctx, "clients.change", id=ctx.args.client_id, quota=ctx.args.quota))
    print(f"{c.id}: " + (f"quota {c.quota}, ports {c.port_ranges}" if c.enabled
                         else "disabled (quota 0): sessions ended, record and key kept"))
    return EXIT_OK


def remove(ctx: Context) -> int:
    c = ClientStatus.from_json(hub_request(ctx, "clients.remove", id=ctx.args.client_id))
    print(f"{c.id} removed: sessions ended, ports {c.port_ranges or '-'} back in the pool")
    return EXIT_OK


def export(ctx: Context) -> int:
    for line in hub_request(ctx, "clients.export"):
        print(line)
    return EXIT_OK


def hub_key(ctx: Context) -> int:
    from console.core.keys import fingerprint, load_or_create_key, public_line

    key = load_or_create_key(ctx.paths.prepare().hub_key, "sop-console-hub")
    print("# the hub's host key: pin it in the clients' server.host_key")
    print(public_line(key))
    print(fingerprint(key))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- daemon or store


def hub_request(ctx: Context, op: str, **args: Any) -> Any:
    """A hub operation through the daemon when it runs; with no daemon at all, on the store (see the module)."""
    return daemon_or_store(ctx, op, args, _clients_call)


def _clients_call(ctx: Context, store: Store) -> Call:
    from console.control.operations import Call
    from console.hub.admin import ClientsAdmin
    from console.hub.registry import Registry

    config = ctx.config()
    if config.hub is None:
        raise UsageError(f"no hub: section in {config.source}")
    admin = ClientsAdmin(Registry(store, (config.hub.port_low, config.hub.port_high), config.hub.default_quota))
    return Call(getpass.getuser(), clients=admin)

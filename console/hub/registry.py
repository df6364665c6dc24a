"""The hub's clients (tinydb, in the store): client_id, public key, quota and the ports reserved for it.

Each client holds `quota` ports from the hub's range at once, so an operator can tell a customer its ports in
advance. Quota 0 disables a client: its ports go back to the pool, its record and key stay.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from tinydb import Query

from console.core.clock import utc_iso
from console.core.errors import OperationFailed, UsageError
from console.core.keys import fingerprint, key_body, parse_public_key
from console.core.store import Store
from console.core.words import counted, noun

CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Client:
    id: str
    key: str                      # "ssh-ed25519 AAAA..." (no comment)
    fingerprint: str
    quota: int
    ports: list[int] = field(default_factory=list)
    created: str = ""
    last_seen: str | None = None

    @property
    def enabled(self) -> bool:
        return self.quota > 0


class Registry:
    """Clients live in memory and every change is written through to the store at once; reads never touch the
    file (tinydb re-parses its whole file on each query: 4.8 ms with 500 clients, once per forward request).
    `last_seen` is the exception: kept in memory and written in one batch by `flush`."""

    def __init__(self, store: Store, port_range: tuple[int, int], default_quota: int = 20) -> None:
        self.table = store.db.table("clients")
        self.low, self.high = port_range
        self.default_quota = default_quota
        self._clients = {row["id"]: Client(**row) for row in self.table.all()}
        self._by_key = {client.key: client.id for client in self._clients.values()}
        self._seen: set[str] = set()

    # ------------------------------------------------------------------ reading

    def get(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)

    def require(self, client_id: str) -> Client:
        client = self.get(client_id)
        if client is None:
            raise UsageError(f"no client {client_id!r} (see `sop-console clients list`)")
        return client

    def all(self) -> list[Client]:
        return sorted(self._clients.values(), key=lambda c: c.id)

    def by_key(self, key_body: str) -> Client | None:
        client_id = self._by_key.get(key_body)
        return self._clients.get(client_id) if client_id else None

    # ------------------------------------------------------------------ changing

    def retune(self, port_range: tuple[int, int], default_quota: int) -> list[str]:
        """A new range and default quota (a reload). Clients keep the ports they hold: an operator has told
        customers those. Returns what changed, naming clients that now hold ports outside the range."""
        changes = []
        if port_range != (self.low, self.high):
            changes.append(f"hub allocates ports from {port_range[0]}-{port_range[1]} instead of "
                           f"{self.low}-{self.high}")
            self.low, self.high = port_range
            outside = [c.id for c in self.all() if any(not self.low <= p <= self.high for p in c.ports)]
            if outside:
                changes.append(f"{counted(len(outside), 'client')} {noun(len(outside), 'keeps', 'keep')} ports outside it ({', '.join(outside[:5])}"
                               + (", ..." if len(outside) > 5 else "") + "); `clients change 0 ID`, then "
                               "`clients change N ID`, gives one N ports from the new range")
        if default_quota != self.default_quota:
            changes.append(f"new clients get {counted(default_quota, 'port')} instead of {self.default_quota}")
            self.default_quota = default_quota
        return changes

    def _save(self, client: Client) -> None:
        self.table.upsert(asdict(client), Query().id == client.id)
        self._by_key = {k: v for k, v in self._by_key.items() if v != client.id}
        self._by_key[client.key] = client.id
        self._clients[client.id] = client

    def _free_ports(self, count: int) -> list[int]:
        taken = {p for c in self.all() for p in c.ports}
        free = []
        for port in range(self.low, self.high + 1):
            if port not in taken:
                free.append(port)
                if len(free) == count:
                    return free
        raise OperationFailed(f"the port range {self.low}-{self.high} has only {counted(len(free), 'free port')}, "
                              f"{count} needed: widen hub.ports or lower a quota")

    def add(self, client_id: str, public_key: str, *, quota: int | None = None, replace: bool = False) -> Client:
        if not CLIENT_ID.match(client_id):
            raise UsageError(f"client_id must be 1-64 letters, digits, '_', '.', '-', got {client_id!r}")
        key = parse_public_key(public_key)
        if key is None:
            raise UsageError("not an OpenSSH public key (expected a line like ssh-ed25519 AAAA...)")
        body = key_body(public_key)
        other = self.by_key(body)
        if other is not None and other.id != client_id:
            raise UsageError(f"that key already belongs to client {other.id!r}: every client needs its own key")
        existing = self.get(client_id)
        if existing is not None and not replace:
            raise UsageError(f"client {client_id!r} exists: pass -f to replace its key (its sessions end)")
        if existing is not None:
            existing = replace_client(existing)
            existing.key, existing.fingerprint = body, fingerprint(key)
            if quota is not None:
                self._resize(existing, quota)
            self._save(existing)
            return existing
        quota = self.default_quota if quota is None else quota
        if quota < 0:
            raise UsageError("quota must be 0 or more")
        client = Client(client_id, body, fingerprint(key), quota, self._free_ports(quota) if quota else [],
                        created=utc_iso())
        self._save(client)
        return client

    def _resize(self, client: Client, quota: int) -> None:
        if quota < 0:
            raise UsageError("quota must be 0 or more")
        if quota > len(client.ports):
            client.ports = sorted(client.ports + self._free_ports(quota - len(client.ports)))
        else:
            client.ports = client.ports[:quota]  # the highest ports go back to the pool
        client.quota = quota

    def change(self, client_id: str, quota: int) -> Client:
        client = replace_client(self.require(client_id))
        self._resize(client, quota)
        self._save(client)
        return client

    def remove(self, client_id: str) -> Client:
        client = self.require(client_id)
        self.table.remove(Query().id == client_id)
        del self._clients[client_id]
        self._by_key.pop(client.key, None)
        self._seen.discard(client_id)
        return client

    def seen(self, client_id: str) -> None:
        """A client connected: in memory now, in the store at the next flush."""
        client = self._clients.get(client_id)
        if client is not None:
            client.last_seen = utc_iso()
            self._seen.add(client_id)

    def flush(self) -> None:
        """Write the last_seen times gathered since the last flush, in one write."""
        if self._seen:
            self.table.update_multiple([({"last_seen": self._clients[c].last_seen}, Query().id == c)
                                        for c in self._seen if c in self._clients])
            self._seen.clear()


def replace_client(client: Client) -> Client:
    """A copy to change: the cached object changes only once the store has the new one."""
    return Client(**asdict(client))


def port_ranges(ports: list[int]) -> str:
    """[2200, 2201, 2202, 2210] -> '2200-2202, 2210'."""
    runs: list[list[int]] = []
    for port in sorted(ports):
        if runs and runs[-1][1] == port - 1:
            runs[-1][1] = port
        else:
            runs.append([port, port])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)

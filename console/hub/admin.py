"""The operator's client life cycle (the seed's ke_manage_remote_networks): add, list, change, remove, export.

One class for both paths: inside the daemon (with the live hub, so sessions end at once) and in the CLI when no
daemon runs (the registry alone). Answers are plain dicts, ready for JSON.
"""

from __future__ import annotations

import asyncssh

from console.core.keys import public_line
from console.core.status import ClientForwardStatus, ClientStatus
from console.hub.registry import Client, Registry, port_ranges
from console.hub.server import Hub, HubForward


class ClientsAdmin:
    def __init__(self, registry: Registry, hub: Hub | None = None) -> None:
        self.registry = registry
        self.hub = hub

    def add(self, client_id: str, pub_key: str | None = None, quota: int | None = None,
            force: bool = False) -> dict:
        """Register a client. Without pub_key a key pair is made and the private key is returned once:
        nothing keeps it (the hub stores only the public half)."""
        private = None
        if pub_key is None:
            key = asyncssh.generate_private_key("ssh-ed25519", comment=client_id)
            private = key.export_private_key("openssh").decode()
            pub_key = public_line(key, client_id)
        replaced = self.registry.get(client_id) is not None
        client = self.registry.add(client_id, pub_key, quota=quota, replace=force)
        if self.hub is not None:
            if replaced:
                self.hub.disconnect(client_id, "the client's key was replaced")
            self.hub.changed(client_id, "key" if replaced else "added")
        return {"client": self._describe(client), "private_key": private}

    def change(self, quota: int, client_id: str) -> ClientStatus:
        before = set(self.registry.require(client_id).ports)
        client = self.registry.change(client_id, quota)
        if self.hub is not None:
            if before - set(client.ports):
                self.hub.disconnect(client_id, "disabled (quota 0)" if quota == 0 else "its quota was lowered")
            self.hub.changed(client_id, "quota")
        return self._describe(client)

    def remove(self, client_id: str) -> ClientStatus:
        client = self.registry.remove(client_id)
        if self.hub is not None:
            self.hub.disconnect(client_id, "the client was removed")
            self.hub.changed(client_id, "removed")
        return self._describe(client)

    def list(self, client_id: str | None = None) -> dict:
        clients = [self.registry.require(client_id)] if client_id else self.registry.all()
        return {"clients": [self._describe(c) for c in clients]}

    def export_authorized_keys(self) -> list[str]:
        """authorized_keys lines giving a plain OpenSSH server the same limits: its own ports only."""
        lines = []
        for client in self.registry.all():
            if not client.enabled:
                continue
            listens = ",".join(f'permitlisten="{port}"' for port in client.ports)
            lines.append(f'restrict,port-forwarding,{listens},command="/bin/false" {client.key} {client.id}')
        return lines

    def _describe(self, client: Client) -> ClientStatus:
        live = self.hub.forwards_of(client) if self.hub is not None else []
        connected = bool(self.hub and self.hub.sessions.get(client.id))
        return ClientStatus(client.id, client.quota, client.enabled, client.ports, port_ranges(client.ports),
                            connected, [self._forward(f) for f in live], client.fingerprint, client.created,
                            client.last_seen)

    def _forward(self, forward: HubForward) -> ClientForwardStatus:
        """One live forward; name and destination are what the client announced (None from a plain client)."""
        said = forward.session.announced.get(forward.port)
        assert self.hub is not None
        stats = forward.stats
        return ClientForwardStatus(forward.port, self.hub.settings.bind, said.name if said else None,
                                   said.destination if said else None, stats.open, stats.total, stats.bytes_in,
                                   stats.bytes_out, forward.session.peer)

"""Each forward's counting relay for the OpenSSH transport: ssh forwards a connection to this Unix socket, the relay
connects it to the local service (relay.Splice: protocol copying, counted as relay.py says)."""
from __future__ import annotations
import asyncio, os
from pathlib import Path
from console import relay
from console.core.errors import os_reason


class ForwardProxy:
    def __init__(self, path: Path, local_host: str, local_port: int, stats: relay.ForwardStats, *,
                 on_change=lambda: None, on_refused=lambda r: None, max_connections: int = 4096) -> None:
        self.path, self.host, self.port, self.stats = path, local_host, local_port, stats
        self.on_change, self.on_refused = on_change, on_refused
        self._server = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.path.unlink(missing_ok=True)
        self._server = await loop.create_unix_server(lambda: self._new().client, str(self.path))
        os.chmod(self.path, 0o600)

    def _new(self):
        splice = relay.Splice(self._accepted, self.on_change)
        splice.stats = self.stats
        return splice

    def _accepted(self, splice) -> None:
        asyncio.ensure_future(self._connect(splice))

    async def _connect(self, splice) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: splice.upstream, self.host, self.port)
        except OSError as exc:
            self.on_refused(f"local service {self.host}:{self.port} refused a connection: {os_reason(exc)}")
            splice.client.transport.close()
            return
        splice.link()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            self.path.unlink(missing_ok=True)

    @property
    def listening(self) -> bool:
        return self._server is not None

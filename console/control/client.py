"""The CLI's and the console's side of the control socket."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import AsyncIterator

from console.core.errors import ConsoleError, DaemonNotRunning, OperationFailed
from console.core.events import Event, event_from_dict
from console.core.paths import StatePaths

if TYPE_CHECKING:
    from console.core.config import Config

# The daemon's answers can be large (`clients list` of a hub with 500 clients x 20 live forwards is ~3 MB) and
# come from a trusted peer; the daemon keeps its own, smaller limit on requests.
MAX_LINE = 64 << 20


def ssh_client_address(environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """The SSH client's address when this runs in an SSH login (SSH_CONNECTION: "client port server port"), for
    the operation log: the daemon records it as this process says it, and trusts it for nothing else."""
    fields = environ.get("SSH_CONNECTION", "").split()
    return fields[0] if len(fields) == 4 else None


class ControlClient:
    def __init__(self, path: Path, via: str = "cli") -> None:
        self.path = path
        self.via = via   # where requests come from, for the operation log: cli or console
        self._ids = itertools.count(1)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()  # one exchange at a time: the console asks from several workers

    async def connect(self) -> ControlClient:
        try:
            self._reader, self._writer = await asyncio.open_unix_connection(str(self.path), limit=MAX_LINE)
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunning(
                f"the daemon is not running (no control socket at {self.path}): start it with `sop-console daemon`"
            ) from None
        except PermissionError:
            raise OperationFailed(f"no permission to use the control socket {self.path}") from None
        return self

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, BrokenPipeError):
                pass
            self._writer = None

    async def __aenter__(self) -> ControlClient:
        return await self.connect()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _exchange(self, op: str, args: dict[str, Any]) -> Any:
        assert self._reader is not None and self._writer is not None, "connect() first"
        async with self._lock:
            rid = next(self._ids)
            request = {"id": rid, "op": op, "args": args, "via": self.via}
            if (ssh := ssh_client_address()) is not None:
                request["ssh"] = ssh
            self._writer.write(json.dumps(request).encode() + b"\n")
            while True:  # an answer to an earlier request that was cancelled while waiting is skipped
                try:
                    await self._writer.drain()
                    line = await self._reader.readline()
                except ConnectionError:
                    line = b""
                if not line:
                    raise DaemonNotRunning("the daemon closed the control connection (is it shutting down?)")
                answer = json.loads(line)
                if answer.get("id") in (rid, None):
                    break
        if not answer.get("ok"):
            raise ConsoleError(answer.get("error", "request failed"), exit_code=answer.get("code", 1))
        return answer.get("result")

    async def request(self, op: str, **args: Any) -> Any:
        return await self._exchange(op, {k: v for k, v in args.items() if v is not None})

    async def subscribe(self) -> tuple[dict, AsyncIterator[Event]]:
        """The current status, then every event as it happens."""
        status = await self._exchange("subscribe", {})

        async def events() -> AsyncIterator[Event]:
            assert self._reader is not None
            while True:
                line = await self._reader.readline()
                if not line:
                    return
                data = json.loads(line)
                if data.get("event") == "Overflow":
                    raise OperationFailed("event stream fell behind and was cut; reconnect")
                yield event_from_dict(data)

        return status, events()


async def report_key_install(paths: StatePaths, unit: str, detail: str, who: str, via: str = "cli",
                             config: Config | None = None, *, failed: str | None = None) -> str | None:
    """Tell a running daemon a unit's key was installed (it retries at once and records it), or that installing it
    failed (`failed`: why; recorded so, nothing retried); without a daemon, record it in the operation log
    directly. Returns a warning to show, or None."""
    try:
        async with ControlClient(paths.control_socket, via) as client:
            await client.request("kick", unit=unit, reason="key installed", record="key install", detail=detail,
                                 failed=failed)
    except DaemonNotRunning:
        from console.core.oplog import recorder_for

        recorder = recorder_for(paths.prepare().oplog, config)
        try:
            recorder.record("key install", who=who, via=via, ssh_from=ssh_client_address(), target=unit,
                            ok=failed is None, reason=failed, details={"unit": unit, "detail": detail})
        finally:
            recorder.close()
    except ConsoleError as exc:
        if failed is not None and exc.message == failed:
            return None   # the daemon recorded the failure, as asked
        return f"could not tell the daemon: {exc.message}"
    return None

"""The daemon's side of the control socket."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import pwd
import socket
import struct
from pathlib import Path
from typing import Any
from collections.abc import Awaitable, Callable

from console.control.operations import Call, perform
from console.core.errors import ConsoleError, UsageError
from console.core.status import json_default
from console.engine import Engine

log = logging.getLogger("console.control")
MAX_LINE = 1 << 20


def _peer_name(writer: asyncio.StreamWriter) -> str:
    """Who is on the other end (SO_PEERCRED), for the operation record."""
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return pwd.getpwuid(uid).pw_name
    except (OSError, KeyError, AttributeError):
        return "unknown"


class ControlServer:
    def __init__(self, engine: Engine, path: Path, reload: Callable[[], Awaitable[list[str]]]) -> None:
        self.engine = engine
        self.path = path
        self._reload = reload
        self._server: asyncio.AbstractServer | None = None
        self._streams: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._handle, path=str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._streams):
                writer.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 0.5)
            except TimeoutError:
                pass
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        who = _peer_name(writer)
        self._streams.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await _send(writer, {"id": None, "ok": False, "error": "request too long", "code": 2})
                    return
                if not line:
                    return
                try:
                    rid, op, args, door = _parse(line)
                except _BadRequest as exc:
                    await _send(writer, {"id": exc.rid, "ok": False, "error": exc.message, "code": exc.exit_code})
                    continue
                if op == "subscribe":
                    await self._stream(rid, writer)
                    return
                await _send(writer, await self._answer(rid, op, args, who, door))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._streams.discard(writer)
            writer.close()

    async def _answer(self, rid: Any, op: str, args: Any, who: str, door: tuple[str, str | None]) -> dict:
        via, ssh_from = door
        call = Call(who, self.engine, self.engine.clients, self._reload, self.engine.endpoints, self.engine.logins,
                    via=via, ssh_from=ssh_from, recorder=self.engine.recorder)
        try:
            result = await perform(call, op, args)
        except ConsoleError as exc:
            return {"id": rid, "ok": False, "error": exc.message, "code": exc.exit_code}
        except Exception as exc:  # a bug must not take the daemon down: report it, keep serving
            log.exception("control request %s failed", op)
            return {"id": rid, "ok": False, "error": f"internal error: {type(exc).__name__}: {exc}", "code": 1}
        return {"id": rid, "ok": True, "result": result}

    async def _stream(self, rid: Any, writer: asyncio.StreamWriter) -> None:
        sub = self.engine.bus.subscribe()
        try:
            await _send(writer, {"id": rid, "ok": True, "result": self.engine.status()})
            while True:
                event = await sub.get()
                if event is None:  # too slow: the client is told and may reconnect
                    await _send(writer, {"event": "Overflow"})
                    return
                await _send(writer, event.to_dict())
        finally:
            sub.close()


class _BadRequest(UsageError):
    def __init__(self, message: str, rid: Any = None) -> None:
        super().__init__(message)
        self.rid = rid


def _parse(line: bytes) -> tuple[Any, Any, Any, tuple[str, str | None]]:
    """(id, op, args, (via, ssh_from)) of one request line; what the operation table checks (op, args) is passed
    on as sent. `via` (cli or console) and `ssh` (the SSH client address SSH_CONNECTION gave the client) are the
    client's word: kept for the operation log only, and only in a form they can have."""
    try:
        request = json.loads(line)
    except ValueError:
        raise _BadRequest("a request is one JSON object per line") from None
    if not isinstance(request, dict):
        raise _BadRequest("a request must be a JSON object")
    rid = request.get("id")
    if "op" not in request:
        raise _BadRequest("op is required", rid)
    args = request.get("args")
    if request["op"] == "subscribe" and args not in (None, {}):
        raise _BadRequest("subscribe takes no args" if isinstance(args, dict) else "args must be an object", rid)
    return rid, request["op"], {} if args is None else args, (_via(request.get("via")), _address(request.get("ssh")))


def _via(value: Any) -> str:
    return value if value in ("cli", "console") else "unknown"


def _address(value: Any) -> str | None:
    """An IP address, or None: whatever else a client says here is not recorded."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


async def _send(writer: asyncio.StreamWriter, message: dict) -> None:
    writer.write(json.dumps(message, separators=(",", ":"), default=json_default).encode() + b"\n")
    await writer.drain()

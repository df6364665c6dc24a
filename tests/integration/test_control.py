"""The control socket: several workers ask at once; a request cancelled while waiting leaves its answer behind,
which the next request must not take for its own; a request that does not fit gets one line naming the field."""

from __future__ import annotations

import logging

import pytest
from support import config_of, eventually, run

from console.control.client import ControlClient
from console.core.errors import ConsoleError
from console.daemon import Daemon


def test_requests_from_several_workers_at_once_and_a_cancelled_one(state):
    import asyncio

    async def body():
        daemon = Daemon(config_of("units: {}\n"), state, None, echo_log=False)
        await daemon.start()
        try:
            async with ControlClient(state.control_socket) as client:
                answers = await asyncio.gather(*(client.request("ping") for _ in range(20)),
                                               *(client.request("status") for _ in range(20)))
                assert all("pid" in a for a in answers[:20]) and all("units" in a for a in answers[20:])

                asked = asyncio.create_task(client.request("status"))
                reader = client._reader
                while reader._waiter is None and not asked.done():
                    await asyncio.sleep(0)  # one step at a time: the daemon in this loop must not answer yet
                assert reader._waiter is not None, "the request was never sent"
                asked.cancel()  # the daemon (this loop) has not answered yet: its answer comes, and stays unread
                await eventually(lambda: len(reader._buffer) > 0, what="the cancelled request's answer")
                assert "pid" in await client.request("ping")
                assert "units" in await client.request("status")
        finally:
            await daemon.close()
    run(body())


# ---------------------------------------------------------------------------- requests that do not fit

BAD_REQUESTS = [
    (b'{"id": 1, "op": "status", "args": "str"}', 1, "args must be an object"),
    (b'{"id": 2, "op": "status", "args": [1]}', 2, "args must be an object"),
    (b'{"id": 3, "op": "start", "args": {"unit": {"a": 1}}}', 3, "start: unit must be a string, got an object"),
    (b'{"id": 4, "op": "stop", "args": {"unit": 7}}', 4, "stop: unit must be a string, got 7"),
    (b'{"id": 5, "op": "clients.change", "args": {"id": "acme", "quota": "NaN"}}', 5,
     "clients.change: quota must be an integer, got 'NaN'"),
    (b'{"id": 6, "op": "clients.change", "args": {"id": "acme", "quota": true}}', 6,
     "clients.change: quota must be an integer, got true"),
    (b'{"id": 7, "op": "clients.change", "args": {"id": "acme", "quota": 2.5}}', 7,
     "clients.change: quota must be an integer, got 2.5"),
    (b'{"id": 8, "op": "clients.remove"}', 8, "clients.remove: id is required"),
    (b'{"id": 9, "op": "clients.remove", "args": {"id": null}}', 9, "clients.remove: id is required"),
    (b'{"id": 10, "op": "clients.add", "args": {"id": "acme", "force": "yes"}}', 10,
     "clients.add: force must be true or false, got 'yes'"),
    (b'{"id": 11, "op": "trust", "args": {}}', 11, "trust: unit is required"),
    (b'{"id": 12, "op": "x"}', 12, "unknown request 'x'"),
    (b'{"id": 13, "op": ["status"]}', 13, "op must be a string, got a list"),
    (b'{"id": 15, "op": "status", "args": {"verbose": true}}', 15,
     "status: unknown parameter 'verbose' (it takes none)"),
    (b'{"id": 16, "op": "clients.add", "args": {"id": "acme", "colour": 1, "size": 2}}', 16,
     "clients.add: unknown parameters 'colour', 'size' (it takes id, pub_key, quota, force)"),
    (b'{"id": 17}', 17, "op is required"),
    (b'[1, 2]', None, "a request must be a JSON object"),
    (b'hello', None, "a request is one JSON object per line"),
    (b'{"id": 18, "op": "subscribe", "args": "str"}', 18, "args must be an object"),
]


def test_a_bad_request_gets_one_line_naming_the_field_and_the_connection_stays(state, caplog):
    """Raw lines over the real daemon's socket (outside testing found drops and "internal error" here)."""
    import asyncio
    import json

    from console.demo import _free_range
    from sshd import free_port

    low, high = _free_range(4)

    async def body():
        config = config_of(f"hub: {{listen: '127.0.0.1:{free_port()}', ports: '{low}-{high}', default_quota: 2}}\n")
        daemon = Daemon(config, state, None, echo_log=False)
        await daemon.start()
        try:
            reader, writer = await asyncio.open_unix_connection(str(state.control_socket))

            async def ask(line: bytes) -> dict:
                writer.write(line + b"\n")
                await writer.drain()
                return json.loads(await asyncio.wait_for(reader.readline(), 5))

            for line, rid, error in BAD_REQUESTS:
                answer = await ask(line)
                assert answer == {"id": rid, "ok": False, "error": error, "code": 2}, line
                pong = await ask(b'{"id": "after", "op": "ping"}')  # the same connection still serves
                assert pong["ok"] and pong["id"] == "after" and "pid" in pong["result"], line
            # the same requests, well formed, do what they say
            added = await ask(b'{"id": 20, "op": "clients.add", "args": {"id": "acme", "quota": 1}}')
            assert added["ok"] and added["result"]["client"]["ports"] == [low], added
            changed = await ask(b'{"id": 21, "op": "clients.change", "args": {"id": "acme", "quota": 2}}')
            assert changed["ok"] and changed["result"]["ports"] == [low, low + 1], changed
            removed = await ask(b'{"id": 22, "op": "clients.remove", "args": {"id": "acme"}}')
            assert removed["ok"] and removed["result"]["id"] == "acme", removed
            listed = await ask(b'{"id": 23, "op": "clients.list", "args": null}')
            assert listed == {"id": 23, "ok": True, "result": {"clients": []}}
            writer.close()

            # the CLI's client: the same line, as a usage error (exit code 2)
            async with ControlClient(state.control_socket) as client:
                with pytest.raises(ConsoleError) as caught:
                    await client.request("clients.change", id="acme", quota="NaN")
                assert caught.value.exit_code == 2
                assert caught.value.message == "clients.change: quota must be an integer, got 'NaN'"
        finally:
            await daemon.close()

    run(body())
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not failures, [r.getMessage() for r in failures]


def test_hub_operations_on_a_daemon_without_a_hub(state):
    async def body():
        daemon = Daemon(config_of("units: {}\n"), state, None, echo_log=False)
        await daemon.start()
        try:
            async with ControlClient(state.control_socket) as client:
                with pytest.raises(ConsoleError) as caught:
                    await client.request("clients.list")
                assert caught.value.exit_code == 2 and "runs no hub" in caught.value.message
                with pytest.raises(ConsoleError, match="clients.remove: id is required"):  # checked first
                    await client.request("clients.remove")
        finally:
            await daemon.close()
    run(body())

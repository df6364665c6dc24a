"""The control socket from the console's side: several workers ask at once; a request cancelled while waiting
leaves its answer behind, which the next request must not take for its own."""

from __future__ import annotations

from support import config_of, eventually, run

from console.control.client import ControlClient
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

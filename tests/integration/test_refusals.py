"""A forward the server refuses: said once a minute per reason, the state steady while it retries."""

from __future__ import annotations

import asyncio

import pytest
from support import eventually, fwd_of, run, running_engine
from sshd import Sshd

from console.core.events import ForwardChanged


@pytest.fixture
def no_forwarding_sshd(sshd, tmp_path):
    """sshd with AllowTcpForwarding no (the `sshd` fixture only makes sure sshd exists)."""
    server = Sshd(tmp_path / "sshd-nofwd", extra="AllowTcpForwarding no").start()
    yield server
    server.stop()


def test_refused_forwards_log_once_a_minute_and_stay_refused(no_forwarding_sshd, state):
    async def body():
        async with running_engine(no_forwarding_sshd, state,
                                  {"master": ["ssh 0 127.0.0.1:22", "http 0 127.0.0.1:80"]}) as engine:
            await eventually(lambda: fwd_of(engine, "master", "ssh").state == "refused", what="refused")
            sub = engine.bus.subscribe()
            # retry_min is 0.05 s in the tests: ~8 fast retries a forward in the next second, each refused
            await asyncio.sleep(1.5)
            changes = []
            while not sub.queue.empty():
                event = await sub.get()
                if isinstance(event, ForwardChanged):
                    changes.append(event.state)
            assert "AllowTcpForwarding" in fwd_of(engine, "master", "ssh").error
        lines = state.tunnel_log.read_text().splitlines()
        for name in ("ssh", "http"):
            refused = [line for line in lines if f"forward {name} refused:" in line]
            assert len(refused) == 1, refused  # it was a line per retry: 11 in the first second
        assert "pending" not in changes  # no refused -> pending -> refused flapping on every retry
    run(body())

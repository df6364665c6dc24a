"""A forward the server refuses: said once a minute per reason, the state steady while it retries."""

from __future__ import annotations

import asyncio

import pytest
from support import eventually, fwd_of, run, running_engine, transport_option

from sshd import Sshd

from console.core.events import ForwardChanged


@pytest.fixture
def no_forwarding_sshd(sshd, tmp_path):
    """sshd with AllowTcpForwarding no (the `sshd` fixture only makes sure sshd exists)."""
    server = Sshd(tmp_path / "sshd-nofwd", extra="AllowTcpForwarding no").start()
    yield server
    server.stop()


pytestmark = pytest.mark.usefixtures("transport")   # every test here runs for both transports


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


def test_a_unit_hears_the_exact_reason_when_the_server_is_our_hub(state):
    """The hub says why it refuses a port (an SSH debug message); the unit shows that, not sshd's guesses."""
    from sshd import free_port

    from console.core.keys import load_or_create_key, public_line, unit_public_key
    from console.core.store import Store
    from console.demo import _free_range
    from console.engine import Engine
    from console.hub.registry import Registry
    from support import config_of

    async def body():
        low, high = _free_range(3)
        outside = free_port()
        hub_port = free_port()
        store = Store(state.database)
        Registry(store, (low, high), 2).add("acme", unit_public_key(state, "master").line)
        store.close()
        hub_key = public_line(load_or_create_key(state.hub_key, "hub"))
        cfg = config_of(
            f"server: {{host: 127.0.0.1, port: {hub_port}, host_key: '{hub_key}'}}\n"
            "tunnel: {keepalive_interval: 1, retry_min: 0.05, retry_max: 1, connect_timeout: 3"
            f"{transport_option()}}}\n"
            f"hub: {{listen: '127.0.0.1:{hub_port}', ports: '{low}-{high}', default_quota: 2}}\n"
            "units:\n  master:\n    username: acme\n    forwards:\n"
            f"      - {{name: ok, remote_port: {low}, local: '127.0.0.1:9'}}\n"
            f"      - {{name: stray, remote_port: {outside}, local: '127.0.0.1:9'}}\n")
        engine = Engine(cfg, state)
        await engine.start()
        try:
            await eventually(lambda: fwd_of(engine, "master", "stray").state == "refused", what="refused")
            assert fwd_of(engine, "master", "ok").state == "listening"
            error = fwd_of(engine, "master", "stray").error
            assert error == (f"the hub refused to listen on *:{outside}: not one of its ports "
                             f"({low}-{low + 1})"), error
        finally:
            await engine.shutdown()
    run(body())

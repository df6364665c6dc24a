"""The hub against the real OpenSSH client (ssh -N -R): a client gets its own ports and nothing else."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from support import EchoServer, HubLog, eventually, roundtrip, run, transport_option

from console.core.keys import load_or_create_key
from console.core.paths import StatePaths
from console.core.store import Store
from console.demo import _free_range
from console.hub.registry import Registry
from console.hub.server import Hub, HubSettings


class World:
    def __init__(self, tmp: Path, state: StatePaths) -> None:
        self.tmp = tmp
        self.registry = Registry(Store(state.root / "hub.json"), _free_range(12), default_quota=3)
        self.hub = Hub(HubSettings(), self.registry, load_or_create_key(state.keys_dir / "hub_ed25519", "hub"))

    def client_key(self, name: str) -> Path:
        path = self.tmp / f"{name}_key"
        if not path.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        return path

    def register(self, client_id: str, quota: int | None = None):
        key = self.client_key(client_id)
        return self.registry.add(client_id, key.with_suffix(".pub").read_text(), quota=quota)

    async def ssh(self, client_id: str, *args: str, command: tuple[str, ...] = (),
                  key: str | None = None) -> asyncio.subprocess.Process:
        """The OpenSSH client: `args` are options, `command` comes after the destination."""
        return await asyncio.create_subprocess_exec(
            "ssh", "-i", str(self.client_key(key or client_id)), "-p", str(self.hub.port),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={self.tmp}/kh",
            "-o", "IdentitiesOnly=yes", "-o", "ExitOnForwardFailure=yes", *args, f"{client_id}@127.0.0.1", *command,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"})


def hub_test(body, prepare=None):
    """Run `body(world)` with the world's hub started (after `prepare(world)`, when given) and closed after."""
    def wrapper(tmp_path, state):
        async def main():
            world = World(tmp_path, state)
            if prepare is not None:
                prepare(world)
            await world.hub.start()
            try:
                await body(world)
            finally:
                await world.hub.close()
        run(main())
    wrapper.__name__ = body.__name__
    return wrapper


async def finished(proc: asyncio.subprocess.Process, timeout: float = 10) -> tuple[int, str]:
    _, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, err.decode()


def unit_behind_our_hub(state: StatePaths, forwards: str, ports: int = 3, spare: int = 0) -> tuple[str, int, str]:
    """One engine's config with our hub and a unit "master" that is its client "acme" (registered with the unit's
    key, `ports` ports; the range has `spare` more): (config text, hub port, "low-high"). `forwards`: the unit's
    forward lines (YAML list items, indented six spaces)."""
    from sshd import free_port

    from console.core.keys import public_line, unit_public_key

    low, high = _free_range(ports + spare)
    hub_port = free_port()
    store = Store(state.database)
    Registry(store, (low, high), ports).add("acme", unit_public_key(state, "master").line)
    store.close()
    hub_key = public_line(load_or_create_key(state.hub_key, "hub"))
    return (f"server: {{host: 127.0.0.1, port: {hub_port}, host_key: '{hub_key}'}}\n"
            "tunnel: {keepalive_interval: 1, retry_min: 0.05, retry_max: 1, connect_timeout: 3"
            f"{transport_option()}}}\n"
            f"hub: {{listen: '127.0.0.1:{hub_port}', ports: '{low}-{high}', default_quota: {ports}}}\n"
            "units:\n  master:\n    username: acme\n    forwards:\n" + forwards), hub_port, f"{low}-{high}"


@hub_test
async def test_own_ports_relay_others_are_refused(world):
    client = world.register("acme")
    async with EchoServer() as echo:
        ok = await world.ssh("acme", "-N", "-R", f"127.0.0.1:{client.ports[1]}:127.0.0.1:{echo.port}")
        try:
            await eventually(lambda: client.ports[1] in world.hub.forwards, what="forward up")
            payload = os.urandom(3 * 1024 * 1024)  # more than a window: flow control through the hub's relay
            assert await roundtrip(client.ports[1], payload) == payload
            stats = world.hub.forwards[client.ports[1]].stats
            await eventually(lambda: stats.open == 0 and stats.total == 1 and stats.bytes_in == len(payload)
                             and stats.bytes_out == len(payload), what="hub counters")
            outside = max(world.registry.high, client.ports[-1]) + 1
            other_clients_port = world.register("other").ports[0]
            for port in (outside, other_clients_port):
                code, err = await finished(await world.ssh("acme", "-N", "-R", f"127.0.0.1:{port}:127.0.0.1:9"))
                assert code != 0 and "remote port forwarding failed" in err
        finally:
            ok.kill()
            await ok.wait()


@hub_test
async def test_port_zero_gets_the_next_free_own_port_and_the_quota_holds(world):
    client = world.register("acme", quota=2)
    procs = []
    try:
        for expected in client.ports:
            proc = await world.ssh("acme", "-N", "-R", "0:127.0.0.1:9")
            procs.append(proc)
            await eventually(lambda expected=expected: expected in world.hub.forwards, what=f"port {expected}")
        code, err = await finished(await world.ssh("acme", "-N", "-R", "0:127.0.0.1:9"))
        assert code != 0 and "remote port forwarding failed" in err  # a third port is over the quota
    finally:
        for proc in procs:
            proc.kill()
            await proc.wait()


@hub_test
async def test_no_shell_exec_or_local_forward_and_unknown_keys_refused(world):
    world.register("acme")
    code, err = await finished(await world.ssh("acme", command=("true",)))
    assert code != 0 and "exec request failed" in err
    with HubLog() as hub_log:
        code, err = await finished(await world.ssh("acme", "-W", "127.0.0.1:22"))
    assert code != 0 and "stdio forwarding failed" in err
    assert any("refused a connection into the hub's network (direct-tcpip to 127.0.0.1:22) for client acme" in line
               for line in hub_log.lines)  # refused by the policy, not because nothing listens on 22
    code, err = await finished(await world.ssh("acme", "-N", "-R", "0:127.0.0.1:9", key="stranger"))
    assert code == 255 and "Permission denied" in err
    code, err = await finished(await world.ssh("nobody", "-N", "-R", "0:127.0.0.1:9", key="acme"))
    assert code == 255 and "Permission denied" in err


@pytest.mark.parametrize("how", ["change 0", "remove"])
def test_disable_or_remove_ends_live_sessions_within_a_second(tmp_path, state, how):
    @hub_test
    async def body(world):
        client = world.register("acme")
        proc = await world.ssh("acme", "-N", "-R", f"127.0.0.1:{client.ports[0]}:127.0.0.1:9")
        await eventually(lambda: client.ports[0] in world.hub.forwards)
        loop = asyncio.get_running_loop()
        started = loop.time()
        if how == "change 0":
            assert world.registry.change("acme", 0).ports == []
        else:
            world.registry.remove("acme")
        world.hub.disconnect("acme", f"client {how}")
        await asyncio.wait_for(proc.wait(), 1.0)
        assert loop.time() - started < 1.0
        assert client.ports[0] not in world.hub.forwards
        code, err = await finished(await world.ssh("acme", "-N", "-R", "0:127.0.0.1:9"))
        assert code == 255 and "Permission denied" in err  # and it cannot come back
        if how == "change 0":
            assert world.registry.get("acme").key  # the record and key stay

    body(tmp_path, state)


@hub_test
async def test_a_new_session_takes_over_ports_from_a_dead_one(world):
    client = world.register("acme")
    async with EchoServer() as echo:
        forward = f"127.0.0.1:{client.ports[0]}:127.0.0.1:{echo.port}"
        old = await world.ssh("acme", "-N", "-R", forward)
        await eventually(lambda: client.ports[0] in world.hub.forwards)
        old_session = world.hub.forwards[client.ports[0]].session
        old.send_signal(signal.SIGSTOP)  # a peer that died without a FIN: its session still holds the port
        try:
            new = await world.ssh("acme", "-N", "-R", forward)
            started = asyncio.get_running_loop().time()
            await eventually(lambda: client.ports[0] in world.hub.forwards
                             and world.hub.forwards[client.ports[0]].session is not old_session, timeout=5,
                             what="takeover")
            assert old_session not in world.hub.sessions.get("acme", [])  # the old session was closed
            assert asyncio.get_running_loop().time() - started < 2
            assert await roundtrip(client.ports[0], b"new session") == b"new session"
            assert new.returncode is None  # the new session kept its forward (ExitOnForwardFailure)
        finally:
            old.send_signal(signal.SIGCONT)
            for proc in (old, new):
                proc.kill()
                await proc.wait()


def test_registry_allocates_reserves_and_returns_ports(tmp_path, state):
    registry = Registry(Store(state.root / "r.json"), (3000, 3009), default_quota=4)
    def key(name: str) -> str:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
        return (tmp_path / f"{name}.pub").read_text()

    a = registry.add("a", key("a"))
    b = registry.add("b", key("b"), quota=3)
    assert a.ports == [3000, 3001, 3002, 3003] and b.ports == [3004, 3005, 3006]
    with pytest.raises(Exception, match="only 3 free"):
        registry.add("c", key("c"), quota=4)
    assert registry.change("a", 2).ports == [3000, 3001]
    assert registry.change("a", 0).ports == [] and not registry.get("a").enabled
    assert registry.add("c", key("c2"), quota=5).ports == [3000, 3001, 3002, 3003, 3007]
    with pytest.raises(Exception, match="already belongs to client 'c'"):
        registry.add("d", (tmp_path / "c2.pub").read_text())
    with pytest.raises(Exception, match="exists"):
        registry.add("b", key("b2"))
    assert re.match(r"SHA256:", registry.add("b", key("b3"), replace=True).fingerprint)
    registry.remove("c")
    assert registry.get("c") is None
    assert registry.change("b", 6).ports == [3000, 3001, 3002, 3004, 3005, 3006]  # it keeps the ports it had


def _cli(state: Path, config: Path, *args: str, input: str | None = None):
    import sys
    return subprocess.run([sys.executable, "-m", "console", "--state-dir", str(state), "--config", str(config),
                           *args], capture_output=True, text=True, input=input, timeout=30)


def _daemon(state: Path, config: Path) -> subprocess.Popen:
    """`sop-console daemon` as a process, returned once its control socket is there (or after 10 s)."""
    import sys
    import time

    daemon = subprocess.Popen([sys.executable, "-m", "console", "--state-dir", str(state), "--config", str(config),
                               "daemon"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not (state / "control.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return daemon


def _forwarding_client(key: Path, hub_port: int, known_hosts: Path, forward: str, user: str) -> subprocess.Popen:
    """The real OpenSSH client as a hub customer: `ssh -N -R FORWARD` with its key, failing if the forward is."""
    return subprocess.Popen(["ssh", "-N", "-i", str(key), "-p", str(hub_port), "-o", "BatchMode=yes",
                             "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={known_hosts}",
                             "-o", "IdentitiesOnly=yes", "-o", "ExitOnForwardFailure=yes", "-R", forward,
                             f"{user}@127.0.0.1"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_customer_life_cycle_through_the_daemon_and_the_cli(tmp_path):
    """add (private key shown once) -> the customer connects with it -> list -> change 0 -> remove."""
    import json
    import time

    from sshd import free_port

    state, config = tmp_path / "state", tmp_path / "console.yaml"
    low, high = _free_range(8)
    hub_port = free_port()
    config.write_text(f"hub: {{listen: '127.0.0.1:{hub_port}', ports: '{low}-{high}', default_quota: 3}}\n")
    # Without a daemon the registry is edited directly; the daemon then serves it.
    added = _cli(state, config, "clients", "add", "acme")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("-----BEGIN OPENSSH PRIVATE KEY-----") and f"ports {low}-{low + 2}" in added.stderr
    key = tmp_path / "acme_key"
    key.write_text(added.stdout)
    key.chmod(0o600)
    assert "PRIVATE" not in (state / "store.json").read_text()  # the hub does not keep it
    daemon = _daemon(state, config)
    ssh = None
    try:
        ssh = _forwarding_client(key, hub_port, tmp_path / "kh", "0:127.0.0.1:9", "acme")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listing = json.loads(_cli(state, config, "clients", "list", "--json").stdout)
            if listing["clients"][0]["forwards"]:
                break
            time.sleep(0.1)
        (acme,) = listing["clients"]
        assert acme["id"] == "acme" and acme["enabled"] and acme["connected"] and acme["quota"] == 3
        assert acme["forwards"][0]["port"] == low and acme["forwards"][0]["destination"] is None
        assert set(acme) >= {"id", "quota", "enabled", "ports", "connected", "forwards", "fingerprint", "last_seen"}
        text = _cli(state, config, "clients", "list").stdout.splitlines()
        assert text[0].startswith("acme") and "connected forwarding 1" in text[0]
        assert text[1].startswith(f"  {low:<5} - -> (not announced)  open 0 total 0 in 0 B out 0 B  from 127.0.0.1:")

        started = time.monotonic()
        changed = _cli(state, config, "clients", "change", "0", "acme")
        assert changed.returncode == 0 and "disabled" in changed.stdout
        ssh.wait(timeout=2)
        assert time.monotonic() - started < 2.0  # including the CLI's own start; the hub ends it at once
        assert json.loads(_cli(state, config, "clients", "list", "--json").stdout)["clients"][0]["ports"] == []
        removed = _cli(state, config, "clients", "remove", "acme")
        assert removed.returncode == 0 and json.loads(
            _cli(state, config, "clients", "list", "--json").stdout)["clients"] == []
        hub_key = _cli(state, config, "hub", "key")
        assert hub_key.returncode == 0 and "ssh-ed25519 " in hub_key.stdout and "SHA256:" in hub_key.stdout
    finally:
        for proc in (ssh, daemon):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(5)


def test_a_revocation_the_daemon_cannot_hear_is_refused_not_reported_done(tmp_path):
    """Issue 10, item 2: with control.sock deleted under a running daemon, `clients remove` used to edit the store,
    print "removed" and exit 0 while the client's session and forward went on. Now: exit 3, nothing changed.
    With no daemon at all the CLI changes the store itself, under the daemon's lock."""
    import socket
    import threading
    import time

    from sshd import free_port

    from console.core.state_lock import DaemonLock

    state, config = tmp_path / "state", tmp_path / "console.yaml"
    low, high = _free_range(6)
    hub_port = free_port()
    config.write_text(f"hub: {{listen: '127.0.0.1:{hub_port}', ports: '{low}-{high}', default_quota: 2}}\n")
    added = _cli(state, config, "clients", "add", "r1")
    assert added.returncode == 0, added.stderr
    key = tmp_path / "r1_key"
    key.write_text(added.stdout)
    key.chmod(0o600)

    def listed() -> list[dict]:
        done = _cli(state, config, "clients", "list", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["clients"]

    daemon = _daemon(state, config)
    ssh = None
    try:
        ssh = _forwarding_client(key, hub_port, tmp_path / "kh", f"127.0.0.1:{low}:127.0.0.1:9", "r1")
        deadline = time.monotonic() + 10
        while not listed()[0]["forwards"]:
            assert time.monotonic() < deadline, "r1's forward never showed"
            time.sleep(0.1)

        (state / "control.sock").unlink()
        for args in (("remove", "r1"), ("change", "0", "r1")):
            refused = _cli(state, config, "clients", *args)
            assert refused.returncode == 3, (args, refused.stderr)
            assert refused.stderr == (f"sop-console: the daemon (pid {daemon.pid}) holds state dir {state} but its "
                                      "control socket is gone: restart it; nothing was changed\n")
            assert refused.stdout == ""
        # and nothing changed: r1 is registered with its ports, its session and forward still work
        (r1,) = listed()  # reading falls back to the store
        assert r1["id"] == "r1" and r1["ports"] == [low, low + 1]
        assert ssh.poll() is None
        socket.create_connection(("127.0.0.1", low), timeout=2).close()
    finally:
        for proc in (ssh, daemon):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(5)

    # No daemon at all: the CLI changes the store, holding the daemon's lock (it waits for another holder).
    lock = DaemonLock(state / "daemon.lock", role="test")
    lock.acquire()
    threading.Timer(1.0, lock.release).start()
    started = time.monotonic()
    removed = _cli(state, config, "clients", "remove", "r1")
    assert removed.returncode == 0, removed.stderr
    assert time.monotonic() - started >= 1.0, "the CLI did not wait for the lock"
    assert removed.stdout == f"r1 removed: sessions ended, ports {low}-{low + 1} back in the pool\n"
    assert (state / "daemon.lock").read_text().endswith(" clients remove\n")  # its own mark, as the holder
    assert listed() == []
    # A daemon's lock without a socket (a daemon whose socket is gone) refuses, as above.
    lock = DaemonLock(state / "daemon.lock")
    lock.acquire()
    try:
        refused = _cli(state, config, "clients", "add", "r2")
        assert refused.returncode == 3 and "its control socket is gone" in refused.stderr
        assert listed() == []
    finally:
        lock.release()


def test_exported_authorized_keys_are_enforced_by_a_real_sshd(sshd, tmp_path, state):
    from support import me
    from sshd import free_port

    from console.hub.admin import ClientsAdmin

    low, high = _free_range(6)
    registry = Registry(Store(state.root / "hub.json"), (low, high), default_quota=2)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    registry.add("acme", (tmp_path / "k.pub").read_text())
    lines = ClientsAdmin(registry).export_authorized_keys()
    assert lines[0].startswith(f'restrict,port-forwarding,permitlisten="{low}",permitlisten="{low + 1}"')
    sshd.authorize(me(), "\n".join(lines))
    base = ["ssh", "-i", str(tmp_path / "k"), "-p", str(sshd.port), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={tmp_path}/kh", "-o", "ExitOnForwardFailure=yes"]
    own = subprocess.Popen([*base, "-N", "-R", f"127.0.0.1:{low}:127.0.0.1:9", f"{me()}@127.0.0.1"],
                           stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import socket
        import time
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", low), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError("own port never listened")
        other = subprocess.run([*base, "-N", "-R", f"127.0.0.1:{free_port()}:127.0.0.1:9", f"{me()}@127.0.0.1"],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
        assert other.returncode != 0 and "remote port forwarding failed" in other.stderr
        shell = subprocess.run([*base, f"{me()}@127.0.0.1", "echo", "hello"], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=10)
        assert shell.returncode != 0 and "hello" not in shell.stdout
    finally:
        own.terminate()
        own.wait(5)


# ---------------------------------------------------------------------------- what a client announces

@pytest.mark.usefixtures("transport")
def test_our_units_announce_what_their_ports_lead_to(tmp_path, state):
    """A unit of ours is a client of the hub (both in one engine here): `clients list` shows each port's name and
    service URI; a forward dropped by a reload frees its port on the hub at once, one added is announced too."""
    import dataclasses

    from support import config_of

    from console.core.events import ClientChanged
    from console.engine import Engine

    async def body():
        async with EchoServer() as echo:
            text, hub_port, ports = unit_behind_our_hub(
                state, f"      - {{name: files, remote_port: 0, service: 'smb+tcp://127.0.0.1:{echo.port}'}}\n"
                       f"      - {{name: app, remote_port: 0, local: '127.0.0.1:{echo.port}'}}\n", spare=3)
            cfg = config_of(text)
            engine = Engine(cfg, state)
            events = engine.bus.subscribe()
            await engine.start()
            try:
                def announced() -> dict:
                    (acme,) = engine.clients.list("acme")["clients"]
                    return {f.name: (f.port, f.destination) for f in acme.forwards}

                await eventually(lambda: len(announced()) == 2, what="both forwards announced")
                files_port, files_dest = announced()["files"]
                assert files_dest == f"smb+tcp://127.0.0.1:{echo.port}"
                assert announced()["app"][1] == f"127.0.0.1:{echo.port}"
                assert await roundtrip(files_port, b"to the service URI's host:port") == \
                    b"to the service URI's host:port"
                changes: set[str] = set()

                def heard() -> bool:  # the hub reports client changes in batches, a quarter second apart
                    while not events.queue.empty():
                        event = events.queue.get_nowait()
                        if isinstance(event, ClientChanged) and event.client == "acme":
                            changes.update(event.change.split(", "))
                    return {"connected", "forwards", "announced"} <= changes
                await eventually(heard, timeout=3, what=f"ClientChanged events (heard {changes})")
                log_text = state.tunnel_log.read_text()  # the console's View log shows the hub's side too
                assert f" hub listening on 127.0.0.1:{hub_port}, client ports {ports} on 127.0.0.1\n" in log_text
                assert re.search(r" hub client acme connected from 127\.0\.0\.1:\d+\n", log_text)
                assert f"announced {files_port} files -> smb+tcp://127.0.0.1:{echo.port}, " in log_text

                # The unit cancels "app" (cancel-tcpip-forward): the hub frees that port at once.
                unit = cfg.units["master"]
                await engine.reload(dataclasses.replace(cfg, units={"master": dataclasses.replace(
                    unit, forwards=(unit.forwards[0],))}))
                await eventually(lambda: list(announced()) == ["files"], what="app gone from the hub")
                assert announced()["files"] == (files_port, files_dest)  # untouched
                assert set(engine.hub.forwards) == {files_port}
                web = ForwardConfig("web", 0, "127.0.0.1", echo.port, service=f"http://127.0.0.1:{echo.port}/")
                await engine.reload(dataclasses.replace(cfg, units={"master": dataclasses.replace(
                    unit, forwards=(unit.forwards[0], web))}))
                await eventually(lambda: announced().get("web", (0, ""))[1] == f"http://127.0.0.1:{echo.port}/",
                                 what="the new forward announced")
            finally:
                await engine.shutdown()
    from console.core.config import ForwardConfig
    run(body())


@pytest.mark.usefixtures("transport")
def test_counters_mean_the_same_on_the_unit_and_the_hub_and_the_unit_shows_the_hubs_bind(tmp_path, state):
    """A unit of ours forwards through our hub (both in one engine): 100 kB go to the service and 2 bytes come
    back. "in" is toward the service and "out" back from it, on the unit's forward and on the hub's client port
    alike; the unit's remote column says where the hub really listens (its bind, told in the announcement's
    reply), not `*`; and trust's check names the server as our hub."""
    from support import config_of, fwd_of

    from console.engine import Engine

    async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1 << 16):
            pass
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    async def body():
        sink = await asyncio.start_server(service, "127.0.0.1", 0)
        sink_port = sink.sockets[0].getsockname()[1]
        text, _, _ = unit_behind_our_hub(state,
                                         f"      - {{name: app, remote_port: 0, local: '127.0.0.1:{sink_port}'}}\n")
        engine = Engine(config_of(text), state)
        await engine.start()
        try:
            def hub_side():
                (acme,) = engine.clients.list("acme")["clients"]
                return acme.forwards[0] if acme.forwards else None

            await eventually(lambda: hub_side() is not None and hub_side().name == "app", what="announced")
            port = hub_side().port
            await eventually(lambda: fwd_of(engine, "master", "app").remote == f"127.0.0.1:{port}",
                             what=f"the hub's bind on the unit (shows {fwd_of(engine, 'master', 'app').remote})")
            assert await roundtrip(port, b"x" * 100_000) == b"ok"
            await eventually(lambda: fwd_of(engine, "master", "app").bytes_out == 2 and hub_side().bytes_out == 2,
                             what="the counters")
            unit, hub = fwd_of(engine, "master", "app"), hub_side()
            assert (unit.bytes_in, unit.bytes_out) == (100_000, 2)
            assert (hub.bytes_in, hub.bytes_out) == (100_000, 2)
            assert unit.counters().endswith("in 100.0 kB out 2 B") and hub.counters().endswith("in 100.0 kB out 2 B")
            seen = await engine.trust("master", "tester", check=True)
            assert seen["hub"] is True and seen["software"] == "SSH-2.0-SOPConsoleHub_1"
            assert seen["outcome"] == "already trusted" and seen["pinned"] is True
        finally:
            await engine.shutdown()
            sink.close()
    run(body())


@hub_test
async def test_the_announcement_takes_data_only_and_only_for_own_live_ports(world):
    import asyncssh

    from console.core import announce
    from console.core.announce import ANNOUNCE_SUBSYSTEM, Announced

    client = world.register("acme")
    other = world.register("other")
    key = asyncssh.read_private_key(world.client_key("acme"))
    pinned = ([asyncssh.import_public_key(world.hub.host_key.export_public_key())], [], [])
    with HubLog() as hub_log:
        async with asyncssh.connect("127.0.0.1", world.hub.port, username="acme", client_keys=[key],
                                    known_hosts=pinned, config=None, agent_path=None) as conn:
            assert announce.is_hub(conn.get_extra_info("server_version"))
            listener = await conn.forward_remote_port("127.0.0.1", client.ports[0], "127.0.0.1", 9)

            async def say(data: str) -> tuple[int, dict]:
                done = await conn.run(subsystem=ANNOUNCE_SUBSYSTEM, input=data, timeout=5)
                return done.exit_status, json.loads(done.stdout)

            status, reply = await say(announce.encode([
                Announced(client.ports[0], "files", "samba.example.com:139", "smb://samba.example.com:139"),
                Announced(client.ports[1], "idle", "127.0.0.1:1"),        # its own, but not forwarded now
                Announced(other.ports[0], "theirs", "127.0.0.1:1")]))    # another client's
            assert status == 0 and reply["recorded"] == [client.ports[0]]
            assert [i["port"] for i in reply["ignored"]] == [client.ports[1], other.ports[0]]
            assert world.hub.forwards[client.ports[0]].session.announced[client.ports[0]].destination == \
                "smb://samba.example.com:139"

            bad = [("not json", "not JSON"),
                   (json.dumps({"v": 1, "forwards": [{"port": client.ports[0], "name": "\x1b[2J", "local": "h:1"}]}),
                    "printable"),
                   ("x" * (announce.MAX_BYTES + 1), "over")]
            for data, why in bad:
                status, reply = await say(data)
                assert status == 1 and not reply["ok"] and why in reply["error"]
            # A refused announcement leaves the last good one in place.
            assert world.hub.forwards[client.ports[0]].session.announced[client.ports[0]].name == "files"

            for refused in (dict(command="id"), dict(subsystem="sftp"), dict(command="id", term_type="xterm")):
                with pytest.raises(asyncssh.ChannelOpenError):
                    await conn.run(**refused, timeout=5)
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_connection("127.0.0.1", world.hub.port)

            listener.close()  # cancel-tcpip-forward: the port and what was said of it are gone at once
            await eventually(lambda: client.ports[0] not in world.hub.forwards, what="port freed")
            assert world.hub.sessions["acme"][0].announced == {}
    text = "\n".join(hub_log.lines)
    for refusal in ("refused exec of 'id' for client acme", "refused the subsystem 'sftp' for client acme",
                    "refused a terminal (pty) for client acme", "refused an announcement: announcement is not JSON",
                    f"refused an announcement: announcement over {announce.MAX_BYTES} bytes",
                    f"refused an announcement for ports {client.ports[1]}, {other.ports[0]}",
                    "refused a connection into the hub's network"):
        assert refusal in text, refusal


@hub_test
async def test_openssh_clients_get_no_shell_sftp_or_pty_and_each_refusal_is_logged(world):
    world.register("acme")
    with HubLog() as hub_log:
        code, err = await finished(await world.ssh("acme", "-s", command=("sftp",)))
        assert code != 0 and "subsystem request failed" in err
        code, err = await finished(await world.ssh("acme", "-tt"))
        assert code != 0 and "PTY allocation request failed" in err
        code, err = await finished(await world.ssh("acme", command=("echo", "hello")))
        assert code != 0 and "exec request failed" in err
    text = "\n".join(hub_log.lines)
    assert "refused the subsystem 'sftp' for client acme" in text
    assert "refused a shell for client acme" in text and "refused exec of 'echo hello'" in text


@hub_test
async def test_closing_the_hub_ends_every_connection_even_one_not_logged_in(world):
    """Shutdown closes logged-in sessions and half-open ones (a scanner, a client mid-login) at once. It closes
    them before waiting for the listener: from Python 3.12 on, wait_closed() waits for every connection."""
    client = world.register("acme")
    ssh = await world.ssh("acme", "-N", "-R", f"127.0.0.1:{client.ports[0]}:127.0.0.1:9")
    await eventually(lambda: client.ports[0] in world.hub.forwards, what="forward up")
    reader, writer = await asyncio.open_connection("127.0.0.1", world.hub.port)
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"SSH-2.0-SOPConsoleHub_1")
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(world.hub.close(), 2)
    await asyncio.wait_for(reader.read(), 2)  # read() ends at EOF: the half-open one is closed, not left to time out
    assert reader.at_eof()
    await asyncio.wait_for(ssh.wait(), 2)
    assert asyncio.get_running_loop().time() - started < 2
    writer.close()


@hub_test
async def test_failed_logins_are_slowed_and_logged_without_flooding(world):
    world.register("acme")
    with HubLog() as hub_log:
        started = asyncio.get_running_loop().time()
        for _ in range(6):
            code, err = await finished(await world.ssh("acme", "-N", key="stranger"))
            assert code == 255 and "Permission denied" in err
        slowed = asyncio.get_running_loop().time() - started
    told = [line for line in hub_log.lines if "refused auth for acme" in line]
    assert [re.search(r"failure (\d+)", line).group(1) for line in told] == ["1", "2", "3", "4"]
    assert "key is not the client's" in told[0]
    assert slowed >= 0.25 + 0.5 + 1.0  # failures 4, 5 and 6 waited before the answer


def test_hub_settings_apply_on_reload_and_connected_clients_stay(tmp_path, state):
    """listen, bind, ports and default_quota change live: a connected client keeps its session and forward, new
    clients meet the new address and range; an address that cannot be opened leaves everything as it was."""
    import socket

    from support import config_of
    from sshd import free_port

    from console.engine import Engine

    def hub_yaml(port: int, low: int, high: int, quota: int, bind: str) -> str:
        return f"hub: {{listen: '127.0.0.1:{port}', ports: '{low}-{high}', default_quota: {quota}, bind: '{bind}'}}\n"

    async def body():
        (low, high), (low2, high2) = _free_range(4), _free_range(4)
        port, port2 = free_port(), free_port()
        engine = Engine(config_of(hub_yaml(port, low, high, 2, "127.0.0.1")), state)
        await engine.start()
        ssh = None
        try:
            world = World(tmp_path, state)  # for its OpenSSH client; the engine's hub is the one under test
            world.hub, world.registry = engine.hub, engine.clients.registry
            acme = world.register("acme")
            async with EchoServer() as echo:
                ssh = await world.ssh("acme", "-N", "-R", f"127.0.0.1:{acme.ports[0]}:127.0.0.1:{echo.port}")
                await eventually(lambda: acme.ports[0] in engine.hub.forwards, what="acme forwards")

                changes = await engine.reload(config_of(hub_yaml(port2, low2, high2, 3, "127.0.0.2")))
                text = "; ".join(changes)
                assert f"hub listens on 127.0.0.1:{port2} instead of 127.0.0.1:{port}" in text
                assert "hub opens client ports on 127.0.0.2 instead of 127.0.0.1; 1 forwarded now stay" in text
                assert f"hub allocates ports from {low2}-{high2}" in text and "1 client keeps ports outside it (acme)" in text
                assert "new clients get 3 ports instead of 2" in text
                assert ssh.returncode is None and await roundtrip(acme.ports[0], b"still here") == b"still here"
                with pytest.raises(OSError):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()  # the old address is closed

                other = world.register("other")  # the new default quota, from the new range
                assert other.ports == [low2, low2 + 1, low2 + 2]
                assert world.hub.port == port2  # World.ssh dials the hub's current port
                proc = await world.ssh("other", "-N", "-R", f"0:127.0.0.1:{echo.port}")
                try:
                    await eventually(lambda: low2 in engine.hub.forwards, what="other forwards on the new bind")
                    reader, writer = await asyncio.open_connection("127.0.0.2", low2)
                    writer.write(b"new bind")
                    assert await asyncio.wait_for(reader.readexactly(8), 5) == b"new bind"
                    writer.close()
                finally:
                    proc.kill()
                    await proc.wait()

                with socket.socket() as taken:
                    taken.bind(("127.0.0.1", 0))
                    taken.listen()
                    busy = taken.getsockname()[1]
                    changes = await engine.reload(config_of(hub_yaml(busy, low2, high2, 3, "127.0.0.2")))
                assert changes == [f"hub settings not applied: cannot listen on 127.0.0.1:{busy}: "
                                   "Address already in use"]
                assert engine.hub.port == port2 and engine.config.hub.listen_port == port2
        finally:
            if ssh is not None and ssh.returncode is None:
                ssh.kill()
                await ssh.wait()
            await engine.shutdown()
    run(body())
